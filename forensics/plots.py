"""Plotly figures of a snapshot, shared by notebooks, reports and scripts.

Every function takes a Snapshot (and optional arguments) and returns a
``plotly.graph_objects.Figure`` with a title, axis units and fixed colours for job states,
so a figure reads without explanation. A snapshot without the data a figure needs gives
a figure that says so, never an exception.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .fingerprint import fingerprints
from .summary import queue_label

STATE_COLORS = {
    "wait": "#5dade2", "prioritized": "#af7ac5", "paused": "#aab7b8", "delayed": "#85c1e9",
    "waiting-children": "#76d7c4", "active": "#f5b041", "completed": "#58d68d",
    "failed": "#e74c3c", "orphan": "#7f8c8d", "missing-hash": "#17202a",
}
SEVERITY_COLORS = {"critical": "#7b0000", "high": "#c0392b", "medium": "#d68910", "low": "#2874a6",
                   "info": "#7f8c8d"}
SIZE_LINES = [(1024, "1 KB guideline"), (100 * 1024, "100 KB"), (1024 * 1024, "1 MB")]


def _empty(title: str, why: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False}, height=220,
                      annotations=[{"text": why, "showarrow": False, "font": {"size": 14}}])
    return fig


def _labelled(df: pd.DataFrame) -> pd.Series:
    return queue_label(df.astype({"prefix": "str", "queue": "str"})) if len(df) else pd.Series(dtype="str")


def jobs_by_state(snap) -> go.Figure:
    """Stacked bars: jobs per state for every queue."""
    title = "Jobs per state per queue"
    q = snap.queues
    if not len(q):
        return _empty(title, "no queues in this snapshot")
    label = _labelled(q)
    fig = go.Figure()
    for state, color in STATE_COLORS.items():
        col = "n_" + state.replace("-", "_")
        if col in q and q[col].sum():
            fig.add_bar(name=state, y=label, x=q[col], orientation="h", marker_color=color)
    fig.update_layout(title=title, barmode="stack", xaxis_title="jobs", yaxis_title="queue",
                      legend_title="state", height=max(300, 40 * len(q) + 150))
    return fig


def active_timeline(snap, limit: int = 200) -> go.Figure:
    """Each active job: waiting (added → started) then running (started → capture),
    red when its lock is gone (stalled), orange while the lock is held."""
    title = "Active jobs: waited, then running until the capture (red = lock gone)"
    j = snap.jobs
    act = j[(j["state"] == "active") & j["processed_at"].notna()].copy()
    if not len(act):
        return _empty(title, "no active jobs")
    now = snap.captured_at
    act["running_min"] = (now - act["processed_at"]).dt.total_seconds() / 60
    if len(act) > limit:
        title += f" (the {limit:,} longest-running of {len(act):,})"
    act = act.sort_values("running_min", ascending=False).head(limit)
    act["label"] = _labelled(act).to_numpy() + " #" + act["job_id"].astype("str")
    waited = ((act["processed_at"] - act["added_at"]).dt.total_seconds() / 60).clip(lower=0).fillna(0)
    locked = act["lock_present"].fillna(False).astype(bool)
    fig = go.Figure()
    fig.add_bar(name="waiting", y=act["label"], x=waited, base=-(act["running_min"] + waited),
                orientation="h", marker_color=STATE_COLORS["wait"])
    for is_locked, name, color in ((True, "running, lock held", STATE_COLORS["active"]),
                                   (False, "running, lock gone", STATE_COLORS["failed"])):
        sel = act[locked == is_locked]
        if len(sel):
            fig.add_bar(name=name, y=sel["label"], x=sel["running_min"], base=-sel["running_min"],
                        orientation="h", marker_color=color,
                        customdata=sel[["lock_ttl_ms"]].astype("float64").to_numpy(),
                        hovertemplate="%{y}<br>running %{x:.1f} min<br>lock ttl %{customdata[0]} ms<extra></extra>")
    fig.update_layout(title=title, barmode="overlay", xaxis_title="minutes before the capture (0 = capture)",
                      yaxis_title="job", height=max(300, 22 * len(act) + 150))
    return fig


def failures_over_time(snap) -> go.Figure:
    """Failures, retries and stalls per minute, from BullMQ's events stream (or, without
    one, from the failed jobs' finish times)."""
    title = "Failures and retries per minute"
    ev = snap.events
    series: dict[str, pd.Series] = {}
    if len(ev):
        retry = (ev["event"] == "delayed") | ((ev["event"] == "waiting") &
                                              ev["fields"].str.contains('"prev":"active"', regex=False, na=False))
        for name, mask in (("failed", ev["event"] == "failed"), ("retried", retry),
                           ("stalled", ev["event"] == "stalled")):
            if mask.any():
                series[name] = ev.loc[mask, "time"].dt.floor("min").value_counts().sort_index()
        source = "events stream"
    if not series:
        j = snap.jobs
        f = j.loc[(j["state"] == "failed") & j["finished_at"].notna(), "finished_at"]
        if len(f):
            series["failed (finish time of failed jobs)"] = f.dt.floor("min").value_counts().sort_index()
        source = "failed jobs"
    if not series:
        return _empty(title, "no failures in this snapshot")
    fig = go.Figure()
    colors = {"failed": STATE_COLORS["failed"], "retried": STATE_COLORS["delayed"], "stalled": STATE_COLORS["active"]}
    for name, s in series.items():  # bars: readable even when everything fell in one minute
        fig.add_bar(name=name, x=s.index, y=s.to_numpy(),
                    marker_color=colors.get(name.split(" ")[0], STATE_COLORS["failed"]))
    fig.update_layout(title=f"{title} ({source})", xaxis_title="minute (UTC)", yaxis_title="per minute",
                      barmode="group", xaxis={"type": "date", "tickformat": "%H:%M\n%b %d"})
    return fig


def attempts_histogram(snap) -> go.Figure:
    """How many attempts jobs have made, split by state (counted before plotting, so a
    million jobs make a figure as small as a hundred)."""
    title = "Attempts made per job"
    j = snap.jobs
    j = j[j["attempts_made"].notna()]
    if not len(j):
        return _empty(title, "no attempt counters in this snapshot")
    # one bar per count up to 10, then wider buckets: a job with 1,131 attempts is one bar in
    # "> 1,000", not the end of an axis with a tick per count (a thousand labels froze the browser)
    made = j["attempts_made"].astype("int64")
    bucket = pd.cut(made, ATTEMPT_EDGES, labels=ATTEMPT_LABELS, right=True)
    counts = pd.DataFrame({"state": j["state"].astype("str"), "attempts": bucket}).value_counts().sort_index()
    counts = counts[counts > 0]
    order = [b for b in ATTEMPT_LABELS if b in set(counts.index.get_level_values("attempts"))]
    fig = go.Figure()
    for state, grp in counts.groupby(level="state"):
        fig.add_bar(name=state, x=[str(x) for x in grp.index.get_level_values("attempts")], y=grp.to_numpy(),
                    marker_color=STATE_COLORS.get(state))
    fig.update_layout(title=title, barmode="stack", xaxis_title="attempts made", yaxis_title="jobs",
                      xaxis={"type": "category", "categoryorder": "array", "categoryarray": order})
    return fig


ATTEMPT_EDGES = [-1, *range(0, 11), 20, 50, 100, 1000, float("inf")]
ATTEMPT_LABELS = [str(n) for n in range(0, 11)] + ["11–20", "21–50", "51–100", "101–1,000", "> 1,000"]


def error_fingerprints(snap, logs: pd.DataFrame | None = None, top: int = 15) -> go.Figure:
    """The most frequent error fingerprints among failed and retrying jobs, and beside them
    the worker log records with the same fingerprint (one error reads as one thing)."""
    title = "Errors by fingerprint"
    j = snap.jobs
    failing = j[j["failed_reason"].notna()]
    jobs = fingerprints(failing["failed_reason"]).value_counts() if len(failing) else pd.Series(dtype="int64")
    logged = logs["fingerprint"].dropna().value_counts() if logs is not None and len(logs) else pd.Series(dtype="int64")
    if not len(jobs) and not len(logged):
        return _empty(title, "no failed reasons in this snapshot" + ("" if logs is None else " and no errors in the logs"))
    both = pd.DataFrame({"jobs": jobs, "log records": logged}).fillna(0)
    both = both.loc[both.sum(axis=1).sort_values(ascending=False).index[:top]].iloc[::-1]
    labels = [str(s)[:80] for s in both.index]
    fig = go.Figure()
    fig.add_bar(name="jobs (failed reason)", x=both["jobs"], y=labels, orientation="h", marker_color=STATE_COLORS["failed"])
    if len(logged):
        fig.add_bar(name="worker log records", x=both["log records"], y=labels, orientation="h", marker_color="#566573")
    fig.update_layout(title=f"{title} (top {len(both)})", xaxis_title="jobs / records", yaxis_title="error",
                      barmode="group", height=max(300, 30 * len(both) * (2 if len(logged) else 1) + 150))
    return fig


# Above this many jobs a figure is drawn from a summary (quartiles, the largest points), not
# from every job: the report of a million-job snapshot stays small and quick to open.
POINTS_LIMIT = 5000
OUTLIERS_SHOWN = 200


def payload_sizes(snap) -> go.Figure:
    """Job data size per job name, log scale, with the 1 KB / 100 KB / 1 MB lines. Above
    POINTS_LIMIT jobs, each box is drawn from its quartiles and only the largest
    OUTLIERS_SHOWN jobs per name are points (the title says so)."""
    title = "Job data size by job name"
    j = snap.jobs
    j = j[j["data_bytes"].fillna(0) > 0]
    if not len(j):
        return _empty(title, "no job data in this snapshot")
    fig = go.Figure()
    groups = j["data_bytes"].astype("float64").groupby(j["name"].astype("str"))
    summarized = len(j) > POINTS_LIMIT
    for name, sizes in groups:
        if not summarized:
            fig.add_box(name=name, x=sizes, boxpoints="outliers", orientation="h")
            continue
        q1, med, q3 = sizes.quantile([0.25, 0.5, 0.75]).to_numpy()
        iqr = q3 - q1
        lo, hi = sizes[sizes >= q1 - 1.5 * iqr].min(), sizes[sizes <= q3 + 1.5 * iqr].max()
        fig.add_box(name=name, q1=[q1], median=[med], q3=[q3], lowerfence=[lo], upperfence=[hi], y=[name],
                    orientation="h", boxpoints=False, legendgroup=name, marker_color="#2874a6")
        out = sizes[sizes > hi].nlargest(OUTLIERS_SHOWN)
        if len(out):
            fig.add_scatter(name=name, x=out.to_numpy(), y=[name] * len(out), mode="markers",
                            marker={"color": "#2874a6", "size": 5, "opacity": 0.6}, legendgroup=name)
    for size, label in SIZE_LINES:
        fig.add_vline(x=size, line_dash="dash", line_color="#c0392b", annotation_text=label)
    if summarized:
        title += (f" ({len(j):,} jobs: boxes from the quartiles of all of them; points: the largest "
                  f"{OUTLIERS_SHOWN} outliers per name)")
    fig.update_layout(title=title, xaxis_type="log", xaxis_title="bytes (log scale)", yaxis_title="job name",
                      showlegend=False, height=max(300, 30 * j["name"].nunique() + 150))
    return fig


def memory_breakdown(snap) -> go.Figure:
    """Where Redis memory goes: queue → key family (MEMORY USAGE; sampled families marked ~)."""
    title = "Redis memory by queue and key family"
    m = snap.memory
    if not len(m):
        return _empty(title, "memory was not measured (MEMORY USAGE refused or no queues)")
    m = m.copy()
    m["q"] = _labelled(m).to_numpy()
    m["fam"] = m["family"].astype("str") + m["estimated"].map({True: " ~", False: ""})
    queues = m.groupby("q")["bytes"].sum()
    ids = ["all"] + [f"q/{q}" for q in queues.index] + [f"q/{r.q}/{r.fam}" for r in m.itertuples()]
    labels = ["all queues"] + list(queues.index) + list(m["fam"])
    parents = [""] + ["all"] * len(queues) + [f"q/{q}" for q in m["q"]]
    values = [int(queues.sum())] + [int(v) for v in queues] + [int(v) for v in m["bytes"]]
    fig = go.Figure(go.Treemap(ids=ids, labels=labels, parents=parents, values=values, branchvalues="total",
                               hovertemplate="%{label}<br>%{value:,} bytes<extra></extra>"))
    fig.update_layout(title=f"{title} (bytes; ~ = sampled)")
    return fig


NEEDS_SERIES = "one snapshot only: capture a series (forensics capture --every 30 --count 20) to see this over time"
NEEDS_LOGS = "no worker logs: pass them with --logs (or the notebook's logs parameter)"


def memory_over_time(series) -> go.Figure:
    """Redis used_memory at each capture, maxmemory, and the straight-line projection to it."""
    from .detectors import trend
    from .detectors.trends import byte_rate, duration
    title = "Redis memory over time"
    if series is None or len(series) < 2:
        return _empty(title, NEEDS_SERIES)
    r = series.for_trends.redis
    if not len(r) or r["used_memory"].notna().sum() < 2:
        return _empty(title, "INFO memory was not readable in these captures")
    mb = 1024 * 1024
    fig = go.Figure()
    fig.add_scatter(name="used_memory", x=r["captured_at"], y=r["used_memory"] / mb, mode="lines+markers",
                    line_color="#2874a6")
    limit = r["maxmemory"].iloc[-1]
    tr = trend(r["captured_at"], r["used_memory"])
    last_t, last_v = r["captured_at"].iloc[-1], float(r["used_memory"].iloc[-1])
    note = ""
    if tr and tr["slope_per_s"] > 0:
        eta = (float(limit) - last_v) / tr["slope_per_s"] if pd.notna(limit) and limit else None
        horizon = eta if eta is not None and eta < 30 * 86400 else max(tr["span_s"], 3600)
        end_t = last_t + pd.Timedelta(seconds=max(horizon, 0))
        fig.add_scatter(name="projection (straight line)", x=[last_t, end_t],
                        y=[last_v / mb, (last_v + tr["slope_per_s"] * max(horizon, 0)) / mb],
                        mode="lines", line={"dash": "dash", "color": "#c0392b"})
        note = f"; +{byte_rate(tr['slope_per_s'], tr['span_s'])}" + (f", full in ~{duration(eta)}" if eta is not None else "")
    if pd.notna(limit) and limit:
        fig.add_hline(y=float(limit) / mb, line_dash="dot", line_color="#7b0000",
                      annotation_text=f"maxmemory {float(limit) / mb:,.0f} MB")
    fig.update_layout(title=title + note, xaxis_title="time (UTC)", yaxis_title="MB", yaxis_rangemode="tozero")
    return fig


def backlog_over_time(series, top: int = 10) -> go.Figure:
    """Waiting + paused + prioritized + delayed jobs per queue at each capture."""
    title = "Backlog over time (waiting + paused + prioritized + delayed)"
    if series is None or len(series) < 2:
        return _empty(title, NEEDS_SERIES)
    q = series.for_trends.queues
    if not len(q):
        return _empty(title, "no queues in these captures")
    q = q.assign(backlog=q[["n_wait", "n_paused", "n_prioritized", "n_delayed"]].sum(axis=1),
                 label=_labelled(q).to_numpy())
    biggest = q.groupby("label")["backlog"].max().sort_values(ascending=False)
    biggest = biggest[biggest > 0].head(top)
    if not len(biggest):
        return _empty(title, "no queue had a backlog in any capture")
    fig = go.Figure()
    for label in biggest.index:
        g = q[q["label"] == label].sort_values("captured_at")
        fig.add_scatter(name=label, x=g["captured_at"], y=g["backlog"], mode="lines+markers")
    fig.update_layout(title=title, xaxis_title="time (UTC)", yaxis_title="jobs", yaxis_rangemode="tozero")
    return fig


def worker_memory(logs: pd.DataFrame | None) -> go.Figure:
    """Each worker's heap used (solid) and RSS (dotted) from its memory log lines."""
    title = "Worker memory from the logs"
    if logs is None or not len(logs):
        return _empty(title, NEEDS_LOGS)
    from .logs import has_memory
    mem = logs[has_memory(logs) & logs["time"].notna()]
    if not len(mem):
        return _empty(title, "the logs hold no memory figures (e.g. pino logs of process.memoryUsage())")
    mb = 1024 * 1024
    fig = go.Figure()
    for worker, g in mem.groupby("worker"):
        for col, dash, what in (("heap_used_bytes", "solid", "heap"), ("rss_bytes", "dot", "RSS")):
            pts = g[g[col].notna()]
            if len(pts):
                fig.add_scatter(name=f"{worker} {what}", x=pts["time"], y=pts[col] / mb, mode="lines",
                                line={"dash": dash})
    fig.update_layout(title=title, xaxis_title="time (UTC)", yaxis_title="MB", yaxis_rangemode="tozero")
    return fig


def timeline(snap, logs: pd.DataFrame | None = None, limit: int = 5000,
             moments: list[tuple] | None = None, captures=None) -> go.Figure:
    """Queue events (BullMQ's events stream, else job timestamps) and worker log records on
    one time axis; hover shows the job and the message. ``moments``: (time, what) of the
    incident (``Postmortem.timeline``), drawn as their own lane with the first one, the
    incident's start, marked; ``captures``: the times of a series' captures, their own lane.
    The capture of ``snap`` is the dashed line."""
    title = "Timeline: queue events and worker logs"
    lanes = []
    cut = False
    ev = snap.events
    if len(ev):
        cut = len(ev) > limit
        e = ev.tail(limit)
        lanes.append(pd.DataFrame({"time": e["time"], "lane": "event: " + e["event"].astype("str"),
                                   "text": _labelled(e).to_numpy() + " job " + e["job_id"].astype("str").fillna("")}))
    else:
        j = snap.jobs
        for col, what in (("added_at", "added"), ("processed_at", "started"), ("finished_at", "finished")):
            sel = j[j[col].notna()]
            cut = cut or len(sel) > limit
            sel = sel.tail(limit)
            if len(sel):
                lanes.append(pd.DataFrame({"time": sel[col], "lane": f"job {what}",
                                           "text": _labelled(sel).to_numpy() + " job " + sel["job_id"].astype("str")}))
    if logs is not None and len(logs):
        lg = logs[logs["time"].notna()]
        cut = cut or len(lg) > limit
        lg = lg.tail(limit)
        lanes.append(pd.DataFrame({"time": lg["time"], "lane": "log: " + lg["level"].fillna("?").astype("str"),
                                   "text": (lg["worker"].fillna("").astype("str") + ": "
                                            + lg["message"].fillna("").astype("str").str.slice(0, 160)
                                            + lg["job_id"].map(lambda x: f" (job {x})" if isinstance(x, str) else ""))}))
    marks = [(t, str(w)) for t, w in (moments or []) if t is not None and not pd.isna(t)]
    if marks:
        lanes.append(pd.DataFrame({"time": [t for t, _ in marks], "lane": "▶ incident",
                                   "text": [w[:200] for _, w in marks]}))
    if captures is not None and len(captures) > 1:
        lanes.append(pd.DataFrame({"time": list(captures), "lane": "▶ captures",
                                   "text": [f"capture {i + 1} of {len(captures)}" for i in range(len(captures))]}))
    if not lanes:
        return _empty(title, "no events, job timestamps or log records")
    df = pd.concat(lanes, ignore_index=True)
    df["time"] = pd.to_datetime(df["time"], utc=True)
    colors = {"incident": STATE_COLORS["failed"], "captures": "#34495e",
              "failed": STATE_COLORS["failed"], "retries-exhausted": STATE_COLORS["failed"],
              "error": STATE_COLORS["failed"], "fatal": "#7b0000", "warn": STATE_COLORS["active"],
              "stalled": STATE_COLORS["active"], "completed": STATE_COLORS["completed"],
              "finished": STATE_COLORS["completed"], "added": STATE_COLORS["wait"], "waiting": STATE_COLORS["wait"],
              "delayed": STATE_COLORS["delayed"], "active": "#f8c471", "started": "#f8c471",
              "progress": STATE_COLORS["waiting-children"], "info": "#566573", "debug": "#aab7b8", "trace": "#d5dbdb"}
    fig = go.Figure()
    for lane, g in df.groupby("lane", sort=True):
        ours = lane.startswith("▶")   # the incident's moments and the captures: drawn bigger
        fig.add_scatter(name=lane, x=g["time"], y=[lane] * len(g), mode="markers", text=g["text"],
                        marker={"color": colors.get(lane.split(": ")[-1].split(" ")[-1], "#7f8c8d"),
                                "size": 12 if ours else 7, "symbol": "diamond" if ours else "circle",
                                "opacity": 0.9 if ours else 0.7},
                        hovertemplate="%{x}<br>%{text}<extra>%{y}</extra>")
    fig.add_vline(x=snap.captured_at, line_dash="dash", line_color="#7f8c8d")
    start = pd.Timestamp(marks[0][0]) if marks else None
    if start is not None and start < pd.Timestamp(snap.captured_at):
        # (add_vline's own annotation cannot place itself on a time axis: line + annotation)
        fig.add_vline(x=start, line_dash="dot", line_color=STATE_COLORS["failed"])
        fig.add_annotation(x=start, y=1, yref="paper", text="incident start", showarrow=False,
                           xanchor="left", yanchor="bottom", font={"color": STATE_COLORS["failed"]})
        title += " (dotted line: the incident's start)"
    if cut:
        title += f" (the last {limit:,} of each source shown)"
    fig.update_layout(title=title + " (dashed line: the capture)", xaxis_title="time (UTC)", yaxis_title="what",
                      showlegend=False,
                      height=max(300, 30 * df["lane"].nunique() + 150))
    return fig


FIGURES = {
    "jobs_by_state": jobs_by_state, "active_timeline": active_timeline,
    "failures_over_time": failures_over_time, "attempts_histogram": attempts_histogram,
    "error_fingerprints": error_fingerprints, "payload_sizes": payload_sizes,
    "memory_breakdown": memory_breakdown, "timeline": timeline,
}
# Figures of a Series (None: a figure saying a series is needed) and of worker logs.
SERIES_FIGURES = {"memory_over_time": memory_over_time, "backlog_over_time": backlog_over_time}
LOG_FIGURES = {"worker_memory": worker_memory}
