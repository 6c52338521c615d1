"""The CLI as a user meets it: help, defaults, progress, output path, summary."""
from __future__ import annotations

import re

import forensics

from conftest import forensics_cli


def test_help_smoke():
    for args in ([], ["capture"], ["summary"], ["diagnose"], ["explain"]):
        res = forensics_cli(*args, "--help")
        assert res.returncode == 0 and "usage: forensics" in res.stdout
    assert "--no-redact" in forensics_cli("capture", "--help").stdout
    assert "explain" in forensics_cli("--help").stdout and "JOB_ID" in forensics_cli("explain", "--help").stdout


def test_usage_errors_exit_2():
    res = forensics_cli("capture", "--bogus")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert forensics_cli().returncode == 2


def test_capture_defaults_redis_url_env_and_out_dir(redis_server, scenario, tmp_path):
    prefix, report = scenario("bull")
    res = forensics_cli("capture", "--prefix", prefix, env={"REDIS_URL": redis_server.url(0)}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"snapshots/\d{8}T\d{6}Z", last), last
    snap = forensics.load(tmp_path / last)
    assert snap.manifest["source"] == redis_server.url(0)
    assert set(snap.queues["queue"]) == set(report["queues"])
    # Not a terminal and not asked: no progress lines.
    assert "capture:" not in res.stderr


def test_progress_on_request_and_quiet(redis_server, scenario, tmp_path):
    prefix, report = scenario("bull")
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix, "--progress",
                        "--out", str(tmp_path / "a"))
    assert res.returncode == 0
    n = len(report["queues"])
    assert re.search(rf"capture: queue \d+/{n} .*jobs read, [\d,]+ jobs/s", res.stderr), res.stderr
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix, "--quiet",
                        "--out", str(tmp_path / "b"))
    assert res.returncode == 0 and "capture:" not in res.stderr


def test_queue_filter_and_summary(redis_server, scenario, tmp_path):
    prefix, _ = scenario("bullmq6")
    out = tmp_path / "s"
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix,
                        "--queue", "convert", "--queue", "render", "--out", str(out))
    assert res.returncode == 0
    snap = forensics.load(out)
    assert sorted(snap.queues["queue"]) == ["convert", "render"]
    res = forensics_cli("summary", str(out))
    assert res.returncode == 0
    assert "convert: 1 active job(s) without a lock" in res.stdout
    assert re.search(r"render: job 1 active for \S+, lock held", res.stdout)


def test_empty_prefix_captures_nothing_cleanly(redis_server, tmp_path):
    out = tmp_path / "empty"
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", "no-such-prefix",
                        "--out", str(out))
    assert res.returncode == 0
    assert "0 queues" in res.stderr
    assert "No Bull/BullMQ queues found" in forensics_cli("summary", str(out)).stdout


def test_unknown_queue_is_reported_not_fatal(redis_server, scenario, tmp_path):
    prefix, _ = scenario("bull")
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix,
                        "--queue", "no-such-queue", "--queue", "mail", "--out", str(tmp_path / "s"))
    assert res.returncode == 0
    assert "warning: queue 'no-such-queue' not found under prefix" in res.stderr
    assert list(forensics.load(tmp_path / "s").queues["queue"]) == ["mail"]


def test_bad_out_is_refused_before_capturing(tmp_path):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "todo.txt").write_text("mine")
    # Unreachable Redis on purpose: the destination must be refused first (exit 2, not 3).
    res = forensics_cli("capture", "--redis", "redis://127.0.0.1:1/0", "--out", str(keep))
    assert res.returncode == 2 and "is not a snapshot folder" in res.stderr
    assert (keep / "todo.txt").read_text() == "mine"
