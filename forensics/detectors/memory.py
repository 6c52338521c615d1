"""Memory: what fills Redis, and settings that let Redis destroy queue state."""
from __future__ import annotations

import pandas as pd

from ..summary import human_bytes
from . import Context, detector, option_set


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
            set_bytes = ctx.family_bytes(q, [state])
            job_bytes = int(fin["memory_bytes"].mean() * n) if fin["memory_bytes"].notna().any() else None
            known = [b for b in (set_bytes, job_bytes) if b is not None]
            weight = ctx.memory_weight(sum(known) if known else None, q)
            heavy = weight["heavy"] if known else n > 10 * t.retention_max_jobs
            yield ctx.finding(
                "unbounded-retention", "high" if heavy else "medium",
                f"{n:,} {state} jobs kept" + (" (no " + ("removeOnComplete" if state == "completed"
                                                          else "removeOnFail") + " on them)" if unset.all() else ""),
                q, fin, count=n, order="finished_at",
                evidence={"state": state, "kept": n, "threshold": t.retention_max_jobs,
                          "jobs_without_option": int(unset.sum()),
                          "set_bytes": set_bytes, "job_bytes_estimate": job_bytes,
                          "share": weight["share"], "share_of": weight["of"]},
                remediation=("Bound retention: `removeOnComplete: {count: 1000}` (or `{age: 86400}`) "
                             if state == "completed" else
                             "Bound retention of failures: `removeOnFail: {count: 5000}` (or `{age: 7 * 86400}`) ")
                + "in the job options" + ("" if q["flavor"] == "bull" else " or the Worker options")
                + "; clear the backlog once with `queue.clean(grace, limit, '" + state + "')`.")


def entry_bytes(ev: pd.DataFrame) -> pd.Series:
    """Approximate bytes of each events-stream entry: its id, name, job id and other fields
    (the text Redis stores; a lower bound of what the stream node takes)."""
    return (ev["stream_id"].str.len().fillna(0) + ev["event"].str.len().fillna(0) + 6
            + ev["job_id"].str.len().fillna(0) + ev["fields"].str.len().fillna(0)).astype("int64")


def stream_bytes(ctx: Context, q, ev: pd.DataFrame) -> tuple[int | None, str | None]:
    """(bytes, how they were measured) of a queue's events stream."""
    measured = ctx.family_bytes(q, ["events"])
    if measured is not None:
        return measured, "MEMORY USAGE"
    if len(ev):
        return int(entry_bytes(ev).sum()), "entry text (a lower bound)"
    return None, None


@detector("events-stream-bloat", "memory", "an events stream holding many megabytes")
def events_stream_bloat(ctx: Context):
    t = ctx.t
    for q, _ in ctx.by_queue(ctx.jobs):
        n, cap = int(q["events_length"]), q["max_len_events"]
        ev = ctx.events_of(q)
        nbytes, basis = stream_bytes(ctx, q, ev)
        per_entry = nbytes / n if nbytes and n else None
        # A cap raised above the usual lets the stream grow: project it at today's entry size.
        raised = pd.notna(cap) and cap > t.events_max_entries
        at_cap = per_entry * float(cap) if per_entry and raised and cap > n else None
        if nbytes is not None:  # bytes decide: many small entries are not bloat
            now_hit = nbytes >= t.events_max_bytes
            cap_hit = at_cap is not None and at_cap >= t.events_max_bytes
        else:  # the stream was not read nor measured: its length is all there is
            now_hit = n > t.events_max_entries
            cap_hit = raised
        if not (now_hit or cap_hit):
            continue
        by_event = {}
        if len(ev):
            b = entry_bytes(ev).groupby(ev["event"]).sum().sort_values(ascending=False)
            by_event = {str(k): int(v) for k, v in b.head(5).items()}
        weight = ctx.memory_weight(nbytes, q)
        severity = ("high" if weight["heavy"] else "medium") if now_hit else "low"
        heavy_kind = next(iter(by_event), None)
        if now_hit and nbytes is not None:
            title = (f"events stream holds {human_bytes(nbytes)} in {n:,} entries "
                     f"({human_bytes(per_entry)} per entry" + (f"; mostly `{heavy_kind}` entries" if heavy_kind else "")
                     + ")")
        elif now_hit:
            title = f"events stream holds {n:,} entries"
        else:
            title = (f"events stream may grow to {human_bytes(at_cap)} (cap {int(cap):,} entries × "
                     f"{human_bytes(per_entry)})" if at_cap else f"events stream cap is {int(cap):,} entries")
        yield ctx.finding(
            "events-stream-bloat", severity, title, q, None, count=n,
            evidence={"entries": n, "stream_bytes": nbytes, "bytes_basis": basis,
                      "bytes_per_entry": None if per_entry is None else round(per_entry),
                      "bytes_by_event": by_event, "share": weight["share"], "share_of": weight["of"],
                      "max_len_events": None if pd.isna(cap) else int(cap),
                      "projected_bytes_at_cap": None if at_cap is None else round(at_cap),
                      "threshold_bytes": t.events_max_bytes},
            remediation="BullMQ copies every return value into the `completed` entry and every failure reason "
                        "into the `failed` entry of the events stream: return small results (an id, a URL) and "
                        "keep big ones elsewhere. Cap the stream: `new Queue(name, {streams: {events: {maxLen: "
                        "1000}}})` (stored as meta `opts.maxLenEvents`); it is trimmed as jobs are added and finish.")


@detector("eviction-policy", "memory", "Redis may evict queue keys")
def eviction_policy(ctx: Context):
    for node, r in ctx.redis_nodes():
        policy = r.get("maxmemory_policy")
        if not isinstance(policy, str) or not policy or policy == "noeviction":
            continue
        evicted = r.get("evicted_keys")
        evicted = 0 if pd.isna(evicted) else int(evicted)
        yield ctx.finding(
            "eviction-policy", "critical" if evicted else "high",
            (f"node {node}: " if node else "") + f"maxmemory-policy is {policy}"
            + (f" and {evicted:,} keys were evicted" if evicted else ""),
            None, None, count=evicted,
            evidence={"maxmemory_policy": policy, "evicted_keys": evicted, "maxmemory": r.get("maxmemory")}
            | ({"node": node} if node else {}),
            remediation=("Run Dragonfly without `--cache_mode` for queues: in cache mode it evicts any key "
                         "under memory pressure, and evicting a job hash, lock or marker silently corrupts "
                         "queues. Keep cache data in another instance." if policy == "dragonfly cache_mode" else
                         "Set `maxmemory-policy noeviction` (CONFIG SET and redis.conf, or the managed "
                         "service's parameter group): evicting a job hash, lock or marker silently corrupts "
                         "queues. Keep cache data in another Redis."))


@detector("memory-pressure", "memory", "Redis close to maxmemory")
def memory_pressure(ctx: Context):
    t = ctx.t
    m = ctx.snap.memory
    home = (ctx.queues.set_index(["prefix", "queue"])["node"] if "node" in ctx.queues and len(ctx.queues)
            else pd.Series(dtype=object))
    for node, r in ctx.redis_nodes():
        used, limit = r.get("used_memory"), r.get("maxmemory")
        if pd.isna(used) or pd.isna(limit) or not limit:
            continue  # no limit configured (or not readable): nothing to compare with
        share = float(used) / float(limit)
        if share < t.memory_pressure_share:
            continue
        mine = m
        if node and len(m) and len(home):  # on a cluster: the queues this node holds
            keys = list(zip(m["prefix"], m["queue"]))
            mine = m[[home.get(k) == node for k in keys]]
        top = (mine.groupby(["prefix", "queue"])["bytes"].sum().sort_values(ascending=False).head(5)
               if len(mine) else pd.Series())
        yield ctx.finding(
            "memory-pressure", "critical" if share >= t.memory_critical_share else "high",
            (f"node {node}: " if node else "") + f"Redis uses {share:.0%} of maxmemory", None, None,
            evidence={"used_memory": int(used), "maxmemory": int(limit), "share": round(share, 3),
                      "biggest_queues": {f"{p}:{qn}": int(b) for (p, qn), b in top.items()}}
            | ({"node": node} if node else {}),
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
