"""Property tests (Hypothesis) on everything that reads what others wrote: job hashes, log
lines, key names, error messages, secrets in text and thresholds from the CLI.

The run is derandomized (the same examples on every run, so CI is reproducible) with
FUZZ_EXAMPLES examples per target (default 200); ``make fuzz`` runs many more with fresh
randomness. Inputs that once broke something are kept below as ``@example`` regression
cases.
"""
from __future__ import annotations

import base64
import json
import os
import random
import string

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from forensics.decode import JOB_COLUMNS, PAYLOAD_COLUMNS, decode_jobs
from forensics.errors import UsageError
from forensics.fingerprint import fingerprint, fingerprints
from forensics.keys import classify
from forensics.logs import read_logs
from forensics.redact import Redaction
from forensics.thresholds import Thresholds

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FRESH = bool(os.environ.get("FUZZ_FRESH"))   # make fuzz: new random inputs each run
settings.register_profile("forensics", max_examples=EXAMPLES, derandomize=not FRESH, deadline=None,
                          database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("forensics")

# Text as Redis hands it over: any Unicode (hiredis decodes with errors="replace", so lone
# surrogates never arrive), including NUL, controls, bidi marks and U+FFFD.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
NUMBERISH = st.one_of(st.integers(-2**63, 2**64).map(str), st.floats(allow_nan=True).map(repr),
                      st.sampled_from(["", " ", "NaN", "-0", "1e999", "0x1f", "١٢٣"]), TEXT)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12).map(lambda v: json.dumps(v, ensure_ascii=False))
VALUE = st.one_of(TEXT, NUMBERISH, JSONISH, st.sampled_from(['{"', "[", "null", '"unterminated', "{}" * 50]))
FIELDS = ["name", "data", "opts", "timestamp", "delay", "priority", "processedOn", "finishedOn", "attemptsMade",
          "atm", "ats", "stc", "stalledCounter", "failedReason", "stacktrace", "returnvalue", "progress",
          "parentKey", "parent", "pb", "rjk", "deid", "defa"]
HASH = st.dictionaries(st.one_of(st.sampled_from(FIELDS), TEXT), VALUE, max_size=12)
STATES = ["wait", "active", "delayed", "prioritized", "completed", "failed", "paused", "waiting-children", "orphan"]


@settings(max_examples=EXAMPLES if FRESH else max(EXAMPLES // 2, 1))   # the slowest target: half in make test
@given(st.lists(st.tuples(HASH, st.sampled_from(STATES), NUMBERISH), min_size=1, max_size=8),
       st.sampled_from([True, False, "no_data", "fields"]))
@example([({"data": '{"password":1}', "failedReason": "x?token=" + "9" * 40}, "failed", "1")], True)
@example([({"opts": '{"attempts":"3","backoff":{"type":"exponential","delay":"x"}}', "atm": "2.5"}, "wait", "nan")],
         True)
@example([({"timestamp": "1e999", "processedOn": "-1", "finishedOn": "9" * 30}, "delayed", "inf")], True)
@example([({}, "delayed", "3.777893186295716e+22")], True)        # found: a due time past int64
@example([({}, "prioritized", "3.961408125713217e+28")], True)    # found: a priority past int64
@example([({"stacktrace": ""}, "wait", "0")], "no_data")           # found: an empty stack trace, --no-data
def test_the_decoder_never_raises_and_keeps_every_row(rows, mode):
    ids = pd.DataFrame({"prefix": "bull", "queue": "q", "job_id": [str(i) for i in range(len(rows))],
                        "state": [s for _, s, _ in rows], "score": [sc for _, _, sc in rows],
                        "flavor": "bullmq"})
    redact = {"no_data": Redaction(no_data=True), "fields": Redaction(fields=("name|id",))}.get(mode, mode)
    jobs, payloads = decode_jobs(ids, [h for h, _, _ in rows], redact=redact)
    assert len(jobs) == len(rows) and len(payloads) == len(rows)
    assert list(jobs["job_id"]) == list(ids["job_id"])
    assert set(JOB_COLUMNS) <= set(jobs.columns) and set(PAYLOAD_COLUMNS) <= set(payloads.columns)
    for i, (h, _, _) in enumerate(rows):
        data = h.get("data")
        if isinstance(data, str) and data.strip() and data.lstrip()[0] not in '[{"0123456789-tfn':
            assert "data:json" in str(jobs["decode_errors"].iloc[i])  # counted, not fatal


def test_a_damaged_number_spoils_neither_its_neighbours_nor_the_other_fields():
    """The numeric fields of a chunk are parsed together in one pass when every value is a
    plain number; one damaged value sends its field alone through pandas' rules, and every
    job reads as it would alone."""
    hashes = [{"timestamp": " 12", "processedOn": "1796679164919", "finishedOn": "1e999", "atm": "1", "ats": "2"},
              {"timestamp": "1796679161466", "processedOn": "-1", "atm": "2", "ats": "2", "delay": "0x10"},
              {"timestamp": "1796679161467", "processedOn": "1796679164920", "finishedOn": "1796679164983",
               "atm": "0", "ats": "1", "delay": "250"}]
    ids = pd.DataFrame({"prefix": "bull", "queue": "q", "job_id": ["a", "b", "c"], "state": "failed",
                        "score": float("nan"), "flavor": "bullmq"})
    jobs, _ = decode_jobs(ids, hashes)
    ms = lambda col: [None if pd.isna(t) else int(t.timestamp() * 1000) for t in jobs[col]]   # noqa: E731
    assert ms("added_at") == [12, 1796679161466, 1796679161467]            # " 12": pandas reads it
    assert ms("processed_at") == [1796679164919, None, 1796679164920]      # -1: no time
    assert ms("finished_at") == [None, None, 1796679164983]                # 1e999: no time, no overflow
    assert jobs["attempts_made"].tolist() == [1, 2, 0] and jobs["attempts_started"].tolist() == [2, 2, 1]
    assert jobs["delay_ms"].isna().tolist() == [True, True, False] and jobs["delay_ms"].iloc[2] == 250
    for i in range(3):   # the same as each job decoded on its own
        alone, _ = decode_jobs(ids.iloc[i:i + 1], hashes[i:i + 1])
        pd.testing.assert_frame_equal(alone.reset_index(drop=True), jobs.iloc[i:i + 1].reset_index(drop=True))


LOG_LINE = st.one_of(
    TEXT.map(lambda t: t.replace("\n", " ").replace("\r", " ")),
    st.builds(lambda lvl, msg, extra: json.dumps({"level": lvl, "time": 1764000000000, "msg": msg, **extra}),
              st.one_of(st.integers(0, 70), st.sampled_from(["error", "warn", "info", None, "x"])), TEXT,
              st.dictionaries(st.sampled_from(["err", "jobId", "queue", "pid", "hostname", "stack", "memory"]),
                              st.one_of(TEXT, st.integers(), st.dictionaries(TEXT, TEXT, max_size=2)), max_size=3)),
    st.builds(lambda lvl, msg: f"2025-11-24T16:00:0{len(msg) % 10}Z {lvl} {msg}",
              st.sampled_from(["ERROR", "warn", "INFO", "fatal", ""]), TEXT),
    st.builds(lambda msg: f"    at fn ({msg}:1:2)", TEXT),
    st.sampled_from(["{", "{}", "[]", "null", '{"msg": 1}', "\ufeff{", "\x00", "\u202e}{", "   "]),
)


@given(st.lists(LOG_LINE.map(lambda s: s.replace("\n", " ").replace("\r", " ")), max_size=25))
@example(["    at orphan frame (x.js:1:1)"])
@example(['{"level":"error","time":"not a time","msg":null,"err":{"message":{"nested":1}}}'])
def test_every_log_line_is_parsed_or_counted(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz-logs") / "w.log"
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    df = read_logs(path)
    blank = sum(1 for ln in lines if not ln.strip())
    assert df.attrs["lines"] == len(lines)
    assert len(df) + df.attrs["unparsed"] + df.attrs["continued"] + blank == len(lines)


KEY_PART = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@given(st.lists(st.one_of(
    st.builds(lambda q, rest: f"bull:{q}:{rest}", st.sampled_from(["q", "a:b", "x"]), KEY_PART),
    st.builds(lambda rest: f"bull:{rest}", KEY_PART), KEY_PART), max_size=30),
    st.lists(st.sampled_from(["q", "a:b", "x", "", ":", "q:"]), max_size=3, unique=True))
@example(["bull:q:", "bull:q::lock", "bull:q:repeat:", "bull::", "bull:a:b:1:logs"], ["q", "a:b", ""])
def test_the_key_classifier_never_raises(keys, queues):
    df = classify(keys, "bull", queues)
    assert len(df) == len(keys)
    assert df["family"].notna().all()
    # the same keys as a Series pandas keeps in several Arrow chunks (a concat) read alike
    half = len(keys) // 2
    chunked = pd.concat([pd.Series(keys[:half], dtype="str"), pd.Series(keys[half:], dtype="str")],
                        ignore_index=True)
    pd.testing.assert_frame_equal(classify(chunked, "bull", queues), df)


MESSAGE = st.one_of(TEXT, st.builds(lambda a, n, b: f"{a} {n} {b}", TEXT, st.integers(), TEXT),
                    st.sampled_from(["status code 503 for user u17", "ECONNREFUSED 10.0.0.1:6379",
                                     "'quoted' \"double\" `tick`", "\x01A\x01 status 400", "<n> <id> <hex>"]))


@given(MESSAGE)
@example("\x01A\x01")                 # found: the status-code placeholder in the message itself
@example("status 400 \x01B\x01")
@example("0 \r0")                      # found: a first line ending in a space was not a fixed point
def test_fingerprints_are_stable_and_idempotent(message):
    fp = fingerprint(message)
    assert fp == fingerprint(message)
    assert fingerprint(fp) == fp
    assert fingerprints(pd.Series([message, message, None], dtype="str")).tolist()[:2] == [fp, fp]


SECRET = st.text(string.ascii_letters + string.digits, min_size=12, max_size=24).filter(
    lambda s: any(c.isdigit() for c in s) and any(c.isalpha() for c in s))
PLANT = [
    lambda s: f"https://user:{s}@host.example/x", lambda s: f"GET /x?token={s}&a=1", lambda s: f"?api_key={s}",
    lambda s: f"Authorization: Bearer {s}", lambda s: f"bearer {s}", lambda s: f'"password": "{s}"',
    lambda s: f"password={s}", lambda s: f"client_secret: {s}", lambda s: f'{{\\"token\\":\\"{s}\\"}}',
]


@given(TEXT, st.sampled_from(range(len(PLANT))), SECRET, TEXT)
@example("", 0, "abcdefgh1234", "")
def test_a_planted_secret_never_survives_redaction(before, how, secret, after):
    assume(secret not in before and secret not in after)
    text = f"{before} {PLANT[how](secret)} {after}"
    red, n = Redaction().text(text)
    assert secret not in red and n >= 1
    assert Redaction().text(red) == (red, 0)


@given(TEXT)
def test_redaction_is_a_fixed_point_on_any_text(text):
    red, _ = Redaction().text(text)
    assert Redaction().text(red) == (red, 0)


THRESHOLD_KEYS = list(Thresholds().as_dict())


@given(st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(THRESHOLD_KEYS), NUMBERISH),
    TEXT), max_size=4))
@example(["max_attempts=nan"])
@example(["trend_min_tau=-1"])
@example(["payload_large_bytes=1e999"])
def test_cli_thresholds_parse_or_say_why(items):
    try:
        t = Thresholds.parse(items)
    except UsageError as e:
        assert str(e) and "\n" not in str(e)
        return
    for k, v in t.as_dict().items():
        assert v == v and v >= 0 and v != float("inf"), k


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e999"])
def test_nonsense_thresholds_are_refused_by_the_cli(value):
    from conftest import forensics_cli
    res = forensics_cli("diagnose", "snapshots/example", "--threshold", f"max_attempts={value}")
    assert res.returncode == 2 and res.stderr.startswith("forensics: threshold max_attempts")


# ---- at the sizes users have: megabyte blobs beside secrets ----------------------------------------

def blob(kind: str, size: int, seed: int) -> str:
    """Binary content as job data carries it: base64 (PDFs, images), base64url, hex, a data: URL."""
    raw = random.Random(seed).randbytes(size * 3 // 4 + 2)
    if kind == "hex":
        return raw.hex()[:size]
    enc = (base64.urlsafe_b64encode if kind == "url" else base64.b64encode)(raw).decode()[:size]
    enc = enc[:len(enc) - len(enc) % 4] or "QUJD"
    return "data:application/pdf;base64," + enc if kind == "data-url" else enc


BLOB = st.builds(blob, st.sampled_from(["std", "url", "hex", "data-url"]),
                 st.sampled_from([300, 5_000, 100_000, 2_000_000]), st.integers(0, 2**32))


@settings(max_examples=max(EXAMPLES // 4, 10))
@given(st.lists(BLOB, min_size=1, max_size=3), st.sampled_from(range(len(PLANT))), SECRET, TEXT)
@example([blob("url", 2_000_000, 1)], 5, "abcdefgh1234", "")
def test_planted_secrets_go_and_blobs_stay_in_megabytes(blobs, how, secret, note):
    assume(secret not in note and not any(secret in b for b in blobs))
    text = " ".join(blobs[:1] + [PLANT[how](secret), note] + blobs[1:])
    red, n = Redaction().text(text)
    assert secret not in red and n >= 1
    assert all(b in red for b in blobs)                    # a blob is kept whole
    assert Redaction().text(red) == (red, 0)
    # (as a string inside JSON: the forms that are not escaped JSON already)
    doc = json.dumps({"file": blobs[0], "meta": {"note": note, "auth": PLANT[how % 8](secret)}, "password": secret})
    red, n = Redaction().json_text(doc)
    back = json.loads(red)
    assert secret not in red and back["file"] == blobs[0] and back["password"] == "[REDACTED]"
    assert Redaction().json_text(red) == (red, 0)


@settings(max_examples=max(EXAMPLES // 4, 10))
@given(BLOB, BLOB, SECRET, st.sampled_from([True, "no_data"]))
def test_the_decoder_keeps_megabyte_payloads_and_drops_their_secrets(data_blob, rv_blob, secret, mode):
    buffer = {"type": "Buffer", "data": list(data_blob[:3000].encode())}
    h = {"data": json.dumps({"pdf": data_blob, "apiKey": secret, "raw": buffer}),
         "returnvalue": json.dumps({"thumb": rv_blob}), "opts": '{"attempts":3}', "name": "convert",
         "failedReason": f"upload to https://svc:{secret}@files.example.com failed: {rv_blob[:5000]}",
         "stacktrace": json.dumps([f"Error: token={secret}\n" + "    at f (/app/x.js:1:2)\n" * 2000])}
    ids = pd.DataFrame({"prefix": "bull", "queue": "q", "job_id": ["1"], "state": "failed", "score": 1.0,
                        "flavor": "bullmq"})
    redact = Redaction(no_data=True) if mode == "no_data" else Redaction()
    jobs, payloads = decode_jobs(ids, [h], redact=redact)
    kept = "\n".join(str(v) for v in list(jobs.iloc[0]) + list(payloads.iloc[0]))
    assert secret not in kept
    assert jobs["data_bytes"].iloc[0] == len(h["data"].encode())
    if mode is True:
        assert json.loads(payloads["data"].iloc[0])["pdf"] == data_blob
        assert json.loads(payloads["returnvalue"].iloc[0])["thumb"] == rv_blob
    else:
        assert data_blob not in kept and rv_blob not in kept
