"""explain(): one job's story, from a snapshot and the worker logs that name it.

    story = forensics.explain(snap, "42", queue="mail")
    story.why        # why it is in its state, most telling first
    story.attempts   # each attempt: when it started and ended, how it ended, its error
    story.events, story.logs, story.findings

What a dashboard shows one field at a time, told as an on-call engineer would ask it: what
state is the job in, and why is it there (no worker, lock gone, waiting for children,
delayed until, starved by N later jobs, rate-limited, ...); what happened on each attempt;
what the queue's events stream and the workers' logs say about it; and which findings of
the diagnosis cover it.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .detectors import Context
from .detectors.stuck import WAITING, became_waiting, lockless_active
from .detectors.trends import duration
from .errors import UsageError
from .htmlsafe import escape, frame_html
from .summary import human_bytes
from .thresholds import Thresholds

SCHEMA = "forensics.explain/1"
SHOW = 12  # attempts, events and log lines shown in the text rendering (newest)
END_EVENTS = {"completed": "completed", "failed": "failed", "delayed": "failed, retried after a backoff",
              "waiting": "failed, retried at once", "stalled": "stalled: lock lost, put back in wait",
              "removed": "removed"}
JOB_FIELDS = ["name", "state", "added_at", "processed_at", "finished_at", "due_at", "priority", "attempts_made",
              "attempts_started", "attempts_configured", "attempts_infinite", "backoff_type", "backoff_delay_ms",
              "stalled_count", "deferred_failure", "failed_reason", "lock_present", "lock_ttl_ms", "processed_by",
              "progress", "parent_key", "data_bytes", "returnvalue_bytes", "remove_on_complete", "remove_on_fail",
              "repeat_key", "dedup_id", "trace_id", "traceparent"]


def _cut(text, n: int = 160) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n] + f"… ({len(text):,} characters)"


def _n(x) -> int:
    """An integer field, 0 where missing."""
    return 0 if x is None or pd.isna(x) else int(x)


def _ago(ctx: Context, t) -> str:
    return "" if pd.isna(t) else duration((ctx.now - t).total_seconds())


def _when(t) -> str:
    return "?" if t is None or pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _backoff(r) -> str:
    if pd.isna(r["backoff_type"]):
        return "no backoff"
    d = r["backoff_delay_ms"]
    return f"{r['backoff_type']} backoff" + ("" if pd.isna(d) else f" of {int(d):,} ms")


def _attempts_allowed(r) -> str:
    if bool(r["attempts_infinite"]) if pd.notna(r["attempts_infinite"]) else False:
        return "infinite"  # (Bull stores it as null and then never retries: unbounded-attempts says so)
    # BullMQ stores its default, 0, which means one attempt
    return "?" if pd.isna(r["attempts_configured"]) else f"{max(int(r['attempts_configured']), 1):,}"


def _ahead(q, jq: pd.DataFrame, r) -> int:
    """How many waiting jobs a worker takes before this one (BullMQ: every priority-0 job
    before any prioritized one, then by priority; Bull: prioritized first, lower numbers
    first; FIFO within a level)."""
    w = jq[jq["state"].isin(WAITING + ["paused"]) & (jq["job_id"] != r["job_id"])]
    p = _n(r["priority"])
    prio = w["priority"].fillna(0)
    earlier = w["added_at"] < r["added_at"]
    if q["flavor"] == "bull":
        if p == 0:
            return int(((prio > 0) | earlier).sum())
        return int(((prio > 0) & ((prio < p) | ((prio == p) & earlier))).sum())
    if p == 0:
        return int(((prio == 0) & earlier).sum())
    return int(((prio == 0) | (prio < p) | ((prio == p) & earlier)).sum())


def _overtaken(ctx: Context, q, jq: pd.DataFrame, r) -> int:
    """Jobs added after this (never started) one that a worker took while it waited (as
    priority-starvation counts them)."""
    if pd.notna(r["processed_at"]) or pd.isna(r["added_at"]):
        return 0
    since = became_waiting(ctx, q, jq.loc[[r.name]]).iloc[0]
    taken = jq[jq["processed_at"].notna()]
    return int(((taken["added_at"] > r["added_at"]) & (taken["processed_at"] > since)).sum())


def reasons(ctx: Context, q, jq: pd.DataFrame, r) -> list[str]:
    """Why the job ``r`` (a row of ``jq``, its queue's jobs) is in its state, most telling first."""
    state, why = r["state"], []
    workers = int(q["workers"]) if ctx.workers_known else None
    no_worker = workers == 0
    if state in WAITING + ["paused"]:
        if q["paused"]:
            why.append("The queue is paused: no job is taken until `queue.resume()`.")
        elif no_worker:
            why.append("No worker is connected for this queue: nothing will take it.")
        ttl = q["limiter_ttl_ms"]
        if pd.notna(ttl) and ttl > 0:
            why.append(f"The rate limiter holds the queue for another {duration(float(ttl) / 1000)}.")
        gc = q["global_concurrency"]
        if pd.notna(gc) and int(q["n_active"]) >= int(gc):
            why.append(f"The queue's global concurrency ({int(gc)}) is reached: {int(q['n_active'])} jobs are active.")
        over = _overtaken(ctx, q, jq, r)
        if over:
            why.append(f"{over:,} job(s) added after it were taken first"
                       + (" (BullMQ takes every priority-0 job before any prioritized one)"
                          if q["flavor"] != "bull" and _n(r["priority"]) > 0 else "") + ".")
        ahead = _ahead(q, jq, r)
        why.append((f"About {ahead:,} waiting job(s) are ahead of it" if ahead else "It is next in line")
                   + (f" (priority {int(r['priority'])})" if _n(r["priority"]) > 0 else "") + ".")
        if _n(r["attempts_made"]) > 0:
            why.append(f"It is back after attempt {int(r['attempts_made'])} of {_attempts_allowed(r)} failed "
                       f"({_backoff(r)}): {_cut(r['failed_reason'], 300)}")
        since = r["processed_at"] if pd.notna(r["processed_at"]) else r["added_at"]
        if pd.notna(since):
            why.append(f"Waiting for {_ago(ctx, since)} (since {_when(since)}).")
    elif state == "active":
        running = _ago(ctx, r["processed_at"])
        if r.name in lockless_active(ctx, jq).index:
            why.append(f"Its lock is gone: the worker that took it {running} ago died or was blocked longer than "
                       "its lockDuration."
                       + (" No worker is connected, so no stalled checker will put it back." if no_worker else
                          " A running worker's stalled checker puts it back in wait within stalledInterval (30 s)"
                          + (" (it is already in the stalled set)." if bool(r["in_stalled_set"]) else ".")))
        elif bool(r["lock_present"]) if pd.notna(r["lock_present"]) else False:
            who = r["processed_by"] if pd.notna(r["processed_by"]) else str(r["lock_token"])[:13] + "…"
            why.append(f"A worker ({who}) holds it and renews its lock: running for {running}"
                       + ("" if pd.isna(r["lock_ttl_ms"]) else f", lock expires in {int(r['lock_ttl_ms']):,} ms") + ".")
            limit = ctx.t.hung_active_minutes
            if pd.notna(r["processed_at"]) and (ctx.now - r["processed_at"]) > pd.Timedelta(minutes=limit):
                why.append(f"That is longer than {limit:g} min: it may hang (hung-active).")
            if pd.isna(r["progress"]) or r["progress"] in ("0", "null", "{}"):
                why.append("It has reported no progress.")
        else:
            why.append(f"Taken {running} ago; its lock is being set (a worker takes the job, then locks it).")
        if _n(r["attempts_made"]) > 0:
            why.append(f"This is attempt {_n(r['attempts_made']) + 1:,} of {_attempts_allowed(r)} ({_backoff(r)}); "
                       f"the last one failed with: {_cut(r['failed_reason'], 300)}")
    elif state == "delayed":
        due = r["due_at"]
        if _n(r["attempts_made"]) > 0:
            why.append(f"Waiting out the retry backoff after attempt {int(r['attempts_made'])} of "
                       f"{_attempts_allowed(r)} failed ({_backoff(r)}): {_cut(r['failed_reason'], 300)}")
        else:
            why.append("Added with a delay" + ("" if pd.isna(r["delay_ms"]) or not r["delay_ms"]
                                               else f" of {duration(float(r['delay_ms']) / 1000)}") + ".")
        if pd.notna(due):
            late = (ctx.now - due).total_seconds()
            if late <= 0:
                why.append(f"Due at {_when(due)}, in {duration(-late)}.")
            else:
                why.append(f"Overdue by {duration(late)} (due {_when(due)}): "
                           + ("no worker is connected to promote it." if no_worker else
                              "workers promote due jobs; check their clocks and their connection to this Redis."))
    elif state == "waiting-children":
        key = f"{r['prefix']}:{r['queue']}:{r['job_id']}"
        kids = ctx.jobs[ctx.jobs["parent_key"] == key]
        if not len(kids):
            why.append("It waits for children that are not in this snapshot (other prefix, or removed).")
        else:
            counts = kids["state"].value_counts().to_dict()
            failed = kids[kids["state"] == "failed"]
            why.append(f"It waits for {len(kids)} child job(s): "
                       + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".")
            for k in failed.itertuples():
                why.append(f"Child {k.queue}/{k.job_id} failed ({k.failed_reason}): the parent waits forever unless "
                           "the child has failParentOnFailure / ignoreDependencyOnFailure, or is retried.")
    elif state == "completed":
        ran = (r["finished_at"] - r["processed_at"]).total_seconds() if pd.notna(r["finished_at"]) and \
            pd.notna(r["processed_at"]) else None
        why.append(f"Completed at {_when(r['finished_at'])}" + (f" after running {duration(ran)}" if ran is not None else "")
                   + (f", on attempt {attempt:,}" if (attempt := _n(r["attempts_made"]) + (r["flavor"] == "bull")) > 1
                      else "")  # Bull counts only failures; BullMQ every finished attempt
                   + (f"; returned {human_bytes(r['returnvalue_bytes'])}" if pd.notna(r["returnvalue_bytes"]) else "")
                   + ".")
    elif state == "failed":
        reason = str(r["failed_reason"])
        used = "?" if pd.isna(r["attempts_made"]) else f"{int(r['attempts_made'])}"
        if "stalled more than allowable limit" in reason:
            why.append("Failed for stalling: its lock was lost more often than maxStalledCount allows "
                       "(a crashed or blocked worker).")
        elif "Promise timed out after" in reason:
            why.append("Failed by Bull's `timeout`: the work itself may have gone on running.")
        elif reason.startswith("child ") and reason.endswith(" failed"):
            why.append("Failed because a child failed (failParentOnFailure).")
        elif "UnrecoverableError" in str(r["stacktrace_top"]):
            why.append("Failed with an UnrecoverableError: no retry was made on purpose.")
        why.append(f"Failed for good at {_when(r['finished_at'])} after {used} of {_attempts_allowed(r)} attempt(s) "
                   f"({_backoff(r)}): {_cut(reason, 300)}")
    elif state == "missing-hash":
        why.append("A state structure lists its id, but its hash is gone: evicted (maxmemory-policy "
                   f"{ctx.redis.get('maxmemory_policy')}, evicted_keys {ctx.redis.get('evicted_keys')}) or deleted. "
                   "A worker that takes it fails with 'Missing key for job'.")
    elif state == "orphan":
        why.append("Its hash exists but no state lists it: no worker will ever take it (an interrupted script, "
                   "a manual LREM/ZREM, a failed migration).")
    if _n(r["stalled_count"]) > 0:
        why.append(f"The stalled checker put it back in wait {int(r['stalled_count'])} time(s): a worker lost its "
                   "lock on it (crashed, killed, or blocked longer than lockDuration).")
    if pd.notna(r["deferred_failure"]):
        why.append(f"It will fail as soon as a worker takes it: {r['deferred_failure']} (BullMQ `defa`).")
    if pd.notna(r["repeat_key"]):
        why.append(_scheduler_story(ctx, q, r))
    return why


def _scheduler_story(ctx: Context, q, r) -> str:
    """The scheduler or repeatable a job is an iteration of: its rule, next run, iterations,
    and whether it still fires."""
    from .detectors.schedulers import _rule, schedulers_of
    s = schedulers_of(ctx, q) if q is not None else ctx.snap.schedulers.iloc[0:0]
    mine = s[s["key"].astype("str") == str(r["repeat_key"])] if len(s) else s
    if not len(mine):
        return (f"It is an iteration of the repeatable job / scheduler {r['repeat_key']}, which is no longer "
                "registered (removed, or its entry is gone): no further iteration will be created.")
    e = mine.iloc[0]
    kind = "job scheduler" if e["kind"] == "job-scheduler" else "legacy repeatable"
    text = (f"It is an iteration of the {kind} {e['key']} ({_rule(e)}"
            + (f", {int(e['iterations'])} iteration(s) so far" if pd.notna(e["iterations"]) else "")
            + (f"; next run {_when(e['next_run'])}" if pd.notna(e["next_run"]) else "") + ").")
    if str(e["next_job_id"]) == str(r["job_id"]):
        text += " It is the scheduler's next job: when it runs, the scheduler creates the one after."
    elif e["next_job_state"] in ("missing", "missing-hash") and pd.notna(e["next_run"]) and e["next_run"] < ctx.now:
        text += " The scheduler's next job is gone and its run is past due: it has stopped firing (scheduler-stalled)."
    return text


def why(ctx: Context, prefix: str, queue: str, job_id: str) -> list[str]:
    """``reasons`` for one job of the snapshot ``ctx`` was built on ([] if it is not there)."""
    jq = ctx.jobs_of(prefix, queue)
    row = jq[jq["job_id"] == str(job_id)]
    qs = ctx.queues[(ctx.queues["prefix"].astype(str) == str(prefix)) & (ctx.queues["queue"].astype(str) == str(queue))]
    if not len(row) or not len(qs):
        return []
    return reasons(ctx, qs.iloc[0], jq, row.iloc[0])


def _stacks(payload: dict) -> list[str]:
    try:
        entries = json.loads(payload.get("stacktrace") or "[]")
    except (ValueError, TypeError):
        return []
    return [e for e in entries if isinstance(e, str)] if isinstance(entries, list) else []


def attempts(r, events: pd.DataFrame, stacks: list[str]) -> pd.DataFrame:
    """One row per attempt: number, started/ended (from the events stream when it has them,
    else the job's own timestamps), outcome, error (first line of its stack trace; the job
    keeps one per failed attempt, newest last, up to stackTraceLimit)."""
    rows: list[dict] = []
    for t, ev in zip(events["time"], events["event"]):
        if ev == "active":
            rows.append({"started_at": t, "ended_at": pd.NaT, "outcome": "running"})
        elif rows and ev in END_EVENTS:
            last = rows[-1]
            if ev == "stalled" or last["outcome"] == "running":
                last["ended_at"], last["outcome"] = t, END_EVENTS[ev]
    if not rows:  # no stream (Bull) or trimmed: what the hash tells
        made = 0 if pd.isna(r["attempts_made"]) else int(r["attempts_made"])
        rows = [{"started_at": pd.NaT, "ended_at": pd.NaT, "outcome": "failed"} for _ in range(min(len(stacks), made))]
        if r["state"] in ("active", "completed", "failed") or rows:
            last = {"started_at": r["processed_at"], "ended_at": r["finished_at"],
                    "outcome": {"active": "running", "completed": "completed"}.get(r["state"], "failed")}
            if r["state"] in ("active", "completed") or not rows:
                rows.append(last)
            else:
                rows[-1].update({k: v for k, v in last.items() if k != "outcome"})
    df = pd.DataFrame(rows, columns=["started_at", "ended_at", "outcome"])
    started = r["attempts_started"] if pd.notna(r["attempts_started"]) else r["attempts_made"]
    total = int(started) if pd.notna(started) and int(started) >= len(df) else len(df)
    df.insert(0, "attempt", np.arange(total - len(df) + 1, total + 1))
    failed = df.index[df["outcome"].str.startswith(("failed", "stalled"))]
    errors = pd.Series(pd.NA, index=df.index, dtype="object")
    for i, stack in zip(failed[::-1], stacks[::-1]):  # newest stack to the newest failure
        errors[i] = stack.splitlines()[0][:300] if stack else None
    if r["state"] == "failed" and len(df) and pd.isna(errors.iloc[-1]):
        errors.iloc[-1] = r["failed_reason"]
    df["error"] = errors
    return df


class Explanation:
    """One job's story. ``why`` (sentences), ``attempts``, ``events``, ``logs`` and
    ``findings`` (DataFrames); renders as text, JSON and HTML."""

    def __init__(self, job: pd.Series, queue: pd.Series, why: list[str], attempts: pd.DataFrame,
                 events: pd.DataFrame, logs: pd.DataFrame, findings: pd.DataFrame, snapshot: dict):
        self.job, self.queue, self.why = job, queue, why
        self.attempts, self.events, self.logs, self.findings = attempts, events, logs, findings
        self.snapshot = snapshot

    @property
    def label(self) -> str:
        return f"{self.job['prefix']}:{self.job['queue']} job {self.job['job_id']}"

    def to_dict(self) -> dict:
        from .diagnosis import _plain
        j = self.job
        lib = "Bull" if self.queue["flavor"] == "bull" else "BullMQ"
        version = self.queue["library_version"]
        return _plain({
            "schema": SCHEMA, "snapshot": self.snapshot,
            "job": {"prefix": j["prefix"], "queue": j["queue"], "job_id": j["job_id"],
                    "library": lib + (f" {version}" if pd.notna(version) else ""),
                    **{k: j[k] for k in JOB_FIELDS if k in j}},
            "why": self.why,
            "attempts": self.attempts.to_dict("records"),
            "events": self.events.to_dict("records"),
            "logs": self.logs.to_dict("records"),
            "findings": self.findings.to_dict("records"),
        })

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, default=str)

    def to_text(self) -> str:
        j, q = self.job, self.queue
        lib = "Bull" if q["flavor"] == "bull" else "BullMQ"
        lines = [f"{self.label} ({lib}{' ' + str(q['library_version']) if pd.notna(q['library_version']) else ''}), "
                 f"as captured {self.snapshot.get('captured_at')}",
                 f"  name {j['name']} · state {j['state']} · added {_when(j['added_at'])}"
                 + (f" · priority {int(j['priority'])}" if _n(j["priority"]) > 0 else "")
                 + (f" · trace {j['trace_id']}" if pd.notna(j.get("trace_id")) else ""), "",
                 "Why it is here:", *[f"  - {w}" for w in self.why]]
        a = self.attempts
        if len(a):
            lines += ["", f"Attempts ({_attempts_allowed(j)} allowed, {_backoff(j)})"
                      + (f", the last {SHOW} of {len(a)}:" if len(a) > SHOW else ":")]
            for r in a.tail(SHOW).itertuples():
                lines.append(f"  #{r.attempt:<5} {_when(r.started_at)} → {_when(r.ended_at)}  {r.outcome}"
                             + (f": {r.error}" if isinstance(r.error, str) else ""))
        ev = self.events
        if len(ev):
            lines += ["", f"Events stream ({len(ev)} entries" + (f", the last {SHOW}" if len(ev) > SHOW else "") + "):"]
            lines += [f"  {_when(t)}  {e}" + (f"  {_cut(f)}" if isinstance(f, str) else "")
                      for t, e, f in zip(ev["time"].tail(SHOW), ev["event"].tail(SHOW), ev["fields"].tail(SHOW))]
        lg = self.logs
        if len(lg):
            lines += ["", f"Worker log records ({len(lg)}" + (f", the last {SHOW}" if len(lg) > SHOW else "") + "):"]
            lines += [f"  {_when(t)}  {lv or ''} {_cut(m)}" + (f" ({_cut(e)})" if isinstance(e, str) and e not in str(m) else "")
                      + (f"  [{w}]" if isinstance(w, str) else "")
                      for t, lv, m, e, w in zip(lg["time"].tail(SHOW), lg["level"].tail(SHOW),
                                                lg["message"].tail(SHOW), lg["error"].tail(SHOW),
                                                lg["worker"].tail(SHOW))]
        f = self.findings
        lines += ["", "Findings that cover it:" if len(f) else "No finding covers it."]
        for r in f.itertuples():
            lines.append(f"  {r.severity.upper()} {r.id}: {r.title}"
                         + ("  (a root cause)" if r.root_cause else f"  (because {', '.join(r.because)})"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = escape
        parts = [f"<h4>{e(self.label)}</h4><p>state <b>{e(str(self.job['state']))}</b> · name {e(str(self.job['name']))}</p>",
                 "<h5>Why it is here</h5><ul>" + "".join(f"<li>{e(w)}</li>" for w in self.why) + "</ul>"]
        for title, df in (("Attempts", self.attempts.tail(50)), ("Events stream", self.events.tail(50)),
                          ("Worker log records", self.logs.tail(50)), ("Findings that cover it", self.findings)):
            if len(df):
                parts.append(f"<h5>{title}</h5>" + frame_html(df, index=False))
        from .notebook import left
        return left("<div>" + "".join(parts) + "</div>")

    def __repr__(self) -> str:
        return f"<Explanation {self.label}: {self.job['state']}>"


def _find(snap, job_id: str, queue: str | None) -> pd.Series:
    jobs = snap.jobs
    ids = jobs["job_id"].astype("str")
    hit = jobs[ids == str(job_id)]
    if queue:
        label = hit["queue"].astype("str")
        hit = hit[(label == queue) | (hit["prefix"].astype("str") + ":" + label == queue)]
    if not len(hit):
        where = f" in queue {queue}" if queue else ""
        raise UsageError(f"job {job_id} is not in the snapshot{where} ({len(jobs):,} jobs in "
                         f"{len(snap.queues)} queue(s)); job ids are per queue, as Bull/BullMQ show them")
    if len(hit) > 1:
        names = ", ".join(sorted(f"{p}:{q}" for p, q in zip(hit["prefix"], hit["queue"])))
        raise UsageError(f"job {job_id} is in {len(hit)} queues ({names}): pick one with --queue / queue=")
    return hit.iloc[0]


def explain(snapshot, job_id: str | int, queue: str | None = None, logs=None,
            thresholds: Thresholds | dict | None = None) -> Explanation:
    """The story of one job: ``snapshot`` is a Snapshot, a Series (its latest capture) or a
    folder; ``queue`` ('name' or 'prefix:name') when the id is in several queues; ``logs``
    worker logs (a DataFrame or file paths; a snapshot's attached logs are always used)."""
    from .diagnosis import diagnose
    from .logs import gather_logs
    from .series import Series, open_path
    from .snapshot import Snapshot
    src = snapshot if isinstance(snapshot, (Snapshot, Series)) else open_path(snapshot)
    snap = src.latest if isinstance(src, Series) else src
    row = _find(snap, str(job_id), queue)
    log_df = gather_logs(logs, [snap])
    t = Thresholds.coerce(thresholds)
    ctx = Context(snap, t, logs=log_df)
    jobs = ctx.jobs
    key = (str(row["prefix"]), str(row["queue"]))
    jq = jobs[(jobs["prefix"] == key[0]) & (jobs["queue"] == key[1])]
    r = jq.loc[row.name]
    q = ctx.queues[(ctx.queues["prefix"].astype(str) == key[0]) & (ctx.queues["queue"].astype(str) == key[1])].iloc[0]
    ev = ctx.events_of(q)
    ev = ev[ev["job_id"].astype("str") == str(r["job_id"])].sort_values("time", kind="stable")
    pay = snap.payloads_of(key[0], key[1], [r["job_id"]])
    payload = pay.iloc[0].to_dict() if len(pay) else {}
    lg = ctx.logs
    lg = lg[(lg["prefix"] == key[0]) & (lg["queue"] == key[1]) & (lg["job_id"] == str(r["job_id"]))] \
        if len(lg) else lg
    lg = lg.sort_values("time", kind="stable")[["time", "level", "message", "error", "worker"]] if len(lg) else \
        pd.DataFrame(columns=["time", "level", "message", "error", "worker"])
    # One diagnosis per snapshot object and thresholds: the job inspector and scripts explain
    # job after job of the same snapshot (extra logs passed in are diagnosed each time).
    cache = snap.__dict__.setdefault("_explain_diagnoses", {})
    reuse = (repr(t), snap.has_logs) if logs is None else None
    diagnosis = cache.get(reuse) if reuse is not None else None
    if diagnosis is None:
        diagnosis = diagnose(snap, logs=log_df, thresholds=t)
        if reuse is not None:
            cache.clear()
            cache[reuse] = diagnosis
    found = []
    for i, f in enumerate(diagnosis.findings.itertuples()):
        members = diagnosis.members[i]
        named = (members is not None and row.name in members) or (
            members is None and str(r["job_id"]) in f.job_ids and f.queue == key[1])
        if named:
            found.append({"id": f.id, "severity": f.severity, "title": f.title, "root_cause": not f.explained_by,
                          "because": [x["id"] for x in f.explained_by]})
    findings = pd.DataFrame(found, columns=["id", "severity", "title", "root_cause", "because"])
    meta = {"path": snap.path, "captured_at": snap.manifest.get("captured_at"), "complete": snap.complete}
    return Explanation(r, q, reasons(ctx, q, jq, r), attempts(r, ev, _stacks(payload)),
                       ev[["stream_id", "time", "event", "fields"]].reset_index(drop=True), lg.reset_index(drop=True),
                       findings, meta)
