"""Connection forms beyond host:port: a unix socket, and URLs that are not Redis URLs."""
from __future__ import annotations

import forensics
from conftest import forensics_cli, run_node


def test_unix_socket_capture(tmp_path):
    from conftest import RedisServer
    sock = tmp_path / "redis.sock"
    srv = RedisServer(tmp_path, "--unixsocket", str(sock), "--unixsocketperm", "700")
    try:
        run_node("fill.js", "bullmq5", srv.url(0), "bull", "jobs", "6")
        res = forensics_cli("capture", "--redis", f"unix://{sock}", "--out", str(tmp_path / "s"), "--quiet")
        assert res.returncode == 0, res.stderr
        snap = forensics.load(tmp_path / "s")
        assert len(snap.jobs) == 6 and snap.manifest["topology"]["nodes"][0]["addr"] == f"unix:{sock}"
    finally:
        srv.stop()


def test_a_url_of_another_scheme_is_a_usage_error(tmp_path):
    res = forensics_cli("capture", "--redis", "http://localhost:6379", "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "redis+sentinel://" in res.stderr and "Traceback" not in res.stderr
