"""BullMQ 6 on PostgreSQL: a real PostgreSQL the session starts (initdb, pg_ctl) and the real
BullMQ 6 driven onto it (tests/node/pg.js). The capture reads the same snapshot tables a
Redis capture writes, in one read-only transaction; the diagnosis runs unchanged."""
from __future__ import annotations

import json
import re

import pytest

import forensics
from conftest import forensics_cli

STATES = {"waiting": "n_wait", "prioritized": "n_prioritized", "active": "n_active", "completed": "n_completed",
          "failed": "n_failed", "delayed": "n_delayed", "waiting-children": "n_waiting_children"}


@pytest.fixture(scope="module")
def pg_snap(pg_server, pg_incident):
    return forensics.capture(pg_server.url())


def test_counts_equal_what_bullmq_reports_and_rows_decode_as_from_redis(pg_snap, pg_incident):
    """Per queue, the snapshot's counts are getJobCounts'; jobs decode as a Redis capture's
    (attempts, failed reasons, job logs, locks), and BullMQ's named sessions are the workers."""
    q = pg_snap.queues.set_index("queue")
    assert set(q.index) == set(pg_incident)
    for queue, counts in pg_incident.items():
        assert {s: int(q.loc[queue, c]) for s, c in STATES.items()} == {s: counts[s] for s in STATES}, queue
    assert pg_snap.manifest["backend"] == "postgres" and "REPEATABLE READ" in pg_snap.manifest["consistency"]
    assert pg_snap.manifest["postgres"]["schema_version"] == 11 and q.loc["emails", "library_version"] == "6.7.0"
    assert "s3cret" not in json.dumps(pg_snap.manifest)                        # the password never lands
    jobs = pg_snap.jobs.set_index(["queue", "job_id"])
    failed = pg_snap.jobs[(pg_snap.jobs["queue"] == "exports") & (pg_snap.jobs["state"] == "failed")]
    assert len(failed) == 2 and (failed["attempts_made"] == 2).all() and (failed["log_count"] == 2).all()
    assert failed["failed_reason"].str.startswith("export failed: S3 answered 503").all()
    assert failed["stacktrace_top"].notna().all()
    ocr = jobs.loc[("ocr", "1")]
    assert ocr["state"] == "active" and not ocr["lock_present"]               # its worker was SIGKILLed
    assert (pg_snap.jobs.loc[pg_snap.jobs["queue"] == "exports", "state"] == "delayed").sum() == 3
    assert pg_snap.jobs["due_at"].notna().sum() == 3
    w = pg_snap.workers
    assert list(w["queue"]) == ["emails"] and list(w["worker_name"]) == ["mailer"] and int(q.loc["emails", "workers"]) == 1
    logs = pg_snap.payloads_of("bullmq", "exports", failed["job_id"], columns=("logs",))
    assert logs["logs"].str.contains("exporting").all()
    assert len(pg_snap.events) and set(pg_snap.events["queue"]) == {"emails", "ocr", "exports"}


def test_the_diagnosis_runs_unchanged(pg_server, pg_snap, tmp_path):
    """The SIGKILLed worker's job is found (stalled, no worker), the retry storm in schema
    `storm` is found, the healthy queue with its worker stays quiet; summary, explain,
    query and the postmortem read a PostgreSQL snapshot as a Redis one."""
    d = forensics.diagnose(pg_snap)
    f = d.findings
    assert {"no-workers", "stalled-active"} <= set(f.loc[f["queue"] == "ocr", "id"])
    assert not len(f[f["queue"] == "emails"]), d.to_table()
    assert d.snapshot["backend"] == "postgres"
    assert any("not judged: eviction-policy" in line for line in d.to_table().splitlines())
    storm = forensics.diagnose(forensics.capture(pg_server.url(), schema="storm"))
    assert "retry-storm" in set(storm.findings["id"]), storm.to_table()
    saved = tmp_path / "pg"
    pg_snap.save(saved)
    res = forensics_cli("summary", str(saved))
    assert res.returncode == 0 and "backend postgres" in res.stdout and "postgres    15" in res.stdout, res.stdout
    res = forensics_cli("explain", str(saved), "1", "--queue", "ocr")
    assert res.returncode == 0 and "lock is gone" in res.stdout, res.stdout + res.stderr
    assert forensics.query(saved, "select count(*) n from jobs where state = 'failed'")["n"].iloc[0] == 2
    res = forensics_cli("report", str(saved), "--out", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    assert "stalled-active" in (tmp_path / "r.html").read_text()


def test_read_only_by_construction(pg_server, pg_incident, tmp_path):
    """Every statement the tool's sessions sent (log_statement = all) is SELECT, SHOW, SET,
    BEGIN or COMMIT, and every BullMQ table is unchanged by a capture. The checksums are taken
    on a schema no worker runs on: a live Worker's stalled checker writes `meta` by itself."""
    from conftest import run_node
    run_node("pg.js", "fill", pg_server.url(), "untouched", "300")
    tables = [r[0] for r in pg_server.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'untouched' "
                                          "ORDER BY 1", db="app")]

    def checksums():
        return {t: pg_server.sql(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                                 f"FROM untouched.{t} x", db="app")[0][0] for t in tables}
    before = checksums()
    mark = pg_server.log.stat().st_size
    res = forensics_cli("capture", "--postgres", pg_server.url(), "--schema", "untouched", "--out",
                        str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "job" in tables and checksums() == before
    assert forensics.load(tmp_path / "s").row_count("jobs") == 300
    log = pg_server.log.read_bytes()[mark:].decode("utf-8", "replace")
    sent = re.findall(r"^queue-forensics\|\d+\|LOG:\s+(?:statement|execute [^:]*):\s+(\w+)", log, re.M)
    assert len(sent) >= 10 and set(s.upper() for s in sent) <= {"SELECT", "SHOW", "SET", "BEGIN", "COMMIT"}, sent


def test_bad_urls_passwords_schemas_and_roles_are_one_line(pg_server, pg_incident, tmp_path):
    """A port nobody listens on, a wrong password: exit 3; a schema that is not there: exit
    2 naming the BullMQ schemas that are; a role without the README's grants: exit 3 naming
    them, and with them the capture works."""
    from conftest import free_port
    out = str(tmp_path / "x")
    res = forensics_cli("capture", "--postgres", f"postgresql://postgres@127.0.0.1:{free_port()}/app", "--out", out)
    assert res.returncode == 3 and res.stderr.count("\n") == 1 and "cannot connect to PostgreSQL" in res.stderr
    res = forensics_cli("capture", "--postgres", pg_server.url(password="wrong"), "--out", out)
    assert res.returncode == 3 and "password authentication failed" in res.stderr and "wrong" not in res.stderr
    res = forensics_cli("capture", "--postgres", pg_server.url(), "--schema", "nope", "--out", out)
    assert res.returncode == 2 and "schema 'nope' not found" in res.stderr and "bullmq, storm" in res.stderr
    pg_server.sql("DROP ROLE IF EXISTS reader; CREATE ROLE reader LOGIN PASSWORD 'r3ader'", db="app")
    url = pg_server.url(user="reader", password="r3ader")
    res = forensics_cli("capture", "--postgres", url, "--out", out)
    assert res.returncode in (2, 3) and res.stderr.count("\n") == 1, res.stderr
    pg_server.sql("GRANT USAGE ON SCHEMA bullmq TO reader; GRANT SELECT ON ALL TABLES IN SCHEMA bullmq TO reader",
                  db="app")
    res = forensics_cli("capture", "--postgres", url, "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    snap = forensics.load(out)
    assert len(snap.queues) == 3 and "pg_stat_activity" in {u["command"] for u in snap.manifest["unavailable"]}
    assert list(snap.workers["queue"]) == ["emails"]        # named sessions show without pg_read_all_stats
    assert not (tmp_path / "x" / "code.parquet").exists()


def test_a_transaction_left_open_and_dead_rows_are_found(pg_server, pg_incident):
    """A session idle in a transaction past the threshold is pg-long-transaction (silent below
    it and once it commits); dead rows of the queue tables at the threshold are pg-table-bloat,
    one row under it stays silent (autovacuum is off on this server: the rows BullMQ's
    UPDATEs left stay)."""
    import time

    import psycopg
    with psycopg.connect(pg_server.url(), autocommit=True, application_name="billing-report") as c:
        c.execute("BEGIN")
        c.execute("SELECT count(*) FROM bullmq.job")
        time.sleep(2.2)
        snap = forensics.capture(pg_server.url())
        c.execute("COMMIT")
    fired = forensics.diagnose(snap, thresholds={"pg_long_transaction_s": 2}).findings.set_index("id")
    ev = fired.loc["pg-long-transaction", "evidence"]["sessions"]
    assert [s["application_name"] for s in ev] == ["billing-report"] and fired.loc["pg-long-transaction", "severity"] == "high"
    assert "pg-long-transaction" not in set(forensics.diagnose(snap, thresholds={"pg_long_transaction_s": 60}).findings["id"])
    assert "pg-long-transaction" not in set(forensics.diagnose(forensics.capture(pg_server.url()),
                                                               thresholds={"pg_long_transaction_s": 2}).findings["id"])
    worst = max(snap.manifest["postgres"]["tables"], key=lambda t: t["dead_rows"])   # job, usually
    dead, live = worst["dead_rows"], worst["live_rows"]
    assert dead > 0
    share = (dead - 0.5) / max(live, 1)   # just under its share: dead / live * live may round above dead
    at = forensics.diagnose(snap, thresholds={"pg_dead_rows_min": dead, "pg_dead_share": share}).findings
    assert "pg-table-bloat" in set(at["id"])
    assert f"bullmq.{worst['table']}" in at.set_index("id").loc["pg-table-bloat", "title"]
    above = forensics.diagnose(snap, thresholds={"pg_dead_rows_min": dead + 1, "pg_dead_share": share}).findings
    assert "pg-table-bloat" not in set(above["id"])     # no table has more dead rows than that


def test_a_stop_or_a_lost_session_keeps_what_was_read(pg_server, pg_incident):
    """A stop (Ctrl-C, SIGTERM) asked while jobs are read, or the session killed by an
    administrator mid-capture: the capture ends at the next page, incomplete, with the pages
    already read whole."""
    from conftest import run_node
    from forensics.capture.postgres import capture_postgres
    from forensics.capture.progress import Progress
    from forensics.stop import request_stop
    run_node("pg.js", "fill", pg_server.url(), "bulk", "5000")

    class StopAtFirstPage(Progress):
        def update(self, text, force=False):
            if "jobs 1,000 of" in text:
                request_stop()
            super().update(text, force)

    with pytest.warns(UserWarning, match="capture incomplete: interrupted"):
        snap = capture_postgres(pg_server.url(), schema="bulk", progress=StopAtFirstPage(False))
    assert not snap.complete and "interrupted" in snap.manifest["incomplete_reason"]
    assert len(snap.jobs) == 1000 and snap.jobs["name"].eq("row").all()

    class KilledAtFirstPage(Progress):
        def update(self, text, force=False):
            if "jobs 1,000 of" in text:
                pg_server.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'queue-forensics'")
            super().update(text, force)

    with pytest.warns(UserWarning, match="capture incomplete: lost the connection"):
        snap = capture_postgres(pg_server.url(), schema="bulk", progress=KilledAtFirstPage(False))
    assert not snap.complete and "lost the connection to PostgreSQL" in snap.manifest["incomplete_reason"]
    assert len(snap.jobs) == 1000
    complete = capture_postgres(pg_server.url(), schema="bulk")
    assert complete.complete and len(complete.jobs) == 5000 and int(complete.queues["n_wait"].iloc[0]) == 5000


def test_a_series_of_postgres_captures(pg_server, pg_incident, tmp_path):
    """`--postgres URL --every S --count N`: each tick one consistent capture of that schema (not
    of a Redis on the default URL), on schedule; a wrong schema fails the first tick, exit 2."""
    out = tmp_path / "series"
    res = forensics_cli("capture", "--postgres", pg_server.url(), "--schema", "storm", "--every", "1.5",
                        "--count", "2", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    series = forensics.load_series(out)
    assert len(series) == 2 and series.complete
    assert [s.manifest.get("backend") for s in series] == ["postgres", "postgres"]
    assert {q for s in series for q in s.queues["prefix"]} == {"storm"}
    assert all(s.row_count("jobs") == 60 and s.events["event"].eq("delayed").sum() > 0 for s in series)  # retries
    assert (series.captured_at[1] - series.captured_at[0]).total_seconds() >= 1.4
    res = forensics_cli("capture", "--postgres", pg_server.url(), "--schema", "nope", "--every", "1",
                        "--count", "2", "--out", str(tmp_path / "none"))
    assert res.returncode == 2 and "schema 'nope' not found" in res.stderr
