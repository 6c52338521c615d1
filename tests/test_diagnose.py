"""Detectors and checklist on states produced by the real libraries.

Every registered detector has at least one case where it fires and one where it stays
silent (the meta-test enforces it). Sources:
  bull / bullmq5 / bullmq6   tests/node/scenario.js (the incident), captured once
  live      a real BullMQ worker alive and hanging on a job, 4 jobs waiting behind it
  healthy-* a well-configured queue with a live worker (tests/node/healthy.js)
  evicted   a Redis with allkeys-lru and a tiny maxmemory, filled until it evicted keys
  damaged   a job hash deleted (as eviction does) and another whose id left the wait list
            (eviction itself is random: it may take the wait list instead of hashes)
  series-growing  a series captured while a producer fills Redis (conftest.growing_series)
  series-quiet    a series of queues nobody touches
  logs-MODE-LIB   a capture plus the pino/winston log of a real worker (tests/node/logging.js):
                  leak, steady, locklost, winston-json, refused
  oom       a producer's log when Redis (noeviction, tiny maxmemory) refuses writes
  storm-LIB / starve-LIB / bloat / oomkill   tests/node/incidents.js (conftest.incident),
            captured while the incident goes on: a retry storm with a trickle, a transient
            blip and an ended burst beside it; prioritized jobs overtaken by a stream of jobs
            beside a queue taken in order; 15 MB of return values left in an events stream
            beside a stream of many small entries; a leaking worker OOM-killed twice
  logs-leak-steps / logs-warmup   a worker leaking 4 MB every 20 jobs with a pause in the
            middle; one whose memo cache fills and then levels off
Thresholds are overridden only where the incident is real but smaller than the defaults.
"""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

import forensics
from forensics.detectors import REGISTRY

from conftest import NODE_DIR, RedisServer, forensics_cli, hanging_worker, run_node, wait_for_worker_connection

# The consume and leak incidents are seconds old when captured: judged at thresholds of seconds.
CONSUME = {"stopped_consuming_s": 2}
LEAK = {"leak_idle_s": 2}
SCHED = {"scheduler_grace_s": 1}
FIRES = [
    ("stalled-active", "bullmq5", "convert", {}),
    ("stalled-active", "bull", "convert", {}),
    ("hung-active", "live", "busy", {"hung_active_minutes": 0}),
    ("hung-active", "bull", "render", {"hung_active_minutes": 0}),
    ("stall-failures", "bullmq6", "stalls", {}),
    ("stall-failures", "bull", "stalls", {}),
    ("stall-failures", "oomkill", "images", {}),              # re-queued by the stalled checker
    ("no-workers", "bullmq5", "backlog", {}),
    ("no-workers", "bullmq5", "late", {}),                    # only a delayed job, past due
    ("no-workers", "bull", "late", {}),
    ("no-workers", "bullmq5", "convert", {}),                 # a stalled job and one waiting
    ("paused-backlog", "bullmq5", "reports", {}),
    ("paused-backlog", "bull", "reports", {}),
    ("overdue-delayed", "bullmq5", "late", {"overdue_delayed_s": 0}),
    ("overdue-delayed", "bull", "late", {"overdue_delayed_s": 0}),
    ("stale-backlog", "live", "busy", {"stale_backlog_minutes": 0}),
    ("stale-backlog", "bullmq5", "backlog", {"stale_backlog_minutes": 0}),   # no worker at all
    ("blocked-parent", "bullmq5", "flow-parent", {}),
    ("rate-limit-freeze", "bullmq5", "limited", {}),
    ("rate-limit-freeze", "bull", "limited", {}),
    ("priority-starvation", "starve-bullmq5", "starve", {}),  # by order: seconds, not minutes
    ("priority-starvation", "starve-bull", "starve", {}),
    ("missing-job-hash", "damaged", "jobs", {}),
    ("retry-storm", "storm-bullmq5", "storm", {}),            # by rate: one job, every few ms
    ("retry-storm", "storm-bull", "storm", {}),               # Bull: from attempt counters
    ("retry-storm", "storm-bullmq5", "burst", {}),            # ended a moment ago
    ("retry-storm", "bullmq5", "mail", {"retry_storm_jobs": 1, "retry_storm_share": 0}),  # a crowd waiting
    ("unbounded-attempts", "bullmq5", "backlog", {}),
    ("unbounded-attempts", "bull", "backlog", {}),
    ("no-backoff", "bullmq5", "convert", {}),
    ("non-retryable-retried", "bullmq5", "api", {}),
    ("non-retryable-retried", "bull", "api", {}),
    ("error-hotspot", "bullmq5", "mail", {"hotspot_min_failures": 3}),
    ("high-failure-rate", "bullmq5", "mail", {"failure_rate_min_finished": 5}),
    ("oversized-payload", "bullmq5", "heavy", {}),
    ("oversized-payload", "bull", "heavy", {}),
    ("binary-payload", "bullmq5", "mail", {}),
    ("binary-payload", "bullmq6", "heavy", {}),
    ("oversized-returnvalue", "bullmq5", "heavy", {}),
    ("oversized-returnvalue", "bloat", "results", {}),        # only in the events stream
    ("stacktrace-bloat", "bullmq5", "mail", {"stacktrace_max_entries": 2}),
    ("log-bloat", "bullmq5", "mail", {"log_lines_max": 0}),
    ("unbounded-retention", "bullmq5", "mail", {"retention_max_jobs": 3}),
    ("events-stream-bloat", "bloat", "results", {}),          # 241 entries, 15 MB
    ("eviction-policy", "evicted", None, {}),
    ("memory-pressure", "evicted", None, {}),
    ("orphan-job-hashes", "damaged", "jobs", {}),
    ("missing-timeout", "bull", "mail", {}),
    ("timeout-failures", "bull", "slowjobs", {}),
    ("high-concurrency", "live", "busy", {"max_concurrency": 0}),
    ("no-progress", "live", "busy", {"no_progress_minutes": 0}),
    ("redis-memory-growth", "series-growing", None, {}),
    ("backlog-growth", "series-growing", "uploads", {}),
    ("worker-memory-growth", "logs-leak-bullmq5", "images", {}),
    ("worker-memory-growth", "logs-leak-bull", "images", {}),
    ("worker-memory-growth", "logs-leak-steps-bullmq5", "images", {}),   # per job, despite the pause
    ("worker-memory-growth", "logs-leak-steps-bull", "images", {}),
    ("worker-memory-growth", "oomkill", "images", {}),        # judged run by run between kills
    ("lock-lost", "logs-locklost-bullmq5", "jobs", {}),
    ("lock-lost", "logs-locklost-bull", "jobs", {}),
    ("redis-connection-errors", "logs-refused-bullmq5", None, {}),
    ("redis-connection-errors", "oom", "jobs", {}),
    ("missing-handler", "logs-winston-json-bull", "jobs", {}),
    ("stopped-consuming", "consume-bullmq5", "paused", CONSUME),     # worker.pause() left on
    ("stopped-consuming", "consume-bullmq5", "noautorun", CONSUME),  # autorun: false, never run
    ("stopped-consuming", "consume-bullmq6", "paused", CONSUME),
    ("stopped-consuming", "consume-bull", "paused", CONSUME),        # queue.pause(true), local
    ("swallowed-adds", "adds-bullmq5", "idem", {}),        # a jobId reused after its job completed
    ("swallowed-adds", "adds-bullmq5", "nightly", {}),     # a dedup key outliving its (evicted) job
    ("swallowed-adds", "adds-bullmq6", "idem", {}),
    ("duplicate-schedulers", "schedulers-bullmq5", "sync", {}),      # one job under two schedulers
    ("duplicate-schedulers", "schedulers-bullmq5", "legacy", {}),    # ... and two legacy repeatables
    ("duplicate-schedulers", "schedulers-bull", "legacy", {}),
    ("scheduler-stalled", "schedulers-bullmq5", "stuck", SCHED),     # its next job evicted
    ("scheduler-stalled", "schedulers-bullmq6", "stuck", SCHED),
    ("legacy-repeatables", "schedulers-bullmq5", "upgraded", {}),    # BullMQ 6 deployed over them
    ("connection-leak", "leak-bullmq5", None, LEAK),                 # 120 Queues never closed
    ("connection-leak", "leak-bull", None, LEAK),
    ("pg-long-transaction", "pg-idle", None, {"pg_long_transaction_s": 2}),   # idle in a transaction 2 s
    ("pg-table-bloat", "pg-storm", None, {"pg_dead_rows_min": 500, "pg_dead_share": 0.05}),  # 60 jobs x 20 tries
]
SILENT = [
    ("stalled-active", "bullmq5", "render"),          # its lock is alive
    ("stalled-active", "starve-bullmq5", "starve"),   # busy: jobs finish between list and lock reads
    ("hung-active", "live", "busy"),                  # running, but not for 30 min
    ("stall-failures", "bullmq5", "mail"),
    ("no-workers", "live", "busy"),                   # jobs wait, but a worker is connected
    ("no-workers", "bullmq5", "timer"),               # delayed, not due for an hour: nothing to do yet
    ("no-workers", "bullmq5", "reports"),             # paused: paused-backlog says why
    ("paused-backlog", "bullmq5", "backlog"),
    ("overdue-delayed", "bullmq5", "backlog"),        # due in an hour
    ("stale-backlog", "live", "busy"),
    ("blocked-parent", "healthy-bullmq5", "orders"),
    ("rate-limit-freeze", "bullmq5", "backlog"),
    ("priority-starvation", "bullmq5", "backlog"),    # nothing was taken at all (no-workers)
    ("priority-starvation", "starve-bullmq5", "inorder"),   # busy, but taken in order
    ("priority-starvation", "starve-bull", "inorder"),
    ("missing-job-hash", "bullmq5", None),
    ("retry-storm", "bullmq5", "mail"),
    ("retry-storm", "storm-bullmq5", "trickle"),      # a retry every 700 ms, a few in all
    ("retry-storm", "storm-bullmq5", "blip"),         # 40 jobs retried once: a burst, not a storm
    ("retry-storm", "storm-bull", "trickle"),
    ("retry-storm", "storm-bull", "blip"),
    ("unbounded-attempts", "bullmq5", "mail"),
    ("no-backoff", "bullmq5", "mail"),                # exponential, or fixed 1 h
    ("non-retryable-retried", "bullmq5", "mail"),     # 503s are worth retrying
    ("error-hotspot", "bullmq5", "mail"),             # 3 failures < 10
    ("high-failure-rate", "healthy-bullmq5", "orders"),
    ("oversized-payload", "bullmq5", "mail"),
    ("binary-payload", "bullmq5", "convert"),
    ("oversized-returnvalue", "bullmq5", "mail"),
    ("oversized-returnvalue", "bloat", "chatty"),
    ("stacktrace-bloat", "bullmq5", "mail"),
    ("log-bloat", "bullmq5", "mail"),
    ("unbounded-retention", "bullmq5", "mail"),
    ("events-stream-bloat", "bullmq5", "mail"),
    ("events-stream-bloat", "bloat", "chatty"),       # 32,000 small entries, cap 50,000: under 10 MB
    ("eviction-policy", "bullmq5", None),             # the test Redis runs noeviction
    ("memory-pressure", "bullmq5", None),
    ("orphan-job-hashes", "bullmq5", None),
    ("orphan-job-hashes", "starve-bullmq5", None),    # jobs moving between states mid-capture
    ("missing-timeout", "bullmq5", "mail"),           # BullMQ has no timeout option
    ("missing-timeout", "healthy-bull", "orders"),    # every job sets one
    ("timeout-failures", "bull", "mail"),
    ("high-concurrency", "live", "busy"),
    ("no-progress", "live", "busy"),
    ("redis-memory-growth", "series-quiet", None),
    ("backlog-growth", "series-quiet", None),
    ("backlog-growth", "series-growing", "nothing-else"),  # only the queue that grows
    ("worker-memory-growth", "logs-steady-bullmq5", None),  # same work, nothing retained
    ("worker-memory-growth", "logs-warmup-bullmq5", None),  # rose 60 MB, then levelled off
    ("worker-memory-growth", "logs-warmup-bull", None),
    ("lock-lost", "logs-steady-bullmq5", None),
    ("lock-lost", "logs-winston-json-bull", None),         # failures, but no lock trouble
    ("redis-connection-errors", "logs-steady-bullmq5", None),
    ("redis-connection-errors", "healthy-bullmq5", None),  # a job's HTTP call timed out: not Redis
    ("missing-handler", "logs-winston-json-bullmq5", None),  # BullMQ has no named handlers
    ("missing-handler", "bull", None),
    ("stopped-consuming", "consume-bullmq5", "idle", CONSUME),       # idle between jobs, nothing waits
    ("stopped-consuming", "consume-bullmq5", "slow", CONSUME),       # busy with a long job (live lock)
    ("stopped-consuming", "consume-bull", "idle", CONSUME),
    ("stopped-consuming", "consume-bull", "slow", CONSUME),
    ("stopped-consuming", "live", "busy", CONSUME),
    ("connection-leak", "consume-bullmq5", None, LEAK),              # a few named workers, Queues in use
    ("duplicate-schedulers", "schedulers-bullmq5", "tenants"),       # one name per tenant, different data
    ("duplicate-schedulers", "schedulers-bullmq6", "reports"),
    ("scheduler-stalled", "schedulers-bullmq5", "sync", SCHED),      # due, its next job waits for a worker
    ("scheduler-stalled", "schedulers-bullmq5", "reports", SCHED),   # due tomorrow at 03:00
    ("scheduler-stalled", "schedulers-bull", None, SCHED),
    ("legacy-repeatables", "schedulers-bullmq5", "legacy"),          # a BullMQ 5 queue still runs them
    ("legacy-repeatables", "schedulers-bullmq6", None),              # schedulers only
    ("swallowed-adds", "healthy-bullmq5", None),
    ("swallowed-adds", "starve-bullmq5", None),           # busy, thousands of adds, none swallowed
    # 120 Queues leak; the busy pool's 60 unnamed connections in use would make it ~180
    ("connection-leak", "leak-bullmq5", None, {**LEAK, "leak_min_connections": 125}),
    ("pg-long-transaction", "pg", None, {"pg_long_transaction_s": 2}),   # workers' transactions are short
    ("pg-long-transaction", "bullmq5", None),                            # Redis: nothing to judge
    ("pg-table-bloat", "pg", None),                                      # a few hundred dead rows, not 10,000
]


@pytest.fixture(scope="module")
def sources(redis_server, captured, tmp_path_factory, worker_logs, growing_series, incident, request):
    """source name -> Snapshot, built on first use."""
    cache: dict[str, forensics.Snapshot] = {}
    url = redis_server.url(0)

    def live():
        run_node("fill.js", "bullmq5", url, "diag-live", "busy", "5")
        with hanging_worker(redis_server, "diag-live", "busy"):
            return forensics.capture(url, prefix="diag-live")

    def healthy(lib):
        prefix = f"diag-healthy-{lib}"
        proc = subprocess.Popen(["node", str(NODE_DIR / "healthy.js"), lib, url, prefix], cwd=NODE_DIR,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            wait_for_worker_connection(redis_server, prefix)
            return forensics.capture(url, prefix=prefix)
        finally:
            proc.stdin.close()
            proc.wait(30)

    def evicted():
        srv = RedisServer(tmp_path_factory.mktemp("evict"), "--maxmemory", "3mb",
                          "--maxmemory-policy", "allkeys-lru")
        try:
            run_node("fill.js", "bullmq5", srv.url(), "bull", "bench", "20000", "200", timeout=300)
            assert int(srv.client().info("stats")["evicted_keys"]) > 0
            return forensics.capture(srv.url(), prefix="bull")
        finally:
            srv.stop()

    def damaged():
        run_node("fill.js", "bullmq5", url, "diag-damaged", "jobs", "4")
        admin = redis_server.client()
        admin.lrem("diag-damaged:jobs:wait", 0, "2")  # a crashed script's half-done move
        admin.delete("diag-damaged:jobs:3")           # what eviction does to a job hash
        return forensics.capture(url, prefix="diag-damaged")

    def quiet_series():
        from forensics.series import capture_series
        run_node("fill.js", "bullmq5", url, "diag-quiet", "jobs", "20")
        series, _ = capture_series(url, prefix="diag-quiet", every=0.3, count=4,
                                   out=tmp_path_factory.mktemp("quiet") / "s", progress=False)
        return series

    def with_logs(mode: str, lib: str):
        prefix, path = worker_logs(mode, lib)
        return forensics.capture(url, prefix=prefix), forensics.read_logs(path)

    def oom():
        srv = RedisServer(tmp_path_factory.mktemp("oom"), "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
        try:
            log = tmp_path_factory.mktemp("oom-log") / "producer.log"
            run_node("logging.js", "oom", "bullmq5", srv.url(), "bull", "jobs", str(log))
            return forensics.capture(srv.url(), prefix="bull"), forensics.read_logs(log)
        finally:
            srv.stop()

    def postgres(name: str):
        """BullMQ 6 on PostgreSQL (conftest.pg_incident): `pg` as it runs, `pg-storm` its storm
        schema, `pg-idle` with another session idle in a transaction for 2 s."""
        import psycopg
        pg = request.getfixturevalue("pg_server")
        request.getfixturevalue("pg_incident")
        if name == "pg-storm":
            return forensics.capture(pg.url(), schema="storm")
        if name == "pg":
            return forensics.capture(pg.url())
        with psycopg.connect(pg.url(), autocommit=True, application_name="billing-report") as c:
            c.execute("BEGIN")
            c.execute("SELECT count(*) FROM bullmq.job")
            time.sleep(2.2)
            return forensics.capture(pg.url())

    def get(name: str):
        if name not in cache and name.startswith("pg"):
            cache[name] = postgres(name)
        if name not in cache:
            mode, _, lib = name.partition("-")
            if mode in ("storm", "starve", "bloat", "oomkill", "consume", "leak", "adds", "schedulers", "stallloop"):
                snap, logs = incident(mode, lib or "bullmq5")
                cache[name] = snap if logs is None else (snap, logs)
            if name == "series-growing":
                cache[name] = forensics.load_series(growing_series[0])
            elif name == "series-quiet":
                cache[name] = quiet_series()
            elif name.startswith("logs-"):
                mode, lib = name[5:].rsplit("-", 1)
                cache[name] = with_logs(mode, lib)
            elif name == "oom":
                cache[name] = oom()
            if name in ("bull", "bullmq5", "bullmq6"):
                cache[name] = captured(name)[0]
            elif name == "live":
                cache[name] = live()
            elif name.startswith("healthy-"):
                cache[name] = healthy(name.split("-", 1)[1])
            elif name == "evicted":
                cache[name] = evicted()
            elif name == "damaged":
                cache[name] = damaged()
        return cache[name]
    return get


def _findings(sources, source, thresholds=None):
    src = sources(source)
    if isinstance(src, tuple):  # (snapshot, worker logs)
        return forensics.diagnose(src[0], logs=src[1], thresholds=thresholds).findings
    return forensics.diagnose(src, thresholds=thresholds).findings


@pytest.mark.parametrize("det,source,queue,thresholds", FIRES,
                         ids=[f"{d}-{s}-{q}" for d, s, q, _ in FIRES])
def test_detector_fires(sources, det, source, queue, thresholds):
    f = _findings(sources, source, thresholds)
    hit = f[(f["id"] == det) & ((f["queue"] == queue) if queue else f["queue"].isna())]
    assert len(hit) == 1, f[["id", "queue", "title"]].to_string()
    row = hit.iloc[0]
    assert row["count"] >= 1 or queue is None  # Redis-wide findings count no jobs
    assert row["remediation"] and row["title"] and row["evidence"]
    assert row["family"] == REGISTRY[det].family
    assert len(row["job_ids"]) <= 20


SILENT_AT = [(*x, {}) if len(x) == 3 else x for x in SILENT]


@pytest.mark.parametrize("det,source,queue,thresholds", SILENT_AT,
                         ids=[f"{d}-{s}-{q}" + ("-tuned" if t else "") for d, s, q, t in SILENT_AT])
def test_detector_stays_silent(sources, det, source, queue, thresholds):
    """Silent on a source where it must not fire; where the incident is only seconds old,
    at the same tuned thresholds its firing test uses (else the silence proves nothing)."""
    f = _findings(sources, source, thresholds or None)
    sel = f[f["id"] == det]
    if queue:
        sel = sel[sel["queue"] == queue]
    assert not len(sel), sel[["id", "queue", "title"]].to_string()


def test_small_snapshots_are_diagnosed_alike_in_compact_columns(sources, monkeypatch):
    """Up to detectors.COMPACT_ROWS jobs the detectors read plain NumPy columns (5x quicker on
    a small snapshot): every finding, count, sample, evidence and verdict must be the same as
    on the snapshot's own column types, on every incident the firing tests use."""
    import json

    from forensics import detectors
    seen = []
    for name in dict.fromkeys(src for _, src, _, _ in FIRES):
        src = sources(name)
        snap, logs = src if isinstance(src, tuple) else (src, None)
        fast = json.loads(forensics.diagnose(snap, logs=logs).to_json())
        with monkeypatch.context() as m:
            m.setattr(detectors, "COMPACT_ROWS", -1)
            plain = json.loads(forensics.diagnose(snap, logs=logs).to_json())
        assert fast == plain, name
        seen.append(name)
    assert len(seen) >= 10


def test_every_detector_has_a_firing_and_a_silent_test():
    fires = {d for d, *_ in FIRES}
    silent = {d for d, *_ in SILENT_AT}
    assert fires == set(REGISTRY), set(REGISTRY) ^ fires
    assert silent == set(REGISTRY), set(REGISTRY) ^ silent


@pytest.mark.parametrize("lib", ["bull3", "bull", "bullmq5", "bullmq6"])
def test_healthy_system_looks_healthy(sources, lib):
    """Live workers, bounded retries with backoff, cleanup, metrics; and, like any real
    system, a busy one with a dependency that times out now and then (20 of 400 jobs fail
    once, then succeed: the retry strategy working is not an error hotspot)."""
    snap = sources(f"healthy-{lib}")
    jobs = snap.jobs
    recovered = jobs[(jobs["state"] == "completed") & jobs["failed_reason"].notna()]
    assert len(recovered) >= forensics.Thresholds().hotspot_min_failures, len(recovered)
    d = forensics.diagnose(snap)
    assert not len(d.at_least("high")), d.to_table()
    assert not len(d.findings), d.to_table()         # not even a medium: nothing to act on
    assert d.errors == []
    verdicts = d.checklist.set_index("item")["verdict"].to_dict()
    for item in ("retry-strategy", "payload-size", "cleanup", "dead-letter", "health-checks"):
        assert verdicts[item] == "pass", (item, d.checklist.to_string())
    # Bull 3 has no metrics (they came in Bull 4.7): its events are pub/sub only, nothing is kept
    assert verdicts["monitoring"] == ("warn" if lib == "bull3" else "pass")
    assert verdicts["timeout"] == ("pass" if lib.startswith("bull") and not lib.startswith("bullmq") else "unknown")
    assert verdicts["memory-leak"] == "unknown"
    others = {v for item, v in verdicts.items() if item != "monitoring"}
    assert others <= {"pass", "unknown"}, d.checklist.to_string()


def test_incident_checklist_verdicts(sources):
    c = forensics.diagnose(sources("bullmq5")).checklist.set_index(["queue", "item"])["verdict"]
    assert c[("backlog", "retry-strategy")] == "fail"      # attempts: 1000
    assert c[("mail", "retry-strategy")] == "fail"         # fixed backoff on a retried job
    assert c[("heavy", "payload-size")] == "fail"          # 1.2 MB of data
    assert c[("backlog", "health-checks")] == "fail"       # waiting, no worker
    assert c[("mail", "monitoring")] == "pass"             # events + metrics
    assert c[("convert", "monitoring")] == "warn"          # events only
    assert c[("mail", "cleanup")] == "warn"                # no removeOnComplete
    bull = forensics.diagnose(sources("bull")).checklist.set_index(["queue", "item"])["verdict"]
    assert bull[("mail", "timeout")] == "fail" and bull[("slowjobs", "timeout")] == "pass"
    assert bull[("mail", "cleanup")] == "fail"             # Bull never trims without the options
    f = forensics.diagnose(sources("bull")).findings.set_index(["id", "queue"])
    # Bull stores attempts: Infinity as null and then tries the job once: it says so
    assert f.loc[("unbounded-attempts", "backlog"), "title"] == \
        "2 job(s) with unbounded attempts (up to 1000; 1 infinite, which Bull stores as null and never retries)"


def test_progress_verdict_on_a_long_silent_job(sources):
    c = forensics.diagnose(sources("live"), thresholds={"no_progress_minutes": 0}).checklist
    verdict = c.set_index(["queue", "item"]).loc[("busy", "progress")]
    assert verdict["verdict"] == "warn" and "never reported progress" in verdict["evidence"]


def test_severity_and_remediation_follow_the_library(sources):
    mq = forensics.diagnose(sources("bullmq5")).findings.set_index(["id", "queue"])
    bull = forensics.diagnose(sources("bull")).findings.set_index(["id", "queue"])
    assert mq.loc[("stalled-active", "convert"), "severity"] == "critical"   # and no worker left
    assert "UnrecoverableError" in mq.loc[("non-retryable-retried", "api"), "remediation"]
    assert "job.discard()" in bull.loc[("non-retryable-retried", "api"), "remediation"]
    assert "removeRateLimitKey" in mq.loc[("rate-limit-freeze", "limited"), "remediation"]
    assert "duration" in bull.loc[("rate-limit-freeze", "limited"), "remediation"]
    # one 1.2 MB job is wasteful (medium); bytes are high only when they weigh on maxmemory
    # (tests/test_verdicts.py: the same detectors at high on a Redis they fill)
    assert mq.loc[("oversized-payload", "heavy"), "severity"] == "medium"
    ev = mq.loc[("oversized-payload", "heavy"), "evidence"]
    assert ev["over_1mb"] == 1 and ev["over_100kb"] == 1
    hung_mq = forensics.diagnose(sources("live"), thresholds={"hung_active_minutes": 0}).findings
    hung_bull = forensics.diagnose(sources("bull"), thresholds={"hung_active_minutes": 0}).findings
    assert "no job timeout" in hung_mq[hung_mq["id"] == "hung-active"]["remediation"].iloc[0]
    assert "`timeout`" in hung_bull[hung_bull["id"] == "hung-active"]["remediation"].iloc[0]


def test_errors_are_grouped_by_fingerprint(sources):
    f = forensics.diagnose(sources("bullmq5"), thresholds={"hotspot_min_failures": 3}).findings
    hot = f[(f["id"] == "error-hotspot") & (f["queue"] == "mail")].iloc[0]
    assert hot["evidence"]["fingerprint"] == "upstream <n> for user <id>"
    assert hot["count"] == 3 and hot["evidence"]["example_stack"].startswith("Error: upstream 503")


def test_thresholds_from_python_and_validation():
    t = forensics.Thresholds().replace(max_attempts="20")
    assert t.max_attempts == 20
    with pytest.raises(forensics.UsageError, match="unknown threshold"):
        forensics.Thresholds.coerce({"nope": 1})


def test_cli_formats_and_fail_on(sources, tmp_path):
    path = sources("bullmq5").save(tmp_path / "incident")
    table = forensics_cli("diagnose", path)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert re.fullmatch(r"\d+ root causes, \d+ findings \(each effect is folded under its cause\)", lines[1])
    assert lines[2].split()[:4] == ["SEVERITY", "ID", "QUEUE", "COUNT"]
    assert lines[3].startswith("CRITICAL")                  # worst first
    assert "What to do (root causes first):" in table.stdout
    assert "Checklist" in table.stdout
    js = forensics_cli("diagnose", path, "--format", "json")
    doc = json.loads(js.stdout)
    assert doc["schema"] == "forensics.diagnosis/1" and doc["snapshot"]["complete"] is True
    first = doc["findings"][0]
    assert set(first) >= {"id", "family", "severity", "queue", "title", "count", "job_ids", "evidence", "remediation"}
    assert {c["item"] for c in doc["checklist"]} >= {"retry-strategy", "cleanup", "memory-leak"}
    md = forensics_cli("diagnose", path, "--format", "markdown")
    assert "## Findings" in md.stdout and "| critical | `" in md.stdout
    assert forensics_cli("diagnose", path, "--fail-on", "critical").returncode == 1
    healthy = sources("healthy-bullmq5").save(tmp_path / "healthy")
    assert forensics_cli("diagnose", healthy, "--fail-on", "high").returncode == 0
    res = forensics_cli("diagnose", path, "--threshold", "max_attempts=lots")
    assert res.returncode == 2 and "needs a int" in res.stderr
    assert forensics_cli("diagnose", path, "--fail-on", "worst").returncode == 2


def test_snapshot_without_queues(redis_server, tmp_path):
    path = forensics.capture(redis_server.url(0), prefix="nothing-here").save(tmp_path / "empty")
    res = forensics_cli("diagnose", path, "--fail-on", "info")
    assert res.returncode == 0 and "No findings." in res.stdout
    doc = json.loads(forensics_cli("diagnose", path, "--format", "json").stdout)
    assert doc["findings"] == [] and doc["checklist"] == []


def test_html_and_json_escape_nothing_away(sources):
    d = forensics.diagnose(sources("bullmq5"))
    html = d._repr_html_()
    assert isinstance(html, str) and "stalled-active" in html
    assert json.loads(d.to_json())["findings"][0]["severity"] == "critical"


def test_log_findings_carry_their_evidence(sources):
    snap, logs = sources("logs-locklost-bull")
    lock = forensics.diagnose(snap).findings.set_index("id").loc["lock-lost"]   # no logs: the hash alone
    assert lock["evidence"]["jobs_with_trace"] == 1 and lock["evidence"]["log_records"] == 0
    assert "settings.lockDuration" in lock["remediation"] and lock["job_ids"] == ["1"]
    mq = _findings(sources, "logs-locklost-bullmq5").set_index("id").loc["lock-lost"]
    # the worker logs "Missing lock for job 1" (and, depending on timer order, "could not renew lock")
    assert mq["evidence"]["log_records"] >= 1 and mq["job_ids"] == ["1"]
    assert all("lock for job 1" in x for x in mq["evidence"]["examples"])
    assert "the Worker's `lockDuration`" in mq["remediation"]
    oom = _findings(sources, "oom").set_index("id").loc["redis-connection-errors"]
    assert oom["severity"] == "critical" and oom["evidence"]["kind"] == "oom"
    refused = _findings(sources, "logs-refused-bullmq5").set_index("id").loc["redis-connection-errors"]
    assert refused["evidence"]["kind"] == "connection-refused" and refused["count"] >= 3
    leak = _findings(sources, "logs-leak-bullmq5").set_index("id").loc["worker-memory-growth"]
    ev = leak["evidence"]
    assert ev["metric"] == "heap_used_bytes" and ev["jobs_seen"] == 30 and ev["worker"].startswith("worker-a/")
    assert ev["last_bytes"] > ev["first_bytes"] + 100e6 and leak["severity"] == "high"
    handler = _findings(sources, "logs-winston-json-bull").set_index("id").loc["missing-handler"]
    assert handler["count"] == 3 and handler["evidence"]["job_names"] == {"export": 3}


def test_memory_leak_verdict_reads_worker_logs(sources):
    def verdict(source):
        snap, logs = sources(source)
        c = forensics.diagnose(snap, logs=logs).checklist.set_index(["queue", "item"])
        return c.loc[("images", "memory-leak")]
    assert verdict("logs-leak-bullmq5")["verdict"] == "fail"
    steady = verdict("logs-steady-bullmq5")
    assert steady["verdict"] == "pass" and "30 log records" in steady["evidence"]
