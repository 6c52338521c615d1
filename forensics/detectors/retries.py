"""Retries: storms, unbounded attempts, missing backoff, errors no retry can fix."""
from __future__ import annotations

import re

import pandas as pd

from . import Context, detector, is_bull, retried_jobs

UNFINISHED = ["wait", "active", "paused", "prioritized", "delayed", "waiting-children"]
RETRY_WAIT = ["wait", "paused", "prioritized", "delayed"]
# Errors no retry can fix: client errors, validation, quota, programming errors.
NON_RETRYABLE = re.compile(
    r"\b(?:status(?: code)?|HTTP(?:/\d(?:\.\d)?)?|code)\s*[:=]?\s*(?:400|401|403|404|405|409|410|413|415|422)\b"
    r"|\b(?:Bad Request|Unauthorized|Forbidden|Not Found|Unprocessable Entity|Payload Too Large)\b"
    r"|\b(?:ValidationError|validation failed|invalid (?:input|argument|payload|request|email|data)\w*)"
    r"|\b(?:quota exceeded|insufficient (?:funds|quota|permissions))"
    r"|\b(?:TypeError|ReferenceError|SyntaxError):",
    re.IGNORECASE)


def _unrecoverable(q) -> str:
    return ("call `job.discard()` before throwing (Bull) so no retry is made"
            if is_bull(q) else "throw `new UnrecoverableError(message)` (from 'bullmq') so no retry is made")


def _retrying(jq: pd.DataFrame) -> pd.DataFrame:
    return jq[jq["state"].isin(RETRY_WAIT) & (jq["attempts_made"].fillna(0) > 0)]


def _weak_backoff(jobs: pd.DataFrame, min_ms: int) -> pd.Series:
    return jobs["backoff_type"].isna() | (
        (jobs["backoff_type"] == "fixed") & (jobs["backoff_delay_ms"].fillna(0) < min_ms))


def _top_reasons(ctx: Context, jobs: pd.DataFrame, n: int = 3) -> dict[str, int]:
    fp = ctx.failed_fp[jobs.index].dropna()
    return {str(k): int(v) for k, v in fp.value_counts().head(n).items()}


@detector("retry-storm", "retries", "many jobs waiting for a retry at once")
def retry_storm(ctx: Context):
    t = ctx.t
    ev = ctx.snap.events
    for q, jq in ctx.by_queue(ctx.jobs):
        r = _retrying(jq)
        unfinished = int(jq["state"].isin(UNFINISHED).sum())
        if len(r) < t.retry_storm_jobs or not unfinished or len(r) / unfinished < t.retry_storm_share:
            continue
        weak = _weak_backoff(r, t.min_backoff_ms)
        evq = ev[(ev["prefix"] == q["prefix"]) & (ev["queue"] == q["queue"])] if len(ev) else ev
        per_min = None
        if len(evq) > 1:
            span = max((evq["time"].max() - evq["time"].min()).total_seconds() / 60, 1 / 60)
            per_min = round(int(evq["event"].isin(["failed", "retries-exhausted"]).sum() +
                                ((evq["event"] == "delayed") | ((evq["event"] == "waiting") &
                                 evq["fields"].str.contains('"prev":"active"', regex=False, na=False))).sum())
                            / span, 1)
        yield ctx.finding(
            "retry-storm", "high" if weak.mean() > 0.5 else "medium",
            f"{len(r)} job(s) waiting to be retried ({len(r) / unfinished:.0%} of unfinished work)",
            q, r, order="attempts_made", ascending=False,
            evidence={"retrying": len(r), "unfinished": unfinished, "weak_backoff": int(weak.sum()),
                      "max_attempts_made": int(r["attempts_made"].max()),
                      "top_errors": _top_reasons(ctx, r), "retry_events_per_minute": per_min},
            remediation="Back off exponentially (`backoff: {type: 'exponential', delay: 2000}`"
                        + ("" if is_bull(q) else ", plus `jitter`") + "), keep `attempts` at 3-5, "
                        + _unrecoverable(q) + " for errors no retry fixes, and pause the queue or "
                        "rate-limit the worker while the dependency is down.")


@detector("unbounded-attempts", "retries", "huge or infinite attempts")
def unbounded_attempts(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        inf = jq["attempts_infinite"].fillna(False).astype(bool)
        big = jq["attempts_configured"].fillna(0) > t.max_attempts
        hit = jq[inf | big]
        if not len(hit):
            continue
        worst = int(hit["attempts_configured"].max()) if hit["attempts_configured"].notna().any() else None
        sev = "high" if inf.any() or (worst or 0) > 10 * t.max_attempts else "medium"
        yield ctx.finding(
            "unbounded-attempts", sev,
            f"{len(hit)} job(s) with unbounded attempts ("
            + ", ".join(x for x in (f"{int(inf.sum())} infinite" if inf.any() else "",
                                    f"up to {worst}" if worst and worst > t.max_attempts else "") if x)
            + ")", q, hit,
            order="attempts_made", ascending=False,
            evidence={"infinite": int(inf.sum()), "max_configured": worst, "threshold": t.max_attempts},
            remediation="Use `attempts: 3` to `5` with exponential backoff; a job that still fails belongs "
                        "in the failed set (a dead-letter queue you review), not in an endless retry loop"
                        + (" (`attempts: Infinity` is stored as null)." if inf.any() else "."))


@detector("no-backoff", "retries", "retries without backoff, or with a short fixed one")
def no_backoff(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        retried = retried_jobs(jq)
        hit = retried[_weak_backoff(retried, t.min_backoff_ms)]
        if not len(hit):
            continue
        kinds = hit["backoff_type"].fillna("none").value_counts().to_dict()
        yield ctx.finding(
            "no-backoff", "medium", f"{len(hit)} retried job(s) without a real backoff", q, hit,
            evidence={"by_backoff": {str(k): int(v) for k, v in kinds.items()},
                      "min_backoff_ms": t.min_backoff_ms},
            remediation="Set `backoff: {type: 'exponential', delay: 2000}` so retries spread out instead "
                        "of hammering a struggling dependency.")


@detector("non-retryable-retried", "retries", "errors no retry can fix, retried anyway")
def non_retryable_retried(ctx: Context):
    for q, jq in ctx.by_queue(ctx.jobs):
        failing = jq[jq["failed_reason"].notna()]
        retried = failing[(failing["attempts_made"].fillna(0) > 1) |
                          (failing["state"].isin(RETRY_WAIT) & (failing["attempts_made"].fillna(0) > 0))]
        hit = retried[retried["failed_reason"].str.contains(NON_RETRYABLE, na=False)]
        if not len(hit):
            continue
        wasted = int((hit["attempts_made"].fillna(1) - 1).clip(lower=0).sum())
        yield ctx.finding(
            "non-retryable-retried", "high" if len(hit) >= 100 else "medium",
            f"{len(hit)} job(s) retried on errors no retry can fix", q, hit,
            evidence={"top_errors": _top_reasons(ctx, hit), "wasted_attempts": wasted},
            remediation="A 4xx, a validation or quota error, or a TypeError fails the same way every "
                        "time: " + _unrecoverable(q) + "; keep retries for timeouts, 5xx and connection errors.")


@detector("error-hotspot", "retries", "one error fingerprint behind most failures")
def error_hotspot(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        failing = jq[jq["failed_reason"].notna() & (jq["state"].isin(["failed"]) | (jq["attempts_made"].fillna(0) > 0))]
        if len(failing) < t.hotspot_min_failures:
            continue
        fp = ctx.failed_fp[failing.index]
        counts = fp.value_counts()
        top, n = str(counts.index[0]), int(counts.iloc[0])
        if n / len(failing) < t.hotspot_share:
            continue
        hit = failing[fp == top]
        example = hit["stacktrace_top"].dropna()
        yield ctx.finding(
            "error-hotspot", "high" if n >= 1000 else "medium",
            f"{n} of {len(failing)} failures are one error: {top[:80]}", q, hit,
            order="finished_at", ascending=False,
            evidence={"fingerprint": top, "share": round(n / len(failing), 3), "failures": len(failing),
                      "example_message": str(hit["failed_reason"].iloc[0])[:500],
                      "example_stack": None if not len(example) else str(example.iloc[0])},
            remediation="Fix this one error first: it accounts for most failures. The example stack "
                        "shows where it is thrown.")


@detector("high-failure-rate", "retries", "a high share of finished jobs failed")
def high_failure_rate(ctx: Context):
    t = ctx.t
    ev = ctx.snap.events
    for q, jq in ctx.by_queue(ctx.jobs):
        source, done, failed = None, 0, 0
        if pd.notna(q["metrics_completed_total"]) and pd.notna(q["metrics_failed_total"]):
            source, done, failed = "metrics", int(q["metrics_completed_total"]), int(q["metrics_failed_total"])
        else:
            evq = ev[(ev["prefix"] == q["prefix"]) & (ev["queue"] == q["queue"])] if len(ev) else ev
            c, f = int((evq["event"] == "completed").sum()), int((evq["event"] == "failed").sum())
            if c + f >= t.failure_rate_min_finished:
                source, done, failed = "events stream", c, f
            else:
                fin = jq[jq["state"].isin(["completed", "failed"])]
                trimmed = fin["remove_on_complete"].notna() | fin["remove_on_fail"].notna()
                if not trimmed.any():  # sets kept whole: their sizes are a fair sample
                    source, done, failed = "completed/failed sets", int(q["n_completed"]), int(q["n_failed"])
        if source is None or done + failed < t.failure_rate_min_finished:
            continue
        rate = failed / (done + failed)
        if rate < t.failure_rate_warn:
            continue
        hit = jq[jq["state"] == "failed"]
        yield ctx.finding(
            "high-failure-rate", "high" if rate >= t.failure_rate_high else "medium",
            f"{rate:.0%} of finished jobs failed ({failed} of {done + failed}, from {source})", q, hit,
            count=failed, order="finished_at", ascending=False,
            evidence={"failure_rate": round(rate, 3), "failed": failed, "completed": done, "source": source,
                      "top_errors": _top_reasons(ctx, hit)},
            remediation="Look at the top errors (error-hotspot); if a dependency is down, pause the queue "
                        "(`await queue.pause()`) rather than burning attempts.")
