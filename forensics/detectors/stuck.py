"""Stuck work: jobs that sit active, waiting or delayed and will not move on their own."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import Context, detector, is_bull, minutes, queue_key
from .trends import duration

WAITING = ["wait", "prioritized"]


def _waiting_count(q) -> int:
    return int(q["n_wait"]) + int(q["n_prioritized"]) + int(q["n_paused"])


def _iso(ts) -> str | None:
    return None if pd.isna(ts) else pd.Timestamp(ts).isoformat()


def lockless_active(ctx: Context, jq: pd.DataFrame) -> pd.DataFrame:
    """Active jobs whose lock is gone (past the moment between taking a job and locking it).
    A job whose hash says it finished after its last start was read from the active list
    just before it finished (a capture is not atomic): it is not stalled."""
    return jq[_lockless(ctx, jq)]


def _lockless(ctx: Context, jq: pd.DataFrame) -> pd.Series:
    """``lockless_active`` as a mask over ``jq`` (a mask costs a fraction of a selection)."""
    old = ((ctx.now - jq["processed_at"]) > pd.Timedelta(seconds=ctx.t.stalled_grace_s)).fillna(True)
    moved_on = (jq["finished_at"] >= jq["processed_at"]).fillna(False).astype(bool)
    return jq["state"].eq("active") & ~jq["lock_present"].fillna(False).astype(bool) & old & ~moved_on


@detector("stalled-active", "stuck", "active jobs whose lock is gone: their worker died")
def stalled_active(ctx: Context):
    jobs = ctx.jobs
    some = ctx.queues_where(jobs["state"].eq("active") & ~jobs["lock_present"].fillna(False).astype(bool))
    for q, jq in ctx.by_queue(ctx.jobs):
        if queue_key(q) not in some:
            continue   # no active job without its lock
        act = jq[jq["state"] == "active"]
        hit = lockless_active(ctx, jq)
        if not len(hit):
            continue
        workers = int(q["workers"]) if ctx.workers_known else None
        sev = "critical" if workers == 0 else "high"
        checker = ("a Queue with a process() handler runs the stalled check every "
                   "settings.stalledInterval (30 s)") if is_bull(q) else \
            "a running Worker's stalled checker moves them back to wait every stalledInterval (30 s)"
        yield ctx.finding(
            "stalled-active", sev, f"{len(hit)} active job(s) without a lock: their worker died", q, hit,
            order="processed_at",
            evidence={"active": len(act), "without_lock": len(hit), "workers_connected": workers,
                      "oldest_started": _iso(hit["processed_at"].min()),
                      "in_stalled_set": int(hit["in_stalled_set"].fillna(False).sum())},
            remediation=(f"The worker holding these jobs is gone (crash, OOM kill, deploy). {checker}"
                         + ("; no worker is connected, so start one." if workers == 0 else ".")
                         + " Close workers gracefully on SIGTERM (`await worker.close()` / "
                         "`await queue.close()`) so jobs are not left behind."))


def _p95_runtime(jobs: pd.DataFrame) -> pd.Series:
    done = jobs[(jobs["state"] == "completed") & jobs["processed_at"].notna() & jobs["finished_at"].notna()]
    if not len(done):
        return pd.Series(dtype="float64")
    secs = (done["finished_at"] - done["processed_at"]).dt.total_seconds()
    g = secs.groupby(done["name"])
    p95 = g.quantile(0.95)
    return p95[g.size() >= 20]


@detector("hung-active", "stuck", "active jobs with a live lock running far too long")
def hung_active(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        act = jq[(jq["state"] == "active") & jq["lock_present"].fillna(False).astype(bool)]
        if not len(act):
            continue
        running = (ctx.now - act["processed_at"]).dt.total_seconds()
        p95 = _p95_runtime(jq)
        limit = act["name"].map(p95 * t.hung_active_factor).astype("float64").fillna(0)
        limit = limit.clip(lower=t.hung_active_minutes * 60)
        hit = act[running > limit]
        if not len(hit):
            continue
        longest = float(running[hit.index].max())
        waiting = int(jq["state"].isin(WAITING).sum())
        all_hung = len(hit) == int((jq["state"] == "active").sum()) and waiting > 0
        yield ctx.finding(
            "hung-active", "critical" if all_hung else "high",
            f"{len(hit)} job(s) active for up to {longest / 60:.0f} min with a live lock"
            + (f"; every active job hangs and {waiting} wait behind them" if all_hung else ""),
            q, hit, order="processed_at",
            evidence={"longest_running_minutes": round(longest / 60, 1),
                      "threshold_minutes": round(float(limit[hit.index].min()) / 60, 1),
                      "active": int((jq["state"] == "active").sum()), "waiting_behind": waiting,
                      "p95_runtime_s_by_name": {k: round(v, 1) for k, v in p95.items()}},
            remediation=("The worker is alive (it renews the lock) but the processor never returns. "
                         + ("Set `timeout` in the job options (Bull fails the job after that many ms, "
                            "but the promise keeps running: make the work cancellable)."
                            if is_bull(q) else
                            "BullMQ has no job timeout: race the work against a timer inside the "
                            "processor and throw, or use a sandboxed processor you can kill.")
                         + " Find what it waits on: a hung HTTP call without a timeout, a lock, a stream."))


STALL_TEXT = "stalled more than allowable limit"


@detector("stall-failures", "stuck", "jobs failed or re-queued by the stalled-job checker")
def stall_failures(ctx: Context):
    jobs = ctx.jobs
    some = ctx.queues_where(jobs["failed_reason"].str.contains(STALL_TEXT, regex=False, na=False)
                            | jobs["deferred_failure"].str.contains(STALL_TEXT, regex=False, na=False)
                            | (jobs["stalled_count"].fillna(0) > 0))
    for q, jq in ctx.by_queue(ctx.jobs):
        if queue_key(q) not in some:
            continue   # no job the checker failed, marked or re-queued
        failed = jq[(jq["state"] == "failed") & jq["failed_reason"].str.contains(STALL_TEXT, regex=False, na=False)]
        deferred = jq[jq["deferred_failure"].str.contains(STALL_TEXT, regex=False, na=False)]
        recovered = jq[(jq["stalled_count"].fillna(0) > 0) & ~jq.index.isin(failed.index.union(deferred.index))]
        # a scheduler's job is never failed for stalling: one that crashes its worker loops
        loops = recovered[recovered["repeat_key"].notna()
                          & (recovered["stalled_count"].fillna(0) >= ctx.t.scheduler_stall_loop)]
        # marked to fail (defa) and taken, but its worker died before failing it
        zombies = deferred[(deferred["state"] == "active") & ~deferred["lock_present"].fillna(False).astype(bool)]
        hit = pd.concat([failed, deferred, recovered])
        if not len(hit):
            continue
        sev = "high" if len(failed) or len(deferred) or len(loops) else "medium"
        yield ctx.finding(
            "stall-failures", sev,
            "; ".join(x for x in (f"{len(failed) + len(deferred)} job(s) failed for stalling" if len(failed) or len(deferred)
                                  else "", f"{len(recovered)} job(s) re-queued after a stall" if len(recovered) else "",
                                  f"{len(loops)} scheduler job(s) stalled {int(loops['stalled_count'].max())} times and "
                                  "counting (never failed for stalling)" if len(loops) else "") if x)
            + ": their worker lost the lock",
            q, hit, order="stalled_count", ascending=False,
            evidence={"failed_for_stalling": len(failed), "deferred_stall_failure": len(deferred),
                      "requeued_after_stall": len(recovered),
                      "max_stalled_count": int(jq["stalled_count"].fillna(0).max()),
                      "scheduler_stall_loops": {str(j): int(c) for j, c in
                                                zip(loops["job_id"].head(20), loops["stalled_count"].head(20))},
                      "deferred_zombies": [str(j) for j in zombies["job_id"].head(20)]},
            remediation=("These jobs lost their lock while running: the worker crashed, or its event loop "
                         "was blocked longer than lockDuration (30 s) by synchronous CPU work so it could "
                         "not renew the lock. Move CPU-heavy work to sandboxed processors (a file path "
                         "instead of a function), raise lockDuration for long jobs, keep maxStalledCount "
                         ">= 1." + (" BullMQ >= 5.53.2 fails such a job the next time it is taken "
                                    "(field `defa`)." if len(deferred) else "")
                         + (" A scheduler's job is never failed for stalling: find why it crashes its worker "
                            "(memory, a native crash), or remove the scheduler (`queue.removeJobScheduler(id)`) "
                            "until it is fixed." if len(loops) else "")))


@detector("no-workers", "stuck", "work that needs a worker, and no worker connected")
def no_workers(ctx: Context):
    if not ctx.workers_known:
        return
    for q, jq in ctx.by_queue(ctx.jobs):
        if q["paused"] or int(q["workers"]) > 0:
            continue  # a paused queue: paused-backlog says why nothing moves
        # Everything only a worker moves on: waiting jobs; delayed jobs past due (workers
        # promote them: BullMQ >= 2 Workers, Bull queues with a process() handler); active
        # jobs whose lock is gone (a worker's stalled checker puts them back).
        state = jq["state"]
        waiting, due = state.isin(WAITING), state.eq("delayed") & (jq["due_at"] <= ctx.now).fillna(False)
        stalled = _lockless(ctx, jq)
        if not (waiting | due | stalled).any():
            continue
        # (the three are disjoint by state: one selection, waiting first, then due, then stalled)
        hit = jq.loc[jq.index[waiting].append(jq.index[due]).append(jq.index[stalled])]
        kinds = {"waiting": int((waiting & state.eq("wait")).sum()),
                 "prioritized": int((waiting & state.eq("prioritized")).sum()),
                 "delayed past due": int(due.sum()), "active without lock": int(stalled.sum())}
        since = pd.concat([jq.loc[waiting, "added_at"], jq.loc[due, "due_at"], jq.loc[stalled, "processed_at"]]).min()
        yield ctx.finding(
            "no-workers", "critical",
            f"{len(hit):,} job(s) need a worker and none is connected ("
            + ", ".join(f"{n:,} {k}" for k, n in kinds.items() if n) + ")",
            q, hit, order="added_at",
            evidence={"waiting": int(waiting.sum()), "prioritized": kinds["prioritized"],
                      "delayed_past_due": kinds["delayed past due"], "active_without_lock": kinds["active without lock"],
                      "workers_connected": 0, "oldest_waiting_since": _iso(jq.loc[waiting, "added_at"].min()),
                      "needs_a_worker_since": _iso(since)},
            remediation=(("No session named for this queue is in pg_stat_activity" if ctx.manifest.get("backend")
                          == "postgres" else "No connection named for this queue is in CLIENT LIST")
                         + ", so nothing will take these jobs, promote the delayed ones or recover the stalled ones. "
                         "Start workers (" + ("`queue.process(...)`" if is_bull(q) else "`new Worker(...)`")
                         + (") against this database and schema" if ctx.manifest.get("backend") == "postgres"
                            else ") against this Redis, db and prefix") + "; check their logs for connection errors."))


def last_activity(ctx: Context, q, jq: pd.DataFrame) -> pd.Timestamp | None:
    """When a worker last took or finished a job of the queue: the jobs' processedOn and
    finishedOn, and the events stream's `active`, `completed` and `failed` entries."""
    times = [jq["processed_at"].max(), jq["finished_at"].max()]
    ev = ctx.events_of(q)
    if len(ev):
        times.append(ev.loc[ev["event"].isin(["active", "completed", "failed"]), "time"].max())
    m = ctx.memo(("metrics-by-queue",), lambda: {k: g for k, g in ctx.snap.metrics.astype(
        {"prefix": "str", "queue": "str"}).groupby(["prefix", "queue"])} if len(ctx.snap.metrics) else {})
    mq = m.get(queue_key(q))
    if mq is not None and (mq["count"] > 0).any():  # a minute in which jobs finished (to its end)
        times.append(mq.loc[mq["count"] > 0, "time"].max() + pd.Timedelta(minutes=1))
    times = [pd.Timestamp(t) for t in times if pd.notna(t)]
    return max(times) if times else None


def _connections(ctx: Context, q) -> pd.DataFrame:
    w = ctx.snap.workers
    if not len(w):
        return w
    return w[(w["prefix"].astype("str") == str(q["prefix"])) & (w["queue"].astype("str") == str(q["queue"]))
             & (w["role"].astype("str") == "worker")]


@detector("stopped-consuming", "stuck", "workers connected, work waiting, and no worker takes it")
def stopped_consuming(ctx: Context):
    """Worker connections exist, but none consumes: work has waited past
    ``stopped_consuming_s``, no job was taken or finished for as long, and no job is being
    worked on (a live lock). A paused queue (paused-backlog), no connection at all
    (no-workers) and a rate limiter holding the queue (rate-limit-freeze) are told apart.
    Seen after a Redis failover or an outage (blocking reads that never settle after the
    reconnect), a ``worker.pause()`` left on, or ``autorun: false`` and ``run()`` never
    called: dashboards show the workers while the backlog ages."""
    if not ctx.workers_known:
        return
    limit = pd.Timedelta(seconds=ctx.t.stopped_consuming_s)
    block_max = ctx.t.worker_block_max_s
    for q, jq in ctx.by_queue(ctx.jobs):
        if q["paused"] or int(q["workers"]) == 0 or pd.notna(q["limiter_ttl_ms"]):
            continue
        waiting = jq[jq["state"].isin(WAITING)]
        since = waiting["processed_at"].where(waiting["processed_at"].notna(), waiting["added_at"])
        old = waiting[(ctx.now - since) > limit]
        due = jq[(jq["state"] == "delayed") & (jq["due_at"] < ctx.now - limit)]
        if not len(old) and not len(due):
            continue
        act = jq[jq["state"] == "active"]
        if act["lock_present"].fillna(False).astype(bool).any():
            continue  # a job is being worked on: a slow or hung pool (hung-active, stale-backlog)
        last = last_activity(ctx, q, jq)
        if last is not None and ctx.now - last <= limit:
            continue
        conns = _connections(ctx, q)
        blocked = conns["blocked"].fillna(False).astype(bool) if "blocked" in conns else \
            pd.Series(False, index=conns.index)
        idle = conns["idle_s"].astype("float64")
        stuck_block = conns[blocked & (idle > block_max)]
        not_asking = conns[~blocked]
        if len(stuck_block):
            why = (f"{len(stuck_block)} worker connection(s) blocked in "
                   f"{', '.join(sorted(set(stuck_block['last_command'].dropna().astype(str))))} for up to "
                   f"{int(idle[stuck_block.index].max())} s: a blocking read that never settles (after a "
                   "failover or a reconnect)")
        elif len(not_asking) == len(conns):
            why = (f"no worker connection is waiting for jobs: idle {int(idle.min())}-{int(idle.max())} s, last "
                   f"command {', '.join(sorted(set(conns['last_command'].dropna().astype(str)))) or 'unknown'} "
                   "(a paused worker, `autorun: false` never run, or a fetch loop that died)")
        else:
            why = "worker connections wait for jobs, yet none takes the ones waiting (the wake-up marker is lost)"
        check = q.get("stalled_check_ttl_ms")
        hit = pd.concat([old, due])
        oldest = pd.concat([since[old.index], due["due_at"]]).min()
        n_wait = len(waiting) + len(due)
        yield ctx.finding(
            "stopped-consuming", "critical",
            f"{int(q['workers'])} worker(s) connected but none takes work: {n_wait:,} job(s) waiting, the oldest "
            f"for {minutes(ctx.now - oldest)} min, nothing taken " +
            (f"for {minutes(ctx.now - last)} min" if last is not None else "at all"),
            q, hit, count=n_wait, order="added_at",
            evidence={"workers_connected": int(q["workers"]), "waiting": len(waiting), "delayed_past_due": len(due),
                      "oldest_waiting_since": _iso(oldest), "last_activity": _iso(last),
                      "why": why, "blocked_connections": int(blocked.sum()),
                      "stalled_check": ("lapsed: no stalled checker ran within its interval" if pd.isna(check)
                                        else f"ran, {int(check)} ms left") if "stalled_check_ttl_ms" in q else None,
                      "connections": [
                          {"name": str(c["client_name"]), "addr": c["addr"], "idle_s": _int(c["idle_s"]),
                           "age_s": _int(c["age_s"]), "flags": c.get("flags"), "last_command": c["last_command"]}
                          for _, c in conns.head(10).iterrows()]},
            remediation=("The workers are connected but not consuming. Restart them (a new connection "
                         "unblocks a read that never settled); if a worker was paused, `await worker.resume()`; "
                         "a Worker built with `autorun: false` needs `worker.run()`. Upgrade BullMQ (recent "
                         "releases reconnect blocking reads after failovers) and watch the time since the "
                         "last `active` event, not the worker count."
                         if not is_bull(q) else
                         "The workers are connected but not consuming. Restart them; a queue paused locally "
                         "(`queue.pause(true)`) needs `queue.resume(true)` in that process."))


def _int(v):
    return None if v is None or pd.isna(v) else int(v)


@detector("paused-backlog", "stuck", "a paused queue with jobs waiting")
def paused_backlog(ctx: Context):
    for q, jq in ctx.by_queue(ctx.jobs):
        waiting = _waiting_count(q)
        if not q["paused"] or not waiting:
            continue
        w = jq[jq["state"].isin(WAITING + ["paused"])]
        yield ctx.finding(
            "paused-backlog", "high", f"queue is paused with {waiting} job(s) waiting", q, w,
            count=waiting, order="added_at",
            evidence={"waiting": waiting, "oldest_waiting_since": _iso(w["added_at"].min())},
            remediation="Resume it with `await queue.resume()` once the reason for the pause is gone "
                        "(a paused queue takes no job); find who paused it (deploy scripts, an admin UI).")


@detector("overdue-delayed", "stuck", "delayed jobs past their due time")
def overdue_delayed(ctx: Context):
    grace = pd.Timedelta(seconds=ctx.t.overdue_delayed_s)
    for q, jq in ctx.by_queue(ctx.jobs):
        d = jq[(jq["state"] == "delayed") & (jq["due_at"] < ctx.now - grace)]
        if not len(d):
            continue
        late = ctx.now - d["due_at"].min()
        yield ctx.finding(
            "overdue-delayed", "high", f"{len(d)} delayed job(s) overdue, by up to {minutes(late)} min",
            q, d, order="due_at",
            evidence={"overdue": len(d), "most_overdue_minutes": minutes(late),
                      "workers_connected": int(q["workers"]) if ctx.workers_known else None},
            remediation=("Nothing promotes delayed jobs: " + (
                "Bull promotes them from a Queue instance with a process() handler"
                if is_bull(q) else "BullMQ >= 2 promotes them from running Workers (v1: a QueueScheduler)")
                + ". Start a worker; if one runs, check its clock and its connection to this Redis."))


@detector("stale-backlog", "stuck", "the oldest waiting job has waited too long")
def stale_backlog(ctx: Context):
    limit = pd.Timedelta(minutes=ctx.t.stale_backlog_minutes)
    jobs = ctx.jobs
    since_all = jobs["processed_at"].where(jobs["processed_at"].notna(), jobs["added_at"])
    some = ctx.queues_where(jobs["state"].isin(WAITING) & ((ctx.now - since_all) > limit).fillna(False))
    for q, jq in ctx.by_queue(ctx.jobs):
        if q["paused"] or queue_key(q) not in some:
            continue  # paused: paused-backlog says why; else no job has waited that long
        w = jq[jq["state"].isin(WAITING)]
        if not len(w):
            continue
        # A job back in wait after an attempt waits since that attempt, not since it was added.
        since = w["processed_at"].where(w["processed_at"].notna(), w["added_at"])
        old = w[(ctx.now - since) > limit]
        if not len(old):
            continue
        age = ctx.now - since.min()
        sev = "high" if age > 4 * limit else "medium"
        yield ctx.finding(
            "stale-backlog", sev, f"oldest waiting job has waited {minutes(age)} min ({len(w)} waiting)",
            q, old, order="added_at",
            evidence={"waiting": len(w), "older_than_threshold": len(old), "oldest_wait_minutes": minutes(age),
                      "workers_connected": int(q["workers"]) if ctx.workers_known else None},
            remediation="The backlog is not draining. With no worker connected, start one (no-workers); "
                        "otherwise add workers or raise `concurrency`, and look for slow or hung jobs "
                        "(hung-active) and rate limits (rate-limit-freeze).")


@detector("blocked-parent", "stuck", "flow parents waiting on a failed child")
def blocked_parent(ctx: Context):
    j = ctx.jobs
    kids = j[(j["state"] == "failed") & j["parent_key"].notna()]
    if not len(kids):
        return
    j_key = j["prefix"] + ":" + j["queue"] + ":" + j["job_id"]
    for q, jq in ctx.by_queue(j):
        parents = jq[(jq["state"] == "waiting-children") & j_key[jq.index].isin(kids["parent_key"])]
        if not len(parents):
            continue
        failed_kids = kids[kids["parent_key"].isin(j_key[parents.index])]
        yield ctx.finding(
            "blocked-parent", "high", f"{len(parents)} flow parent(s) wait on a failed child", q, parents,
            evidence={"failed_children": failed_kids["job_id"].head(20).tolist(),
                      "child_reasons": failed_kids["failed_reason"].dropna().head(3).tolist()},
            remediation="A child failed and its parent waits forever. Give children "
                        "`failParentOnFailure: true` (or `ignoreDependencyOnFailure` / "
                        "`continueParentOnFailure`), or retry the failed child (`job.retry()`).")


@detector("rate-limit-freeze", "stuck", "a rate limiter that blocks the queue for minutes")
def rate_limit_freeze(ctx: Context):
    for q, jq in ctx.by_queue(ctx.jobs):
        ttl = q["limiter_ttl_ms"]
        # Bull's limiter parks the jobs it holds back in delayed; BullMQ leaves them waiting.
        waiting = int(q["n_wait"]) + int(q["n_prioritized"]) + (int(q["n_delayed"]) if is_bull(q) else 0)
        if pd.isna(ttl) or ttl <= ctx.t.rate_limit_freeze_s * 1000 or not waiting:
            continue
        w = jq[jq["state"].isin(WAITING + (["delayed"] if is_bull(q) else []))]
        yield ctx.finding(
            "rate-limit-freeze", "high",
            f"rate limiter blocks {waiting} waiting job(s) for another {float(ttl) / 60000:.0f} min",
            q, w, count=waiting, order="added_at",
            evidence={"limiter_ttl_ms": int(ttl), "limiter_value": None if pd.isna(q["limiter_value"]) else int(q["limiter_value"]),
                      "global_rate_limit": None if pd.isna(q["rate_limit_max"]) else
                      {"max": int(q["rate_limit_max"]), "duration_ms": int(q["rate_limit_duration_ms"])}},
            remediation=("The limiter key lives far longer than a normal rate-limit window: a manual "
                         "`worker.rateLimit(ms)` / `queue.rateLimit(ms)` with a huge value, or "
                         "`limiter: {max, duration}` with a long duration. Fix the duration; "
                         "`await queue.removeRateLimitKey()` lifts a manual limit." if not is_bull(q) else
                         "Bull's `limiter: {max, duration}` has a window of minutes: shorten `duration` "
                         "(milliseconds) or raise `max`."))


def became_waiting(ctx: Context, q, jobs: pd.DataFrame) -> pd.Series:
    """When each never-started job became waiting: when it was added, or, for a job added
    with a delay, when that delay ran out (the hash's `delay` is reset to 0 on promotion,
    so it is read from the job's options)."""
    since = jobs["added_at"].copy()
    opts = ctx.snap.payloads_of(q["prefix"], q["queue"], jobs["job_id"], ["opts"])
    if len(opts):
        # The job's own delay, not the one inside `backoff` (or another nested option):
        # nested objects are emptied first, two levels deep.
        text = opts.set_index("job_id")["opts"].astype("str")
        for _ in range(2):
            text = text.str.replace(r':\{[^{}]*\}', ":{}", regex=True)
        delay = pd.to_numeric(text.str.extract(r'"delay":(\d+)', expand=False), errors="coerce")
        ms = jobs["job_id"].map(delay).fillna(0)
        since = since + pd.to_timedelta(ms.astype("float64"), unit="ms")
    return since


def _ms(s: pd.Series) -> np.ndarray:
    return s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ms]").view("int64")


def _overtaken(taken: pd.DataFrame, added: pd.Series, since: pd.Series, enough: int) -> np.ndarray:
    """For each job (added, became waiting at since): how many taken jobs were added after it
    and taken after it became waiting. Jobs that cannot reach ``enough`` (too few jobs taken
    after they became waiting: say, a delay still running) are counted 0 at once; the rest
    are counted in blocks, in numpy."""
    t_added, t_proc = _ms(taken["added_at"]), _ms(taken["processed_at"])
    a, s = _ms(added), _ms(since)
    out = np.zeros(len(a), dtype="int64")
    bound = len(t_proc) - np.searchsorted(np.sort(t_proc), s, side="right")
    todo = np.flatnonzero(bound >= enough)
    block = max(1, 2_000_000 // max(len(t_added), 1))
    for i in range(0, len(todo), block):
        k = todo[i:i + block]
        out[k] = ((t_added[None, :] > a[k, None]) & (t_proc[None, :] > s[k, None])).sum(axis=1)
    return out


@detector("priority-starvation", "stuck", "waiting jobs overtaken by many jobs added after them")
def priority_starvation(ctx: Context):
    t = ctx.t
    jobs = ctx.jobs
    taken = jobs["processed_at"].notna() & jobs["added_at"].notna()
    enough = taken.groupby([jobs["prefix"].astype(str), jobs["queue"].astype(str)]).sum()
    enough = set(enough.index[enough >= t.starvation_min_overtaken])
    some = enough & ctx.queues_where(jobs["state"].isin(WAITING) & jobs["processed_at"].isna()
                                     & jobs["added_at"].notna() & (jobs["attempts_made"].fillna(0) == 0))
    for q, jq in ctx.by_queue(ctx.jobs):
        if q["paused"] or queue_key(q) not in some:
            continue   # no job waiting that was never taken, or too few taken to overtake it
        # Jobs never taken yet (a retried job waits since its last attempt, not since it was added)
        cand = jq[jq["state"].isin(WAITING) & jq["processed_at"].isna() & jq["added_at"].notna()
                  & (jq["attempts_made"].fillna(0) == 0)]
        taken = jq[jq["processed_at"].notna() & jq["added_at"].notna()]
        if not len(cand) or len(taken) < t.starvation_min_overtaken:
            continue
        added = np.sort(_ms(taken["added_at"]))   # (int64 ms: tz-aware to_numpy() would build objects)
        later = len(added) - np.searchsorted(added, _ms(cand["added_at"]), side="right")
        cand = cand[later >= t.starvation_min_overtaken]
        if not len(cand):
            continue
        # Overtaken: added after the job, and taken by a worker after it became waiting. For
        # a job added without delay that is every later-added job that was taken (taken
        # after it was added); a job added with a delay is compared pairwise (few of them).
        since = became_waiting(ctx, q, cand)
        n_over = pd.Series(later[later >= t.starvation_min_overtaken], index=cand.index)
        delayed = (since > cand["added_at"]).to_numpy()
        if delayed.any():
            n_over[delayed] = _overtaken(taken, cand["added_at"][delayed], since[delayed],
                                         t.starvation_min_overtaken)
        starving = cand[(n_over >= t.starvation_min_overtaken).to_numpy()]
        if not len(starving):
            continue
        oldest = starving["added_at"].idxmin()
        waited = ctx.now - since[oldest]
        by = taken[(taken["added_at"] > starving.at[oldest, "added_at"]) & (taken["processed_at"] > since[oldest])]
        prio = lambda s: {str(int(k)): int(v) for k, v in s.fillna(0).value_counts().head(5).items()}
        plain_first = not is_bull(q) and (starving["priority"].fillna(0) > 0).all() and (by["priority"].fillna(0) == 0).any()
        yield ctx.finding(
            "priority-starvation", "high" if waited >= pd.Timedelta(minutes=t.starvation_minutes) else "medium",
            f"{len(starving)} waiting job(s) overtaken: {len(by):,} job(s) added after the oldest were taken "
            f"first (it has waited {duration(waited.total_seconds())})", q, starving, order="added_at",
            evidence={"starving": len(starving), "overtaken_by": len(by), "oldest_waiting_minutes": minutes(waited),
                      "starving_priorities": prio(starving["priority"]), "overtaker_priorities": prio(by["priority"]),
                      "threshold_overtaken": t.starvation_min_overtaken},
            remediation=(("BullMQ >= 4 takes every un-prioritized (priority 0) job before any prioritized one: "
                          "prioritized work starves while plain jobs keep coming. Give every job of this queue a "
                          "priority, or put prioritized work in its own queue." if plain_first else
                          "Better-priority jobs added later keep going first (BullMQ: lower numbers first, and "
                          "priority 0 before all): use fewer priority levels, separate queues per class of work, "
                          "or more workers so lower priorities get a turn.") if not is_bull(q) else
                         "Bull takes lower priority numbers first, and prioritized jobs before un-prioritized "
                         "ones: work with high numbers (or none) starves while better-priority jobs keep coming. "
                         "Use fewer priority levels, separate queues, or more workers."))


@detector("missing-job-hash", "stuck", "job ids listed whose hash is gone")
def missing_job_hash(ctx: Context):
    for q, jq in ctx.by_queue(ctx.jobs):
        m = jq[jq["state"] == "missing-hash"]
        if not len(m):
            continue
        evicted = ctx.redis_of(q).get("evicted_keys")
        policy = ctx.redis_of(q).get("maxmemory_policy")
        evicting = pd.notna(evicted) and int(evicted) > 0 and isinstance(policy, str) and policy != "noeviction"
        yield ctx.finding(
            "missing-job-hash", "critical" if evicting else "high",
            f"{len(m)} job id(s) listed without a job hash" + ("; Redis is evicting keys" if evicting else ""), q, m,
            evidence={"missing": len(m), "evicted_keys": None if pd.isna(evicted) else int(evicted),
                      "maxmemory_policy": policy},
            remediation="The job hashes were evicted or deleted; workers taking these ids fail with "
                        "'Missing key for job'. Set `maxmemory-policy noeviction`, then remove the "
                        "dangling ids (after saving this snapshot).")
