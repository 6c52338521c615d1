"""Schedulers and repeatables: the same job scheduled twice, schedulers that stopped
firing, and legacy repeatables BullMQ 6 no longer runs."""
from __future__ import annotations

import pandas as pd

from . import Context, detector, queue_key

UNFINISHED = ["wait", "active", "paused", "prioritized", "delayed", "waiting-children"]


def _major(version) -> int | None:
    try:
        return int(str(version).split(".", 1)[0])
    except (TypeError, ValueError):
        return None


def schedulers_of(ctx: Context, q) -> pd.DataFrame:
    """The queue's schedulers, each with its next job's id and state ("missing" when no job
    is there to run it) and the data it schedules (a legacy repeatable's, from that job)."""
    s = ctx.snap.schedulers
    if not len(s):
        return s
    by_q = ctx.memo(("schedulers-by-queue",), lambda: {k: g for k, g in s.astype(
        {"prefix": "str", "queue": "str"}).groupby(["prefix", "queue"], sort=False)})
    mine = by_q.get(queue_key(q))
    if mine is None:
        return s.iloc[0:0]
    jobs = ctx.jobs_of(q["prefix"], q["queue"])
    by_id = jobs.drop_duplicates("job_id").set_index("job_id")
    pending = jobs[jobs["state"].isin(UNFINISHED) & jobs["repeat_key"].notna()]
    # the newest unfinished job of each repeat key (Bull hashes its ids: found by key)
    by_key = pending.sort_values("job_id").drop_duplicates("repeat_key", keep="last").set_index("repeat_key")
    nid = mine["next_job_id"].where(mine["next_job_id"].notna(), mine["key"].map(by_key["job_id"]))
    state = nid.map(by_id["state"]).fillna("missing")
    data = mine["data"]
    need = data.isna() & nid.notna() & state.ne("missing")
    if need.any():
        p = ctx.snap.payloads_of(q["prefix"], q["queue"], nid[need].tolist(), columns=("data",)).set_index("job_id")
        data = data.where(~need, nid.map(p["data"]) if len(p) else data)
    return mine.assign(next_job_id=nid, next_job_state=state, data=data)


def _rule(r) -> str:
    if pd.notna(r["every_ms"]):
        return f"every {int(r['every_ms']) / 1000:g} s"
    return f"cron {r['pattern']}" + (f" ({r['tz']})" if pd.notna(r["tz"]) and r["tz"] else "")


@detector("duplicate-schedulers", "config", "the same job scheduled more than once (it runs twice as often)")
def duplicate_schedulers(ctx: Context):
    """Schedulers or repeatables of one queue with the same job name and the same data: the
    job runs once per entry (typically after a deploy that changed the repeat options or
    the scheduler id, leaving the old entry behind). One name scheduled per tenant with
    different data is not a duplicate."""
    for q in ctx.queue_rows:
        s = schedulers_of(ctx, q)
        if len(s) < 2:
            continue
        known = s[s["data"].notna() & s["name"].notna()]
        for (name, _), g in known.groupby(["name", "data"], sort=False):
            if len(g) < 2:
                continue
            rules = [_rule(r) for _, r in g.iterrows()]
            ids = g["next_job_id"].dropna().astype(str).tolist()
            yield ctx.finding(
                "duplicate-schedulers", "medium",
                f"job `{name}` is scheduled {len(g)} times with the same data ({'; '.join(rules)})", q, None,
                count=len(g),
                evidence={"name": str(name), "entries": [
                    {"key": str(r["key"]), "kind": r["kind"], "rule": _rule(r),
                     "next_run": None if pd.isna(r["next_run"]) else pd.Timestamp(r["next_run"]).isoformat(),
                     "iterations": None if pd.isna(r["iterations"]) else int(r["iterations"])}
                    for _, r in g.iterrows()], "data_bytes": int(len(str(g["data"].iloc[0])))},
                remediation=("Keep one entry and remove the others: `await queue.removeJobScheduler(id)` for job "
                             "schedulers, `await queue.removeRepeatableByKey(key)` for repeatables. Give each "
                             "scheduler a stable id and change its options with `upsertJobScheduler(sameId, ...)`, "
                             "which replaces the entry instead of adding one.")).with_ids(ids)


def _not_advancing(ctx: Context, grace: pd.Timedelta) -> dict:
    """On a series: (prefix, queue, key) -> since when a job scheduler has been due (its
    next run past by ``grace``) in one capture while its iteration count ``ic`` has not
    moved in any capture since, over at least ``grace``."""
    series = ctx.series
    if series is None or len(series) < 2:
        return {}
    s = series.schedulers
    if not len(s) or "iterations" not in s:
        return {}
    s = s[s["iterations"].notna()].astype({"prefix": "str", "queue": "str", "key": "str"})
    out = {}
    for k, g in s.sort_values("captured_at").groupby(["prefix", "queue", "key"], sort=False):
        due = g[g["next_run"] < g["captured_at"] - grace]
        if not len(due):
            continue
        first = due.iloc[0]
        later = g[g["captured_at"] >= first["captured_at"]]
        if later["captured_at"].max() - first["captured_at"] >= grace and \
                (later["iterations"] == first["iterations"]).all():
            out[k] = pd.Timestamp(first["captured_at"]).isoformat()
    return out


@detector("scheduler-stalled", "stuck", "a scheduler whose next run is past due with no job to run it")
def scheduler_stalled(ctx: Context):
    """A scheduler or repeatable, not ended, whose next run is ``scheduler_grace_s`` past
    due and whose next job is gone (removed, evicted, lost in a failover): nothing will
    create another, so it never fires again. On a series, also a job scheduler due that
    long whose iteration count does not move (no-workers or stopped-consuming then say why
    nothing runs it)."""
    grace = pd.Timedelta(seconds=ctx.t.scheduler_grace_s)
    frozen = _not_advancing(ctx, grace)
    for q in ctx.queue_rows:
        s = schedulers_of(ctx, q)
        if not len(s):
            continue
        ended = s["end_at"].notna() & (s["end_at"] < ctx.now)
        gone = s["next_job_state"].isin(["missing", "missing-hash", "completed", "failed"])
        stuck_ic = s["key"].astype("str").map(lambda k: (str(q["prefix"]), str(q["queue"]), k) in frozen)
        late = s[s["next_run"].notna() & (s["next_run"] < ctx.now - grace) & ~ended & (gone | stuck_ic)]
        if not len(late):
            continue
        oldest = late["next_run"].min()
        how = "no job is there to run it" if gone[late.index].all() else \
            "its iteration count has not moved since" if not gone[late.index].any() else \
            "no job to run it, or its iteration count not moving"
        yield ctx.finding(
            "scheduler-stalled", "high",
            f"{len(late)} scheduler(s) stopped firing: next run due {pd.Timestamp(oldest).isoformat()} and {how}",
            q, None, count=len(late),
            evidence={"schedulers": [
                {"key": str(r["key"]), "kind": r["kind"], "name": None if pd.isna(r["name"]) else str(r["name"]),
                 "rule": _rule(r), "next_run": pd.Timestamp(r["next_run"]).isoformat(),
                 "late_minutes": round((ctx.now - r["next_run"]).total_seconds() / 60, 1),
                 "next_job_id": None if pd.isna(r["next_job_id"]) else str(r["next_job_id"]),
                 "next_job_state": r["next_job_state"],
                 "iterations": None if pd.isna(r["iterations"]) else int(r["iterations"]),
                 "iterations_not_advancing_since": frozen.get((str(q["prefix"]), str(q["queue"]), str(r["key"])))}
                for _, r in late.head(20).iterrows()]},
            remediation="Re-register the scheduler so it gets a next job: `await queue.upsertJobScheduler(id, "
                        "repeatOpts, template)` (BullMQ), or remove and re-add the repeatable. Find what removed "
                        "its job (a manual clean or drain, eviction under a non-noeviction policy, a failover that "
                        "lost writes).").with_ids(late["next_job_id"].dropna().astype(str).tolist())


@detector("legacy-repeatables", "config", "legacy repeatable jobs on a BullMQ 6 queue: v6 does not run them")
def legacy_repeatables(ctx: Context):
    """BullMQ 6 removed the legacy repeat API (`repeat` on `add()`, Queue.getRepeatableJobs):
    entries a BullMQ 5 deploy left in the repeat zset are no longer run once v6 runs the
    queue (its meta says 6.x)."""
    for q in ctx.queue_rows:
        if q["flavor"] != "bullmq" or (_major(q["library_version"]) or 0) < 6:
            continue
        s = schedulers_of(ctx, q)
        legacy = s[s["kind"] == "legacy-repeatable"] if len(s) else s
        if not len(legacy):
            continue
        yield ctx.finding(
            "legacy-repeatables", "high",
            f"{len(legacy)} legacy repeatable job(s) on a BullMQ {q['library_version']} queue: v6 will not run them",
            q, None, count=len(legacy),
            evidence={"library_version": str(q["library_version"]), "entries": [
                {"key": str(r["key"]), "name": None if pd.isna(r["name"]) else str(r["name"]), "rule": _rule(r),
                 "next_run": None if pd.isna(r["next_run"]) else pd.Timestamp(r["next_run"]).isoformat()}
                for _, r in legacy.head(20).iterrows()]},
            remediation="Move each to a job scheduler: `await queue.upsertJobScheduler(id, {pattern | every, tz}, "
                        "{name, data, opts})`, then remove the legacy entry (with BullMQ 5: "
                        "`queue.removeRepeatableByKey(key)`).").with_ids(legacy["next_job_id"].dropna().astype(str).tolist())
