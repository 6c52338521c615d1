"""Big snapshots: SQL with forensics.query (DuckDB), the Parquet read straight by DuckDB and
Polars, a throttled capture, and figures that stay small however many jobs they show.

Speed itself is measured by bench/scale_bench.py, never asserted here."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import duckdb
import polars as pl
import pytest

import forensics
from forensics import plots
from forensics.errors import UsageError

from conftest import forensics_cli, run_node


@pytest.fixture(scope="module")
def saved(captured, tmp_path_factory):
    """The BullMQ 5 scenario's snapshot, saved."""
    snap, _ = captured("bullmq5")
    return Path(snap.save(tmp_path_factory.mktemp("scale") / "snap"))


# ---- forensics.query ----------------------------------------------------------------------

def test_query_a_snapshot_answers_what_pandas_answers(saved, captured):
    snap = forensics.load(saved)
    want = snap.jobs["state"].astype("str").value_counts().sort_index()
    got = forensics.query(saved, "SELECT state, count(*) AS n FROM jobs GROUP BY state ORDER BY state")
    assert dict(zip(got["state"], got["n"])) == want.to_dict() and want.sum() > 10
    # the same from the Snapshot object, and from one still in memory (never saved)
    assert forensics.query(snap, "SELECT count(*) AS n FROM jobs")["n"][0] == want.sum()
    live, _ = captured("bullmq5")
    assert forensics.query(live, "SELECT count(*) AS n FROM jobs")["n"][0] == live.row_count("jobs")
    # a join a user asks during an incident: failed jobs with their stored payload
    failed = forensics.query(saved, """
        SELECT j.queue, j.job_id, j.failed_reason, length(p.data) AS data_len
        FROM jobs j JOIN payloads p USING (prefix, queue, job_id)
        WHERE j.state = 'failed' ORDER BY j.job_id""")
    assert len(failed) == (snap.jobs["state"] == "failed").sum() > 0
    assert failed["failed_reason"].notna().all() and (failed["data_len"] > 0).all()
    # parameters
    q = forensics.query(saved, "SELECT count(*) AS n FROM jobs WHERE state = ?", ["failed"])
    assert q["n"][0] == len(failed)


def test_query_a_series_adds_snapshot_and_captured_at(growing_series):
    folder, _, _ = growing_series
    series = forensics.load_series(folder)
    per = forensics.query(folder, "SELECT snapshot, captured_at, count(*) AS jobs FROM jobs GROUP BY ALL "
                                  "ORDER BY captured_at")
    assert list(per["jobs"]) == [s.row_count("jobs") for s in series]
    assert list(per["captured_at"]) == list(series.captured_at)
    members = forensics.query(series, "SELECT * FROM snapshots")
    assert list(members["snapshot"]) == [Path(s.path).name for s in series]
    assert members["complete"].all()
    # the redis table keeps one captured_at (its own), and its memory figures match pandas
    mem = forensics.query(folder, "SELECT captured_at, used_memory FROM redis ORDER BY captured_at")
    assert list(mem["used_memory"]) == list(series.redis["used_memory"])
    # the growth question across captures, in one statement
    growth = forensics.query(folder, """
        SELECT max(used_memory) - min(used_memory) AS grew FROM redis""")["grew"][0]
    assert growth > 0


def test_query_refuses_bad_sql_in_one_line(saved, tmp_path):
    with pytest.raises(UsageError, match="query failed: .*no_such_column"):
        forensics.query(saved, "SELECT no_such_column FROM jobs")
    res = forensics_cli("query", str(saved), "SELEC nothing")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "query failed" in res.stderr
    res = forensics_cli("query", str(tmp_path / "nope"), "SELECT 1")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_cli_query_prints_table_csv_and_json(saved):
    res = forensics_cli("query", str(saved), "SELECT state, count(*) AS n FROM jobs GROUP BY 1 ORDER BY 1")
    assert res.returncode == 0 and res.stdout.split()[:2] == ["state", "n"]
    csv = forensics_cli("query", str(saved), "SELECT job_id FROM jobs", "--format", "csv")
    assert csv.stdout.splitlines()[0] == "job_id"
    assert len(csv.stdout.splitlines()) - 1 == forensics.load(saved).row_count("jobs")
    js = forensics_cli("query", str(saved), "SELECT state, count(*) AS n FROM jobs GROUP BY 1", "--format", "json")
    rows = [json.loads(line) for line in js.stdout.splitlines()]
    assert sum(r["n"] for r in rows) == forensics.load(saved).row_count("jobs")
    many = forensics_cli("query", str(saved), "SELECT * FROM range(1000)")
    assert "1,000 rows; the first 200 shown" in many.stderr


# ---- the Parquet files, read by other engines -----------------------------------------------

def test_duckdb_and_polars_read_a_snapshot_directly(saved):
    snap = forensics.load(saved)
    jobs = str(saved / "jobs.parquet")
    # DuckDB, no forensics involved: the documented types
    types = {row[0]: row[1] for row in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{jobs}')").fetchall()}
    assert types["added_at"] == "TIMESTAMP WITH TIME ZONE" and types["data_bytes"] == "BIGINT"
    assert types["attempts_made"] == "INTEGER" and types["lock_present"] == "BOOLEAN"
    assert duckdb.sql(f"SELECT count(*) FROM '{jobs}'").fetchall()[0][0] == snap.row_count("jobs")
    # Polars: eager and lazy (only the columns asked for are read)
    df = pl.read_parquet(jobs)
    assert df.height == snap.row_count("jobs")
    assert df.schema["added_at"] == pl.Datetime("ms", "UTC") and df.schema["state"] in (pl.Categorical, pl.String)
    failed = (pl.scan_parquet(jobs).filter(pl.col("state").cast(pl.String) == "failed")
              .select(pl.len()).collect().item())
    assert failed == (snap.jobs["state"] == "failed").sum()


def test_a_folder_of_captures_reads_as_one_table(growing_series):
    """What Spark or Trino do with a folder of snapshots: one glob, one schema."""
    folder, _, _ = growing_series
    series = forensics.load_series(folder)
    for table in ("jobs", "redis", "queues", "events"):
        schemas = {str(pl.read_parquet_schema(f)) for f in sorted(Path(folder).glob(f"*/{table}.parquet"))}
        assert len(schemas) == 1, f"{table}: the captures disagree on the schema"
    lazy = pl.scan_parquet(str(Path(folder) / "*" / "jobs.parquet"), include_file_paths="file")
    per = lazy.group_by("file").agg(pl.len()).collect()
    assert sorted(per["len"].to_list()) == sorted(s.row_count("jobs") for s in series)
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*/jobs.parquet')").fetchall()[0][0] == \
        sum(s.row_count("jobs") for s in series)
    # no column of Parquet's "null" type, which Spark cannot read
    nulls = duckdb.sql(f"SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet('{folder}/*/redis.parquet')) "
                       "WHERE column_type = '\"NULL\"'").fetchall()
    assert nulls == []


# ---- throttle ------------------------------------------------------------------------------

def test_max_ops_per_sec_paces_the_capture_and_says_how_long(redis_server, scenario, tmp_path):
    prefix, _ = scenario("bullmq5")
    out = tmp_path / "slow"
    rate = 1500
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix, "--out", str(out),
                        "--max-ops-per-sec", str(rate))
    assert res.returncode == 0, res.stderr
    assert f"throttled to {rate:,} commands/s (--max-ops-per-sec): about" in res.stderr  # shown without a tty
    m = json.loads((out / "manifest.json").read_text())
    assert m["options"]["max_ops_per_sec"] == rate
    sent = sum(m["commands"].values())
    assert sent > rate / 4
    # command k waits for start + k / rate: the pace can only be slower than asked (one
    # pipeline of rate/20 commands may go before the first wait)
    assert sent - rate / 20 <= m["duration_s"] * rate
    plain = forensics.load(forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix, "--out",
                                         str(tmp_path / "fast")).stdout.split()[-1])
    assert plain.row_count("jobs") == forensics.load(out).row_count("jobs")
    bad = forensics_cli("capture", "--redis", redis_server.url(0), "--max-ops-per-sec", "0")
    assert bad.returncode == 2 and "--max-ops-per-sec must be a positive number" in bad.stderr


# ---- figures of many jobs ------------------------------------------------------------------

@pytest.fixture(scope="module")
def many_jobs(redis_server):
    """8,000 real BullMQ 5 jobs (addBulk), beyond the point where figures summarize."""
    run_node("fill.js", "bullmq5", redis_server.url(0), "many", "bulk", "8000", "200")
    return forensics.capture(redis_server.url(0), prefix="many")


def test_a_stream_of_many_small_entries_is_kept_whole_and_in_order(many_jobs, redis_server):
    """addBulk's events (about 10,000 small entries: BullMQ trims the stream there) are read in
    windows of 1,000 and made into tables several windows at a time: every entry is kept once,
    in stream order, with its event, job id and other fields."""
    want = redis_server.client().xrange("many:bulk:events")
    assert len(want) > 5 * 1000 and many_jobs.manifest["commands"]["XRANGE"] > 5
    got = many_jobs.events
    assert got["stream_id"].tolist() == [sid for sid, _ in want]
    assert got["event"].tolist() == [f["event"] for _, f in want]
    assert got["job_id"].tolist() == [f.get("jobId") for _, f in want]
    rest = [{k: v for k, v in f.items() if k not in ("event", "jobId")} for _, f in want]
    assert [json.loads(x) if isinstance(x, str) else {} for x in got["fields"]] == rest
    assert got["time"].is_monotonic_increasing


def test_a_stop_while_small_events_are_read_keeps_every_entry_read(many_jobs, redis_server):
    """A stop (Ctrl-C, SIGTERM) asked once three windows of the stream are in, before they
    were made into a table: the capture ends there, incomplete, and keeps those 3,000 entries."""
    from forensics.capture.progress import Progress

    class StopAfterThreeWindows(Progress):
        def update(self, text, **kw):
            if "events 3,000 of" in text:
                os.kill(os.getpid(), signal.SIGTERM)   # the capture's own handler takes it
            super().update(text, **kw)

    with pytest.warns(UserWarning, match="capture incomplete: interrupted"):
        snap = forensics.capture(redis_server.url(0), prefix="many", progress=StopAfterThreeWindows(False))
    assert not snap.complete
    want = redis_server.client().xrange("many:bulk:events", count=3000)
    assert snap.events["stream_id"].tolist() == [sid for sid, _ in want]


def test_figures_of_many_jobs_are_summaries_and_say_so(many_jobs, captured):
    n = many_jobs.row_count("jobs")
    assert n == 8000 and n > plots.POINTS_LIMIT
    fig = plots.payload_sizes(many_jobs)
    assert "boxes from the quartiles of all of them" in fig.layout.title.text
    box = fig.data[0]
    sizes = many_jobs.jobs["data_bytes"].astype("float64")
    assert box.median[0] == sizes.median() and box.q1[0] == sizes.quantile(0.25)
    points = sum(len(t.x) for t in fig.data if t.x is not None)
    assert points <= plots.OUTLIERS_SHOWN * many_jobs.jobs["name"].nunique()
    att = plots.attempts_histogram(many_jobs)
    assert sum(sum(t.y) for t in att.data) == n and sum(len(t.x) for t in att.data) < 20
    # a figure of 8,000 jobs weighs about what one of a few dozen does
    small, _ = captured("bullmq5")
    for f in ("payload_sizes", "attempts_histogram"):
        big_html = len(plots.FIGURES[f](many_jobs).to_json())
        assert big_html < 5 * len(plots.FIGURES[f](small).to_json()) + 20_000, f
    # below the limit, every job is drawn as before
    assert "quartiles" not in plots.payload_sizes(small).layout.title.text
