"""Snapshot files: exact round trip, and clear errors for folders that are not snapshots."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import forensics
from forensics.errors import SnapshotError
from forensics.snapshot import SCHEMA_VERSION, TABLES

from conftest import forensics_cli


@pytest.fixture(scope="module")
def saved(captured, tmp_path_factory):
    snap, _ = captured("bullmq5")
    path = tmp_path_factory.mktemp("snaps") / "incident"
    assert snap.save(path) == str(path)
    return snap, path


def test_round_trip_is_exact(saved):
    snap, path = saved
    back = forensics.load(path)
    for name in TABLES:
        a, b = getattr(snap, name), getattr(back, name)
        assert len(a) > 0 or name in ("workers", "metrics"), name
        pd.testing.assert_frame_equal(a, b, check_dtype=True, obj=name)
    assert back.manifest == snap.manifest
    assert back.complete and back.path == str(path)


def test_manifest_records_what_design_lists(saved):
    _, path = saved
    m = json.loads((path / "manifest.json").read_text())
    assert m["schema_version"] == SCHEMA_VERSION
    for key in ("captured_at", "source", "redis_version", "tool_version", "options", "complete",
                "duration_s", "commands", "row_counts"):
        assert key in m, key
    assert m["commands"]["HGETALL"] >= m["row_counts"]["jobs"]
    assert "KEYS" not in m["commands"]
    assert m["row_counts"]["jobs"] == len(forensics.load(path).jobs)
    assert m["redis_version"].count(".") == 2


def test_payloads_load_lazily(saved):
    _, path = saved
    back = forensics.load(path)
    assert "payloads" not in back._tables
    assert len(back.payloads) == len(back.jobs)
    assert "payloads" in back._tables


def _broken(tmp_path, saved, how):
    _, path = saved
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    how(bad)
    return bad


@pytest.mark.parametrize("case,how,message", [
    ("no manifest", lambda p: (p / "manifest.json").unlink(), "is not a snapshot: it has no manifest.json"),
    ("garbage manifest", lambda p: (p / "manifest.json").write_text("{oops"), "manifest.json is damaged"),
    ("newer schema", lambda p: (p / "manifest.json").write_text(json.dumps(
        {**json.loads((p / "manifest.json").read_text()), "schema_version": SCHEMA_VERSION + 1})),
     "newer than this queue-forensics"),
    ("missing table", lambda p: (p / "jobs.parquet").unlink(), "jobs.parquet is missing"),
    ("truncated table", lambda p: (p / "jobs.parquet").write_bytes((p / "jobs.parquet").read_bytes()[:200]),
     "table jobs at"),
    ("row count mismatch", lambda p: (p / "manifest.json").write_text(json.dumps(
        {**json.loads((p / "manifest.json").read_text()),
         "row_counts": {**json.loads((p / "manifest.json").read_text())["row_counts"], "queues": 99}})),
     "queues has"),
])
def test_damaged_snapshots_give_one_clear_error(tmp_path, saved, case, how, message):
    bad = _broken(tmp_path, saved, how)
    with pytest.raises(SnapshotError, match=message.replace(".", r"\.")):
        forensics.load(bad)
    res = forensics_cli("summary", str(bad))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr


def test_not_a_folder_or_missing(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(SnapshotError, match="is a file"):
        forensics.load(f)
    with pytest.raises(SnapshotError, match="no such snapshot folder"):
        forensics.load(tmp_path / "nope")


def test_save_refuses_to_overwrite_a_foreign_folder(saved, tmp_path):
    snap, _ = saved
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(SnapshotError, match="not a snapshot folder"):
        snap.save(other)
    assert (other / "notes.txt").read_text() == "keep me"
    # Re-saving over a snapshot replaces it.
    again = tmp_path / "again"
    snap.save(again)
    snap.save(again)
    assert len(forensics.load(again).jobs) == len(snap.jobs)


def test_html_summary_is_a_string_and_escapes_snapshot_text(saved):
    snap, _ = saved
    html = snap._repr_html_()
    assert isinstance(html, str) and "<table" in html and "mail" in html
    # Failure texts come from job processors (user-controlled): escaped, never markup.
    back = forensics.load(saved[1])
    jobs = back.jobs
    jobs.loc[jobs["state"] == "failed", "failed_reason"] = "<script>alert(1)</script>"
    out = back._repr_html_()
    assert "<script>alert(1)</script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_damaged_attached_logs_fail_at_load(tmp_path):
    example = Path(__file__).resolve().parent.parent / "snapshots" / "example"   # carries worker logs
    bad = tmp_path / "bad"
    shutil.copytree(example, bad)
    (bad / "logs.parquet").write_bytes((bad / "logs.parquet").read_bytes()[:100])
    with pytest.raises(SnapshotError, match="table logs at"):
        forensics.load(bad)
    assert len(forensics.load(example).logs) == 32


def test_manifest_lists_every_file_with_size_rows_and_sha256(saved):
    import hashlib
    _, path = saved
    files = json.loads((path / "manifest.json").read_text())["files"]
    on_disk = sorted(p.name for p in path.glob("*.parquet"))
    assert sorted(files) == on_disk
    for name, f in files.items():
        data = (path / name).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
        assert f["rows"] == forensics.load(path).row_count(name.removesuffix(".parquet"))


def _flip_byte_in_a_data_page(p: Path) -> None:
    """Damage payloads.parquet where only a hash can tell: same size, footer intact."""
    f = p / "payloads.parquet"
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0xFF
    f.write_bytes(bytes(data))


def test_verify_finds_what_the_cheap_checks_cannot(tmp_path, saved):
    bad = _broken(tmp_path, saved, _flip_byte_in_a_data_page)
    forensics.load(bad)  # sizes, rows and footers still match: loading stays cheap
    with pytest.raises(SnapshotError, match="payloads.parquet does not match its sha256"):
        forensics.load(bad, verify=True)
    res = forensics_cli("verify", str(bad))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "payloads.parquet does not match its sha256" in lines[0] and str(bad) in lines[0]
    good = forensics_cli("verify", str(saved[1]))
    assert good.returncode == 0 and "sizes, row counts and sha256 match the manifest" in good.stdout


def test_a_replaced_file_with_the_same_rows_fails_on_its_size(tmp_path, saved):
    def recompress(p):
        pd.read_parquet(p / "workers.parquet").to_parquet(p / "workers.parquet", compression="gzip", index=False)
        pd.read_parquet(p / "redis.parquet").to_parquet(p / "redis.parquet", compression="gzip", index=False)
    bad = _broken(tmp_path, saved, recompress)
    with pytest.raises(SnapshotError, match=r"(workers|redis)\.parquet is [\d,]+ bytes, the manifest says"):
        forensics.load(bad)


def test_verify_a_series_names_the_damaged_member(tmp_path, saved):
    _, path = saved
    series = tmp_path / "series"
    for member in ("20261203T000000Z", "20261203T000100Z"):
        shutil.copytree(path, series / member)
    ok = forensics_cli("verify", str(series))
    assert ok.returncode == 0 and ok.stdout.count("ok  ") == 2
    _flip_byte_in_a_data_page(series / "20261203T000100Z")
    res = forensics_cli("verify", str(series))
    assert res.returncode == 2 and "20261203T000100Z" in res.stderr and "payloads.parquet" in res.stderr


def test_verify_an_older_snapshot_says_what_it_could_check(tmp_path, saved):
    def legacy(p):  # as saved before the manifest listed its files
        m = json.loads((p / "manifest.json").read_text())
        del m["files"]
        (p / "manifest.json").write_text(json.dumps(m))
    old = _broken(tmp_path, saved, legacy)
    res = forensics_cli("verify", str(old))
    assert res.returncode == 0 and "no file sizes or hashes to check" in res.stdout
