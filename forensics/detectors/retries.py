"""Retries: storms, unbounded attempts, missing backoff, errors no retry can fix."""
from __future__ import annotations

import re

import pandas as pd

from . import Context, detector, is_bull, queue_key, retried_jobs
from .trends import duration

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


def retry_events(ev: pd.DataFrame, by: tuple[str, ...] = ("job_id",)) -> pd.DataFrame:
    """The retries an events stream records (BullMQ): a job sent back to wait from active
    (retryJob: `waiting` with prev `active`, prev `failed` on BullMQ <= 4), unless the
    stalled checker did it (a `stalled` entry follows); and a job moved to delayed right
    after it was active (moveToDelayed: a backoff). A `delayed` entry right after `added`
    is a job added with a delay, not a retry. ``by``: what names one job (with ``prefix`` and
    ``queue``, the stream entries of many queues at once)."""
    if not len(ev):
        return ev
    seq = pd.to_numeric(ev["stream_id"].str.partition("-")[2], errors="coerce")
    ev = ev.assign(_seq=seq).sort_values(["time", "_seq"], kind="stable")
    by_job = ev.groupby(list(by), sort=False)["event"]
    before, after = by_job.shift(1), by_job.shift(-1)
    prev = ev["fields"].str.extract(r'"prev":"([^"]*)"', expand=False)
    back = ev["event"].eq("waiting") & prev.isin(["active", "failed"]) & after.ne("stalled")
    backoff = ev["event"].eq("delayed") & before.eq("active")
    return ev[back | backoff].drop(columns="_seq")


def retries_started(jobs: pd.DataFrame) -> pd.Series:
    """Retries each job has started so far: attempts started, less the first. BullMQ keeps
    the count (`ats`; `attemptsMade` before v5); Bull counts only failures, so the attempt
    running now or the one that succeeded is added."""
    started = jobs["attempts_started"].astype("Float64")
    bull_count = jobs["attempts_made"].astype("Float64").fillna(0) + \
        jobs["state"].isin(["active", "completed"]).astype("float64")
    started = started.where(jobs["flavor"].ne("bull") & started.notna(), bull_count)
    return (started - 1).clip(lower=0).astype("float64")


def _last_activity(jobs: pd.DataFrame) -> pd.Series:
    """When each job last started or finished an attempt."""
    return jobs[["processed_at", "finished_at"]].max(axis=1)


def _retry_events_by_queue(ctx: Context) -> dict:
    """``retry_events`` of every queue, in one pass over the whole stream table (a pass per
    queue costs ~5 ms whatever its size: seconds for hundreds of queues)."""
    def make() -> dict:
        ev = ctx.snap.events
        if not len(ev):
            return {}
        r = retry_events(ev.astype({"prefix": "str", "queue": "str"}), by=("prefix", "queue", "job_id"))
        return {k: g for k, g in r.groupby(["prefix", "queue"], sort=False)}
    return ctx.memo(("retry_events_by_queue",), make)


def _retrying_queues(ctx: Context) -> dict[str, set]:
    """Queues (prefix, queue) with any job that could count in a storm, found in one pass over
    every job: ``retried`` (retries started, recently active, with its times) and ``waiting``
    (awaiting a retry). A queue in neither has no storm from its jobs."""
    def make() -> dict[str, set]:
        jobs = ctx.jobs
        if not len(jobs):
            return {"retried": set(), "waiting": set()}
        recent = (ctx.now - _last_activity(jobs)) <= pd.Timedelta(minutes=ctx.t.retry_storm_recent_minutes)
        retried = recent.fillna(False) & (retries_started(jobs) > 0) & jobs["added_at"].notna() \
            & jobs["processed_at"].notna()
        waiting = jobs["state"].isin(RETRY_WAIT) & (jobs["attempts_made"].fillna(0) > 0)
        return {"retried": ctx.queues_where(retried), "waiting": ctx.queues_where(waiting)}
    return ctx.memo(("retrying_queues",), make)


def _storm_from_events(ctx: Context, q, jq: pd.DataFrame) -> dict | None:
    r = _retry_events_by_queue(ctx).get(queue_key(q))
    if r is None or not len(r):
        return None
    first, last = r["time"].min(), r["time"].max()
    window = (last - first).total_seconds()
    ids = set(r["job_id"].dropna().astype(str))
    # n retries span n - 1 intervals: the measured rate; the sustained one counts all of them
    # over at least a minute
    return {"basis": "events stream", "retries": len(r), "first": first, "last": last, "window_s": window,
            "per_min": (len(r) - 1) / window * 60 if len(r) > 1 and window > 0 else float(len(r)),
            "sustained_per_min": len(r) / max(window, 60.0) * 60,
            "jobs": jq[jq["job_id"].isin(ids)], "retrying_jobs": len(ids)}


def _storm_from_jobs(ctx: Context, q, jq: pd.DataFrame) -> dict | None:
    """Bull keeps no events: each recently active job's retries, started between when it
    was added and its latest start, summed over the queue's jobs."""
    if queue_key(q) not in _retrying_queues(ctx)["retried"]:
        return None
    retries = retries_started(jq)
    recent = (ctx.now - _last_activity(jq)) <= pd.Timedelta(minutes=ctx.t.retry_storm_recent_minutes)
    jobs = jq[recent.fillna(False) & (retries > 0) & jq["added_at"].notna() & jq["processed_at"].notna()]
    if not len(jobs):
        return None
    r = retries[jobs.index]
    last = jobs["processed_at"]
    span = (last - jobs["added_at"]).dt.total_seconds().clip(lower=0)
    return {"basis": "job attempt counters", "retries": int(r.sum()), "first": jobs["added_at"].min(),
            "last": last.max(), "window_s": float(span.max()),
            "per_min": float((r / span.clip(lower=1.0)).sum() * 60),
            "sustained_per_min": float((r / span.clip(lower=60.0)).sum() * 60),
            "jobs": jobs, "retrying_jobs": len(jobs)}


def bound(jobs: pd.DataFrame, max_attempts: int) -> str:
    """What limits a storm, in words: the attempts left and the pace the backoff allows."""
    if not len(jobs):
        return "unknown (the jobs are gone)"
    inf = jobs["attempts_infinite"].fillna(False).astype(bool).any()
    top = jobs["attempts_configured"].max()
    attempts = "unbounded attempts" if inf else (
        f"up to {int(top):,} attempts" + (" (unbounded in practice)" if top > max_attempts else "")
        if pd.notna(top) else "attempts unknown")
    kinds = jobs["backoff_type"].fillna("none")
    if (kinds == "none").all():
        pace = "no backoff: nothing but the processor's own speed limits the pace"
    elif (kinds == "fixed").all():
        d = float(jobs["backoff_delay_ms"].fillna(0).min())
        pace = (f"a fixed backoff of {d:,.0f} ms: at most {60000 / d:,.0f} retries a minute per job" if d > 0
                else "a fixed backoff of 0 ms: no pause at all")
    elif (kinds == "exponential").all():
        pace = "an exponential backoff: each retry waits twice as long as the one before"
    else:
        pace = "mixed backoffs (" + ", ".join(sorted(set(kinds))) + ")"
    return f"{attempts}; {pace}"


def _backoffs(jobs: pd.DataFrame) -> dict[str, int]:
    label = jobs["backoff_type"].fillna("none").astype(str) + \
        jobs["backoff_delay_ms"].map(lambda d: "" if pd.isna(d) else f" {int(d)} ms")
    return {str(k): int(v) for k, v in label.value_counts().head(5).items()}


@detector("retry-storm", "retries", "retries at a rate that hammers a dependency (or many jobs awaiting a retry)")
def retry_storm(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        storm = _storm_from_events(ctx, q, jq) if not is_bull(q) else None
        storm = storm or _storm_from_jobs(ctx, q, jq)
        if storm is None and t.retry_storm_jobs >= 1 and \
                queue_key(q) not in _retrying_queues(ctx)["waiting"]:
            continue   # no retry rate, and no job awaiting a retry: nothing to judge
        # Sustained: the threshold per minute watched, a window under a minute counting as a
        # minute (a burst of a few retries is not a storm). The rate reported is the measured one.
        rate_hit = storm is not None and storm["sustained_per_min"] >= t.retry_storm_per_min
        waiting = _retrying(jq)
        unfinished = int(jq["state"].isin(UNFINISHED).sum())
        crowd_hit = len(waiting) >= t.retry_storm_jobs and unfinished and len(waiting) / unfinished >= t.retry_storm_share
        if not rate_hit and not crowd_hit:
            continue
        jobs = storm["jobs"] if rate_hit else waiting
        weak = _weak_backoff(jobs, t.min_backoff_ms) if len(jobs) else pd.Series(dtype=bool)
        inf = jobs["attempts_infinite"].fillna(False).astype(bool)
        unbounded = bool(inf.any() or (jobs["attempts_configured"].fillna(0) > t.max_attempts).any())
        weak_most = bool(len(weak)) and weak.mean() > 0.5
        top = _top_reasons(ctx, jobs)
        example = jobs["failed_reason"].dropna()
        evidence = {"retrying": len(waiting), "unfinished": unfinished,
                    "weak_backoff": int(weak.sum()) if len(weak) else 0,
                    "backoff": _backoffs(jobs) if len(jobs) else {},
                    "attempts_unbounded": unbounded, "bounded_by": bound(jobs, t.max_attempts),
                    "max_attempts_configured": None if not jobs["attempts_configured"].notna().any()
                    else int(jobs["attempts_configured"].max()),
                    "max_attempts_made": int(jobs["attempts_made"].fillna(0).max()) if len(jobs) else 0,
                    "top_errors": top, "example_error": str(example.iloc[0])[:300] if len(example) else None}
        error = f", failing with: {next(iter(top))[:80]}" if top else ""
        if rate_hit:
            ago = (ctx.now - storm["last"]).total_seconds()
            ongoing = ago <= 60 and bool(jobs["state"].isin(UNFINISHED).any())
            severity = ("critical" if ongoing and unbounded and weak_most else
                        "high" if ongoing and (weak_most or storm["per_min"] >= 10 * t.retry_storm_per_min) else "medium")
            # a per-minute figure from under a second of data says nothing: give the count then
            pace = f" (~{storm['per_min']:,.0f}/min)" if storm["window_s"] >= 1 else ""
            title = (f"retry storm: {storm['retries']:,} retries of {storm['retrying_jobs']:,} job(s) in "
                     f"{duration(storm['window_s'])}{pace}{error}"
                     + ("; still going" if ongoing else f"; last retry {duration(ago)} before the capture"))
            evidence = {"retries": storm["retries"], "window_s": round(storm["window_s"], 3),
                        "retries_per_min": round(storm["per_min"], 1),
                        "sustained_retries_per_min": round(storm["sustained_per_min"], 1), "basis": storm["basis"],
                        "first_retry_at": storm["first"].isoformat(), "last_retry_at": storm["last"].isoformat(),
                        "ongoing": ongoing, "retrying_jobs": storm["retrying_jobs"],
                        "threshold_per_min": t.retry_storm_per_min, **evidence}
        else:
            severity = "high" if weak_most else "medium"
            title = f"{len(waiting)} job(s) waiting to be retried ({len(waiting) / unfinished:.0%} of unfinished work){error}"
        yield ctx.finding(
            "retry-storm", severity, title, q, jobs, count=len(jobs) if len(jobs) else storm["retrying_jobs"],
            order="attempts_made", ascending=False, evidence=evidence,
            remediation="Back off exponentially (`backoff: {type: 'exponential', delay: 2000}`"
                        + ("" if is_bull(q) else ", plus `jitter`") + "), keep `attempts` at 3-5, "
                        + _unrecoverable(q) + " for errors no retry fixes, and pause the queue "
                        "(`await queue.pause()`) or rate-limit the worker while the dependency is down.")


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
        bull_inf = is_bull(q) and bool(inf.any())
        # Bull stores `attempts: Infinity` as null; the job read back from Redis then has
        # attempts null, and `attemptsMade < null` is false: it is tried once, never retried.
        sev = "high" if (inf.any() and not bull_inf) or (worst or 0) > 10 * t.max_attempts else "medium"
        parts = [f"up to {worst}" if worst and worst > t.max_attempts else "",
                 f"{int(inf.sum())} infinite" + (", which Bull stores as null and never retries" if bull_inf else "")
                 if inf.any() else ""]
        yield ctx.finding(
            "unbounded-attempts", sev,
            f"{len(hit)} job(s) with unbounded attempts ({'; '.join(x for x in parts if x)})", q, hit,
            order="attempts_made", ascending=False,
            evidence={"infinite": int(inf.sum()), "max_configured": worst, "threshold": t.max_attempts},
            remediation="Use `attempts: 3` to `5` with exponential backoff; a job that still fails belongs "
                        "in the failed set (a dead-letter queue you review), not in an endless retry loop"
                        + (". In Bull, `attempts: Infinity` is stored as null and the job is then never retried "
                           "at all: give a number." if bull_inf else
                           " (`attempts: Infinity` is stored as null)." if inf.any() else "."))


@detector("no-backoff", "retries", "retries without backoff, or with a short fixed one")
def no_backoff(ctx: Context):
    t = ctx.t
    jobs = ctx.jobs
    weak = jobs.index.isin(retried_jobs(jobs).index) & _weak_backoff(jobs, t.min_backoff_ms)
    for q, jq, hit in ctx.queues_hit(weak):   # retried jobs without a real backoff
        kinds = hit["backoff_type"].fillna("none").value_counts().to_dict()
        yield ctx.finding(
            "no-backoff", "medium", f"{len(hit)} retried job(s) without a real backoff", q, hit,
            evidence={"by_backoff": {str(k): int(v) for k, v in kinds.items()},
                      "min_backoff_ms": t.min_backoff_ms},
            remediation="Set `backoff: {type: 'exponential', delay: 2000}` so retries spread out instead "
                        "of hammering a struggling dependency.")


@detector("non-retryable-retried", "retries", "errors no retry can fix, retried anyway")
def non_retryable_retried(ctx: Context):
    jobs = ctx.jobs
    made = jobs["attempts_made"].fillna(0)
    retried = jobs["failed_reason"].notna() & ((made > 1) | (jobs["state"].isin(RETRY_WAIT) & (made > 0)))
    for q, jq, hit in ctx.queues_hit(retried & jobs["failed_reason"].str.contains(NON_RETRYABLE, na=False)):
        wasted = int((hit["attempts_made"].fillna(1) - 1).clip(lower=0).sum())
        yield ctx.finding(
            "non-retryable-retried", "high" if len(hit) >= 100 else "medium",
            f"{len(hit)} job(s) retried on errors no retry can fix", q, hit,
            evidence={"top_errors": _top_reasons(ctx, hit), "wasted_attempts": wasted},
            remediation="A 4xx, a validation or quota error, or a TypeError fails the same way every "
                        "time: " + _unrecoverable(q) + "; keep retries for timeouts, 5xx and connection errors.")


@detector("error-hotspot", "retries", "one error fingerprint behind most failures that stick")
def error_hotspot(ctx: Context):
    """Judged on failures that stick: jobs in `failed` (attempts exhausted, or not retried)
    and jobs still failing (a retry pending). A job that failed and then completed is the
    retry strategy working: it is counted in the evidence, never as the hotspot."""
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        has_reason = jq["failed_reason"].notna()
        tried = jq["attempts_made"].fillna(0) > 0
        failing = jq[has_reason & ((jq["state"] == "failed") | (jq["state"].isin(UNFINISHED) & tried))]
        if len(failing) < t.hotspot_min_failures:
            continue
        fp = ctx.failed_fp[failing.index]
        counts = fp.value_counts()
        top, n = str(counts.index[0]), int(counts.iloc[0])
        if n / len(failing) < t.hotspot_share:
            continue
        hit = failing[fp == top]
        recovered = jq[has_reason & (jq["state"] == "completed")]
        example = hit["stacktrace_top"].dropna()
        yield ctx.finding(
            "error-hotspot", "high" if n >= 1000 else "medium",
            f"{n} of {len(failing)} failures are one error: {top[:80]}", q, hit,
            order="finished_at", ascending=False,
            evidence={"fingerprint": top, "share": round(n / len(failing), 3), "failures": len(failing),
                      "failed": int((hit["state"] == "failed").sum()),
                      "still_retrying": int((hit["state"] != "failed").sum()),
                      "recovered_same_error": int((ctx.failed_fp[recovered.index] == top).sum()),
                      "example_message": str(hit["failed_reason"].iloc[0])[:500],
                      "example_stack": None if not len(example) else str(example.iloc[0])},
            remediation="Fix this one error first: it accounts for most failures that stick (jobs failed "
                        "for good or still failing; jobs that failed once and then succeeded are not "
                        "counted). The example stack shows where it is thrown.")


@detector("high-failure-rate", "retries", "a high share of finished jobs failed")
def high_failure_rate(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        source, done, failed = None, 0, 0
        if pd.notna(q["metrics_completed_total"]) and pd.notna(q["metrics_failed_total"]):
            source, done, failed = "metrics", int(q["metrics_completed_total"]), int(q["metrics_failed_total"])
        else:
            evq = ctx.events_of(q)   # (split once: not a pass over every queue's entries per queue)
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
