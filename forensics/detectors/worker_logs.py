"""Evidence that lives in worker logs (and where Bull leaves a trace, on the job hashes).

Log records come joined to the snapshot's jobs (``Context.logs``): a record that names a
job known to the snapshot carries its queue. Without logs, ``lock-lost`` and
``redis-connection-errors`` still read the jobs' failed reasons, and ``missing-handler``
needs only the snapshot.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..logs import has_memory
from ..summary import human_bytes
from ..stats import rising, robust_trend
from . import SAMPLE, Context, detector, queue_key, trend
from .trends import byte_rate, duration

LOCK_LOST = re.compile(
    r"Missing lock for job|could not renew lock|failed to (?:renew|extend) (?:the )?lock|"
    r"lock (?:renewal|extension) failed|Lock mismatch for job|job lock (?:was )?(?:lost|expired)|"
    r"lock (?:is )?missing for job", re.I)
# In logs only: a worker reporting a stalled job (its lock expired before it was renewed).
# On job hashes the same words are Bull/BullMQ's stall failure, which stall-failures reports.
LOG_STALLED = re.compile(r"\bjob\b[^|]*\bstalled\b|\bstalled\b[^|]*\bjob\b", re.I)
MISSING_HANDLER = "Missing process handler for job type"
CONNECTION_KINDS = [
    # (kind, pattern, severity, what it means and what to do)
    ("oom", r"OOM command not allowed", "critical",
     "Redis is at maxmemory with noeviction and refuses writes: jobs cannot be added, moved or finished. "
     "Free memory now (bound retention with removeOnComplete/removeOnFail, trim events), then raise maxmemory."),
    ("max-clients", r"max(?:imum)? number of clients reached", "high",
     "Redis refused new connections at `maxclients`. Each BullMQ Worker/Queue/QueueEvents opens its own "
     "connections (a blocking one per worker): share a connection for Queues, close them on shutdown, "
     "and raise maxclients."),
    ("connection-refused", r"ECONNREFUSED", "high",
     "Workers could not reach Redis (down, restarting, failing over, or a wrong host/port). Jobs active then "
     "stall; check Redis availability and the workers' REDIS_URL."),
    ("max-retries", r"MaxRetriesPerRequestError|max retries per request", "high",
     "ioredis gave up on a command. BullMQ needs `maxRetriesPerRequest: null` on the connection of a Worker "
     "(and QueueEvents) so blocking calls survive a Redis restart."),
    ("busy", r"\bBUSY\b.*(?:script|running)", "medium",
     "Redis was busy running a long Lua script or function and answered nothing else; a huge `clean`, "
     "`obliterate` or `drain` on a big queue does this. Run those in smaller batches (the limit argument)."),
    ("crossslot", r"CROSSSLOT", "high",
     "Redis Cluster: a queue's keys hash to different slots. Use a hash-tagged prefix, e.g. "
     "`prefix: '{bull}'`, so every key of a queue lands on one slot."),
    ("auth", r"NOAUTH|WRONGPASS|invalid (?:username-)?password|Authentication required", "high",
     "Workers could not authenticate to Redis: check the password / ACL user in their connection settings."),
    ("connection-lost", r"ECONNRESET|ETIMEDOUT|EPIPE|Connection is closed|Stream isn't writeable|"
                        r"Socket closed unexpectedly", "medium",
     "Connections to Redis dropped. Frequent drops leave jobs stalled; check network, Redis `timeout`, "
     "and the proxy or load balancer between workers and Redis."),
]
_KINDS = [(k, re.compile(p, re.I), s, r) for k, p, s, r in CONNECTION_KINDS]
# Network errors are anybody's: a processor's HTTP call refused or timing out fails its job
# with the same ECONNREFUSED / ETIMEDOUT. They are Redis errors only where Redis is named,
# or (in logs) reported by the worker itself rather than about one job.
NETWORK_KINDS = {"connection-refused", "connection-lost"}
NAMES_REDIS = re.compile(r"redis|:6379\b|:6380\b|:26379\b", re.I)


def _text(df: pd.DataFrame) -> pd.Series:
    """Message and error of each log record, as one string to match."""
    return df["message"].fillna("") + " | " + df["error"].fillna("")


def _job_text(jobs: pd.DataFrame) -> pd.Series:
    return jobs["failed_reason"].fillna("") + " | " + jobs["stacktrace_top"].fillna("")


def _erred(ctx: Context) -> tuple[pd.DataFrame, pd.Series]:
    """The jobs that carry an error (a failed reason or a stack trace; the others say
    nothing to these detectors) and their text, made once for all of them."""
    if "_erred" not in ctx.__dict__:
        jobs = ctx.jobs
        erred = jobs[jobs["failed_reason"].notna() | jobs["stacktrace_top"].notna()]
        ctx.__dict__["_erred"] = (erred, _job_text(erred) if len(erred) else pd.Series(dtype="str"))
    return ctx.__dict__["_erred"]


def _examples(texts: pd.Series, n: int = 3) -> list[str]:
    return [t.strip(" |")[:300] for t in texts.drop_duplicates().head(n)]


def _when(df: pd.DataFrame) -> dict:
    t = df["time"].dropna()
    return {"first_seen": t.min().isoformat() if len(t) else None,
            "last_seen": t.max().isoformat() if len(t) else None}


def _queue_groups(ctx: Context, records: pd.DataFrame, jobs: pd.DataFrame):
    """(queue row or None, that queue's log records, its jobs): records that name no known
    queue form one Redis-wide group."""
    known = {queue_key(q): q for _, q in ctx.queues.iterrows()}
    keys = set()
    if len(records):
        keys |= {(p, q) for p, q in zip(records["prefix"], records["queue"]) if (p, q) in known}
    if len(jobs):
        keys |= {(p, q) for p, q in zip(jobs["prefix"], jobs["queue"])}
    for key in sorted(keys):
        r = records[(records["prefix"] == key[0]) & (records["queue"] == key[1])] if len(records) else records
        j = jobs[(jobs["prefix"] == key[0]) & (jobs["queue"] == key[1])] if len(jobs) else jobs
        yield known.get(key), r, j
    if len(records):
        rest = records[[(p, q) not in known for p, q in zip(records["prefix"], records["queue"])]]
        if len(rest):
            yield None, rest, jobs.iloc[0:0]


def _ids(records: pd.DataFrame, jobs: pd.DataFrame) -> list[str]:
    ids = list(dict.fromkeys([*jobs["job_id"].astype(str), *records["job_id"].dropna().astype(str)]))
    return ids[:SAMPLE]


def jobs_done(g: pd.DataFrame) -> pd.Series:
    """For each record of one worker's log (in time order): how many distinct jobs it had
    named up to and including that record."""
    ids = g["job_id"]
    first = ids.notna() & ~ids.duplicated()
    return first.cumsum()


@detector("worker-memory-growth", "memory", "a worker's memory grows job after job (a leak)")
def worker_memory_growth(ctx: Context):
    t = ctx.t
    logs = ctx.logs
    if not len(logs):
        return
    for worker, g in logs[logs["time"].notna()].sort_values("time", kind="stable").groupby("worker", sort=True):
        g = g.assign(_jobs=jobs_done(g))
        mem = g[has_memory(g)]
        metric = "heap_used_bytes" if mem["heap_used_bytes"].notna().sum() >= t.worker_memory_min_points \
            else "rss_bytes"
        pts = mem[mem[metric].notna()]
        if len(pts) < t.worker_memory_min_points:
            continue
        # A process that restarts under the same name (a container: same hostname, pid 1)
        # draws a sawtooth: judge each run between restarts, keep the worst. A restart is
        # RSS falling under half (a garbage collection drops the heap, hardly the RSS).
        rss = pts["rss_bytes"].to_numpy()
        breaks = np.flatnonzero(rss[1:] < 0.5 * rss[:-1]) + 1  # NaN compares False: no RSS, no split
        best = None
        for seg in np.split(np.arange(len(pts)), breaks):
            run = pts.iloc[seg]
            if len(run) < t.worker_memory_min_points:
                continue
            # Leaks grow per job: where the log names the jobs, judge memory against jobs
            # processed (a quiet stretch of slow jobs then bends nothing); else against time.
            jobs = run["_jobs"] - run["_jobs"].iloc[0]
            by_jobs = jobs.iloc[-1] >= t.worker_memory_min_points
            tr = robust_trend(jobs if by_jobs else (run["time"] - run["time"].min()).dt.total_seconds(), run[metric])
            if not rising(tr, t.trend_min_tau, t.trend_late_share):
                continue
            grown = tr["last"] - tr["first"]
            if grown < t.worker_memory_growth_bytes or grown < t.worker_memory_growth_share * max(tr["first"], 1):
                continue
            if best is None or grown > best[1]:
                best = (tr, grown, run, by_jobs)
        if best is None:
            continue
        tr, grown, run, by_jobs = best
        over_time = trend(run["time"], run[metric])
        per_s = over_time["slope_per_s"] if over_time else 0.0
        span_s = (run["time"].max() - run["time"].min()).total_seconds()
        queues = g[["prefix", "queue"]].dropna().value_counts()
        q = None
        if len(queues):
            (p, qn) = queues.index[0]
            q = pd.Series({"prefix": p, "queue": qn})
        elif g["queue"].notna().any():
            q = pd.Series({"prefix": None, "queue": g["queue"].dropna().mode().iloc[0]})
        jobs = int(run["job_id"].dropna().nunique())
        restarts = len(breaks)
        label = "heap" if metric == "heap_used_bytes" else "RSS"
        rate = (f"+{human_bytes(tr['slope'] * 100)} per 100 jobs" if by_jobs
                else f"+{byte_rate(tr['slope'], span_s)}")
        yield ctx.finding(
            "worker-memory-growth", "high" if grown >= tr["first"] or restarts else "medium",
            f"worker {worker}: {label} grew {human_bytes(tr['observed_first'])} → {human_bytes(tr['observed_last'])} "
            f"in {duration(span_s)}" + (f" over {jobs:,} jobs" if jobs else "") + f" ({rate})"
            + (f"; its RSS dropped {restarts} time(s): restarts or OOM kills" if restarts else ""),
            q, None, count=len(pts),
            evidence={"worker": worker, "metric": metric, "points": tr["points"], "span_s": round(span_s, 1),
                      "axis": "jobs" if by_jobs else "time",
                      "first_bytes": int(tr["observed_first"]), "last_bytes": int(tr["observed_last"]),
                      "grown_bytes": int(grown), "growth_bytes_per_job": round(tr["slope"]) if by_jobs else None,
                      "growth_bytes_per_hour": int(per_s * 3600), "tau": tr["tau"], "jobs_seen": int(jobs),
                      "restarts": int(restarts),
                      "last_rss_bytes": None if g["rss_bytes"].dropna().empty else int(g["rss_bytes"].dropna().iloc[-1]),
                      **_when(run)},
            remediation="Memory that only grows across jobs is a leak in the processor: a cache or map keyed by "
                        "job, listeners added per job (`worker.on(...)` inside the processor), clients or timers "
                        "never closed. Compare two heap snapshots (`node --inspect`, `v8.writeHeapSnapshot()`) "
                        "taken a few hundred jobs apart. Until it is fixed, restart workers before the OOM killer "
                        "does: a killed worker leaves its jobs active until they stall.",
        ).with_ids(list(run["job_id"].dropna().drop_duplicates().tail(SAMPLE))[::-1])  # newest first


@detector("lock-lost", "logs", "workers lost job locks (another worker may run the job too)")
def lock_lost(ctx: Context):
    logs = ctx.logs
    text = _text(logs) if len(logs) else pd.Series(dtype="str")
    records = logs[text.str.contains(LOCK_LOST, na=False) | text.str.contains(LOG_STALLED, na=False)] \
        if len(logs) else logs
    erred, etext = _erred(ctx)
    traced = erred[etext.str.contains(LOCK_LOST, na=False)] if len(erred) else erred
    for q, r, j in _queue_groups(ctx, records, traced):
        n = len(set(r["job_id"].dropna().astype(str)) | set(j["job_id"].astype(str))) or len(r)
        where = []
        if len(r):
            where.append(f"{len(r):,} log record(s)")
        if len(j):
            where.append(f"{len(j):,} job hash(es) carry the error (Bull records it as the failed reason)")
        bull = q is not None and q["flavor"] == "bull"
        yield ctx.finding(
            "lock-lost", "high", f"job locks lost: {' and '.join(where)}", q, None, count=n,
            evidence={"log_records": len(r), "jobs_with_trace": len(j),
                      "workers": sorted(r["worker"].dropna().unique().tolist())[:10],
                      "examples": _examples(pd.concat([_text(r), _job_text(j)])), **_when(r)},
            remediation="A worker held a job past its lock without renewing it: its event loop was blocked "
                        "(CPU-bound or synchronous work in the processor) or the process paused. The stall "
                        "checker may have handed the job to another worker, so it can run twice. Move CPU-heavy "
                        "work to a sandboxed processor (a file path) or worker threads, raise "
                        + ("`settings.lockDuration`" if bull else "the Worker's `lockDuration`")
                        + ", and make the processor idempotent.").with_ids(_ids(r, j))


@detector("redis-connection-errors", "logs", "workers hit Redis errors (refused, OOM, max clients, ...)")
def redis_connection_errors(ctx: Context):
    logs = ctx.logs
    text = _text(logs) if len(logs) else pd.Series(dtype="str")
    erred, jtext = _erred(ctx)
    log_redis = (text.str.contains(NAMES_REDIS, na=False) | logs["job_id"].isna()) if len(logs) else text
    job_redis = jtext.str.contains(NAMES_REDIS, na=False) if len(jtext) else jtext
    for kind, pattern, severity, remedy in _KINDS:
        r = logs[text.str.contains(pattern, na=False) & (log_redis if kind in NETWORK_KINDS else True)] \
            if len(logs) else logs
        j = erred[jtext.str.contains(pattern, na=False) & (job_redis if kind in NETWORK_KINDS else True)] \
            if len(jtext) else ctx.jobs.iloc[0:0]
        if not len(r) and not len(j):
            continue
        queues = {(p, q) for p, q in zip(r["prefix"], r["queue"]) if p is not None and q is not None} | \
            {(p, q) for p, q in zip(j["prefix"], j["queue"])}
        q = None
        if len(queues) == 1 and not r["queue"].isna().any():
            p, qn = next(iter(queues))
            q = pd.Series({"prefix": p, "queue": qn})
        parts = ([f"{len(r):,} log record(s)"] if len(r) else []) + ([f"{len(j):,} failed job(s)"] if len(j) else [])
        yield ctx.finding(
            "redis-connection-errors", severity, f"Redis {kind.replace('-', ' ')} errors: {' and '.join(parts)}",
            q, None, count=len(r) + len(j),
            evidence={"kind": kind, "log_records": len(r), "failed_jobs": len(j),
                      "workers": sorted(r["worker"].dropna().unique().tolist())[:10],
                      "queues": sorted(f"{p}:{qn}" for p, qn in queues)[:10],
                      "examples": _examples(pd.concat([_text(r), _job_text(j)])), **_when(r)},
            remediation=remedy).with_ids(_ids(r, j))


@detector("missing-handler", "logs", "Bull jobs failed: no process handler for their name")
def missing_handler(ctx: Context):
    logs = ctx.logs
    records = logs[_text(logs).str.contains(MISSING_HANDLER, case=False, regex=False, na=False)] if len(logs) else logs
    jobs = ctx.jobs
    failed = jobs[jobs["failed_reason"].fillna("").str.contains(MISSING_HANDLER, regex=False, na=False)]
    for q, r, j in _queue_groups(ctx, records, failed):
        if q is not None and q["flavor"] != "bull":
            continue
        names = j["name"].astype(str).value_counts().to_dict() if len(j) else {}
        for text in _text(r):
            m = re.search(r"Missing process handler for job type (\S+)", text)
            if m:
                names.setdefault(m.group(1), 0)
        n = len(j) or len(r)
        yield ctx.finding(
            "missing-handler", "high",
            f"{n:,} job(s) failed: no process handler for job name(s) {', '.join(map(str, list(names)[:5]))}",
            q, None, count=n,
            evidence={"failed_jobs": len(j), "log_records": len(r), "job_names": names,
                      "examples": _examples(pd.concat([_text(r), j["failed_reason"].fillna("")])), **_when(r)},
            remediation="Bull runs a named job only on a worker that called `queue.process('<name>', fn)` for that "
                        "name. Register a handler for every name the producers use (or one `queue.process('*', fn)`) "
                        "and deploy workers before producers add a new name; then retry the failed jobs "
                        "(`job.retry()`).").with_ids(_ids(r, j))
