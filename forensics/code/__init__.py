"""`forensics scan`: the application's own JavaScript and TypeScript read statically
(tree-sitter; nothing executed), so the production checklist is answered from the code and
every finding points at the line that causes it.

``scan(paths)`` returns a ``CodeScan``: ``sites`` (the ``code`` table: one row per
queue-related site), ``findings`` (family ``code``, ``evidence.code`` = file, line,
snippet), ``packages`` (Bull/BullMQ versions from package.json and the lockfile) and
``skipped`` (files left out, by reason)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..thresholds import Thresholds
from .packages import packages_of
from .parse import Skipped, parse, read_source, source_files
from .rules import CLIENT_ERROR_CHECKS, findings_of
from .sites import FileScan, Unresolved

SCHEMA = "forensics.scan/1"
SITE_COLUMNS = ["file", "line", "column", "kind", "queue", "queue_resolved", "prefix", "library", "receiver", "event",
                "attempts", "backoff_type", "backoff_delay_ms", "remove_on_complete", "remove_on_fail",
                "timeout_ms", "concurrency", "limiter", "lock_duration_ms", "stalled_interval_ms",
                "max_stalled_count", "default_job_options", "events_max_len", "metrics", "repeat",
                "reports_progress", "unrecoverable", "bounded", "closes_on_signal", "rethrows_all", "binary_data",
                "retains", "options", "snippet"]


class CodeScan:
    def __init__(self, sites: pd.DataFrame, findings: pd.DataFrame, packages: dict, skipped: Skipped,
                 files: int, roots: list[str]):
        self.sites, self.findings, self.packages, self.skipped = sites, findings, packages, skipped
        self.files, self.roots = files, roots

    @property
    def code(self) -> pd.DataFrame:
        """The ``code`` table (the same as ``sites``)."""
        return self.sites

    def meta(self) -> dict:
        """What a snapshot keeps beside the ``code`` table (``Snapshot.attach_code``)."""
        return {"schema": SCHEMA, "roots": self.roots, "files": self.files, "packages": self.packages,
                "skipped": {"counts": self.skipped.counts, "examples": self.skipped.examples}}

    def at_least(self, severity: str) -> pd.DataFrame:
        from ..diagnosis import RANK
        return self.findings[self.findings["severity"].map(RANK) <= RANK[severity]] if len(self.findings) else self.findings

    def to_dict(self) -> dict:
        from ..diagnosis import _plain
        return {"schema": SCHEMA, "roots": self.roots, "files": self.files,
                "skipped": {"counts": self.skipped.counts, "examples": self.skipped.examples},
                "packages": self.packages,
                "findings": _plain(self.findings.to_dict("records")),
                "code": _plain(self.sites.drop(columns=["options"]).to_dict("records"))}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, default=str)

    def _head(self) -> str:
        libs = ", ".join(f"{k} {v}" for k, v in self.packages.items()) or "no bull/bullmq in package.json"
        skipped = sum(self.skipped.counts.values())
        return (f"{self.files} file(s) read, {len(self.sites)} queue site(s), {len(self.findings)} finding(s); "
                f"{libs}" + (f"; {skipped} file(s) skipped ({', '.join(f'{n} {k}' for k, n in self.skipped.counts.items())})"
                             if skipped else ""))

    def to_table(self) -> str:
        lines = [self._head(), ""]
        if len(self.findings):
            lines.append(f"{'SEVERITY':<9} {'ID':<28} {'QUEUE':<18} WHERE / TITLE")
            for r in self.findings.itertuples():
                where = ", ".join(f"{c['file']}:{c['line']}" for c in r.evidence.get("code", [])[:3])
                lines.append(f"{r.severity:<9} {r.id:<28} {(r.queue if isinstance(r.queue, str) else '-'):<18} {where}")
                lines.append(f"{'':<58} {r.title}")
        else:
            lines.append("No findings.")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        lines = [f"# Code scan", "", self._head(), ""]
        if len(self.findings):
            lines += ["| severity | id | queue | where | finding |", "|---|---|---|---|---|"]
            for r in self.findings.itertuples():
                where = "<br>".join(f"`{c['file']}:{c['line']}`" for c in r.evidence.get("code", [])[:5])
                lines.append(f"| {r.severity} | `{r.id}` | {r.queue if isinstance(r.queue, str) else ''} | {where} "
                             f"| {r.title.replace('|', '/')} |")
            lines += ["", "## Fixes", ""]
            for id_, rem in dict(zip(self.findings["id"], self.findings["remediation"])).items():
                lines += [f"- **{id_}**: {rem}"]
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        from html import escape

        def where(evidence: dict) -> str:
            return "<br>".join(escape(f"{c['file']}:{c['line']}") for c in evidence.get("code", [])[:5])
        rows = "".join(
            f"<tr><td>{escape(r.severity)}</td><td><code>{escape(r.id)}</code></td>"
            f"<td>{escape(r.queue) if isinstance(r.queue, str) else ''}</td><td>{where(r.evidence)}</td>"
            f"<td>{escape(r.title)}</td></tr>" for r in self.findings.itertuples())
        table = (f"<table><tr><th>severity</th><th>id</th><th>queue</th><th>where</th><th>finding</th></tr>{rows}</table>"
                 if len(self.findings) else "<p>No findings in the code.</p>")
        cols = ["file", "line", "kind", "queue", "library", "attempts", "backoff_type", "concurrency", "event"]
        sites = self.sites[cols] if len(self.sites) else self.sites
        return (f"<p><b>Code scan</b>: {escape(self._head())}</p>{table}"
                f"<details><summary>{len(self.sites)} queue site(s)</summary>{sites.to_html(index=False)}</details>")

    def __repr__(self) -> str:
        return f"<CodeScan {self._head()}>"


NUMERIC = ("attempts", "backoff_delay_ms", "timeout_ms", "concurrency", "lock_duration_ms", "stalled_interval_ms",
           "max_stalled_count", "events_max_len")


def _as_scanned(sites: pd.DataFrame) -> pd.DataFrame:
    """A code table read back from Parquet, typed as a fresh scan has it: numbers as floats,
    everything else as Python objects with None (Parquet gives an all-empty column NaN)."""
    out = pd.DataFrame(index=range(len(sites)))
    for c in SITE_COLUMNS:
        col = sites[c].reset_index(drop=True) if c in sites else pd.Series([None] * len(sites), dtype=object)
        if c in ("line", "column"):
            out[c] = col.astype("int64")
        elif c in NUMERIC:
            out[c] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            col = col.astype(object)
            out[c] = col.where(col.notna(), None)
    return out


def empty_sites() -> pd.DataFrame:
    return pd.DataFrame(columns=SITE_COLUMNS).astype({"line": "int64", "column": "int64"})


def kept_scan(sites: pd.DataFrame, meta: dict, thresholds: Thresholds | dict | None = None) -> CodeScan:
    """A scan kept in a snapshot (its ``code`` table and manifest entry), judged again with
    ``thresholds``: the findings are the rules' over the same sites."""
    skipped = Skipped()
    sk = meta.get("skipped") or {}
    skipped.counts.update(sk.get("counts") or {})
    if isinstance(sk.get("examples"), dict):
        skipped.examples.update(sk["examples"])
    packages = dict(meta.get("packages") or {})
    sites = _as_scanned(sites)
    findings = findings_of(sites, [], packages, Thresholds.coerce(thresholds))
    return CodeScan(sites, findings, packages, skipped, int(meta.get("files") or 0), list(meta.get("roots") or []))


def scan(paths, thresholds: Thresholds | dict | None = None) -> CodeScan:
    """Read every JS/TS file under ``paths`` (files or folders; node_modules, build output and
    VCS folders skipped) and judge the queue code found."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    roots = [str(p) for p in paths]
    t = Thresholds.coerce(thresholds)
    skipped = Skipped()
    scans: list[FileScan] = []
    n = 0
    for path, kind in source_files(paths, skipped):
        data = read_source(path, skipped)
        if data is None:
            continue
        try:
            tree = parse(data, kind)
        except Exception:  # noqa: BLE001  (a grammar that gives up is a skipped file, never a crash)
            skipped.add("unparsable", path)
            continue
        if tree.root_node.has_error and _error_share(tree.root_node) > 0.5:
            skipped.add("unparsable", path)
            continue
        n += 1
        fs = FileScan(str(path), tree, data)
        # keep what the rules read, not the tree: 10,000 parsed files would hold ~1 GB
        for site in fs.sites + fs.signals:
            site.processor = _body(site.processor) if site.processor is not None else None
            site.retains = _retains(site.processor, fs.collections, data) if site.processor else None
        fs.shutdown_hooks = b"enableShutdownHooks(" in data
        fs.tree = fs.source = fs.lines = fs.consts = fs.functions = None
        scans.append(fs)
    packages = packages_of(paths)
    sites = _sites_table(scans, packages)
    findings = findings_of(sites, scans, packages, t)
    return CodeScan(sites, findings, packages, skipped, n, roots)


def _error_share(root) -> float:
    bad = sum(1 for c in root.children if c.type == "ERROR" or c.is_missing)
    return bad / max(1, len(root.children))


def _num(v):
    if isinstance(v, bool) or isinstance(v, Unresolved):
        return None
    if isinstance(v, (int, float)):
        return v
    return None


def _marked(v):
    """Values as JSON can hold them; an expression the source does not pin down is
    'unresolved: <expression>' (never taken for the literal it spells)."""
    if isinstance(v, Unresolved):
        return f"unresolved: {v}"
    if isinstance(v, dict):
        return {k: _marked(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_marked(x) for x in v]
    return v


def _jtext(v):
    if v is None:
        return None
    return json.dumps(_marked(v), default=str, sort_keys=True, allow_nan=True)


def _bindings(sites) -> dict[str, str]:
    """binding name -> queue name (Queue / Worker / @InjectQueue bindings)."""
    return {s.receiver: s.queue for s in sites
            if s.kind in ("Queue", "Worker", "QueueEvents", "QueueScheduler", "InjectQueue") and s.receiver
            and isinstance(s.queue, str) and not isinstance(s.queue, Unresolved)}


def _queue_map(scans) -> dict[str, str]:
    """binding name -> queue name across files (an exported `conversionQueue` used elsewhere);
    a file's own bindings come first (two files may each call their Worker `worker`)."""
    out: dict[str, str] = {}
    for fs in scans:
        out.update(_bindings(fs.sites))
    return out


def _retains(body: str, collections: dict[str, int], source: bytes) -> str | None:
    """A module-level Map / Set / array the processor adds to per job and that nothing in the
    file ever empties (no delete / clear / shift / splice / pop / length = 0): it grows with
    every job for the life of the worker."""
    import re
    for name in collections:
        if re.search(rf"\b{re.escape(name)}\s*(\.\s*(set|push|add|unshift)\s*\(|\[[^\]]+\]\s*=[^=])", body) and not \
                re.search(rf"\b{re.escape(name)}\s*(\.\s*(delete|clear|shift|splice|pop)\s*\(|\.length\s*=[^=]|=[^=>])".encode(),
                          source.replace(f"const {name} =".encode(), b"").replace(f"let {name} =".encode(), b"")
                          .replace(f"var {name} =".encode(), b"")):
            return name
    return None


def _body(fn) -> str:
    """A function's source without its comments (a comment saying `timeout` bounds nothing)."""
    if fn is None:
        return ""
    data = bytearray(fn.text)
    start = fn.start_byte
    stack = [fn]
    while stack:
        n = stack.pop()
        if n.type == "comment":
            data[n.start_byte - start:n.end_byte - start] = b" " * (n.end_byte - n.start_byte)
        else:
            stack.extend(n.children)
    return data.decode("utf-8", "replace")


def _sites_table(scans, packages: dict) -> pd.DataFrame:
    bind = _queue_map(scans)
    default_lib = "bullmq" if "bullmq" in packages else "bull" if "bull" in packages else None
    closes = any("close(" in (s.processor or "") for fs in scans for s in fs.signals) or \
        any(fs.shutdown_hooks for fs in scans)   # NestJS closes its workers itself
    rows = []
    for fs in scans:
        local = _bindings(fs.sites)
        for s in fs.sites:
            if s.kind == "InjectQueue":
                continue
            q = s.queue
            if q is None and s.receiver:
                r = s.receiver.split(":", 1)[1] if ":" in s.receiver else None
                q = local.get(s.receiver) or bind.get(s.receiver) or (bind.get(r) if r else None)
            if q is None and s.kind not in ("Queue", "Worker", "QueueEvents", "FlowProducer", "QueueScheduler",
                                            "memoryUsage", "health"):
                continue   # `.add()` on a Set, `.on()` on a stream: not a queue this scan knows
            o = s.options or {}
            if s.kind == "Worker" and isinstance(o.get("settings"), dict):
                o = {**o, **o["settings"]}
            if s.library is None and s.kind == "Queue" and isinstance(o.get("settings"), dict):
                s.library = "bull"
            src = o if s.kind in ("add", "process", "Worker") else (o.get("defaultJobOptions") or {})
            src = src if isinstance(src, dict) else {}
            backoff = src.get("backoff")
            btype = ("fixed" if _num(backoff) is not None else
                     (backoff.get("type") if isinstance(backoff, dict) and isinstance(backoff.get("type"), str) else None))
            bdelay = _num(backoff) if _num(backoff) is not None else (
                _num(backoff.get("delay")) if isinstance(backoff, dict) else None)
            body = s.processor or ""
            attempts = src.get("attempts")
            rows.append({
                "file": s.file, "line": s.line, "column": s.column, "kind": s.kind,
                "queue": None if q is None else str(q) if not isinstance(q, Unresolved) else f"unresolved: {q}",
                "queue_resolved": isinstance(q, str) and not isinstance(q, Unresolved),
                "prefix": None if o.get("prefix") is None else str(_marked(o.get("prefix"))),
                "library": s.library or default_lib, "receiver": s.receiver, "event": s.event,
                "attempts": (math.inf if attempts == math.inf else _num(attempts)) if "attempts" in src else None,
                "backoff_type": btype, "backoff_delay_ms": bdelay,
                "remove_on_complete": _jtext(src.get("removeOnComplete")) if "removeOnComplete" in src else None,
                "remove_on_fail": _jtext(src.get("removeOnFail")) if "removeOnFail" in src else None,
                "timeout_ms": _num(src.get("timeout")),
                "concurrency": _num(o.get("concurrency")) if s.kind in ("Worker", "process") else None,
                "limiter": _jtext(o.get("limiter")) if s.kind in ("Worker", "Queue") and o.get("limiter") else None,
                "lock_duration_ms": _num(o.get("lockDuration")), "stalled_interval_ms": _num(o.get("stalledInterval")),
                "max_stalled_count": _num(o.get("maxStalledCount")),
                "default_job_options": _jtext(o.get("defaultJobOptions")) if o.get("defaultJobOptions") else None,
                "events_max_len": _num(((o.get("streams") or {}).get("events") or {}).get("maxLen"))
                if isinstance(o.get("streams"), dict) else None,
                "metrics": _jtext(o.get("metrics")) if o.get("metrics") else None,
                "repeat": _jtext(o.get("repeat")) if s.kind == "add" and o.get("repeat") else
                _jtext(o.get("repeat")) if s.kind == "upsertJobScheduler" else None,
                "reports_progress": ("updateProgress(" in body or ".progress(" in body) if s.processor is not None else None,
                "unrecoverable": any(k in body for k in ("UnrecoverableError", ".discard()", "moveToFailed("))
                if s.processor is not None else None,
                "bounded": any(k in body for k in ("AbortSignal", "AbortController", "Promise.race", "timeout"))
                if s.processor is not None else None,
                "closes_on_signal": closes if s.kind in ("Worker", "process") else None,
                "rethrows_all": (("catch" in body or ".ok)" in body or ".ok " in body) and "throw" in body
                                 and not any(k in body for k in CLIENT_ERROR_CHECKS))
                if s.processor is not None else None,
                "binary_data": _binary(s.data_text) if s.kind in ("add", "addBulk") else None,
                "retains": getattr(s, "retains", None),
                "options": _jtext(o), "snippet": s.snippet,
            })
    df = pd.DataFrame(rows, columns=SITE_COLUMNS)
    return df.astype({"line": "int64", "column": "int64"}) if len(df) else df


BINARY_MARKERS = ("readFileSync(", "readFile(", "Buffer.from(", "Buffer.alloc(", "toString('base64')",
                  'toString("base64")', "base64", "fileBuffer", "arrayBuffer()")


def _binary(text: str) -> bool:
    return any(m in text for m in BINARY_MARKERS)
