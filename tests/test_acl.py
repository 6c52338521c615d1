"""ACL users and managed-service limits, on real servers: the README's minimal ACL line
captures everything; a bare `+@read ~prefix:*` user and a server with renamed or refused
commands degrade (recorded, with what is not judged) and never crash or guess."""
from __future__ import annotations

import re

import pytest

import forensics
from conftest import ROOT, RedisServer, forensics_cli, run_node


def readme_acl_line() -> str:
    m = re.search(r"^(ACL SETUSER forensics .+)$", (ROOT / "README.md").read_text(), re.M)
    assert m, "README gives the minimal ACL line"
    return m.group(1)


def _setuser(srv, line: str) -> None:
    srv.client(0).execute_command(*line.split())


def test_the_readme_acl_line_captures_everything(redis_server, scenario, tmp_path):
    prefix, _ = scenario("bullmq5")
    line = readme_acl_line().replace(">CHANGE-ME", ">acl-pw").replace("%R~bull:*", f"%R~{prefix}:*")
    _setuser(redis_server, line)
    full = forensics.capture(redis_server.url(0), prefix=prefix, progress=False)
    res = forensics_cli("capture", "--redis", redis_server.url(0, auth="forensics:acl-pw@"), "--prefix", prefix,
                        "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr
    snap = forensics.load(tmp_path / "s")
    assert snap.complete and snap.manifest["unavailable"] == []
    assert len(snap.jobs) == len(full.jobs)
    assert snap.queues.set_index("queue")["n_active"].to_dict() == full.queues.set_index("queue")["n_active"].to_dict()
    assert bool(snap.redis["info_available"].iloc[0]) and snap.redis["maxmemory_policy"].iloc[0] == "noeviction"
    # The user may not write: the ACL line itself is read-only, whatever a tool would try.
    import redis
    r = redis.Redis(port=redis_server.port, username="forensics", password="acl-pw")
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.set(f"{prefix}:x", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.keys("*")


def test_a_bare_read_user_degrades_and_says_what_is_not_judged(redis_server, scenario, tmp_path):
    prefix, _ = scenario("bullmq5")
    _setuser(redis_server, f"ACL SETUSER bare on >bare-pw resetkeys ~{prefix}:* -@all +@read")
    res = forensics_cli("capture", "--redis", redis_server.url(0, auth="bare:bare-pw@"), "--prefix", prefix,
                        "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr  # PING refused on the handshake is not a failure
    snap = forensics.load(tmp_path / "s")
    assert snap.complete and len(snap.jobs) > 0
    refused = {u["command"]: u for u in snap.manifest["unavailable"]}
    assert {"INFO", "CONFIG GET", "CLIENT LIST"} <= set(refused)
    assert "no-workers is not judged" in refused["CLIENT LIST"]["consequence"]
    assert "refused" in refused["INFO"]["error"]
    assert "CLIENT LIST refused" in res.stderr  # told on the terminal too
    d = forensics.diagnose(tmp_path / "s")
    assert "no-workers" not in set(d.findings["id"])  # without CLIENT LIST, no guess about workers
    assert d.checklist.set_index("item").loc["health-checks", "verdict"].eq("unknown").all()
    table = d.to_table()
    assert "! not judged: worker connections unknown" in table and "! not judged: Redis memory" in table
    assert "not_judged" not in d.to_json() and '"unavailable"' in d.to_json()


@pytest.fixture(scope="module")
def managed_redis(tmp_path_factory):
    """A server set up like a managed service: CONFIG and MEMORY renamed away
    (rename-command), CLIENT and all INFO sections but `server` refused by ACL, holding a
    real BullMQ backlog with no worker (loaded from the dump of a normal server)."""
    d = tmp_path_factory.mktemp("managed")
    plain = RedisServer(d, "--dbfilename", "dump.rdb")
    run_node("fill.js", "bullmq5", plain.url(0), "bull", "orders", "30")
    plain.client(0).save()
    plain.stop()
    srv = RedisServer(d, "--dbfilename", "dump.rdb", "--rename-command", "CONFIG", "",
                      "--rename-command", "MEMORY", "", "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-client", "-info", "+info|server")
    yield srv
    srv.stop()


def test_a_managed_service_refusing_commands_is_recorded_never_guessed(managed_redis, tmp_path):
    res = forensics_cli("capture", "--redis", managed_redis.url(0), "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr
    snap = forensics.load(tmp_path / "s")
    assert snap.complete and len(snap.jobs) == 30 and set(snap.jobs["state"]) == {"wait"}
    refused = {u["command"]: u for u in snap.manifest["unavailable"]}
    assert "unknown command" in refused["CONFIG GET"]["error"]          # rename-command CONFIG ""
    assert "unknown command" in refused["MEMORY USAGE"]["error"]        # rename-command MEMORY ""
    assert "refused" in refused["CLIENT LIST"]["error"]                 # ACL -client
    assert "maxmemory-policy unknown" in refused["INFO memory"]["consequence"]  # INFO: only `server` allowed
    assert "INFO" not in refused                                         # ... which was read
    r = snap.redis.iloc[0]
    assert r["redis_version"] and r["maxmemory_policy"] is None and r["used_memory"] is None
    assert len(snap.memory) == 0 and snap.manifest["commands"].get("MEMORY USAGE", 0) <= 1  # asked once, not per key
    d = forensics.diagnose(snap)
    ids = set(d.findings["id"])
    assert not ids & {"no-workers", "eviction-policy", "memory-pressure"}  # nothing guessed
    lines = [ln for ln in d.to_table().splitlines() if ln.startswith("! not judged")]
    assert any("eviction-policy" in ln for ln in lines) and any("no-workers" in ln for ln in lines)
