"""The readers: what a Redis capture reads for each queue, whatever the topology.

A ``Capture`` takes the steps every capture takes (``steps.py``: connect, read_server,
find_queues, read_queue for each, read_workers, close, assemble). It is fed by a source
(``sources.py``: one node, a cluster's masters, a replica, a private server on an RDB) and
says only what to read: every command goes through ``Commands`` (``commands.py``), which
sends it to the node that serves its key, in bounded pipelines, through the read-only gate,
following a cluster's redirects. Impact on the inspected Redis is kept small by design: SCAN
(never KEYS), lists and sorted sets read in windows of ``WINDOW`` entries, pipelines of at
most ``PIPELINE`` commands, no Lua.

The capture never aborts half-way on bad data: odd keys, wrong types, malformed hashes
and jobs vanishing mid-read are recorded (manifest ``warnings`` / counts) and the rest is
read. A command the server refuses (ACL, renamed, disabled) is recorded in the manifest's
``unavailable`` with what it costs the diagnosis.
"""
from __future__ import annotations

import base64
import collections
import contextlib
import gc
import random
import time
from dataclasses import dataclass, field
from typing import Any

import hiredis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import redis

from ... import keys as K
from ..._version import __version__
from ...decode import JOB_COLUMNS, decode_jobs, empty_jobs, empty_payloads
from ...redact import Redaction
from ...safety import CommandLedger, redact_url
from ...clock import Clock, phase
from ...snapshot import SCHEMA_VERSION, Snapshot, new_spool, utcnow
from . import helper as helper_mod
from ..progress import Progress, Stopped, Throttle, duration_text
from ...stop import finishing
from ..steps import Log, Reader, spooled_snapshot
from .commands import PIPELINE, Commands
from .sources import Connect, Node, Source, key_slot, open_source
from ..tables import (JOB_STATES, QUEUE_COLUMNS, STATE_KEYS, STATES, Spool, as_int, as_json, empty_events, event_texts,
                     empty_clients, empty_dedup, empty_memory, empty_metrics, empty_schedulers, empty_workers,
                     scheduler_row, shape)

WINDOW = 1000          # ids per LRANGE/ZRANGE/XRANGE window (~0.3 ms of Redis time each)
SCAN_COUNT = 1000
CHUNK = 20000         # jobs decoded (and payloads spooled) at a time, at most ...
CHUNK_BYTES = 16 << 20  # ... and about this many bytes of replies (megabyte payloads: a few dozen jobs)
BATCH_BYTES = 1 << 20   # replies per round trip: a batch keeps Redis busy ~2 ms, and it buffers ~2 MB for us
RECHECK_LIMIT = 500    # ids per queue whose absence is double-checked (LPOS/ZSCORE)
DEDUP_LIMIT = 10_000   # deduplication keys read per queue (GET + PTTL each)
SCHEDULER_LIMIT = 10_000  # schedulers / repeatables read per queue (HGETALL each)
LOG_LINES = 20         # newest job log lines kept per job (payloads.logs)
SMALL_QUEUE = 1000     # a queue of at most this many jobs is decoded together with other small ones
EVENT_ROWS = 10_000    # events entries made into one table at most (and about BATCH_BYTES / 2 of them)
HELPER_GRACE = 1.0     # seconds a capture cut short waits for the chunks its helper is finishing
LOST = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)
INFO_SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication", "cluster", "keyspace")
# What is lost when one INFO section is refused (the others read).
INFO_SECTION_LOSS = {
    "memory": "used_memory, maxmemory and maxmemory-policy unknown unless CONFIG GET gives them: memory-pressure, "
              "eviction-policy and redis-memory-growth may not be judged",
    "stats": "evicted and expired key counters unknown: evictions are not counted",
    "clients": "connected and blocked clients unknown",
    "server": "Redis version and uptime unknown",
    "keyspace": "key counts per database unknown",
    "replication": "role and replication offsets unknown",
    "persistence": "persistence settings unknown",
    "cluster": "cluster mode unknown (read as one node unless --cluster)",
}
def decode_replies(part: pd.DataFrame, replies: list, redact: Redaction) -> tuple[pd.DataFrame, pd.DataFrame]:
    """HGETALL replies of one chunk (``part``: prefix, queue, job_id, state, score, flavor) as
    the jobs and payloads rows; an id listed without a hash is a ``missing-hash`` row (or
    ``vanished``, for an orphan that went away). Used by the capture and its helper alike."""
    replies = [r if isinstance(r, dict) else {} for r in replies]
    present = np.fromiter((bool(r) for r in replies), dtype=bool, count=len(replies))
    jobs, payloads = decode_jobs(part[present], [r for r, p in zip(replies, present) if p], redact=redact)
    gone = part[~present]
    if len(gone):
        # Listed but no hash: missing-hash (verified below) or removed since SCAN.
        g = empty_jobs().reindex(range(len(gone))).astype(JOB_COLUMNS)
        for c in ("prefix", "queue", "job_id", "state", "flavor"):
            g[c] = gone[c].astype("str").to_numpy()
        g["state"] = np.where(gone["state"].to_numpy() == "orphan", "vanished", "missing-hash")
        jobs = pd.concat([jobs, g], ignore_index=True)
    return jobs, payloads


def join_extras(jobs: pd.DataFrame, x, dtypes: dict) -> pd.DataFrame:
    """Join what is known per job id besides its hash (lock, logs, stalled set, memory: an
    ``_Extras``) and give the jobs table its dtypes."""
    jid = jobs["job_id"]
    if x.locks is not None:
        token, ttl = x.locks
        jobs["lock_token"] = jid.map(token).astype("str")
        jobs["lock_present"] = jobs["lock_token"].notna().astype("boolean")
        jobs["lock_ttl_ms"] = jid.map(ttl).astype("Int64").where(jobs["lock_present"]) \
            .where(lambda t: t >= 0)
    if x.logs is not None:
        jobs["log_count"] = jid.map(x.logs).fillna(0).astype("Int32")
    if x.job_mem is not None:
        jobs["memory_bytes"] = jid.map(x.job_mem).astype("Int64")
    jobs["in_stalled_set"] = jid.isin(x.stalled).astype("boolean")
    jobs = jobs.reset_index(drop=True)
    for c, t in dtypes.items():   # (column by column, only those to change: astype of a dict concats every column, ~15 ms a chunk)
        if jobs[c].dtype != t:
            jobs[c] = jobs[c].astype(t)
    return jobs


# States whose rows a capture re-checks against Redis before they are written.
RECHECKED = ("missing-hash", "orphan", "vanished")


def ready_chunk(part: pd.DataFrame, replies: list, redact: Redaction, extras, dtypes: dict,
                log_lines: pd.Series | None, schemas: tuple[pa.Schema, pa.Schema]):
    """One chunk decoded and joined into the Arrow tables the spool takes: ("ready", jobs,
    payloads). A chunk with rows to re-check against Redis (an id without a hash, a hash no
    state lists) comes back as ("raw", jobs, payloads) DataFrames, for the capture's own path."""
    jobs, payloads = decode_replies(part, replies, redact)
    if jobs["state"].isin(RECHECKED).any():
        return "raw", jobs, payloads
    if log_lines is not None and len(payloads):
        payloads["logs"] = payloads["job_id"].map(log_lines).astype("str")
    jobs = join_extras(jobs, extras, dtypes)
    # (nthreads=1: Arrow's pool of threads per call costs more than it saves on a chunk -- 10 -> 6 ms)
    return ("ready", pa.Table.from_pandas(jobs, schema=schemas[0], preserve_index=False, nthreads=1),
            pa.Table.from_pandas(payloads, schema=schemas[1], preserve_index=False, nthreads=1))


def _floats(texts: list[str] | None) -> np.ndarray | None:
    """Scores as Redis writes them ("1712345678901", "inf", "-inf") as floats."""
    if texts is None:
        return None
    try:
        return pc.cast(pa.array(texts, pa.string()), pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(dtype="float64")


def _by_queue(frame: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """A decoded chunk of several queues, split by queue in one pass (rows in their order)."""
    if not len(frame):
        return {}
    return {(str(p), str(q)): g.reset_index(drop=True)
            for (p, q), g in frame.groupby([frame["prefix"].astype("str"), frame["queue"].astype("str")], sort=False)}


def _mean_bytes(measured: pd.Series | None) -> float | None:
    """Mean MEMORY USAGE of the job hashes measured (None when none was)."""
    if measured is None or not len(measured):
        return None
    return max(float(measured.mean()), 64.0)


@dataclass
class _Extras:
    """What a queue's job chunks are joined with when finished."""
    locks: tuple[pd.Series, pd.Series] | None
    logs: pd.Series | None
    stalled: set
    job_mem: pd.Series | None
    budget: list[int]


@dataclass
class _Queue:
    prefix: str
    name: str
    families: set[str] = field(default_factory=set)
    flavor: str = "bull"
    evidence: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    node: str | None = None    # the node that holds it (host:port)
    slot: int | None = None    # its keys' hash slot, on a cluster

    @property
    def base(self) -> str:
        return f"{self.prefix}:{self.name}:"


@contextlib.contextmanager
def _no_gc():
    """The garbage collector off while a capture reads: millions of short-lived reply
    objects would make it walk every live object again and again (~15 % of a capture's
    time). Nothing a capture builds needs it; it is back on as soon as the capture ends."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def server_kind(info: dict) -> tuple[str | None, str | None]:
    """(redis | valkey | dragonfly, its version) from INFO, as BullMQ classifies a server:
    Dragonfly and Valkey by their own version fields or server names, else Redis."""
    if not info:
        return None, None
    server = str(info.get("server", "")).lower()
    if "dragonfly_version" in info or server == "dragonfly":
        return "dragonfly", str(info.get("dragonfly_version") or info.get("redis_version") or "") or None
    if "valkey_version" in info or server == "valkey" or str(info.get("server_name", "")).lower() == "valkey":
        return "valkey", str(info.get("valkey_version") or info.get("redis_version") or "") or None
    return "redis", str(info.get("redis_version", "")) or None


class Capture(Reader):
    """One Redis capture: the readers, fed by a source (``connect`` opens it)."""

    LOST = LOST
    server_name = "Redis"

    def __init__(self, url: str | Connect, prefixes: list[str], queues: list[str] | None, *,
                 redact: "bool | Redaction", memory_samples: int, progress: Progress,
                 socket_timeout: float = 30.0, max_ops_per_sec: float | None = None):
        super().__init__()
        self.conn = url if isinstance(url, Connect) else Connect(url, socket_timeout=socket_timeout)
        self.url = self.conn.url
        self.prefixes = prefixes
        self.only = list(queues) if queues else None
        self.redact = Redaction.of(redact)
        self.memory_samples = memory_samples
        self.progress = progress
        self.throttle = Throttle(max_ops_per_sec) if max_ops_per_sec else None
        progress.throttle = self.throttle
        self.ledger = CommandLedger()
        self.log = Log()
        self.warnings, self.unavailable = self.log.warnings, self.log.unavailable
        self.counts: dict[str, int] = {"foreign_keys": 0, "vanished_jobs": 0, "state_conflicts": 0,
                                       "markers": 0, "undecodable_keys": 0, "redirects": 0}
        self.cmd = Commands(self.log, self.counts, throttle=self.throttle, stopped=lambda: self.stop_requested,
                            acl_hint=f"ACL '+@read ~{prefixes[0]}:*'")
        self.foreign_samples: list[str] = []
        self.tables: dict[str, pd.DataFrame] = {}   # every key under each prefix, classified (find_queues)
        self.queues: list[_Queue] = []
        self.state_counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.jobs_rows = 0
        self._jobs_writer: Spool | None = None
        self.job_dtypes = JOB_COLUMNS | {"in_stalled_set": "boolean"}
        self._events_writer: Spool | None = None
        self.metrics: list[dict] = []
        self.memory: list[dict] = []
        self.workers = pd.DataFrame()
        self.clients = pd.DataFrame()  # every connection CLIENT LIST showed (connection-leak)
        self.dedup: list[dict] = []    # deduplication keys (swallowed-adds)
        self.schedulers: list[dict] = []  # job schedulers and repeatables
        self.redis_rows: list[dict[str, Any]] = []
        self.src: Source | None = None
        self.rdb: dict | None = None  # set by capture(rdb=...): what was loaded
        self._memory_probed: set[str | None] = set()
        self._memory_of: dict[tuple[str, str], list[dict]] = {}   # self.memory's rows by queue
        self._keys_by_queue: dict[int, dict] = {}   # a classified table split by queue, once
        self.spool = new_spool()
        self.payload_file = self.spool / "payloads.parquet"
        self.jobs_file = self.spool / "jobs.parquet"
        self.events_file = self.spool / "events.parquet"
        self._payload_writer = Spool(self.payload_file,
                                     pa.Schema.from_pandas(empty_payloads(), preserve_index=False), CHUNK)
        self.started = utcnow()
        self.clock = Clock()
        self.helper: helper_mod.Helper | None = None   # a second process for job hashes (helper.py)
        self.helper_refused = False                     # (it could not be started: not tried again)
        # Small queues' job hashes, read and waiting to be decoded together (a decode costs
        # ~30 ms however few its jobs: 500 queues of 4 jobs took 40 s one queue at a time).
        self._small: list[tuple] = []
        self._small_rows = self._small_bytes = 0
        tls = self.conn.describe_tls()
        if tls and tls.get("warning"):
            self.log.warn(tls["warning"])

    # ---- steps ----------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the source: reach the node(s), check the credentials, learn the topology."""
        self.src = self.cmd.src = open_source(self.conn, self.ledger, self.log.warn)
        for n in self.src.down:
            self.complete = False
            self.reason = f"cluster node {n.addr} could not be reached; its queues were not read"
            self.log.warn(f"cluster node {n.addr} is down ({n.error}); its slots "
                          f"({sum(b - a + 1 for a, b in n.slots):,}) were not read")
        if self.src.workers_note:
            self.cmd.unavailable("CLIENT LIST", None, self.src.workers_note)
        if self.rdb is not None:  # a private server on a backup: its config and clients are not the incident's
            self.src.mode = "rdb"
            self.src.nodes[0].role = "rdb"
            self.src.workers_nodes = []
            self.cmd.unavailable("CLIENT LIST", None, "an RDB backup holds no client connections")
            self.cmd.unavailable("CONFIG GET", None, "an RDB backup holds no configuration",
                                 "maxmemory, maxmemory-policy and the eviction counters of the server that wrote "
                                 "the dump are unknown: eviction-policy and memory-pressure are not judged")

    def read_server(self) -> None:
        """Each node's row of the ``redis`` table."""
        for node in self.src.nodes:
            self.redis_rows.append(self._node_info(node))

    def find_queues(self) -> list["_Queue"]:
        """The queues under every prefix (SCAN, every key classified); then, knowing how much
        there is to read, the throttle's estimate and the helper process."""
        if self.rdb is not None:
            self._rdb_keyspace()
        for p in self.prefixes:
            self.tables[p] = self.discover(p)
        self.expect_commands(self.tables)
        self.start_helper(self.tables)
        return self.queues

    def read_queue(self, q: "_Queue", classified: pd.DataFrame | None = None) -> None:
        """One queue, from its classified keys. A cluster master lost while it is read costs
        its own queues only: they are marked, the others are read."""
        if self.lost(q.node):
            return
        try:
            self._read_queue(q, self.tables[q.prefix] if classified is None else classified)
        except LOST as e:
            if not self.src.clustered:
                raise
            self.lose_node(q.node, e, q)

    def read_workers(self) -> None:
        """CLIENT LIST where the workers connect (every master of a cluster; the primary of
        a replica), each row tagged with the node that listed it."""
        self.flush_small()
        self._read_clients()

    def close(self) -> None:
        # Cut short (a stop, Redis lost): the small queues' jobs already read are kept,
        # decoded without asking Redis again (their absences stay unverified).
        with contextlib.suppress(*LOST, Stopped):
            self.flush_small(offline=True)
        self.close_helper()
        if self.src is not None:
            self.src.close()

    def queue_label(self, q: "_Queue") -> str:
        return q.name

    @contextlib.contextmanager
    def reading(self):
        with _no_gc(), self.clock.running():
            yield

    def _rdb_keyspace(self) -> None:
        """Which databases the dump holds keys in (a dump carries all of them)."""
        info = self.cmd.one("INFO", "keyspace", essential=False, node=self.src.nodes[0]) or {}
        keyspace = {k: v.get("keys") for k, v in info.items() if k.startswith("db") and isinstance(v, dict)}
        self.rdb = dict(self.rdb or {}, keyspace=keyspace)
        db = self.src.params.get("db", 0) or 0
        if not keyspace.get(f"db{db}") and keyspace:
            others = ", ".join(f"{k[2:]} ({n:,} keys)" for k, n in keyspace.items())
            self.log.warn(f"database {db} of the dump is empty; it holds keys in database {others}: use --db N")

    def _info(self, node: Node) -> dict:
        """INFO all; where it is refused, section by section (a managed service or an ACL may
        allow some sections only). What is refused is recorded with what it costs."""
        first = self.cmd.raw(node, ("INFO", "all"))
        if not isinstance(first, hiredis.ReplyError):
            return shape(("INFO",), first)
        merged: dict = {}
        missing = []
        for section in INFO_SECTIONS:
            part = self.cmd.raw(node, ("INFO", section))
            if isinstance(part, hiredis.ReplyError):
                missing.append(section)
            else:
                merged.update(shape(("INFO",), part))
        why = f"refused ({first})" if str(first).startswith("NOPERM") else f"not available ({first})"
        if not merged:
            self.cmd.unavailable("INFO", node, why)
        else:
            for section in missing:
                self.cmd.unavailable(f"INFO {section}", node, why, INFO_SECTION_LOSS.get(section))
        return merged

    def _node_info(self, node: Node) -> dict:
        """The node's row of the ``redis`` table, from INFO and CONFIG GET."""
        info = self._info(node)
        cfg = self.cmd.one("CONFIG", "GET", "maxmemory*", essential=False, node=node) or {}
        db = self.src.params.get("db", 0) or 0
        ks = info.get(f"db{db}", {}) if isinstance(info.get(f"db{db}"), dict) else {}
        maxmemory = cfg.get("maxmemory", info.get("maxmemory"))
        rep = node.replication or {}
        server_type, server_version = server_kind(info)
        policy = cfg.get("maxmemory-policy", info.get("maxmemory_policy"))
        if server_type == "dragonfly" and (info.get("cache_mode") == "cache" or policy == "eviction"):
            policy = "dragonfly cache_mode"  # evicts any key under memory pressure, as allkeys-lru does
        maxclients = info.get("maxclients")  # INFO clients has it from Redis 7 (and Valkey)
        if maxclients is None and cfg:
            maxclients = (self.cmd.one("CONFIG", "GET", "maxclients", essential=False, node=node) or {}).get("maxclients")
        row = {
            "captured_at": self.started,
            "redis_version": str(info.get("redis_version", "")) or None,
            "server_type": server_type, "server_version": server_version,
            "redis_mode": info.get("redis_mode"),
            "used_memory": info.get("used_memory"),
            "used_memory_peak": info.get("used_memory_peak"),
            "used_memory_rss": info.get("used_memory_rss"),
            "maxmemory": int(maxmemory) if maxmemory not in (None, "") else None,
            "maxmemory_policy": policy,
            "mem_fragmentation_ratio": info.get("mem_fragmentation_ratio"),
            "evicted_keys": info.get("evicted_keys"),
            "expired_keys": info.get("expired_keys"),
            "rejected_connections": info.get("rejected_connections"),
            "connected_clients": info.get("connected_clients"),
            "blocked_clients": info.get("blocked_clients"),
            "maxclients": as_int(maxclients),
            "instantaneous_ops_per_sec": info.get("instantaneous_ops_per_sec"),
            "total_commands_processed": info.get("total_commands_processed"),
            "uptime_in_seconds": info.get("uptime_in_seconds"),
            "db": db,
            "db_keys": ks.get("keys"),
            "db_expires": ks.get("expires"),
            "aof_enabled": info.get("aof_enabled"),
            "info_available": bool(info),
            "config_available": bool(cfg),
            "node": node.addr,
            "role": node.role,
            "cluster_node_id": node.node_id,
            "slots": sum(b - a + 1 for a, b in node.slots) if node.slots else None,
            "replication_lag_bytes": rep.get("lag_bytes"),
            "master_last_io_seconds_ago": rep.get("master_last_io_seconds_ago"),
        }
        if self.rdb is not None:  # the private server's own settings say nothing of the incident's
            row.update(maxmemory=None, maxmemory_policy=None, evicted_keys=None, expired_keys=None,
                       rejected_connections=None, connected_clients=None, blocked_clients=None, maxclients=None,
                       instantaneous_ops_per_sec=None, total_commands_processed=None, uptime_in_seconds=None,
                       used_memory_peak=None, used_memory_rss=None, mem_fragmentation_ratio=None,
                       config_available=False)
            return row
        if not cfg and info.get("maxmemory_policy") is None:
            self.log.warn(f"maxmemory-policy unknown on {node.addr} (neither CONFIG GET nor INFO gave it): "
                       "eviction-policy and memory-pressure are not judged")
        return row

    def discover(self, prefix: str) -> pd.DataFrame:
        """SCAN the prefix, find the queues, classify every key."""
        with phase("scan"):
            return self._discover(prefix)

    def _discover(self, prefix: str) -> pd.DataFrame:
        if self.only:
            patterns = [K.glob_escape(f"{prefix}:{q}") + ":*" for q in self.only]
        else:
            patterns = [K.glob_escape(prefix) + ":*"]
        # Key names go into Arrow arrays every 100k keys: millions of Python strings
        # would cost several times the memory.
        arrays: list[pa.Array] = []
        buf: list[str] = []
        seen = 0
        early = self.helper is None and not self.tables   # (the first prefix's first reply: see start_helper)
        for node, pattern in [(n, p) for n in list(self.src.nodes) for p in patterns]:
            if self.lost(node.addr):
                continue
            cursor = 0
            while True:
                try:
                    cursor, batch = self.cmd.one("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT, node=node)
                except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                    if not self.src.clustered:
                        raise
                    self.lose_node(node.addr, e)
                    break
                buf.extend(batch)
                seen += len(batch)
                if early:
                    early = False
                    self.start_helper(None, share=len(batch) / SCAN_COUNT)
                if len(buf) >= 100_000:
                    arrays.append(pa.array(buf, pa.large_string()))
                    buf = []
                self.progress.update(f"scanning {prefix}: {seen:,} keys")
                if int(cursor) == 0:
                    break
        arrays.append(pa.array(buf, pa.large_string()))
        del buf
        keys = pc.unique(pa.chunked_array(arrays, pa.large_string()))  # SCAN may repeat a key
        del arrays
        if self.src.down:  # keys a lost master listed before it went away: not readable now
            keep = [not self.lost(self.src.node_of(k).addr) for k in keys.to_pylist()]
            keys = keys.filter(pa.array(keep, pa.bool_()))
        bad = pc.fill_null(pc.match_substring(keys, "\ufffd"), False)
        n_bad = pc.sum(bad).as_py() or 0
        if n_bad:
            self.counts["undecodable_keys"] += n_bad
            self.log.warn(f"{n_bad} keys under {prefix} are not UTF-8 and were skipped")
            keys = keys.filter(pc.invert(bad))
        candidates = K.queue_candidates(keys, prefix)
        if self.only:
            candidates = {q: s for q, s in candidates.items() if q in self.only}
        # Confirm candidates by the types of their anchor keys.
        checks = [(q, s) for q, sfx in candidates.items() for s in sfx]
        types = self.cmd.results([("TYPE", f"{prefix}:{q}:{s}") for q, s in checks])
        confirmed: dict[str, set[str]] = {}
        for (q, s), t in zip(checks, types):
            if t == K.QUEUE_KEY_TYPES[s]:
                confirmed.setdefault(q, set()).add(s)
            elif t not in (None, "none") and not any(q.startswith(c + ":") for c in candidates):
                # (keys nested under another queue, such as <queue>:metrics:completed or
                # a flow job's <id>:failed hash, are that queue's; no warning for them)
                self.log.warn(f"{prefix}:{q}:{s} is a {t}, not a {K.QUEUE_KEY_TYPES[s]}; not taken as queue data")
        if self.only:
            for q in self.only:
                if q not in confirmed:
                    self.log.warn(f"queue {q!r} not found under prefix {prefix!r}")
        table = K.classify(keys, prefix, sorted(confirmed))
        foreign = table[table["family"] == "foreign"]
        self.counts["foreign_keys"] += len(foreign)
        self.foreign_samples.extend(foreign["key"].head(20 - len(self.foreign_samples)).tolist())
        for name in sorted(confirmed):
            fams = set(table.loc[table["queue"] == name, "family"].unique())
            q = _Queue(prefix, name, families=fams | confirmed[name])
            home = self.src.node_of(q.base + "id")
            q.node = home.addr
            if self.src.clustered:
                q.slot = key_slot((q.base + "id").encode("utf-8", "surrogateescape"))
            self.queues.append(q)
        self.set_job_dtypes()
        return table

    def expect_commands(self, tables: dict[str, pd.DataFrame]) -> None:
        """Under ``--max-ops-per-sec``: estimate the commands still to send (one HGETALL per
        job hash, GET+PTTL per lock, LLEN+LRANGE per log, the id windows, the memory
        samples) and say how long the capture will take."""
        if self.throttle is None or not self.queues:
            return
        n = 0
        for t in tables.values():
            fam = t["family"].astype("str").value_counts()
            jobs = int(fam.get("job", 0))
            n += jobs + jobs // WINDOW + 2 * int(fam.get("lock", 0)) + 2 * int(fam.get("logs", 0))
            n += int(sum(min(int(c), self.memory_samples) for c in fam.to_numpy()))
        n += 40 * len(self.queues)
        self.throttle.expected = self.throttle.sent + n
        self.progress.note(f"throttled to {self.throttle.rate:,.0f} commands/s (--max-ops-per-sec): about "
                           f"{n:,} commands to send, about {duration_text(n / self.throttle.rate)}")

    def _read_window(self, kind: str, key: str, total: int) -> tuple[list[str], np.ndarray | None]:
        """All members of a list/zset (and a zset's scores), in windows of WINDOW: five
        windows a round trip, two round trips in flight, up to the first window that is not
        full (the key may have shrunk while it was read). A zset's replies are taken flat and
        its scores parsed at the end, in Arrow (a pair and a float object per member cost
        0.8 s a million)."""
        members: list[str] = []
        scores: list[str] | None = None if kind == "list" else []
        per_trip, group = 5, 100   # windows a round trip, windows a call (bounds what is held at once)
        windows = -(-max(total, 1) // (per_trip * WINDOW)) * per_trip
        full = WINDOW if scores is None else 2 * WINDOW   # (a zset's reply: member, score, member, ...)
        for first in range(0, windows, group):
            cmds = []
            for w in range(first, min(first + group, windows)):
                a = w * WINDOW
                if kind == "list":
                    cmds.append(("LRANGE", key, a, a + WINDOW - 1))
                else:
                    cmds.append(("ZRANGE", key, a, a + WINDOW - 1, "WITHSCORES"))
            for r in self.cmd.results(cmds, step=per_trip, raw=True):
                r = r or []
                if scores is None:
                    members.extend(r)
                else:
                    members.extend(r[0::2])
                    scores.extend(r[1::2])
                if len(r) < full:
                    return members, _floats(scores)
        return members, _floats(scores)

    def _keys_of(self, q: _Queue, classified: pd.DataFrame) -> pd.DataFrame:
        """The queue's rows of the classified keys (the table split by queue once: a filter of
        every key per queue is quadratic in queues)."""
        split = self._keys_by_queue.get(id(classified))
        if split is None:
            split = self._keys_by_queue[id(classified)] = {
                str(k): g for k, g in classified.groupby("queue", sort=False, observed=True)}   # (no NA key)
        return split.get(q.name, classified.iloc[0:0])

    def _read_queue(self, q: _Queue, classified: pd.DataFrame) -> None:
        base = q.base
        meta = self.cmd.one("HGETALL", base + "meta") if "meta" in q.families else {}
        q.meta = meta or {}
        # Flavor: BullMQ leaves streams, meta opts, markers and prioritized sets behind.
        ev = []
        if str(q.meta.get("version", "")).startswith("bullmq"):
            ev.append("meta.version")
        if "opts.maxLenEvents" in q.meta:
            ev.append("meta.opts.maxLenEvents")
        for fam in ("events", "marker", "prioritized", "waiting-children", "pc"):
            if fam in q.families:
                ev.append(f"{fam} key")
        q.flavor = "bullmq" if ev else "bull"
        q.evidence = ev or (["meta-paused key"] if "meta-paused" in q.families else ["no BullMQ structures"])

        lengths = self.cmd.results(
            [("LLEN" if kind == "list" else "ZCARD", base + sfx) for sfx, kind, _ in STATE_KEYS]
            + [("SCARD", base + "stalled"), ("ZCARD", base + "priority"), ("XLEN", base + "events"),
               ("GET", base + "id"), ("PTTL", base + "limiter"), ("GET", base + "limiter"),
               ("ZCARD", base + "repeat"), ("GET", base + "meta-paused"), ("PTTL", base + "stalled-check")],
            essential=True)
        state_len = dict(zip(STATES, lengths[:len(STATE_KEYS)]))
        stalled_n, priority_n, events_n, id_counter, limiter_ttl, limiter_val, repeat_n, meta_paused, check_ttl = \
            lengths[len(STATE_KEYS):]

        q.row = {
            "stalled_set": int(stalled_n or 0), "priority_zset": int(priority_n or 0),
            "events_length": int(events_n or 0), "id_counter": as_int(id_counter),
            "limiter_ttl_ms": as_int(limiter_ttl) if as_int(limiter_ttl) and as_int(limiter_ttl) > 0 else None,
            "limiter_value": as_int(limiter_val), "repeat_count": int(repeat_n or 0),
            "markers": 0, "meta_paused_key": meta_paused is not None,
            # a running worker's stalled checker sets this key for stalledInterval each time it
            # runs: absent (None) means no checker ran for that long
            "stalled_check_ttl_ms": as_int(check_ttl) if as_int(check_ttl) is not None and as_int(check_ttl) >= 0
            else None,
        }
        rows = []
        for sfx, kind, state in STATE_KEYS:
            if sfx not in q.families:
                continue
            members, scores = self._read_window(kind, base + sfx, int(state_len.get(state) or 0))
            if not members:
                continue
            rows.append(pd.DataFrame({
                "job_id": pd.Series(members, dtype=object),
                "score": np.full(len(members), np.nan) if scores is None else np.array(scores, dtype="float64"),
                "state": state}))
            self.progress.update(f"{q.name}: reading {state} ids")
        ids = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
            {"job_id": pd.Series(dtype="str"), "score": pd.Series(dtype="float64"),
             "state": pd.Series(dtype="str")})
        rows = members = scores = None   # (not held while the job hashes are read)
        ids["job_id"] = ids["job_id"].astype("str")
        markers = 0
        if q.flavor == "bullmq" and len(ids):
            mk = K.is_marker(ids["job_id"]) & ids["state"].isin(["wait", "paused"]).to_numpy()
            markers = int(mk.sum())
            ids = ids[~mk]
        self.counts["markers"] += markers
        q.row["markers"] = markers
        stalled = set()
        if stalled_n:
            cursor = 0
            while True:
                r = self.cmd.one("SSCAN", base + "stalled", cursor, "COUNT", WINDOW, essential=False)
                if not r:
                    break
                cursor, members = r
                stalled.update(members)
                if int(cursor) == 0:
                    break

        # An id listed by two states keeps the first (a job that moved while they were read
        # one after the other); job hashes that no state lists are orphans (after a recheck).
        # One hashing pass over both (millions of ids), in Arrow: no Python object per id.
        mine = self._keys_of(q, classified)
        hashes = mine.loc[mine["family"] == "job", "job_id"]
        enc = pc.dictionary_encode(pa.concat_arrays([K.arrow_text(ids["job_id"]), K.arrow_text(hashes)]),
                                   null_encoding="encode")
        codes = enc.indices.to_numpy(zero_copy_only=False)
        listed, hashed = codes[:len(ids)], codes[len(ids):]
        first = np.zeros(len(listed), dtype=bool)
        first[np.unique(listed, return_index=True)[1]] = True
        self.counts["state_conflicts"] += int(len(listed) - first.sum())
        ids = ids[first]
        present = np.zeros(len(enc.dictionary), dtype=bool)
        present[listed] = True
        orphan_ids = hashes[~present[hashed]]
        del enc, codes, listed, hashed, first, present   # (not held while the job hashes are read)
        ids = pd.concat([ids, pd.DataFrame({"job_id": orphan_ids.astype("str"), "score": np.nan,
                                            "state": "orphan"})], ignore_index=True)
        active = ids.loc[ids["state"] == "active", "job_id"]
        locks, logs = self._locks_and_logs(q, mine, active)
        job_mem = self._memory(q, mine)
        extras = _Extras(locks, logs, stalled, job_mem, [RECHECK_LIMIT])
        # (read while the helper starts on the job hashes, if it shares them)
        events = [lambda: self.read_events(q, int(events_n or 0))]
        self._read_jobs(q, ids, extras, meanwhile=events)
        for read in events:
            read()
        self.read_metrics(q)
        self.read_dedup(q, mine)
        self.read_schedulers(q, mine)

    def _read_jobs(self, q: _Queue, ids: pd.DataFrame, extras: "_Extras", meanwhile: list | None = None) -> None:
        """The job hashes, chunk by chunk: at most one chunk's replies are in memory, and each
        decoded chunk goes straight to the spool file. A chunk holds at most CHUNK jobs and about
        CHUNK_BYTES of replies, and a round trip about BATCH_BYTES: sized first from MEMORY USAGE
        of the queue's job hashes, then from the bytes each chunk really took. A big queue of
        small jobs is shared with the helper process (``_read_jobs_shared``): a thread would not
        help, parsing replies and decoding both need the GIL. Redis works while we parse: two
        pipelined batches are in flight."""
        base = q.base
        per_job = _mean_bytes(extras.job_mem)
        if not len(ids):
            return
        small = len(ids) <= SMALL_QUEUE and (per_job is None or per_job * len(ids) <= CHUNK_BYTES)
        if not small:
            self.flush_small()   # (what was read before is written before: queues stay in order)
        if (self.helper is not None and self.helper.broken is None and len(ids) >= 2 * helper_mod.CHUNK_ROWS
                and per_job is not None and per_job <= helper_mod.MAX_JOB_BYTES):
            return self._read_jobs_shared(q, ids, extras, per_job, meanwhile)
        i, n = 0, len(ids)
        while i < n:
            # One chunk, fetched in steps until it holds CHUNK jobs or CHUNK_BYTES of replies:
            # sizes vary from job to job, so the bound is kept by measuring, not by guessing.
            start, replies, got = i, [], 0
            while i < n and len(replies) < CHUNK and got < CHUNK_BYTES:
                if per_job is None:  # nothing measured yet: a small first step tells
                    step, take = 16, 64
                else:
                    step = int(min(PIPELINE, max(1, BATCH_BYTES // per_job)))
                    take = int(min(CHUNK - len(replies), max(step, (CHUNK_BYTES - got) // per_job), 8 * step))
                    take = CHUNK - len(replies) if per_job * CHUNK <= CHUNK_BYTES else take  # small jobs: one go
                take = min(take, n - i)
                before = self._received()
                replies += self.cmd.results([("HGETALL", base + j) for j in ids["job_id"].iloc[i:i + take].tolist()],
                                         step=step)
                took = self._received() - before
                got += took
                per_job = max(took / take, 64.0)
                i += take
            part = ids.iloc[start:i].reset_index(drop=True).assign(prefix=q.prefix, queue=q.name, flavor=q.flavor)
            if small and start == 0 and i >= n:   # the whole queue in one go: decoded with others
                self._small.append((q, part, replies, extras, got, getattr(self, "_log_lines", None)))
                self._small_rows += len(part)
                self._small_bytes += got
                if self._small_rows >= CHUNK or self._small_bytes >= CHUNK_BYTES:
                    self.flush_small()
            else:
                self.flush_small()   # (a queue bigger than it looked: the small ones read before go first)
                self._decode_chunk(q, part, replies, extras, got)

    def flush_small(self, offline: bool = False) -> None:
        """Decode the small queues read so far in one go, then write each queue's rows as
        its own chunk (re-checks, joins, spool). ``offline``: Redis is gone or a stop was
        asked: nothing is re-checked."""
        if not self._small:
            return
        items = self._small
        with phase("decode"):
            parts = pd.concat([it[1] for it in items], ignore_index=True)
            jobs, payloads = decode_replies(parts, [r for it in items for r in it[2]], self.redact)
            jobs_of, payloads_of = _by_queue(jobs), _by_queue(payloads)
        self._small, self._small_rows, self._small_bytes = [], 0, 0

        def write(item, offline: bool) -> None:
            q, part, _, extras, got, lines = item
            key = (q.prefix, q.name)
            self._write_chunk(q, part, jobs_of.get(key, jobs.iloc[0:0]), payloads_of.get(key, payloads.iloc[0:0]),
                              extras, got, lines=lines, offline=offline)
        for k, item in enumerate(items):
            try:
                write(item, offline)
            except BaseException:   # Redis lost or a stop during one: the others are kept all the same
                for rest in items[k + 1:]:
                    write(rest, True)
                raise

    def _read_jobs_shared(self, q: _Queue, ids: pd.DataFrame, extras: "_Extras", per_job: float,
                          meanwhile: list | None = None) -> None:
        """The job hashes of a big queue of small jobs, shared with the helper process: both
        claim the next chunk when they are free, and every chunk is written in order (the
        snapshot is the same either way). A chunk the helper sends back undone, or holds when
        it stops, is read here. ``meanwhile``: other reads of this queue (its events), done
        here while the helper starts on the chunks."""
        helper = self.helper
        node = self.src.node_of(q.base + "id")
        step = int(min(PIPELINE, max(1, BATCH_BYTES // per_job)))
        n = len(ids)
        bounds = [(a, min(a + helper_mod.CHUNK_ROWS, n)) for a in range(0, n, helper_mod.CHUNK_ROWS)]

        def part(k: int) -> pd.DataFrame:
            a, b = bounds[k]
            return ids.iloc[a:b].reset_index(drop=True).assign(prefix=q.prefix, queue=q.name, flavor=q.flavor)

        log_lines = getattr(self, "_log_lines", None)
        schemas = (self.jobs_schema, self._payload_writer.schema)
        helper.begin(q, ids, extras, self.job_dtypes, log_lines, schemas, node, bounds, step)

        def fetch(k: int):
            p = part(k)
            before = self._received()
            replies = self.cmd.results([("HGETALL", q.base + j) for j in p["job_id"].tolist()], step=step)
            got = self._received() - before
            with phase("decode"):
                return ready_chunk(p, replies, self.redact, extras, self.job_dtypes, log_lines, schemas) + (got,)

        done: dict[int, tuple | None] = {}   # chunk -> result (None: to be read here)
        try:
            self._share(q, helper, bounds, part, fetch, done, extras, meanwhile if meanwhile is not None else [])
        except BaseException:
            # Redis lost, a stop: what was read is kept -- the chunks decoded but not yet
            # written, and those the helper finishes meanwhile (no longer in order).
            helper.end()
            until = time.monotonic() + HELPER_GRACE   # (a chunk it is decoding is worth a moment)
            while helper.held() and helper.broken is None and time.monotonic() < until:
                if helper.poll(0.1):
                    self._collect(helper, done)
            for k in sorted(k for k, r in done.items() if r is not None):
                kind, jobs, payloads, got = done[k]
                if kind == "ready":
                    self._write_ready(q, jobs, payloads, got)
                else:
                    with contextlib.suppress(*LOST, Stopped):
                        self._write_chunk(q, part(k), jobs, payloads, extras, got)
            raise
        finally:
            helper.end()

    def _collect(self, helper, done: dict) -> None:
        """Take what the helper has finished (without waiting)."""
        while helper.poll():
            got = helper.recv(self.ledger)
            if got is None:
                continue
            k, result = got
            done[k] = result
            self.counts["helper_chunks"] = self.counts.get("helper_chunks", 0) + (result is not None)

    def _share(self, q, helper, bounds, part, fetch, done, extras, meanwhile: list) -> None:
        """The loop of ``_read_jobs_shared``: take the helper's results, write the next chunk
        in order, or claim one and read it here; with nothing left to claim, wait for the
        helper. The queue's other reads (``meanwhile``) come first, while the helper starts
        on the chunks: it claims more of them meanwhile, and the two finish together."""
        while meanwhile and helper.broken is None:
            meanwhile.pop(0)()
        written = 0
        while written < len(bounds):
            self._collect(helper, done)
            if helper.broken is not None:
                if not helper.reported:
                    helper.reported = True
                    self.log.warn(f"the capture's helper process stopped ({helper.broken}); the capture read its chunks")
                for k in helper.held():    # what it held is read here
                    helper.back.add(k)
                    done.setdefault(k, None)
            if written in done:
                result = done.pop(written)
                kind, jobs, payloads, got = result if result is not None else fetch(written)
                if kind == "ready":
                    self._write_ready(q, jobs, payloads, got)
                else:   # rows to re-check: the capture's own path
                    self._write_chunk(q, part(written), jobs, payloads, extras, got)
                written += 1
                continue
            k = helper.claim(written)
            if k is not None:
                done[k] = fetch(k)
            else:
                self._wait_for_helper()

    def _wait_for_helper(self) -> None:
        """Wait for the helper's next chunk, looking for a stop meanwhile; a helper that
        says nothing for longer than the capture's --timeout (twice over), or dies, is given
        up: what it held is read here."""
        helper = self.helper
        waited, limit = 0.0, 2 * (self.conn.socket_timeout or 30.0) + 5
        with phase("helper"):
            while not helper.poll(0.5):
                if self.stop_requested:
                    raise Stopped()
                if helper.broken is not None:
                    return
                waited += 0.5
                if waited >= limit or not helper.proc.is_alive():
                    helper.give_up("it did not answer" if helper.proc.is_alive() else "it ended")
                    return

    def start_helper(self, tables: dict[str, pd.DataFrame] | None, share: float = 0.0) -> None:
        """A helper process for the job hashes, when there are enough of them to be worth it
        (and a second core, and no throttle). Called twice: at the SCAN's first reply
        (``tables`` None), when the database's keys times the ``share`` of them that reply
        matched (of the ~SCAN_COUNT it looked at) reach that many -- forked while the capture
        is small, it shares fewer pages, and a spawned one starts while the keys are read --
        and after the SCAN, with the job hashes counted: an early helper not needed is closed."""
        if tables is None:
            keys = [r.get("db_keys") for r in self.redis_rows]
            jobs = sum(int(k) for k in keys if k is not None) * min(share, 1.0) if keys and None not in keys else 0
        else:
            jobs = sum(int((t["family"] == "job").sum()) for t in tables.values())
            if self.helper is not None and jobs < helper_mod.MIN_JOBS:
                self.helper.close()
                self.helper = None
        if (self.helper is None and not self.helper_refused and jobs >= helper_mod.MIN_JOBS
                and helper_mod.usable(self.throttle is not None)):
            try:
                self.helper = helper_mod.Helper(self.redact)
            except Exception as e:  # no process to spare, or it cannot be started: read alone
                self.helper_refused = True
                self.log.warn(f"no helper process ({type(e).__name__}: {e}); the capture reads alone")

    def close_helper(self) -> None:
        if self.helper is not None:
            self.helper.close()

    def _received(self) -> int:
        """Bytes of replies read so far, from every node."""
        mine = sum(n.received[0] for n in self.src.nodes + self.src.down) if self.src is not None else 0
        return mine + (self.helper.received[0] if self.helper is not None else 0)

    def _decode_chunk(self, q: _Queue, part: pd.DataFrame, replies: list, extras: "_Extras", nbytes: int = 0) -> None:
        with phase("decode"):
            jobs, payloads = decode_replies(part, replies, self.redact)
        del replies
        self._write_chunk(q, part, jobs, payloads, extras, nbytes)

    def _write_chunk(self, q: _Queue, part: pd.DataFrame, jobs: pd.DataFrame, payloads: pd.DataFrame,
                     extras: "_Extras", nbytes: int, lines: "pd.Series | None | bool" = False,
                     offline: bool = False) -> None:
        """A decoded chunk (read here or by the helper) to the spool: logs, re-checks, joins.
        ``lines``: the queue's job log lines (default: those read last); ``offline``: no
        re-check (Redis is gone, or a stop was asked)."""
        if lines is False:
            lines = getattr(self, "_log_lines", None)
        if lines is not None and len(payloads):
            payloads["logs"] = payloads["job_id"].map(lines).astype("str")
        with phase("spool"):
            self._payload_writer.write(payloads)
        try:
            if not offline:
                jobs = self._recheck(q, jobs, extras.budget)
                self._lock_moved(q, jobs, extras)
        finally:  # even when Redis went away during the re-check: keep what was read
            jobs = jobs[jobs["state"] != "vanished"]
            with phase("decode"):
                jobs = self._finish(jobs, extras)
            with phase("spool"):
                self._write_jobs(q, jobs)
        self.progress.bytes += nbytes
        self.progress.update(f"{q.name}: job hashes", jobs=len(part))

    def _finish(self, jobs: pd.DataFrame, x: "_Extras") -> pd.DataFrame:
        """Join what is known per job id besides its hash: lock, logs, stalled set, memory."""
        return join_extras(jobs, x, self.job_dtypes)

    @property
    def jobs_schema(self) -> pa.Schema:
        return pa.Schema.from_pandas(
            empty_jobs().assign(in_stalled_set=pd.Series(dtype="boolean")).astype(self.job_dtypes),
            preserve_index=False)

    def _jobs_spool(self) -> Spool:
        if self._jobs_writer is None:
            self._jobs_writer = Spool(self.jobs_file, self.jobs_schema, CHUNK)
        return self._jobs_writer

    def _write_jobs(self, q: _Queue, jobs: pd.DataFrame) -> None:
        self._jobs_spool().write(jobs)
        for state, n in jobs["state"].value_counts().items():
            self.state_counts[(q.prefix, q.name, str(state))] += int(n)
        self.jobs_rows += len(jobs)

    def _write_ready(self, q: _Queue, jobs: pa.Table, payloads: pa.Table, nbytes: int) -> None:
        """A chunk already decoded, joined and typed (``ready_chunk``) to the spool."""
        with phase("spool"):
            self._payload_writer.write_table(payloads)
            self._jobs_spool().write_table(jobs)
        states = jobs.column("state").to_pandas().value_counts()
        for state, n in states.items():
            self.state_counts[(q.prefix, q.name, str(state))] += int(n)
        self.jobs_rows += jobs.num_rows
        self.progress.bytes += nbytes
        self.progress.update(f"{q.name}: job hashes", jobs=jobs.num_rows)

    def _locate(self, q: _Queue, job_ids: list[str]) -> list[str | None]:
        """Which state currently lists each id (None: none). Used to confirm absences."""
        cmds = []
        for j in job_ids:
            for sfx, kind, _ in STATE_KEYS:
                cmds.append(("LPOS", q.base + sfx, j) if kind == "list" else ("ZSCORE", q.base + sfx, j))
        res = self.cmd.results(cmds, essential=False)
        out = []
        n = len(STATE_KEYS)
        for i in range(len(job_ids)):
            hit = None
            for (_, _, state), r in zip(STATE_KEYS, res[i * n:(i + 1) * n]):
                if r is not None:
                    hit = state
                    break
            out.append(hit)
        return out

    def _recheck(self, q: _Queue, jobs: pd.DataFrame, budget: list[int]) -> pd.DataFrame:
        """Confirm missing hashes still listed (else the job just finished and was removed),
        and orphans still unlisted (else the job moved between two states while they were
        read one after the other, e.g. wait -> active: it gets the state it is in now).
        ``budget`` holds how many more ids of this queue may be re-checked."""
        missing = jobs.index[jobs["state"].eq("missing-hash")]
        orphans = jobs.index[jobs["state"].eq("orphan")]
        vanished = jobs.index[jobs["state"].eq("vanished")]
        check = list(missing[:budget[0]])
        check_orphans = list(orphans[:max(budget[0] - len(check), 0)])
        budget[0] -= len(check) + len(check_orphans)
        if len(check) < len(missing) or len(check_orphans) < len(orphans):
            self.log.warn(f"{q.name}: more ids than the {RECHECK_LIMIT} re-checked are listed without a hash or "
                       "have a hash no state lists; the rest are reported unverified")
        drop = list(vanished)
        if check or check_orphans:
            where = self._locate(q, jobs.loc[check + check_orphans, "job_id"].tolist())
            drop += [i for i, w in zip(check, where) if w is None]
            moved = {i: w for i, w in zip(check_orphans, where[len(check):]) if w is not None}
            if moved:
                jobs.loc[list(moved), "state"] = pd.Series(moved)
                self.counts["state_conflicts"] += len(moved)
        self.counts["vanished_jobs"] += len(drop)
        return jobs.drop(index=drop).reset_index(drop=True)

    def _lock_moved(self, q: _Queue, jobs: pd.DataFrame, extras: "_Extras") -> None:
        """Read the locks of jobs the re-check found active (they were not in the active list
        when locks were read): without it they would look like stalled jobs."""
        known = extras.locks[0].index if extras.locks is not None else pd.Index([])
        ids = jobs.loc[jobs["state"].eq("active") & ~jobs["job_id"].isin(known), "job_id"].astype("str").tolist()
        if not ids:
            return
        res = self.cmd.results([c for j in ids for c in (("GET", f"{q.base}{j}:lock"), ("PTTL", f"{q.base}{j}:lock"))],
                            essential=False)
        token = pd.Series(res[0::2], index=ids, dtype="str")
        ttl = pd.Series([as_int(x) for x in res[1::2]], index=ids, dtype="Int64")
        if extras.locks is not None:
            token, ttl = pd.concat([extras.locks[0], token]), pd.concat([extras.locks[1], ttl])
        extras.locks = (token, ttl)

    def _locks_and_logs(self, q: _Queue, mine: pd.DataFrame, active: pd.Series):
        """(token, ttl) Series and log counts by job id, for the ids SCAN saw with a lock
        or logs key (plus every active id: a lock may appear after SCAN)."""
        locks = logs = None
        lock_ids = mine.loc[mine["family"] == "lock", "job_id"].astype("str")
        lock_ids = pd.Index(pd.concat([lock_ids, active.astype("str")])).unique()
        if len(lock_ids):
            cmds = []
            for j in lock_ids:
                cmds += [("GET", f"{q.base}{j}:lock"), ("PTTL", f"{q.base}{j}:lock")]
            res = self.cmd.results(cmds, essential=False)
            locks = (pd.Series(res[0::2], index=lock_ids, dtype="str"),
                     pd.Series([as_int(x) for x in res[1::2]], index=lock_ids, dtype="Int64"))
        log_ids = mine.loc[mine["family"] == "logs", "job_id"].astype("str").unique()
        if len(log_ids):
            cmds = []
            for j in log_ids:  # the count, and the newest LOG_LINES lines for the job inspector
                cmds += [("LLEN", f"{q.base}{j}:logs"), ("LRANGE", f"{q.base}{j}:logs", -LOG_LINES, -1)]
            res = self.cmd.results(cmds, essential=False)
            logs = pd.Series([as_int(x) or 0 for x in res[0::2]], index=log_ids, dtype="Int64")
            with phase("redact"):
                self._log_lines = None if self.redact.no_data else pd.Series(
                    [as_json([self.redact.text(line)[0] for line in x]) if x else None for x in res[1::2]],
                    index=log_ids, dtype="str")
        else:
            self._log_lines = None
        return locks, logs

    def set_job_dtypes(self) -> None:
        """Categorical dtypes with known categories keep the big jobs table small and let
        chunks concatenate without a copy to object."""
        cat = pd.CategoricalDtype
        self.job_dtypes = JOB_COLUMNS | {
            "prefix": cat(sorted({q.prefix for q in self.queues} | set(self.prefixes))),
            "queue": cat(sorted({q.name for q in self.queues})),
            "state": cat(JOB_STATES),
            "flavor": cat(["bull", "bullmq"]),
            "in_stalled_set": "boolean",
        }

    def read_events(self, q: _Queue, length: int) -> None:
        """The events stream, window by window. Windows hold at most WINDOW entries and about
        BATCH_BYTES (sized from the stream's MEMORY USAGE, then from what each window took).
        What was read is redacted (or shaped) and kept once it holds half of BATCH_BYTES or
        EVENT_ROWS entries, before more is read: a window of big return values is kept as soon
        as it is read, after and apart from the windows before it (never held twice, and a stop
        that interrupts it keeps the windows before it), and a stream of small entries pays
        the fixed cost of a table (a few milliseconds) once per EVENT_ROWS entries, not once
        per window."""
        if "events" not in q.families or not length:
            return
        key = q.base + "events"
        measured = [m["bytes"] for m in self._memory_of.get((q.prefix, q.name), []) if m["family"] == "events"]
        per_entry = measured[0] / length if measured else None
        start, read = "-", 0
        pending: list = []
        held = 0   # bytes of replies in ``pending``

        def keep() -> None:
            nonlocal pending, held
            if pending:
                # Up to about BATCH_BYTES (tens of milliseconds of redaction) a stop meanwhile
                # waits for it, so what was read is kept; a bigger window (ten huge values)
                # stays open to a stop, which must come within two seconds.
                batch, small, pending, held = pending, held <= BATCH_BYTES, [], 0
                with phase("events"), finishing() if small else contextlib.nullcontext():
                    self._event_window(q, batch)
        try:
            while True:
                count = 10 if per_entry is None else int(min(WINDOW, max(10, BATCH_BYTES // max(per_entry, 1))))
                before = self._received()
                batch = self.cmd.one("XRANGE", key, start, "+", "COUNT", count, essential=False)
                if not batch:
                    break
                got = self._received() - before
                per_entry = max(got / len(batch), 16.0)
                if pending and held + got > BATCH_BYTES:
                    keep()   # (what was read before first: a stop while this big window is made keeps it)
                pending += batch
                held += got
                if held >= BATCH_BYTES // 2 or len(pending) >= EVENT_ROWS:   # (a window of big values: at once)
                    keep()
                read += len(batch)
                self.progress.bytes += got
                self.progress.update(f"{q.name}: events {read:,} of {length:,}")
                if len(batch) < count:
                    break
                start = "(" + batch[-1][0]
        except KeyboardInterrupt:   # a second Ctrl-C: abort at once, nothing more is made
            pending = []
            raise
        finally:   # Redis lost, or a stop: what was read is kept all the same
            keep()

    def _event_window(self, q: _Queue, batch: list) -> None:
        """Stream entries (one window or several) as rows, redacted (or shaped) as asked."""
        ids, events, jobs, fields = [], [], [], []
        for sid, f in batch:
            f = dict(f or {})
            ids.append(sid)
            events.append(f.pop("event", None))
            jobs.append(f.pop("jobId", None))
            fields.append(f)
        texts = event_texts(fields, self.redact)
        df = pd.DataFrame({"stream_id": ids, "event": events, "job_id": jobs, "fields": texts})
        ms = pd.to_numeric(df["stream_id"].str.partition("-")[0], errors="coerce")
        df.insert(0, "prefix", q.prefix)
        df.insert(1, "queue", q.name)
        df.insert(3, "time", pd.to_datetime(ms, unit="ms", utc=True).astype("datetime64[ms, UTC]"))
        with phase("spool"):
            if self._events_writer is None:  # to disk as it is read: a stream of big values is never held whole
                self._events_writer = Spool(self.events_file, pa.Schema.from_pandas(empty_events(), preserve_index=False),
                                            100_000)
            self._events_writer.write(df.astype(empty_events().dtypes.to_dict()))

    def read_metrics(self, q: _Queue) -> None:
        if "metrics" not in q.families:
            return
        for kind in ("completed", "failed"):
            key = f"{q.base}metrics:{kind}"
            head = self.cmd.one("HGETALL", key, essential=False) or {}
            data = [int(x) for x in self._read_window("list", key + ":data", 0)[0] if str(x).lstrip("-").isdigit()]
            q.row[f"metrics_{kind}_total"] = as_int(head.get("count"))
            prev = as_int(head.get("prevTS"))
            if prev is None:
                continue
            minute = prev // 60000 * 60000
            for i, count in enumerate(data):  # newest first; one entry per minute
                self.metrics.append({"prefix": q.prefix, "queue": q.name, "kind": kind,
                                     "time": pd.Timestamp(minute - i * 60000, unit="ms", tz="UTC"),
                                     "count": count})

    def read_dedup(self, q: _Queue, mine: pd.DataFrame) -> None:
        """BullMQ's deduplication keys (``de:<id>``): the job id each holds and its TTL. A key
        without TTL that outlives its job drops every later add with that id."""
        keys = mine.loc[mine["family"] == "dedup", "key"].dropna()
        keys = keys[keys.str.startswith(q.base + "de:")].head(DEDUP_LIMIT)
        if not len(keys):
            return
        replies = self.cmd.results([c for k in keys for c in (("GET", k), ("PTTL", k))], essential=False)
        for i, key in enumerate(keys):
            value, ttl = replies[2 * i], as_int(replies[2 * i + 1])
            if ttl == -2:  # gone since the SCAN
                continue
            self.dedup.append({"prefix": q.prefix, "queue": q.name, "dedup_id": key[len(q.base) + 3:],
                               "job_id": value if isinstance(value, str) else None,
                               "ttl_ms": ttl if ttl is not None and ttl >= 0 else None})
        self.progress.update(f"{q.name}: dedup keys")

    def read_schedulers(self, q: _Queue, mine: pd.DataFrame) -> None:
        """The repeat zset (next run per entry) and, for BullMQ, each entry's ``repeat:<id>``
        hash: job schedulers (5.16+: data, ``ic``), legacy repeatables (a hash of name and
        pattern; Bull and early BullMQ: everything in the member itself)."""
        n = int(q.row.get("repeat_count") or 0)
        if not n:
            return
        members, scores = self._read_window("zset", q.base + "repeat", n)
        entries = list(zip(members, scores.tolist()))[:SCHEDULER_LIMIT]
        hashes = set(mine.loc[mine["family"] == "repeat", "key"].dropna())
        wanted = [m for m, _ in entries if q.base + "repeat:" + m in hashes]
        got = dict(zip(wanted, self.cmd.results([("HGETALL", q.base + "repeat:" + m) for m in wanted], essential=False)))
        for member, score in entries:
            h = got.get(member) or {}
            row = scheduler_row(q.flavor, member, score, h if isinstance(h, dict) else {})
            self.schedulers.append({"prefix": q.prefix, "queue": q.name, **row})
        self.progress.update(f"{q.name}: schedulers")

    def lost(self, addr: str | None) -> bool:
        """A cluster master that went away during this capture."""
        return any(n.addr == addr for n in self.src.down)

    def lose_node(self, addr: str | None, err: Exception, q: "_Queue | None" = None) -> None:
        """A cluster master stopped answering mid-capture: record it, skip its queues, go on."""
        node = next((n for n in self.src.nodes if n.addr == addr), None)
        if node is not None:
            node.error = f"lost during the capture: {err}"
            self.src.nodes.remove(node)
            self.src.down.append(node)
            self.src.workers_nodes = [n for n in self.src.workers_nodes if n is not node]
        skipped = [x.name for x in self.queues if x.node == addr and x is not q and x.row == {}]
        self.complete = False
        self.reason = f"cluster node {addr} was lost during the capture ({err}); its queues were not read or read in part"
        self.log.warn(f"cluster node {addr} stopped answering: {err}"
                   + (f"; queue {q.prefix}:{q.name} read in part" if q is not None else "")
                   + (f"; not read: {', '.join(skipped)}" if skipped else ""))

    def _read_clients(self) -> None:
        clients = []
        for node in list(self.src.workers_nodes):
            try:
                text = self.cmd.one("CLIENT", "LIST", essential=False, node=node)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                if not self.src.clustered:
                    raise
                self.lose_node(node.addr, e)
                continue
            if isinstance(text, str):
                clients += [dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv) | {"_node": node.addr}
                            for line in text.splitlines() if line]
        names: dict[str, tuple[str, str, str]] = {}
        for q in self.queues:
            b64 = base64.b64encode(q.name.encode()).decode()
            names[f"{q.prefix}:{b64}"] = (q.prefix, q.name, "node")
            names.setdefault(f"{q.prefix}:{q.name}", (q.prefix, q.name, "python"))
        rows, every = [], []
        for c in clients:
            name = c.get("name") or ""
            flags = c.get("flags")
            if c.get("cmd") == "NULL":  # no command yet since it connected
                c["cmd"] = None
            blocked = bool(flags) and "b" in flags
            every.append({"client_id": as_int(c.get("id")), "addr": c.get("addr"),
                          "host": (c.get("addr") or "").rpartition(":")[0] or None, "name": name or None,
                          "age_s": as_int(c.get("age")), "idle_s": as_int(c.get("idle")), "flags": flags,
                          "blocked": blocked, "last_command": c.get("cmd"), "db": as_int(c.get("db")),
                          "user": c.get("user"), "lib_name": c.get("lib-name") or None,
                          "lib_ver": c.get("lib-ver") or None, "node": c["_node"],
                          "prefix": None, "queue": None, "role": None})
            if not name:
                continue
            base, role, wname = name, "worker", None
            for marker, r in ((":w:", "worker"), (":qe", "queue-events"), (":qs", "queue-scheduler")):
                if marker in name and name.rsplit(marker, 1)[0] in names:
                    base, tail = name.rsplit(marker, 1)
                    role, wname = r, (tail or None)
                    break
            if base not in names:
                continue
            prefix, queue, runtime = names[base]
            every[-1].update(prefix=prefix, queue=queue, role=role)
            rows.append({"prefix": prefix, "queue": queue, "role": role, "worker_name": wname, "runtime": runtime,
                         "client_name": name, "client_id": as_int(c.get("id")), "addr": c.get("addr"),
                         "age_s": as_int(c.get("age")), "idle_s": as_int(c.get("idle")),
                         "last_command": c.get("cmd"), "db": as_int(c.get("db")), "node": c["_node"],
                         # blocked (flag b) in the library's blocking read: bzpopmin, brpoplpush, ...
                         "flags": flags, "blocked": blocked,
                         "blocking_command": c.get("cmd") if blocked else None})
        self.workers = pd.DataFrame(rows)
        self.clients = pd.DataFrame(every)

    def _memory(self, q: _Queue, mine: pd.DataFrame) -> pd.Series | None:
        """MEMORY USAGE per key family of one queue: every key of small families, a
        random sample of ``memory_samples`` keys (extrapolated) of big ones. Returns the
        per-job figures measured (job id -> bytes) for the jobs table."""
        rng = random.Random(0)
        job_mem = None
        if not self.cmd.was_refused("MEMORY USAGE", q.node) and q.node not in self._memory_probed and len(mine):
            # One key first: a server without MEMORY USAGE answers once, not once per key.
            self._memory_probed.add(q.node)
            self.cmd.results([("MEMORY", "USAGE", K.key_names(q.base, str(mine["family"].iloc[0]), mine.iloc[:1])[0])],
                          essential=False)
        if self.cmd.was_refused("MEMORY USAGE", q.node):
            return None
        for fam, grp in mine.groupby("family", sort=True, observed=True):
            n = len(grp)
            idx = list(range(n)) if n <= self.memory_samples else sorted(rng.sample(range(n), self.memory_samples))
            rows = grp.iloc[idx]
            # A stream's entries differ in size (a `completed` entry carries the return value):
            # measure every node of it rather than Redis' default sample of five.
            exact = ("SAMPLES", "0") if fam == "events" else ()
            res = self.cmd.results([("MEMORY", "USAGE", k, *exact) for k in K.key_names(q.base, str(fam), rows)],
                                essential=False)
            vals = pd.Series([as_int(r) for r in res], index=rows["job_id"].tolist(), dtype="Int64")
            measured = vals.dropna()
            if not len(measured):
                continue
            total = int(measured.sum()) if len(idx) == n else round(float(measured.mean()) * n)
            self.memory.append({"prefix": q.prefix, "queue": q.name, "family": str(fam), "keys": n,
                                "bytes": int(total), "measured_keys": len(measured), "estimated": len(idx) < n})
            self._memory_of.setdefault((q.prefix, q.name), []).append(self.memory[-1])
            if fam == "job":
                job_mem = measured[~measured.index.duplicated()]
            self.progress.update(f"{q.name}: memory of {fam}")
        return job_mem

    # ---- assembly -------------------------------------------------------------------------
    def assemble(self) -> Snapshot:
        with contextlib.suppress(*LOST, Stopped):   # (steps driven by hand, without read_workers)
            self.flush_small()
        with phase("spool"):
            self._payload_writer.close()
        if self._jobs_writer is None:  # no job at all (or cut short before the first)
            self._write_jobs(_Queue("", ""), empty_jobs().assign(
                in_stalled_set=pd.Series(dtype="boolean")).astype(self.job_dtypes))
        with phase("spool"):
            self._jobs_writer.close()
        queues = self._queues_table()
        with phase("spool"):
            if self._events_writer is None:
                self._events_writer = Spool(self.events_file, pa.Schema.from_pandas(empty_events(), preserve_index=False),
                                            100_000)
            self._events_writer.close()
        metrics = pd.DataFrame(self.metrics) if self.metrics else empty_metrics()
        memory = pd.DataFrame(self.memory) if self.memory else empty_memory()
        workers = self.workers.astype(empty_workers().dtypes.to_dict()) if len(self.workers) else empty_workers()
        clients = self.clients.astype(empty_clients().dtypes.to_dict()) if len(self.clients) else empty_clients()
        dedup = pd.DataFrame(self.dedup).astype(empty_dedup().dtypes.to_dict()) if self.dedup else empty_dedup()
        schedulers = pd.DataFrame(self.schedulers).reindex(columns=list(empty_schedulers().columns)).astype(
            empty_schedulers().dtypes.to_dict()) if self.schedulers else empty_schedulers()
        home = {(q.prefix, q.name): q.node for q in self.queues}
        rows = []
        for row in self.redis_rows:
            mine = [m["bytes"] for m in self.memory if home.get((m["prefix"], m["queue"])) == row["node"]]
            rows.append(row | {"measured_queue_bytes": int(sum(mine)) if mine else None})
        redis_df = pd.DataFrame(rows) if rows else pd.DataFrame([{"captured_at": self.started}])
        first = self.redis_rows[0] if self.redis_rows else {}
        finished = utcnow()
        if not self.complete:
            self.warnings.insert(0, f"capture cut short: {self.reason}")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "kind": "snapshot",
            "tool": "queue-forensics", "tool_version": __version__,
            "captured_at": self.started.isoformat(),
            "finished_at": finished.isoformat(),
            "duration_s": round((finished - self.started).total_seconds(), 3),
            "source": (f"rdb:{self.rdb['path']}" if self.rdb else
                       self.src.label if self.src is not None else redact_url(self.conn.url)),
            "redis_version": first.get("redis_version"),
            # which server was read: redis, valkey or dragonfly (as BullMQ tells them apart), and its version
            "server": {"type": first.get("server_type"), "version": first.get("server_version")},
            "topology": self.src.describe() if self.src is not None else None,
            "rdb": self.rdb,
            "tls": self.conn.describe_tls(),
            "unavailable": self.unavailable,
            "options": {"prefixes": self.prefixes, "queues": self.only, **self.redact.describe(),
                        "memory_samples": self.memory_samples, "window": WINDOW,
                        "max_ops_per_sec": self.throttle.rate if self.throttle else None,
                        "pipeline": PIPELINE, "scan_count": SCAN_COUNT},
            "complete": self.complete,
            "incomplete_reason": self.reason,
            "warnings": self.warnings,
            "counts": self.counts,
            "foreign_key_samples": self.foreign_samples,
            "memory": {
                "method": "MEMORY USAGE per key; per-job families sampled above "
                          f"{self.memory_samples} keys per family and extrapolated",
                "estimated_families": int(memory["estimated"].sum()) if len(memory) else 0,
            },
            "consistency": "not atomic: states are read one after another while the queues run"
                           + ("; read from a replica, behind the primary by the lag in topology.replication"
                              if self.src is not None and self.src.replication else ""),
            "commands": dict(sorted(self.ledger.counts.items())),
            # where the time went (seconds, each phase without the phases inside it), and the
            # bytes of replies read
            "phases": self.clock.report(self._received()),
        }
        tables = {"queues": queues, "workers": workers, "clients": clients, "dedup": dedup, "schedulers": schedulers,
                  "redis": redis_df,
                  "metrics": metrics, "memory": memory}
        return spooled_snapshot(tables, manifest, self.spool, {"jobs": self._jobs_writer,
                                                               "payloads": self._payload_writer,
                                                               "events": self._events_writer})

    def _queues_table(self) -> pd.DataFrame:
        rows = []
        # (workers per queue split once: a filter of the whole table per queue is quadratic)
        w = self.workers
        w = w[w["role"] == "worker"] if len(w) else w
        workers_of = {k: g for k, g in w.groupby(["prefix", "queue"], sort=False)} if len(w) else {}
        for q in self.queues:
            c = {s: self.state_counts.get((q.prefix, q.name, s), 0) for s in JOB_STATES}
            workers = workers_of.get((q.prefix, q.name), pd.DataFrame())
            version = str(q.meta.get("version", "")) or None
            paused = q.meta.get("paused") in ("1", 1) or bool(q.row.get("meta_paused_key"))
            row = {
                "prefix": q.prefix, "queue": q.name, "flavor": q.flavor,
                "library_version": version.split(":", 1)[1] if version and ":" in version else version,
                "flavor_evidence": ", ".join(q.evidence),
                "paused": paused,
                **{f"n_{s.replace('-', '_')}": int(c.get(s, 0)) for s in STATES + ["orphan", "missing-hash"]},
                # A cluster worker may show on several masters: the node listing most (as BullMQ's getWorkers)
                "workers": int(workers.groupby("node").size().max()) if len(workers) else 0,
                "meta": as_json({k: v for k, v in q.meta.items()}) if q.meta else None,
                "max_len_events": as_int(q.meta.get("opts.maxLenEvents")),
                "global_concurrency": as_int(q.meta.get("concurrency")),
                "rate_limit_max": as_int(q.meta.get("max")),
                "rate_limit_duration_ms": as_int(q.meta.get("duration")),
                **{k: v for k, v in q.row.items() if k != "meta_paused_key"},
                "memory_bytes": int(sum(m["bytes"] for m in self._memory_of.get((q.prefix, q.name), []))) or None,
                # where it was read (a slot that moved during the capture: its new owner)
                "node": self.src.node_of(q.base + "id").addr if self.src is not None and self.src.clustered
                else q.node, "slot": q.slot,
            }
            rows.append(row)
        df = pd.DataFrame(rows).reindex(columns=list(QUEUE_COLUMNS))
        ints = [c for c, t in QUEUE_COLUMNS.items() if t == "int64"]
        df[ints] = df[ints].fillna(0)  # a queue cut short before its counts were read
        return df.astype(QUEUE_COLUMNS)


