"""`forensics scan`: the application's JS/TS read statically (tree-sitter, nothing executed).
Fixtures under tests/fixtures/code mark each expected finding on its line with FLAG(id):
every marked line gets that id, nothing else is flagged, and the playbook's safe patterns
(good.js) are not flagged at all."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import forensics
import forensics.code as code
from conftest import ROOT, forensics_cli

FIX = ROOT / "tests" / "fixtures" / "code"


def files(where: str) -> list[Path]:
    p = FIX / where
    return sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]


def flags(where: str) -> set[tuple[str, int, str]]:
    """(file name, line, id) of every FLAG(id) marker in the fixture ``where``."""
    out = set()
    for f in files(where):
        if f.suffix in (".js", ".ts"):
            for i, line in enumerate(f.read_text().splitlines(), 1):
                for m in re.finditer(r"FLAG\((code-[a-z0-9-]+)\)", line):
                    out.add((f.name, i, m.group(1)))
    return out


def found(result) -> set[tuple[str, int, str]]:
    return {(Path(c["file"]).name, c["line"], f.id) for f in result.findings.itertuples() for c in f.evidence["code"]}


@pytest.mark.parametrize("where", ["playbook/bad.js", "app"])
def test_every_red_flag_is_found_at_its_line(where):
    result = code.scan(FIX / where)
    want = flags(where)
    assert want, "the fixture marks nothing: this test proves nothing"
    got = found(result)
    assert want <= got, sorted(want - got)
    # nothing is flagged on an unmarked line, except the queue's defaultJobOptions a finding
    # also names as the source of the option (and the code-wide graceful-close check)
    text = {f.name: f.read_text().splitlines() for f in files(where)}
    marked = {(f, line) for f, line, _ in want}
    for f, line, i in got - want:
        assert i == "code-no-graceful-close" or (f, line) in marked or "defaultJobOptions" in text[f][line - 1], \
            (f, line, i)


def test_the_playbooks_safe_patterns_are_not_flagged():
    result = code.scan(FIX / "playbook" / "good.js")
    assert len(result.sites) >= 4 and len(result.findings) == 0, result.to_table()


def test_the_red_flags_carry_the_playbooks_fix():
    f = code.scan(FIX / "playbook" / "bad.js").findings.set_index("id")
    assert "exponential" in f.loc["code-no-backoff", "remediation"]
    assert "process.on('SIGTERM'" in f.loc["code-no-graceful-close", "remediation"]
    assert "job.discard()" in f.loc["code-retries-client-errors", "remediation"]
    assert (f["family"] == "code").all()


def test_names_and_options_are_resolved_as_far_as_the_source_says():
    r = code.scan(FIX / "app")
    s = r.sites
    queues = set(s.loc[s["kind"] == "Queue", "queue"])
    assert {"emails", "reports-eu", "unresolved: process.env.QUEUE_NAME"} == queues   # enum, template, env
    emails = s[(s["kind"] == "Queue") & (s["queue"] == "emails")].iloc[0]
    assert json.loads(emails["default_job_options"])["removeOnComplete"] == {"count": 1000}   # spread of a const
    assert emails["attempts"] == 25 and emails["backoff_type"] == "fixed"
    w = s[s["kind"] == "Worker"].set_index("queue")
    assert w.loc["emails", "concurrency"] == 200 and bool(w.loc["emails", "reports_progress"])
    assert bool(w.loc["emails", "bounded"]) and not bool(w.loc["reports-eu", "reports_progress"])  # a named function
    assert r.packages == {"bullmq": "6.7.0"}          # the lockfile's version, not the range
    # one queue's failure handler does not cover another's
    dl = r.findings[r.findings["id"] == "code-no-dead-letter"]
    assert set(dl["queue"]) == {"reports-eu"}


def test_nestjs_modules_processors_and_injected_queues():
    r = code.scan(FIX / "nest")
    s = r.sites
    assert set(zip(s["kind"], s["queue"])) >= {("Queue", "mail"), ("Worker", "mail"), ("add", "mail"), ("on", "mail")}
    assert s.loc[s["kind"] == "on", "event"].tolist() == ["failed"]
    assert len(r.findings) == 0, r.to_table()        # bounded retries, cleanup, progress, a handler, shutdown hooks
    assert r.packages["@nestjs/bullmq"] == "^11.0.0"


def test_bad_input_is_skipped_and_counted_never_fatal(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.js").write_text("const q = new Queue('x', {{{{ ;; ))) function (")
    (src / "bundle.min.js").write_text("var a=1;" * 2000)
    (src / "image.js").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0" + os.urandom(2000))
    (src / "latin1.ts").write_bytes("const s = 'caf\xe9';".encode("latin-1"))
    (src / "loop").symlink_to(src, target_is_directory=True)          # a symlink loop
    (src / "node_modules").mkdir()
    (src / "node_modules" / "dep.js").write_text("new Queue('vendored').add({}, {attempts: Infinity})")
    (src / "ok.js").write_text("const { Queue } = require('bullmq');\nconst q = new Queue('jobs');\n"
                               "q.add('x', {}, { attempts: Infinity });\n")
    r = code.scan(src)
    assert r.skipped.counts == {"unparsable": 1, "minified": 1, "binary": 1, "not UTF-8": 1}, r.skipped.counts
    assert r.files == 1 and set(r.sites["queue"]) == {"jobs"}     # node_modules and the loop were not read
    assert "code-unbounded-attempts" in set(r.findings["id"])
    out = forensics_cli("scan", str(src), "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == "forensics.scan/1" and doc["skipped"]["counts"]["binary"] == 1


def test_the_cli_formats_and_fail_on(tmp_path):
    res = forensics_cli("scan", str(FIX / "app"), "--fail-on", "high")
    assert res.returncode == 1 and "code-v6-legacy-repeat" in res.stdout and "queues.ts:25" in res.stdout
    res = forensics_cli("scan", str(FIX / "nest"), "--fail-on", "low")
    assert res.returncode == 0 and "No findings." in res.stdout
    md = forensics_cli("scan", str(FIX / "playbook" / "bad.js"), "--format", "md")
    assert md.returncode == 0 and md.stdout.startswith("# Code scan") and "| `code-no-backoff` |" in md.stdout
    missing = forensics_cli("scan", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.startswith("forensics: no such file or folder")


@pytest.mark.parametrize("lockfile,text,want", [
    ("pnpm-lock.yaml", "lockfileVersion: '9.0'\npackages:\n\n  bullmq@5.81.5:\n    resolution: {integrity: x}\n", "5.81.5"),
    ("yarn.lock", '"bullmq@^5.0.0":\n  version "5.70.1"\n  resolved "x"\n', "5.70.1"),
    ("package-lock.json", '{"packages": {"node_modules/bullmq": {"version": "5.12.0"}}}', "5.12.0"),
])
def test_the_locked_version_is_the_one_reported(tmp_path, lockfile, text, want):
    (tmp_path / "package.json").write_text('{"dependencies": {"bullmq": "^5.0.0"}}')
    (tmp_path / lockfile).write_text(text)
    (tmp_path / "q.js").write_text("const { Queue } = require('bullmq');\nnew Queue('a');\n")
    assert code.scan(tmp_path).packages == {"bullmq": want}


# -- joined with a snapshot ----------------------------------------------------------------

def run_app(tmp_path: Path, lib: str, url: str, prefix: str, fixture: str = "runnable", as_name: str = "bull") -> None:
    """Runs the fixture app (tests/fixtures/code/<fixture>/app.js) with ``as_name`` (`bull`,
    `bullmq`) resolving to the pinned package alias ``lib`` (bull = Bull 4, bull3 = Bull 3,
    bullmq5 = BullMQ 5)."""
    import subprocess

    from conftest import NODE_DIR
    app = tmp_path / lib
    (app / "node_modules").mkdir(parents=True)
    (app / "node_modules" / as_name).symlink_to(NODE_DIR / "node_modules" / lib, target_is_directory=True)
    (app / "app.js").write_text((FIX / fixture / "app.js").read_text())
    res = subprocess.run(["node", "app.js", url, prefix], cwd=app, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")})
    assert res.returncode == 0 and "ready" in res.stdout, res.stderr[-2000:]


def test_code_joined_with_what_the_same_code_left_in_redis(redis_server, tmp_path):
    """The same app run on Bull 3 and Bull 4, captured, and its source scanned: Bull 3 keeps
    every completed job despite `removeOnComplete: {count: 5}` (it ignores the object form):
    the code and Redis disagree, and that is a finding naming both. Bull 4 keeps 5: no
    disagreement. Verdicts Redis cannot give come from the code, with file:line."""
    src = FIX / "runnable"
    for bull, prefix in (("bull3", "join-b3"), ("bull", "join-b4")):
        run_app(tmp_path, bull, redis_server.url(0), prefix)
    add_line = next(i for i, ln in enumerate((src / "app.js").read_text().splitlines(), 1)
                    if "invoices.add(" in ln)
    b3 = forensics.diagnose(forensics.capture(redis_server.url(0), prefix="join-b3"), code=src,
                            thresholds={"retention_max_jobs": 10})
    f = b3.findings.set_index("id")
    m = f.loc["code-redis-mismatch"]
    assert m["evidence"]["code_keeps"] == 5 and m["evidence"]["redis_completed"] == 30
    assert [(Path(c["file"]).name, c["line"]) for c in m["evidence"]["code"]] == [("app.js", add_line)]
    assert "Bull 3 ignores the object form" in m["remediation"]
    # a runtime finding gains the code that configures its queue
    assert ("app.js", add_line) in {(Path(c["file"]).name, c["line"]) for c in f.loc["unbounded-retention", "evidence"]["code"]}
    c = b3.checklist.set_index("item")
    assert c.loc["concurrency", "verdict"] == "pass" and "app.js:8" in c.loc["concurrency", "evidence"]
    assert c.loc["progress", "verdict"] == "pass" and "app.js" in c.loc["progress", "evidence"]
    assert c.loc["timeout", "verdict"] == "pass"                          # Redis saw the jobs' timeout
    without = forensics.diagnose(forensics.capture(redis_server.url(0), prefix="join-b3"),
                                 thresholds={"retention_max_jobs": 10}).checklist.set_index("item")
    assert without.loc["concurrency", "verdict"] == "unknown"             # what the code adds
    b4 = forensics.diagnose(forensics.capture(redis_server.url(0), prefix="join-b4"), code=src)
    assert "code-redis-mismatch" not in set(b4.findings["id"]), b4.to_table()
    assert b4.snapshot["code"]["files"] == 1
    # the CLI takes the same, and so does the postmortem (its notebook's `code` parameter)
    saved = tmp_path / "s"
    forensics.capture(redis_server.url(0), prefix="join-b3").save(saved)
    res = forensics_cli("diagnose", str(saved), "--code", str(src), "--format", "json")
    assert res.returncode == 0, res.stderr
    assert "code-redis-mismatch" in {x["id"] for x in json.loads(res.stdout)["findings"]}
    res = forensics_cli("report", str(saved), "--code", str(src), "--out", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "r.html").read_text()
    assert "code-redis-mismatch" in html and f"app.js:{add_line}" in html and "Code scan" in html


def test_bullmq_code_joined_with_redis_points_runtime_findings_at_their_lines(redis_server, tmp_path):
    """A BullMQ 5 app retrying a failing call 20 times with a fixed 5 ms backoff: the runtime
    findings on its queue point at the add that configures it, the code findings sit on the
    same line, and the checklist items Redis cannot judge come from the code."""
    src = FIX / "runnable-mq"
    run_app(tmp_path, "bullmq5", redis_server.url(0), "join-mq", fixture="runnable-mq", as_name="bullmq")
    add_line = next(i for i, ln in enumerate((src / "app.js").read_text().splitlines(), 1) if "syncs.add(" in ln)
    d = forensics.diagnose(forensics.capture(redis_server.url(0), prefix="join-mq"), code=src)
    f = d.findings
    runtime = f[(f["id"] == "unbounded-attempts") & (f["queue"] == "syncs")].iloc[0]
    assert ("app.js", add_line) in {(Path(c["file"]).name, c["line"]) for c in runtime["evidence"]["code"]}
    code_f = f[(f["id"] == "code-unbounded-attempts")].iloc[0]
    assert code_f["prefix"] == "join-mq" and code_f["queue"] == "syncs"
    assert [(Path(c["file"]).name, c["line"]) for c in code_f["evidence"]["code"]] == [("app.js", add_line)]
    assert "code-no-backoff" in set(f["id"]) and "code-no-graceful-close" in set(f["id"])
    c = d.checklist.set_index("item")
    assert c.loc["concurrency", "verdict"] == "warn" and "not set" in c.loc["concurrency", "evidence"]
    assert c.loc["progress", "verdict"] == "warn" and "app.js" in c.loc["progress", "evidence"]
    assert c.loc["timeout", "verdict"] == "fail"        # BullMQ has no timeout option: the code bounds nothing
    assert f"app.js:{add_line}" in d.to_table()


def test_handlers_set_in_a_loop_and_leaking_caches_are_judged_per_worker():
    """Workers made in an array get the `failed` handler their loop sets; a file's own Worker
    named `worker` owns its handlers (another file's `worker` is another queue); a processor
    that adds to a module-level Map nothing empties is a leak, while one deleting in `finally`,
    or its own local Map, is not."""
    ids = {"code-memory-leak", "code-no-dead-letter"}
    result = code.scan(FIX / "workers")
    assert {x for x in found(result) if x[2] in ids} == {x for x in flags("workers") if x[2] in ids}
    leak = result.findings[result.findings["id"] == "code-memory-leak"].iloc[0]
    assert leak["queue"] == "render" and leak["evidence"]["retains"] == ["seen"]
    s = result.sites
    assert set(s.loc[(s["kind"] == "on") & (s["event"] == "failed"), "queue"]) == {"render", "resize", "audit"}
    assert (s["kind"] == "memoryUsage").sum() == 1


PDFLAB = ROOT / "snapshots" / "pdflab"
PDFLAB_APP = ROOT / "snapshots" / "pdflab-app"


def test_the_shipped_app_incident_is_joined_with_the_code_that_made_it():
    """snapshots/pdflab keeps the scan of snapshots/pdflab-app (the app whose processes made
    the incident): every finding points at lines that exist, the checklist Redis cannot judge
    comes from the code (≤ 5 % unknown, against over a third from Redis alone), and the kept
    scan is the shipped source's (edit the app without `make pdflab` and this fails)."""
    snap = forensics.load(PDFLAB)
    fresh = forensics.scan(PDFLAB_APP)
    key = ["kind", "queue", "line", "event"]
    kept = snap.code.assign(file=snap.code["file"].map(lambda f: Path(f).name))[["file", *key]]
    now = fresh.sites.assign(file=fresh.sites["file"].map(lambda f: Path(f).name))[["file", *key]]
    assert sorted(map(tuple, kept.astype(str).values)) == sorted(map(tuple, now.astype(str).values))
    d = forensics.diagnose(snap)
    assert d.snapshot["code"]["kept"] and d.snapshot["code"]["files"] == 6
    unknown = (d.checklist["verdict"] == "unknown").mean()
    alone = forensics.diagnose(snap, code=False)
    assert unknown <= 0.05 and (alone.checklist["verdict"] == "unknown").mean() > 0.3
    assert "code" not in alone.snapshot
    f = d.findings
    for ev in f["evidence"]:
        for c in ev.get("code", []):
            lines = (ROOT / c["file"]).read_text().splitlines()
            assert lines[c["line"] - 1].strip()[:200] == c["snippet"], c
    storm = f[(f["id"] == "retry-storm") & (f["queue"] == "conversion")].iloc[0]
    queues_js = (PDFLAB_APP / "src" / "queues.js").read_text().splitlines()
    line = next(i for i, x in enumerate(queues_js, 1) if "new Queue('conversion'" in x)
    assert ("queues.js", line) in {(Path(c["file"]).name, c["line"]) for c in storm["evidence"]["code"]}
    assert {"code-no-backoff", "code-binary-payload", "code-retries-client-errors"} <= \
        set(f.loc[f["queue"] == "conversion", "id"])
    assert "code-retries-client-errors" in set(f.loc[f["queue"] == "webhooks", "id"])   # `if (!res.ok) throw`
    assert set(f.loc[f["id"] == "code-memory-leak", "queue"]) == {"images"}
    c = d.checklist.set_index(["queue", "item"])
    assert c.loc[("images", "memory-leak"), "verdict"] == "fail"            # the logs and the code agree
    assert c.loc[("conversion", "memory-leak"), "verdict"] == "pass"        # main.js logs process.memoryUsage()
    assert "main.js" in c.loc[("conversion", "memory-leak"), "evidence"]
    assert c.loc[("ocr", "memory-leak"), "verdict"] == "warn"               # nothing watches the OCR worker
    assert c.loc[("ocr", "timeout"), "verdict"] == "fail" and "ocr.js" in c.loc[("ocr", "timeout"), "evidence"]
    assert c.loc[("webhooks", "timeout"), "verdict"] == "pass"              # AbortSignal.timeout(10000)
    assert c.loc[("conversion", "concurrency"), "verdict"] == "fail"        # concurrency: 100


def test_a_snapshot_keeps_its_code_scan(redis_server, tmp_path):
    """`capture --code SRC` keeps the scan in the snapshot (code.parquet, the manifest's roots
    and packages): `diagnose` joins it without --code, `--no-code` leaves it out, `query` sees
    the table; a snapshot without one has an empty code table; a wrong path fails before the
    capture."""
    src = FIX / "runnable-mq"
    out = tmp_path / "snap"
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", "kept-code", "--code", str(src),
                        "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert (out / "code.parquet").exists() and "code:" in res.stderr
    snap = forensics.load(out, verify=True)
    assert snap.manifest["code"]["roots"] == [str(src)] and len(snap.code) == len(forensics.scan(src).sites)
    res = forensics_cli("diagnose", str(out), "--format", "json")
    body = json.loads(res.stdout)
    assert body["snapshot"]["code"]["kept"] is True
    assert "code-unbounded-attempts" in {x["id"] for x in body["findings"]}
    res = forensics_cli("diagnose", str(out), "--no-code", "--format", "json")
    assert not any(x["id"].startswith("code-") for x in json.loads(res.stdout)["findings"])
    assert forensics.query(out, "select count(*) as n from code")["n"].iloc[0] == len(snap.code)
    assert len(forensics.load(ROOT / "snapshots" / "example").code) == 0
    res = forensics_cli("capture", "--redis", redis_server.url(0), "--prefix", "kept-code", "--code",
                        str(tmp_path / "nowhere"), "--out", str(tmp_path / "other"))
    assert res.returncode == 2 and "no such file or folder" in res.stderr and not (tmp_path / "other").exists()


def test_the_demo_postmortem_shows_the_kept_code(tmp_path):
    """`make demo`'s report of snapshots/pdflab, with no --code: the code scan the snapshot
    keeps is in the postmortem, findings at their file:line."""
    res = forensics_cli("report", str(PDFLAB), "--out", str(tmp_path / "pm.html"), cwd=ROOT)
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "pm.html").read_text()
    leak = forensics.load(PDFLAB).code_scan.findings.set_index("id").loc["code-memory-leak", "evidence"]["code"][0]
    assert "Code scan" in html and f"{leak['file']}:{leak['line']}" in html and "code-memory-leak" in html
