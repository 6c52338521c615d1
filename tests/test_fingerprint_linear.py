"""Fingerprints in bounded time on megabyte messages, and the same as before on ordinary ones.

Two rules (e-mail, id) used to try a match at every word boundary inside a long run of
``[\\w.+-]`` and rescan the run each time: 1 MB of base64url took 132 s, "a.a.a..." never ended.
They now start where a run starts, and only the first FIRST_LINE_CHARS characters of a first
line are normalised. tests/fingerprint_oracle.py keeps the old rules."""
from __future__ import annotations

import base64
import os
import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

import fingerprint_oracle as oracle
from forensics.fingerprint import FIRST_LINE_CHARS, fingerprint, normalise
from forensics.redact import event_fields_shape, stacktrace_json_shape

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
PIECES = ["a", "b1", "x9-y", "-", "--", ".", "+", "@", "user.name+tag@mail.example.com", "a@b", "@x.y", "ab12cd",
          "0x1f", "deadbeefcafe1234", "12", "3.5", "10.0.0.1:6379", "/usr/lib/x.js", "'q'", '"dq"', "`t`",
          "status 503", "HTTP/1.1 404", "code=400", "https://h.example/p?q=1", "redis://c:6379", " ", "\t", "_",
          "é", "٣", "K", "ı", "550e8400-e29b-41d4-a716-446655440000", "\x01A\x01", "job-42", "q_17x"]
MESSAGES = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=5)), max_size=40).map("".join)


@settings(max_examples=EXAMPLES * 10)
@given(MESSAGES)
@example("x.a.b@mail.example.com and -.-a1-b2- then a@b@c.org")
@example("--ab12 -- 1-a a1- -x-")
def test_the_same_fingerprint_as_before(message):
    assert normalise(message) == oracle.fingerprint(message)
    fp = fingerprint(message)
    assert fingerprint(fp) == fp


def _runs(n: int) -> dict[str, str]:
    rnd = random.Random(n)
    return {
        "base64url": base64.urlsafe_b64encode(rnd.randbytes(n)).decode()[:n],
        "base64": base64.b64encode(rnd.randbytes(n)).decode()[:n],
        "dots": "a." * (n // 2),
        "dashes": "a1-" * (n // 3),
        "email-like": ("x.y+" * (n // 4)) + "@mail.example.com",
    }


def test_megabyte_first_lines_are_read_up_to_the_bound():
    for kind, text in _runs(1_000_000).items():
        fp = fingerprint(text + "\nsecond line")
        assert fp == fingerprint(text[:FIRST_LINE_CHARS]), kind
        assert fingerprint(fp) == fp and len(fp) <= 300, kind
        # the --no-data shapes that fingerprint first lines: a stack, an event's failedReason
        assert stacktrace_json_shape(f'["{text}\\n    at f (x.js:1:2)"]').endswith('at f (x.js:1:2)"]'), kind
        assert "returnvalue_bytes" in event_fields_shape(f'{{"returnvalue":"{text}","failedReason":"{text}"}}'), kind
