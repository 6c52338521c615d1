"""Read-only, low-impact capture of every Bull/BullMQ queue under a prefix.

Two backends, over shared spool, progress, stop handling and table builders (``tables.py``,
``progress.py``): Redis (``redis/``) and BullMQ 6's PostgreSQL backend (``postgres/``:
``capture("postgresql://...")``). The Redis capture has two layers:

* **sources** (``redis/sources.py``, ``redis/rdb.py``): how the data is reached — one node, every
  master of a Redis Cluster, the master or a replica named by Sentinel, a replica of a
  primary, or a private ``redis-server`` on a copy of an RDB backup. TLS and credentials
  live there, and every connection passes the read-only gate (``safety.py``).
* **readers** (``redis/readers.py``): what is read for each queue (state lists and sets, job
  hashes, locks, logs, events, metrics, memory, worker connections), whatever the topology;
  how each command travels (routing, pipelines, cluster redirects, refusals) is
  ``redis/commands.py``'s.

Either backend's capture is a ``steps.Reader`` and takes the same steps, driven by
``steps.run``: connect, read_server, find_queues, read_queue for each queue, read_workers,
close, assemble.

If Redis goes away, a cluster node is down or the user presses Ctrl-C, what was read is
returned with ``complete: false`` and the reason.
"""
from __future__ import annotations

import math
import os
from typing import Iterable


from ..errors import UsageError
from ..redact import Redaction
from ..snapshot import Snapshot
from .progress import Progress
from .redis.commands import PIPELINE
from .redis.readers import CHUNK, RECHECK_LIMIT, SCAN_COUNT, WINDOW, Capture
from .redis.sources import Connect
from .steps import run
from .tables import JOB_STATES, QUEUE_COLUMNS, STATE_KEYS, STATES

DEFAULT_URL = "redis://localhost:6379/0"
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
    ``forensics.capture.postgres``), ``socket_timeout`` its statement timeout; ``prefix`` and the
    Redis options do not apply.

    Raises ``ConnectError`` when Redis cannot be reached or refuses access. A capture cut
    short (Redis gone, a cluster node down, Ctrl-C) returns what was read, with
    ``snap.complete`` False.
    """
    from .postgres import capture_postgres, is_postgres_url
    if is_postgres_url(url):
        return capture_postgres(url, schema=schema or "bullmq", queues=queues, redact=redact,
                                redact_fields=redact_fields, no_data=no_data, progress=progress,
                                statement_timeout_s=socket_timeout)
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
    return run(cap)
