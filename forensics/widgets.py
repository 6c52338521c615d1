"""ipywidgets explorers for live incidents, with static fallbacks for reports.

With ``interactive=False`` (papermill runs, HTML reports: no live kernel front end) every
explorer returns plain, escaped HTML instead of widgets.
"""
from __future__ import annotations

import json

import pandas as pd

from .htmlsafe import escape, frame_html
from .notebook import _HTML
from .summary import queue_label

PAYLOAD_CHARS = 2000


def _queues(snap) -> list[str]:
    return sorted(queue_label(snap.queues).tolist()) if len(snap.queues) else []


def _jobs_of(snap, queue: str, ctx=None) -> pd.DataFrame:
    """The jobs of one queue (label 'name' or 'prefix:name'); split once per ``ctx``."""
    j = snap.jobs
    if not len(j):
        return j
    if ctx is None:
        return j[queue_label(j.astype({"prefix": "str", "queue": "str"})) == queue]
    groups = ctx.memo("jobs_by_label", lambda: dict(tuple(j.groupby(
        queue_label(j.astype({"prefix": "str", "queue": "str"})).to_numpy(), sort=False))))
    return groups.get(queue, j.iloc[0:0])


def _rows_by_job(ctx, name: str, frame: pd.DataFrame) -> dict:
    """Row positions of ``frame`` by (prefix, queue, job id), made once per ``ctx``: a card
    per job must not scan every payload and event again."""
    def make():
        out: dict = {}
        keys = zip(frame["prefix"].astype("str"), frame["queue"].astype("str"), frame["job_id"].astype("str"))
        for i, k in enumerate(keys):
            out.setdefault(k, []).append(i)
        return out
    return ctx.memo(("rows_by_job", name), make)


def _pretty(text) -> str:
    if text is None or (isinstance(text, float) and text != text):
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)[:PAYLOAD_CHARS]
    except (ValueError, TypeError):
        return str(text)[:PAYLOAD_CHARS]


def _stack(text) -> str:
    """Stack traces (a JSON array, one per failed attempt) as text, newest first."""
    try:
        entries = [e for e in json.loads(text) if isinstance(e, str)]
    except (ValueError, TypeError):
        return _pretty(text)
    return "\n\n".join(reversed(entries))[:PAYLOAD_CHARS]


def job_card(snap, queue: str, job_id: str, logs: pd.DataFrame | None = None, ctx=None) -> str:
    """One job as HTML: why it is in its state (``forensics.explain``'s reasons), fields,
    timeline (with the worker log records that name the job, when ``logs`` joined by
    ``join_logs`` are given), data, options, stack trace (all escaped). ``ctx``: a detector
    Context of the snapshot, shared by the cards of one inspector."""
    from .detectors import Context
    from .explain import why
    from .thresholds import Thresholds
    e = escape
    ctx = ctx or Context(snap, Thresholds())
    jobs = _jobs_of(snap, queue, ctx)
    row = jobs[jobs["job_id"].astype("str") == str(job_id)]
    if not len(row):
        return f"<p>No job {e(str(job_id))} in {e(queue)}.</p>"
    r = row.iloc[0]
    reasons = why(ctx, r["prefix"], r["queue"], str(job_id))
    pay = snap.payloads
    at = _rows_by_job(ctx, "payloads", pay).get((str(r["prefix"]), str(r["queue"]), str(job_id)))
    p = pay.iloc[at[0]] if at else pd.Series(dtype=object)
    fields = ["state", "name", "added_at", "processed_at", "finished_at", "due_at", "attempts_made",
              "attempts_started", "attempts_configured", "backoff_type", "stalled_count", "failed_reason",
              "lock_present", "lock_ttl_ms", "processed_by", "progress", "log_count", "data_bytes"]
    rows = "".join(f"<tr><th>{f}</th><td>{e(str(r[f]))}</td></tr>" for f in fields if f in r and pd.notna(r[f]))
    blocks = "".join(f"<h5>{t}</h5><pre>{e(show(p.get(k)))}</pre>"
                     for t, k, show in (("data", "data", _pretty), ("options", "opts", _pretty),
                                        ("return value", "returnvalue", _pretty),
                                        ("stack traces, newest first", "stacktrace", _stack),
                                        ("log (newest lines)", "logs", _lines))
                     if pd.notna(p.get(k)))
    story = "<h5>why it is here</h5><ul>" + "".join(f"<li>{e(w)}</li>" for w in reasons) + "</ul>" if reasons else ""
    return (f"<div><h4>{e(queue)} / job {e(str(job_id))}</h4>{story}<table>{rows}</table>"
            f"{_timeline(snap, r, logs, ctx)}{blocks}</div>")


def _lines(text) -> str:
    try:
        return "\n".join(str(x) for x in json.loads(text))[:PAYLOAD_CHARS]
    except (ValueError, TypeError):
        return str(text)[:PAYLOAD_CHARS]


def _timeline(snap, r, logs: pd.DataFrame | None = None, ctx=None) -> str:
    """The job's moments: its timestamps, its events from the stream (BullMQ) and the
    worker log records that name it."""
    e = escape
    moments = [(r[c], c.replace("_at", "")) for c in ("added_at", "processed_at", "finished_at", "due_at")
               if pd.notna(r.get(c))]
    ev = snap.events
    if len(ev):
        if ctx is not None:
            mine = ev.iloc[_rows_by_job(ctx, "events", ev).get((str(r["prefix"]), str(r["queue"]), str(r["job_id"])), [])]
        else:
            mine = ev[(ev["prefix"].astype("str") == str(r["prefix"])) & (ev["queue"].astype("str") == str(r["queue"]))
                      & (ev["job_id"].astype("str") == str(r["job_id"]))]
        moments += [(t, f"event {x}" + (f" {f}" if isinstance(f, str) else ""))
                    for t, x, f in zip(mine["time"], mine["event"], mine["fields"])]
    if logs is not None and len(logs) and "job_state" in logs:
        mine = logs[(logs["prefix"] == str(r["prefix"])) & (logs["queue"] == str(r["queue"]))
                    & (logs["job_id"] == str(r["job_id"])) & logs["time"].notna()]
        moments += [(t, f"log {lv}: {m}" + (f" ({err})" if isinstance(err, str) and err not in str(m) else ""))
                    for t, lv, m, err in zip(mine["time"], mine["level"], mine["message"], mine["error"])]
    if not moments:
        return ""
    moments.sort(key=lambda m: pd.Timestamp(m[0]))
    rows = "".join(f"<tr><td>{e(str(t))}</td><td>{e(str(what))[:200]}</td></tr>" for t, what in moments)
    return f"<h5>timeline</h5><table>{rows}</table>"


def job_inspector(snap, logs: pd.DataFrame | None = None, interactive: bool = True, per_queue: int = 3):
    """Pick a queue, then a job: its fields, timeline (with its worker log records when
    ``logs`` are given), data, options and stack trace.
    Static fallback: the newest ``per_queue`` jobs of every queue."""
    from .detectors import Context
    from .thresholds import Thresholds
    queues = _queues(snap)
    if logs is not None:
        from .logs import join_logs
        logs = join_logs(logs, snap)
    ctx = Context(snap, Thresholds())
    if not interactive:
        cards = []
        for q in queues:
            jobs = _jobs_of(snap, q, ctx).sort_values("added_at", ascending=False, na_position="last").head(per_queue)
            cards += [job_card(snap, q, j, logs, ctx) for j in jobs["job_id"].astype("str")]
        return _HTML("<h3>Newest jobs per queue</h3>" + ("".join(cards) or "<p>No jobs.</p>"))
    import ipywidgets as w
    qpick = w.Dropdown(options=queues, description="queue")
    jpick = w.Dropdown(options=[], description="job")
    out = w.HTML()

    def show(_=None):
        out.value = job_card(snap, qpick.value, jpick.value, logs, ctx) if jpick.value else ""

    def jobs_for(_=None):
        # The first job of the new queue is picked and drawn here, always: job ids repeat across
        # queues ("1"), and a value that does not change fires no event (the card would stay on
        # the previous queue's job 1).
        jobs = _jobs_of(snap, qpick.value, ctx).sort_values("added_at", ascending=False, na_position="last")
        options = [(f"{j.job_id} · {j.state} · {j.name}", str(j.job_id)) for j in jobs.head(500).itertuples()]
        jpick.unobserve(show, "value")
        try:
            jpick.options = options
            jpick.value = options[0][1] if options else None
        finally:
            jpick.observe(show, "value")
        show()
    qpick.observe(jobs_for, "value")
    jpick.observe(show, "value")
    if queues:
        jobs_for()
    return w.VBox([w.HBox([qpick, jpick]), out])


def queue_picker(snap, interactive: bool = True):
    """Pick a queue: its state counts and the figures of its jobs."""
    from . import plots
    from .notebook import only_queue
    queues = _queues(snap)
    if not interactive or not queues:
        from .summary import queue_overview
        ov = queue_overview(snap)
        return _HTML(frame_html(ov) if len(ov) else "<p>No queues.</p>")
    import ipywidgets as w
    pick = w.Dropdown(options=queues, description="queue")
    out = w.Output()

    def show(_=None):
        out.clear_output()
        with out:
            sub = only_queue(snap, pick.value)  # the label, prefix-qualified when prefixes differ
            plots.jobs_by_state(sub).show()
            plots.active_timeline(sub).show()
    pick.observe(show, "value")
    show()
    return w.VBox([pick, out])


def threshold_controls(snap, thresholds: dict | None = None, interactive: bool = True):
    """Sliders for the main thresholds; moving one re-runs the detectors.
    Static fallback: the thresholds in force and which differ from the defaults (the
    diagnosis itself is already shown by the notebook; running it again adds nothing)."""
    from .diagnosis import diagnose
    from .thresholds import Thresholds
    base = Thresholds.coerce(thresholds)
    if not interactive:
        default = Thresholds()
        rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td>"
                       f"<td>{'' if v == getattr(default, k) else 'overridden'}</td></tr>"
                       for k, v in base.as_dict().items())
        return _HTML(f"<h4>Thresholds in force</h4><table>{rows}</table>")
    import ipywidgets as w
    knobs = {"stale_backlog_minutes": (0, 240), "hung_active_minutes": (0, 240), "max_attempts": (1, 100),
             "retry_storm_jobs": (1, 10000), "retention_max_jobs": (100, 1_000_000)}
    sliders = {k: (w.IntSlider if isinstance(getattr(base, k), int) else w.FloatSlider)(
        value=getattr(base, k), min=lo, max=hi, description=k, style={"description_width": "initial"},
        continuous_update=False) for k, (lo, hi) in knobs.items()}
    out = w.HTML()
    before: list = []   # the diagnosis at the notebook's thresholds, made on the first move

    def keys(d) -> dict:
        f = d.findings
        return {(i, str(p), str(q)): t for i, p, q, t in zip(f["id"], f["prefix"], f["queue"], f["title"])}

    def run(_=None):
        # Only what the move changes: the notebook shows the whole diagnosis above already
        # (repeating it made triage ~40,000 px long).
        t = base.replace(**{k: s.value for k, s in sliders.items()})
        if t == base:
            out.value = ("<p><i>At these thresholds the diagnosis is the one above. Move a slider: the findings "
                         "that appear or go away are listed here.</i></p>")
            return
        if not before:
            before.append(keys(diagnose(snap, thresholds=base)))
        now = keys(diagnose(snap, thresholds=t))
        came = [(k, now[k]) for k in now if k not in before[0]]
        went = [(k, before[0][k]) for k in before[0] if k not in now]

        def items(rows) -> str:
            return "".join(f"<li><code>{escape(k[0])}</code> {escape(k[2] if k[2] != 'None' else '(server)')}: "
                           f"{escape(str(title))}</li>" for k, title in rows[:50]) + (
                f"<li>… and {len(rows) - 50} more</li>" if len(rows) > 50 else "")
        out.value = (f"<p>{len(now)} finding(s) at these thresholds ({len(came)} new, {len(went)} gone).</p>"
                     + (f"<b>New</b><ul>{items(came)}</ul>" if came else "")
                     + (f"<b>Gone</b><ul>{items(went)}</ul>" if went else ""))
    for s in sliders.values():
        s.observe(run, "value")
    run()
    return w.VBox(list(sliders.values()) + [out])
