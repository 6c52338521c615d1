"""Helpers that keep the notebooks thin: one call per cell.

``setup()`` makes plotly embed its JavaScript in the first figure, so an executed
notebook (and the HTML report made from it) opens offline. ``open_snapshot()`` takes the
notebook parameters: a snapshot folder, or a Redis URL to capture live.
"""
from __future__ import annotations

import pandas as pd

from .htmlsafe import escape, figure_texts


def setup() -> None:
    """Figures render offline: plotly's JSON (JupyterLab draws it), and for reports
    (``FORENSICS_INLINE_PLOTLY=1``) HTML with plotly.js inlined by the first figure; no CDN,
    no MathJax."""
    import plotly.io as pio
    pio.renderers["forensics"] = _OfflineRenderer()
    pio.renderers.default = "forensics"
    pd.set_option("display.max_colwidth", 120)


_PLOTLY_JS_SENT = False


def _offline_renderer_base():
    from plotly.io._base_renderers import MimetypeRenderer
    return MimetypeRenderer


class _OfflineRenderer(_offline_renderer_base()):
    """HTML with plotly.js inlined once per kernel (for nbconvert/reports), plus plotly's
    JSON mimetype (JupyterLab renders that natively)."""

    def to_mimebundle(self, fig_dict):
        import os

        import plotly.io as pio
        global _PLOTLY_JS_SENT  # plotly copies renderer objects: the flag lives here
        fig_dict = figure_texts(fig_dict)  # names from the snapshot: bidi controls shown, not obeyed
        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig_dict)
        # The HTML copy (with plotly.js, 4.5 MB, in the first figure) only where the notebook
        # becomes an HTML file (`forensics report` sets FORENSICS_INLINE_PLOTLY=1): in
        # JupyterLab the JSON above draws the figure, and a saved notebook stays small.
        if os.environ.get(INLINE_PLOTLY) == "1":
            bundle["text/html"] = pio.to_html(fig_dict, include_plotlyjs=not _PLOTLY_JS_SENT, full_html=False,
                                              include_mathjax=False, validate=False)
            _PLOTLY_JS_SENT = True
        return bundle


INLINE_PLOTLY = "FORENSICS_INLINE_PLOTLY"


def open_snapshot(snapshot: str = "", redis_url: str = "", prefix: str = "bull", queue: str = ""):
    """Load ``snapshot`` or, when it is empty, capture ``redis_url`` live (read-only; a
    ``postgresql://`` URL captures BullMQ 6's PostgreSQL backend, ``prefix`` naming the schema)."""
    import forensics

    from .series import Series, open_path
    if snapshot:
        snap = open_path(snapshot)
        if isinstance(snap, Series):  # a series folder: the latest capture
            snap = snap.latest
    elif redis_url:
        from .capture.postgres import is_postgres_url
        if is_postgres_url(redis_url):   # BullMQ 6 on PostgreSQL: `prefix` names the schema
            snap = forensics.capture(redis_url, schema=prefix if prefix and prefix != "bull" else "bullmq",
                                     queues=[queue] if queue else None)
        else:
            snap = forensics.capture(redis_url, prefix=prefix, queues=[queue] if queue else None)
    else:
        raise forensics.UsageError("set the `snapshot` parameter (a folder) or `redis_url` (to capture live)")
    if queue:
        snap = only_queue(snap, queue)
    return snap


def open_series(snapshot: str = "", queue: str = ""):
    """The series when ``snapshot`` is a series folder, else None (figures then say a series
    is needed). ``queue`` restricts every capture to that queue, as ``open_snapshot`` does."""
    from .series import Series, is_series, load_series
    if not snapshot or not is_series(snapshot):
        return None
    series = load_series(snapshot)
    if queue:
        series = Series([only_queue(s, queue) for s in series], path=series.path, manifest=series.manifest,
                        warnings=series.warnings)
    return series


def open_logs(logs: str = "", snap=None):
    """Worker logs: the ``logs`` parameter (comma separated files) plus any the snapshot
    carries (``capture --logs``); None when there are none."""
    from .logs import gather_logs
    return gather_logs(logs if logs and logs.strip() else None, [snap] if snap is not None else [])


def open_code(code: str = "", snap=None):
    """``forensics.scan`` of the comma-separated source paths in ``code``; when empty, the scan
    the snapshot keeps (``capture --code``), else None."""
    paths = [c.strip() for c in (code or "").split(",") if c.strip()]
    if not paths:
        return snap.code_scan if snap is not None and hasattr(snap, "code_scan") else None
    from pathlib import Path

    from .code import scan
    from .errors import UsageError
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"code: no such file or folder: {', '.join(missing)}")
    return scan(paths)


def explain_job(snap, job: str = "", logs=None, thresholds: dict | None = None):
    """``forensics.explain`` of the ``job`` parameter, or a note saying how to ask for one
    (and a one-line error, not a failed cell, for an unknown or ambiguous id)."""
    import forensics
    if not job or not str(job).strip():
        return _HTML("<p>Set the <code>job</code> parameter to a job id (and <code>queue</code> when the id is "
                     "in several queues) to see its story: why it is in its state, its attempts, events, logs "
                     "and the findings that cover it.</p>")
    try:
        return forensics.explain(snap, str(job).strip(), logs=logs, thresholds=thresholds)
    except forensics.UsageError as e:
        return _HTML(f"<p><b>{escape(str(e))}</b></p>")


def only_queue(snap, queue: str):
    """A view of the snapshot restricted to one queue: ``prefix:name`` selects exactly one;
    a bare name selects that queue under every prefix."""
    from .snapshot import TABLES, Snapshot
    tables = {}
    for name in TABLES:
        df = getattr(snap, name)
        if "queue" in df.columns and name != "clients":  # connections are Redis-wide evidence
            label = df["queue"].astype("str")
            full = df["prefix"].astype("str") + ":" + label if "prefix" in df.columns else label
            df = df[(label == queue) | (full == queue)]
        tables[name] = df
    if snap.has_logs:
        tables["logs"] = snap.logs
    return Snapshot(tables, snap.manifest, path=snap.path)


def left(html_text: str) -> str:
    """Inline left alignment on bare table cells: reports use JupyterLab's CSS, which
    right-aligns table cells (fine for numbers, hard to read for text)."""
    return html_text.replace("<td>", '<td style="text-align:left">').replace("<th>", '<th style="text-align:left">')


class _HTML:
    def __init__(self, text: str):
        self.text = left(text)

    def _repr_html_(self) -> str:
        return self.text


def header(snap) -> _HTML:
    """The snapshot's manifest as a report header: source, time, completeness."""
    m = snap.manifest
    e = escape
    state = ("<b style='color:#1e8449'>complete</b>" if snap.complete else
             f"<b style='color:#c0392b'>INCOMPLETE</b>: {e(str(m.get('incomplete_reason')))}")
    warn = "".join(f"<li>{e(str(w))}</li>" for w in m.get("warnings", []))
    from .summary import topology_line
    where = topology_line(m)
    return _HTML(
        f"<table><tr><th>snapshot</th><td>{e(str(snap.path or '(live capture)'))}</td></tr>"
        f"<tr><th>source</th><td>{e(str(m.get('source')))} (prefixes {e(', '.join(m.get('options', {}).get('prefixes', [])))})</td></tr>"
        f"<tr><th>captured</th><td>{e(str(m.get('captured_at')))} in {e(str(m.get('duration_s')))} s — {state}</td></tr>"
        f"<tr><th>Redis</th><td>{e(str(m.get('redis_version')))}</td></tr>"
        + (f"<tr><th>topology</th><td>{e(where)}</td></tr>" if where else "") +
        f"<tr><th>contents</th><td>{len(snap.queues)} queues, {snap.row_count('jobs'):,} jobs</td></tr>"
        f"<tr><th>tool</th><td>queue-forensics {e(str(m.get('tool_version')))}</td></tr></table>"
        + (f"<p>Warnings:</p><ul>{warn}</ul>" if warn else ""))


def postmortem(snap, result, logs=None, series=None):
    """The report's first screen (``forensics.postmortem.Postmortem``): summary, impact,
    the timeline as one figure, root causes, action items, the checklist matrix; the details
    follow."""
    from .postmortem import Postmortem
    if hasattr(snap, "latest"):
        snap, series = snap.latest, series if series is not None else snap
    return Postmortem(snap, result, logs, series)
