"""The capture's second core: a helper process that reads and decodes job hashes.

A capture of many jobs spends most of its time turning HGETALL replies into typed rows
(parsing the replies, decoding, redacting), which needs the GIL: a thread does not help, a
process does. The helper gets a queue's job ids (once) and the row bounds of its chunks;
then it and the capture each claim the next chunk from one shared counter whenever they are
free (neither waits to be handed work). The helper reads its chunks' hashes over its own
connection (through the same read-only gate), decodes, joins and types them with the
capture's own ``ready_chunk``, and sends the two tables back as Arrow IPC bytes after a
header, ready for the spool (a few milliseconds a chunk). The capture writes every chunk in
order, so the snapshot is the same with or without the helper.

Anything unusual in the helper -- a command error, a lost or silent connection, a crash --
sends the chunk back undone and the capture reads it itself (where the usual handling of
errors, lost nodes and timeouts applies); after one such chunk the helper is not used again.
The helper ignores Ctrl-C and SIGTERM: the capture decides when to stop, and ends it.

Started with fork when the capture's process runs one Python thread (the modules are
already loaded: it only warms up the decoder, while the capture reads the keys), else with
spawn.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import types
from typing import Any

import pandas as pd
import pyarrow as pa

from ...decode import JOB_COLUMNS, PAYLOAD_COLUMNS
from ...redact import Redaction
from ...safety import CommandLedger

MIN_JOBS = 30_000       # job hashes in the capture before a helper is worth starting
CHUNK_ROWS = 10_000     # jobs per chunk when the helper shares the work
MAX_JOB_BYTES = 16_384  # queues whose job hashes are bigger on average are read by the capture alone
AHEAD = 4               # chunks either process may read past the first one not yet written

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
    """The capture's side: start, begin a queue, claim chunks, collect results, stop.

    Chunks are claimed, not handed out: the capture and the helper each take the next
    chunk of the queue from one shared counter when they are free, so neither waits for the
    other to be handed work (the helper used to run dry while the capture decoded a chunk
    of its own). Only the ``AHEAD`` chunks from the first one not yet written may be
    claimed: the capture holds at most that many decoded chunks."""

    def __init__(self, redaction: Redaction):
        method = "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        self.method = method
        self.conn, child = ctx.Pipe()
        # [queue generation, next chunk to claim, first chunk not yet written], under one lock
        self.claims = ctx.Array("q", 3, lock=True)
        self.proc = ctx.Process(target=_main, args=(child, redaction, self.claims), name="forensics-helper",
                                daemon=True)
        with _main_hidden() if method == "spawn" else contextlib.nullcontext():
            self.proc.start()
        child.close()
        self.nodes: set[str] = set()
        self.broken: str | None = None   # why it is not used any more
        self.reported = False            # (the capture said so)
        self.received = [0]              # bytes of replies the helper read
        self.gen = 0                     # the queue being shared
        self.n = 0                       # its chunks
        self.mine: set[int] = set()      # chunks the capture claimed
        self.back: set[int] = set()      # chunks the helper sent back (read or undone)

    def begin(self, q, ids: pd.DataFrame, extras, dtypes: dict, log_lines, schemas, node,
              bounds: list[tuple[int, int]], step: int) -> None:
        """Share one queue: its job ids (once, as Arrow), what its chunks are joined with,
        and the chunks' row bounds; the helper starts claiming at once."""
        self.gen += 1
        self.n, self.mine, self.back = len(bounds), set(), set()
        with self.claims.get_lock():
            self.claims[0], self.claims[1], self.claims[2] = self.gen, 0, 0
        lite = _Lite(extras.locks, extras.logs, extras.stalled, extras.job_mem)
        ids = ids[["job_id", "state", "score"]].astype({"job_id": "str", "state": "str", "score": "float64"})
        try:
            if node.addr not in self.nodes:
                self.conn.send(("node", node.addr, node.spec))
                self.nodes.add(node.addr)
            self.conn.send(("queue", self.gen, (q.prefix, q.name, q.flavor, q.base), to_ipc(ids), lite, dtypes,
                            log_lines, schemas, node.addr, bounds, step))
        except (OSError, EOFError, ValueError) as e:
            self._gone(e)

    def claim(self, written: int) -> int | None:
        """The next chunk for the capture to read itself; None when every chunk is claimed or
        the next one is AHEAD chunks past ``written`` (the first not yet written)."""
        with self.claims.get_lock():
            self.claims[2] = written
            k = self.claims[1]
            if k >= self.n or k >= written + AHEAD:
                return None
            self.claims[1] = k + 1
        self.mine.add(k)
        return k

    def end(self) -> None:
        """The helper claims no more chunks of this queue (it was read, or the capture stopped)."""
        with self.claims.get_lock():
            self.claims[0] = -1

    def held(self) -> list[int]:
        """Chunks the helper claimed and has not sent back."""
        with self.claims.get_lock():
            claimed = self.claims[1]
        return [k for k in range(min(claimed, self.n)) if k not in self.mine and k not in self.back]

    def poll(self, timeout: float = 0.0) -> bool:
        """A result (or the helper's end) is waiting."""
        if self.broken is not None:
            return False
        try:
            return self.conn.poll(timeout)
        except (OSError, EOFError, ValueError) as e:
            self._gone(e)
            return False

    def _gone(self, e: BaseException) -> None:
        self.broken = self.broken or f"it ended: {type(e).__name__}: {e}".rstrip(": ")
        self.end()

    def give_up(self, why: str) -> None:
        """Use the helper no more (it did not answer, or it died): the capture reads what it held."""
        self.broken = self.broken or why
        self.end()

    def recv(self, ledger: CommandLedger):
        """(chunk, (kind, jobs, payloads, bytes)) for a chunk read -- kind "ready" (Arrow
        tables for the spool) or "raw" (DataFrames with rows to re-check) -- or (chunk, None)
        for one sent back undone; None for nothing usable (the helper is gone, or the result
        is of a queue no longer shared)."""
        try:
            msg = self.conn.recv()
            if msg[0] != "undone":   # a chunk's two tables follow its header
                jobs, payloads = self.conn.recv_bytes(), self.conn.recv_bytes()
        except (OSError, EOFError, ValueError) as e:
            self._gone(e)
            return None
        if msg[1] != self.gen:
            return None
        k = msg[2]
        self.back.add(k)
        if msg[0] == "undone":
            self.give_up(msg[3])
            return k, None
        kind, _, _, nbytes, counts = msg
        for name, n in counts.items():
            ledger.counts[name] = ledger.counts.get(name, 0) + n
        self.received[0] += nbytes
        if kind == "ready":
            return k, (kind, _table(jobs), _table(payloads), nbytes)
        return k, (kind, from_ipc(jobs, JOB_COLUMNS), from_ipc(payloads, PAYLOAD_COLUMNS), nbytes)

    def close(self) -> None:
        self.end()
        try:
            self.conn.send(("stop",))
        except (OSError, ValueError):
            pass
        self.proc.join(1)
        if self.proc.is_alive():   # it holds results nobody takes, or hangs on Redis: it is done anyway
            self.proc.kill()
            self.proc.join(2)
        self.conn.close()


@contextlib.contextmanager
def _main_hidden():
    """A spawned child runs the parent's ``__main__`` again before it starts (that is how
    multiprocessing finds functions defined there): a user's script without an ``if __name__
    == "__main__"`` guard would run its top level twice -- its side effects, a second
    capture (which multiprocessing refuses, killing the helper) -- and a notebook's kernel
    would import ipykernel again. The helper needs nothing from ``__main__``: while it is
    started, a bare module stands in."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is None:
            sys.modules.pop("__main__", None)
        else:
            sys.modules["__main__"] = main


# ---- the helper process -----------------------------------------------------------------------

def warm_up(redaction: Redaction) -> None:
    """Compile the redaction rules and run the decoder once on a made-up job: the helper
    does it first thing, while the capture is still reading the keys (done by the capture
    before the fork, it cost the capture ~20 ms of decoding a job nobody needs)."""
    from ...decode import decode_jobs
    redaction.needs("x")
    _ = redaction._json_keys, redaction._key_re
    part = pd.DataFrame({"prefix": ["p"], "queue": ["q"], "job_id": ["1"], "state": ["failed"], "score": [1.0],
                         "flavor": ["bullmq"]})
    decode_jobs(part, [{"name": "n", "data": '{"password":"x"}', "opts": '{"attempts":3}', "timestamp": "1",
                        "failedReason": "token=x", "stacktrace": '["Error"]', "atm": "1"}], redact=redaction)


def _claim(claims, gen: int, n: int, stopping: threading.Event) -> int | None:
    """The helper's next chunk of queue ``gen``: None when there is none left, the queue is
    no longer shared, or a stop came. Waits while it is AHEAD chunks past the capture."""
    while not stopping.is_set():
        with claims.get_lock():
            if claims[0] != gen or claims[1] >= n:
                return None
            k = claims[1]
            if k < claims[2] + AHEAD:
                claims[1] = k + 1
                return k
        time.sleep(0.005)
    return None


def _main(conn, redaction: Redaction, claims) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the capture decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    warm_up(redaction)
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
                if item[0] == "undone":
                    conn.send(item)
                    continue
                # A chunk: its header, then its two tables' Arrow IPC bytes as they are (pickled
                # inside the message, each was copied twice more: ~30 ms a chunk of 10,000 jobs).
                kind, gen, k, jobs, payloads, nbytes, counts = item
                conn.send((kind, gen, k, nbytes, counts))
                conn.send_bytes(jobs)
                conn.send_bytes(payloads)
            except (OSError, ValueError):
                return
    sender = threading.Thread(target=post, daemon=True)
    sender.start()
    # ... and messages come in through another, which also tells a stop at once.
    inbox: queue.Queue = queue.Queue()
    stopping = threading.Event()

    def take():
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):    # the capture is gone
                msg = ("stop",)
            if msg[0] == "stop":
                stopping.set()
            inbox.put(msg)
            if msg[0] == "stop":
                return
    threading.Thread(target=take, daemon=True).start()
    broken = False
    try:
        while True:
            msg = inbox.get()
            if msg[0] == "stop":
                return
            if msg[0] == "node":
                _, addr, (host, port, params, role, replica) = msg
                nodes[addr] = Node(host, port, params, ledger, role=role, cluster_replica=replica)
                continue
            _, gen, (prefix, name, flavor, base), ids, joins, dtypes, log_lines, schemas, addr, bounds, step = msg
            ids = _table(ids).to_pandas()
            while not broken and (k := _claim(claims, gen, len(bounds), stopping)) is not None:
                a, b = bounds[k]
                try:
                    node = nodes[addr]
                    part = ids.iloc[a:b].reset_index(drop=True).assign(prefix=prefix, queue=name, flavor=flavor)
                    cmds = [("HGETALL", base + j) for j in part["job_id"].tolist()]
                    before = node.received[0]
                    replies = []
                    batches = [cmds[i:i + step] for i in range(0, len(cmds), step)]
                    for batch, got in zip(batches, node.send_batches(batches) if len(batches) > 1
                                          else [node.send(batches[0])]):
                        for c, r in zip(batch, got):
                            if type(r).__name__ == "ReplyError":
                                raise _Undone(f"{r}")
                            replies.append(shape(c, r))
                    kind, jobs, payloads = ready_chunk(part, replies, redaction, joins, dtypes, log_lines, schemas)
                    counts = dict(ledger.counts)
                    ledger.counts.clear()
                    outbox.put((kind, gen, k, to_ipc(jobs), to_ipc(payloads), node.received[0] - before, counts))
                except Exception as e:  # anything at all: the capture reads this chunk itself, and the rest
                    broken = True
                    outbox.put(("undone", gen, k, f"{type(e).__name__}: {e}"))
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
