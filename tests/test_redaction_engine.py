"""The RE2 text rules (forensics.textrules) against the Python ``re`` rules they replaced
(tests/redact_oracle.py): the same output on every text without a blob, a blob kept or
replaced as a unit, and time linear in the text (checked by counting, not by a clock)."""
from __future__ import annotations

import base64
import json
import os
import random
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import redact_oracle as oracle
from forensics import textrules
from forensics.redact import Redaction
from test_redaction import BENIGN, LEAKS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))

WORDS = ["password", "Passwd", "db_password", "api_key", "apiKey", "apİkey", "APIKEY", "TokenExpiredError",
         "secretary", "passed", "token", "pwd", "cookie", "session-id", "X-Amz-Signature", "AUTH_HEADER",
         "exception", "tokenEXCEPTİON", "Error", "Authorization", "proxy-authorization", "authorıZation",
         "Bearer", "basic", "bearer", "Negotiate", "https", "redis", "eyJhbGciOiJI", "eyJzdWIiOi", "AKIAIOSFODNN7EXAMPLE",
         "ASIA1234567890ABCDEF", "ghp_", "a1" * 16, "sk_live_", "AIza", "xoxb-", "github_pat_",
         "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----",
         "[REDACTED]", "[redacted]", "[REDACTED:jwt]", "user", "x", "é", "K", "ſ", "ı", "İ", "ü", "_", "٣",
         "1234567890abcdef", "passwordX", "tokenCount", "credential", "private-key", "ssn", "e-mail"]
SEPS = ["=", ":", ": ", " = ", '"', "'", '\\"', "\\", "://", "@", "/", "?", "&", ";", ",", " ", "  ", "\t", "\n",
        "\u2003", "\u00a0", "\x1c", ".", "-", "{", "}", "[", "]", "<", ">", "(", ")", "+", "==", "~"]
PIECES = st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(SEPS),
                            st.text(st.characters(exclude_categories=["Cs"]), max_size=6)), max_size=40).map("".join)
FIELDS = st.sampled_from([(), ("ssn|e-?mail",), ("^user$",), ("x",)])


def engine(fields=(), secrets=True):
    return Redaction(secrets=secrets, fields=fields)


def test_whitespace_is_pythons():
    every = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    assert textrules.WHITESPACE == "".join(c for c in every if re.fullmatch(r"\s", c))


@pytest.mark.parametrize("text", [t for t, _, _ in LEAKS] + BENIGN)
def test_the_corpus_reads_as_before(text):
    assert engine().text(text) == oracle.text(text)


@settings(max_examples=EXAMPLES * 10)
@given(PIECES, FIELDS)
@example('x"token": "[REDACTED] and token=abc"', ())
@example("TokenExpiredError: password=abc", ())
@example("éAKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLEé", ())
@example('Authorization: "Bearer  " authorization: "[REDACTED] x" Authorization:basic ', ())
@example("https://u:[REDACTED]@h https://v:w@h éhttps://a:b@c", ())
@example("exceptİon: 1 tokenExceptİon=5 passwordERROR=3 a_token\u2003=\u2003v apİkey=1", ())
@example("-----BEGIN PRIVATE KEY-----\nabc", ())
@example("user=bob ssn: 1 E-Mail='x'", ("ssn|e-?mail", "^user$"))
def test_the_same_output_as_the_old_rules_on_any_text_without_a_blob(text, fields):
    red = engine(fields)
    assert red.text(text) == oracle.text(text, fields)
    assert engine(fields, secrets=False).text(text) == oracle.text(text, fields, secrets=False)


def _b64(n: int, seed: int, alphabet: str = "std") -> str:
    raw = random.Random(seed).randbytes(n * 3 // 4 + 3)
    enc = base64.b64encode(raw) if alphabet == "std" else base64.urlsafe_b64encode(raw)
    return enc.decode()[:n]


def test_a_blob_is_kept_or_replaced_whole():
    r = Redaction()
    # The key word of a key=value sits inside the blob: ...pwdX + "=" padding. Not a secret.
    blob = _b64(3000, 1, "url")[:-20] + "QpwdXyZ="
    for text in (blob + "=", f'{{"thumb":"{blob}="}}'):
        assert r.text(text) == (text, 0)
        assert r.json_text(text)[0] == text
    assert oracle.text(blob + "=")[1] == 1   # the old rules redacted the padding
    # A blob that is a value goes whole.
    assert r.text(f"token={blob}= rest") == ("token=[REDACTED] rest", 1)
    assert r.json_text(json.dumps({"apiKey": blob, "n": 1})) == ('{"apiKey": "[REDACTED]", "n": 1}', 1)  # as written
    # A Buffer's bytes are one unit: its numbers are not walked one by one.
    buf = json.dumps({"type": "Buffer", "data": list(range(256)) * 100, "password": "p"})
    out, n = r.json_text(buf)
    assert n == 1 and json.loads(out)["data"] == list(range(256)) * 100


def test_secrets_beside_and_inside_blobs_are_still_found():
    r = Redaction()
    blob = _b64(200_000, 2)
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJ" + _b64(600, 3, "url").replace("-", "a").replace("_", "b") + "." + \
        _b64(342, 4, "url").replace("-", "a").replace("_", "b")
    pem = "-----BEGIN PRIVATE KEY-----" + _b64(1600, 5) + "-----END PRIVATE KEY-----"
    doc = json.dumps({"pdf": blob, "headers": {"authorization": f"Bearer {jwt}"}, "note": f"aws AKIAIOSFODNN7EXAMPLE",
                      "key": pem, "image": "data:image/png;base64," + blob})
    out, n = r.json_text(doc)
    assert jwt not in out and "AKIAIOSFODNN7EXAMPLE" not in out and _b64(1600, 5) not in out and n >= 3
    back = json.loads(out)
    assert back["pdf"] == blob and back["image"] == "data:image/png;base64," + blob


def test_a_token_shape_that_random_base64_spells_inside_a_blob_is_no_token():
    """Random base64 spells `+AIza` and 35 more key characters now and then (a thumbnail
    capture of 100 MB met one): a blob keeps it. The same shape standing alone is a key."""
    r = Redaction()
    blob = _b64(3000, 7)
    inside = blob[:1000] + "+AIza" + "Q" * 35 + blob[1000:]
    assert r.text(inside) == (inside, 0)
    assert r.json_text(json.dumps({"thumb": inside}))[1] == 0
    assert r.text("key AIza" + "Q" * 35 + " for maps") == ("key [REDACTED:token] for maps", 1)
    assert r.text(f"{blob} ghp_{'a' * 36} {blob}")[0] == f"{blob} [REDACTED:token] {blob}"   # beside a blob


@pytest.mark.parametrize("alphabet", ["std", "url"])
def test_work_is_linear_in_the_text(alphabet, monkeypatch):
    """RE2 searches made per text: a bounded number per rule, whatever the size (the old
    rules backtracked: minutes on 100 KB of base64url). Counted, not timed."""
    calls = []
    real = textrules.TextRules._one

    def counting(rule, b):
        calls.append(rule.name)
        return real(rule, b)
    monkeypatch.setattr(textrules.TextRules, "_one", staticmethod(counting))
    r = Redaction()
    for n in (10_000, 1_000_000):
        calls.clear()
        blob = _b64(n, n, alphabet)
        assert r.text(blob + "==")[0] == blob + "=="
        assert len(calls) <= 2   # the gate rules out nearly every rule; at most the key=value pass runs


KEYS = st.one_of(st.sampled_from(WORDS), PIECES.map(lambda t: t[:12]))
DOCS = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), PIECES),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=16)


@settings(max_examples=EXAMPLES * 10)
@given(DOCS, FIELDS)
@example({"apiKey": "x", "n": 1, "nested": {"password": 12, "token": None, "sessionId": [1, 2], "Cookie": "[REDACTED]"}},
         ())
@example({"pass\"word": "v", "sessİonId": "s", "a,": ":password", "x": "\"password\": 1"}, ())
@example([{"type": "Buffer", "data": [1, 2]}, {"ssn": 1, "E-Mail": {"x": 2}}], ("ssn|e-?mail",))
def test_json_documents_read_as_before(doc, fields):
    """Keys found by RE2 in the text, values replaced in place: the same text and count as
    parsing, walking every key and dumping again, for JSON written compactly (as
    JSON.stringify and cjson write it). (A Buffer's bytes are skipped now: no secret in them.)"""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    assert Redaction(fields=fields).json_text(text) == oracle.json_text(text, fields)
