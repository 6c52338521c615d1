"""forensics diff on two real snapshots taken a few seconds apart.

Between them: a live BullMQ worker keeps hanging on the same job (same lock token), 50
more jobs queue up behind it, and a second queue appears whose 5 jobs fail with an
upstream error (a real winston worker, tests/node/logging.js)."""
from __future__ import annotations

import json
import shutil

import pytest

import forensics

from conftest import forensics_cli, hanging_worker, run_node


@pytest.fixture(scope="module")
def pair(redis_server, tmp_path_factory):
    url = redis_server.url(0)
    run_node("fill.js", "bullmq5", url, "diff", "busy", "3")
    folder = tmp_path_factory.mktemp("diff")
    with hanging_worker(redis_server, "diff", "busy"):
        forensics.capture(url, prefix="diff").save(folder / "old")
        run_node("logging.js", "winston-json", "bullmq5", url, "diff", "jobs", str(folder / "w.log"), "5")
        run_node("fill.js", "bullmq5", url, "diff", "busy", "50")
        forensics.capture(url, prefix="diff").save(folder / "new")
    return folder / "old", folder / "new"


def test_stuck_jobs_are_the_ones_holding_the_same_lock(pair):
    d = forensics.diff(*pair)
    assert len(d.stuck) == 1
    s = d.stuck.iloc[0]
    assert (s["queue"], s["job_id"]) == ("busy", "1") and "same lock token" in s["why"]
    assert s["running_for"] > d.interval                               # running since before OLD


def test_queues_grew_and_new_failures_by_fingerprint(pair):
    d = forensics.diff(*pair)
    q = d.queues.set_index("queue")
    assert q.loc["busy", "status"] == "grew" and q.loc["busy", "backlog_delta"] == 50
    assert q.loc["busy", "added"] == 50 and q.loc["jobs", "status"] == "new"
    assert len(d.failures) == 1
    f = d.failures.iloc[0]
    assert f["fingerprint"] == "upstream <n> for user <id>" and f["count"] == 5 and f["new_error"]
    assert f["queues"] == ["diff:jobs"]
    top = d.memory.iloc[0]
    assert top["bytes_delta"] > 0 and top["queue"] in ("busy", "jobs")
    assert set(d.memory["queue"]) >= {"busy", "jobs"}
    busy_jobs = d.memory[(d.memory["queue"] == "busy") & (d.memory["family"] == "job")].iloc[0]
    assert busy_jobs["keys_delta"] == 50


def test_cli_diff_table_and_json(pair):
    old, new = map(str, pair)
    res = forensics_cli("diff", old, new)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "Stuck: 1 job(s)" in out and "diff:busy job 1" in out
    assert "New failures since OLD: 5" in out and "upstream <n> for user <id>  [new error]" in out
    assert "Where bytes were added" in out
    doc = json.loads(forensics_cli("diff", old, new, "--format", "json").stdout)
    assert doc["schema"] == "forensics.diff/1" and doc["interval_s"] > 0 and not doc["swapped"] and doc["same_source"]
    assert doc["stuck"][0]["job_id"] == "1" and doc["new_failures"][0]["count"] == 5
    busy = next(q for q in doc["queues"] if q["queue"] == "busy")
    assert busy["backlog_delta"] == 50 and busy["status"] == "grew"
    swapped = json.loads(forensics_cli("diff", new, old, "--format", "json").stdout)
    assert swapped["swapped"] and swapped["stuck"] == doc["stuck"]    # the older one is OLD anyway


def test_diff_refuses_what_it_cannot_compare(pair, tmp_path):
    old, _ = pair
    shutil.copytree(old, tmp_path / "s" / "0001", dirs_exist_ok=True)
    res = forensics_cli("diff", str(tmp_path / "s"), str(old))
    assert res.returncode == 2 and "series folder" in res.stderr and len(res.stderr.splitlines()) == 1
    res = forensics_cli("diff", str(old), str(tmp_path / "missing"))
    assert res.returncode == 2 and "no such snapshot folder" in res.stderr
