"""Redaction where secrets really are, and --no-data.

The jobs are written and failed by the real libraries (tests/node/secrets.js): the secrets
sit in URLs, query strings, Authorization headers, AWS key ids and JWTs inside the error a
processor throws (so in failedReason, the stack trace and BullMQ's events stream), in
job.log lines, and in data fields; a worker log file carries them too. Every string cell of
every saved table, the manifest and the CLI's outputs are searched for them.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

import forensics
from conftest import forensics_cli, run_node
from forensics.redact import Redaction
from forensics.snapshot import OPTIONAL, TABLES

# ---- the text rules --------------------------------------------------------------------------

LEAKS = [  # (text, the secret that must go, what must stay)
    ("request to https://admin:s3cr3t-pw@api.example.com/v1 failed", "s3cr3t-pw", "admin:"),
    ("redis://:redispw99@cache:6379/0 refused", "redispw99", "@cache:6379"),
    ("GET https://api.example.com/x?token=abc123xyz&page=2 -> 401", "abc123xyz", "page=2 -> 401"),
    ("https://s3.amazonaws.com/b/k?X-Amz-Signature=f00dfeed99&X-Amz-Expires=60", "f00dfeed99", "X-Amz-Expires=60"),
    ("Authorization: Bearer abcdef.ghijkl.mnop", "abcdef.ghijkl.mnop", "Authorization: Bearer"),
    ('headers {"Authorization":"Basic dXNlcjpwYXNz"}', "dXNlcjpwYXNz", '"Authorization":"Basic '),
    ("proxy-authorization=tok_777", "tok_777", "proxy-authorization="),
    ("sent Bearer zzzzzzzzzzzz upstream", "zzzzzzzzzzzz", "upstream"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fwpMeJf36 bad", "SflKxwRJSMeKKF2QT4fwpMeJf36",
     "bad"),
    ("key AKIAIOSFODNN7EXAMPLE denied", "AKIAIOSFODNN7EXAMPLE", "denied"),
    ("role AROAJ2UCCR6DPCEXAMPL assumed", "AROAJ2UCCR6DPCEXAMPL", "assumed"),
    ("private_key=k3y-material-9 loaded", "k3y-material-9", "private_key="),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI", "aws_secret_access_key="),
    ("password=hunter2 and db_password: 'two words'", "two words", "db_password"),
    ('Error: bad {\\"apiKey\\":\\"k-9911\\"}', "k-9911", "apiKey"),
    ("token ghp_" + "a1" * 18 + " expired", "a1a1a1a1", "expired"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIB\n-----END RSA PRIVATE KEY-----", "MIIEowIB", "[REDACTED:private-key]"),
]
BENIGN = [
    "connect ECONNREFUSED 127.0.0.1:6379",
    "TokenExpiredError: jwt expired",
    "tests passed: 5, secretary: Bob",
    "Request failed with status code 503",
    "job 42 failed: upstream timeout after 30000 ms",
    "see https://docs.example.com/errors#E42",
]


@pytest.mark.parametrize("text,secret,kept", LEAKS)
def test_secrets_in_free_text_are_redacted(text, secret, kept):
    red, n = Redaction().text(text)
    assert secret not in red and kept in red and n >= 1
    assert Redaction().text(red) == (red, 0)                 # a fixed point: redacting again changes nothing
    assert Redaction(secrets=False).text(text) == (text, 0)  # --no-redact keeps it


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_errors_are_left_alone(text):
    assert Redaction().text(text) == (text, 0)


def test_extra_field_patterns():
    r = Redaction(fields=("ssn|e-?mail",))
    red, n = r.json_text('{"ssn":"123-45-6789","contact":{"Email":"a@b.example"},"note":"ssn=987-65-4321"}')
    assert "123-45-6789" not in red and "a@b.example" not in red and "987-65-4321" not in red and n == 3
    assert json.loads(red)["contact"] == {"Email": "[REDACTED]"}
    with pytest.raises(forensics.ForensicsError, match="not a regular expression"):
        Redaction(fields=("(",))
    with pytest.raises(forensics.ForensicsError, match="look-around"):
        Redaction(fields=("(?<!x)ssn",))


# ---- on states the real libraries write --------------------------------------------------------

def every_string(path) -> str:
    """Every string cell of every table of a saved snapshot, and its manifest."""
    snap = forensics.load(path)
    parts = [(path / "manifest.json").read_text()]
    for name in TABLES + tuple(n for n in OPTIONAL if snap.has_logs):
        df = getattr(snap, name)
        for col in df.columns:
            if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]) or \
                    isinstance(df[col].dtype, pd.CategoricalDtype):
                parts.append("\n".join(df[col].dropna().astype(str)))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def leaky(redis_server, tmp_path_factory):
    """Queues whose jobs leak secrets (BullMQ 5 and Bull), and a worker log file that does."""
    out = {}
    for lib in ("bullmq5", "bull"):
        prefix = f"leak-{lib}"
        out[lib] = (prefix, json.loads(run_node("secrets.js", lib, redis_server.url(0), prefix, "pay", "6")))
    secrets = out["bullmq5"][1]["secrets"]
    log = tmp_path_factory.mktemp("leaky-logs") / "worker.log"
    log.write_text("\n".join([
        json.dumps({"level": 50, "time": 1764000000000, "msg": f"job 1 failed: upstream https://svc:{secrets[0]}"
                    f"@api.example.com/v1?access_token={secrets[1]}", "jobId": "1", "queue": "pay"}),
        json.dumps({"level": 30, "time": 1764000000100, "msg": "calling upstream",
                    "headers": {"authorization": f"Bearer {secrets[2]}"}}),
        f"2025-11-24T16:00:01Z ERROR job 2 failed: Authorization: Bearer {secrets[2]} rejected",
        f"garbage line with password={secrets[5]}",
    ]) + "\n")
    return out, log


@pytest.mark.parametrize("lib", ["bullmq5", "bull"])
def test_a_capture_keeps_no_secret_anywhere(redis_server, leaky, tmp_path, lib):
    (libs, log) = leaky
    prefix, planted = libs[lib]
    secrets, markers = planted["secrets"], planted["markers"]
    ssn = "123-45-6789"
    raw = tmp_path / "raw"
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix, "--no-redact",
                        "--logs", str(log), "--out", str(raw), "--quiet")
    assert res.returncode == 0, res.stderr
    leaked = every_string(raw)
    assert all(s in leaked for s in secrets), "the libraries did not store the secrets: this test proves nothing"

    out = tmp_path / "red"
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix, "--redact-field", "ssn",
                        "--logs", str(log), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    text = every_string(out)
    found = [s for s in secrets + [ssn] if s in text]
    assert not found, f"secrets kept in the snapshot: {found}"
    assert all(m in text for m in markers)                   # ordinary values are kept
    snap = forensics.load(out)
    failed = snap.jobs[snap.jobs["state"] == "failed"]
    assert len(failed) == 6
    assert failed["failed_reason"].str.contains("https://svc:[REDACTED]@api.example.com/v1/charge", regex=False).all()
    assert (failed["redacted_fields"] > 0).all()
    assert snap.manifest["options"]["redact_fields"] == ["ssn"]
    for cmd in (["diagnose", str(out), "--format", "json"], ["explain", str(out), str(failed["job_id"].iloc[0])],
                ["summary", str(out)], ["diagnose", str(out), "--logs", str(log)]):
        res = forensics_cli(*cmd)
        assert res.returncode in (0, 1), res.stderr
        assert not [s for s in secrets if s in res.stdout + res.stderr], cmd
    # one error, one fingerprint: redaction does not split the failure into per-secret variants
    assert snap.jobs.loc[failed.index, "failed_reason"].nunique() == 1


def test_no_data_keeps_sizes_shapes_and_names_only(redis_server, leaky, tmp_path):
    (libs, log) = leaky
    prefix, planted = libs["bullmq5"]
    full, bare = tmp_path / "full", tmp_path / "bare"
    for path, extra in ((full, []), (bare, ["--no-data"])):
        res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", prefix, "--logs", str(log),
                            "--out", str(path), "--quiet", *extra)
        assert res.returncode == 0, res.stderr
    text = every_string(bare)
    values = planted["secrets"] + planted["markers"] + ["user-0", "user-5", "api.example.com", "hooks.example.com"]
    assert not [v for v in values if v in text]
    a, b = forensics.load(full), forensics.load(bare)
    assert b.manifest["options"]["no_data"] is True
    assert "none kept (--no-data)" in forensics_cli("summary", str(bare)).stdout
    cols = ["job_id", "state", "name", "attempts_made", "data_bytes", "stacktrace_bytes"]
    pd.testing.assert_frame_equal(a.jobs[cols].sort_values("job_id").reset_index(drop=True),
                                  b.jobs[cols].sort_values("job_id").reset_index(drop=True))
    shape = json.loads(b.payloads["data"].dropna().iloc[0])
    assert set(shape) == {"user", "note", "password", "ssn", "callback"}
    assert shape["user"].startswith("<string ") and shape["user"].endswith(" B>")
    assert b.payloads["logs"].isna().all() and (b.jobs["log_count"] == 1).all()
    # The failure still reads as one error, by its wording; the diagnosis is the same.
    assert b.jobs["failed_reason"].dropna().str.startswith("upstream https://<host>").all()
    ids = lambda snap: sorted(forensics.diagnose(snap).findings["id"])  # noqa: E731
    assert ids(b) == ids(a)
    assert b.logs["message"].notna().any() and not b.logs["message"].str.contains("svc:").any()


def test_a_bad_field_pattern_is_one_line(redis_server, tmp_path):
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--redact-field", "(",
                        "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and res.stderr.strip().startswith("forensics: --redact-field '('")
    assert len(res.stderr.strip().splitlines()) == 1
