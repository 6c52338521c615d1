"""Adds the library swallowed: a job id or a deduplication id already taken."""
from __future__ import annotations

import pandas as pd

from . import Context, detector

SWALLOW_EVENTS = ["duplicated", "deduplicated", "debounced"]
FINISHED = ["completed", "failed"]
GONE = ["missing-hash"]


def swallowed(ctx: Context, q) -> pd.DataFrame:
    """One row per add BullMQ ignored (event time, the job id it collided with, how: `jobId`
    or `deduplication`, the deduplication id). An add under a deduplication id writes two
    entries on BullMQ 5 (`debounced` and `deduplicated`): counted once."""
    ev = ctx.events_of(q)
    if not len(ev):
        return pd.DataFrame(columns=["time", "target", "how", "dedup_id"])
    sel = ev[ev["event"].isin(SWALLOW_EVENTS)]
    if not len(sel):
        return pd.DataFrame(columns=["time", "target", "how", "dedup_id"])
    fields = sel["fields"].fillna("").astype("str")
    dd_id = fields.str.extract(r'"(?:deduplicationId|debounceId)":"((?:[^"\\]|\\.)*)"', expand=False)
    rows = pd.DataFrame({"time": sel["time"], "target": sel["job_id"].astype("str"), "event": sel["event"],
                         "dedup_id": dd_id})
    dup = rows[rows["event"] == "duplicated"].assign(how="jobId")
    dd = rows[rows["event"] == "deduplicated"]
    db = rows[rows["event"] == "debounced"]
    # per target, the deduplicated entries (BullMQ >= 5.25) or, where there are none, the
    # debounced ones (older releases wrote only those)
    only_db = db[~db["target"].isin(set(dd["target"]))]
    dedup = pd.concat([dd, only_db]).assign(how="deduplication")
    return pd.concat([dup, dedup])[["time", "target", "how", "dedup_id"]].sort_values("time", kind="stable")


@detector("swallowed-adds", "stuck", "adds the library ignored: a job id or deduplication id already taken")
def swallowed_adds(ctx: Context):
    """From the events stream's `duplicated` / `deduplicated` / `debounced` entries (BullMQ;
    Bull records none) and the deduplication keys. An add that collided with a job that had
    already finished is work that will never run (a `jobId` reused as an idempotency key,
    or a dedup key outliving its job); one that collided with a job still waiting is a
    harmless redelivery, and one dropped while a deduplication key's TTL runs a throttle by
    design (both low). A deduplication key without TTL that holds a finished or missing
    job drops every later add with that id: critical."""
    keys = ctx.snap.dedup
    for q, jq in ctx.by_queue(ctx.jobs):
        if q["flavor"] == "bull":
            continue
        adds = swallowed(ctx, q)
        mine = keys[(keys["prefix"].astype("str") == str(q["prefix"])) & (keys["queue"].astype("str") == str(q["queue"]))] \
            if len(keys) else keys
        if not len(adds) and not len(mine):
            continue
        by_id = jq.drop_duplicates("job_id").set_index("job_id")
        state = adds["target"].map(by_id["state"]).fillna("missing") if len(adds) else pd.Series(dtype="str")
        finished = adds["target"].map(by_id["finished_at"]) if len(adds) else pd.Series(dtype="datetime64[ns, UTC]")
        gone = state.isin(GONE + ["missing"])
        done_before = state.isin(FINISHED) & (finished <= adds["time"]).fillna(False).astype(bool)
        # a deduplication key with a TTL drops adds until it expires: a throttle, by design
        ttl_ids = set(mine.loc[mine["ttl_ms"].notna(), "dedup_id"].astype("str")) if len(mine) else set()
        throttled_m = (adds["how"] == "deduplication") & adds["dedup_id"].astype("str").isin(ttl_ids) & done_before \
            if len(adds) else pd.Series(dtype=bool)
        lost_m = (gone | done_before) & ~throttled_m if len(adds) else pd.Series(dtype=bool)
        lost = adds[lost_m] if len(adds) else adds
        throttled = adds[throttled_m] if len(adds) else adds
        pending = adds[~(gone | done_before)] if len(adds) else adds
        stale = pd.DataFrame()
        if len(mine):
            kstate = mine["job_id"].map(by_id["state"]).fillna("missing")
            bad = mine["ttl_ms"].isna() & kstate.isin(FINISHED + GONE + ["missing"])
            stale = mine[bad].assign(target_state=kstate[bad])
        if not len(lost) and not len(stale) and not len(pending) and not len(throttled):
            continue
        sev = "critical" if len(stale) else "medium" if len(lost) else "low"
        collided = {}
        for target, g in adds.groupby("target", sort=False):   # the first 20 targets, as listed
            if len(collided) == 20:
                break
            st = state[g.index[0]]
            collided[str(target)] = {"adds": len(g), "state": st, "how": g["how"].iloc[0],
                                     "dedup_id": None if pd.isna(g["dedup_id"].iloc[0]) else str(g["dedup_id"].iloc[0]),
                                     "work_lost": bool(g.index.isin(lost.index).any()),
                                     "throttled": bool(g.index.isin(throttled.index).any())}
        parts = []
        if len(stale):
            parts.append(f"{len(stale)} deduplication key(s) without TTL hold a finished or missing job: every add "
                         f"with {'that id' if len(stale) == 1 else 'those ids'} is dropped")
        if len(lost):
            parts.append(f"{len(lost):,} add(s) dropped after the job they collided with had finished or was gone: "
                         "their work will not run")
        if len(pending):
            parts.append(f"{len(pending):,} add(s) folded into a job still pending (a redelivery)")
        if len(throttled):
            parts.append(f"{len(throttled):,} add(s) dropped by a deduplication TTL (a throttle)")
        hit = jq[jq["job_id"].isin(set(adds["target"]) | set(mine["job_id"].dropna() if len(mine) else []))]
        yield ctx.finding(
            "swallowed-adds", sev, "; ".join(parts), q, hit, count=len(adds) or len(stale),
            evidence={"swallowed_adds": len(adds), "work_lost": len(lost), "redelivered": len(pending),
                      "throttled": len(throttled),
                      "by_jobId": int((adds["how"] == "jobId").sum()) if len(adds) else 0,
                      "by_deduplication": int((adds["how"] == "deduplication").sum()) if len(adds) else 0,
                      "collided_with": collided,
                      "stale_dedup_keys": [{"dedup_id": str(r.dedup_id), "job_id": None if pd.isna(r.job_id) else str(r.job_id),
                                            "job_state": r.target_state} for r in stale.head(20).itertuples()]
                      if len(stale) else [],
                      "first_dropped": None if not len(lost) else pd.Timestamp(lost["time"].min()).isoformat(),
                      "last_dropped": None if not len(lost) else pd.Timestamp(lost["time"].max()).isoformat()},
            remediation=("Delete the stale deduplication key(s) (`await queue.removeDeduplicationKey(id)`) so "
                         "adds go through again, and upgrade BullMQ (releases from September 2026, #4762, drop a "
                         "key whose job is gone at the next add). " if len(stale) else "")
            + ("A custom `jobId` that is still taken by a retained job makes `add()` a no-op (BullMQ writes a "
               "`duplicated` event and returns the old job). Use ids that are unique per piece of work, or bound "
               "retention (`removeOnComplete: {age}`) to the window in which a repeat is really a duplicate; "
               "listen for `duplicated`/`deduplicated` events on QueueEvents to see it happen."
               if len(lost) or not len(stale) else ""))
