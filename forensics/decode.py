"""Decode raw Bull/BullMQ job hashes into typed, lean DataFrame rows.

Works one chunk at a time (a few thousand jobs) so a million-job capture never holds every
raw reply. Per-column work is vectorized; JSON (opts, stack traces) is parsed once per
*distinct* text, which repeats heavily across jobs of one queue.

Version differences handled here (see bull-datamodel.md):
- attempts: bull `attemptsMade` counts failures; BullMQ <= 4 `attemptsMade` counts starts;
  BullMQ >= 5 has `ats` (starts) and `atm` (finished attempts, i.e. failures + final).
- stall count: `stalledCounter` (bull, BullMQ < 5.49) or `stc`.
- `defa`: BullMQ >= 5.49.2 deferred failure (a stall-limit breach waiting in `wait`).
- delayed due time from the zset score (ms * 4096 + seq); priority from the prioritized
  score (priority * 2^32 + seq); the hash `delay` is relative and is kept as such.
- opts: bull JSON vs BullMQ cjson (key order, escaped '/'), short keys (`kl`, `de`,
  `fpof`, ...), `attempts: Infinity` stored as null.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .redact import Redaction, json_shape, message_shape, regex_hits, stacktrace_json_shape
from .stop import check_stop

STACK_TOP_LINES = 8
# A W3C traceparent (version 00) inside the job's propagated telemetry metadata (opts `tm`).
TRACEPARENT = r"\b(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})\b"

# Column order and dtypes of the jobs table: the schema contract of DESIGN.md.
JOB_COLUMNS: dict[str, str] = {
    "prefix": "str", "queue": "str", "job_id": "str", "name": "str", "state": "str", "flavor": "str",
    "added_at": "datetime64[ms, UTC]", "processed_at": "datetime64[ms, UTC]",
    "finished_at": "datetime64[ms, UTC]", "due_at": "datetime64[ms, UTC]",
    "delay_ms": "Int64", "priority": "Int32",
    "attempts_made": "Int32", "attempts_started": "Int32", "stalled_count": "Int32",
    "deferred_failure": "str",
    "attempts_configured": "Int64", "attempts_infinite": "boolean",
    "backoff_type": "str", "backoff_delay_ms": "Int64", "timeout_ms": "Int64",
    "remove_on_complete": "str", "remove_on_fail": "str", "keep_logs": "Int32",
    "lifo": "boolean", "repeat": "boolean", "repeat_key": "str", "dedup_id": "str",
    "traceparent": "str", "trace_id": "str",
    "data_bytes": "Int64", "returnvalue_bytes": "Int64", "stacktrace_bytes": "Int64",
    "opts_bytes": "Int64", "data_has_buffer": "boolean",
    "failed_reason": "str", "stacktrace_count": "Int32", "stacktrace_top": "str",
    "progress": "str", "parent_key": "str", "parent_id": "str", "processed_by": "str",
    "lock_present": "boolean", "lock_token": "str", "lock_ttl_ms": "Int64",
    "log_count": "Int32", "memory_bytes": "Int64", "redacted_fields": "Int32",
    "decode_errors": "str",
}
PAYLOAD_COLUMNS: dict[str, str] = {
    "prefix": "str", "queue": "str", "job_id": "str", "data": "str", "returnvalue": "str",
    "stacktrace": "str", "opts": "str", "logs": "str",
}


_DTYPES = {c: pd.api.types.pandas_dtype(t) for c, t in JOB_COLUMNS.items()}


def _typed(values, index: pd.Index, col: str) -> pd.Series:
    """A column of the jobs table in its dtype (no copy when it has it already)."""
    s = values if isinstance(values, pd.Series) and values.index is index else pd.Series(values, index=index)
    return s if s.dtype == _DTYPES[col] else s.astype(_DTYPES[col])


def empty_jobs() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in JOB_COLUMNS.items()})


def empty_payloads() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in PAYLOAD_COLUMNS.items()})


# A plain decimal number, as Bull and BullMQ write them: parsed by Arrow, in C++. Anything
# else (spaces, inf, hex, damaged text) goes through pandas, which sets the rules.
_PLAIN_NUMBER = r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$"


def _plain_floats(values: np.ndarray) -> np.ndarray | None:
    """Texts (objects, None for missing) as floats, parsed by Arrow in C++, when every one
    present is a plain decimal number; None when one is not."""
    try:
        arr = pa.array(values, type=pa.string(), from_pandas=True)
        plain = pc.match_substring_regex(arr, _PLAIN_NUMBER)
        if pc.all(pc.or_kleene(plain, pc.is_null(arr))).as_py() is not False:
            return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    return None


def _nums(raw: pd.DataFrame, cols: tuple[str, ...]) -> dict[str, pd.Series]:
    """Numeric hash fields as Int64 columns, all of them in one Arrow pass when every value
    is a plain number (as the libraries write them): a pass per field cost about a
    millisecond each, however few jobs a chunk held. A field with anything else in it (spaces,
    inf, hex, damaged text) goes through pandas, which sets the rules."""
    out = {c: pd.Series(pd.NA, index=raw.index, dtype="Int64") for c in cols if c not in raw}
    present = [c for c in cols if c in raw]
    n = len(raw)
    values = _plain_floats(np.concatenate([raw[c].to_numpy(dtype=object) for c in present])) if present else None
    for i, c in enumerate(present):
        if values is None:   # not all plain: field by field
            v = _plain_floats(raw[c].to_numpy(dtype=object))
            out[c] = _int64(pd.to_numeric(raw[c], errors="coerce") if v is None else pd.Series(v, index=raw.index))
        else:
            out[c] = _int64(pd.Series(values[i * n:(i + 1) * n], index=raw.index))
    return out


def _int64(v: pd.Series) -> pd.Series:
    """Rounded to Int64; damaged numbers (inf, 1e999, thirty digits) become missing values,
    not an overflow. (In numpy: the same in pandas cost ten times as much on a small chunk.)"""
    f = v.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(f) & (np.abs(f) < 2.0 ** 62)
    ints = np.where(ok, np.round(f), 0).astype(np.int64)
    return pd.Series(pd.arrays.IntegerArray(ints, ~ok), index=v.index, name=v.name)


def _ms_to_time(ms: pd.Series) -> pd.Series:
    """Epoch milliseconds as UTC times; corrupt or absurd values (beyond year 2500) become NaT
    rather than overflowing."""
    f = ms.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        ok = (f > 0) & (f < 16_725_225_600_000)
    t = np.where(ok, f, 0).astype(np.int64).view("datetime64[ms]")
    t[~ok] = np.datetime64("NaT")
    return pd.Series(t, index=ms.index, name=ms.name).dt.tz_localize("UTC")


def _text(raw: pd.DataFrame, col: str) -> pd.Series:
    if col not in raw:
        return pd.Series(pd.NA, index=raw.index, dtype="str")
    return raw[col].astype("str")


def _byte_len(s: pd.Series) -> pd.Series:
    arr = pa.array(s.astype("str"), type=pa.large_string(), from_pandas=True)
    lens = pc.binary_length(arr)   # (to Int64 directly: through float64 and astype cost ~0.5 ms a column)
    return pd.Series(pd.arrays.IntegerArray(pc.fill_null(lens, 0).to_numpy().astype(np.int64),
                                            pc.is_null(lens).to_numpy(zero_copy_only=False)), index=s.index)


def _json_text(v) -> str | None:
    if v is None:
        return None
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def _int_or_none(v):
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)) and np.isfinite(v):
        return int(v)
    return None


def parse_opts(text: str) -> tuple:
    """Decode one opts JSON into the fields the jobs table carries (cached per text)."""
    try:
        o = json.loads(text)
        if not isinstance(o, dict):
            raise ValueError
    except (ValueError, TypeError):
        return (None,) * 13 + ("opts:json",)
    attempts = o.get("attempts", "missing")
    infinite = attempts is None or (isinstance(attempts, (int, float)) and not np.isfinite(attempts)) \
        or (isinstance(attempts, str) and attempts.lower() in ("inf", "infinity"))
    backoff = o.get("backoff")
    btype = bdelay = None
    if isinstance(backoff, (int, float)) and not isinstance(backoff, bool):
        btype, bdelay = "fixed", _int_or_none(backoff)
    elif isinstance(backoff, dict):
        btype = str(backoff.get("type")) if backoff.get("type") is not None else None
        bdelay = _int_or_none(backoff.get("delay"))
    kl = o.get("keepLogs", o.get("kl"))
    if isinstance(kl, dict):
        kl = kl.get("count")
    return (
        None if infinite or attempts == "missing" else _int_or_none(attempts),
        bool(infinite),
        btype, bdelay,
        _int_or_none(o.get("timeout")),
        _json_text(o.get("removeOnComplete")),
        _json_text(o.get("removeOnFail")),
        _int_or_none(kl),
        bool(o.get("lifo")) if "lifo" in o else None,
        "repeat" in o,
        str(o["repeat"]["key"]) if isinstance(o.get("repeat"), dict) and o["repeat"].get("key") is not None else None,
        _int_or_none(o.get("priority")),
        _int_or_none(o.get("delay")),
        None,
    )


_OPTS_FIELDS = ("attempts_configured", "attempts_infinite", "backoff_type", "backoff_delay_ms",
                "timeout_ms", "remove_on_complete", "remove_on_fail", "keep_logs", "lifo",
                "repeat", "_repeat_key", "_opt_priority", "_opt_delay", "_opts_error")


def parse_stacktrace(text: str) -> tuple[int | None, str | None, str | None]:
    """(entries, top frames of the latest entry, error) for a stacktrace JSON array."""
    try:
        st = json.loads(text)
    except (ValueError, TypeError):
        return None, "\n".join(text.splitlines()[:STACK_TOP_LINES]), "stacktrace:json"
    if not isinstance(st, list):
        return None, None, "stacktrace:json"
    entries = [e for e in st if isinstance(e, str)]
    if not entries:
        return len(st), None, None
    return len(st), "\n".join(entries[-1].splitlines()[:STACK_TOP_LINES]), None


def _per_distinct(texts: pd.Series, parse, fields: tuple[str, ...]) -> pd.DataFrame:
    """Apply ``parse`` (text -> tuple) once per distinct text; rows of missing text are NA."""
    codes, uniques = pd.factorize(texts, use_na_sentinel=True)
    # (the last row for code -1, no text: built in, as adding it with .loc cost ~1.5 ms a call)
    table = pd.DataFrame([parse(u) for u in uniques] + [(None,) * len(fields)], columns=list(fields), dtype=object)
    picked = table.iloc[np.where(codes < 0, len(table) - 1, codes)].reset_index(drop=True)
    picked.index = texts.index
    return picked


def _contains(raw: pd.DataFrame, col: str, text: pd.Series, needle: str) -> pd.Series:
    """Whether each value holds ``needle`` (a plain substring), searched in the Python strings
    the replies gave: memchr-fast, and a non-ASCII needle in an ASCII string costs nothing
    (Arrow's substring kernel ran at ~750 MB/s, and cost 2 ms a column on small values)."""
    if col not in raw or not len(raw):
        return text.str.contains(needle, regex=False)
    found = [needle in v if isinstance(v, str) else False for v in raw[col].tolist()]
    return pd.Series(found, index=raw.index, dtype="boolean").where(text.notna())


def _map(s: pd.Series, fn) -> pd.Series:
    """``s.map(fn)`` on the values present, honouring a stop between two values."""
    def one(v):
        check_stop()
        return fn(v)
    return s.map(one, na_action="ignore").astype("str")


def _raw_frame(hashes: list[dict], index: pd.Index) -> pd.DataFrame:
    """The hash fields as object columns, one per field any hash has (no type inference:
    numbers are parsed by ``_num``, texts typed by ``_text``, each once)."""
    if not hashes:
        return pd.DataFrame(index=index)
    fields = sorted(set().union(*hashes))
    return pd.DataFrame({f: pd.Series([h.get(f) for h in hashes], index=index, dtype=object) for f in fields},
                        index=index)


def decode_jobs(ids: pd.DataFrame, hashes: list[dict], *, redact: "bool | Redaction" = True
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decode one chunk. ``ids`` has prefix, queue, job_id, state, score, flavor (aligned with
    ``hashes``, one HGETALL reply each; empty replies must be filtered out before).

    ``redact``: True redacts secrets in data, return values, failed reasons and stack traces
    (see ``forensics.redact``); a ``Redaction`` adds field patterns or keeps no values at all.
    Sizes, flags and decode errors are measured on the values as read."""
    n = len(ids)
    if n == 0:
        return empty_jobs(), empty_payloads()
    ids = ids.reset_index(drop=True)
    raw = _raw_frame(hashes, ids.index)
    out: dict[str, pd.Series] = {}
    errors = pd.Series("", index=ids.index, dtype="str")

    def add_error(mask, label):
        nonlocal errors
        mask = pd.Series(mask, index=ids.index).fillna(False).astype(bool)
        if mask.any():
            errors = errors.where(~mask, errors + "," + label)

    for col in ("prefix", "queue", "job_id", "state", "flavor"):
        out[col] = ids[col].astype("str")
    out["name"] = _text(raw, "name")
    num = _nums(raw, ("timestamp", "processedOn", "finishedOn", "delay", "priority", "atm", "ats", "attemptsMade",
                      "stc", "stalledCounter"))
    out["added_at"] = _ms_to_time(num["timestamp"])
    out["processed_at"] = _ms_to_time(num["processedOn"])
    out["finished_at"] = _ms_to_time(num["finishedOn"])
    score = pd.to_numeric(ids["score"], errors="coerce")
    delayed = ids["state"].eq("delayed")
    due_ms = (score // 4096).where(delayed)
    out["due_at"] = _ms_to_time(_int64(due_ms))
    out["delay_ms"] = num["delay"]

    # opts: bull stores a per-job timestamp inside opts; strip it so identical option
    # sets share one parse. Each distinct text is parsed once, then spread by code.
    opts = _text(raw, "opts")
    opts_key = opts.str.replace(r'"timestamp":\d+,?|,"timestamp":\d+', "", regex=True)
    parsed = _per_distinct(opts_key, parse_opts, _OPTS_FIELDS)
    for field in _OPTS_FIELDS:
        out[field] = parsed[field]
    add_error(out.pop("_opts_error").notna(), "opts:json")

    hash_priority = num["priority"]
    prio_from_score = _int64((score // 4294967296).where(ids["state"].eq("prioritized")))
    out["priority"] = prio_from_score.fillna(hash_priority).fillna(
        out.pop("_opt_priority").astype("Int64")).fillna(0)
    opt_delay = out.pop("_opt_delay").astype("Int64")
    out["delay_ms"] = out["delay_ms"].fillna(opt_delay)

    # Attempt counters (their meaning changed across versions, see module doc).
    flavor = ids["flavor"]
    atm, ats, am = num["atm"], num["ats"], num["attemptsMade"]
    v5 = atm.notna() | ats.notna()
    mq = flavor.eq("bullmq")
    made = pd.Series(pd.NA, index=ids.index, dtype="Int64")
    started = pd.Series(pd.NA, index=ids.index, dtype="Int64")
    made = made.mask(mq & v5, atm.fillna(0))
    started = started.mask(mq & v5, ats.fillna(0))
    old_mq = mq & ~v5 & am.notna()  # BullMQ <= 4: attemptsMade counts starts
    started = started.mask(old_mq, am)
    made = made.mask(old_mq, (am - ids["state"].eq("active").astype("Int64")).clip(lower=0))
    fresh = mq & ~v5 & am.isna()
    made = made.mask(fresh, 0)
    started = started.mask(fresh, 0)
    made = made.mask(~mq, am.fillna(0))  # bull: failures only; starts are not tracked
    out["attempts_made"] = made.astype("Int64")
    out["attempts_started"] = started.astype("Int64")
    out["stalled_count"] = num["stc"].fillna(num["stalledCounter"]).fillna(0)
    out["deferred_failure"] = _text(raw, "defa")
    out["repeat_key"] = _text(raw, "rjk").fillna(out.pop("_repeat_key"))  # BullMQ rjk; Bull opts.repeat.key
    out["dedup_id"] = _text(raw, "deid")
    # the trace context BullMQ propagates (opts `tm`, from `telemetry`): the job's APM trace
    traced = opts.str.contains('"tm"', regex=False).fillna(False).astype(bool)
    tp = pd.Series(pd.NA, index=ids.index, dtype="str")
    if traced.any():
        tp[traced] = opts[traced].str.extract(TRACEPARENT, expand=False)
    out["traceparent"] = tp
    out["trace_id"] = tp.str.slice(3, 35)

    data = _text(raw, "data")
    rv = _text(raw, "returnvalue")
    st = _text(raw, "stacktrace")
    out["data_bytes"] = _byte_len(data)
    out["returnvalue_bytes"] = _byte_len(rv)
    out["stacktrace_bytes"] = _byte_len(st)
    out["opts_bytes"] = _byte_len(opts)
    out["data_has_buffer"] = _contains(raw, "data", data, '"type":"Buffer","data":[')
    add_error(_contains(raw, "data", data, "\ufffd"), "data:utf8")
    add_error(_contains(raw, "stacktrace", st, "\ufffd")
              | _contains(raw, "failedReason", _text(raw, "failedReason"), "\ufffd"), "text:utf8")
    # data that does not even start like JSON (a cheap check, not a full parse).
    add_error(data.notna() & ~regex_hits(data, r"^\s*[\[{\"0-9\-tfn]", ignore_case=False), "data:json")

    policy = Redaction.of(redact)
    texts = {"data": data, "returnvalue": rv, "progress": _text(raw, "progress"), "stacktrace": st,
             "failed_reason": _text(raw, "failedReason"), "deferred_failure": out["deferred_failure"]}
    redacted = pd.Series(0, index=ids.index, dtype="Int64")
    if policy.no_data:  # sizes, shapes and field names; no values
        for k in ("data", "returnvalue"):
            texts[k] = _map(texts[k], json_shape)
        number = texts["progress"].str.fullmatch(r"-?\d+(?:\.\d+)?").fillna(False).astype(bool)
        texts["progress"] = texts["progress"].where(number, _map(texts["progress"], json_shape)).astype("str")
        texts["stacktrace"] = _map(texts["stacktrace"], stacktrace_json_shape)
        for k in ("failed_reason", "deferred_failure"):
            texts[k] = message_shape(texts[k])
    elif policy.secrets or policy.fields:
        for k, col in texts.items():
            if not col.notna().any():   # progress, deferred failures: mostly absent
                continue
            texts[k], n = policy.column(col, "json" if k in ("data", "returnvalue", "progress") else "text")
            redacted += n
    data, rv, st = texts["data"], texts["returnvalue"], texts["stacktrace"]
    out["redacted_fields"] = redacted
    for k in ("failed_reason", "deferred_failure", "progress"):
        out[k] = texts[k]
    parsed_st = _per_distinct(st, parse_stacktrace, ("stacktrace_count", "stacktrace_top", "_st_error"))
    out["stacktrace_count"] = parsed_st["stacktrace_count"].astype("Int64")
    out["stacktrace_top"] = parsed_st["stacktrace_top"]
    add_error(parsed_st["_st_error"].notna(), "stacktrace:json")
    out["parent_key"] = _text(raw, "parentKey")
    parent_id = pd.Series(pd.NA, index=ids.index, dtype="str")
    if "parent" in raw:
        parent_id = raw["parent"].astype("str").str.extract(r'"id"\s*:\s*"([^"]*)"', expand=False)
    out["parent_id"] = parent_id.astype("str")
    out["processed_by"] = _text(raw, "pb")
    # Filled in by the capture from the lock/log keys (see capture._finish).
    out["lock_present"] = pd.Series(False, index=ids.index, dtype="boolean")
    out["lock_token"] = pd.Series(pd.NA, index=ids.index, dtype="str")
    out["lock_ttl_ms"] = pd.Series(pd.NA, index=ids.index, dtype="Int64")
    out["log_count"] = pd.Series(0, index=ids.index, dtype="Int64")
    out["memory_bytes"] = pd.Series(pd.NA, index=ids.index, dtype="Int64")
    out["decode_errors"] = errors.str.strip(",").replace("", pd.NA)

    # (arrays, every one already on ids.index: a dict of Series is aligned column by column, ~2 ms)
    jobs = pd.DataFrame({c: _typed(out[c], ids.index, c).array for c in JOB_COLUMNS}, index=ids.index, copy=False)
    payloads = pd.DataFrame({
        "prefix": out["prefix"], "queue": out["queue"], "job_id": out["job_id"], "data": data, "returnvalue": rv,
        "stacktrace": st, "opts": opts, "logs": pd.Series(pd.NA, index=ids.index, dtype="str"),
    }, copy=False)
    for c, t in PAYLOAD_COLUMNS.items():   # (only the columns not in their dtype: astype of a dict concats them all)
        if payloads[c].dtype != t:
            payloads[c] = payloads[c].astype(t)
    return jobs, payloads
