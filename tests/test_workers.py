"""Live Node workers are found in CLIENT LIST by the names each library gives them."""
from __future__ import annotations

import subprocess

import pytest

import forensics

from conftest import NODE_DIR, run_node, wait_for_worker_connection


@pytest.mark.parametrize("lib,named", [("bull", False), ("bullmq5", True), ("bullmq6", True)])
def test_live_node_worker_and_its_job(redis_server, lib, named):
    prefix = f"live-{lib}"
    url = redis_server.url(0)
    run_node("fill.js", lib, url, prefix, "busy q", "1")
    # A real worker takes the job and keeps it (its processor never returns); its
    # connection name carries the queue name in base64 (BullMQ adds ':w:<worker name>').
    proc = subprocess.Popen(["node", str(NODE_DIR / "worker.js"), lib, url, prefix, "busy q", "30000"],
                            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().startswith("started"), "worker did not take the job"
        wait_for_worker_connection(redis_server, prefix)
        snap = forensics.capture(url, prefix=prefix)
        w = snap.workers
        assert list(w["queue"]) == ["busy q"] and list(w["role"]) == ["worker"]
        assert list(w["runtime"]) == ["node"]
        if named:
            assert w["worker_name"].iloc[0] == f"crashy-{proc.pid}"
        else:
            assert w["worker_name"].isna().all()
        assert int(snap.queues.set_index("queue").loc["busy q", "workers"]) == 1
        job = snap.jobs.iloc[0]
        assert job["state"] == "active" and job["lock_present"] and job["lock_ttl_ms"] > 0
    finally:
        proc.kill()
        proc.wait()
