"""The postmortem people read: summary, impact, timeline, root causes, action items,
checklist, details, in that order, in the HTML report and in Markdown."""
from __future__ import annotations

import re

import forensics
from conftest import ROOT, forensics_cli
from forensics.checklist import ITEMS
from forensics.postmortem import SECTIONS, Postmortem

PDFLAB = ROOT / "snapshots" / "pdflab"
EXAMPLE = ROOT / "snapshots" / "example"


def test_markdown_postmortem_reads_top_down(tmp_path):
    """`report --format md` of the shipped app incident: the sections in order; the summary
    names the root causes and counts; action items point at the code the snapshot keeps; the
    checklist is a queue × item matrix; no plots, said so."""
    res = forensics_cli("report", str(PDFLAB), "--format", "md", "--out", str(tmp_path / "pm.md"))
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "pm.md").read_text()
    heads = re.findall(r"^## (.+)$", md, re.M)
    assert heads == list(SECTIONS)
    summary = md[md.index("## Summary"):md.index("## Impact")]
    d = forensics.diagnose(forensics.load(PDFLAB))
    assert f"{len(d.root_causes)} root cause(s), worst CRITICAL" in summary and "no-workers on pdflab:ocr" in summary
    assert "| jobs failed | 90 |" in summary
    impact = md[md.index("## Impact"):md.index("## Timeline")]
    assert impact.index("pdflab:ocr") < impact.index("pdflab:thumbnails")      # worst first
    timeline = md[md.index("## Timeline"):md.index("## Root causes")]
    assert "retry storm starts on pdflab:conversion" in timeline and timeline.rstrip().endswith("snapshot captured |")
    actions = md[md.index("## Action items"):md.index("## Checklist")]
    assert actions.startswith("## Action items\n\n1. **no-workers** (critical; pdflab:ocr)")
    assert "snapshots/pdflab-app/src/workers/ocr.js:10" in actions
    checklist = md[md.index("## Checklist"):md.index("## Details")]
    assert all(item in checklist.splitlines()[2] for item in ITEMS) and "| pdflab:images |" in checklist
    assert "plots: omitted in Markdown" in md


def test_hostile_text_stays_inert_in_markdown():
    """The example holds a job whose data and names try to inject HTML: nothing from the
    snapshot reaches the Markdown as raw HTML or breaks a table row."""
    snap = forensics.load(EXAMPLE)
    md = Postmortem(snap, forensics.diagnose(snap)).to_markdown()
    assert "<script" not in md and "<img" not in md
    blocks, block = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            block.append(len(re.findall(r"(?<!\\)\|", line)))
        elif block:
            blocks.append(block)
            block = []
    assert blocks and all(len(set(b)) == 1 for b in blocks), blocks


def test_html_report_opens_with_the_postmortem(example_report):
    """The HTML report's first screen is the postmortem, then the details: sections in order,
    and the checklist as a colored matrix with each verdict's evidence on hover."""
    res, out = example_report
    html = out.read_text()
    pos = [html.find(f"<h2>{s}</h2>") for s in SECTIONS]
    assert all(p > 0 for p in pos) and pos == sorted(pos), dict(zip(SECTIONS, pos))
    assert html.find("Findings and checklist, in full") > pos[-1]
    matrix = re.search(r"<table class=[\"']checklist[\"']>(.*?)</table>", html, re.S).group(1)
    assert "background:#f8d7da" in matrix and re.search(r"title=[\"'][^\"']+", matrix)
    # the timeline is one figure (events, jobs, logs, the incident's moments; its start and the
    # capture marked), the moments listed under it, and the details do not draw it again
    timeline = html[pos[2]:pos[3]]
    lane = re.compile(r'"name":"(▶|\\u25b6) incident"')   # the moments' trace (plotly's JSON may escape ▶)
    assert timeline.count("plotly-graph-div") == 1 and "incident start" in timeline and lane.search(timeline)
    assert "snapshot captured" in timeline and "retry storm starts" in timeline
    assert len(lane.findall(html)) == 1 and "Timeline: queue events and worker logs" not in html[pos[-1]:]


def test_pdf_postmortem_for_the_archive(tmp_path):
    """`report --format pdf`: the HTML report printed by headless Chromium; its text carries
    the sections in order. Without Chromium: one line, exit 2."""
    import shutil

    import pytest
    out = tmp_path / "pm.pdf"
    if not shutil.which("chromium"):
        res = forensics_cli("report", str(PDFLAB), "--format", "pdf", "--out", str(out), env={"CHROMIUM": ""})
        assert res.returncode == 2 and "headless Chromium" in res.stderr and res.stderr.count("\n") == 1
        pytest.skip("chromium is not installed (make test installs it where it runs as root)")
    res = forensics_cli("report", str(PDFLAB), "--format", "pdf", "--out", str(out))
    assert res.returncode == 0, res.stderr
    from pypdf import PdfReader
    import unicodedata
    text = unicodedata.normalize("NFKC", "\n".join(p.extract_text() or "" for p in PdfReader(out).pages))
    pos = [text.find(f"\n{s}\n") for s in SECTIONS]
    assert all(p >= 0 for p in pos) and pos == sorted(pos), dict(zip(SECTIONS, pos))
    compact = re.sub(r"\s+", "", text)   # a PDF's text wraps where the page does
    assert "no-workersonpdflab:ocr" in compact.replace("`", ""), compact[:2000]
    res = forensics_cli("report", str(PDFLAB), "--format", "pdf", "--out", str(out), env={"CHROMIUM": "",
                                                                                        "PATH": "/usr/local/bin"})
    assert res.returncode == 2 and "headless Chromium" in res.stderr, res.stderr


def test_the_timeline_figure_marks_the_start_the_moments_and_a_series_captures():
    """One figure: the incident's moments in their own lane, the first one marked as the
    start; a series' captures in theirs; without moments, no start is claimed."""
    import pandas as pd

    from forensics import plots
    snap = forensics.load(EXAMPLE)
    d = forensics.diagnose(snap)
    pm = Postmortem(snap, d)
    fig = pm.figure()
    lanes = {t.name: t for t in fig.data}
    assert len(lanes["▶ incident"].x) == len(pm.timeline) and pm.since < snap.captured_at
    assert [a.text for a in fig.layout.annotations] == ["incident start"]
    assert pd.Timestamp(fig.layout.shapes[-1].x0) == pm.since
    at = snap.captured_at
    fig = plots.timeline(snap, captures=[at - pd.Timedelta(minutes=2), at - pd.Timedelta(minutes=1), at])
    assert len({t.name: t for t in fig.data}["▶ captures"].x) == 3
    assert not fig.layout.annotations and "▶ incident" not in {t.name for t in fig.data}


def test_a_postmortem_of_many_queues_reads_well(redis_server):
    """150 queues made by the real BullMQ 5 (tests/node/manyqueues.js: in each, two jobs a worker
    failed, one no worker serves, one delayed). The capture decodes small queues together: every
    row lands in its own queue. The postmortem stays readable: root causes first, every list
    capped with "and N more", the matrix at 100 queues, the page small."""
    from conftest import run_node
    n = 150
    run_node("manyqueues.js", redis_server.url(7), "many", str(n))
    snap = forensics.capture(redis_server.url(7), prefix="many", progress=False)
    q = snap.queues.set_index("queue")
    assert len(q) == n and (q["n_failed"] == 2).all() and (q["n_wait"] == 1).all() and (q["n_delayed"] == 1).all()
    failed = snap.jobs[snap.jobs["state"].astype(str) == "failed"]
    account = failed["failed_reason"].str.extract(r"\(account (\d+)\)", expand=False).astype(int)
    assert (failed["queue"].astype(str) == account.map(lambda i: f"q{i:04d}")).all()   # each row in its queue
    d = forensics.diagnose(snap)
    pm = Postmortem(snap, d)
    assert len(pm.roots) == n and set(d.findings["id"]) == {"no-workers"}
    md = pm.to_markdown()
    pos = [md.find(f"## {s}") for s in SECTIONS]
    assert all(p >= 0 for p in pos) and pos == sorted(pos)
    assert f"… and {n - 20} more root cause(s)" in md and f"… and {n - 20} more queue(s)" in md
    assert f"… and {n - 100} more queue(s)" in md[pos[SECTIONS.index("Checklist")]:]
    assert md.count("\n- **CRITICAL `no-workers`**") == 20
    html = pm._repr_html_()
    assert f"… and {n - 20} more</p>" in html and f"… and {n - 100} more queue(s)" in html and len(html) < 500_000
