"""Capture of states produced by the real libraries equals what the libraries report.

For every pinned library (bull 3/4, BullMQ 4/5/6), tests/node/scenario.js leaves the
same incident behind (completions, exhausted retries, a pending backoff retry, a worker
SIGKILLed mid-job with its lock expired, another with its lock still held, delayed and
prioritized jobs, a paused queue, a blocked flow). The capture must agree with the
library's own getJobCounts() and with every job as the library reads it.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import NODE_LIBS

# Library count names -> our state names.
COUNT_NAMES = {"waiting": "wait", "wait": "wait", "active": "active", "completed": "completed",
               "failed": "failed", "delayed": "delayed", "paused": "paused",
               "prioritized": "prioritized", "waiting-children": "waiting-children"}


def _ms(ts) -> float | None:
    return None if pd.isna(ts) else ts.value // 10**6 if ts.unit == "ns" else int(ts.timestamp() * 1000)


@pytest.mark.parametrize("lib", NODE_LIBS)
def test_state_counts_equal_library_counts(captured, lib):
    snap, report = captured(lib)
    assert snap.complete, snap.manifest["warnings"]
    assert snap.manifest["warnings"] == []  # an ordinary capture has nothing to warn about
    assert set(snap.queues["queue"]) == set(report["queues"])
    for qname, info in report["queues"].items():
        ours = snap.jobs[snap.jobs["queue"] == qname]["state"].value_counts()
        markers = int(snap.queues.set_index("queue").loc[qname, "markers"])
        for name, n in info["counts"].items():
            state = COUNT_NAMES[name]
            got = int(ours.get(state, 0))
            if lib in ("bullmq2", "bullmq3") and state in ("wait", "paused") and markers:
                # BullMQ 2 counts marker entries ("0") as waiting jobs; 3 drops one only
                # when it sits at the tail. Markers are not jobs: we skip them all.
                assert got <= n <= got + markers, f"{lib} {qname} {name}: ours {got} + {markers} markers, lib {n}"
                continue
            assert got == n, f"{lib} {qname} {name}: ours {ours.to_dict()} lib {info['counts']}"
        qrow = snap.queues.set_index("queue").loc[qname]
        for name in info["counts"]:  # the queues table agrees with the jobs table
            col = "n_" + COUNT_NAMES[name].replace("-", "_")
            assert int(qrow[col]) == int(ours.get(COUNT_NAMES[name], 0))


@pytest.mark.parametrize("lib", NODE_LIBS)
def test_every_job_row_equals_the_library_view(captured, lib):
    snap, report = captured(lib)
    jobs = snap.jobs.set_index(["queue", "job_id"])
    modern = lib in ("bullmq5", "bullmq6")
    checked = 0
    for qname, info in report["queues"].items():
        for lj in info["jobs"]:
            row = jobs.loc[(qname, lj["id"])]
            where = f"{lib} {qname}/{lj['id']}"
            state = {"waiting": "wait"}.get(lj["state"], lj["state"])
            if lib == "bullmq6" and qname == "reports":
                assert state == "wait"
            if state == "wait" and row["state"] == "paused":
                # getState() calls a job in the paused list "waiting"; getJobCounts()
                # counts it as paused, and so do we.
                assert lib.startswith("bullmq") and qname == "reports", where
            else:
                assert row["state"] == state, where
            assert row["name"] == lj["name"], where
            assert _ms(row["added_at"]) == lj["timestamp"], where
            assert _ms(row["processed_at"]) == lj["processedOn"], where
            assert _ms(row["finished_at"]) == lj["finishedOn"], where
            assert (None if pd.isna(row["failed_reason"]) else row["failed_reason"]) == lj["failedReason"], where
            assert int(row["priority"]) == int(lj["priority"] or 0), where
            assert int(row["stacktrace_count"] if pd.notna(row["stacktrace_count"]) else 0) == lj["stacktraceLength"], where
            if lib in ("bullmq2", "bullmq3", "bullmq4"):  # attemptsMade counted starts before v5
                assert int(row["attempts_started"]) == lj["attemptsMade"], where
            else:
                assert int(row["attempts_made"]) == lj["attemptsMade"], where
            if modern:
                assert int(row["attempts_started"]) == lj["attemptsStarted"], where
                assert int(row["stalled_count"]) == lj["stalledCounter"], where
                assert (None if pd.isna(row["processed_by"]) else row["processed_by"]) == lj["processedBy"], where
            if lj["parentKey"]:
                assert row["parent_key"] == lj["parentKey"], where
            checked += 1
    assert checked == len(snap.jobs[~snap.jobs["state"].isin(["orphan", "missing-hash"])])


@pytest.mark.parametrize("lib", NODE_LIBS)
def test_incident_facts_are_visible(captured, lib):
    snap, report = captured(lib)
    jobs = snap.jobs
    bullmq = lib.startswith("bullmq")
    # Worker SIGKILLed with a short lock: active, lock gone.
    conv = jobs[(jobs["queue"] == "convert") & (jobs["state"] == "active")]
    assert len(conv) == 1 and not conv["lock_present"].iloc[0]
    # Worker SIGKILLed with a long lock: active, lock held, token and TTL captured.
    rend = jobs[(jobs["queue"] == "render") & (jobs["state"] == "active")].iloc[0]
    assert rend["lock_present"] and 0 < rend["lock_ttl_ms"] <= 600000
    assert len(rend["lock_token"]) >= 32
    # Exhausted retries with exponential backoff.
    failed = jobs[(jobs["queue"] == "mail") & (jobs["state"] == "failed")]
    assert len(failed) == 3
    assert (failed["attempts_configured"] == 3).all() and (failed["backoff_type"] == "exponential").all()
    assert (failed["backoff_delay_ms"] == 20).all()
    assert failed["stacktrace_top"].str.startswith("Error: upstream 503").all()
    # The pending retry sits in delayed, due one hour after it failed.
    retry = jobs[(jobs["queue"] == "mail") & (jobs["state"] == "delayed")].iloc[0]
    due_in = (retry["due_at"] - retry["processed_at"]).total_seconds()
    assert 3590 < due_in < 3700, due_in
    # Delayed jobs added with delay: due = added + delay.
    if lib in ("bullmq5", "bullmq6"):   # the deduplication key and the job scheduler, as written
        (key,) = snap.dedup[snap.dedup["queue"] == "backlog"].itertuples()
        held = jobs[(jobs["queue"] == "backlog") & (jobs["job_id"] == key.job_id)].iloc[0]
        assert key.dedup_id == "digest-of-the-day" and pd.isna(key.ttl_ms) and held["dedup_id"] == key.dedup_id
        (sch,) = snap.schedulers[snap.schedulers["queue"] == "backlog"].itertuples()
        assert (sch.kind, sch.key, sch.pattern, sch.tz) == ("job-scheduler", "nightly-digest", "0 4 * * *", "UTC")
        nxt = jobs[(jobs["queue"] == "backlog") & (jobs["job_id"] == sch.next_job_id)].iloc[0]
        assert nxt["state"] == "delayed" and nxt["due_at"] == sch.next_run and nxt["due_at"].hour == 4
    later = jobs[(jobs["queue"] == "backlog") & (jobs["state"] == "delayed")
                 & jobs["repeat_key"].isna()].sort_values("job_id")   # not the scheduler's next job
    assert [round((r.due_at - r.added_at).total_seconds()) for r in later.itertuples()] == [3600, 7200]
    # Priorities (bull/BullMQ<4 keep prioritized jobs in wait, BullMQ>=4 in prioritized).
    backlog = jobs[jobs["queue"] == "backlog"].set_index("name")
    assert int(backlog.loc["urgent", "priority"]) == 1 and int(backlog.loc["whenever", "priority"]) == 7
    expect = "prioritized" if lib in ("bullmq4", "bullmq5", "bullmq6") else "wait"
    assert backlog.loc["urgent", "state"] == expect
    # Paused queue.
    assert bool(snap.queues.set_index("queue").loc["reports", "paused"])
    # Logs counted, secrets redacted, Buffers spotted.
    welcome = jobs[(jobs["queue"] == "mail") & (jobs["name"] == "welcome")]
    assert (welcome["log_count"] == 1).all()
    assert (welcome["redacted_fields"] == 3).all()
    assert welcome["data_has_buffer"].all()
    pay = snap.payloads.merge(welcome[["queue", "job_id"]])
    data = json.loads(pay["data"].iloc[0])
    assert data["password"] == "[REDACTED]" and data["apiKey"] == "[REDACTED]"
    assert data["nested"]["authorization"] == "[REDACTED]" and data["user"].startswith("u")
    assert not pay["data"].str.contains("hunter2").any()
    logs = pay.set_index("job_id")["logs"]                          # newest log lines, captured
    assert all(json.loads(logs[j]) == [f"processing {j}"] for j in welcome["job_id"])
    # Flavor and version.
    flavors = set(snap.queues["flavor"])
    assert flavors == {"bullmq" if bullmq else "bull"}
    if lib == "bullmq6":
        assert set(snap.queues["library_version"]) == {"6.7.0"}
    if bullmq:
        blocked = jobs[jobs["queue"] == "flow-parent"].iloc[0]
        assert blocked["state"] == "waiting-children"
        kids = jobs[jobs["queue"] == "flow-child"]
        assert (kids["parent_id"] == blocked["job_id"]).all()
        assert len(snap.events) and set(snap.events["queue"]) >= {"mail", "convert"}
    # Memory measured per queue key family.
    assert (snap.memory.groupby("queue")["bytes"].sum() > 0).all()
    assert snap.jobs["memory_bytes"].notna().all()


def test_same_queue_names_under_two_prefixes_stay_apart(redis_server, scenario):
    """Regression: counts, memory and locks were merged by queue name across prefixes."""
    import forensics
    (p1, r1), (p2, r2) = scenario("bull"), scenario("bullmq5")
    snap = forensics.capture(redis_server.url(0), prefix=[p1, p2])
    q = snap.queues.set_index(["prefix", "queue"])
    for prefix, report in ((p1, r1), (p2, r2)):
        for qname, info in report["queues"].items():
            for name, n in info["counts"].items():
                assert int(q.loc[(prefix, qname), "n_" + COUNT_NAMES[name].replace("-", "_")]) == n
    assert not snap.jobs.duplicated(["prefix", "queue", "job_id"]).any()
    mem = snap.memory.groupby(["prefix", "queue"])["bytes"].sum()
    assert mem.loc[(p1, "mail")] != mem.loc[(p2, "mail")]


@pytest.mark.parametrize("lib", NODE_LIBS)
def test_stall_recovery_by_the_library_is_decoded(captured, lib):
    """The library's own stalled check ran with maxStalledCount 0 on a job whose worker died."""
    snap, _ = captured(lib)
    job = snap.jobs[snap.jobs["queue"] == "stalls"].iloc[0]
    assert job["stalled_count"] == 1          # stalledCounter (bull, BullMQ < 5.49) or stc
    if lib in ("bullmq5", "bullmq6"):         # >= 5.53.2: deferred failure, back in wait
        assert job["state"] == "wait"
        assert job["deferred_failure"] == "job stalled more than allowable limit"
    else:                                     # failed at once by the stalled check
        assert job["state"] == "failed"
        assert job["failed_reason"] == "job stalled more than allowable limit"
        assert pd.isna(job["deferred_failure"])


@pytest.mark.parametrize("lib", NODE_LIBS)
def test_options_and_metrics_as_each_library_stores_them(captured, lib):
    snap, _ = captured(lib)
    jobs, q = snap.jobs, snap.queues.set_index("queue")
    welcome = jobs[(jobs["queue"] == "mail") & (jobs["name"] == "welcome")]
    assert (welcome["keep_logs"] == 5).all()  # `keepLogs` (bull) or short key `kl` (BullMQ)
    if lib == "bull3":                        # metrics arrived in bull 4.7
        assert pd.isna(q.loc["mail", "metrics_completed_total"])
    else:
        assert q.loc["mail", "metrics_completed_total"] == 5
        assert q.loc["mail", "metrics_failed_total"] == 3
    if lib.startswith("bull") and not lib.startswith("bullmq"):
        forever = jobs[jobs["name"] == "forever"].iloc[0]   # attempts: Infinity -> null
        assert forever["attempts_infinite"] and pd.isna(forever["attempts_configured"])
    assert not jobs.loc[jobs["name"] != "forever", "attempts_infinite"].any()
    if lib in ("bullmq2", "bullmq3", "bullmq4"):  # markers ("0", "0:<ms>") in wait lists are skipped
        assert q["markers"].sum() > 0
        assert not (jobs["job_id"].str.startswith("0:") | (jobs["job_id"] == "0")).any()
