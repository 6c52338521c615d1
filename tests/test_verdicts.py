"""Verdicts judged by rate, bytes and order, on incidents the real libraries produce
(tests/node/incidents.js via conftest.incident): the evidence an on-call engineer would
use, severities on the one documented scale, and the causal links between findings.

Fire / silent cases for every detector are in test_diagnose.py; these check what the
findings say."""
from __future__ import annotations

import json
import re
import pandas as pd
import pytest

import forensics
from forensics.causes import RULES
from forensics.detectors import REGISTRY, SEVERITIES

from conftest import ROOT


def diagnosis(incident, mode: str, lib: str = "bullmq5", **thresholds):
    snap, logs = incident(mode, lib)
    return forensics.diagnose(snap, logs=logs, thresholds=thresholds or None)


def one(d, id: str, queue: str | None) -> pd.Series:
    f = d.findings
    hit = f[(f["id"] == id) & ((f["queue"] == queue) if queue else f["queue"].isna())]
    assert len(hit) == 1, f[["id", "queue", "title"]].to_string()
    return hit.iloc[0]


# -- retry storms: a rate -------------------------------------------------------------

@pytest.mark.parametrize("lib,basis", [("bullmq5", "events stream"), ("bull", "job attempt counters")])
def test_an_ongoing_retry_storm_is_measured_and_critical(incident, lib, basis):
    storm = one(diagnosis(incident, "storm", lib), "retry-storm", "storm")
    ev = storm["evidence"]
    # one job, no backoff: hundreds of retries in a few seconds, thousands per minute
    assert ev["basis"] == basis and ev["retrying_jobs"] == 1 and ev["retries"] >= 100
    assert ev["retries_per_min"] >= 1000 and 0 < ev["window_s"] < 60
    assert ev["ongoing"] is True and ev["attempts_unbounded"] is True and ev["backoff"] == {"none": 1}
    assert ev["bounded_by"] == ("up to 100,000 attempts (unbounded in practice); "
                                "no backoff: nothing but the processor's own speed limits the pace")
    assert storm["severity"] == "critical"              # never ends by itself, hammering now
    assert "upstream 503 Service Unavailable for account acme" in ev["example_error"]
    assert re.match(r"retry storm: [\d,]+ retries of 1 job\(s\) in [\d.]+ s \(~[\d,]+/min\), failing with: "
                    r"upstream <n> Service Unavailable for account acme; still going", storm["title"]), storm["title"]
    assert storm["job_ids"] == ["1"] and "exponential" in storm["remediation"]


@pytest.mark.parametrize("lib", ["bullmq5", "bull"])
def test_a_storm_that_ended_is_medium_and_says_when(incident, lib):
    burst = one(diagnosis(incident, "storm", lib), "retry-storm", "burst")
    ev = burst["evidence"]
    assert ev["retries"] == 30 * 7 and ev["retrying_jobs"] == 30       # 8 attempts each, all used
    assert ev["ongoing"] is False and burst["severity"] == "medium"
    assert ev["bounded_by"] == "up to 8 attempts; a fixed backoff of 10 ms: at most 6,000 retries a minute per job"
    assert "last retry" in burst["title"] and "before the capture" in burst["title"]


@pytest.mark.parametrize("lib", ["bullmq5", "bull"])
def test_the_rate_is_measured_right_and_decides(incident, lib):
    """The trickle retries every 2 s (its fixed backoff): ~30 a minute, half the default
    threshold however long it runs, so it is silent (test_diagnose). Lower the threshold to
    1 a minute and it is reported, at the rate its backoff sets."""
    snap, _ = incident("storm", lib)
    d = forensics.diagnose(snap, thresholds={"retry_storm_per_min": 1})
    trickle = one(d, "retry-storm", "trickle")["evidence"]
    assert trickle["retries"] >= 2 and 15 <= trickle["retries_per_min"] <= 40, trickle
    assert trickle["backoff"] == {"fixed 2000 ms": 1}


# -- bloat: bytes ---------------------------------------------------------------------

def test_stream_bloat_is_judged_in_bytes(incident):
    d = diagnosis(incident, "bloat")
    bloat = one(d, "events-stream-bloat", "results")
    ev = bloat["evidence"]
    assert ev["entries"] < 500 and ev["stream_bytes"] > 10 * 1024 * 1024     # few entries, many MB
    assert ev["bytes_basis"] == "MEMORY USAGE" and ev["bytes_per_entry"] > 50_000
    assert next(iter(ev["bytes_by_event"])) == "completed"                     # the return values
    # 15 MB of a 48 MB maxmemory: it will fill Redis
    assert ev["share_of"] == "maxmemory" and ev["share"] >= 0.25 and bloat["severity"] == "high"
    chatty = d.findings[(d.findings["queue"] == "chatty")]
    assert not len(chatty), chatty[["id", "title"]].to_string()               # 32,000 small entries


def test_return_values_that_live_only_in_the_stream_are_named(incident):
    snap, _ = incident("bloat")
    d = forensics.diagnose(snap)
    rv = one(d, "oversized-returnvalue", "results")
    ev = rv["evidence"]
    assert ev["in_job_hashes"] == 0 and ev["only_in_events_stream"] == 60 and rv["count"] == 60
    assert len(ev["event_ids"]) == 20 and all(re.fullmatch(r"\d+-\d+", x) for x in ev["event_ids"])
    results = snap.jobs[snap.jobs["queue"] == "results"]
    assert not len(results) and len(rv["job_ids"]) == 20      # removed on complete: named from the stream
    assert "outlives `removeOnComplete`" in rv["remediation"]


# -- no worker: every kind of work that needs one -------------------------------------

def test_no_workers_counts_every_kind_of_work_that_needs_a_worker(captured):
    d = forensics.diagnose(captured("bullmq5")[0])
    late = one(d, "no-workers", "late")["evidence"]
    assert late["delayed_past_due"] == 1 and late["waiting"] == 0
    convert = one(d, "no-workers", "convert")["evidence"]
    assert convert["active_without_lock"] == 1 and convert["waiting"] == 1
    backlog = one(d, "no-workers", "backlog")
    # waiting counts wait + prioritized, as before; the kinds are told apart (the 3rd waiting
    # job is the one under a deduplication id)
    assert backlog["evidence"]["waiting"] == 5 and backlog["evidence"]["prioritized"] == 2
    assert backlog["title"] == "5 job(s) need a worker and none is connected (3 waiting, 2 prioritized)"


# -- starvation: an order -------------------------------------------------------------

@pytest.mark.parametrize("lib", ["bullmq5", "bull"])
def test_starvation_is_seen_by_order_and_minutes_only_raise_it(incident, lib):
    snap, _ = incident("starve", lib)
    f = one(forensics.diagnose(snap), "priority-starvation", "starve")
    ev = f["evidence"]
    assert ev["overtaken_by"] >= 50 and ev["oldest_waiting_minutes"] < 1
    assert f["severity"] == "medium"                     # seconds old: risky, not yet lost
    if lib == "bullmq5":
        assert f["count"] == 3 and ev["starving_priorities"] == {"1": 3}
        assert set(ev["overtaker_priorities"]) == {"0"} and "priority 0" in f["remediation"]
    else:
        # Bull places a prioritized job by counting its priority set, where a job just
        # popped (BRPOPLPUSH) stays until moveToActive removes it: under load a new
        # priority-1 job can land behind the priority-10 ones and starve with them. Those
        # are reported too, rightly; the three priority-10 jobs always are.
        assert ev["starving_priorities"]["10"] == 3 and set(ev["starving_priorities"]) <= {"10", "1"}
        assert set(ev["overtaker_priorities"]) == {"1"}
    longer = one(forensics.diagnose(snap, thresholds={"starvation_minutes": 0}), "priority-starvation", "starve")
    assert longer["severity"] == "high"


# -- leaks: per job, robust -----------------------------------------------------------

def test_a_leak_is_judged_per_job_through_a_quiet_stretch(worker_logs, redis_server):
    prefix, path = worker_logs("leak-steps", "bullmq5")
    logs = forensics.read_logs(path)
    d = forensics.diagnose(forensics.capture(redis_server.url(0), prefix=prefix), logs=logs)
    leak = one(d, "worker-memory-growth", "images")["evidence"]
    assert leak["axis"] == "jobs" and leak["jobs_seen"] == 300
    # 4 MB kept every 20 jobs: ~200 KB a job, ~58 MB in all (the pause bends nothing)
    assert 150_000 <= leak["growth_bytes_per_job"] <= 300_000, leak
    assert leak["grown_bytes"] >= 50 * 1024 * 1024 and leak["tau"] >= 0.9


def test_a_worker_killed_and_restarted_is_judged_run_by_run(incident):
    d = diagnosis(incident, "oomkill")
    leak = one(d, "worker-memory-growth", "images")
    assert leak["evidence"]["restarts"] == 1 and leak["severity"] == "high"
    assert leak["evidence"]["worker"] == "worker-a/1"


# -- one severity scale -----------------------------------------------------------------

def test_readme_documents_every_detector_and_the_scale():
    readme = (ROOT / "README.md").read_text()
    for det in REGISTRY:
        assert re.search(rf"^\| `{re.escape(det)}` \|", readme, re.M), f"{det} missing from the README's detector table"
    for sev in SEVERITIES:
        assert re.search(rf"^\| `{sev}` \|", readme, re.M), f"severity {sev} missing from the README's scale"
    # the causal links, as the README lists them ("- `a`, `b` → `c`, `d` (...); `e` → `f`"),
    # are exactly the declared rules
    section = readme[readme.index("### Causes, not a list"):readme.index("### One job's story")]
    documented = set()
    for line in section.splitlines():
        if line.startswith("- "):
            for clause in line[2:].split(";"):
                cause, _, effect = clause.partition("→")
                effect = effect.split("(")[0]
                documented |= {(c, e) for c in re.findall(r"`([a-z-]+)`", cause)
                               for e in re.findall(r"`([a-z-]+)`", effect)}
    assert documented == {(r.cause, r.effect) for r in RULES}, documented ^ {(r.cause, r.effect) for r in RULES}


# -- causes, not a list -----------------------------------------------------------------

def _refs(f: pd.Series, key: str) -> set[tuple]:
    return {(r["id"], r["queue"]) for r in f[key]}


def test_no_workers_explains_what_it_leaves_behind(captured):
    d = forensics.diagnose(captured("bullmq5")[0], thresholds={"overdue_delayed_s": 0})
    assert ("no-workers", "convert") in _refs(one(d, "stalled-active", "convert"), "explained_by")
    assert ("no-workers", "late") in _refs(one(d, "overdue-delayed", "late"), "explained_by")
    cause = one(d, "no-workers", "convert")
    assert ("stalled-active", "convert") in _refs(cause, "explains") and not cause["explained_by"]
    # references point at the finding in the list: index is its position
    for f in d.findings.itertuples():
        for r in f.explains + f.explained_by:
            target = d.findings.iloc[r["index"]]
            assert (target["id"], target["queue"]) == (r["id"], r["queue"]) and r["why"]


def test_a_retry_storm_explains_its_traces_and_hotspot(incident):
    d = diagnosis(incident, "storm", "bullmq5")
    assert ("retry-storm", "storm") in _refs(one(d, "stacktrace-bloat", "storm"), "explained_by")
    assert ("retry-storm", "burst") in _refs(one(d, "error-hotspot", "burst"), "explained_by")


def test_a_leaking_worker_that_was_killed_explains_the_stalls(incident):
    d = diagnosis(incident, "oomkill")
    leak = ("worker-memory-growth", "images")
    assert leak in _refs(one(d, "stall-failures", "images"), "explained_by")
    stalled = one(d, "stalled-active", "images")
    assert {leak, ("no-workers", "images")} <= _refs(stalled, "explained_by")


def test_big_return_values_explain_the_stream_and_the_memory(incident):
    d = diagnosis(incident, "bloat", memory_pressure_share=0.3)
    bloat = one(d, "events-stream-bloat", "results")
    assert ("oversized-returnvalue", "results") in _refs(bloat, "explained_by")
    pressure = one(d, "memory-pressure", None)
    assert ("events-stream-bloat", "results") in _refs(pressure, "explained_by")
    roots = d.root_causes
    assert "oversized-returnvalue" in set(roots["id"]) and "memory-pressure" not in set(roots["id"])


def test_renderings_lead_with_root_causes(incident):
    snap, logs = incident("oomkill")
    d = forensics.diagnose(snap, logs=logs)
    table = d.to_table().splitlines()
    n, k = len(d.findings), len(d.root_causes)
    head = table.index(f"{k} root causes, {n} findings (each effect is folded under its cause)")
    assert k < n and table[head + 1].startswith("SEVERITY")
    rows = table[head + 2:head + 2 + n]
    folded = [r for r in rows if r.lstrip().startswith("└")]
    assert len(folded) == n - k and all("[because " in r for r in folded)
    # an effect comes after its cause
    assert rows.index(next(r for r in rows if " stall-failures " in r)) > \
        rows.index(next(r for r in rows if " worker-memory-growth " in r))
    md = d.to_markdown()
    assert "↳ " in md and "*because worker-memory-growth" in md
    assert "because" in d._repr_html_() and "↳" in d._repr_html_()
    doc = json.loads(d.to_json())
    assert doc["summary"]["findings"] == n and doc["summary"]["root_causes"] == k
    assert sum(doc["summary"]["by_severity"].values()) == len(doc["findings"]) == n   # every finding kept
    assert all({"explains", "explained_by"} <= set(f) for f in doc["findings"])


# -- workers that stop consuming, connections that leak ----------------------------------

def test_stopped_consuming_says_why_and_explains_the_aging_backlog(incident):
    d = diagnosis(incident, "consume", "bullmq5", stopped_consuming_s=2, stale_backlog_minutes=0.02)
    for queue in ("paused", "noautorun"):
        f = one(d, "stopped-consuming", queue)
        ev = f["evidence"]
        assert f["severity"] == "critical" and f["count"] == 5 and ev["workers_connected"] == 1
        assert ev["last_activity"] is None and ev["blocked_connections"] == 0
        assert ev["why"].startswith("no worker connection is waiting for jobs")
        (conn,) = ev["connections"]
        assert conn["name"].endswith(f":w:w-{queue}") and conn["idle_s"] >= 2 and conn["flags"] == "N"
        assert ("stopped-consuming", queue) in _refs(one(d, "stale-backlog", queue), "explained_by")
        assert "worker.resume()" in f["remediation"] and "worker.run()" in f["remediation"]
    # a stale backlog behind a worker that is busy is not explained by it
    assert ("stopped-consuming", "slow") not in _refs(one(d, "stale-backlog", "slow"), "explained_by")
    # the workers table says how each connection waits
    snap, _ = incident("consume", "bullmq5")
    w = snap.workers.set_index("queue")
    assert bool(w.loc["idle", "blocked"]) and w.loc["idle", "blocking_command"] == "bzpopmin"
    assert not bool(w.loc["paused", "blocked"]) and pd.isna(w.loc["paused", "blocking_command"])


def test_bull_workers_paused_locally_stop_consuming(incident):
    d = diagnosis(incident, "consume", "bull", stopped_consuming_s=2)
    f = one(d, "stopped-consuming", "paused")
    assert f["evidence"]["workers_connected"] == 1 and "queue.resume(true)" in f["remediation"]
    snap, _ = incident("consume", "bull")
    w = snap.workers.set_index("queue")
    assert bool(w.loc["idle", "blocked"]) and w.loc["idle", "blocking_command"] == "brpoplpush"


def test_a_connection_leak_is_medium_then_high_near_maxclients_then_critical_once_refused(tmp_path):
    """120 BullMQ Queues created per request and never closed, next to a busy pool of 60
    workers: the leak is counted per address (the pool's connections are not), raised to
    high when Redis nears maxclients, and to critical once it refused a connection."""
    import socket
    import subprocess

    from conftest import NODE_DIR, RedisServer, wait_for_worker_connection
    srv = RedisServer(tmp_path, "--maxclients", "800")
    proc = subprocess.Popen(["node", str(NODE_DIR / "incidents.js"), "leak", "bullmq5", srv.url(0), "lk", "", "3"],
                            cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    socks = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        wait_for_worker_connection(srv, "lk")

        def leak() -> pd.Series:
            return one(forensics.diagnose(forensics.capture(srv.url(0), prefix="lk"),
                                          thresholds={"leak_idle_s": 2}), "connection-leak", None)
        f = leak()
        (group,) = f["evidence"]["by_address"]
        assert f["severity"] == "medium" and group["address"] == "127.0.0.1"
        # the 120 Queues (and the test's own idle client or two), not the pool's 60 busy connections
        assert 120 <= group["idle_connections"] <= 123 and group["idle_s_median"] >= 2
        admin = srv.client()
        connected = int(admin.info("clients")["connected_clients"])
        admin.config_set("maxclients", connected + 8)   # the test's hand, not the tool's
        f = leak()
        assert f["severity"] == "high" and f["evidence"]["maxclients"] == connected + 8
        for _ in range(40):  # more connections than Redis takes: some are refused
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"PING\r\n")
            socks.append(s)
        for s in socks:
            s.close()
        socks.clear()
        assert int(admin.info("stats")["rejected_connections"]) > 0
        admin.close()
        f = leak()
        assert f["severity"] == "critical" and f["evidence"]["rejected_connections"] > 0
        assert "rejected" in f["title"]
    finally:
        for s in socks:
            s.close()
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        srv.stop()


# -- adds the library swallowed -------------------------------------------------------------

@pytest.mark.parametrize("lib", ["bullmq5", "bullmq6"])
def test_swallowed_adds_tell_lost_work_from_a_redelivery(incident, lib):
    d = diagnosis(incident, "adds", lib)
    idem = one(d, "swallowed-adds", "idem")      # order-1 completed, then added 3 more times
    assert idem["severity"] == "medium" and idem["evidence"]["work_lost"] == 3 and idem["job_ids"] == ["order-1"]
    assert idem["evidence"]["collided_with"]["order-1"]["state"] == "completed"
    for queue in ("redeliver", "tenant"):         # the job added again is still waiting: nothing lost
        f = one(d, "swallowed-adds", queue)
        assert f["severity"] == "low" and f["evidence"]["work_lost"] == 0 and f["evidence"]["redelivered"] == 2
    # one add under a deduplication id writes two entries on BullMQ 5: adds are counted, not entries
    assert one(d, "swallowed-adds", "tenant")["evidence"]["by_deduplication"] == 2


def test_a_dedup_key_outliving_its_job_drops_every_add_on_bullmq5_and_is_recovered_on_6(incident):
    v5 = one(diagnosis(incident, "adds", "bullmq5"), "swallowed-adds", "nightly")
    assert v5["severity"] == "critical" and v5["evidence"]["work_lost"] == 3
    assert v5["evidence"]["stale_dedup_keys"] == [{"dedup_id": "nightly", "job_id": "1", "job_state": "missing-hash"}]
    assert "removeDeduplicationKey" in v5["remediation"]
    d5 = diagnosis(incident, "adds", "bullmq5")
    assert ("missing-job-hash", "nightly") in _refs(one(d5, "swallowed-adds", "nightly"), "explained_by")
    v6 = one(diagnosis(incident, "adds", "bullmq6"), "swallowed-adds", "nightly")   # the next add took the key back
    assert v6["severity"] == "low" and v6["evidence"]["stale_dedup_keys"] == []
    snap, _ = incident("adds", "bullmq6")
    keys = snap.dedup.set_index("dedup_id")
    assert keys.loc["nightly", "job_id"] == "2" and pd.isna(keys.loc["nightly", "ttl_ms"])


@pytest.mark.parametrize("lib", ["bullmq5", "bullmq6"])
def test_a_job_joins_its_apm_trace(incident, lib):
    """BullMQ keeps the trace context it propagates (opts `tm`): the jobs table and
    `explain` give the trace id, so the job can be found in the APM."""
    snap, _ = incident("adds", lib)
    j = snap.jobs.set_index("job_id")
    assert j.loc["r-1", "trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert j.loc["r-1", "traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert pd.isna(j.loc["order-1", "trace_id"])
    story = forensics.explain(snap, "r-1", queue="redeliver")
    assert "trace 4bf92f3577b34da6a3ce929d0e0e4736" in story.to_text()
    assert story.to_dict()["job"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


# -- schedulers and repeatables --------------------------------------------------------------

@pytest.mark.parametrize("lib", ["bullmq5", "bullmq6", "bull"])
def test_the_schedulers_table_reads_what_the_library_wrote(incident, lib):
    snap, _ = incident("schedulers", lib)
    s = snap.schedulers
    if lib == "bull":
        assert set(s["kind"]) == {"legacy-repeatable"} and len(s) == 4
        cleanup = s[s["name"] == "cleanup"].sort_values("every_ms")
        assert cleanup["every_ms"].tolist() == [30000, 60000]
        assert set(s.loc[s["name"] == "digest", "pattern"]) == {"0 8 * * *"}
        return
    d = s.set_index("key")
    r = d.loc["daily-report"]
    assert (r["kind"], r["name"], r["pattern"], r["tz"], int(r["iterations"])) == \
        ("job-scheduler", "report", "0 3 * * *", "UTC", 1)
    assert r["next_run"].hour == 3 and json.loads(r["data"]) == {"kind": "daily"}
    next_job = snap.jobs.set_index("job_id").loc[r["next_job_id"]]
    assert next_job["state"] == "delayed" and next_job["repeat_key"] == "daily-report"
    assert int(d.loc["sync-hourly", "every_ms"]) == 3_600_000
    if lib == "bullmq5":
        assert (s["kind"] == "legacy-repeatable").sum() == 5    # 4 in `legacy`, 1 in `upgraded`


def test_duplicates_are_judged_by_name_and_data(incident):
    d = diagnosis(incident, "schedulers", "bull")
    f = one(d, "duplicate-schedulers", "legacy")      # `cleanup` twice; `digest` per tenant is not
    assert f["evidence"]["name"] == "cleanup" and f["count"] == 2
    assert sorted(e["rule"] for e in f["evidence"]["entries"]) == ["every 30 s", "every 60 s"]
    sync = one(diagnosis(incident, "schedulers", "bullmq6"), "duplicate-schedulers", "sync")
    assert {e["key"] for e in sync["evidence"]["entries"]} == {"sync-hourly", "sync-every-30m"}
    assert "upsertJobScheduler" in sync["remediation"]


def test_a_scheduler_whose_next_job_is_gone_has_stopped(incident):
    d = diagnosis(incident, "schedulers", "bullmq5", scheduler_grace_s=1)
    f = one(d, "scheduler-stalled", "stuck")
    (s,) = f["evidence"]["schedulers"]
    assert s["key"] == "every-second" and s["next_job_state"] == "missing-hash" and s["rule"] == "every 1 s"
    assert ("missing-job-hash", "stuck") in _refs(f, "explained_by")
    legacy = one(d, "legacy-repeatables", "upgraded")
    assert legacy["evidence"]["library_version"].startswith("6.") and legacy["count"] == 1
    assert legacy["evidence"]["entries"][0]["name"] == "nightly"


def test_explain_tells_a_scheduler_iterations_story(incident):
    snap, _ = incident("schedulers", "bullmq6")
    nid = snap.schedulers.set_index("key").loc["daily-report", "next_job_id"]
    text = forensics.explain(snap, nid, queue="reports").to_text()
    assert "iteration of the job scheduler daily-report (cron 0 3 * * * (UTC), 1 iteration(s) so far" in text
    assert "It is the scheduler's next job" in text


@pytest.mark.parametrize("lib", ["bullmq5", "bullmq6"])
def test_a_scheduler_job_that_crashes_its_worker_loops_and_is_named(incident, lib):
    """BullMQ never fails a scheduler's job for stalling: one that crashes its worker every
    time is re-run forever, its stall counter growing. A plain job stalled once is a re-queue."""
    d = diagnosis(incident, "stallloop", lib)
    f = one(d, "stall-failures", "tick")
    loops = f["evidence"]["scheduler_stall_loops"]
    assert f["severity"] == "high" and len(loops) == 1 and list(loops.values())[0] >= 3
    assert list(loops)[0].startswith("repeat:tick:") and f["job_ids"][0] == list(loops)[0]
    assert "removeJobScheduler" in f["remediation"]
    if lib == "bullmq6":   # taken with its deferred failure, its process died before failing it
        z = one(d, "stall-failures", "zombie")
        assert z["evidence"]["deferred_zombies"] == ["1"] and z["severity"] == "high"
        assert z["evidence"]["scheduler_stall_loops"] == {}
        assert one(d, "stalled-active", "zombie")["job_ids"] == ["1"]
    # a plain job re-queued after its worker was killed (the oomkill incident) is no loop
    plain = one(diagnosis(incident, "oomkill"), "stall-failures", "images")
    assert plain["evidence"]["requeued_after_stall"] >= 1 and plain["evidence"]["scheduler_stall_loops"] == {}


def test_on_a_series_a_scheduler_whose_iterations_do_not_move_has_stalled(incident, redis_server, tmp_path):
    """The `sync` schedulers are due and their next jobs wait for a worker that never
    comes: one capture cannot tell a due run from a stuck one; a series sees `ic` stand
    still. `reports` (due tomorrow) is not judged stalled."""
    from forensics.series import capture_series
    incident("schedulers", "bullmq6")   # the queues exist
    series, _ = capture_series(redis_server.url(0), prefix="inc-schedulers-bullmq6", every=0.6, count=3,
                               out=tmp_path / "s", progress=False)
    d = forensics.diagnose(series, thresholds={"scheduler_grace_s": 1})
    f = one(d, "scheduler-stalled", "sync")
    assert {s["key"] for s in f["evidence"]["schedulers"]} == {"sync-hourly", "sync-every-30m"}
    assert all(s["iterations_not_advancing_since"] for s in f["evidence"]["schedulers"])
    assert "iteration count has not moved" in f["title"]
    assert ("no-workers", "sync") in _refs(f, "explained_by")
    assert not len(d.findings[(d.findings["id"] == "scheduler-stalled") & (d.findings["queue"] == "reports")])
    single = forensics.diagnose(series.latest, thresholds={"scheduler_grace_s": 1}).findings
    assert not len(single[(single["id"] == "scheduler-stalled") & (single["queue"] == "sync")])


@pytest.mark.parametrize("lib", ["bullmq5", "bullmq6"])
def test_adds_dropped_by_a_dedup_ttl_are_a_throttle_not_lost_work(incident, lib):
    f = one(diagnosis(incident, "adds", lib), "swallowed-adds", "throttle")
    ev = f["evidence"]
    assert f["severity"] == "low" and ev["throttled"] == 2 and ev["work_lost"] == 0, ev
    assert "throttle" in f["title"]
