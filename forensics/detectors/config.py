"""Configuration: timeouts, concurrency, progress reporting."""
from __future__ import annotations

import re

import pandas as pd

from . import Context, detector

BULL_TIMEOUT = re.compile(r"Promise timed out after \d+ milliseconds|TimeoutError")


@detector("missing-timeout", "config", "Bull jobs without a timeout option")
def missing_timeout(ctx: Context):
    for q, jq in ctx.by_queue(ctx.jobs):
        if q["flavor"] != "bull":
            continue  # BullMQ has no timeout option (see hung-active)
        hit = jq[jq["timeout_ms"].isna() & jq["state"].isin(["wait", "active", "delayed", "paused", "completed", "failed"])]
        if not len(hit):
            continue
        yield ctx.finding(
            "missing-timeout", "low", f"{len(hit)} Bull job(s) without a `timeout`", q, hit,
            evidence={"without_timeout": len(hit), "with_timeout": int(jq["timeout_ms"].notna().sum())},
            remediation="Set `timeout` (ms) in the job options so a hung processor fails instead of "
                        "holding a worker slot forever; make the work cancellable (Bull does not stop it).")


@detector("timeout-failures", "config", "Bull jobs failed by their timeout: the work may still run")
def timeout_failures(ctx: Context):
    for q, jq in ctx.by_queue(ctx.jobs):
        if q["flavor"] != "bull":
            continue
        hit = jq[jq["failed_reason"].str.contains(BULL_TIMEOUT, na=False)]
        if not len(hit):
            continue
        yield ctx.finding(
            "timeout-failures", "medium", f"{len(hit)} job(s) failed by Bull's timeout", q, hit,
            order="finished_at", ascending=False,
            evidence={"timed_out": len(hit), "timeouts_ms": sorted({int(x) for x in hit["timeout_ms"].dropna()})},
            remediation="Bull rejects the job after `timeout` ms but does not stop the processor: the "
                        "work may still be running and may finish after a retry started. Make the work "
                        "cancellable and idempotent, or raise `timeout` if jobs legitimately take longer.")


def _worker_of(jobs: pd.DataFrame) -> pd.Series:
    """Worker identity of active jobs: the lock token without its slot suffix (BullMQ >= 3
    '<uuid>:<n>', Python '<hex>:<n>'), bull's per-queue token, else processed-by."""
    token = jobs["lock_token"].str.replace(r":\d+$", "", regex=True)
    return token.fillna(jobs["processed_by"])


@detector("high-concurrency", "config", "one worker running very many jobs at once")
def high_concurrency(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        act = jq[jq["state"] == "active"]
        if not len(act):
            continue
        per = act.groupby(_worker_of(act)).size()
        busy = per[per > t.max_concurrency]
        if not len(busy):
            continue
        hit = act[_worker_of(act).isin(busy.index)]
        yield ctx.finding(
            "high-concurrency", "medium", f"a worker runs {int(busy.max())} jobs at once", q, hit,
            evidence={"active_per_worker": {str(k)[:40]: int(v) for k, v in busy.items()},
                      "threshold": t.max_concurrency},
            remediation="Very high `concurrency` on one Node process shares one event loop and one "
                        "Redis connection: lock renewals starve and jobs stall. Lower `concurrency` and "
                        "run more worker processes.")


@detector("no-progress", "config", "long-running jobs that never report progress")
def no_progress(ctx: Context):
    limit = pd.Timedelta(minutes=ctx.t.no_progress_minutes)
    jobs = ctx.jobs
    silent = jobs["state"].eq("active") & ((ctx.now - jobs["processed_at"]) > limit).fillna(False) \
        & (jobs["progress"].isna() | jobs["progress"].isin(["0", "null", "{}"]))
    for q, jq, hit in ctx.queues_hit(silent):   # long-running jobs silent about their progress
        yield ctx.finding(
            "no-progress", "low", f"{len(hit)} job(s) running over {ctx.t.no_progress_minutes:g} min "
            "without reporting progress", q, hit, order="processed_at",
            evidence={"silent": len(hit), "longest_minutes": round(
                (ctx.now - hit["processed_at"].min()).total_seconds() / 60, 1)},
            remediation="Report progress from long jobs (`await job.updateProgress(pct)` in BullMQ, "
                        "`job.progress(pct)` in Bull) so a stuck job can be told from a slow one.")
