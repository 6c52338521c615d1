"""Bad input gives one clear line and the DESIGN exit code, and keeps what was read."""
from __future__ import annotations

import threading
import time

import pandas as pd
import redis

import forensics
from forensics.capture import Progress, _Capture
from forensics.capture.redis.helper import CHUNK_ROWS

from conftest import forensics_cli, free_port, run_node


def _one_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_unreachable_redis_exit_3(tmp_path):
    port = free_port()
    res = forensics_cli("capture", "--redis", f"redis://127.0.0.1:{port}/0", "--out", str(tmp_path / "s"))
    assert res.returncode == 3
    line = _one_line(res.stderr)
    assert f"cannot connect to Redis at redis://127.0.0.1:{port}/0" in line
    assert not (tmp_path / "s").exists()


def test_malformed_url_is_a_usage_error():
    res = forensics_cli("capture", "--redis", "http://nowhere", "--quiet")
    assert res.returncode == 2
    assert "bad Redis URL" in _one_line(res.stderr)


def test_wrong_and_missing_password_exit_3(private_redis):
    private_redis.client().config_set("requirepass", "right-pw")
    res = forensics_cli("capture", "--redis", private_redis.url(auth=":wrong-pw@"))
    assert res.returncode == 3
    line = _one_line(res.stderr)
    assert "refused the credentials" in line and "wrong-pw" not in line
    res = forensics_cli("capture", "--redis", private_redis.url())
    assert res.returncode == 3
    assert "password" in _one_line(res.stderr).lower()


def test_acl_user_without_a_needed_read_permission_exit_3(private_redis):
    run_node("fill.js", "bullmq5", private_redis.url(), "bull", "jobs", "5")
    private_redis.client().execute_command(
        "ACL", "SETUSER", "narrow", "on", ">pw", "~*", "+@connection", "+ping", "+scan", "+info")
    res = forensics_cli("capture", "--redis", private_redis.url(auth="narrow:pw@"), "--quiet")
    assert res.returncode == 3
    line = _one_line(res.stderr)
    assert "may not run TYPE" in line and "+@read" in line


def test_acl_without_admin_commands_still_captures_with_warnings(private_redis, tmp_path):
    run_node("fill.js", "bullmq5", private_redis.url(), "bull", "jobs", "7")
    private_redis.client().execute_command(
        "ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@read", "+@connection", "+ping")
    res = forensics_cli("capture", "--redis", private_redis.url(auth="reader:pw@"),
                        "--out", str(tmp_path / "s"))
    assert res.returncode == 0, res.stderr
    snap = forensics.load(tmp_path / "s")
    assert snap.complete and len(snap.jobs) == 7
    text = " ".join(snap.manifest["warnings"])
    assert "INFO refused" in text and "CONFIG GET refused" in text
    assert "warning:" in res.stderr


def test_foreign_keys_and_wrong_types_under_the_prefix(private_redis):
    run_node("fill.js", "bullmq5", private_redis.url(), "bull", "jobs", "4")
    c = private_redis.client()
    c.set("bull:settings", '{"theme":"dark"}')          # a user's own key under the prefix
    c.hset("bull:feature-flags", mapping={"x": "1"})
    c.set("bull:weird:wait", "not a list")                # looks like a queue key, wrong type
    snap = forensics.capture(private_redis.url(), prefix="bull")
    assert snap.complete
    assert list(snap.queues["queue"]) == ["jobs"] and len(snap.jobs) == 4
    assert snap.manifest["counts"]["foreign_keys"] == 3
    assert "bull:settings" in snap.manifest["foreign_key_samples"]
    assert any("bull:weird:wait is a string" in w for w in snap.manifest["warnings"])


def test_corrupted_job_hashes_are_flagged_not_fatal(private_redis):
    run_node("fill.js", "bullmq5", private_redis.url(), "bull", "jobs", "6")
    c = redis.Redis(port=private_redis.port)
    # Corrupt what the library wrote, the way a bad deploy or a hand edit would.
    c.hset("bull:jobs:1", "opts", "{not json")
    c.hset("bull:jobs:2", "data", b"\xff\xfe{\"n\":2}")
    c.hset("bull:jobs:3", "stacktrace", "not a json array")
    c.hset("bull:jobs:4", "timestamp", "yesterday")
    c.delete("bull:jobs:5")                               # evicted hash, id still listed
    c.lrem("bull:jobs:wait", 0, "6")                      # hash no state references
    snap = forensics.capture(private_redis.url(), prefix="bull")
    assert snap.complete
    j = snap.jobs.set_index("job_id")
    assert "opts:json" in j.loc["1", "decode_errors"]
    assert pd.isna(j.loc["1", "attempts_configured"])
    assert "data:utf8" in j.loc["2", "decode_errors"]
    assert "stacktrace:json" in j.loc["3", "decode_errors"]
    assert pd.isna(j.loc["4", "added_at"])
    assert j.loc["5", "state"] == "missing-hash"
    assert j.loc["6", "state"] == "orphan" and j.loc["6", "name"] == "bulk"
    q = snap.queues.iloc[0]
    assert q["n_missing_hash"] == 1 and q["n_orphan"] == 1 and q["n_wait"] == 4


def test_jobs_removed_between_scan_and_read_are_not_reported_as_damage(private_redis):
    """A worker with removeOnComplete finishes jobs after SCAN saw their hashes."""
    import asyncio
    from bullmq import Queue, Worker

    url = private_redis.url()

    async def add():
        q = Queue("churn", {"connection": url})
        for i in range(30):
            await q.add("t", {"i": i}, {"removeOnComplete": True})
        await q.close()

    async def drain():
        q = Queue("churn", {"connection": url})

        async def process(job, token):
            return 1
        w = Worker("churn", process, {"connection": url, "concurrency": 5})
        for _ in range(400):
            c = await q.getJobCounts()
            if c["waiting"] == 0 and c["active"] == 0:
                break
            await asyncio.sleep(0.05)
        await w.close()
        await q.close()

    asyncio.run(add())
    cap = _Capture(url, ["bull"], None, redact=True, memory_samples=100,
                   progress=Progress(False), socket_timeout=10)
    cap.connect()
    table = cap.discover("bull")
    assert (table["family"] == "job").sum() == 30       # SCAN saw all 30 hashes
    asyncio.run(drain())                                  # ... then they finished and vanished
    cap.read_queue(cap.queues[0], table)
    snap = cap.assemble()
    assert snap.complete
    assert not snap.jobs["state"].isin(["orphan", "missing-hash"]).any()
    assert snap.manifest["counts"]["vanished_jobs"] == 30


def test_redis_going_away_mid_capture_keeps_what_was_read(private_redis, tmp_path):
    from forensics.capture import CHUNK
    total = 3 * CHUNK
    run_node("fill.js", "bullmq5", private_redis.url(), "bull", "big", str(total), timeout=300)
    watcher = private_redis.client()

    def kill_when_reading():
        while True:
            stats = watcher.info("commandstats").get("cmdstat_hgetall", {})
            # Kill once the first chunk has been read and the second is being fetched.
            if stats.get("calls", 0) >= CHUNK + CHUNK // 4:
                try:
                    watcher.shutdown(nosave=True)
                except redis.ConnectionError:
                    pass
                return
            time.sleep(0.002)

    t = threading.Thread(target=kill_when_reading, daemon=True)
    t.start()
    out = tmp_path / "cut"
    res = forensics_cli("capture", "--redis", private_redis.url(), "--out", str(out))
    t.join(10)
    assert res.returncode == 4, res.stderr
    assert "INCOMPLETE" in res.stderr and "lost the connection" in res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out)
    snap = forensics.load(out)
    assert snap.manifest["complete"] is False
    assert "lost the connection" in snap.manifest["incomplete_reason"]
    assert list(snap.queues["queue"]) == ["big"]
    assert CHUNK_ROWS <= len(snap.jobs) < total   # a whole chunk of one of the two readers, at least
    assert len(snap.payloads) == len(snap.jobs)


def test_ctrl_c_mid_capture_saves_what_was_read(private_redis, tmp_path):
    import os
    import shutil
    import signal
    import subprocess

    from forensics.capture import CHUNK
    total = 3 * CHUNK
    run_node("fill.js", "bullmq5", private_redis.url(), "bull", "big", str(total), timeout=300)
    exe = shutil.which("forensics", path=os.path.dirname(os.sys.executable))
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([exe, "capture", "--redis", private_redis.url(), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = private_redis.client()
    while proc.poll() is None:
        if watcher.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0) >= CHUNK + CHUNK // 4:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.002)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 4, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert stdout.strip().splitlines()[-1] == str(out)
    snap = forensics.load(out)
    assert snap.manifest["complete"] is False and "interrupted" in snap.manifest["incomplete_reason"]
    # what was read is kept whole (a whole chunk of one of the two readers, at least); on a
    # loaded machine the last chunks (the helper's, in flight) may all have arrived before
    # the stop is seen, so every row can be there
    assert CHUNK_ROWS <= snap.row_count("jobs") <= total
    assert len(snap.payloads) == snap.row_count("jobs")
