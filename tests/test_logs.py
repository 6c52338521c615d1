"""Worker logs: real pino and winston output of real workers, and files gone wrong.

The logs come from tests/node/logging.js (conftest.worker_logs): pino workers that leak
memory or lose their lock, winston workers (JSON and printf text) whose jobs fail."""
from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

import forensics
from forensics.fingerprint import fingerprint
from forensics.logs import LOG_COLUMNS, describe

from conftest import forensics_cli


def test_pino_memory_lines_become_columns(worker_logs):
    prefix, path = worker_logs("leak")
    logs = forensics.read_logs(path)
    assert list(logs.columns[:len(LOG_COLUMNS)]) == LOG_COLUMNS
    assert len(logs) == 30 and logs.attrs["unparsed"] == 0 and logs.attrs["lines"] == 30
    assert set(logs["level"]) == {"info"} and set(logs["format"]) == {"json"}
    now = pd.Timestamp.now(tz="UTC")
    assert ((now - logs["time"]) < pd.Timedelta(minutes=30)).all()          # pino ms epoch, read as UTC
    assert logs["time"].is_monotonic_increasing
    assert sorted(logs["job_id"], key=int) == [str(i) for i in range(1, 31)]
    assert set(logs["queue"]) == {"images"} and logs["worker"].str.startswith("worker-a/").all()
    assert logs["heap_used_bytes"].notna().all() and logs["rss_bytes"].notna().all()
    assert logs["heap_used_bytes"].iloc[-1] > logs["heap_used_bytes"].iloc[0] + 100e6   # it leaks


@pytest.mark.parametrize("other", ["winston-text", "winston-simple"])
def test_winston_json_and_text_read_the_same(worker_logs, other):
    _, js = worker_logs("winston-json", "bull")
    _, txt = worker_logs(other, "bull")
    a, b = forensics.read_logs(js), forensics.read_logs(txt)
    assert len(a) == len(b) == 33 and a.attrs["unparsed"] == b.attrs["unparsed"] == 0
    assert set(a["format"]) == {"json"} and set(b["format"]) == {"text"}
    assert set(a["level"]) == set(b["level"]) == {"error"}                   # winston's string levels
    assert a["time"].notna().all() and b["time"].notna().all()               # ISO timestamps
    assert sorted(a["job_id"], key=int) == sorted(b["job_id"], key=int) == [str(i) for i in range(1, 34)]
    assert a["fingerprint"].value_counts().to_dict() == b["fingerprint"].value_counts().to_dict()


def test_log_errors_share_fingerprints_with_failed_reasons(redis_server, worker_logs):
    prefix, path = worker_logs("winston-text", "bull")
    snap = forensics.capture(redis_server.url(0), prefix=prefix)
    logs = forensics.join_logs(forensics.read_logs(path), snap)
    assert logs["queue"].eq("jobs").all() and logs["prefix"].eq(prefix).all()    # joined by "Job 12" alone
    assert logs["job_state"].eq("failed").all()
    jobs = snap.jobs.set_index("job_id")
    for r in logs.itertuples():
        assert r.fingerprint == fingerprint(jobs.loc[r.job_id, "failed_reason"])  # one error reads as one thing
    assert {"upstream <n> for user <id>", "Missing process handler for job type export"} == set(logs["fingerprint"])


def test_ambiguous_job_ids_are_not_guessed(redis_server, worker_logs, scenario):
    """Job "3" can exist in many queues: a record naming no queue joins only a unique id."""
    prefix, path = worker_logs("winston-text", "bull")
    other, _ = scenario("bull")
    snap = forensics.capture(redis_server.url(0), prefix=[prefix, other])
    logs = forensics.join_logs(forensics.read_logs(path), snap)
    ids = snap.jobs.groupby("job_id", observed=True).size()
    shared = logs["job_id"].map(ids) > 1
    assert shared.any() and (~shared).any()
    assert logs.loc[shared, "queue"].isna().all()                       # not guessed
    assert logs.loc[~shared, "prefix"].eq(prefix).all()                 # unique: joined, rightly


GARBAGE = [
    b"\x00\x01\x02\xff\xfe binary junk",
    b'{"level":30,"time":17',                                 # truncated JSON
    b"[1, 2, 3]",                                              # JSON, but not a record
    b"",                                                       # blank lines are not errors
    b"no timestamp, no json",
    b"\xc3\x28 invalid utf-8",
]


def _mixed(worker_logs) -> bytes:
    _, pino = worker_logs("locklost", "bullmq5")
    _, text = worker_logs("winston-text", "bullmq5")
    out = []
    for a, b in zip(pino.read_bytes().splitlines(), text.read_bytes().splitlines()[:3]):
        out += [a, b]
    out.insert(2, b"    at Worker.processJob (worker.js:1:1)")   # a stack frame below a text line
    return b"\n".join(out[:4] + GARBAGE + out[4:]) + b"\n"


def test_malformed_and_mixed_lines_are_counted_not_fatal(worker_logs, tmp_path):
    raw = _mixed(worker_logs)
    plain = tmp_path / "mixed.log"
    plain.write_bytes(raw)
    gz = tmp_path / "mixed.log.gz"
    gz.write_bytes(gzip.compress(raw))
    a, b = forensics.read_logs(plain), forensics.read_logs(gz)
    assert a.attrs["unparsed"] == b.attrs["unparsed"] == 5           # blank line not counted
    assert len(a) == len(b) == 6 and set(a["format"]) == {"json", "text"}
    assert a.drop(columns="source").equals(b.drop(columns="source"))
    assert any("binary junk" in x for x in a.attrs["unparsed_examples"])
    text_rows = a[a["format"] == "text"]
    assert text_rows["stack"].fillna("").str.contains("at Worker.processJob").sum() == 1
    assert "could not be read" in describe(a)
    lock = a[a["message"].str.contains("worker error", na=False)]
    assert len(lock) and lock["error"].str.contains("lock for job 1").all() and lock["job_id"].eq("1").all()


def test_truncated_gzip_keeps_what_was_read(worker_logs, tmp_path):
    _, path = worker_logs("leak")
    data = gzip.compress(path.read_bytes())
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(data[: len(data) // 2])
    logs = forensics.read_logs(cut)
    assert 0 < len(logs) < 30 and logs.attrs["unparsed"] >= 1
    assert "stopped reading" in logs.attrs["unparsed_examples"][-1]


def test_cli_reads_logs_from_stdin_and_files(redis_server, worker_logs, tmp_path):
    prefix, path = worker_logs("locklost", "bullmq5")
    snap = forensics.capture(redis_server.url(0), prefix=prefix).save(tmp_path / "snap")
    res = forensics_cli("diagnose", snap, "--format", "json", "--logs", "-", input_bytes=path.read_bytes())
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    lines = len(path.read_text().splitlines())
    assert doc["snapshot"]["logs"]["records"] == lines and doc["snapshot"]["logs"]["sources"] == ["-"]
    assert "lock-lost" in {f["id"] for f in doc["findings"]}
    res = forensics_cli("diagnose", snap, "--logs", str(tmp_path / "nope.log"))
    assert res.returncode == 2 and res.stderr.strip() == f"forensics: log file {tmp_path / 'nope.log'} not found"
    twice = forensics_cli("diagnose", snap, "--logs", str(path), "--logs", str(path))
    assert twice.returncode == 0 and f"logs: {lines} records" in twice.stdout   # the same file counts once


def test_a_file_of_only_garbage_is_still_not_an_error(tmp_path):
    bad = tmp_path / "bad.log"
    bad.write_bytes(b"\n".join(GARBAGE))
    logs = forensics.read_logs(bad)
    assert len(logs) == 0 and logs.attrs["unparsed"] == 5
    with pytest.raises(forensics.UsageError, match="is not a file"):
        forensics.read_logs(tmp_path)


def test_memory_figures_in_the_shapes_node_code_logs_them(tmp_path):
    """process.memoryUsage() spread flat, nested, in MB fields, or written into the message."""
    mib = 1024 * 1024
    path = tmp_path / "mem.log"
    path.write_text("\n".join([
        '{"level":30,"time":1795883721310,"pid":1,"rss":123,"heapUsed":45,"heapTotal":67,"msg":"flat"}',
        '{"level":30,"time":1795883721311,"pid":1,"mem":{"rss":2000,"heapUsed":1000},"msg":"nested"}',
        '{"level":30,"time":1795883721312,"pid":1,"heapUsedMB":312.5,"rssMB":500,"msg":"in MB fields"}',
        '{"level":30,"time":1795883721313,"pid":1,"msg":"memory: rss=512MB heapUsed=300MB"}',
        "2026-11-28T16:00:00Z info: memory usage rss 512 MB, heap used 300 MB",
    ]) + "\n")
    logs = forensics.read_logs(path).set_index("message")
    assert logs.loc["flat", ["rss_bytes", "heap_used_bytes", "heap_total_bytes"]].tolist() == [123, 45, 67]
    assert logs.loc["nested", ["rss_bytes", "heap_used_bytes"]].tolist() == [2000, 1000]
    assert logs.loc["in MB fields", ["rss_bytes", "heap_used_bytes"]].tolist() == [500 * mib, 312.5 * mib]
    for text in ("memory: rss=512MB heapUsed=300MB", "memory usage rss 512 MB, heap used 300 MB"):
        assert logs.loc[text, ["rss_bytes", "heap_used_bytes"]].tolist() == [512 * mib, 300 * mib]


def test_a_leak_restarting_under_the_same_name_is_still_a_leak(redis_server, tmp_path):
    """A container restarts with the same hostname and pid: its memory draws a sawtooth."""
    from conftest import run_node
    log = tmp_path / "pod.log"
    for _ in range(2):  # the leaking worker runs, is replaced, leaks again
        run_node("logging.js", "leak", "bullmq5", redis_server.url(0), "restarts", "images", str(log), "20",
                 env={"LOG_PID": "1"})
    logs = forensics.read_logs(log)
    assert len(logs) == 40 and logs["worker"].unique().tolist() == ["worker-a/1"]
    d = forensics.diagnose(forensics.capture(redis_server.url(0), prefix="restarts"), logs=logs)
    f = d.findings.set_index("id").loc["worker-memory-growth"]
    assert f["evidence"]["restarts"] == 1 and f["evidence"]["points"] == 20
    assert "RSS dropped 1 time(s): restarts or OOM kills" in f["title"] and f["queue"] == "images"


def test_job_ids_and_queues_in_the_shapes_loggers_write_them(tmp_path):
    path = tmp_path / "ids.log"
    path.write_text("\n".join([
        '{"level":30,"time":1795883721310,"jobId":"11","queue":"mail","msg":"a"}',
        '{"level":"info","timestamp":"2026-11-28T16:00:00Z","job_id":12,"queueName":"mail","message":"b"}',
        '{"level":30,"time":1795883721312,"job":{"id":"13","queueName":"mail","name":"x"},"msg":"c"}',
        '{"level":30,"time":1795883721313,"job":14,"msg":"d"}',
        '{"level":50,"time":1795883721314,"msg":"Job #15 failed: boom"}',
        "2026-11-28 16:00:01,250 ERROR [worker] job 16 in queue mail failed with Error: boom",
    ]) + "\n")
    logs = forensics.read_logs(path).sort_values("line_no").reset_index(drop=True)  # read_logs sorts by time
    assert logs["job_id"].tolist() == ["11", "12", "13", "14", "15", "16"]
    assert logs["queue"].tolist()[:3] == ["mail"] * 3 and logs["queue"].iloc[5] == "mail"
    assert logs["error"].iloc[4] == "boom" and logs["fingerprint"].iloc[4] == logs["fingerprint"].iloc[5]


def test_other_text_layouts(tmp_path):
    """pino-pretty with a full timestamp, and Python's logging (a BullMQ Python worker)."""
    path = tmp_path / "text.log"
    path.write_text("\n".join([
        "[2026-11-28 16:00:00.123 +0000] ERROR (1234 on host): job 5 failed: boom",
        "2026-11-28 16:00:01,250 - worker - ERROR - Job 6 failed: upstream 503 for user u1",
        "2026-11-28 16:00:02,000 - worker - INFO - job 7 completed",
    ]) + "\n")
    logs = forensics.read_logs(path)
    assert logs.attrs["unparsed"] == 0 and logs["level"].tolist() == ["error", "error", "info"]
    assert logs["time"].iloc[0] == pd.Timestamp("2026-11-28 16:00:00.123", tz="UTC")
    assert logs["error"].tolist()[:2] == ["boom", "upstream 503 for user u1"]
    assert logs["job_id"].tolist() == ["5", "6", "7"]
