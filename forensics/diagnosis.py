"""diagnose(): run every registered detector and the checklist over a snapshot.

The result is data: ``findings`` and ``checklist`` DataFrames with fixed columns, rendered
as a terminal table, Markdown, JSON (schema ``forensics.diagnosis/1``) or HTML.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from . import checklist as checklist_mod
from .causes import link
from .detectors import FAMILIES, REGISTRY, SEVERITIES, Context, Finding
from .errors import UsageError
from .htmlsafe import escape
from .logs import gather_logs
from .thresholds import Thresholds

SCHEMA = "forensics.diagnosis/1"
FINDING_COLUMNS = ["id", "family", "severity", "prefix", "queue", "title", "count", "job_ids",
                   "evidence", "remediation", "explains", "explained_by"]
RANK = {s: i for i, s in enumerate(SEVERITIES)}
VERDICT_MARK = {"pass": "ok", "warn": "WARN", "fail": "FAIL", "unknown": "?"}


def _plain(obj: Any) -> Any:
    """JSON-able copy (numpy and pandas scalars, timestamps)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, (pd.Timestamp,)):
        return obj.isoformat()
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _at(r) -> str:
    """'  at file:line, file:line' for a finding whose evidence names code sites (forensics scan)."""
    ev = r["evidence"] if isinstance(r["evidence"], dict) else {}
    code = ev.get("code") or []
    if not code:
        return ""
    return "  at " + ", ".join(f"{c['file']}:{c['line']}" for c in code[:3]) + (" …" if len(code) > 3 else "")


class Diagnosis:
    """Findings (worst first, each linked to the findings it explains or is explained by)
    and checklist verdicts for one snapshot."""

    def __init__(self, findings: pd.DataFrame, checklist: pd.DataFrame, snapshot: dict,
                 thresholds: Thresholds, errors: list[dict], members: list | None = None):
        self.findings = findings
        self.checklist = checklist
        self.snapshot = snapshot
        self.thresholds = thresholds
        self.errors = errors
        # per finding (same order): row labels of the snapshot's jobs it covers, or None
        self.members = members if members is not None else [None] * len(findings)

    # -- queries ----------------------------------------------------------------------
    @property
    def worst(self) -> str | None:
        if not len(self.findings):
            return None
        return SEVERITIES[int(self.findings["severity"].map(RANK).min())]

    def at_least(self, severity: str) -> pd.DataFrame:
        if severity not in RANK:
            raise UsageError(f"unknown severity {severity!r}; one of {', '.join(SEVERITIES)}")
        return self.findings[self.findings["severity"].map(RANK) <= RANK[severity]]

    @property
    def root_causes(self) -> pd.DataFrame:
        """The findings no other finding explains (fix these first)."""
        f = self.findings
        return f[[not refs for refs in f["explained_by"]]] if len(f) else f

    def tree(self) -> list[tuple[int, int]]:
        """(depth, position) of every finding in reading order: each root cause (the worst
        tree first), then what it explains, folded beneath it. A finding with several
        causes is shown under the first; every finding appears once."""
        f = self.findings
        children = [[r["index"] for r in refs] for refs in f["explains"]]
        rank = f["severity"].map(RANK).tolist()
        worst: dict[int, int] = {}

        def tree_rank(i: int) -> int:  # the links are acyclic (causes.py checks it at import)
            if i not in worst:
                worst[i] = min([rank[i], *[tree_rank(c) for c in children[i]]])
            return worst[i]
        placed: set[int] = set()
        out: list[tuple[int, int]] = []

        def visit(i: int, depth: int) -> None:
            if i in placed:
                return
            placed.add(i)
            out.append((depth, i))
            for c in sorted(children[i], key=lambda c: (rank[c], c)):
                visit(c, depth + 1)
        roots = [i for i, refs in enumerate(f["explained_by"]) if not refs]
        for i in sorted(roots, key=lambda i: (tree_rank(i), i)):
            visit(i, 0)
        for i in range(len(f)):  # cannot happen with acyclic rules; never drop a finding
            visit(i, 0)
        return out

    def headline(self) -> str:
        n, k = len(self.findings), len(self.root_causes)
        if not n:
            return "No findings."
        return f"{k} root cause{'s' if k != 1 else ''}, {n} finding{'s' if n != 1 else ''}" + (
            " (each effect is folded under its cause)" if n > k else "")

    def _multi(self) -> bool:
        return self.checklist["prefix"].nunique() > 1 or self.findings["prefix"].dropna().nunique() > 1

    def _label(self, prefix, queue) -> str:
        if queue is None or (isinstance(queue, float) and queue != queue):
            return "(postgres)" if (self.snapshot or {}).get("backend") == "postgres" else "(redis)"
        if prefix is None or (isinstance(prefix, float) and prefix != prefix):
            return f"{queue} (not in the snapshot)"  # named by worker logs only
        return f"{prefix}:{queue}" if self._multi() else str(queue)

    def _because(self, i: int) -> str:
        """'because <cause> (<queue>): <why>' for a folded effect."""
        refs = self.findings["explained_by"].iloc[i]
        return "; ".join(f"{r['id']}" + (f" ({self._label(r['prefix'], r['queue'])})"
                                         if r["queue"] != self.findings["queue"].iloc[i] else "")
                         + f": {r['why']}" for r in refs)

    def _remedies(self) -> list[tuple[str, str]]:
        """(id, remediation) once per id, in reading order: root causes' first."""
        seen, out = set(), []
        for _, i in self.tree():
            r = self.findings.iloc[i]
            if r["id"] not in seen:
                seen.add(r["id"])
                out.append((r["id"], r["remediation"]))
        return out

    # -- renderings -------------------------------------------------------------------
    def to_dict(self) -> dict:
        f = self.findings
        return {
            "schema": SCHEMA,
            "snapshot": self.snapshot,
            "summary": {"findings": len(f), "root_causes": len(self.root_causes),
                        "by_severity": {s: int((f["severity"] == s).sum()) for s in SEVERITIES} if len(f) else {}},
            "findings": [_plain({c: r[c] for c in FINDING_COLUMNS}) for r in f.to_dict("records")],
            "checklist": _plain(self.checklist.to_dict("records")),
            "thresholds": self.thresholds.as_dict(),
            "errors": self.errors,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_table(self) -> str:
        s = self.snapshot
        lines = [f"forensics diagnose: {s.get('path') or '(live capture)'} captured {s.get('captured_at')}"
                 + ("" if s.get("complete", True) else "  INCOMPLETE snapshot: counts are lower bounds")]
        lines += self._context_lines()
        lines.append(self.headline())
        if len(self.findings):
            rows = []
            for depth, i in self.tree():
                r = self.findings.iloc[i]
                ids = list(r["job_ids"])
                rows.append((("   " * (depth - 1) + " └ " if depth else "") + r["severity"].upper(), r["id"],
                             self._label(r["prefix"], r["queue"]), f"{r['count']:,}",
                             r["title"] + (f"  [because {self._because(i)}]" if depth else "") + _at(r),
                             ", ".join(ids[:5]) + (" …" if len(ids) > 5 else "")))
            head = ("SEVERITY", "ID", "QUEUE", "COUNT", "WHAT", "SAMPLE JOBS")
            widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(4)]
            fmt = "  ".join(f"{{:<{w}}}" if i != 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
            lines.append(fmt.format(*head[:4]) + "  " + head[4])
            for r in rows:
                lines.append(fmt.format(*r[:4]) + "  " + r[4] + (f"  [{r[5]}]" if r[5] else ""))
            lines += ["", "What to do (root causes first):"]
            lines += [f"  {fid}: {remedy}" for fid, remedy in self._remedies()]
        if len(self.checklist):
            lines += ["", "Checklist (ok / WARN / FAIL / ? = not in the snapshot):"]
            lines.append(self._pivot().to_string())
        for e in self.errors:
            lines.append(f"! detector {e['id']} could not run: {e['error']}")
        return "\n".join(lines)

    def _context_lines(self) -> list[str]:
        s, out = self.snapshot, []
        if "series" in s:
            se = s["series"]
            out.append(f"series of {se['snapshots']} snapshots, {se['first']} to {se['last']} "
                       "(trends over all of them, everything else on the latest)")
            out += [f"! {w}" for w in se.get("warnings", [])]
        if "logs" in s:
            lg = s["logs"]
            out.append(f"logs: {lg['records']:,} records from {', '.join(lg['sources']) or '(attached)'}"
                       + (f"; {lg['unparsed']:,} line(s) could not be read, e.g. {lg['unparsed_examples'][0]}"
                          if lg.get("unparsed") else ""))
        for u in s.get("unavailable") or []:
            out.append(f"! not judged: {u['consequence']} ({u['command']} {u['error']}"
                       + (f" on {u['node']}" if u.get("node") else "") + ")")
        return out

    def _pivot(self) -> pd.DataFrame:
        c = self.checklist.copy()
        c["q"] = [self._label(p, q) for p, q in zip(c["prefix"], c["queue"])]
        p = c.pivot(index="q", columns="item", values="verdict").map(VERDICT_MARK.get)
        p.index.name = "queue"
        return p[[i for i in checklist_mod.ITEMS if i in p.columns]]

    def to_markdown(self) -> str:
        def cell(x) -> str:
            return str(x).replace("|", "\\|").replace("\n", " ")
        s = self.snapshot
        out = [f"# Diagnosis of `{s.get('path') or 'live capture'}`", "",
               f"Captured {s.get('captured_at')}" + ("" if s.get("complete", True) else " — **incomplete snapshot**"), "",
               *[f"- {cell(x)}" for x in self._context_lines()], "",
               "## Findings", "", self.headline()]
        if len(self.findings):
            out += ["", "| severity | id | queue | count | what | sample jobs |", "|---|---|---|---:|---|---|"]
            for depth, i in self.tree():
                r = self.findings.iloc[i]
                lead = "&nbsp;&nbsp;" * (depth - 1) + "↳ " if depth else ""
                what = r["title"] + (f" — *because {self._because(i)}*" if depth else "") + _at(r)
                out.append(f"| {lead}{r['severity']} | `{r['id']}` | {cell(self._label(r['prefix'], r['queue']))} | "
                           f"{r['count']:,} | {cell(what)} | {cell(', '.join(list(r['job_ids'])[:5]))} |")
            out += ["", "## What to do (root causes first)", ""]
            out += [f"- **{fid}**: {cell(remedy)}" for fid, remedy in self._remedies()]
        if len(self.checklist):
            out += ["", "## Checklist", "", "| queue | item | verdict | evidence |", "|---|---|---|---|"]
            for r in self.checklist.itertuples():
                out.append(f"| {cell(self._label(r.prefix, r.queue))} | {r.item} | {r.verdict} | {cell(r.evidence)} |")
        return "\n".join(out) + "\n"

    def _repr_html_(self) -> str:
        colors = {"critical": "#7b0000", "high": "#c0392b", "medium": "#d68910", "low": "#2874a6", "info": "#7f8c8d"}
        vcolor = {"pass": "#1e8449", "warn": "#d68910", "fail": "#c0392b", "unknown": "#7f8c8d"}
        e = escape
        rows = []
        for depth, i in self.tree():
            r = self.findings.iloc[i]
            because = f"<br><small><i>because {e(self._because(i))}</i></small>" if depth else ""
            rows.append(
                f"<tr><td style='color:#fff;background:{colors[r['severity']]}'>{e(r['severity'])}</td>"
                f"<td style='text-align:left;white-space:nowrap;padding-left:{0.4 + 1.5 * depth}em'>"
                f"{'↳ ' if depth else ''}<code style='white-space:nowrap'>{e(r['id'])}</code></td>"
                f"<td>{e(self._label(r['prefix'], r['queue']))}</td>"
                f"<td style='text-align:right'>{r['count']:,}</td><td>{e(r['title'])}{because}"
                + (f"<br><small><code>{e(_at(r).strip())}</code></small>" if _at(r) else "")
                + f"<br><small>{e(r['remediation'])}</small></td>"
                f"<td><small>{e(', '.join(list(r['job_ids'])[:5]))}</small></td></tr>")
        findings = (f"<p>{e(self.headline())}</p><table><tr><th>severity</th><th>id</th><th>queue</th><th>count</th>"
                    f"<th>what / fix</th><th>sample jobs</th></tr>{''.join(rows)}</table>") if rows else \
            "<p>No findings.</p>"
        checks = "".join(
            f"<tr><td>{e(self._label(r.prefix, r.queue))}</td><td>{e(r.item)}</td>"
            f"<td style='text-align:left;color:{vcolor[r.verdict]}'><b>{e(r.verdict)}</b></td><td><small>{e(r.evidence)}</small></td></tr>"
            for r in self.checklist.itertuples())
        from .notebook import left
        ctx_lines = "".join(f"<li>{e(x)}</li>" for x in self._context_lines())
        return left(f"<div><h4>Diagnosis — {e(str(self.snapshot.get('path') or 'live capture'))}</h4>"
                    + (f"<ul>{ctx_lines}</ul>" if ctx_lines else "") + f"{findings}"
                    f"<details open><summary>Checklist</summary><table>{checks}</table></details></div>")

    def __repr__(self) -> str:
        return f"<Diagnosis {len(self.findings)} findings ({len(self.root_causes)} root causes), worst {self.worst}>"


def diagnose(snapshot, logs=None, thresholds: Thresholds | dict | None = None, code=None) -> Diagnosis:
    """Run every registered detector and the production checklist.

    ``snapshot``: a Snapshot, a Series, or a snapshot or series folder. On a series, the
    trend detectors read every capture and the others the latest one. ``logs``: worker
    logs, as a DataFrame from ``read_logs`` or file path(s) (a snapshot's own attached logs
    are always used). ``code``: the application's source (paths, or a ``forensics.scan``
    result): runtime findings gain the code sites of their queue (``evidence.code``), the code
    findings join the list, and the checklist takes the code's evidence where Redis cannot
    tell; a snapshot that keeps its scan (``Snapshot.attach_code``) is joined with it unless
    ``code`` is given (``code=False``: Redis alone). A detector that fails is reported in ``errors``; the others still run."""
    from .series import Series, open_path
    from .snapshot import Snapshot
    src = snapshot if isinstance(snapshot, (Snapshot, Series)) else open_path(snapshot)
    series = src if isinstance(src, Series) else None
    snap = series.latest if series is not None else src
    t = Thresholds.coerce(thresholds)
    log_df = gather_logs(logs, list(series) if series is not None else [snap])  # a series: every member's
    ctx = Context(snap, t, series=series, logs=log_df)
    found: list[Finding] = []
    errors: list[dict] = []
    for det in REGISTRY.values():
        try:
            for f in det.fn(ctx):
                f.family = det.family
                found.append(f)
        except Exception as e:  # collect everything, stop at nothing
            errors.append({"id": det.id, "error": f"{type(e).__name__}: {e}"})
    scanned = None
    kept = code is None and snap.has("code")
    if kept:
        from .code import kept_scan
        code = kept_scan(snap.code, snap.manifest.get("code") or {}, thresholds=t)
    if code is False:
        code = None
    if code is not None:
        from .code import CodeScan, scan
        from .code.join import join_findings
        scanned = code if isinstance(code, CodeScan) else scan(code, thresholds=t)
        found += join_findings(ctx, scanned, found)
    family = {f: i for i, f in enumerate(FAMILIES)}
    found.sort(key=lambda f: (RANK[f.severity], -f.count, family[f.family]))  # worst first (stable)
    link(found)
    findings = pd.DataFrame([{c: getattr(f, c) for c in FINDING_COLUMNS} for f in found], columns=FINDING_COLUMNS)
    checklist = checklist_mod.evaluate(ctx, findings)
    if scanned is not None:
        from .code.join import code_checklist
        checklist = code_checklist(checklist, scanned, t)
    meta = {"path": series.path if series is not None else snap.path,
            "captured_at": snap.manifest.get("captured_at"), "complete": snap.complete}
    if snap.manifest.get("backend"):   # "postgres": BullMQ 6's PostgreSQL backend (absent: Redis)
        meta["backend"] = snap.manifest["backend"]
    if snap.manifest.get("unavailable"):  # what the server would not tell, and what is not judged for it
        meta["unavailable"] = snap.manifest["unavailable"]
    if scanned is not None:
        meta["code"] = {"roots": scanned.roots, "files": scanned.files, "sites": len(scanned.sites),
                        "packages": scanned.packages, "skipped": scanned.skipped.counts,
                        "kept": kept}
    if series is not None:
        meta["series"] = {"snapshots": len(series), "first": series.first.captured_at.isoformat(),
                          "last": series.latest.captured_at.isoformat(), "warnings": series.warnings}
    if log_df is not None:
        a = log_df.attrs
        meta["logs"] = {"records": len(log_df), "sources": a.get("sources", []), "unparsed": a.get("unparsed", 0),
                        "unparsed_examples": a.get("unparsed_examples", [])}
    return Diagnosis(findings, checklist, meta, t, errors, members=[f.members for f in found])
