"""Memory: what fills Redis, and settings that let Redis destroy queue state."""
from __future__ import annotations

import pandas as pd

from . import Context, detector, option_set


def _mem(ctx: Context, q, families: list[str]) -> int | None:
    m = ctx.snap.memory
    if not len(m):
        return None
    sel = m[(m["prefix"] == q["prefix"]) & (m["queue"] == q["queue"]) & m["family"].isin(families)]
    return int(sel["bytes"].sum()) if len(sel) else None


@detector("unbounded-retention", "memory", "finished jobs kept without bound")
def unbounded_retention(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        for state, opt, n in (("completed", "remove_on_complete", int(q["n_completed"])),
                              ("failed", "remove_on_fail", int(q["n_failed"]))):
            if n <= t.retention_max_jobs:
                continue
            fin = jq[jq["state"] == state]
            unset = ~option_set(fin[opt])
            yield ctx.finding(
                "unbounded-retention", "high" if n > 10 * t.retention_max_jobs else "medium",
                f"{n:,} {state} jobs kept" + (" (no " + ("removeOnComplete" if state == "completed"
                                                          else "removeOnFail") + " on them)" if unset.all() else ""),
                q, fin, count=n, order="finished_at",
                evidence={"state": state, "kept": n, "threshold": t.retention_max_jobs,
                          "jobs_without_option": int(unset.sum()),
                          "set_bytes": _mem(ctx, q, [state]), "job_bytes_estimate":
                          int(fin["memory_bytes"].mean() * n) if fin["memory_bytes"].notna().any() else None},
                remediation=("Bound retention: `removeOnComplete: {count: 1000}` (or `{age: 86400}`) "
                             if state == "completed" else
                             "Bound retention of failures: `removeOnFail: {count: 5000}` (or `{age: 7 * 86400}`) ")
                + "in the job options" + ("" if q["flavor"] == "bull" else " or the Worker options")
                + "; clear the backlog once with `queue.clean(grace, limit, '" + state + "')`.")


@detector("events-stream-bloat", "memory", "an events stream far longer than needed")
def events_stream_bloat(ctx: Context):
    t = ctx.t
    for q, _ in ctx.by_queue(ctx.jobs):
        n = int(q["events_length"])
        cap = q["max_len_events"]
        if n <= t.events_max_entries and (pd.isna(cap) or cap <= t.events_max_entries):
            continue
        yield ctx.finding(
            "events-stream-bloat", "medium", f"events stream holds {n:,} entries", q, None, count=n,
            evidence={"entries": n, "max_len_events": None if pd.isna(cap) else int(cap),
                      "stream_bytes": _mem(ctx, q, ["events"]), "threshold": t.events_max_entries},
            remediation="Cap it: `new Queue(name, {streams: {events: {maxLen: 10000}}})` (stored as "
                        "meta `opts.maxLenEvents`); the stream is trimmed as jobs are added and finish.")


@detector("eviction-policy", "memory", "Redis may evict queue keys")
def eviction_policy(ctx: Context):
    policy = ctx.redis.get("maxmemory_policy")
    if not isinstance(policy, str) or not policy or policy == "noeviction":
        return
    evicted = ctx.redis.get("evicted_keys")
    evicted = 0 if pd.isna(evicted) else int(evicted)
    yield ctx.finding(
        "eviction-policy", "critical" if evicted else "high",
        f"maxmemory-policy is {policy}" + (f" and {evicted:,} keys were evicted" if evicted else ""),
        None, None, count=evicted,
        evidence={"maxmemory_policy": policy, "evicted_keys": evicted, "maxmemory": ctx.redis.get("maxmemory")},
        remediation="Set `maxmemory-policy noeviction` (CONFIG SET and redis.conf, or the managed "
                    "service's parameter group): evicting a job hash, lock or marker silently corrupts "
                    "queues. Keep cache data in another Redis.")


@detector("memory-pressure", "memory", "Redis close to maxmemory")
def memory_pressure(ctx: Context):
    t = ctx.t
    used, limit = ctx.redis.get("used_memory"), ctx.redis.get("maxmemory")
    if pd.isna(used) or pd.isna(limit) or not limit:
        return  # no limit configured (or not readable): nothing to compare with
    share = float(used) / float(limit)
    if share < t.memory_pressure_share:
        return
    m = ctx.snap.memory
    top = m.groupby(["prefix", "queue"])["bytes"].sum().sort_values(ascending=False).head(5) if len(m) else pd.Series()
    yield ctx.finding(
        "memory-pressure", "critical" if share >= t.memory_critical_share else "high",
        f"Redis uses {share:.0%} of maxmemory", None, None,
        evidence={"used_memory": int(used), "maxmemory": int(limit), "share": round(share, 3),
                  "biggest_queues": {f"{p}:{qn}": int(b) for (p, qn), b in top.items()}},
        remediation="Free memory before writes fail with OOM: bound retention (removeOnComplete / "
                    "removeOnFail), shrink payloads, trim events; then raise maxmemory if the load is real.")


@detector("orphan-job-hashes", "memory", "job hashes no state references")
def orphan_job_hashes(ctx: Context):
    for q, jq in ctx.by_queue(ctx.jobs):
        o = jq[jq["state"] == "orphan"]
        if not len(o):
            continue
        yield ctx.finding(
            "orphan-job-hashes", "low", f"{len(o)} job hash(es) that no state lists", q, o,
            order="added_at",
            evidence={"orphans": len(o), "bytes": int(o["memory_bytes"].fillna(0).sum()) or None,
                      "by_name": {str(k): int(v) for k, v in o["name"].value_counts().head(5).items()}},
            remediation="No worker will ever take these jobs (an interrupted script, a manual LREM/ZREM, "
                        "a failed migration). Inspect them in the snapshot, then delete the keys.")
