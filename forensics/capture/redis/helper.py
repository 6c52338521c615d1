"""The capture's second core: a helper process that reads and decodes job hashes.

A capture of many jobs spends most of its time turning HGETALL replies into typed rows
(parsing the replies, decoding, redacting), which needs the GIL: a thread does not help, a
process does. The helper gets a queue's job ids (once) and then chunks of them to read: it
reads their hashes over its own connection (through the same read-only gate), decodes,
joins and types them with the capture's own ``ready_chunk``, and sends the two tables back as
Arrow IPC, ready for the spool (a few milliseconds a chunk). The capture meanwhile reads
other chunks itself, and writes every chunk in order, so the snapshot is the same with or
without the helper.

Anything unusual in the helper -- a command error, a lost or silent connection, a crash --
sends the chunk back undone and the capture reads it itself (where the usual handling of
errors, lost nodes and timeouts applies); after one such chunk the helper is not used again.
The helper ignores Ctrl-C and SIGTERM: the capture decides when to stop, and ends it.

Started with fork when the capture's process runs one Python thread (the modules are
already loaded: it is ready at once), else with spawn.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
from typing import Any

import pandas as pd
import pyarrow as pa

from ...decode import JOB_COLUMNS, PAYLOAD_COLUMNS
from ...redact import Redaction
from ...safety import CommandLedger

MIN_JOBS = 30_000       # job hashes in the capture before a helper is worth starting
CHUNK_ROWS = 10_000     # jobs per chunk when the helper shares the work
MAX_JOB_BYTES = 16_384  # queues whose job hashes are bigger on average are read by the capture alone

_MASKED = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.bool_(): pd.BooleanDtype()}


def usable(throttled: bool) -> bool:
    """A second core to use, no throttle (commands from two processes could not be paced as
    one), and not turned off (FORENSICS_HELPER=0)."""
    if throttled or os.environ.get("FORENSICS_HELPER", "1") == "0":
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores >= 2


class _Lite:
    """The per-queue joins a chunk needs (an ``_Extras`` without the re-check budget)."""

    def __init__(self, locks, logs, stalled, job_mem):
        self.locks, self.logs, self.stalled, self.job_mem = locks, logs, stalled, job_mem


def _table(buf) -> pa.Table:
    return pa.ipc.open_stream(buf).read_all()


def to_ipc(df: "pd.DataFrame | pa.Table") -> pa.Buffer:
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def from_ipc(buf, dtypes: dict[str, str]) -> pd.DataFrame:
    df = pa.ipc.open_stream(buf).read_all().to_pandas(types_mapper=_MASKED.get)
    return df.astype(dtypes)


class Helper:
    """The capture's side: start, hand out chunks, collect results, stop."""

    def __init__(self, redaction: Redaction):
        method = "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        self.method = method
        self.conn, child = ctx.Pipe()
        if method == "fork":
            warm_up(redaction)   # what the child would otherwise compile and load on its first chunk
        self.proc = ctx.Process(target=_main, args=(child, redaction), name="forensics-helper", daemon=True)
        self.proc.start()
        child.close()
        self.nodes: set[str] = set()
        self.broken: str | None = None   # why it is not used any more
        self.received = [0]              # bytes of replies the helper read
        self.outstanding: list[int] = []

    def queue(self, q, ids: pd.DataFrame, extras, dtypes: dict, log_lines, schemas) -> None:
        """One queue: its job ids (once, as Arrow) and what its chunks are joined with; the
        chunks then name rows of it."""
        lite = _Lite(extras.locks, extras.logs, extras.stalled, extras.job_mem)
        ids = ids[["job_id", "state", "score"]].astype({"job_id": "str", "state": "str", "score": "float64"})
        try:
            self.conn.send(("queue", (q.prefix, q.name, q.flavor, q.base), to_ipc(ids), lite, dtypes, log_lines,
                            schemas))
        except (OSError, EOFError, ValueError) as e:
            self._gone(e)

    def send(self, task_id: int, node, rows: tuple[int, int], step: int) -> None:
        try:
            if node.addr not in self.nodes:
                self.conn.send(("node", node.addr, node.spec))
                self.nodes.add(node.addr)
            self.conn.send(("chunk", task_id, node.addr, rows, step))
            self.outstanding.append(task_id)
        except (OSError, EOFError, ValueError) as e:
            self._gone(e)
            self.outstanding.append(task_id)   # comes back undone from recv(): the capture reads it

    def poll(self, timeout: float = 0.0) -> bool:
        """A result (or the helper's end) is waiting."""
        if self.broken is not None and not self.outstanding:
            return False
        try:
            return self.conn.poll(timeout)
        except (OSError, EOFError, ValueError) as e:
            self._gone(e)
            return True

    def _gone(self, e: BaseException) -> None:
        self.broken = self.broken or f"it ended: {type(e).__name__}: {e}".rstrip(": ")

    def recv(self, ledger: CommandLedger):
        """(task_id, (kind, jobs, payloads, bytes)) for a chunk read -- kind "ready" (Arrow
        tables for the spool) or "raw" (DataFrames with rows to re-check) -- or (task_id,
        None) for one sent back undone (every outstanding one, when the helper is gone)."""
        try:
            msg = self.conn.recv() if self.broken is None else None
        except (OSError, EOFError, ValueError) as e:
            self._gone(e)
            msg = None
        if msg is None:
            task_id = self.outstanding.pop(0)
            return task_id, None
        task_id = msg[1]
        self.outstanding.remove(task_id)
        if msg[0] == "undone":
            self.broken = msg[2]
            return task_id, None
        kind, _, jobs, payloads, nbytes, counts = msg
        for name, n in counts.items():
            ledger.counts[name] = ledger.counts.get(name, 0) + n
        self.received[0] += nbytes
        if kind == "ready":
            return task_id, (kind, _table(jobs), _table(payloads), nbytes)
        return task_id, (kind, from_ipc(jobs, JOB_COLUMNS), from_ipc(payloads, PAYLOAD_COLUMNS), nbytes)

    def close(self) -> None:
        try:
            self.conn.send(("stop",))
        except (OSError, ValueError):
            pass
        self.proc.join(1)
        if self.proc.is_alive():   # it holds results nobody takes, or hangs on Redis: it is done anyway
            self.proc.kill()
            self.proc.join(2)
        self.conn.close()


# ---- the helper process -----------------------------------------------------------------------

def warm_up(redaction: Redaction) -> None:
    """Compile the redaction rules and run the decoder once on a made-up job, so that a
    forked helper starts with all of it ready (and the capture's own first chunk too)."""
    from ...decode import decode_jobs
    redaction.needs("x")
    _ = redaction._json_keys, redaction._key_re
    part = pd.DataFrame({"prefix": ["p"], "queue": ["q"], "job_id": ["1"], "state": ["failed"], "score": [1.0],
                         "flavor": ["bullmq"]})
    decode_jobs(part, [{"name": "n", "data": '{"password":"x"}', "opts": '{"attempts":3}', "timestamp": "1",
                        "failedReason": "token=x", "stacktrace": '["Error"]', "atm": "1"}], redact=redaction)


def _main(conn, redaction: Redaction) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the capture decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from .readers import ready_chunk
    from .sources import Node
    from ..tables import shape
    ledger = CommandLedger()
    nodes: dict[str, Any] = {}
    # Results leave through a thread: a chunk waiting for the capture to take it (it may be
    # decoding one of its own) does not hold up the next one.
    outbox: queue.Queue = queue.Queue(maxsize=2)

    def post():
        while (item := outbox.get()) is not None:
            try:
                conn.send(item)
            except (OSError, ValueError):
                return
    sender = threading.Thread(target=post, daemon=True)
    sender.start()
    # ... and tasks come in through another: the capture never waits to hand one over.
    inbox: queue.Queue = queue.Queue()

    def take():
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):    # the capture is gone
                msg = ("stop",)
            inbox.put(msg)
            if msg[0] == "stop":
                return
    threading.Thread(target=take, daemon=True).start()
    try:
        while True:
            msg = inbox.get()
            if msg[0] == "stop":
                return
            if msg[0] == "node":
                _, addr, (host, port, params, role, replica) = msg
                nodes[addr] = Node(host, port, params, ledger, role=role, cluster_replica=replica)
                continue
            if msg[0] == "queue":
                _, (prefix, name, flavor, base), ids, joins, dtypes, log_lines, schemas = msg
                ids = _table(ids).to_pandas()
                continue
            _, task_id, addr, (a, b), step = msg
            try:
                node = nodes[addr]
                part = ids.iloc[a:b].reset_index(drop=True).assign(prefix=prefix, queue=name, flavor=flavor)
                cmds = [("HGETALL", base + j) for j in part["job_id"].tolist()]
                before = node.received[0]
                replies = []
                batches = [cmds[a:a + step] for a in range(0, len(cmds), step)]
                for batch, got in zip(batches, node.send_batches(batches) if len(batches) > 1
                                      else [node.send(batches[0])]):
                    for c, r in zip(batch, got):
                        if type(r).__name__ == "ReplyError":
                            raise _Undone(f"{r}")
                        replies.append(shape(c, r))
                kind, jobs, payloads = ready_chunk(part, replies, redaction, joins, dtypes, log_lines, schemas)
                counts = dict(ledger.counts)
                ledger.counts.clear()
                outbox.put((kind, task_id, to_ipc(jobs), to_ipc(payloads), node.received[0] - before, counts))
            except Exception as e:  # anything at all: the capture reads this chunk itself
                outbox.put(("undone", task_id, f"{type(e).__name__}: {e}"))
    finally:
        try:   # results nobody will take any more (the capture stopped): leave without them
            outbox.put_nowait(None)
            sender.join(1)
        except queue.Full:
            pass
        for n in nodes.values():
            n.close()


class _Undone(Exception):
    pass
