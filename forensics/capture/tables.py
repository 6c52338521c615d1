"""The tables a capture writes: spooled Parquet files, empty tables with their dtypes,
and RESP2 replies shaped the way the readers use them."""
from __future__ import annotations

import hashlib
import io
import json
import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from redis._parsers.helpers import parse_info

from ..errors import SnapshotError


# State structures in precedence order: a job seen in two (it moved while we read) keeps
# the first. (key suffix, redis type, state name)
STATE_KEYS = (
    ("active", "list", "active"), ("wait", "list", "wait"), ("paused", "list", "paused"),
    ("prioritized", "zset", "prioritized"), ("delayed", "zset", "delayed"),
    ("waiting-children", "zset", "waiting-children"),
    ("failed", "zset", "failed"), ("completed", "zset", "completed"),
)
STATES = [s for _, _, s in STATE_KEYS]
JOB_STATES = STATES + ["orphan", "missing-hash"]

class HashingFile(io.RawIOBase):
    """A file written once, front to back, whose size and sha256 are known when it closes:
    saving a snapshot then needs no second pass over gigabytes of payloads."""

    def __init__(self, path):
        self.f = open(path, "wb")
        self.sha = hashlib.sha256()
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.n += len(b)
        return self.f.write(b)

    def tell(self) -> int:
        return self.n

    def close(self) -> None:
        if not self.closed:
            self.f.close()
        super().close()


SPOOL_BYTES = 32 << 20   # a row group is written once it holds this much (megabyte payloads)


class Spool:
    """A Parquet file written table by table, in row groups of at least ``rows`` rows
    (small queues would otherwise each leave a tiny row group with its own metadata) or
    SPOOL_BYTES, whichever comes first.

    A write the disk refuses (full, a file-size limit) raises ``SnapshotError`` naming the
    folder: it is not a lost connection, and the capture cannot go on without it."""

    def __init__(self, path, schema: pa.Schema, rows: int):
        self.path = path
        self.file = self._io(HashingFile, path)
        self.writer = self._io(pq.ParquetWriter, self.file, schema)
        self.digest: dict | None = None  # {"bytes", "sha256"} once closed
        self.schema = schema
        self.rows = rows
        self.pending: list[pa.Table] = []
        self.n = 0
        self.pending_bytes = 0
        # Row groups are encoded and written by a thread (Arrow releases the GIL) while the
        # capture reads on; one write at a time, so at most one row group waits in memory.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="forensics-spool")
        self._writing: Future | None = None

    def _io(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            raise SnapshotError(f"could not write the capture's working file {self.path}: {e.strerror or e} "
                                "(free space there, or point TMPDIR at a disk with room)") from e

    def _wait(self) -> None:
        if self._writing is not None:
            done, self._writing = self._writing, None
            done.result()  # a refused write raises here, on the capture's thread

    def write(self, df: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(df, schema=self.schema, preserve_index=False, nthreads=1)   # (threads per call cost more)
        self.pending.append(table)
        self.n += len(df)
        self.pending_bytes += table.nbytes
        if self.n >= self.rows or self.pending_bytes >= SPOOL_BYTES:
            self.flush()

    def write_table(self, table: pa.Table) -> None:
        """An Arrow table already in the spool's schema."""
        self.pending.append(table)
        self.n += table.num_rows
        self.pending_bytes += table.nbytes
        if self.n >= self.rows or self.pending_bytes >= SPOOL_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            table = pa.concat_tables(self.pending)
            self._wait()
            self._writing = self._pool.submit(self._io, self.writer.write_table, table)
        self.pending, self.n, self.pending_bytes = [], 0, 0

    def close(self) -> None:
        try:
            self.flush()
            self._wait()
            self._io(self.writer.close)
            self._io(self.file.close)
            self.digest = {"bytes": self.file.n, "sha256": self.file.sha.hexdigest()}
        finally:
            self._pool.shutdown(wait=True)


def pairs(flat: list) -> dict:
    it = iter(flat)
    return dict(zip(it, it))


def shape(cmd: tuple, r: Any) -> Any:
    """RESP2 replies into the shapes the readers use (what redis-py's callbacks would give)."""
    name = cmd[0]
    if name == "HGETALL":
        return pairs(r) if r else {}
    if name == "ZRANGE" and cmd[-1] == "WITHSCORES":
        return list(zip(r[0::2], map(float, r[1::2])))
    if name == "XRANGE":
        return [(sid, pairs(fields or [])) for sid, fields in r]
    if name == "INFO":
        return parse_info(r)
    if name == "CONFIG":
        return pairs(r)
    return r


def as_int(x) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


# One encoder for every call: json.dumps with options builds a new one each time, half the
# cost of encoding a small event's fields.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def as_json(obj) -> str:
    return _JSON.encode(obj)


def event_texts(fields: list[dict], redact) -> list[str | None]:
    """The ``fields`` column of one window of events (each entry's fields but its event name
    and job id), redacted or shaped as ``redact`` (a Redaction) asks. Field by field over the
    window: Arrow's RE2 pre-filter passes over the values no rule can touch (nearly every big
    return value) without a Python step each."""
    from ..redact import event_fields_shape
    from ..stop import check_stop
    if redact.secrets or redact.fields:
        where: dict[str, list[int]] = {}
        for i, f in enumerate(fields):
            for k, v in f.items():
                if isinstance(v, str) and v:
                    where.setdefault(k, []).append(i)
        for k, rows in where.items():
            red, _ = redact.column(pd.Series([fields[i][k] for i in rows], dtype=object),
                                   "json" if k in ("data", "returnvalue") else "text")
            for i, v in zip(rows, red.tolist()):
                fields[i][k] = v
    texts = []
    for f in fields:
        check_stop()
        texts.append((event_fields_shape(as_json(f)) if redact.no_data else as_json(f)) if f else None)
    return texts


def empty_events() -> pd.DataFrame:
    return pd.DataFrame({"prefix": pd.Series(dtype="str"), "queue": pd.Series(dtype="str"), "stream_id": pd.Series(dtype="str"),
                         "time": pd.Series(dtype="datetime64[ms, UTC]"), "event": pd.Series(dtype="str"),
                         "job_id": pd.Series(dtype="str"), "fields": pd.Series(dtype="str")})


def empty_metrics() -> pd.DataFrame:
    return pd.DataFrame({"prefix": pd.Series(dtype="str"), "queue": pd.Series(dtype="str"), "kind": pd.Series(dtype="str"),
                         "time": pd.Series(dtype="datetime64[ns, UTC]"), "count": pd.Series(dtype="int64")})


def empty_memory() -> pd.DataFrame:
    return pd.DataFrame({"prefix": pd.Series(dtype="str"), "queue": pd.Series(dtype="str"), "family": pd.Series(dtype="str"),
                         "keys": pd.Series(dtype="int64"), "bytes": pd.Series(dtype="int64"),
                         "measured_keys": pd.Series(dtype="int64"), "estimated": pd.Series(dtype="bool")})


def empty_workers() -> pd.DataFrame:
    cols = {"prefix": "str", "queue": "str", "role": "str", "worker_name": "str", "runtime": "str", "client_name": "str",
            "client_id": "Int64", "addr": "str", "age_s": "Int64", "idle_s": "Int64",
            "last_command": "str", "db": "Int64", "node": "str", "flags": "str", "blocked": "boolean",
            "blocking_command": "str"}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})


def empty_clients() -> pd.DataFrame:
    """Every connection CLIENT LIST showed, as read (a queue's own connections carry its
    prefix, queue and role): the evidence of connection leaks."""
    cols = {"client_id": "Int64", "addr": "str", "host": "str", "name": "str", "age_s": "Int64", "idle_s": "Int64",
            "flags": "str", "blocked": "boolean", "last_command": "str", "db": "Int64", "user": "str",
            "lib_name": "str", "lib_ver": "str", "node": "str", "prefix": "str", "queue": "str", "role": "str"}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})


def empty_dedup() -> pd.DataFrame:
    """BullMQ deduplication keys as read: the id, the job id the key holds, its TTL (empty:
    none, the key lives until the job finishes)."""
    cols = {"prefix": "str", "queue": "str", "dedup_id": "str", "job_id": "str", "ttl_ms": "Int64"}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})


def empty_schedulers() -> pd.DataFrame:
    """Job schedulers (BullMQ 5.16+), legacy repeatables (BullMQ, Bull): one row per entry
    of the repeat zset."""
    cols = {"prefix": "str", "queue": "str", "kind": "str", "key": "str", "name": "str", "pattern": "str",
            "every_ms": "Int64", "tz": "str", "start_at": "datetime64[ms, UTC]", "end_at": "datetime64[ms, UTC]",
            "limit": "Int64", "next_run": "datetime64[ms, UTC]", "iterations": "Int64", "data": "str",
            "data_bytes": "Int64", "next_job_id": "str"}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})


def _ms_time(v) -> pd.Timestamp | None:
    n = as_int(v)
    return None if n is None or n <= 0 else pd.Timestamp(n, unit="ms", tz="UTC")


def scheduler_row(flavor: str, member: str, score: float | None, h: dict) -> dict:
    """One entry of a queue's repeat zset, with its ``repeat:<member>`` hash (BullMQ)."""
    millis = int(score) if score is not None else None
    if h:  # BullMQ: a job scheduler (data, iteration count) or a legacy repeatable's hash
        scheduler = any(k in h for k in ("ic", "data", "offset")) or not re.fullmatch(r"[0-9a-f]{32}", member)
        data = h.get("data")
        return {"kind": "job-scheduler" if scheduler else "legacy-repeatable", "key": member, "name": h.get("name"),
                "pattern": h.get("pattern") or h.get("cron"), "every_ms": as_int(h.get("every")), "tz": h.get("tz"),
                "start_at": _ms_time(h.get("startDate")), "end_at": _ms_time(h.get("endDate")),
                "limit": as_int(h.get("limit")), "next_run": _ms_time(millis), "iterations": as_int(h.get("ic")),
                "data": data, "data_bytes": len(data.encode("utf-8", "replace")) if isinstance(data, str) else None,
                "next_job_id": f"repeat:{member}:{millis}" if millis is not None else None}
    # Bull, and BullMQ before repeatables had a hash: name:jobId:endDate:tz:cron, or
    # name:jobId:endDate:every (no tz) for an interval
    rule = member.rsplit(":", 1)[-1]
    every = as_int(rule) if rule.isdigit() else None
    parts = member.rsplit(":", 3 if every is not None else 4)
    if every is not None and len(parts) == 4:
        name, end, tz = parts[0], parts[2], None
    elif every is None and len(parts) == 5:
        name, end, tz = parts[0], parts[2], parts[3]
    else:
        name, end, tz, rule = member, None, None, None
    return {"kind": "legacy-repeatable", "key": member, "name": name, "pattern": None if every else (rule or None),
            "every_ms": every, "tz": tz or None, "start_at": None, "end_at": _ms_time(end), "limit": None,
            "next_run": _ms_time(millis), "iterations": None, "data": None, "data_bytes": None,
            "next_job_id": None}   # Bull hashes its id: the detectors find it by its repeat key


# Columns and dtypes of the queues table (the same whether or not queues were found).
QUEUE_COLUMNS: dict[str, str] = {
    "prefix": "str", "queue": "str", "flavor": "str", "library_version": "str",
    "flavor_evidence": "str", "paused": "bool",
    **{f"n_{s.replace('-', '_')}": "int64" for s in STATES + ["orphan", "missing-hash"]},
    "workers": "int64", "meta": "str", "max_len_events": "Int64", "global_concurrency": "Int64",
    "rate_limit_max": "Int64", "rate_limit_duration_ms": "Int64", "stalled_set": "int64",
    "priority_zset": "int64", "events_length": "int64", "id_counter": "Int64",
    "limiter_ttl_ms": "Int64", "limiter_value": "Int64", "stalled_check_ttl_ms": "Int64", "repeat_count": "int64", "markers": "int64",
    "metrics_completed_total": "Int64", "metrics_failed_total": "Int64", "memory_bytes": "Int64",
    "node": "str", "slot": "Int64",
}

