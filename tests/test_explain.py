"""forensics explain: one job's story, told from snapshots of real incidents."""
from __future__ import annotations

import json
import re

import pytest

import forensics

from conftest import forensics_cli


@pytest.fixture(scope="module")
def mq_path(captured, tmp_path_factory):
    return captured("bullmq5")[0].save(tmp_path_factory.mktemp("explain") / "bullmq5")


def test_a_stalled_job_says_its_worker_died_and_nothing_recovers_it(mq_path):
    res = forensics_cli("explain", mq_path, "1", "--queue", "convert")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.splitlines()[0].startswith("sc-bullmq5:convert job 1 (BullMQ 5.81.5)")
    assert "Its lock is gone" in out and "No worker is connected, so no stalled checker will put it back" in out
    assert "CRITICAL stalled-active" in out and "(because no-workers)" in out
    assert "CRITICAL no-workers" in out and "(a root cause)" in out


def test_each_state_gets_its_reason(mq_path):
    snap = forensics.load(mq_path)   # one snapshot object: diagnosed once for all the jobs below

    def why(job, queue):
        return " ".join(forensics.explain(snap, job, queue=queue).why)
    assert "Overdue by" in why("1", "late") and "no worker is connected to promote it" in why("1", "late")
    parent = forensics.load(mq_path).jobs.query("queue == 'flow-parent'")["job_id"].iloc[0]
    assert "It waits for 2 child job(s): 1 failed, 1 completed" in why(parent, "flow-parent")
    assert "the parent waits forever" in why(parent, "flow-parent")
    assert "The queue is paused" in why("1", "reports")
    assert "The rate limiter holds the queue for another" in why("1", "limited")
    # (59 when the session is slow: the job was added a minute or more before this capture)
    assert "Added with a delay of 60 min. Due at " in why("1", "backlog")
    assert re.search(r", in (59|60) min\.$", why("1", "backlog"))
    assert "It will fail as soon as a worker takes it: job stalled more than allowable limit" in why("1", "stalls")
    assert "Failed for good" in why("1", "api") and "Request failed with status code 400" in why("1", "api")


def test_a_storming_job_shows_its_attempts_and_the_storm(incident):
    snap, _ = incident("storm", "bull")
    story = forensics.explain(snap, "1", queue="storm")
    # no backoff: it is running an attempt, or back in wait for the next one; either way it says which
    assert any(w.startswith(("This is attempt ", "It is back after attempt ")) for w in story.why), story.why
    a = story.attempts
    assert list(a.columns) == ["attempt", "started_at", "ended_at", "outcome", "error"]
    assert len(a) >= 100 and a["attempt"].is_monotonic_increasing
    failed = a[a["outcome"] == "failed"]
    assert failed["error"].str.contains("upstream 503 Service Unavailable for account acme").all()
    f = story.findings.set_index("id")
    assert f.loc["retry-storm", "severity"] == "critical" and bool(f.loc["retry-storm", "root_cause"])
    assert f.loc["stacktrace-bloat", "because"] == ["retry-storm"]


def test_bullmq_attempts_come_from_the_events_stream(incident):
    snap, _ = incident("storm", "bullmq5")
    story = forensics.explain(snap, "1", queue="burst")
    a = story.attempts
    assert len(a) == 8 and list(a["attempt"]) == list(range(1, 9))          # 8 attempts, all in the stream
    assert list(a["outcome"][:7]) == ["failed, retried after a backoff"] * 7 and a["outcome"].iloc[-1] == "failed"
    assert a["started_at"].notna().all() and a["ended_at"].notna().all()
    assert (a["ended_at"] >= a["started_at"]).all()
    assert a["error"].str.contains("upstream 503").all()
    assert set(story.events["event"]) >= {"added", "active", "delayed", "failed"}


def test_a_starving_job_counts_who_overtook_it(incident):
    snap, _ = incident("starve", "bullmq5")
    story = forensics.explain(snap, "1", queue="starve")
    assert story.job["state"] == "prioritized"
    overtaken = [w for w in story.why if "added after it were taken first" in w]
    assert overtaken and "BullMQ takes every priority-0 job before any prioritized one" in overtaken[0]
    assert "priority-starvation" in set(story.findings["id"])


def test_worker_log_lines_that_name_the_job_are_in_its_story(incident):
    snap, logs = incident("oomkill")
    recovered = snap.jobs[snap.jobs["stalled_count"] > 0]
    assert len(recovered) == 1
    job = str(recovered["job_id"].iloc[0])
    story = forensics.explain(snap, job, queue="images", logs=logs)
    assert any("The stalled checker put it back in wait 1 time(s)" in w for w in story.why)
    assert len(story.logs) >= 1 and (story.logs["message"] == "job done").any()
    assert "stall-failures" in set(story.findings["id"])
    assert "Worker log records" in story.to_text()


def test_json_and_html(mq_path):
    res = forensics_cli("explain", mq_path, "1", "--queue", "sc-bullmq5:convert", "--format", "json")
    doc = json.loads(res.stdout)
    assert doc["schema"] == "forensics.explain/1" and doc["job"]["state"] == "active"
    assert doc["job"]["library"] == "BullMQ 5.81.5" and doc["why"] and doc["attempts"][0]["outcome"] == "running"
    assert {"stalled-active", "no-workers"} <= {f["id"] for f in doc["findings"]}
    html = forensics.explain(mq_path, "1", queue="convert")._repr_html_()
    assert "<h5>Why it is here</h5>" in html and "<script" not in html


def test_unknown_and_ambiguous_ids_are_clear_errors(mq_path):
    res = forensics_cli("explain", mq_path, "1")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "job 1 is in" in res.stderr and "sc-bullmq5:convert" in res.stderr and "--queue" in res.stderr
    res = forensics_cli("explain", mq_path, "no-such-job")
    assert res.returncode == 2 and "job no-such-job is not in the snapshot" in res.stderr
    res = forensics_cli("explain", mq_path, "1", "--queue", "nope")
    assert res.returncode == 2 and "in queue nope" in res.stderr
