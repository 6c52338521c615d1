"""Code findings: the playbook's red flags, judged per queue, each pointing at its lines
and carrying the playbook's safe pattern as the fix."""
from __future__ import annotations

import json
import math

import pandas as pd

from ..detectors import Finding

CLIENT_ERROR_CHECKS = ("statusCode", "status ===", "status >=", "status <", "UnrecoverableError", ".discard()",
                       "moveToFailed(", "4xx", "isRetryable", "retryable")


def _where(rows: pd.DataFrame) -> list[dict]:
    return [{"file": r.file, "line": int(r.line), "snippet": r.snippet} for r in rows.head(20).itertuples()]


def _f(id: str, severity: str, title: str, queue, rows: pd.DataFrame, remediation: str, **evidence) -> Finding:
    if queue is not None and not isinstance(queue, str) and pd.isna(queue):
        queue = None   # a groupby key of sites whose queue is unknown
    return Finding(id=id, severity=severity, title=title, count=len(rows), prefix=None,
                   queue=None if queue is None else str(queue), family="code",
                   evidence={"code": _where(rows), **evidence}, remediation=remediation)


def _major(version: str | None) -> int | None:
    if not version:
        return None
    digits = "".join(ch if ch.isdigit() or ch == "." else " " for ch in version).split()
    try:
        return int(digits[0].split(".")[0]) if digits else None
    except ValueError:
        return None


def _defaults(sites: pd.DataFrame) -> dict[str, dict]:
    """queue -> the defaultJobOptions its Queue (or BullModule.registerQueue) sets."""
    out: dict[str, dict] = {}
    for r in sites[(sites["kind"] == "Queue") & sites["default_job_options"].notna()].itertuples():
        try:
            out.setdefault(str(r.queue), json.loads(r.default_job_options))
        except ValueError:
            pass
    return out


def _effective(r, defaults: dict[str, dict]) -> dict:
    """The options an add() really gives its job: the queue's defaults, then its own."""
    base = dict(defaults.get(str(r["queue"]), {}))
    try:
        own = json.loads(r["options"]) if isinstance(r["options"], str) else {}
    except ValueError:
        own = {}
    return {**base, **own}


def findings_of(sites: pd.DataFrame, scans, packages: dict, t) -> pd.DataFrame:
    from ..diagnosis import FINDING_COLUMNS, RANK
    out: list[Finding] = []
    if len(sites):
        defaults = _defaults(sites)
        adds = sites[sites["kind"] == "add"]
        producers = pd.concat([adds, sites[(sites["kind"] == "Queue") & sites["default_job_options"].notna()]])
        bullmq_major = _major(packages.get("bullmq"))

        # -- retries: attempts and backoff, per add (with its queue's defaults) and per default set
        unbounded, nobackoff = [], []
        for idx, r in producers.to_dict("index").items():
            eff = _effective(r, defaults) if r["kind"] == "add" else \
                (json.loads(r["default_job_options"]) if r["default_job_options"] else {})
            a = eff.get("attempts")
            a = math.inf if a in (None, "Infinity") and "attempts" in eff and a != 0 else a
            if isinstance(a, (int, float)) and not isinstance(a, bool) and (a == math.inf or a > t.max_attempts):
                unbounded.append((idx, a))
            b = eff.get("backoff")
            fixed = b is None or isinstance(b, (int, float)) or (isinstance(b, dict) and b.get("type") == "fixed")
            if isinstance(a, (int, float)) and not isinstance(a, bool) and a > 3 and fixed:
                nobackoff.append(idx)
        for q, g in pd.DataFrame([(i, a, producers.loc[i, "queue"]) for i, a in unbounded],
                                 columns=["i", "a", "q"]).groupby("q", dropna=False) if unbounded else []:
            rows = producers.loc[g["i"]]
            inf = bool((g["a"] == math.inf).any())
            out.append(_f("code-unbounded-attempts", "high" if inf else "medium",
                          f"{len(rows)} site(s) give jobs {'infinite' if inf else 'over ' + str(t.max_attempts)} attempts",
                          q, rows, "Bound retries: `attempts: 5` with `backoff: {type: 'exponential', delay: 2000}` "
                          "(2 s, 4 s, 8 s, 16 s, 32 s), and a dead-letter path for what still fails.",
                          attempts=[None if a == math.inf else a for a in g["a"]]))
        if nobackoff:
            nb = producers.loc[nobackoff]
            for q, rows in nb.groupby("queue", dropna=False):
                out.append(_f("code-no-backoff", "medium",
                              f"{len(rows)} site(s) retry more than 3 times without exponential backoff", q, rows,
                              "Retry with `backoff: {type: 'exponential', delay: 2000}`: a fixed delay (`backoff: 1000`) "
                              "hammers a failing dependency at the same pace however long it is down."))

        # -- cleanup: a queue whose jobs no site bounds
        for q, rows in adds.groupby("queue", dropna=False):
            effs = [_effective(r, defaults) for r in rows.to_dict("records")]
            if not any("removeOnComplete" in e for e in effs):
                out.append(_f("code-no-cleanup", "low", f"jobs added to {q or 'this queue'} are kept forever "
                              "(no removeOnComplete / removeOnFail)", q, rows,
                              "Bound retention: `removeOnComplete: {count: 1000}` (or `true`) and `removeOnFail: "
                              "{count: 5000}` in the Queue's `defaultJobOptions`, so Redis does not keep every job."))

        # -- job data carrying file contents
        binary = adds[adds["binary_data"].fillna(False).astype(bool)]
        binary = pd.concat([binary, sites[(sites["kind"] == "addBulk") & sites["binary_data"].fillna(False).astype(bool)]])
        for q, rows in binary.groupby("queue", dropna=False):
            out.append(_f("code-binary-payload", "medium", f"{len(rows)} add(s) put file contents or Buffers in job data",
                          q, rows, "Keep job data minimal: upload the file (object storage) and pass its path or URL "
                          "(`{input_file: '/path/to/file.pdf'}`), never the bytes: Redis keeps every byte per job."))

        # -- BullMQ 6 readiness
        legacy = adds[adds["repeat"].notna() & (adds["library"] == "bullmq")]
        for q, rows in legacy.groupby("queue", dropna=False):
            v6 = (bullmq_major or 0) >= 6
            out.append(_f("code-v6-legacy-repeat", "high" if v6 else "medium",
                          f"{len(rows)} add(s) use `repeat`" + (": BullMQ 6 ignores it" if v6 else
                                                                 ", which BullMQ 6 no longer runs"), q, rows,
                          "Use a job scheduler: `await queue.upsertJobScheduler('id', {pattern | every}, {name, data, "
                          "opts})`, one stable id per schedule."))
        removed = sites[(sites["kind"] == "QueueScheduler") | (
            sites["kind"].isin(["getRepeatableJobs", "removeRepeatable", "removeRepeatableByKey"])
            & ((bullmq_major or 0) >= 6))]
        if len(removed):
            out.append(_f("code-removed-api", "medium", f"{len(removed)} use(s) of APIs BullMQ removed "
                          f"({', '.join(sorted(set(removed['kind'])))})", None, removed,
                          "QueueScheduler is gone since BullMQ 2 (Workers promote delayed jobs and recover stalled "
                          "ones); the legacy repeat API is gone in BullMQ 6: use getJobSchedulers / removeJobScheduler."))

        # -- workers: concurrency, processors, handlers, shutdown
        workers = sites[sites["kind"].isin(["Worker", "process"])]
        high = workers[workers["concurrency"].fillna(0) > t.max_concurrency]
        for q, rows in high.groupby("queue", dropna=False):
            out.append(_f("code-high-concurrency", "medium",
                          f"concurrency {int(rows['concurrency'].max())} on one worker", q, rows,
                          "Bound concurrency by what one process can hold (`concurrency: 5`); scale out with more "
                          "worker processes, and rate-limit calls to external APIs (`limiter: {max, duration}`)."))
        handled = set(sites.loc[(sites["kind"] == "on") & sites["event"].isin(["failed", "global:failed"]), "queue"].dropna())
        monitored = set(sites.loc[sites["kind"] == "QueueEvents", "queue"].dropna()) | \
            set(sites.loc[sites["metrics"].notna(), "queue"].dropna()) | \
            set(sites.loc[sites["kind"] == "on", "queue"].dropna())
        attempts_of = {}
        for r in producers.to_dict("records"):
            eff = _effective(r, defaults) if r["kind"] == "add" else {}
            a = eff.get("attempts")
            if isinstance(a, (int, float)) and not isinstance(a, bool):
                attempts_of[r["queue"]] = max(attempts_of.get(r["queue"], 0), a)
        for q, rows in workers.groupby("queue", dropna=False):
            procs = rows[rows["reports_progress"].notna()]
            if q not in handled:
                out.append(_f("code-no-dead-letter", "low", f"nothing handles jobs of {q or 'this queue'} that fail for good",
                              q, rows, "Handle final failures: `worker.on('failed', (job, err) => { if (job.attemptsMade >= "
                              "job.opts.attempts) deadLetter.add(job.name, job.data) })`, or alert on them."))
            if q not in monitored:
                out.append(_f("code-no-monitoring", "low", f"{q or 'this queue'} has no metrics, QueueEvents or event handlers",
                              q, rows, "Enable metrics on the Worker (`metrics: {maxDataPoints: MetricsTime.ONE_WEEK}`) and "
                              "watch failures and stalls (`worker.on('failed')`, `worker.on('stalled')`)."))
            if len(procs) and not procs["reports_progress"].astype(bool).any():
                out.append(_f("code-no-progress", "low", "the processor never reports progress", q, procs,
                              "Report progress in long jobs (`await job.updateProgress(50)` in BullMQ, "
                              "`job.progress(50)` in Bull): users and dashboards see the job move."))
            bull_timeout = any(_effective(r, defaults).get("timeout") for r in adds[adds["queue"] == q].to_dict("records"))
            if len(procs) and not procs["bounded"].astype(bool).any() and not bull_timeout:
                out.append(_f("code-no-timeout", "medium" if (rows["library"] == "bull").any() else "low",
                              "the processor's work is not bounded by a timeout", q, procs,
                              "Bound the work: a job-level `timeout` (Bull) or, in the processor, "
                              "`AbortSignal.timeout(30_000)` passed to each call, so a hung call cannot hold the "
                              "worker forever."))
            rethrow = procs[procs["rethrows_all"].fillna(False).astype(bool)] if len(procs) else procs
            if len(rethrow) and attempts_of.get(q, 1) > 1:
                out.append(_f("code-retries-client-errors", "medium",
                              "the processor rethrows every error: client errors (4xx) are retried too", q, rethrow,
                              "Do not retry what cannot succeed: for 4xx errors throw `new UnrecoverableError()` "
                              "(BullMQ) or call `job.discard()` (Bull) before throwing; rethrow 5xx and network errors."))
        leaking = workers[workers["retains"].notna()] if "retains" in workers else workers.iloc[0:0]
        for q, rows in leaking.groupby("queue", dropna=False):
            names = ", ".join(f"`{x}`" for x in sorted(set(rows["retains"])))
            out.append(_f("code-memory-leak", "medium",
                          f"the processor adds to the module-level {names} on every job and nothing empties it", q, rows,
                          "Keep nothing per job in module scope: drop the entry when the job ends, or bound the cache "
                          "(an LRU with `max`); watch worker memory (`process.memoryUsage()` in the logs) and restart "
                          "the worker after N jobs (`await worker.close(); process.exit(0)`, PM2/Docker restarts it).",
                          retains=sorted(set(rows["retains"]))))
        if len(workers) and not workers["closes_on_signal"].fillna(False).astype(bool).any():
            out.append(_f("code-no-graceful-close", "medium", "no SIGTERM/SIGINT handler closes the workers", None, workers,
                          "Close on shutdown: `process.on('SIGTERM', async () => { await worker.close(); "
                          "process.exit(0) })`, so a deploy does not leave jobs active to stall."))
    rows = [{c: getattr(f, c) for c in FINDING_COLUMNS if hasattr(f, c)} for f in out]
    df = pd.DataFrame(rows, columns=[c for c in FINDING_COLUMNS])
    if len(df):
        df = df.assign(_r=df["severity"].map(RANK)).sort_values(["_r", "id", "queue"], kind="stable").drop(
            columns="_r").reset_index(drop=True)
    return df
