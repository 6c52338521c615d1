"""The production checklist, judged per queue from one snapshot.

Verdicts: pass / warn / fail / unknown. ``unknown`` means the evidence is not in the
snapshot (never a guess); each verdict names the evidence it rests on.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd

from .detectors import Context, option_set, queue_key, retried_jobs

ITEMS = ["retry-strategy", "timeout", "concurrency", "progress", "payload-size", "cleanup",
         "dead-letter", "monitoring", "health-checks", "memory-leak"]
CHECKS: dict[str, Callable] = {}


def check(item: str):
    def wrap(fn):
        CHECKS[item] = fn
        return fn
    return wrap


@check("retry-strategy")
def retry_strategy(ctx: Context, q, jq, found):
    if not len(jq):
        return "unknown", "no jobs to read options from"
    t = ctx.t
    inf = int(jq["attempts_infinite"].fillna(False).sum())
    big = int((jq["attempts_configured"].fillna(0) > t.max_attempts).sum())
    retried = retried_jobs(jq)
    not_exp = int((retried["backoff_type"].fillna("none") != "exponential").sum())
    if inf or big:
        return "fail", f"{inf} job(s) with infinite and {big} with more than {t.max_attempts} attempts"
    if not_exp:
        kinds = retried["backoff_type"].fillna("none").value_counts().to_dict()
        return "fail", f"{not_exp} retried job(s) without exponential backoff ({kinds})"
    if not len(retried):
        return "warn", f"no job retries (attempts <= 1 on all {len(jq)} jobs)"
    top = int(retried["attempts_configured"].max())
    return "pass", f"{len(retried)} job(s) retry up to {top} times with exponential backoff"


@check("timeout")
def timeout(ctx: Context, q, jq, found):
    if q["flavor"] != "bull":
        if "hung-active" in found:
            return "fail", "jobs hang with a live lock and BullMQ has no timeout option (hung-active)"
        return "unknown", "BullMQ has no job timeout option; a processor's own timeout is not visible in Redis"
    if not len(jq):
        return "unknown", "no jobs to read options from"
    n = int(jq["timeout_ms"].notna().sum())
    if n == len(jq):
        return "pass", f"all {n} jobs set `timeout` (max {int(jq['timeout_ms'].max())} ms)"
    if n == 0:
        return "fail", f"none of {len(jq)} jobs sets `timeout`"
    return "warn", f"{len(jq) - n} of {len(jq)} jobs set no `timeout`"


@check("concurrency")
def concurrency(ctx: Context, q, jq, found):
    from .detectors.config import _worker_of
    act = jq[jq["state"] == "active"]
    who = _worker_of(act).dropna() if len(act) else pd.Series(dtype="str")
    if not len(who):
        return "unknown", "no active job with a lock or processed-by to count per worker"
    per = who.value_counts()
    if int(per.max()) > ctx.t.max_concurrency:
        return "warn", f"up to {int(per.max())} jobs active on one worker (> {ctx.t.max_concurrency})"
    return "pass", f"up to {int(per.max())} job(s) active per worker across {len(per)} worker(s)"


def _long_runs(ctx: Context, jobs: pd.DataFrame) -> pd.Series:
    """Jobs (active or completed) that ran longer than no_progress_minutes: run time in
    seconds until finished, or (active) until the capture; floats, because the capture time has
    a finer unit than the jobs' millisecond timestamps."""
    ran = (jobs["finished_at"] - jobs["processed_at"]).dt.total_seconds().where(
        jobs["state"] != "active", (ctx.now - jobs["processed_at"]).dt.total_seconds())
    return jobs["state"].isin(["active", "completed"]) & (ran > ctx.t.no_progress_minutes * 60)


@check("progress")
def progress(ctx: Context, q, jq, found):
    runs = ctx.memo(("long-runs",), lambda: _long_runs(ctx, ctx.jobs))   # (one pass over every job)
    some = ctx.memo(("long-runs-queues",), lambda: ctx.queues_where(runs))
    if queue_key(q) not in some:
        return "unknown", f"no job ran longer than {ctx.t.no_progress_minutes:g} min"
    long = jq[runs.loc[jq.index]]
    silent = int((long["progress"].isna() | long["progress"].isin(["0", "null", "{}"])).sum())
    if silent:
        return "warn", f"{silent} of {len(long)} long job(s) never reported progress"
    return "pass", f"all {len(long)} long job(s) report progress"


@check("payload-size")
def payload_size(ctx: Context, q, jq, found):
    size = jq["data_bytes"].dropna()
    if not len(size):
        return "unknown", "no job data in the snapshot"
    p95, top = int(size.quantile(0.95)), int(size.max())
    if top > ctx.t.payload_huge_bytes:
        return "fail", f"largest job data {top:,} B (> 1 MB); p95 {p95:,} B"
    if p95 > ctx.t.payload_guideline_bytes:
        return "warn", f"p95 job data {p95:,} B (guideline < 1 KB); largest {top:,} B"
    return "pass", f"p95 job data {p95:,} B, largest {top:,} B"


@check("cleanup")
def cleanup(ctx: Context, q, jq, found):
    if not len(jq):
        return "unknown", "no jobs to read options from"
    rc, rf = bool(option_set(jq["remove_on_complete"]).any()), bool(option_set(jq["remove_on_fail"]).any())
    nc, nf, cap = int(q["n_completed"]), int(q["n_failed"]), ctx.t.retention_max_jobs
    if "unbounded-retention" in found:
        return "fail", f"{nc:,} completed / {nf:,} failed kept (over {cap:,})"
    if rc and rf:
        return "pass", f"removeOnComplete and removeOnFail set; {nc:,} completed / {nf:,} failed kept"
    missing = " and ".join(n for n, ok in (("removeOnComplete", rc), ("removeOnFail", rf)) if not ok)
    kept = (nc if not rc else 0) + (nf if not rf else 0)
    if q["flavor"] == "bull" and kept:  # Bull has no worker-level option: nothing trims these
        return "fail", f"no {missing} on the jobs: {nc:,} completed / {nf:,} failed kept and never trimmed"
    where = "" if q["flavor"] == "bull" else " (unless set on the Worker, which Redis does not show)"
    return "warn", f"no {missing} on the jobs{where}; {nc:,} completed / {nf:,} failed kept"


@check("dead-letter")
def dead_letter(ctx: Context, q, jq, found):
    if not len(jq):
        return "unknown", "no jobs to read options from"
    rf = jq["remove_on_fail"].dropna()
    nf = int(q["n_failed"])
    if len(rf) and rf.isin(["true", "0", '{"count":0}']).all():
        return "warn", "removeOnFail deletes failed jobs at once: permanent failures cannot be reviewed"
    if nf > ctx.t.retention_max_jobs and not option_set(jq["remove_on_fail"]).any():
        return "fail", f"{nf:,} failed jobs kept without bound"
    if option_set(jq["remove_on_fail"]).any():
        return "pass", f"failed jobs kept, bounded by removeOnFail {rf.iloc[0]}; {nf:,} now"
    return "warn", f"failed jobs kept without a bound ({nf:,} now)"


@check("monitoring")
def monitoring(ctx: Context, q, jq, found):
    metrics = pd.notna(q["metrics_completed_total"]) or pd.notna(q["metrics_failed_total"])
    if q["flavor"] == "bull":
        if metrics:
            return "pass", "metrics enabled (Bull events are pub/sub only)"
        return "warn", "no metrics (`metrics: {maxDataPoints}`); Bull events are pub/sub only, nothing is kept"
    events = int(q["events_length"]) > 0
    if metrics and events:
        return "pass", f"events stream ({int(q['events_length']):,} entries) and metrics enabled"
    if events:
        return "warn", "events stream only; enable metrics (`metrics: {maxDataPoints: MetricsTime.ONE_WEEK}`)"
    return "fail", "no events stream and no metrics"


@check("health-checks")
def health_checks(ctx: Context, q, jq, found):
    if not ctx.workers_known:
        return "unknown", "CLIENT LIST was not read (refused, renamed, a replica without its primary, a backup, " \
                          "or the capture was cut short)"
    workers = int(q["workers"])
    waiting = int(q["n_wait"]) + int(q["n_prioritized"])
    if not workers:
        return ("fail", f"{waiting} job(s) waiting and no worker connected") if waiting else \
            ("warn", "no worker connected")
    if "stopped-consuming" in found:
        return "fail", f"{workers} worker(s) connected but none takes the waiting jobs (stopped-consuming)"
    last = pd.concat([jq["processed_at"], jq["finished_at"]]).max()
    recent = pd.notna(last) and (ctx.now - last) <= pd.Timedelta(minutes=ctx.t.stale_backlog_minutes)
    if waiting and not recent:
        return "warn", f"{workers} worker(s) connected but no job started or finished recently"
    return "pass", f"{workers} worker(s) connected" + (f", last activity {last.isoformat()}" if pd.notna(last) else "")


@check("memory-leak")
def memory_leak(ctx: Context, q, jq, found):
    """Redis memory flat over a series, and the queue's workers' memory flat in their logs."""
    from .detectors import trend
    from .logs import has_memory
    from .stats import rising
    from .detectors.trends import duration, memory_trend, trend_series
    from .summary import human_bytes
    t, bad, good = ctx.t, [], []
    if "redis-memory-growth" in ctx.redis_wide:
        bad.append("Redis used_memory grows over the series (redis-memory-growth)")
    if "worker-memory-growth" in found:
        bad.append("this queue's workers' memory grows (worker-memory-growth)")
    elif "worker-memory-growth" in ctx.redis_wide:
        bad.append("a worker's memory grows (worker-memory-growth; its queue is not named in the logs)")
    s = trend_series(ctx)
    if s is not None:
        mine = s.queues[(s.queues["prefix"].astype(str) == str(q["prefix"])) & (s.queues["queue"].astype(str) == str(q["queue"]))]
        tr = trend(mine["captured_at"], mine["memory_bytes"].astype("float64")) if len(mine) >= 2 else None
        if rising(tr, t.trend_min_tau, t.trend_late_share) and \
                tr["last"] - tr["first"] >= max(t.memory_growth_min_share * max(tr["first"], 1), 64 * 1024):
            bad.append(f"the queue's keys grew {human_bytes(tr['observed_first'])} → "
                       f"{human_bytes(tr['observed_last'])} in {duration(tr['span_s'])}")
        rt = memory_trend(s)
        if rt and "redis-memory-growth" not in ctx.redis_wide:
            good.append(f"Redis memory flat over {len(s)} captures in {duration(rt['span_s'])}")
    logs = ctx.logs
    mem = logs[has_memory(logs)]
    if len(mem):
        mine = mem[(mem["queue"] == q["queue"]) | mem["queue"].isna()]
        if len(mine) >= t.worker_memory_min_points and not bad:
            good.append(f"worker memory flat in {len(mine):,} log records of {mine['worker'].nunique()} worker(s)")
    if bad:
        return "fail", "; ".join(bad)
    if good:
        return "pass", "; ".join(good)
    if len(mem):
        return "unknown", "the logs hold memory figures, but none from this queue's workers; no series"
    return "unknown", "needs a series of captures (`capture --every`) or worker memory logs (`--logs`)"


def evaluate(ctx: Context, findings: pd.DataFrame) -> pd.DataFrame:
    rows = []
    ctx.redis_wide = set(findings.loc[findings["queue"].isna(), "id"]) if len(findings) else set()
    for q, jq in ctx.by_queue(ctx.jobs):
        mine = findings[(findings["prefix"] == q["prefix"]) & (findings["queue"] == q["queue"])] \
            if len(findings) else findings
        found = set(mine["id"]) if len(mine) else set()
        for item in ITEMS:
            try:
                verdict, evidence = CHECKS[item](ctx, q, jq, found)
            except Exception as e:  # a broken check is "could not evaluate", never a crash
                verdict, evidence = "unknown", f"check failed: {type(e).__name__}: {e}"
            rows.append({"item": item, "prefix": q["prefix"], "queue": q["queue"],
                         "verdict": verdict, "evidence": evidence})
    return pd.DataFrame(rows, columns=["item", "prefix", "queue", "verdict", "evidence"])
