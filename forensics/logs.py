"""Worker logs as a DataFrame: pino and winston JSON lines, and plain text with timestamps.

    logs = forensics.read_logs("worker.log")            # or a list, "x.log.gz", "-" (stdin)
    logs.attrs["unparsed"]                              # lines that could not be read

One row per record (columns ``LOG_COLUMNS``). Lines that cannot be parsed are counted
(``attrs["unparsed"]``, first examples in ``attrs["unparsed_examples"]``), never fatal;
indented continuation lines (stack frames) are folded into the record above them.
``join_logs(logs, snapshot)`` names the queue and job state of records that mention a
job, so one error reads the same in the logs and in the jobs' ``failedReason``
(the ``fingerprint`` column uses the same normaliser).
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .errors import UsageError
from .fingerprint import fingerprints
from .redact import Redaction, message_shape, stack_shape

LOG_COLUMNS = ["time", "level", "message", "error", "fingerprint", "job_id", "queue", "worker",
               "rss_bytes", "heap_used_bytes", "heap_total_bytes", "source", "line_no", "format"]
PINO_LEVELS = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
LEVEL_ALIASES = {"warning": "warn", "err": "error", "critical": "fatal", "crit": "fatal", "emerg": "fatal",
                 "alert": "fatal", "panic": "fatal", "notice": "info", "verbose": "debug", "silly": "trace",
                 "http": "info", "information": "info", "dbg": "debug", "eror": "error", "wrn": "warn", "inf": "info"}
LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"]
EXAMPLES = 5

_TIME_KEYS = ("time", "timestamp", "@timestamp", "ts", "date", "datetime", "t")
_MSG_KEYS = ("msg", "message", "@message", "event")
_LEVEL_KEYS = ("level", "severity", "lvl", "levelname", "log.level")
_JOB_KEYS = ("jobId", "job_id", "jobid", "jobID", "job")
_QUEUE_KEYS = ("queue", "queueName", "queue_name", "queuename")
_WORKER_KEYS = ("worker", "workerName", "worker_name", "workerId", "worker_id")
_MEM_HOLDERS = ("memory", "mem", "memoryUsage", "memory_usage", "process_memory")
_MEM_FIELDS = {"rss_bytes": ("rss", "rssBytes", "rss_bytes"),
               "heap_used_bytes": ("heapUsed", "heap_used", "heapUsedBytes", "heap_used_bytes"),
               "heap_total_bytes": ("heapTotal", "heap_total", "heapTotalBytes", "heap_total_bytes")}
# The same figures logged in megabytes: {"heapUsedMB": 312.5}
_MEM_FIELDS_MB = {"rss_bytes": ("rssMB", "rssMb", "rss_mb"),
                  "heap_used_bytes": ("heapUsedMB", "heapUsedMb", "heap_used_mb"),
                  "heap_total_bytes": ("heapTotalMB", "heapTotalMb", "heap_total_mb")}

# Plain text: a timestamp first (ISO 8601 or "2026-11-28 16:00:00,123", maybe in brackets),
# then an optional level word, then the message.
_TEXT = re.compile(
    r"^\s*\[?(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z| ?[+-]\d{2}:?\d{2}| ?UTC)?)\]?"
    r"\s*(?:[-|:]\s*)?"
    r"(?:\[?(?P<level>TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|FATAL|CRITICAL|VERBOSE|SILLY|HTTP)\]?"
    r"\s*(?:[:|-]\s*)?)?(?P<msg>.*)$", re.I)
# winston's default `simple` format: "error: message {json meta}" (the time, if any, in the meta)
_LEVEL_FIRST = re.compile(
    r"^(?P<level>error|warn|info|http|verbose|debug|silly|fatal|trace)\s*:\s*(?P<msg>.*?)\s*(?P<meta>\{.*\})?\s*$")
# A level word inside the line ("2026-11-28 16:00:00,123 - worker - ERROR - job 5 failed": Python logging)
_LEVEL_INSIDE = re.compile(r"(?:^|[\s\[|(-])(?P<level>ERROR|WARN|WARNING|INFO|DEBUG|CRITICAL|FATAL)(?=[\s\]|):-])")
# "job 123", "Job #123", "job id 123", "jobId=123", "job_id: 123", "Missing lock for job 123."
_JOB_IN_TEXT = re.compile(
    r"\bjob(?:[ _-]?id)?\s*(?:[#:=]\s*|\s+)[\"']?(?P<id>[\w:.-]*\d[\w:-]*|[0-9a-f-]{8,})[\"']?", re.I)
_QUEUE_IN_TEXT = re.compile(r"\bqueue\s*(?:[:=]\s*|\s+)[\"']?(?P<q>[\w.-]+)[\"']?", re.I)
_MEM_IN_TEXT = re.compile(r"\b(?P<k>rss|heapUsed|heap[_ ]used|heapTotal|heap[_ ]total)\s*[:=]?\s*"
                          r"(?P<v>\d+(?:\.\d+)?)\s*(?P<u>[kmg]i?b|b|bytes)?\b", re.I)
# Node code writes "MB" for bytes / 1024 / 1024 (as process.memoryUsage() loggers do): binary units.
_UNITS = {"b": 1, "bytes": 1, "kb": 1024, "kib": 1024, "mb": 1024 ** 2, "mib": 1024 ** 2, "gb": 1024 ** 3,
          "gib": 1024 ** 3}
_TEXT_MEM_KEY = {"rss": "rss_bytes", "heapused": "heap_used_bytes", "heap_used": "heap_used_bytes",
                 "heap used": "heap_used_bytes", "heaptotal": "heap_total_bytes", "heap_total": "heap_total_bytes",
                 "heap total": "heap_total_bytes"}
# "job 12 failed: upstream 503" -> the error is what follows "failed:" (else "error:" and the like)
_FAILED_PREFIX = re.compile(r"^.*?\bfailed\b\s*(?:with|:|-)\s*(?:error\s*:?\s*)?", re.I)
_ERROR_PREFIX = re.compile(r"^.*?\b(?:error|errored|threw)\b\s*(?:with|:|-)\s*", re.I)


def read_logs(paths: str | os.PathLike | Iterable[str | os.PathLike], *, worker: str | None = None,
              progress: bool | None = False, redact: "bool | Redaction" = True) -> pd.DataFrame:
    """Read worker log files into one DataFrame (``LOG_COLUMNS``), sorted by time.

    ``paths``: a file, a list of files, ``.gz`` files, or ``"-"`` for stdin. A comma
    separated string is split (the notebooks' ``logs`` parameter). ``worker`` names the
    worker for records that do not name one (default: the record's hostname/pid, else the
    file name). A missing file is a UsageError; unreadable lines are only counted.
    ``progress``: a line on stderr every ~2 s of reading (None: when stderr is a terminal).
    ``redact``: secrets in messages, errors, stacks and the unparsed examples are redacted
    (``False`` keeps them; a ``Redaction`` with ``no_data`` keeps only their fingerprints)."""
    policy = Redaction.of(redact)
    items = _expand(paths)
    if progress is None:
        progress = sys.stderr.isatty()
    frames, unparsed, examples, lines, continued = [], 0, [], 0, 0
    for item in items:
        rows, stats = _read_one(item, worker, progress)
        frames.append(rows)
        unparsed += stats["unparsed"]
        lines += stats["lines"]
        continued += stats["continued"]
        examples += stats["examples"][:max(0, EXAMPLES - len(examples))]
    df = _frame([r for rows in frames for r in rows], policy)
    if policy.no_data:
        examples = [f"{e.split(': ', 1)[0]}: <{len(e)} characters>" for e in examples]
    elif policy.active:
        examples = [policy.text(e)[0] for e in examples]
    df.attrs.update({"sources": items, "lines": lines, "unparsed": unparsed, "continued": continued,
                     "unparsed_examples": examples, "redaction": policy.describe()})
    return df


def has_memory(logs: pd.DataFrame) -> pd.Series:
    """Records that carry a memory figure (heap or RSS)."""
    return logs["heap_used_bytes"].notna() | logs["rss_bytes"].notna()


def gather_logs(logs, carriers) -> pd.DataFrame | None:
    """``logs`` (a DataFrame, or file paths for read_logs; None: none) plus the logs each
    snapshot in ``carriers`` holds (``capture --logs``), as one frame; None when there are none."""
    parts = [c.logs for c in carriers if c.has_logs]
    if logs is not None:
        parts.append(logs if isinstance(logs, pd.DataFrame) else read_logs(logs))
    return merge_logs(parts)


def merge_logs(parts: list[pd.DataFrame]) -> pd.DataFrame | None:
    """Several log frames as one, each record once (logs attached to a snapshot and
    passed again count once)."""
    parts = [p for p in parts if len(p)] or parts[:1]
    if len(parts) <= 1:
        return parts[0] if parts else None
    out = pd.concat(parts, ignore_index=True).drop_duplicates(["time", "source", "line_no", "message"])
    out = out.sort_values("time", kind="stable").reset_index(drop=True)
    out.attrs = {"sources": list(dict.fromkeys(x for p in parts for x in p.attrs.get("sources", []))),
                 "lines": sum(p.attrs.get("lines", 0) for p in parts),
                 "unparsed": sum(p.attrs.get("unparsed", 0) for p in parts),
                 "unparsed_examples": [x for p in parts for x in p.attrs.get("unparsed_examples", [])][:5]}
    return out


def empty_logs() -> pd.DataFrame:
    df = _frame([])
    df.attrs.update({"sources": [], "lines": 0, "unparsed": 0, "unparsed_examples": []})
    return df


def _expand(paths) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        whole = p == "-" or Path(p).exists() or "," not in p  # a file whose name has a comma stays whole
        out += [p] if whole else [x.strip() for x in p.split(",") if x.strip()]
    if not out:
        raise UsageError("no log file given")
    for p in out:
        if p != "-" and not Path(p).is_file():
            raise UsageError(f"log file {p} not found" if not Path(p).exists() else f"log path {p} is not a file")
    # the same file given twice (by any path) is read once, where first named
    first = {}
    for p in out:
        first.setdefault(p if p == "-" else Path(p).resolve(), p)
    return list(first.values())


def _open(path: str) -> io.TextIOBase:
    if path == "-":
        raw = sys.stdin.buffer
        head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
        stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
        return io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _read_one(path: str, worker: str | None, progress: bool = False) -> tuple[list[dict], dict]:
    source = "stdin" if path == "-" else Path(path).name
    rows: list[dict] = []
    stats = {"unparsed": 0, "lines": 0, "continued": 0, "examples": []}

    def bad(n: int, line: str) -> None:
        stats["unparsed"] += 1
        if len(stats["examples"]) < EXAMPLES:
            stats["examples"].append(f"{source}:{n}: {line[:200]!r}")
    f = _open(path)
    try:
        last = time.monotonic()
        for n, line in enumerate(f, 1):
            stats["lines"] += 1
            if progress and not n % 50_000 and time.monotonic() - last > 2:
                last = time.monotonic()
                print(f"logs: {source}: {n:,} lines read", file=sys.stderr, flush=True)
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            stripped = text.lstrip()
            if stripped.startswith("{"):
                try:
                    obj = json.loads(stripped)
                except ValueError:
                    bad(n, text)
                    continue
                row = _from_json(obj) if isinstance(obj, dict) else None
                if row is None:
                    bad(n, text)
                    continue
                row["format"] = "json"
            else:
                m = _TEXT.match(text)
                if not m:
                    if rows and text[:1].isspace() and rows[-1]["format"] == "text":  # a stack frame
                        prev = rows[-1]
                        prev["stack"] = (prev.get("stack") or "") + "\n" + text.strip()
                        stats["continued"] += 1
                        continue
                    lf = _LEVEL_FIRST.match(text)
                    row = _from_level_first(lf) if lf else None
                    if row is None:
                        bad(n, text)
                        continue
                    row["format"] = "text"
                    rows.append(_finish(row, source, n, worker))
                    continue
                row = _from_text(m)
                if row is None:
                    bad(n, text)
                    continue
                row["format"] = "text"
            rows.append(_finish(row, source, n, worker))
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # a truncated .gz: keep what was read
        stats["unparsed"] += 1
        stats["examples"].append(f"{source}: stopped reading: {e}")
    finally:
        if path != "-":
            f.close()
    return rows, stats


def _time(value: Any) -> pd.Timestamp | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            v = float(value)
            unit = "ns" if v > 1e17 else "us" if v > 1e14 else "ms" if v > 1e11 else "s"
            return pd.Timestamp(v, unit=unit, tz="UTC")
        if isinstance(value, str):
            s = value.strip()
            if re.fullmatch(r"\d+(\.\d+)?", s):
                return _time(float(s))
            ts = pd.Timestamp(s.replace(",", ".").replace(" UTC", "Z"))
            return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, OverflowError, TypeError):
        return None
    return None


def _level(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = int(value)
        return PINO_LEVELS.get(v) or ("fatal" if v >= 60 else "error" if v >= 50 else "warn" if v >= 40
                                      else "info" if v >= 30 else "debug" if v >= 20 else "trace")
    s = str(value).strip().lower()
    if s.isdigit():
        return _level(int(s))
    s = LEVEL_ALIASES.get(s, s)
    return s if s in LEVELS else s[:20] or None


def _bytes(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b|bytes)?\s*", str(value), re.I)
    if not m:
        return None
    return float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()]


def _get(obj: dict, keys: Iterable[str]) -> Any:
    for k in keys:
        if k in obj and obj[k] not in (None, ""):
            return obj[k]
    return None


def _job_from_text(text: str | None) -> str | None:
    if not text:
        return None
    m = _JOB_IN_TEXT.search(text)
    return m.group("id").rstrip(".:") if m else None


def _error_text(err: Any) -> tuple[str | None, str | None]:
    """(message, stack) of a pino ``err`` / winston ``error`` value."""
    if err is None:
        return None, None
    if isinstance(err, dict):
        msg = err.get("message") or err.get("msg")
        stack = err.get("stack")
        if not msg and isinstance(stack, str):
            msg = stack.splitlines()[0]
        return (str(msg) if msg else None), (str(stack) if stack else None)
    return str(err), None


def _alias_table() -> dict[str, tuple[str, int]]:
    """Record key -> (field, rank): one pass over a record's keys finds every field, the
    lowest rank winning when a record has several aliases of one field."""
    table: dict[str, tuple[str, int]] = {}
    groups = {"time": _TIME_KEYS, "level": _LEVEL_KEYS, "message": _MSG_KEYS, "err": ("err", "error", "exception"),
              "job_id": _JOB_KEYS[:-1], "queue": _QUEUE_KEYS, "worker": _WORKER_KEYS, "mem": _MEM_HOLDERS,
              **{col: keys for col, keys in _MEM_FIELDS.items()},
              **{col + "/mb": keys for col, keys in _MEM_FIELDS_MB.items()}}
    for field, keys in groups.items():
        for rank, k in enumerate(keys):
            table.setdefault(k, (field, rank))
    return table


_ALIASES = _alias_table()


_PLANS: dict[tuple, list[tuple[str, list[str]]]] = {}


def _fields(obj: dict) -> dict[str, Any]:
    """The fields of a record by their aliases. Records of one logger share their keys, so
    the lookup plan is worked out once per distinct key set."""
    keys = tuple(obj)
    plan = _PLANS.get(keys)
    if plan is None:
        by_field: dict[str, list[tuple[int, str]]] = {}
        for k in keys:
            hit = _ALIASES.get(k)
            if hit is not None:
                by_field.setdefault(hit[0], []).append((hit[1], k))
        plan = [(field, [k for _, k in sorted(c)]) for field, c in by_field.items()]
        if len(_PLANS) > 10_000:
            _PLANS.clear()
        _PLANS[keys] = plan
    out: dict[str, Any] = {}
    for field, cands in plan:
        for k in cands:
            v = obj[k]
            if v is not None and v != "":
                out[field] = v
                break
    return out


def _memory(f: dict, obj: dict, row: dict) -> None:
    nested = f.get("mem")
    inner = _fields(nested) if isinstance(nested, dict) else {}
    for col in _MEM_FIELDS:
        value = _bytes(f.get(col))
        if value is None:
            value = _bytes(inner.get(col))
        if value is None:
            mb = _bytes(f.get(col + "/mb"))
            mb = _bytes(inner.get(col + "/mb")) if mb is None else mb
            value = None if mb is None else mb * 1024 * 1024
        row[col] = value


def _from_json(obj: dict) -> dict | None:
    f = _fields(obj)
    row: dict[str, Any] = {"time": _time(f.get("time")), "level": _level(f.get("level"))}
    msg = f.get("message")
    err_msg, stack = _error_text(f.get("err"))
    if stack is None and isinstance(obj.get("stack"), str):
        stack = obj["stack"]
    if msg is not None and not isinstance(msg, str):
        msg = json.dumps(msg, default=str)
    row["message"] = msg if msg else err_msg
    row["error"] = err_msg
    row["stack"] = stack
    job = obj.get("job")
    job_id, queue = f.get("job_id"), f.get("queue")
    if isinstance(job, dict):
        job_id = job_id if job_id is not None else _get(job, ("id", "jobId"))
        queue = queue if queue is not None else _get(job, ("queue", "queueName", "queue_name"))
    elif job_id is None and isinstance(job, (str, int)) and not isinstance(job, bool):
        job_id = job
    if isinstance(queue, dict):
        queue = _get(queue, ("name", "queueName"))
    row["job_id"] = str(job_id) if job_id is not None else (_job_from_text(row["message"]) or _job_from_text(err_msg))
    row["queue"] = str(queue) if queue is not None else None
    w = f.get("worker")
    if w is None and (obj.get("hostname") or obj.get("pid")):
        w = "/".join(str(x) for x in (obj.get("hostname"), obj.get("pid")) if x)
    row["worker"] = str(w) if w is not None else None
    _memory(f, obj, row)
    if row["rss_bytes"] is None and row["heap_used_bytes"] is None and row["heap_total_bytes"] is None \
            and isinstance(row["message"], str):
        _memory_from_text(row["message"], row)  # "memory: rss=512MB heapUsed=300MB" as the message
    if row["time"] is None and row["message"] is None and row["level"] is None:
        return None  # some other JSON document, not a log record
    return row


def _finish(row: dict, source: str, n: int, worker: str | None) -> dict:
    row["source"], row["line_no"] = source, n
    if not row.get("worker"):
        row["worker"] = worker or source.removesuffix(".gz")
    return row


def _from_level_first(m: re.Match) -> dict | None:
    """winston `simple`: "error: Job 5 failed: boom {"timestamp":"...","jobId":"5"}"."""
    meta: dict = {}
    if m.group("meta"):
        try:
            loaded = json.loads(m.group("meta"))
            meta = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            meta = {}
    msg = m.group("msg") if meta or not m.group("meta") else f"{m.group('msg')} {m.group('meta')}".strip()
    return _from_json({**meta, "level": m.group("level"), "message": msg})


def _from_text(m: re.Match) -> dict | None:
    row: dict[str, Any] = {"time": _time(m.group("ts")), "level": _level(m.group("level")), "stack": None}
    if row["time"] is None:
        return None
    msg = m.group("msg").strip()
    if row["level"] is None:
        inside = _LEVEL_INSIDE.search(msg[:80])
        row["level"] = _level(inside.group("level")) if inside else None
    row["message"] = msg
    row["error"] = None
    row["job_id"] = _job_from_text(msg)
    q = _QUEUE_IN_TEXT.search(msg)
    row["queue"] = q.group("q") if q else None
    row["worker"] = None
    _memory_from_text(msg, row)
    return row


def _memory_from_text(text: str, row: dict) -> None:
    for mm in _MEM_IN_TEXT.finditer(text):
        key = _TEXT_MEM_KEY[mm.group("k").lower()]
        row[key] = float(mm.group("v")) * _UNITS[(mm.group("u") or "b").lower()]


def _frame(rows: list[dict], policy: Redaction | None = None) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=LOG_COLUMNS + ["stack"])
    if policy is not None and len(df):
        _redact_frame(df, policy)
    df["time"] = pd.to_datetime(df["time"], utc=True)
    for col in ("rss_bytes", "heap_used_bytes", "heap_total_bytes"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["line_no"] = df["line_no"].astype("int64")
    is_error = df["level"].isin(["error", "fatal"])
    # The error of a record: its err/error object's message, else (for error-level records)
    # the message after "failed:" -- so "job 5 failed: upstream 503" reads as "upstream 503".
    derived = df["message"].where(is_error & df["error"].isna())
    derived = derived.dropna().map(_error_of_message)
    df["error"] = df["error"].fillna(derived)
    df["fingerprint"] = fingerprints(df["error"]) if len(df) else pd.Series(dtype="str")
    for col in ("level", "message", "error", "job_id", "queue", "worker", "source", "format", "stack"):
        df[col] = df[col].astype("str").where(df[col].notna(), None) if len(df) else df[col].astype("str")
    df = df.sort_values(["time", "source", "line_no"], kind="stable", na_position="last").reset_index(drop=True)
    return df[LOG_COLUMNS + ["stack"]]


def _redact_frame(df: pd.DataFrame, policy: Redaction) -> None:
    """Secrets out of message, error and stack (before fingerprints: they are made of what
    is kept); with ``no_data`` only the wording of messages and the frames of stacks stay."""
    if policy.no_data:
        for col in ("message", "error"):
            df[col] = message_shape(df[col].astype("str"))
        df["stack"] = df["stack"].map(stack_shape)
    elif policy.secrets or policy.fields:
        for col in ("message", "error", "stack"):
            df[col] = policy.column(df[col].astype("str"), "text")[0]


def _error_of_message(text: str) -> str:
    for pattern in (_FAILED_PREFIX, _ERROR_PREFIX):
        if pattern.search(text):
            return pattern.sub("", text, count=1).strip() or text
    return text


def join_logs(logs: pd.DataFrame, snap) -> pd.DataFrame:
    """The log records with ``prefix``, ``queue``, ``job_state`` and ``job_name`` of the
    job each names, where the snapshot holds it. A record that names its queue joins on
    (queue, job id); one that does not joins only when the job id is unique in the snapshot
    (ids repeat across queues)."""
    out = logs.copy()
    out["prefix"] = None
    out["job_state"] = None
    out["job_name"] = None
    if not len(out) or snap is None:
        return out
    jobs = snap.jobs[["prefix", "queue", "job_id", "state", "name"]].astype(
        {"prefix": "str", "queue": "str", "state": "str"})
    has = out["job_id"].notna() if len(jobs) else pd.Series(False, index=out.index)
    named = has & out["queue"].notna()
    if named.any():
        per_q = jobs.drop_duplicates(["queue", "job_id"], keep=False).set_index(["queue", "job_id"])
        keys = pd.MultiIndex.from_arrays([out.loc[named, "queue"], out.loc[named, "job_id"]])
        hit = per_q.reindex(keys)
        out.loc[named, "prefix"] = hit["prefix"].to_numpy()
        out.loc[named, "job_state"] = hit["state"].to_numpy()
        out.loc[named, "job_name"] = hit["name"].to_numpy()
    bare = has & out["queue"].isna()
    if bare.any():
        unique = jobs.drop_duplicates("job_id", keep=False).set_index("job_id")
        hit = unique.reindex(out.loc[bare, "job_id"])
        out.loc[bare, "prefix"] = hit["prefix"].to_numpy()
        out.loc[bare, "queue"] = hit["queue"].to_numpy()
        out.loc[bare, "job_state"] = hit["state"].to_numpy()
        out.loc[bare, "job_name"] = hit["name"].to_numpy()
    # A record that names a queue but no known job: the prefix, when only one has that queue.
    queues = snap.queues.astype({"prefix": "str", "queue": "str"})
    single = queues.drop_duplicates("queue", keep=False).set_index("queue")["prefix"]
    lone = out["prefix"].isna() & out["queue"].notna()
    if lone.any():
        out.loc[lone, "prefix"] = single.reindex(out.loc[lone, "queue"]).to_numpy()
    for col in ("prefix", "queue", "job_state", "job_name"):
        out[col] = out[col].where(out[col].notna(), None)
    return out


def describe(logs: pd.DataFrame) -> str:
    """One line: how many records from which files, how many lines unreadable."""
    a = logs.attrs
    span = ""
    t = logs["time"].dropna() if len(logs) else pd.Series(dtype="datetime64[ns, UTC]")
    if len(t):
        span = f", {t.min():%Y-%m-%d %H:%M:%S} to {t.max():%H:%M:%S} UTC"
    text = f"{len(logs):,} log records from {', '.join(a.get('sources', [])) or 'no file'}{span}"
    if a.get("unparsed"):
        text += f"; {a['unparsed']:,} line(s) could not be read (e.g. {a['unparsed_examples'][0]})"
    return text
