"""Notebooks (papermill, parameters) and the HTML postmortem report.

nbval also runs every notebook with its default parameters (pytest addopts); here they
run under papermill with injected parameters, and the report is rendered and read."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from forensics.report import ReportError, render

from conftest import forensics_cli

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXAMPLE = ROOT / "snapshots" / "example"
PARAMS = {"snapshot": "str", "redis_url": "str", "prefix": "str", "queue": "str", "job": "str", "logs": "str",
          "code": "str", "thresholds": "dict", "interactive": "bool"}


def test_the_six_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} == {"triage", "stuck-jobs", "retry-storms", "payloads",
                                            "memory-growth", "postmortem"}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_clean_and_thin(nb):
    doc = json.loads(nb.read_text())
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    body = [c for c in code if c is not tagged[0] and "notebook.setup()" not in "".join(c["source"])]
    assert all(len("".join(c["source"]).strip().splitlines()) == 1 for c in body)  # one call per cell


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_parameters_are_documented(nb):
    params = papermill.inspect_notebook(str(nb))
    assert {k: v["inferred_type_name"] for k, v in params.items()} == PARAMS
    assert all(v["help"] for v in params.values())


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_under_papermill(nb, tmp_path):
    out = tmp_path / nb.name
    papermill.execute_notebook(str(nb), str(out), kernel_name="python3", progress_bar=False, cwd=str(nb.parent),
                               parameters={"snapshot": str(EXAMPLE), "queue": "mail", "interactive": False,
                                           "thresholds": {"max_attempts": 20}})
    done = nbformat.read(str(out), as_version=4)
    outputs = [o for c in done.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("text/html" in o.get("data", {}) for o in outputs)


@pytest.mark.parametrize("job,queue,expect", [
    ("1", "bull:convert", "Its lock is gone"),                       # the story of a stalled job
    ("1", "", "job 1 is in 29 queues"),                              # ambiguous: said, not a failed cell
    ("", "", "Set the <code>job</code> parameter"),                  # nothing asked
])
def test_stuck_jobs_notebook_tells_a_jobs_story(tmp_path, job, queue, expect):
    out = tmp_path / "stuck-jobs.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "stuck-jobs.ipynb"), str(out), kernel_name="python3",
                               progress_bar=False, cwd=str(ROOT / "notebooks"),
                               parameters={"snapshot": str(EXAMPLE), "queue": queue, "job": job, "interactive": False})
    html = "".join(o.get("data", {}).get("text/html", "") for c in nbformat.read(str(out), as_version=4).cells
                   if c.cell_type == "code" and "explain_job" in c.source for o in c.outputs)
    assert expect in html, html[:2000]


@pytest.fixture(scope="module")
def report_html(example_report):
    """The example's postmortem as `forensics report` renders it (from the installed wheel:
    see conftest.example_report; tests/test_install.py checks the install itself)."""
    res, out = example_report
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out)
    # Nothing of the kernel's in the user's terminal (it once warned about its TCP transport:
    # the kernel now talks over Unix sockets in a private folder).
    assert res.stderr == "", res.stderr
    return out.read_text()


def test_report_holds_findings_plots_and_header(report_html):
    assert "stalled-active" in report_html and "paused-backlog" in report_html
    assert report_html.count('class="plotly-graph-div"') >= 5
    assert "Jobs per state per queue" in report_html
    assert "captured" in report_html and "complete" in report_html           # manifest header
    assert "notebook.open_snapshot" not in report_html                        # code hidden


def test_report_opens_offline(report_html):
    assert not re.findall(r"<script[^>]+src=[\"']?(?:https?:)?//", report_html)
    assert report_html.count("plotly.js v") == 1                              # inlined once


def test_report_escapes_job_payloads(report_html):
    # snapshots/example holds a job whose data is '<script>alert("pwned")</script>'
    assert "&lt;script&gt;alert(" in report_html
    assert "<script>alert(" not in report_html


def test_a_failing_cell_is_named(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('snapshot: str = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0  # boom")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(ReportError, match=r"cell \d+ \(1 / 0  # boom\): ZeroDivisionError"):
        render(EXAMPLE, tmp_path / "out.html", notebook=path)


def test_report_of_a_damaged_snapshot_is_refused(tmp_path):
    res = forensics_cli("report", str(tmp_path), "--out", str(tmp_path / "x.html"))
    assert res.returncode == 2 and "not a snapshot" in res.stderr


def test_job_inspector_card_shows_timeline_logs_and_escaped_data():
    import forensics
    from forensics import widgets
    snap = forensics.load(EXAMPLE)
    card = widgets.job_card(snap, "bull:mail", "1")
    assert "timeline" in card and "event completed" in card and "processing 1" in card
    injected = widgets.job_card(snap, "bull:mail", "10")
    assert "&lt;script&gt;" in injected and "<script>" not in injected
    static = widgets.job_inspector(snap, interactive=False)._repr_html_()
    assert "Newest jobs per queue" in static and "<script>alert" not in static


def test_queue_filter_keeps_prefixes_apart():
    import forensics
    from forensics.notebook import only_queue
    snap = forensics.load(EXAMPLE)
    one = only_queue(snap, "bull:mail")
    assert set(one.jobs["prefix"].astype("str")) == {"bull"} and set(one.queues["queue"]) == {"mail"}
    both = only_queue(snap, "mail")
    assert set(both.jobs["prefix"].astype("str")) == {"bull", "legacy"}


@pytest.mark.parametrize("name", ["memory-growth", "postmortem"])
def test_trend_notebooks_show_the_series_and_the_logs(growing_series, worker_logs, tmp_path, name):
    _, log = worker_logs("leak")
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out), kernel_name="python3",
                               progress_bar=False, cwd=str(ROOT / "notebooks"),
                               parameters={"snapshot": str(growing_series[0]), "logs": str(log),
                                           "interactive": False})
    done = nbformat.read(str(out), as_version=4)
    text = json.dumps([o for c in done.cells if c.cell_type == "code" for o in c.outputs])
    assert "Redis memory over time" in text and "projection (straight line)" in text
    assert "Backlog over time" in text and "uploads" in text
    assert "Worker memory from the logs" in text and "worker-a/" in text
    assert "redis-memory-growth" in text and "worker-memory-growth" in text
    assert "capture a series" not in text and "no worker logs" not in text   # nothing says "missing"


def test_report_of_a_series_with_worker_logs(growing_series, worker_logs, tmp_path):
    _, leak = worker_logs("leak")
    out = tmp_path / "r.html"
    res = forensics_cli("report", str(growing_series[0]), "--logs", str(leak), "--out", str(out))
    assert res.returncode == 0, res.stderr
    html = out.read_text()
    for text in ("redis-memory-growth", "backlog-growth", "worker-memory-growth", "Redis memory over time",
                 "Backlog over time", "Worker memory from the logs", "The incident: queue events and worker logs",
                 "series of 5 snapshots", "logs: 30 records"):
        assert text in html, text
    # the postmortem's timeline puts the series' captures in their own lane (plotly may escape the ▶)
    assert re.search(r'"name":"(▶|\\u25b6) captures"', html)
    assert html.count("plotly.js v") == 1 and not re.findall(r"<script[^>]+src=[\"']?(?:https?:)?//", html)


def test_report_uses_the_logs_a_snapshot_carries(report_html):
    # snapshots/example was captured with the logs of a leaking and a lock-losing worker
    assert "worker-memory-growth" in report_html and "lock-lost" in report_html
    assert "logs: 32 records from images-worker.log, crunch-worker.log" in report_html
    assert "no worker logs: pass them with --logs" not in report_html
    assert "capture a series (forensics capture --every 30 --count 20)" in report_html  # one snapshot only


def test_job_card_merges_the_workers_log_records_into_the_timeline():
    import forensics
    from forensics import widgets
    snap = forensics.load(EXAMPLE)                    # carries the lock-losing Bull worker's log
    logs = forensics.join_logs(snap.logs, snap)
    card = widgets.job_card(snap, "legacy:crunch", "1", logs)
    assert "log info: started" in card and "log error: worker error (Missing lock for job 1 failed)" in card
    assert card.index("processed") < card.index("log info: started") < card.index("log error")  # in time order
    assert "log error" not in widgets.job_card(snap, "legacy:crunch", "1")        # no logs, no log lines


def test_triage_shows_the_code_scan_when_given_the_source(tmp_path):
    """The `code` parameter: the diagnosis joins the scan, and the notebook's code section
    shows its findings at their lines."""
    nb = ROOT / "notebooks" / "triage.ipynb"
    out = tmp_path / "triage.ipynb"
    src = ROOT / "tests" / "fixtures" / "code" / "app"
    papermill.execute_notebook(str(nb), str(out), kernel_name="python3", progress_bar=False, cwd=str(nb.parent),
                               parameters={"snapshot": str(EXAMPLE), "interactive": False, "code": str(src)})
    html = "".join(o.get("data", {}).get("text/html", "") for c in nbformat.read(str(out), as_version=4).cells
                   if c.cell_type == "code" for o in c.outputs)
    assert "Code scan" in html and "code-v6-legacy-repeat" in html and "queues.ts:25" in html


def test_job_inspector_shows_the_picked_queues_job_when_ids_repeat():
    """The inspector opens on a job (not an empty picker), and switching to a queue whose first
    job has the same id ("1") shows that queue's job, not the previous queue's (the dropdown's
    value does not change, so no event would redraw it)."""
    import forensics
    from forensics import widgets
    snap = forensics.load(EXAMPLE)
    box = widgets.job_inspector(snap)
    qpick, jpick = box.children[0].children
    out = box.children[1]
    assert jpick.value is not None and f"{qpick.value} / job {jpick.value}" in out.value
    firsts = {}
    for q in qpick.options:
        qpick.value = q
        firsts.setdefault(jpick.value, []).append(q)
        assert f"<h4>{q} / job {jpick.value}</h4>" in out.value, q
    same = next(qs for qs in firsts.values() if len(qs) > 1)     # two queues whose newest job has one id
    qpick.value = same[0]
    qpick.value = same[1]
    assert f"<h4>{same[1]} / job {jpick.value}</h4>" in out.value and f"<h4>{same[0]} /" not in out.value


def test_threshold_widget_shows_what_a_move_changes_not_the_diagnosis_again():
    """The sliders start on a one-line note (the diagnosis is in the cell above); a move lists
    the findings that appear and the ones that go away, and a move back returns to the note."""
    import forensics
    from forensics import widgets
    snap = forensics.load(EXAMPLE)
    box = widgets.threshold_controls(snap)
    sliders, out = {s.description: s for s in box.children[:-1]}, box.children[-1]
    assert "diagnosis is the one above" in out.value and len(out.value) < 300
    sliders["max_attempts"].value = 1
    assert "<b>New</b>" in out.value and "<code>unbounded-attempts</code> api" in out.value
    assert len(out.value) < 20_000 and "Gone" not in out.value
    sliders["max_attempts"].value = forensics.Thresholds().max_attempts
    assert "diagnosis is the one above" in out.value


def test_a_notebook_saved_from_a_session_stays_small(tmp_path):
    """Run as in JupyterLab (no report), a notebook's figures are plotly's JSON only: saved, it
    weighs kilobytes, not the 5-7 MB of plotly.js embedded in the first figure; `forensics
    report` still inlines plotly.js once (test_report_*)."""
    import os
    nb = ROOT / "notebooks" / "triage.ipynb"
    out = tmp_path / "triage.ipynb"
    env = {k: v for k, v in os.environ.items() if k != "FORENSICS_INLINE_PLOTLY"}
    res = subprocess.run([sys.executable, "-c", "import papermill, sys; papermill.execute_notebook(sys.argv[1], "
                          "sys.argv[2], kernel_name='python3', progress_bar=False, cwd=sys.argv[3], "
                          "parameters={'snapshot': sys.argv[4], 'interactive': False})",
                          str(nb), str(out), str(nb.parent), str(EXAMPLE)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    outputs = [o for c in nbformat.read(str(out), as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures and not any("text/html" in o["data"] for o in figures)
    assert out.stat().st_size < 1_500_000, out.stat().st_size
