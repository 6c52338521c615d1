"""A postmortem people read: what happened, to which queues, since when, what it cost, what
caused it and what to do, in the order every SRE postmortem template shares:

**Summary**, **Impact**, **Timeline**, **Root causes**, **Action items**, **Checklist**,
**Details**. ``Postmortem(snap, diagnosis, logs, series)`` holds them as data;
``to_markdown()`` pastes into an incident doc or a GitHub issue; in a notebook (and so the
HTML report) it shows itself with the timeline as one figure (``figure()``: the events stream,
job timestamps, log records and a series' captures, the incident's start and the capture
marked), the moments listed under it; ``_repr_html_()`` is the same without the figure. Big
incidents stay readable: root causes first, every list capped with "and N more".
"""
from __future__ import annotations

from html import escape

import pandas as pd

from .diagnosis import RANK, VERDICT_MARK
from .summary import human_bytes

SECTIONS = ("Summary", "Impact", "Timeline", "Root causes", "Action items", "Checklist", "Details")
TOP = 20   # rows per list before "and N more"
VERDICT_COLOR = {"pass": "#d4edda", "warn": "#fff3cd", "fail": "#f8d7da", "unknown": "#eeeeee"}


def _q(prefix, queue) -> str:
    return f"{prefix}:{queue}" if isinstance(prefix, str) and isinstance(queue, str) else (
        str(queue) if isinstance(queue, str) else "(server)")


def _t(ts) -> str:
    return "" if ts is None or pd.isna(ts) else pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M:%S UTC")


class Postmortem:
    def __init__(self, snap, diagnosis, logs: pd.DataFrame | None = None, series=None):
        self.snap, self.d = snap, diagnosis
        self.logs = logs if logs is not None else (snap.logs if snap.has_logs else None)
        self.series = series
        f = diagnosis.findings
        self.findings = f
        self.roots = diagnosis.root_causes
        self.captured_at = snap.captured_at
        jobs = snap.jobs
        self.jobs = jobs
        affected = f[f["queue"].notna()] if len(f) else f
        self.affected = sorted({_q(p, q) for p, q in zip(affected["prefix"], affected["queue"])}) if len(f) else []
        self.stuck = self._stuck()
        self.failed = int((jobs["state"].astype("str") == "failed").sum()) if len(jobs) else 0
        self.lost = self._lost()
        self.timeline = self._timeline()
        self.since = self.timeline[0][0] if self.timeline else None

    # -- figures -----------------------------------------------------------------------
    def _stuck(self) -> int:
        """Jobs the stuck family covers, each once (the findings' members: rows of the jobs
        table); a finding without members counts its own count."""
        f = self.findings
        rows: set = set()
        unnamed = 0
        for fam, count, members in zip(f["family"], f["count"], self.d.members):
            if fam != "stuck":
                continue
            if members is None:
                unnamed += int(count)
            else:
                rows.update(members.tolist())
        return len(rows) + unnamed

    def _lost(self) -> int:
        f = self.findings
        if not len(f):
            return 0
        n = 0
        for r in f.itertuples():
            ev = r.evidence or {}
            if r.id == "swallowed-adds":
                n += int(ev.get("lost", 0) or 0)
            elif r.id == "missing-job-hash":
                n += int(r.count)
        return n

    def _timeline(self) -> list[tuple[pd.Timestamp, str]]:
        """The incident's moments: first failure per affected queue, the oldest job stuck,
        the first retry of a storm, the first error in the worker logs, the capture."""
        out: list[tuple[pd.Timestamp, str]] = []
        jobs = self.jobs
        if len(jobs):
            failed = jobs[jobs["failed_reason"].notna() & jobs["finished_at"].notna()]
            for (p, q), g in failed.groupby([failed["prefix"].astype("str"), failed["queue"].astype("str")]):
                first = g.loc[g["finished_at"].idxmin()]
                out.append((first["finished_at"], f"first failure on {p}:{q}: {str(first['failed_reason'])[:120]}"))
            active = jobs[(jobs["state"].astype("str") == "active") & ~jobs["lock_present"].fillna(False).astype(bool)]
            if len(active) and active["processed_at"].notna().any():
                first = active.loc[active["processed_at"].idxmin()]
                out.append((first["processed_at"], f"oldest stalled job started: {first['prefix']}:{first['queue']} "
                                                   f"job {first['job_id']} (its worker is gone)"))
            waiting = jobs[jobs["state"].astype("str").isin(["wait", "prioritized"])]
            if len(waiting) and waiting["added_at"].notna().any():
                first = waiting.loc[waiting["added_at"].idxmin()]
                out.append((first["added_at"], f"oldest job still waiting added: {first['prefix']}:{first['queue']} "
                                               f"job {first['job_id']}"))
        for r in self.findings.itertuples() if len(self.findings) else []:
            ev = r.evidence or {}
            if r.id == "retry-storm" and ev.get("first_retry_at"):
                out.append((pd.Timestamp(ev["first_retry_at"]), f"retry storm starts on {_q(r.prefix, r.queue)} "
                                                                 f"(~{int(ev.get('retries_per_min') or 0):,} retries/min)"))
        logs = self.snap.logs if self.snap.has_logs else None
        if logs is not None and len(logs) and "level" in logs:
            errs = logs[logs["level"].astype("str").isin(["error", "fatal"]) & logs["time"].notna()]
            if len(errs):
                first = errs.loc[errs["time"].idxmin()]
                what = first.get("error") if pd.notna(first.get("error")) else first.get("message")
                out.append((first["time"], f"first error in the worker logs ({first.get('worker')}): {str(what)[:120]}"))
        out.append((self.captured_at, "snapshot captured"))
        out = [(pd.Timestamp(t).tz_convert("UTC") if pd.Timestamp(t).tzinfo else pd.Timestamp(t).tz_localize("UTC"), w)
               for t, w in out if t is not None and not pd.isna(t)]
        return sorted(out, key=lambda x: x[0])

    # -- sections as rows --------------------------------------------------------------
    def summary(self) -> str:
        if not len(self.findings):
            return (f"Nothing wrong found in {len(self.snap.queues)} queue(s) captured {_t(self.captured_at)}: "
                    "no finding, see the checklist for what could be better.")
        worst = self.d.worst
        top = self.roots.head(3)
        causes = "; ".join(f"{r.id} on {_q(r.prefix, r.queue)} ({r.title})" for r in top.itertuples())
        more = f" and {len(self.roots) - 3} more" if len(self.roots) > 3 else ""
        return (f"{len(self.roots)} root cause(s), worst {worst.upper()}, across {len(self.affected)} queue(s): "
                f"{causes}{more}. {self.stuck:,} job(s) stuck, {self.failed:,} failed, {self.lost:,} lost"
                + (f"; it started by {_t(self.since)}" if self.since is not None else "")
                + f"; captured {_t(self.captured_at)}.")

    def figures(self) -> list[tuple[str, str]]:
        return [("root causes", f"{len(self.roots)}"), ("worst severity", (self.d.worst or "none")),
                ("queues affected", f"{len(self.affected)} of {len(self.snap.queues)}"),
                ("jobs stuck", f"{self.stuck:,}"), ("jobs failed", f"{self.failed:,}"), ("jobs lost", f"{self.lost:,}"),
                ("since", _t(self.since) or "unknown"), ("captured", _t(self.captured_at))]

    def impact(self) -> pd.DataFrame:
        q = self.snap.queues
        f = self.findings
        # the findings split by queue once (a filter of them all per queue is quadratic)
        of = {k: g for k, g in f.groupby(["prefix", "queue"], sort=False)} if len(f) else {}
        rows = []
        for r in q.itertuples():
            mine = of.get((r.prefix, r.queue))
            if mine is None:
                continue
            rows.append({"queue": _q(r.prefix, r.queue),
                         "worst": mine["severity"].map(RANK).min(),
                         "waiting": int(r.n_wait + r.n_prioritized + r.n_paused), "active": int(r.n_active),
                         "delayed": int(r.n_delayed), "failed": int(r.n_failed), "workers": int(r.workers),
                         "findings": ", ".join(dict.fromkeys(mine["id"]))})
        df = pd.DataFrame(rows, columns=["queue", "worst", "waiting", "active", "delayed", "failed", "workers",
                                         "findings"])
        if len(df):
            from .detectors import SEVERITIES
            df = df.sort_values(["worst", "failed"], ascending=[True, False])
            df["worst"] = df["worst"].map(lambda i: SEVERITIES[int(i)])
        return df.reset_index(drop=True)

    def root_causes(self) -> list[dict]:
        f = self.findings
        out = []
        for i, r in self.roots.iterrows():
            effects = [f"{e['id']} on {_q(e['prefix'], e['queue'])}" for e in r["explains"]]
            code = [f"{c['file']}:{c['line']}" for c in (r["evidence"] or {}).get("code", [])[:3]]
            out.append({"id": r["id"], "severity": r["severity"], "queue": _q(r["prefix"], r["queue"]),
                        "title": r["title"], "effects": effects, "code": code})
        return out

    def action_items(self) -> list[dict]:
        """One per remediation (deduplicated by finding id), worst first, naming its queues and
        the code lines that configure them."""
        f = self.findings
        items: dict[str, dict] = {}
        for r in f.itertuples() if len(f) else []:
            # (queues and code lines as dict keys: in order, each once, without a scan per finding)
            it = items.setdefault(r.id, {"id": r.id, "severity": r.severity, "queues": {}, "code": {},
                                         "action": r.remediation})
            if RANK[r.severity] < RANK[it["severity"]]:
                it["severity"] = r.severity
            it["queues"][_q(r.prefix, r.queue)] = None
            for c in (r.evidence or {}).get("code", [])[:3]:
                it["code"][f"{c['file']}:{c['line']}"] = None
        for it in items.values():
            it["queues"], it["code"] = list(it["queues"]), list(it["code"])
        roots = set(self.roots["id"]) if len(self.roots) else set()
        return sorted(items.values(), key=lambda x: (x["id"] not in roots, RANK[x["severity"]], x["id"]))

    def matrix(self) -> pd.DataFrame:
        c = self.d.checklist
        if not len(c):
            return pd.DataFrame()
        c = c.assign(q=[_q(p, q) for p, q in zip(c["prefix"], c["queue"])])
        return c.pivot(index="q", columns="item", values="verdict")[list(dict.fromkeys(c["item"]))]

    # -- renderings ----------------------------------------------------------------------
    def to_markdown(self) -> str:
        m = self.snap.manifest
        L = [f"# Postmortem: {_md(m.get('source'))}", "", f"Captured {_t(self.captured_at)} by queue-forensics "
             f"{m.get('tool_version')}" + (" (PostgreSQL backend)" if m.get("backend") == "postgres" else ""), ""]
        L += ["## Summary", "", _md(self.summary()), "", "| figure | value |", "|---|---|"]
        L += [f"| {k} | {v} |" for k, v in self.figures()]
        L += ["", "## Impact", ""]
        imp = self.impact()
        if len(imp):
            L += ["| queue | worst | waiting | active | delayed | failed | workers | findings |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
            L += [f"| {_md(r.queue)} | {r.worst} | {r.waiting:,} | {r.active:,} | {r.delayed:,} | {r.failed:,} | "
                  f"{r.workers} | {_md(r.findings)} |" for r in imp.head(TOP).itertuples()]
            L += [f"", f"… and {len(imp) - TOP} more queue(s)"] if len(imp) > TOP else []
        else:
            L += ["No queue is affected."]
        L += ["", "## Timeline", "", "| time (UTC) | what |", "|---|---|"]
        tl = self.timeline
        L += [f"| {_t(t)} | {_md(w)} |" for t, w in (tl[:TOP] + ([tl[-1]] if len(tl) > TOP else []))]
        L += ["", "## Root causes", ""]
        rc = self.root_causes()
        for r in rc[:TOP]:
            L.append(f"- **{r['severity'].upper()} `{r['id']}`** on {_md(r['queue'])}: {_md(r['title'])}"
                     + (f" (at {_md(', '.join(r['code']))})" if r["code"] else ""))
            L += [f"  - ↳ {_md(e)}" for e in r["effects"][:10]]
        L += [f"- … and {len(rc) - TOP} more root cause(s)"] if len(rc) > TOP else []
        L += ["No root cause: nothing wrong was found."] if not rc else []
        L += ["", "## Action items", ""]
        ai = self.action_items()
        for i, a in enumerate(ai[:TOP], 1):
            qs = ", ".join(a["queues"][:8]) + (f" and {len(a['queues']) - 8} more" if len(a["queues"]) > 8 else "")
            L.append(f"{i}. **{a['id']}** ({a['severity']}; {_md(qs)}): {_md(a['action'])}"
                     + (f" Where: {_md(', '.join(a['code'][:5]))}." if a["code"] else ""))
        L += [f"… and {len(ai) - TOP} more action item(s)"] if len(ai) > TOP else []
        L += ["", "## Checklist", ""]
        mx = self.matrix()
        if len(mx):
            L += ["| queue | " + " | ".join(mx.columns) + " |", "|---|" + "---|" * len(mx.columns)]
            L += [f"| {_md(q)} | " + " | ".join(VERDICT_MARK.get(v, "?") for v in row) + " |"
                  for q, row in list(mx.iterrows())[:TOP * 5]]
            L += [f"", f"… and {len(mx) - TOP * 5} more queue(s)"] if len(mx) > TOP * 5 else []
        L += ["", "## Details", "", f"- source: {_md(m.get('source'))}", f"- complete: {m.get('complete')}"
              + (f" ({_md(m.get('incomplete_reason'))})" if not m.get("complete") else ""),
              f"- consistency: {_md(m.get('consistency'))}", f"- queues: {len(self.snap.queues)}, jobs: "
              f"{self.snap.row_count('jobs'):,}, events: {self.snap.row_count('events'):,}",
              "- plots: omitted in Markdown (`forensics report` renders them in HTML)", ""]
        return "\n".join(L)

    def figure(self):
        """The incident on one time axis (``plots.timeline`` with its moments and captures)."""
        from . import plots
        captures = self.series.captured_at if self.series is not None and len(self.series) > 1 else None
        fig = plots.timeline(self.snap, self.logs, moments=self.timeline, captures=captures)
        fig.update_layout(title="The incident: " + fig.layout.title.text[len("Timeline: "):])
        return fig

    def _ipython_display_(self) -> None:
        """Summary and impact, the timeline figure, then the rest: three outputs in order."""
        from IPython.display import HTML, display
        html = self._repr_html_()
        cut = html.index("<h2>Timeline</h2>") + len("<h2>Timeline</h2>")
        display(HTML(html[:cut] + "</div>"))
        display(self.figure())
        display(HTML("<div class='postmortem'>" + html[cut:]))

    def _repr_html_(self) -> str:
        e = escape
        h = [f"<h2>Summary</h2><p>{e(self.summary())}</p><table>"
             + "".join(f"<tr><th style='text-align:left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in self.figures())
             + "</table>", "<h2>Impact</h2>"]
        imp = self.impact()
        h.append(imp.head(TOP).to_html(index=False, escape=True) + (f"<p>… and {len(imp) - TOP} more queue(s)</p>"
                                                                    if len(imp) > TOP else "")
                 if len(imp) else "<p>No queue is affected.</p>")
        tl = self.timeline
        h.append("<h2>Timeline</h2><table>" + "".join(
            f"<tr><td style='white-space:nowrap'>{e(_t(t))}</td><td>{e(w)}</td></tr>"
            for t, w in (tl[:TOP] + ([tl[-1]] if len(tl) > TOP else []))) + "</table>")
        rc = self.root_causes()
        h.append("<h2>Root causes</h2>" + ("<ul>" + "".join(
            f"<li><b>{e(r['severity'].upper())} <code>{e(r['id'])}</code></b> on {e(r['queue'])}: {e(r['title'])}"
            + (f" <small>at <code>{e(', '.join(r['code']))}</code></small>" if r["code"] else "")
            + ("<ul>" + "".join(f"<li>↳ {e(x)}</li>" for x in r["effects"][:10]) + "</ul>" if r["effects"] else "")
            + "</li>" for r in rc[:TOP]) + "</ul>" + (f"<p>… and {len(rc) - TOP} more</p>" if len(rc) > TOP else "")
            if rc else "<p>Nothing wrong was found.</p>"))
        ai = self.action_items()
        h.append("<h2>Action items</h2><ol>" + "".join(
            f"<li><b>{e(a['id'])}</b> ({e(a['severity'])}; {e(', '.join(a['queues'][:8]))}"
            + (f" and {len(a['queues']) - 8} more" if len(a["queues"]) > 8 else "") + f"): {e(a['action'])}"
            + (f" <small>Where: <code>{e(', '.join(a['code'][:5]))}</code></small>" if a["code"] else "") + "</li>"
            for a in ai[:TOP]) + "</ol>" + (f"<p>… and {len(ai) - TOP} more</p>" if len(ai) > TOP else ""))
        mx = self.matrix()
        if len(mx):
            c = self.d.checklist
            ev = {(_q(p, q), i): str(x) for p, q, i, x in zip(c["prefix"], c["queue"], c["item"], c["evidence"])}
            head = "".join(f"<th>{e(str(col))}</th>" for col in mx.columns)
            body = "".join(
                f"<tr><th style='text-align:left'>{e(str(q))}</th>" + "".join(
                    f"<td style='background:{VERDICT_COLOR.get(v, '#eee')}' title='{e(ev.get((q, col), ''))}'>"
                    f"{e(VERDICT_MARK.get(v, '?'))}</td>" for col, v in row.items()) + "</tr>"
                for q, row in list(mx.iterrows())[:TOP * 5])
            h.append(f"<h2>Checklist</h2><p><small>Hover a cell for its evidence.</small></p>"
                     f"<table class='checklist'><tr><th>queue</th>{head}</tr>{body}</table>"
                     + (f"<p>… and {len(mx) - TOP * 5} more queue(s)</p>" if len(mx) > TOP * 5 else ""))
        h.append("<h2>Details</h2>")
        return "<div class='postmortem'>" + "".join(h) + "</div>"


def _md(text) -> str:
    """Text from the snapshot made inert in Markdown: no table break, no raw HTML."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("\n", " "))
