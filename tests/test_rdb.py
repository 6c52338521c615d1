"""Capture after the fact from an RDB backup: dumps written by a real server holding real
library state, loaded by a private redis-server on a copy."""
from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import tempfile
from pathlib import Path

import pytest

import forensics
from conftest import forensics_cli


@pytest.fixture(scope="module")
def dump(redis_server, scenario, tmp_path_factory):
    """(dump path, live capture taken right before the dump, prefix)."""
    prefix, _ = scenario("bullmq5")
    live = forensics.capture(redis_server.url(0), prefix=prefix, progress=False)
    redis_server.client(0).save()
    path = tmp_path_factory.mktemp("backup") / "dump.rdb"
    shutil.copyfile(Path(redis_server.dir) / "dump.rdb", path)
    return path, live, prefix


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _private_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("forensics-rdb-*")}


def test_a_backup_is_captured_like_the_live_node(dump, tmp_path):
    path, live, prefix = dump
    sha, mtime, before = _sha(path), path.stat().st_mtime_ns, _private_dirs()
    res = forensics_cli("capture", "--rdb", str(path), "--prefix", prefix, "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr
    snap = forensics.load(tmp_path / "s")
    key = ["queue", "job_id"]
    got = snap.jobs[key + ["state"]].astype(str).sort_values(key).reset_index(drop=True)
    want = live.jobs[key + ["state"]].astype(str).sort_values(key).reset_index(drop=True)
    assert got.equals(want)
    m = snap.manifest
    assert m["source"] == f"rdb:{path}" and m["topology"]["mode"] == "rdb"
    assert f"RDB backup {path}" in forensics.summary(snap)
    rdb = m["rdb"]
    assert rdb["sha256"] == sha and rdb["bytes"] == path.stat().st_size and rdb["path"] == str(path)
    assert rdb["rdb_version"] == 10 and rdb["written_by"] == "7.0.15"
    written = dt.datetime.fromisoformat(rdb["written_at"])
    assert abs((dt.datetime.now(dt.timezone.utc) - written).total_seconds()) < 600
    assert rdb["keyspace"]["db0"] > 0
    # What a backup cannot tell is unknown, not the private server's own settings.
    assert {u["command"] for u in m["unavailable"]} >= {"CLIENT LIST", "CONFIG GET"}
    assert snap.redis["maxmemory_policy"].isna().all() and snap.redis["role"].iloc[0] == "rdb"
    ids = set(forensics.diagnose(snap).findings["id"])
    assert "no-workers" not in ids and "eviction-policy" not in ids
    assert "stalled-active" in ids  # the incident itself is still read from the backup
    # The backup was only read; the private server and its folder are gone.
    assert _sha(path) == sha and path.stat().st_mtime_ns == mtime
    assert _private_dirs() == before


def test_an_empty_database_of_the_dump_points_to_the_full_one(dump):
    path, _, prefix = dump
    snap = forensics.capture(rdb=path, db=5, prefix=prefix, progress=False)
    assert len(snap.queues) == 0
    assert any("database 5 of the dump is empty" in w and "use --db N" in w for w in snap.manifest["warnings"])


@pytest.mark.parametrize("damage, expect", [
    ("truncate", "could not load"),
    ("garbage", "is not a Redis RDB dump"),
    ("newer", "is RDB format 12"),
])
def test_a_damaged_or_newer_dump_is_one_line_exit_2(dump, tmp_path, damage, expect):
    path, _, _ = dump
    bad = tmp_path / "bad.rdb"
    data = path.read_bytes()
    if damage == "truncate":
        bad.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"this is a log file, not a dump\n" * 10)
    else:
        bad.write_bytes(b"REDIS0012" + data[9:])  # the header of a dump written by Redis 7.4
    before = _private_dirs()
    res = forensics_cli("capture", "--rdb", str(bad), "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and str(bad) in lines[0], lines
    if damage == "newer":
        assert "--redis-server PATH" in lines[0] and "reads up to format 10" in lines[0]
    assert not (tmp_path / "s").exists() and _private_dirs() == before


def test_rdb_goes_alone(tmp_path):
    res = forensics_cli("capture", "--rdb", str(tmp_path / "none.rdb"), "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "no such file" in res.stderr
    res = forensics_cli("capture", "--db", "3", "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "--db and --redis-server go with --rdb" in res.stderr
