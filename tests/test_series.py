"""Series of captures: the CLI writes them, load_series stacks them, diagnose reads trends.

The growing series is real: tests/node/produce.js adds BullMQ jobs at 300/s while a slow
worker drains 50/s, into a Redis with maxmemory 256 MB (conftest.growing_series)."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import pytest

import forensics
from forensics.series import SERIES_FILE

from conftest import NODE_DIR, RedisServer, forensics_cli, forensics_exe, run_node


def test_cli_writes_a_series_folder(growing_series):
    out, res, _ = growing_series
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out)          # the path, last
    members = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(members) == 5 and members[0].startswith("0001-")
    meta = json.loads((out / SERIES_FILE).read_text())
    assert meta["snapshots"] == members and meta["stopped"]["reason"] == "done" and meta["every_s"] == 1
    assert res.stderr.count("series: [") == 5 and "used_memory" in res.stderr   # one progress line per tick


def test_load_series_stacks_tables_with_captured_at(growing_series):
    series = forensics.load_series(growing_series[0])
    assert len(series) == 5 and series.complete
    times = list(series.redis["captured_at"])
    assert times == sorted(times) and len(set(times)) == 5
    assert 3.5 <= series.span.total_seconds() <= 8                  # every 1 s, 5 ticks
    q = series.queues[series.queues["queue"] == "uploads"]
    assert list(q["captured_at"]) == times
    assert q["n_wait"].is_monotonic_increasing and q["n_wait"].iloc[-1] > q["n_wait"].iloc[0]
    jobs = series.jobs
    assert jobs.columns[0] == "captured_at" and jobs["captured_at"].nunique() == 5
    assert len(jobs) == sum(s.row_count("jobs") for s in series)
    assert series.latest.captured_at == times[-1]


def test_growth_findings_have_a_sensible_projection(growing_series):
    out, _, _ = growing_series
    series = forensics.load_series(out)
    d = forensics.diagnose(series)
    f = d.findings.set_index("id")
    mem = f.loc["redis-memory-growth"]
    ev = mem["evidence"]
    r = series.redis
    observed = (r["used_memory"].iloc[-1] - r["used_memory"].iloc[0]) / series.span.total_seconds()
    expected = (256 * 1024 * 1024 - r["used_memory"].iloc[-1]) / observed
    assert 0.5 * expected <= ev["seconds_to_maxmemory"] <= 2 * expected, (ev, expected)
    assert ev["maxmemory"] == 256 * 1024 * 1024 and ev["points"] == 5 and ev["r2"] >= 0.5
    assert "maxmemory 256.0 MB reached in ~" in mem["title"]
    assert mem["severity"] == "critical"                            # full within the hour
    assert "grow:uploads" in ev["growing_queues"]
    bl = f.loc["backlog-growth"]
    assert bl["queue"] == "uploads" and bl["count"] >= 100
    b = bl["evidence"]
    assert 300 * 60 * 0.6 <= b["arrivals_per_min"] <= 300 * 60 * 1.4, b      # the producer's rate
    assert b["drain_per_min"] < b["arrivals_per_min"] and b["last_backlog"] > b["first_backlog"]
    assert b["seconds_to_drain_if_producers_stop"] > 0
    assert d.snapshot["series"]["snapshots"] == 5
    verdict = d.checklist.set_index("item").loc["memory-leak"]
    assert verdict["verdict"] == "fail" and "redis-memory-growth" in verdict["evidence"]


def test_cli_diagnose_and_summary_take_a_series_folder(growing_series):
    out = growing_series[0]
    res = forensics_cli("diagnose", str(out), "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {"redis-memory-growth", "backlog-growth"} <= {x["id"] for x in doc["findings"]}
    assert doc["snapshot"]["series"]["snapshots"] == 5
    table = forensics_cli("diagnose", str(out)).stdout
    assert "series of 5 snapshots" in table.splitlines()[1]
    summary = forensics_cli("summary", str(out))
    assert summary.returncode == 0 and "5 snapshots" in summary.stdout
    with pytest.raises(forensics.SnapshotError, match="series folder .*load_series"):
        forensics.load(out)


def test_quiet_redis_grows_nothing(redis_server, tmp_path):
    run_node("fill.js", "bullmq5", redis_server.url(0), "quiet", "jobs", "50")
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", "quiet", "--every", "0.3",
                        "--count", "4", "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0 and not res.stderr.count("series: [")   # --quiet: no tick lines
    d = forensics.diagnose(tmp_path / "s")
    assert not d.findings["id"].isin(["redis-memory-growth", "backlog-growth"]).any(), d.to_table()
    verdict = d.checklist.set_index("item").loc["memory-leak", "verdict"]
    assert verdict == "pass"                                          # flat, and it says so


def test_ctrl_c_stops_a_series_and_keeps_what_it_has(redis_server, tmp_path):
    out = tmp_path / "watch"
    proc = subprocess.Popen([forensics_exe(), "capture", "--redis", redis_server.url(0), "--prefix", "quiet", "--every", "0.3",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while len([p for p in out.glob("0*") if (p / "manifest.json").exists()]) < 2:
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr                               # no --count: Ctrl-C is how it ends
    assert stdout.strip().splitlines()[-1] == str(out)
    assert "stopped: interrupted (Ctrl-C)" in stderr and "Traceback" not in stderr
    series = forensics.load_series(out)
    assert len(series) >= 2 and series.complete                       # a cut tick is not kept
    meta = json.loads((out / SERIES_FILE).read_text())
    assert meta["stopped"]["reason"].startswith("interrupted") and meta["snapshots"] == \
        sorted(p.name for p in out.iterdir() if p.is_dir())


def test_redis_going_away_leaves_gaps_not_a_crash(tmp_path):
    srv = RedisServer(tmp_path)
    try:
        run_node("fill.js", "bullmq5", srv.url(), "bull", "jobs", "10")
        out = tmp_path / "watch"
        proc = subprocess.Popen([forensics_exe(), "capture", "--redis", srv.url(), "--every", "0.4", "--count", "6",
                                 "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while len(list(out.glob("0*/manifest.json"))) < 2:
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.02)
        srv.stop()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        srv.stop()
    assert proc.returncode == 4, stderr                               # fewer snapshots than asked
    assert "gap:" in stderr and "Traceback" not in stderr
    meta = json.loads((out / SERIES_FILE).read_text())
    assert meta["gaps"] and len(meta["snapshots"]) + len(meta["gaps"]) >= 5
    assert len(forensics.load_series(out)) == len(meta["snapshots"]) >= 2


def test_a_damaged_member_is_skipped_with_a_warning(growing_series, tmp_path):
    copy = tmp_path / "watch"
    shutil.copytree(growing_series[0], copy)
    victim = sorted(p for p in copy.iterdir() if p.is_dir())[2]
    (victim / "jobs.parquet").write_bytes(b"not parquet at all")
    series = forensics.load_series(copy)
    assert len(series) == 4 and any(victim.name in w for w in series.warnings)
    d = forensics.diagnose(series)
    assert "redis-memory-growth" in set(d.findings["id"])             # the other four still tell
    res = forensics_cli("diagnose", str(copy))
    assert res.returncode == 0 and f"skipped {victim.name}" in res.stdout


def test_series_usage_errors(redis_server, tmp_path):
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--every", "0", "--count", "2",
                        "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "--every must be a positive" in res.stderr
    res = forensics_cli("capture", "--redis", "redis://127.0.0.1:1/0", "--every", "1", "--count", "2",
                        "--out", str(tmp_path / "y"))
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 2   # the banner, then one error line
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--every", "1", "--count", "2",
                        "--out", str(tmp_path / "junk"))
    assert res.returncode == 2 and "not a series folder" in res.stderr
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(forensics.SnapshotError, match="no readable snapshot"):
        forensics.load_series(empty)


def test_logs_attached_at_capture_travel_with_the_snapshot(redis_server, worker_logs, tmp_path):
    prefix, log = worker_logs("leak")
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix, "--logs", str(log),
                        "--out", str(tmp_path / "snap"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "snap" / "logs.parquet").exists() and "30 log records" in res.stderr
    snap = forensics.load(tmp_path / "snap")
    assert len(snap.logs) == 30 and snap.logs.attrs["unparsed"] == 0
    d = forensics.diagnose(snap)                                       # no --logs needed any more
    assert "worker-memory-growth" in set(d.findings["id"])


def test_logs_attached_to_a_series_are_kept_once(redis_server, worker_logs, tmp_path):
    prefix, log = worker_logs("leak")
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix, "--logs", str(log),
                        "--every", "0.3", "--count", "3", "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr
    members = sorted(p for p in (tmp_path / "s").iterdir() if p.is_dir())
    assert [(m / "logs.parquet").exists() for m in members] == [True, False, False]
    d = forensics.diagnose(tmp_path / "s")
    assert d.snapshot["logs"]["records"] == 30 and "worker-memory-growth" in set(d.findings["id"])


def test_trends_skip_a_capture_that_was_cut_short(growing_series, tmp_path):
    """A member saved incomplete (Redis lost mid-read) holds lower bounds: trends leave it out."""
    copy = tmp_path / "watch"
    shutil.copytree(growing_series[0], copy)
    victim = sorted(p for p in copy.iterdir() if p.is_dir())[3]
    manifest = json.loads((victim / "manifest.json").read_text())
    manifest.update(complete=False, incomplete_reason="lost the connection to Redis: test")
    (victim / "manifest.json").write_text(json.dumps(manifest))
    series = forensics.load_series(copy)
    assert len(series) == 5 and not series.complete and len(series.for_trends) == 4
    f = forensics.diagnose(series).findings.set_index("id")
    assert f.loc["redis-memory-growth", "evidence"]["points"] == 4
    assert f.loc["backlog-growth", "evidence"]["points"] == 4


def test_custom_job_ids_still_count_as_arrivals(tmp_path):
    """Bull and BullMQ bump the queue's id counter on every add, custom jobId or not."""
    srv = RedisServer(tmp_path)
    proc = subprocess.Popen(["node", str(NODE_DIR / "produce.js"), "bullmq5", srv.url(), "ids", "uploads",
                             "200", "100", "30", "0", "ids"], cwd=NODE_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "producing"
        from forensics.series import capture_series
        series, _ = capture_series(srv.url(), prefix="ids", every=0.5, count=4, out=tmp_path / "s", progress=False)
    finally:
        proc.kill()
        proc.wait()
        srv.stop()
    assert series.latest.jobs["job_id"].str.startswith("upload-").all()
    f = forensics.diagnose(series).findings.set_index("id").loc["backlog-growth"]
    ev = f["evidence"]
    assert 200 * 60 * 0.6 <= ev["arrivals_per_min"] <= 200 * 60 * 1.4, ev
    assert ev["drain_per_min"] < 0.1 * ev["arrivals_per_min"]            # no worker: (almost) nothing drains
    assert f["severity"] == "critical"                                    # nothing progresses now
    assert [r["id"] for r in f["explained_by"]] == ["no-workers"]         # and why


def test_a_series_can_be_continued(redis_server, tmp_path):
    out = tmp_path / "watch"
    for _ in range(2):
        res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", "quiet", "--every", "0.2",
                            "--count", "2", "--out", str(out), "--quiet")
        assert res.returncode == 0, res.stderr
    meta = json.loads((out / SERIES_FILE).read_text())
    assert [m[:4] for m in meta["snapshots"]] == ["0001", "0002", "0003", "0004"]
    assert len(forensics.load_series(out)) == 4


def _series_of(redis_server, prefix: str, fills: list[int]) -> "forensics.Series":
    """Captures of one queue with ``fills[i]`` real BullMQ jobs added before capture i."""
    from forensics.series import Series
    snaps = []
    for n in fills:
        if n:
            run_node("fill.js", "bullmq5", redis_server.url(0), prefix, "steps", str(n), "2000")
        snaps.append(forensics.capture(redis_server.url(0), prefix=prefix, progress=False))
        time.sleep(0.05)
    return Series(snaps)


def test_growth_that_levelled_off_is_not_growth(redis_server):
    """A backlog that jumped once and then held (one bulk add, nothing since) rose and
    levelled off: neither the backlog nor Redis memory is growing. A least-squares line
    through it (old rule) called both growth; the same adds spread over the captures are."""
    d = forensics.diagnose(_series_of(redis_server, "step-once", [10, 600, 0, 0, 0]))
    assert not d.findings["id"].isin(["backlog-growth", "redis-memory-growth"]).any(), d.to_table()
    steady = forensics.diagnose(_series_of(redis_server, "step-steady", [10, 150, 150, 150, 150]))
    f = steady.findings[steady.findings["id"] == "backlog-growth"]
    assert len(f) == 1 and f.iloc[0]["evidence"]["tau"] >= 0.9, steady.to_table()
