"""Read-only, low-impact capture of every Bull/BullMQ queue under a prefix.

Two backends, over shared spool, progress, stop handling and table builders (``tables.py``,
``progress.py``): Redis (``redis/``) and BullMQ 6's PostgreSQL backend (``postgres/``:
``capture("postgresql://...")``). The Redis capture has two layers:

* **sources** (``redis/sources.py``, ``redis/rdb.py``): how the data is reached — one node, every
  master of a Redis Cluster, the master or a replica named by Sentinel, a replica of a
  primary, or a private ``redis-server`` on a copy of an RDB backup. TLS and credentials
  live there, and every connection passes the read-only gate (``safety.py``).
* **readers** (``redis/readers.py``): what is read for each queue (state lists and sets, job
  hashes, locks, logs, events, metrics, memory, worker connections), whatever the topology.

If Redis goes away, a cluster node is down or the user presses Ctrl-C, what was read is
returned with ``complete: false`` and the reason.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import shutil
import warnings
from typing import Iterable

import pandas as pd
import redis as redis_lib  # (`redis` is also this package's Redis subpackage)

from ..errors import UsageError
from ..redact import Redaction
from ..snapshot import Snapshot
from .progress import Progress, Stopped, stop_on_ctrl_c
from .redis.readers import CHUNK, PIPELINE, RECHECK_LIMIT, SCAN_COUNT, WINDOW, Capture
from .redis.sources import Connect
from .tables import JOB_STATES, QUEUE_COLUMNS, STATE_KEYS, STATES

DEFAULT_URL = "redis://localhost:6379/0"
LOST = (redis_lib.ConnectionError, redis_lib.TimeoutError, ConnectionError, OSError)
_Capture = Capture  # the name the tests used before the split

__all__ = ["capture", "Capture", "Connect", "Progress", "DEFAULT_URL", "CHUNK", "PIPELINE", "RECHECK_LIMIT",
           "SCAN_COUNT", "WINDOW", "JOB_STATES", "QUEUE_COLUMNS", "STATE_KEYS", "STATES"]


def capture(url: str | None = None, prefix: str | Iterable[str] = "bull",
            queues: Iterable[str] | None = None, *, redact: bool = True,
            redact_fields: Iterable[str] = (), no_data: bool = False,
            memory_samples: int = 1000, progress: bool | Progress | None = None,
            socket_timeout: float = 30.0, cluster: bool | None = None, replica: bool = False,
            tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None,
            tls_insecure: bool = False, rdb: str | os.PathLike | None = None, db: int = 0,
            redis_server: str | None = None, max_ops_per_sec: float | None = None,
            schema: str | None = None) -> Snapshot:
    """Capture every queue under ``prefix`` (or only ``queues``), read-only.

    ``url``: ``redis://``, ``rediss://`` (TLS), ``unix://`` or
    ``redis+sentinel://host:26379[,host:26380]/SERVICE[/DB]``; defaults to ``$REDIS_URL``,
    then ``redis://localhost:6379/0``. A Redis Cluster node is detected and every master read
    (``cluster=True``/``False`` forces it). ``replica=True`` reads a replica instead of the
    primary. ``redact`` (default on) redacts secrets in job data, return values, failed
    reasons, stack traces, job logs and events; ``redact_fields``: more field-name patterns
    (regular expressions) to redact; ``no_data``: keep sizes, shapes and field names but no
    values (see ``forensics.redact``). ``tls_*``: CA, client certificate and key files;
    ``tls_insecure`` skips verification (recorded in the manifest). ``rdb``: capture a backup file instead of a live
    Redis (its database ``db``), loaded by a private ``redis_server`` (default: the one on PATH).
    ``max_ops_per_sec``: send at most this many commands a second (a fragile production
    Redis); progress then shows how long the capture is expected to take.

    ``postgresql://...`` (or ``postgres://``): BullMQ 6 queues kept in PostgreSQL, in
    ``schema`` (default ``bullmq``), read in one READ ONLY, REPEATABLE READ transaction (see
    ``forensics.capture.postgres``); ``prefix`` and the Redis options do not apply.

    Raises ``ConnectError`` when Redis cannot be reached or refuses access. A capture cut
    short (Redis gone, a cluster node down, Ctrl-C) returns what was read, with
    ``snap.complete`` False.
    """
    from .postgres import capture_postgres, is_postgres_url
    if is_postgres_url(url):
        return capture_postgres(url, schema=schema or "bullmq", queues=queues, redact=redact,
                                redact_fields=redact_fields, no_data=no_data, progress=progress,
                                statement_timeout_s=socket_timeout * 2)
    if schema is not None:
        raise UsageError("schema= goes with a postgresql:// URL (a Redis capture takes prefix=)")
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
    if not prefixes or any(not p for p in prefixes):
        raise UsageError("--prefix must not be empty")
    if memory_samples < 0:
        raise UsageError("memory_samples must be >= 0")
    if max_ops_per_sec is not None and not (math.isfinite(max_ops_per_sec) and max_ops_per_sec > 0):
        raise UsageError("--max-ops-per-sec must be a positive number of commands per second")
    prog = progress if isinstance(progress, Progress) else Progress(progress)
    policy = Redaction(secrets=bool(redact), fields=tuple(redact_fields or ()), no_data=no_data)
    opts = dict(redact=policy, memory_samples=memory_samples, progress=prog, max_ops_per_sec=max_ops_per_sec)
    if rdb is not None:
        if url or cluster or replica or tls_ca or tls_cert or tls_key or tls_insecure:
            raise UsageError("--rdb reads a backup file: it goes without --redis, --cluster, --replica and --tls-*")
        if db < 0:
            raise UsageError("--db must be >= 0")
        from .redis.rdb import RdbServer
        with RdbServer(rdb, redis_server, progress=prog) as srv:
            return _run(Connect(srv.url(db), cluster=False, socket_timeout=socket_timeout), prefixes, queues,
                        rdb=srv.info, **opts)
    url = url or os.environ.get("REDIS_URL") or DEFAULT_URL
    conn = Connect(url, cluster=cluster, replica=replica, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                   tls_insecure=tls_insecure, socket_timeout=socket_timeout)
    return _run(conn, prefixes, queues, **opts)


def _run(conn: Connect, prefixes: list[str], queues, *, redact: Redaction, memory_samples: int, progress: Progress,
         rdb: dict | None = None, max_ops_per_sec: float | None = None) -> Snapshot:
    cap = Capture(conn, prefixes, list(queues) if queues else None, redact=redact,
                  memory_samples=memory_samples, progress=progress, max_ops_per_sec=max_ops_per_sec)
    cap.rdb = rdb
    try:
        return _read(cap, prefixes, progress, rdb)
    except BaseException:  # a failed connect, a full disk under the spool, a bug: no working files left
        shutil.rmtree(cap.spool, ignore_errors=True)
        raise


def _read(cap: Capture, prefixes: list[str], progress: Progress, rdb: dict | None) -> Snapshot:
    with _no_gc(), cap.clock.running():
        return _read_all(cap, prefixes, progress, rdb)


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


def _read_all(cap: Capture, prefixes: list[str], progress: Progress, rdb: dict | None) -> Snapshot:
    cap.connect()
    tables: dict[str, pd.DataFrame] = {}
    try:
        with stop_on_ctrl_c(cap, progress):
            cap.server_info()
            if rdb is not None:
                _rdb_keyspace(cap)
            for p in prefixes:
                tables[p] = cap.discover(p)
            cap.expect_commands(tables)
            cap.start_helper(tables)
            for i, q in enumerate(cap.queues):
                progress.update(f"queue {i + 1}/{len(cap.queues)} {q.name}", force=True)
                if cap.lost(q.node):
                    continue
                try:
                    cap.read_queue(q, tables[q.prefix])
                except LOST as e:
                    if not cap.src.clustered:
                        raise
                    cap.lose_node(q.node, e, q)  # a cluster master went away: read the others' queues
            cap.read_workers()
    except LOST as e:
        cap.complete, cap.reason = False, f"lost the connection to Redis: {e}"
    except (KeyboardInterrupt, Stopped):
        cap.complete, cap.reason = False, f"interrupted ({cap.stop_signal or 'Ctrl-C'})"
    finally:
        progress.done()
        cap.close_helper()
        cap.src.close()
    snap = cap.assemble()
    if not snap.complete:
        warnings.warn(f"capture incomplete: {cap.reason}", stacklevel=4)
    return snap


def _rdb_keyspace(cap: Capture) -> None:
    """Which databases the dump holds keys in (a dump carries all of them)."""
    info = cap._one("INFO", "keyspace", essential=False, node=cap.src.nodes[0]) or {}
    keyspace = {k: v.get("keys") for k, v in info.items() if k.startswith("db") and isinstance(v, dict)}
    cap.rdb = dict(cap.rdb or {}, keyspace=keyspace)
    db = cap.src.params.get("db", 0) or 0
    if not keyspace.get(f"db{db}") and keyspace:
        others = ", ".join(f"{k[2:]} ({n:,} keys)" for k, n in keyspace.items())
        cap._warn(f"database {db} of the dump is empty; it holds keys in database {others}: use --db N")
