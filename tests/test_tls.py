"""TLS: a real redis-server on a TLS port, with a CA and certificates the tests generate
(trustme). Verification of the certificate and of the host name is on by default; the
server here also asks for a client certificate."""
from __future__ import annotations

import pytest
import trustme

import forensics

from forensics.safety import is_read_only

from conftest import RedisServer, forensics_cli, free_port, monitored, run_node


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory):
    """(server, files, tls port): plain port for filling, TLS port (client certs required)
    for capturing; the server's certificate names only "localhost"."""
    d = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost")
    client = ca.issue_cert("forensics-client")
    files = {name: d / f"{name}.pem" for name in ("ca", "other-ca", "server", "client", "client-key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    other.cert_pem.write_to_path(str(files["other-ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client.cert_chain_pems[0].write_to_path(str(files["client"]))
    client.private_key_pem.write_to_path(str(files["client-key"]))
    tls_port = free_port()
    srv = RedisServer(d, "--tls-port", str(tls_port), "--tls-cert-file", str(files["server"]),
                      "--tls-key-file", str(files["server"]), "--tls-ca-cert-file", str(files["ca"]),
                      "--tls-auth-clients", "yes")
    run_node("fill.js", "bullmq5", srv.url(0), "tls", "orders", "25")
    yield srv, {k: str(v) for k, v in files.items()}, tls_port
    srv.stop()


def _client_args(f):
    return ["--tls-cert", f["client"], "--tls-key", f["client-key"]]


def test_verified_tls_capture_reads_what_the_plain_port_shows(tls_redis, tmp_path):
    srv, f, port = tls_redis
    with monitored([srv.port]) as sent:  # MONITOR sees what arrives over TLS too
        res = forensics_cli("capture", "--redis", f"rediss://localhost:{port}/0", "--tls-ca", f["ca"],
                            *_client_args(f), "--prefix", "tls", "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert any(c[0].upper() == "HGETALL" for c in sent) and all(is_read_only(tuple(c)) for c in sent)
    snap = forensics.load(tmp_path / "s")
    plain = forensics.capture(srv.url(0), prefix="tls", progress=False)
    assert len(snap.jobs) == len(plain.jobs) == 25
    assert snap.manifest["tls"] == {"verify": True, "ca": f["ca"], "client_certificate": True}
    assert snap.manifest["source"] == f"rediss://localhost:{port}/0"
    # The Python API takes the same options.
    again = forensics.capture(f"rediss://localhost:{port}/0", prefix="tls", tls_ca=f["ca"], tls_cert=f["client"],
                              tls_key=f["client-key"], progress=False)
    assert len(again.jobs) == 25


@pytest.mark.parametrize("case, args, expect", [
    ("wrong CA", lambda f, p: [f"rediss://localhost:{p}/0", "--tls-ca", f["other-ca"], *_client_args(f)],
     "not signed by a trusted CA (pass --tls-ca FILE"),
    ("host name", lambda f, p: [f"rediss://127.0.0.1:{p}/0", "--tls-ca", f["ca"], *_client_args(f)],
     "host name does not match the certificate"),
    ("no client certificate", lambda f, p: [f"rediss://localhost:{p}/0", "--tls-ca", f["ca"]],
     "client certificate"),
])
def test_tls_failures_are_one_clear_line_exit_3(tls_redis, tmp_path, case, args, expect):
    srv, f, port = tls_redis
    a = args(f, port)
    res = forensics_cli("capture", "--redis", *a, "--prefix", "tls", "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 3, (case, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("forensics: ") and expect in lines[0], (case, lines)
    assert "Traceback" not in res.stderr and not (tmp_path / "s").exists()


def test_tls_to_a_plain_port_says_so(tls_redis):
    srv, f, port = tls_redis
    with pytest.raises(forensics.ConnectError, match="is this a TLS port"):
        forensics.capture(f"rediss://localhost:{srv.port}/0", tls_ca=f["ca"], socket_timeout=1, progress=False)


def test_tls_insecure_only_on_request_and_recorded(tls_redis, tmp_path):
    srv, f, port = tls_redis
    res = forensics_cli("capture", "--redis", f"rediss://127.0.0.1:{port}/0", "--tls-insecure", *_client_args(f),
                        "--prefix", "tls", "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "NOT verified" in res.stderr  # said to the user, not only written down
    m = forensics.load(tmp_path / "s").manifest
    assert m["tls"]["verify"] is False and "NOT verified" in m["tls"]["warning"]
    assert any("NOT verified" in w for w in m["warnings"])


def test_a_missing_certificate_file_is_a_usage_error(tls_redis, tmp_path):
    srv, f, port = tls_redis
    res = forensics_cli("capture", "--redis", f"rediss://localhost:{port}/0", "--tls-ca", str(tmp_path / "nope.pem"),
                        "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 2 and "--tls-ca" in res.stderr and "No such file" in res.stderr
