"""Payloads at the sizes users have, written and processed by the real BullMQ 5 and Bull
(tests/node/payloads.js): job data carrying base64 documents of 50 KB to 2 MB beside
ordinary fields and secrets, 50 KB base64 thumbnails returned by 2,000 jobs removed on
completion (BullMQ's events stream holds them: over 100 MB), failures and job logs that
leak credentials.

Redacted by default, such a capture must equal the ``--no-redact`` one except where the
planted secrets were; a stop (SIGTERM) while the big stream is read and redacted must end
the capture with exit 4 and a partial snapshot that loads and verifies. (Throughput is the
bench's business: nothing here is timed.)"""
from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pandas as pd
import pytest

import forensics
from conftest import RedisServer, forensics_cli, forensics_exe, run_node

DB = 0
LIBS = {"bullmq5": ("sz-mq", 8, 2000), "bull": ("sz-bull", 8, 20)}


@pytest.fixture(scope="module")
def big_redis(tmp_path_factory):
    """A Redis of its own: 120 MB of payloads would weigh on every save of the session's."""
    srv = RedisServer(tmp_path_factory.mktemp("payloads"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def payload_queues(big_redis):
    out = {}
    for lib, (prefix, docs, thumbs) in LIBS.items():
        out[lib] = json.loads(run_node("payloads.js", lib, big_redis.url(DB), prefix, "docs", str(docs), str(thumbs),
                                       timeout=300))
    return out


def strings(snap: forensics.Snapshot, name: str) -> pd.DataFrame:
    df = getattr(snap, name)
    keys = {"jobs": ["prefix", "queue", "job_id"], "payloads": ["prefix", "queue", "job_id"],
            "events": ["prefix", "queue", "stream_id"]}[name]
    return df.astype({k: "str" for k in keys}).sort_values(keys).reset_index(drop=True)


def scrub(value, secrets: list[str]):
    if not isinstance(value, str):
        return value
    for s in secrets:
        value = value.replace(s, "[REDACTED]")
    return value


@pytest.mark.parametrize("lib", list(LIBS))
def test_megabyte_payloads_redacted_by_default_differ_only_where_the_secrets_were(big_redis, payload_queues, lib,
                                                                                  tmp_path):
    prefix = LIBS[lib][0]
    planted = payload_queues[lib]
    secrets = planted["secrets"]
    raw, red = tmp_path / "raw", tmp_path / "red"
    for out, extra in ((raw, ["--no-redact"]), (red, [])):
        res = forensics_cli("capture", "--redis", big_redis.url(DB), "--prefix", prefix, "--out", str(out),
                            "--quiet", *extra)
        assert res.returncode == 0, res.stderr
    a, b = forensics.load(raw, verify=True), forensics.load(red, verify=True)
    jobs = a.jobs
    docs = jobs[jobs["name"].astype(str) == "convert"]
    assert len(docs) == planted["documents"] and docs["data_bytes"].max() > 2 * 1024 * 1024   # the 2 MB document
    everything = "\n".join(str(v) for t in ("jobs", "payloads", "events") for c in getattr(a, t).columns
                           for v in getattr(a, t)[c].dropna().astype(str))
    assert all(s in everything for s in secrets), "the library did not store every secret: this test proves nothing"
    if lib == "bullmq5":   # the thumbnails' return values live on in the stream only
        completed = a.events[a.events["event"] == "completed"]
        assert len(completed) >= planted["thumbnails"]
        assert completed["fields"].str.len().sum() > 100_000_000   # 100 MB of return values
    for name in ("jobs", "payloads", "events"):
        x, y = strings(a, name), strings(b, name)
        assert len(x) == len(y), name
        for col in x.columns:
            if col == "redacted_fields":
                continue
            text = x[col].dtype == object or pd.api.types.is_string_dtype(x[col])
            want = x[col].map(lambda v: scrub(v, secrets)) if text else x[col]
            for i, (got, exp) in enumerate(zip(y[col].tolist(), want.tolist())):
                if not same(got, exp):
                    raise AssertionError(f"{name}.{col} row {i}: {first_difference(got, exp)}")
    assert (b.jobs.loc[b.jobs["name"].astype(str) == "convert", "redacted_fields"] >= 2).all()   # apiKey, callback


def test_return_values_are_judged_by_their_weight_too(big_redis, payload_queues):
    """2,000 thumbnails of 50 KB, each under the 100 KB a single value is judged by, weigh
    100 MB in the events stream together: oversized-returnvalue says so (and the stream's
    bloat is explained by it). Bull's 26 such values (1.3 MB) are not worth a finding."""
    mq = forensics.diagnose(forensics.capture(big_redis.url(DB), prefix="sz-mq", no_data=True)).findings
    hit = mq[mq["id"] == "oversized-returnvalue"]
    assert len(hit) == 1, mq[["id", "queue", "title"]].to_string()
    ev = hit.iloc[0]["evidence"]
    assert ev["judged_by"] == "total" and ev["total_bytes"] > 100_000_000, ev
    assert ev["max_bytes"] < forensics.Thresholds().returnvalue_large_bytes
    assert ev["only_in_events_stream"] >= payload_queues["bullmq5"]["thumbnails"]
    assert hit.iloc[0]["severity"] == "high"       # 100 MB is most of this Redis
    bloat = mq[mq["id"] == "events-stream-bloat"].iloc[0]
    assert any(e["id"] == "oversized-returnvalue" for e in bloat["explained_by"])
    bull = forensics.diagnose(forensics.capture(big_redis.url(DB), prefix="sz-bull", no_data=True)).findings
    assert "oversized-returnvalue" not in set(bull["id"]), bull[["id", "queue", "title"]].to_string()


def missing(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def same(got, want) -> bool:
    a, b = missing(got), missing(want)
    return a and b if a or b else bool(got == want)


def first_difference(got, want) -> str:
    """Where two (megabyte) values part, in a few hundred characters."""
    if not (isinstance(got, str) and isinstance(want, str)):
        return f"{got!r} != {want!r}"[:400]
    k = next((i for i, (p, q) in enumerate(zip(got, want)) if p != q), min(len(got), len(want)))
    return f"at {k} of {len(got)}/{len(want)}: redacted {got[max(k - 60, 0):k + 60]!r}, expected {want[max(k - 60, 0):k + 60]!r}"


def xrange_calls(client) -> int:
    return client.info("commandstats").get("cmdstat_xrange", {}).get("calls", 0)


def test_sigterm_while_a_big_stream_is_redacted_keeps_what_was_read(big_redis, payload_queues, tmp_path):
    """SIGTERM once the first windows of the 100 MB stream are in: the capture stops within
    the stream (exit 4), and the windows already read and redacted are saved."""
    prefix = LIBS["bullmq5"][0]
    full = payload_queues["bullmq5"]
    watcher = big_redis.client()
    before = xrange_calls(watcher)
    out = tmp_path / "cut"
    proc = subprocess.Popen([forensics_exe(), "capture", "--redis", big_redis.url(DB), "--prefix", prefix,
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def watch():
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if xrange_calls(watcher) >= before + 2:
                proc.send_signal(signal.SIGTERM)
                return
            time.sleep(0.002)
    threading.Thread(target=watch, daemon=True).start()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 4, stderr
    assert "SIGTERM: stopping" in stderr and "INCOMPLETE" in stderr and "Traceback" not in stderr
    assert stdout.strip().splitlines()[-1] == str(out)
    snap = forensics.load(out, verify=True)
    assert snap.manifest["complete"] is False and "interrupted (SIGTERM)" in snap.manifest["incomplete_reason"]
    assert forensics_cli("verify", str(out)).returncode == 0
    events = snap.events
    assert 0 < len(events) < int(snap.queues["events_length"].iloc[0])       # part of the stream, kept
    assert len(snap.jobs) == full["documents"]                              # read before the stream
    kept = "\n".join(events["fields"].dropna())
    assert not [s for s in full["secrets"] if s in kept]
    assert "INCOMPLETE snapshot" in forensics.diagnose(out).to_table()


def test_a_stop_while_saving_lets_the_save_finish(tmp_path, capsys):
    """The first signal while what was read is being saved is acknowledged and the save goes
    on; a second one aborts it."""
    import os
    from forensics.capture.progress import finish_on_stop
    import sys
    with finish_on_stop("finishing the save of what was read", stream=sys.stderr):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        finished = True
    assert finished and "SIGTERM: finishing the save of what was read (send it again to abort)" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        with finish_on_stop("finishing the save", stream=sys.stderr):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
