"""One capture story, two backends: the steps every capture takes, in this order, and what a
stop or a lost connection does to them.

A Redis capture (``redis/readers.py``) and a PostgreSQL one (``postgres/reader.py``) are each a
``Reader``. ``run`` drives either the same way:

    connect        reach the server, check the credentials (ConnectError: nothing to keep)
    read_server    the server's own row (version, memory, settings)
    find_queues    which queues there are (SCAN of the prefix / the schema's queue names)
    read_queue     each queue in turn: states, jobs, payloads, events, metrics, ...
    read_workers   the connections the workers hold (CLIENT LIST / pg_stat_activity)
    close          the connections closed, whatever happened
    assemble       the tables and the manifest, from the spool: always, even cut short

A first Ctrl-C or SIGTERM (``progress.stop_on_ctrl_c``), or the server going away (the
reader's ``LOST`` errors), ends the reading; what was read is assembled, marked
``complete: false`` with the reason. Where a command travels (nodes, redirects, pacing,
the read-only gate) is each backend's own business, below the steps.
"""
from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..snapshot import Snapshot, attach_spool
from .progress import Progress, Stopped, stop_on_ctrl_c

MAX_WARNINGS = 200


class Log:
    """What a capture tells the reader of its manifest besides the tables: warnings (each once,
    at most MAX_WARNINGS) and what the server would not give (``unavailable``: the command, the
    node, why, and what the diagnosis loses without it)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.unavailable: list[dict[str, Any]] = []

    def warn(self, text: str) -> None:
        if text not in self.warnings and len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)

    def refused(self, command: str, node: str | None, why: str, consequence: str, many_nodes: bool = False) -> bool:
        """Record a refused command once per command and node; False when it already was."""
        if any(u["command"] == command and u["node"] == node for u in self.unavailable):
            return False
        self.unavailable.append({"command": command, "node": node, "error": why, "consequence": consequence})
        short = why.split(" (")[0]
        self.warn(f"{command}{' ' if short.startswith(('refused', 'not available')) else ': '}{short}"
                  + (f" on {node}" if node and many_nodes else "") + f": {consequence}")
        return True


class Reader:
    """The steps of one capture (see the module's docstring); each backend fills them in."""

    LOST: tuple[type[BaseException], ...] = (ConnectionError,)   # the server went away mid-read
    server_name = "the server"

    progress: Progress
    spool: Path
    queues: list

    def __init__(self) -> None:
        self.complete = True
        self.reason: str | None = None
        self.stop_requested = False
        self.stop_signal: str | None = None  # "Ctrl-C" or "SIGTERM" once asked to stop

    # -- the steps ------------------------------------------------------------------------
    def connect(self) -> None:
        raise NotImplementedError

    def read_server(self) -> None:
        raise NotImplementedError

    def find_queues(self) -> list:
        raise NotImplementedError

    def read_queue(self, q) -> None:
        raise NotImplementedError

    def read_workers(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def assemble(self) -> Snapshot:
        raise NotImplementedError

    # -- around them ----------------------------------------------------------------------
    def queue_label(self, q) -> str:
        return str(q)

    def lost_reason(self, err: BaseException) -> str:
        return f"lost the connection to {self.server_name}: {err}"

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """What holds for the whole capture (the Redis one turns the garbage collector off and
        starts its phase clock)."""
        yield


def spooled_snapshot(tables: dict, manifest: dict, spool: Path, spools: dict) -> Snapshot:
    """The snapshot a capture assembles: the small tables in memory, the big ones (``spools``:
    jobs, payloads, events, closed) the spool's Parquet files, with the digests taken as they
    were written."""
    snap = Snapshot(tables, manifest, files={name: sp.path for name, sp in spools.items()})
    attach_spool(snap, spool, {name: sp.digest for name, sp in spools.items()})
    return snap


def run(reader: Reader) -> Snapshot:
    """The steps, in order; a capture cut short returns what was read (``complete`` False,
    with the reason, and a warning). Any other error -- a refused connection, a full disk
    under the spool, a bug -- leaves no working file behind."""
    try:
        with reader.reading():
            reader.connect()
            progress = reader.progress
            try:
                with stop_on_ctrl_c(reader, progress):
                    reader.read_server()
                    queues = reader.find_queues()
                    for i, q in enumerate(queues):
                        progress.update(f"queue {i + 1}/{len(queues)} {reader.queue_label(q)}", force=True)
                        reader.read_queue(q)
                    reader.read_workers()
            except reader.LOST as e:
                reader.complete, reader.reason = False, reader.lost_reason(e)
            except (KeyboardInterrupt, Stopped):
                reader.complete, reader.reason = False, f"interrupted ({reader.stop_signal or 'Ctrl-C'})"
            finally:
                progress.done()
                reader.close()
            snap = reader.assemble()
    except BaseException:
        shutil.rmtree(reader.spool, ignore_errors=True)
        raise
    if not snap.complete:
        warnings.warn(f"capture incomplete: {reader.reason}", stacklevel=4)  # at the caller of capture()
    return snap
