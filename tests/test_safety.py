"""Read-only toward the inspected Redis: judged by Redis itself (MONITOR, COMMAND INFO,
DEBUG DIGEST), not by our own allowlist. Secrets and credentials never reach disk."""
from __future__ import annotations

import threading
import time

import pytest

import forensics
from forensics.errors import UnsafeCommandError
from forensics.safety import CommandLedger, read_only_client, redact_json_text, redact_url

from conftest import forensics_cli, run_node


def _monitor(srv, stop: threading.Event, seen: list[str]):
    conn = srv.client()
    with conn.monitor() as m:
        while not stop.is_set():
            try:
                cmd = m.next_command()
            except Exception:
                break
            seen.append(cmd["command"])


def _dataset(admin, prefix: str) -> dict[str, tuple[str, bool]]:
    """key -> (DEBUG DIGEST-VALUE, has a TTL) for every key under the prefix the capture reads
    (the session's Redis holds other tests' queues, and their live workers write between the
    two looks; MONITOR shows that the capture itself sent no write anywhere). A key that
    expired between SCAN and PTTL (-2) counts as one with a TTL."""
    keys = sorted(admin.scan_iter(match=f"{prefix}:*", count=1000))
    digests = admin.execute_command("DEBUG", "DIGEST-VALUE", *keys) if keys else []
    pipe = admin.pipeline(transaction=False)
    for k in keys:
        pipe.pttl(k)
    return {k: (d, t != -1) for k, d, t in zip(keys, digests, pipe.execute())}


def test_monitor_sees_only_read_commands_and_dataset_is_unchanged(redis_server, scenario):
    prefix, _ = scenario("bullmq5")
    admin = redis_server.client()
    before = _dataset(admin, prefix)
    stop, seen = threading.Event(), []
    t = threading.Thread(target=_monitor, args=(redis_server, stop, seen), daemon=True)
    t.start()
    time.sleep(0.2)
    snap = forensics.capture(redis_server.url(0), prefix=prefix)
    admin.ping()  # lets the monitor loop see one more command and notice stop
    stop.set()
    admin.ping()
    t.join(5)
    assert snap.complete and len(snap.jobs) > 10
    names = set()
    for line in seen:
        words = [w.strip('"').lower() for w in line.split()]
        if not words or words[0] == "ping":
            continue
        container = words[0] in ("config", "client", "memory", "xinfo", "object")
        names.add(f"{words[0]}|{words[1]}" if container and len(words) > 1 else words[0])
    assert {"scan", "hgetall", "lrange", "zrange"} <= names, names
    for name in sorted(names):
        info = admin.execute_command("COMMAND", "INFO", name)
        entry = info.get(name) or info.get(name.split("|")[0])
        assert entry, f"Redis does not know {name}"
        flags = entry["flags"]
        flags = {f.decode() if isinstance(f, bytes) else f for f in flags}
        assert "write" not in flags, f"{name} is a write command: {flags}"
        assert name not in {"eval", "evalsha", "fcall", "script", "debug", "keys", "flushall", "flushdb"}
    assert "keys" not in names
    # Per key, so that locks and stalled-check keys expiring on their own (they have a
    # TTL) do not count; every value must be bit-for-bit the same, no key may appear.
    after = _dataset(admin, prefix)
    assert len(before) > 10 and set(after) <= set(before), set(after) - set(before)
    assert {k: v[0] for k, v in after.items()} == {k: before[k][0] for k in after}
    vanished = [k for k in set(before) - set(after) if not before[k][1]]
    assert not vanished, f"keys without a TTL vanished: {vanished}"


def test_gate_refuses_writes_before_sending(redis_server):
    ledger = CommandLedger()
    client = read_only_client(redis_server.url(5), ledger)
    with pytest.raises(UnsafeCommandError, match="SET"):
        client.set("forensics-probe", "x")
    with pytest.raises(UnsafeCommandError, match="EVAL"):
        client.eval("return redis.call('set', 'forensics-probe', 'x')", 0)
    pipe = client.pipeline(transaction=False)
    pipe.get("a")
    pipe.delete("a")
    with pytest.raises(UnsafeCommandError, match="DEL"):
        pipe.execute()
    with pytest.raises(UnsafeCommandError, match="CONFIG SET"):
        client.config_set("maxmemory", "1")
    assert redis_server.client(5).exists("forensics-probe") == 0
    assert redis_server.client().config_get("maxmemory")["maxmemory"] == "0"
    assert "SET" not in ledger.counts and "DEL" not in ledger.counts


def test_credentials_never_reach_the_snapshot(private_redis, tmp_path):
    admin = private_redis.client()
    admin.execute_command("ACL", "SETUSER", "ops", "on", ">Sup3r-Secret-PW", "~*", "+@all")
    run_node("fill.js", "bullmq5", private_redis.url(), "bull", "jobs", "5")
    out = tmp_path / "snap"
    res = forensics_cli("capture", "--redis", private_redis.url(auth="ops:Sup3r-Secret-PW@"),
                        "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "Sup3r-Secret-PW" not in res.stdout + res.stderr
    for f in out.iterdir():
        assert b"Sup3r-Secret-PW" not in f.read_bytes(), f
    assert forensics.load(out).manifest["source"] == f"redis://127.0.0.1:{private_redis.port}/0"


def test_redaction_default_and_opt_out(redis_server, scenario, tmp_path):
    prefix, _ = scenario("bullmq6")
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix,
                        "--queue", "mail", "--no-redact", "--out", str(tmp_path / "raw"))
    assert res.returncode == 0, res.stderr
    raw = forensics.load(tmp_path / "raw")
    assert raw.payloads["data"].str.contains("hunter2").sum() == 5
    assert raw.manifest["options"]["redact"] is False
    red = forensics.capture(redis_server.url(0), prefix=prefix, queues=["mail"])
    assert not red.payloads["data"].str.contains("hunter2|sk-live-123|Bearer x").any()


@pytest.mark.parametrize("text,expect,n", [
    ('{"password":"a","user":"b"}', '{"password":"[REDACTED]","user":"b"}', 1),
    ('{"headers":{"Authorization":"Bearer t","X-Api-Key":"k"}}',
     '{"headers":{"Authorization":"[REDACTED]","X-Api-Key":"[REDACTED]"}}', 2),
    ('[{"refresh_token":"r"},{"id":1}]', '[{"refresh_token":"[REDACTED]"},{"id":1}]', 1),
    ('{"keyboard":"qwerty","monkey":1}', '{"keyboard":"qwerty","monkey":1}', 0),
    ("not json password=x", "not json password=[REDACTED]", 1),
])
def test_redact_json_text(text, expect, n):
    assert redact_json_text(text) == (expect, n)


def test_redact_url():
    assert redact_url("redis://user:pw@host:6379/0") == "redis://host:6379/0"
    assert redact_url("rediss://:pw@host/1") == "rediss://host/1"
    assert redact_url("redis://host:6379") == "redis://host:6379"
