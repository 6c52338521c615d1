"""forensics report: execute the postmortem notebook on a snapshot, convert it to one
self-contained HTML file (code hidden, plots interactive, plotly.js embedded, no external
script), headed by the snapshot's manifest."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import ForensicsError, UsageError

PACKAGE = Path(__file__).resolve().parent
# Installed (pip install .): the notebooks ship inside the package; in the repository (and
# an editable install) they are the top-level notebooks/ folder.
NOTEBOOKS = PACKAGE / "notebooks" if (PACKAGE / "notebooks" / "postmortem.ipynb").exists() \
    else PACKAGE.parent / "notebooks"
TEMPLATE = PACKAGE / "templates" / "report"


def _kernel_config(work: Path):
    """The report's kernel talks to us over Unix sockets in our private temp folder, not
    over localhost TCP ports any local user could connect to (and ipykernel warns about)."""
    from traitlets.config import Config
    return Config({"KernelManager": {"transport": "ipc", "ip": str(work / "kernel")}})


class ReportError(ForensicsError):
    """A notebook cell failed while rendering the report."""


def render(snapshot: str | Path, out: str | Path | None = None, thresholds: dict | None = None,
           notebook: str | Path | None = None, logs: list[str] | str | None = None,
           code: list[str] | str | None = None) -> Path:
    """Render the postmortem of ``snapshot`` (a snapshot or series folder) to HTML; returns
    the HTML path. ``logs``: worker log files to include ("-" reads stdin). ``code``: the
    application's source (files or folders): its findings and code sites join the report.

    ``out`` defaults to ``<snapshot>/report.html``. A failing cell raises ReportError
    naming the cell; the executed notebook is kept beside the HTML for debugging."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from .logs import read_logs
    from .series import Series, open_path
    from .thresholds import Thresholds
    src = open_path(snapshot)  # a damaged snapshot fails here, with the usual clear message
    snap = src.latest if isinstance(src, Series) else src
    Thresholds.coerce(thresholds)  # and so do unknown thresholds
    work = Path(tempfile.mkdtemp(prefix="forensics-report-"))
    log_files = []
    for item in ([logs] if isinstance(logs, str) else list(logs or [])):
        if item == "-":  # the notebook runs in another process: hand it a copy of stdin
            copy = work / f"stdin-{len(log_files)}.log"
            copy.write_bytes(sys.stdin.buffer.read())
            item = str(copy)
        log_files.append(str(Path(item).resolve()))
    if log_files:
        read_logs(log_files)  # a missing file fails now, not in a notebook cell
    code_paths = [str(Path(c).resolve()) for c in ([code] if isinstance(code, str) else list(code or []))]
    missing = [c for c in code_paths if not Path(c).exists()]
    if missing:
        raise UsageError(f"code: no such file or folder: {', '.join(missing)}")
    nb_in = Path(notebook) if notebook else NOTEBOOKS / "postmortem.ipynb"
    if not nb_in.exists():
        raise UsageError(f"notebook {nb_in} not found (reinstall queue-forensics: the notebooks ship with it)")
    out = Path(out) if out else Path(snapshot) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    executed = work / "postmortem.ipynb"
    params = {"snapshot": str(Path(snapshot).resolve()), "redis_url": "", "interactive": False,
              "thresholds": dict(thresholds or {}), "logs": ",".join(log_files), "code": ",".join(code_paths)}
    from .notebook import INLINE_PLOTLY
    before = os.environ.get(INLINE_PLOTLY)
    os.environ[INLINE_PLOTLY] = "1"   # the kernel inherits it: figures carry their HTML (and plotly.js once)
    try:
        papermill.execute_notebook(str(nb_in), str(executed), parameters=params, kernel_name="python3",
                                   progress_bar=False, cwd=str(nb_in.parent), log_output=False,
                                   config=_kernel_config(work))
    except papermill.PapermillExecutionError as e:
        source = ""
        try:  # papermill inserts cells (parameters, an error banner): find the one that failed
            cells = nbformat.read(str(executed), as_version=4).cells
            failed = [c for c in cells if c.cell_type == "code"
                      and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
            source = failed[0].source.strip().splitlines()[0][:80] if failed else ""
        except Exception:
            pass
        raise ReportError(f"report failed in cell {e.exec_count} ({source}): {e.ename}: "
                          f"{str(e.evalue).splitlines()[0] if e.evalue else ''} (executed notebook: {executed})") from None
    finally:
        if before is None:
            os.environ.pop(INLINE_PLOTLY, None)
        else:
            os.environ[INLINE_PLOTLY] = before
    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata["title"] = f"Postmortem — {snap.manifest.get('source')} at {snap.manifest.get('captured_at')}"
    exporter = HTMLExporter(extra_template_paths=[str(TEMPLATE)], template_file="forensics_report.html.j2",
                            exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    shutil.rmtree(executed.parent, ignore_errors=True)  # kept only when a cell failed
    return out


def render_markdown(snapshot: str | Path, out: str | Path | None = None, thresholds: dict | None = None,
                    logs: list[str] | str | None = None, code: list[str] | str | None = None) -> Path:
    """The postmortem as Markdown (``forensics.postmortem.Postmortem``: summary, impact,
    timeline, root causes, action items, checklist, details; no plots), written to ``out``
    (default ``<snapshot>/report.md``); returns its path. No notebook runs: it takes a moment."""
    from .diagnosis import diagnose
    from .postmortem import Postmortem
    from .series import Series, open_path
    src = open_path(snapshot)
    snap = src.latest if isinstance(src, Series) else src
    code_paths = [str(c) for c in ([code] if isinstance(code, str) else list(code or []))]
    missing = [c for c in code_paths if not Path(c).exists()]
    if missing:
        raise UsageError(f"code: no such file or folder: {', '.join(missing)}")
    d = diagnose(src, logs=logs or None, thresholds=thresholds, code=code_paths or None)
    out = Path(out) if out else Path(snapshot) / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(Postmortem(snap, d).to_markdown(), encoding="utf-8")
    return out


PDF_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw",
             "--virtual-time-budget=15000"]


def render_pdf(snapshot: str | Path, out: str | Path | None = None, thresholds: dict | None = None,
               logs: list[str] | str | None = None, code: list[str] | str | None = None) -> Path:
    """The HTML postmortem printed to PDF by headless Chromium (Debian's ``chromium``, or
    ``$CHROMIUM``), for the incident archive; ``out`` defaults to ``<snapshot>/report.pdf``.
    Without Chromium: one line saying so (the HTML and Markdown need none)."""
    browser = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") \
        or shutil.which("google-chrome")
    if not browser:
        raise UsageError("--format pdf prints the HTML report with headless Chromium, which is not installed "
                         "(Debian: apt-get install chromium; or set CHROMIUM=/path/to/chrome); "
                         "--format html and --format md need no browser")
    out = Path(out) if out else Path(snapshot) / "report.pdf"
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="forensics-pdf-"))
    try:
        html = render(snapshot, work / "report.html", thresholds=thresholds, logs=logs, code=code)
        profile = work / "profile"
        res = subprocess.run([browser, *PDF_FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={out.resolve()}",
                              html.resolve().as_uri()], capture_output=True, text=True, timeout=300)
        if res.returncode != 0 or not out.exists() or out.stat().st_size == 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise ReportError(f"Chromium could not print the report to PDF: {last}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
