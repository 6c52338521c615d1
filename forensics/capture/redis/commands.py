"""How a Redis capture's commands travel: below the readers, above the connections.

The readers (``readers.py``) say what to read -- a list of commands -- and get one reply per
command back, in order, whatever the topology. ``Commands`` does the rest:

* **routing**: each command goes to the node that serves its key (the source's ``route``;
  a command without a key goes to the node named);
* **bounded pipelines**: at most ``PIPELINE`` commands a round trip (fewer when a reader asks,
  or when ``--max-ops-per-sec`` paces them), two batches in flight;
* **cluster redirects**: MOVED re-reads a key from its new owner (and the source remembers
  it), ASK reads it once from the importing node after ASKING, ``REDIRECT_ROUNDS`` at most;
* **errors per command**: a refused command (ACL, renamed, disabled) becomes None and an entry
  in the manifest's ``unavailable`` with what the diagnosis loses; refused on an essential
  command it is fatal (exit 3); a wrong type or a slot without owner is a warning;
* **stops**: a stop asked for is honoured before the next round trip.

Replies are read straight from the socket with hiredis (RESP2, which every Redis BullMQ
supports): redis-py's per-command pipeline machinery costs more than the Redis work itself on
million-job captures. Commands are still packed by the connection's gated packer, so the
read-only gate (``safety.py``) sees every one of them.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import hiredis
import redis

from ...clock import phase
from ...errors import ConnectError
from ...safety import command_name
from ..progress import Stopped, Throttle
from ..steps import Log
from ..tables import shape
from .sources import Node, Source

PIPELINE = 500         # commands per pipeline round trip
REDIRECT_ROUNDS = 5    # MOVED/ASK followed at most this many times per command
# A command a managed service renamed or disabled answers like an unknown one.
REFUSED = re.compile(r"^ERR (unknown command|unknown subcommand|Unknown subcommand|.*disabled|.*not allowed)"
                     r"|^ERR command .* not allowed", re.I)
# Commands whose absence (ACL) leaves the capture blind: refused -> exit 3.
ESSENTIAL = {"SCAN", "TYPE", "HGETALL", "LRANGE", "ZRANGE", "LLEN", "ZCARD"}
# What the diagnosis loses when a command is refused (manifest ``unavailable``).
CONSEQUENCES = {
    "INFO": "Redis memory, eviction counters, clients and version unknown: memory-pressure, eviction-policy "
            "and redis-memory-growth are not judged",
    "CONFIG GET": "maxmemory and maxmemory-policy taken from INFO where it has them, else unknown",
    "CLIENT LIST": "worker connections unknown: no-workers is not judged and the health-checks item is unknown",
    "MEMORY USAGE": "bytes per queue and per key family not measured: bloat findings judge payload sizes only",
    "XRANGE": "events stream not read: retry rates, events-stream-bloat and event timelines are not judged",
    "SSCAN": "stalled set not read: in_stalled_set is false for every job",
    "LPOS": "missing hashes and orphans are not re-checked: some may be jobs that moved while we read",
    "ZSCORE": "missing hashes and orphans are not re-checked: some may be jobs that moved while we read",
    "PTTL": "lock expiries unknown",
    "GET": "locks and counters not read: active jobs look unlocked",
    "XLEN": "events stream length unknown",
    "SCARD": "stalled set size unknown",
}


class Commands:
    """Sends a reader's commands where they go and hands back one reply per command."""

    def __init__(self, log: Log, counts: dict[str, int], *, throttle: Throttle | None,
                 stopped: Callable[[], bool], acl_hint: str):
        self.log = log
        self.counts = counts          # the capture's counts: ``redirects`` is kept here
        self.throttle = throttle
        self.stopped = stopped        # a stop asked for (checked before every round trip)
        self.acl_hint = acl_hint      # the ACL that would let an essential command through
        self.src: Source | None = None  # set once the source is open

    def results(self, cmds: list[tuple], essential: bool = True, node: Node | None = None,
                step: int | None = None, raw: bool = False) -> list[Any]:
        """One reply per command, in order. Per-command errors become None (+ a warning or an
        ``unavailable`` entry); a refused permission on an essential command raises
        ConnectError; a lost connection raises (the capture decides what that costs).
        ``raw``: replies as RESP2 gives them (a zset's members and scores in one flat list),
        not in the shapes redis-py's callbacks would give."""
        if self.stopped():  # Ctrl-C: stop at the next round trip, keep what is read
            raise Stopped()
        with phase("read"):
            return self._run(cmds, essential, node, step, raw)

    def one(self, *cmd, essential: bool = True, node: Node | None = None):
        return self.results([cmd], essential, node)[0]

    def raw(self, node: Node, cmd: tuple):
        """One command on one node, its error reply returned as is (not recorded)."""
        if self.stopped():
            raise Stopped()
        return node.send([cmd])[0]

    def unavailable(self, name: str, node: Node | None, why: str, consequence: str | None = None) -> None:
        """A command the server would not run: recorded once per command and node, with what
        the diagnosis loses without it (never guessed around)."""
        self.log.refused(name, node.addr if node is not None else None, why,
                         consequence or CONSEQUENCES.get(name, "that part of the snapshot is empty"),
                         many_nodes=bool(self.src and len(self.src.nodes) > 1))

    def was_refused(self, name: str, addr: str | None) -> bool:
        """Was ``name`` refused on the node at ``addr`` (or everywhere)?"""
        return any(u["command"] == name and u["node"] in (None, addr) for u in self.log.unavailable)

    # -- below ----------------------------------------------------------------------------
    def _run(self, cmds: list[tuple], essential: bool, node: Node | None, step: int | None,
             raw: bool = False) -> list[Any]:
        out: list[Any] = [None] * len(cmds)
        plan = [(node, range(len(cmds)))] if node is not None else self.src.route(cmds)
        redirected: list[tuple[int, str]] = []
        for n, idx in plan:
            sub = cmds if len(plan) == 1 else [cmds[i] for i in idx]
            size = min(step or PIPELINE, PIPELINE if self.throttle is None else self.throttle.batch)
            starts = range(0, len(sub), size)
            if self.throttle is None and len(starts) > 1:  # two batches in flight
                rounds = zip(starts, n.send_batches([sub[a:a + size] for a in starts]))
            else:
                rounds = ((a, self._send_paced(n, sub[a:a + size])) for a in starts)
            for start, replies in rounds:
                batch = sub[start:start + size]
                for i, c, r in zip(idx[start:start + size], batch, replies):
                    if isinstance(r, hiredis.ReplyError):
                        text = str(r)
                        if self.src.clustered and text.startswith(("MOVED ", "ASK ")):
                            redirected.append((i, text))
                            continue
                        out[i] = self._error(c, r, essential, n)
                    else:
                        out[i] = r if raw else shape(c, r)
        if redirected:
            self._follow(cmds, out, redirected, essential, raw)
        return out

    def _send_paced(self, n: Node, batch: list[tuple]) -> list[Any]:
        if self.throttle is not None:
            self.throttle.take(len(batch))
        return n.send(batch)

    def _follow(self, cmds: list[tuple], out: list[Any], redirected: list[tuple[int, str]], essential: bool,
                raw: bool = False) -> None:
        """A slot moved while we read (a resharding): MOVED re-reads the key from its new
        owner (and remembers it); ASK reads it once from the importing node, after ASKING."""
        for _ in range(REDIRECT_ROUNDS):
            if not redirected:
                return
            self.counts["redirects"] += len(redirected)
            by_node: dict[int, tuple[Node, list[tuple[int, bool]]]] = {}
            for i, text in redirected:
                kind, slot, addr = text.split()[:3]
                node = self.src.moved(int(slot), addr) if kind == "MOVED" else self.src.node_at(addr)
                by_node.setdefault(id(node), (node, []))[1].append((i, kind == "ASK"))
            redirected = []
            for node, items in by_node.values():
                batch: list[tuple] = []
                for i, ask in items:
                    batch += [("ASKING",), cmds[i]] if ask else [cmds[i]]
                replies = node.send(batch)
                k = 0
                for i, ask in items:
                    k += 1 if ask else 0
                    r = replies[k]
                    k += 1
                    if isinstance(r, hiredis.ReplyError):
                        text = str(r)
                        if text.startswith(("MOVED ", "ASK ")):
                            redirected.append((i, text))
                            continue
                        out[i] = self._error(cmds[i], r, essential, node)
                    else:
                        out[i] = r if raw else shape(cmds[i], r)
        for i, text in redirected:
            self.log.warn(f"{command_name(cmds[i])} {cmds[i][1]}: still redirected after {REDIRECT_ROUNDS} tries "
                          f"({text}); not read")

    def _error(self, cmd: tuple, err: Exception, essential: bool, node: Node | None = None):
        name = command_name(cmd)
        text = str(err)
        if isinstance(err, (redis.ConnectionError, redis.TimeoutError)):
            raise err
        if isinstance(err, redis.exceptions.NoPermissionError) or text.startswith("NOPERM"):
            if essential and name in ESSENTIAL:
                raise ConnectError(
                    f"the Redis user may not run {name} on {cmd[1] if len(cmd) > 1 else ''}: "
                    f"grant it read access ({self.acl_hint}): {err}")
            self.unavailable(name, node, f"refused by ACL ({text})")
            return None
        if REFUSED.search(text):  # renamed or disabled by a managed service
            if essential and name in ESSENTIAL:
                raise ConnectError(f"this Redis does not run {name} ({text}): queue-forensics cannot read queues "
                                   "without it")
            self.unavailable(name, node, f"not available ({text})")
            return None
        if "WRONGTYPE" in text:
            self.log.warn(f"key {cmd[1]} has an unexpected type for {name}; skipped")
            return None
        if text.startswith("CLUSTERDOWN"):
            self.log.warn(f"{name} {cmd[1] if len(cmd) > 1 else ''}: the cluster is down for this slot ({text})")
            return None
        self.log.warn(f"{name} {cmd[1] if len(cmd) > 1 else ''} failed: {err}")
        return None
