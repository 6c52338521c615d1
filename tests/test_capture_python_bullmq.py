"""Capture of a queue driven by the Python port of BullMQ (PyPI bullmq), with a live worker.

The worker keeps running while we capture: the job it holds must show as active with a
live lock in the Python port's token format, and the worker connection must be found
(the Python port names its connections with the queue name in plain text).
"""
from __future__ import annotations

import asyncio
import re

import pandas as pd
import pytest

bullmq = pytest.importorskip("bullmq")

import forensics  # noqa: E402

PREFIX = "pyport"


async def _scenario(url: str):
    from bullmq import Queue, Worker

    q = Queue("pyq", {"connection": url, "prefix": PREFIX})
    release = asyncio.Event()

    async def process(job, token):
        if job.data.get("fail"):
            raise ValueError(f"invalid payload for order {job.data['order']}")
        if job.data.get("hold"):
            await release.wait()
        return {"done": job.id}

    for i in range(3):
        await q.add("ok", {"order": i}, {"removeOnComplete": {"count": 100}})
    for i in range(2):
        await q.add("bad", {"order": 10 + i, "fail": True}, {"attempts": 2})
    w = Worker("pyq", process, {"connection": url, "prefix": PREFIX, "name": "py-worker",
                                "concurrency": 2})
    for _ in range(400):
        c = await q.getJobCounts()
        if c["completed"] == 3 and c["failed"] == 2:
            break
        await asyncio.sleep(0.05)
    await q.add("hold", {"order": 99, "hold": True})
    for _ in range(400):
        if (await q.getJobCounts())["active"] == 1:
            break
        await asyncio.sleep(0.05)
    snap = await asyncio.to_thread(forensics.capture, url, PREFIX)
    counts = await q.getJobCounts()
    release.set()
    await w.close()
    await q.close()
    return snap, counts


@pytest.fixture(scope="module")
def py_capture(redis_server):
    return asyncio.run(_scenario(redis_server.url(0)))


def test_counts_equal_python_library_counts(py_capture):
    snap, counts = py_capture
    ours = snap.jobs["state"].value_counts()
    for name, n in counts.items():
        state = {"waiting": "wait"}.get(name, name)
        assert int(ours.get(state, 0)) == n, (name, counts, ours.to_dict())


def test_live_python_worker_lock_and_connection(py_capture):
    snap, _ = py_capture
    active = snap.jobs[snap.jobs["state"] == "active"].iloc[0]
    assert active["lock_present"] and active["lock_ttl_ms"] > 0
    assert re.fullmatch(r"[0-9a-f]{32}:\d+", active["lock_token"]), active["lock_token"]
    # The Python port (3.4.4) never passes the worker name to moveToActive: no `pb` field.
    assert pd.isna(active["processed_by"])
    w = snap.workers
    assert (w["queue"] == "pyq").any()
    mine = w[w["queue"] == "pyq"]
    assert set(mine["runtime"]) == {"python"}
    assert "py-worker" in set(mine["worker_name"].dropna())
    assert int(snap.queues.set_index("queue").loc["pyq", "workers"]) >= 1


def test_python_failures_are_decoded(py_capture):
    snap, _ = py_capture
    failed = snap.jobs[snap.jobs["state"] == "failed"]
    assert len(failed) == 2
    assert failed["failed_reason"].str.startswith("invalid payload for order").all()
    assert (failed["attempts_made"] == 2).all() and (failed["attempts_configured"] == 2).all()
    assert failed["stacktrace_top"].str.startswith("Traceback (most recent call last)").all()
    ok = snap.jobs[snap.jobs["name"] == "ok"]
    assert (ok["remove_on_complete"] == '{"count":100}').all()
