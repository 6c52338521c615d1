"""Sentinel and replicas, on real servers: the sentinels name the master; --replica reads
the replica (lowest impact on the primary) and records the replication lag; the workers
are read where they connect, on the primary."""
from __future__ import annotations

import forensics
from forensics.safety import is_read_only

from conftest import forensics_cli, monitored


def _hgetall_calls(srv) -> int:
    return srv.client(0).info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)


def test_the_sentinels_name_the_master(sentinel_set, tmp_path):
    s = sentinel_set
    before = [s.primary.client(0).execute_command("DEBUG", "DIGEST"), s.replica.client(0).execute_command("DEBUG", "DIGEST")]
    res = forensics_cli("capture", "--redis", s.url(), "--out", str(tmp_path / "m"), "--quiet")
    assert res.returncode == 0, res.stderr
    snap = forensics.load(tmp_path / "m")
    topo = snap.manifest["topology"]
    assert topo["mode"] == "sentinel" and topo["service"] == s.SERVICE
    assert len(topo["sentinels_answered"]) >= 1
    assert [n["addr"] for n in topo["nodes"]] == [f"127.0.0.1:{s.primary.port}"]
    assert snap.redis["role"].iloc[0] == "master" and len(snap.jobs) == 40
    assert snap.manifest["source"] == s.url()
    after = [s.primary.client(0).execute_command("DEBUG", "DIGEST"), s.replica.client(0).execute_command("DEBUG", "DIGEST")]
    assert after == before


def test_replica_capture_reads_the_replica_and_records_the_lag(sentinel_set, tmp_path):
    s = sentinel_set
    s.synced()
    on_primary, on_replica = _hgetall_calls(s.primary), _hgetall_calls(s.replica)
    with monitored([s.primary.port, s.replica.port]) as sent:
        snap = forensics.capture(s.url(), replica=True, progress=False)
    # MONITOR on both: besides replication (REPLCONF) and the sentinels' hello (PUBLISH), read-only only.
    others = [c for c in sent if c[0].upper() not in ("REPLCONF", "PUBLISH")]
    assert any(c[0].upper() == "HGETALL" for c in others) and all(is_read_only(tuple(c)) for c in others)
    assert _hgetall_calls(s.primary) == on_primary          # the primary served no job hash
    assert _hgetall_calls(s.replica) >= on_replica + 40     # the replica served them all
    assert len(snap.jobs) == 40 and snap.complete
    rep = snap.manifest["topology"]["replication"]
    assert rep["replica"] == f"127.0.0.1:{s.replica.port}" and rep["primary"] == f"127.0.0.1:{s.primary.port}"
    assert rep["master_link_status"] == "up" and rep["lag_bytes"] is not None and rep["lag_bytes"] >= 0
    r = snap.redis.iloc[0]
    assert r["role"] == "replica" and r["node"] == rep["replica"] and r["replication_lag_bytes"] == rep["lag_bytes"]
    # Workers connect to the primary: CLIENT LIST was read there, so no-workers is judged (there are none).
    assert snap.manifest["unavailable"] == [] and snap.manifest["commands"]["CLIENT LIST"] == 1
    assert "no-workers" in set(forensics.diagnose(snap).findings["id"])
    assert "replica" in snap.manifest["consistency"]
    assert f"replica 127.0.0.1:{s.replica.port} of 127.0.0.1:{s.primary.port}" in forensics.summary(snap)


def test_replica_of_a_plain_primary_url(sentinel_set, tmp_path):
    s = sentinel_set
    res = forensics_cli("capture", "--redis", s.primary.url(0), "--replica", "--out", str(tmp_path / "r"), "--quiet")
    assert res.returncode == 0, res.stderr
    snap = forensics.load(tmp_path / "r")
    assert snap.manifest["topology"]["mode"] == "replica"
    assert snap.redis["node"].iloc[0] == f"127.0.0.1:{s.replica.port}" and len(snap.jobs) == 40


def test_sentinel_failures_are_one_line(sentinel_set, tmp_path):
    s = sentinel_set
    bad = s.url().replace(f"/{s.SERVICE}", "/no-such-service")
    res = forensics_cli("capture", "--redis", bad, "--out", str(tmp_path / "x"), "--quiet")
    assert res.returncode == 3
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no sentinel named a master for 'no-such-service'" in lines[0]
    res = forensics_cli("capture", "--redis", "redis+sentinel://127.0.0.1:26379", "--out", str(tmp_path / "y"))
    assert res.returncode == 2 and "redis+sentinel://host:26379" in res.stderr
