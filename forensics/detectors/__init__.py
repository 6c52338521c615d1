"""Detectors: plain functions over a snapshot's DataFrames, registered in one table.

Each module holds one family (stuck, retries, payloads, memory, config). A detector takes
a ``Context`` (the snapshot's tables, prepared once, plus the thresholds) and yields
``Finding``s. It never touches Redis, and reports nothing rather than guessing when the
evidence it needs is not in the snapshot. The CLI, the notebooks and the checklist all
read ``REGISTRY``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable

import pandas as pd

from ..fingerprint import fingerprints
from ..stats import robust_trend
from ..thresholds import Thresholds

SEVERITIES = ["critical", "high", "medium", "low", "info"]
FAMILIES = ["stuck", "retries", "payloads", "memory", "config", "logs", "code"]
SAMPLE = 20  # job ids listed per finding (count holds the full number)


@dataclass
class Finding:
    id: str
    severity: str
    title: str
    count: int = 0
    prefix: str | None = None
    queue: str | None = None
    job_ids: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    remediation: str = ""
    family: str = ""
    explains: list[dict] = field(default_factory=list)      # findings this one causes (id, prefix, queue)
    explained_by: list[dict] = field(default_factory=list)  # findings that cause this one
    # Row labels of every job the finding covers (ctx.jobs index): ``explain`` finds the
    # findings that name a job from these, not from the 20-id sample. Not serialized.
    members: Any = field(default=None, repr=False, compare=False)

    def with_ids(self, ids: list[str]) -> "Finding":
        self.job_ids = [str(i) for i in ids[:SAMPLE]]
        return self


@dataclass(frozen=True)
class Detector:
    id: str
    family: str
    summary: str
    fn: Callable[["Context"], Iterable[Finding]]


REGISTRY: dict[str, Detector] = {}


def detector(id: str, family: str, summary: str):
    """Register a detector function under a DESIGN.md diagnosis id."""
    def wrap(fn):
        if id in REGISTRY:
            raise RuntimeError(f"detector {id} registered twice")
        REGISTRY[id] = Detector(id, family, summary, fn)
        return fn
    return wrap


def sample_ids(jobs: pd.DataFrame, order: str | None = None, ascending: bool = True) -> list[str]:
    ids = jobs["job_id"]
    if order is not None and order in jobs:  # sort the one column, not every column of the frame
        top = jobs[order].reset_index(drop=True).sort_values(ascending=ascending, na_position="last").index[:SAMPLE]
        ids = ids.iloc[top]
    return [str(j) for j in ids.head(SAMPLE)]


def minutes(td) -> float:
    return round(pd.Timedelta(td).total_seconds() / 60, 1)


def option_set(series: pd.Series) -> pd.Series:
    """removeOnComplete/removeOnFail given and not 'keep everything' (absent, false, null)."""
    return series.notna() & ~series.isin(["false", "null"])


def retried_jobs(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs configured to be tried more than once (attempts > 1, or infinite)."""
    return jobs[(jobs["attempts_configured"].fillna(0) > 1) | jobs["attempts_infinite"].fillna(False).astype(bool)]


def queue_key(q) -> tuple[str, str]:
    """(prefix, queue) of a queues-table row: the key of every per-queue split."""
    return str(q["prefix"]), str(q["queue"])


def is_bull(q) -> bool:
    """The queue was written by Bull (v3/v4), not BullMQ."""
    return q["flavor"] == "bull"


def trend(times: pd.Series, values: pd.Series) -> dict | None:
    """Robust trend of values over wall time (``stats.robust_trend``): Theil–Sen slope per
    second, Kendall's tau, the latter half's slope, the fitted first and last values and the
    span. None with fewer than two distinct times."""
    ok = times.notna() & values.notna()
    t, v = times[ok], values[ok].astype("float64")
    if len(t) < 2:
        return None
    tr = robust_trend((t - t.min()).dt.total_seconds().to_numpy(), v.to_numpy())
    if tr is None:
        return None
    return {**tr, "slope_per_s": tr["slope"], "span_s": tr["span"]}


def _split(frame: pd.DataFrame) -> dict:
    if not len(frame):
        return {}
    keys = frame[["prefix", "queue"]].drop_duplicates()
    if len(keys) == 1:
        return {tuple(keys.iloc[0]): frame}
    return {k: g for k, g in frame.groupby(["prefix", "queue"], sort=False, observed=True)}


# Up to this many jobs, the detectors' frame is made of plain NumPy columns (see ``compact``).
COMPACT_ROWS = 50_000


def compact(frame: pd.DataFrame) -> pd.DataFrame:
    """The same values in columns pandas handles as a few 2-D blocks: text as Python objects,
    nullable integers and booleans that hold no missing value as NumPy ones. Every column of
    the jobs table is otherwise a block of its own, and each selection of rows (a detector
    makes thousands: per queue, per state) takes them one by one -- about 1 ms whatever the
    rows, which is the whole cost of a diagnosis of a small snapshot. (Not for a million
    rows: Python strings for every text cell would cost more than they save.)"""
    to = {}
    for col, dtype in frame.dtypes.items():
        name = str(dtype)
        if name == "str" or isinstance(dtype, pd.StringDtype):
            to[col] = object
        elif name in ("Int64", "Int32", "Int16", "Int8", "boolean") and not frame[col].isna().any():
            to[col] = "bool" if name == "boolean" else "int64"
    out = frame.astype(to) if to else frame.copy()
    out._consolidate_inplace()
    return out


def _plain(s: pd.Series) -> pd.Series:
    """A categorical as plain strings, by taking from its few categories (5x quicker than
    astype on a million rows)."""
    if isinstance(s.dtype, pd.CategoricalDtype) and not (codes := s.cat.codes.to_numpy()).min(initial=0) < 0:
        return pd.Series(s.cat.categories.astype("str").take(codes), index=s.index)
    return s.astype("str")


class Context:
    """The snapshot prepared once for all detectors (plus the series and the worker logs,
    when given: detectors that need them report nothing without them)."""

    def __init__(self, snap, thresholds: Thresholds, series=None, logs: pd.DataFrame | None = None):
        self.snap = snap
        self.series = series
        self._logs = logs
        self.t = thresholds
        self.redis_wide: set[str] = set()  # ids of Redis-wide findings (set by the checklist)
        self.now: pd.Timestamp = snap.captured_at
        self.manifest = snap.manifest
        self.queues = snap.queues
        self.redis = snap.redis.iloc[0] if len(snap.redis) else pd.Series(dtype=object)

    @cached_property
    def jobs(self) -> pd.DataFrame:
        # Plain strings for the categoricals; the other columns are shared, not copied.
        jobs = self.snap.jobs
        jobs = jobs.assign(**{col: _plain(jobs[col]) for col in ("prefix", "queue", "state", "flavor")})
        return compact(jobs) if len(jobs) <= COMPACT_ROWS else jobs

    @cached_property
    def failed_fp(self) -> pd.Series:
        """Fingerprint of each job's failed reason (NA where none)."""
        return fingerprints(self.jobs["failed_reason"])

    @cached_property
    def logs(self) -> pd.DataFrame:
        """Worker log records joined to the snapshot's jobs (empty without logs)."""
        from ..logs import empty_logs, join_logs
        return join_logs(self._logs if self._logs is not None else empty_logs(), self.snap)

    @cached_property
    def payloads(self) -> pd.DataFrame:
        return self.snap.payloads

    @cached_property
    def _events_by_queue(self) -> dict:
        ev = self.snap.events
        if not len(ev):
            return {}
        ev = ev.astype({"prefix": "str", "queue": "str"})
        if len(ev) <= COMPACT_ROWS:
            ev = compact(ev)
        return {k: g for k, g in ev.groupby(["prefix", "queue"], sort=False)}

    def memo(self, key, make):
        """``make()`` once per context and ``key`` (a result several detectors read)."""
        cache = self.__dict__.setdefault("_memo", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def events_of(self, q) -> pd.DataFrame:
        """One queue's events-stream entries, in stream order (empty for Bull, or none read)."""
        g = self._events_by_queue.get(queue_key(q))
        return g if g is not None else self.snap.events.iloc[0:0]

    def family_bytes(self, q, families: list[str]) -> int | None:
        """Bytes of a queue's key families from the memory table (None: not measured)."""
        m = self.snap.memory
        if not len(m):
            return None
        sel = m[(m["prefix"] == q["prefix"]) & (m["queue"] == q["queue"]) & m["family"].isin(families)]
        return int(sel["bytes"].sum()) if len(sel) else None

    def redis_of(self, q=None) -> pd.Series:
        """The ``redis`` row of the node that holds queue ``q`` (a cluster has one row per
        master); the first row for a single node, an old snapshot, or ``q`` None."""
        r = self.snap.redis
        if q is not None and len(r) > 1 and "node" in r and "node" in q and isinstance(q["node"], str):
            mine = r[r["node"] == q["node"]]
            if len(mine):
                return mine.iloc[0]
        return self.redis

    def redis_nodes(self) -> list[tuple[str | None, pd.Series]]:
        """(node label or None for a single node, redis row) for every node read."""
        r = self.snap.redis
        if len(r) > 1 and "node" in r:
            return [(str(row["node"]), row) for _, row in r.iterrows()]
        return [(None, self.redis)]

    def memory_weight(self, nbytes: float | None, q=None) -> dict:
        """How much ``nbytes`` weighs in the Redis that holds queue ``q``: its share of
        maxmemory (when set), else of used_memory. ``heavy`` when that share reaches
        ``bloat_high_share`` (on the used_memory basis, only from ``bloat_high_min_bytes``
        on: a big share of a nearly empty Redis is not a danger)."""
        node = self.redis_of(q)
        limit, used = node.get("maxmemory"), node.get("used_memory")
        if nbytes is None or pd.isna(nbytes):
            return {"share": None, "of": None, "heavy": False}
        if pd.notna(limit) and limit:
            share = float(nbytes) / float(limit)
            return {"share": round(share, 3), "of": "maxmemory", "heavy": share >= self.t.bloat_high_share}
        if pd.notna(used) and used:
            share = float(nbytes) / float(used)
            return {"share": round(share, 3), "of": "used_memory",
                    "heavy": share >= self.t.bloat_high_share and nbytes >= self.t.bloat_high_min_bytes}
        return {"share": None, "of": None, "heavy": False}

    def by_queue(self, frame: pd.DataFrame):
        """(queue row, that queue's rows of frame) for every queue of the snapshot. The split
        of ``ctx.jobs`` is made once for all detectors (a million rows are not copied per
        detector), and a frame of one queue is not copied at all."""
        if frame is self.jobs:
            if "_jobs_by_queue" not in self.__dict__:
                self.__dict__["_jobs_by_queue"] = _split(frame)
            groups = self.__dict__["_jobs_by_queue"]
        else:
            groups = _split(frame)
        empty = None
        for q in self.queue_rows:
            g = groups.get((q["prefix"], q["queue"]))
            if g is None:
                g = empty = frame.iloc[0:0] if empty is None else empty
            yield q, g

    def queues_where(self, mask: pd.Series) -> set[tuple[str, str]]:
        """(prefix, queue) of the queues with a job where ``mask`` (over ``ctx.jobs``) holds, in
        one pass: a detector skips the other queues. A per-queue selection costs 1-3 ms however
        few the queue's jobs: seconds for hundreds of queues."""
        j = self.jobs
        return set(zip(j.loc[mask, "prefix"].astype(str), j.loc[mask, "queue"].astype(str)))

    def queues_hit(self, mask: pd.Series):
        """(queue row, that queue's jobs, its jobs where ``mask`` holds) for the queues with
        any: the condition is computed once over ``ctx.jobs``, not again per queue, and the
        other queues cost nothing."""
        mask = pd.Series(mask, index=self.jobs.index).fillna(False).astype(bool)
        some = self.queues_where(mask)
        for q, jq in self.by_queue(self.jobs):
            if queue_key(q) in some:
                yield q, jq, jq[mask.loc[jq.index]]

    def jobs_of(self, prefix, queue) -> pd.DataFrame:
        """One queue's rows of ``ctx.jobs`` (empty when it has none), from the split made once."""
        by_key = self.memo("jobs_by_key", lambda: {queue_key(q): g
                                                   for q, g in self.by_queue(self.jobs)})
        return by_key.get((str(prefix), str(queue)), self.jobs.iloc[0:0])

    @cached_property
    def queue_rows(self) -> list[pd.Series]:
        """The queues table's rows, made once (detectors walk them again and again)."""
        return [q for _, q in self.queues.iterrows()]

    def warned(self, text: str) -> bool:
        return any(text in w for w in self.manifest.get("warnings", []))

    @property
    def workers_known(self) -> bool:
        """CLIENT LIST was read (not refused by ACL, not cut short before it); on PostgreSQL,
        pg_stat_activity (BullMQ names its sessions there)."""
        if self.manifest.get("backend") == "postgres":
            return bool((self.manifest.get("postgres") or {}).get("sessions_read"))
        return self.manifest.get("commands", {}).get("CLIENT LIST", 0) > 0 and \
            not self.warned("CLIENT LIST refused") and \
            not any(u.get("command") == "CLIENT LIST" for u in self.manifest.get("unavailable") or [])

    @property
    def info_known(self) -> bool:
        return bool(self.redis.get("info_available", False))

    def finding(self, id: str, severity: str, title: str, q=None, jobs: pd.DataFrame | None = None,
                count: int | None = None, order: str | None = None, ascending: bool = True,
                evidence: dict | None = None, remediation: str = "") -> Finding:
        return Finding(
            id=id, severity=severity, title=title,
            count=int(count if count is not None else (len(jobs) if jobs is not None else 0)),
            prefix=None if q is None or q["prefix"] is None else str(q["prefix"]),  # None: named by logs only
            queue=None if q is None else str(q["queue"]),
            job_ids=sample_ids(jobs, order, ascending) if jobs is not None else [],
            evidence=evidence or {}, remediation=remediation,
            members=jobs.index.to_numpy() if jobs is not None else None)


def _load_all() -> None:
    from . import adds, config, connections, memory, payloads, postgres, retries, schedulers, stuck, trends, worker_logs  # noqa: F401  (registration)


_load_all()
