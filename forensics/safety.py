"""The one gate every command to the inspected Redis passes through.

A forensics tool must never change the Redis it inspects. Rather than trusting each call
site, the gate wraps the connection's command packer: every command (including the
connection handshake and every pipelined command) is checked against an allowlist of
read-only commands *before* a byte is sent, and counted by name for the manifest.
"""
from __future__ import annotations

import collections
import re
from typing import Any

import hiredis
import redis
from redis.connection import (Connection, HiredisRespSerializer, SSLConnection,
                              UnixDomainSocketConnection)
from redis.maint_notifications import MaintNotificationsConfig

from .errors import UnsafeCommandError
from .redact import Redaction

# Commands that only read data or connection metadata. Container commands list the
# subcommands allowed. Nothing here writes, deletes, renames, expires or runs scripts.
READ_COMMANDS: frozenset[str] = frozenset({
    "PING", "AUTH", "HELLO", "SELECT", "INFO", "DBSIZE", "TIME",
    "SCAN", "TYPE", "EXISTS", "PTTL", "TTL", "GET", "MGET", "STRLEN",
    "HGETALL", "HGET", "HMGET", "HLEN", "HSCAN", "HEXISTS",
    "LLEN", "LRANGE", "LINDEX", "LPOS",
    "ZCARD", "ZRANGE", "ZSCORE", "ZCOUNT", "ZSCAN",
    "SCARD", "SSCAN", "SISMEMBER",
    "XLEN", "XRANGE", "XREVRANGE",
    # Cluster: ASKING only flags this connection to read one key being migrated (a
    # redirection, not a change); READONLY lets a connection read a cluster replica.
    "ASKING", "READONLY", "ROLE",
})
READ_SUBCOMMANDS: dict[str, frozenset[str]] = {
    "CONFIG": frozenset({"GET"}),
    "CLIENT": frozenset({"LIST", "INFO", "ID", "GETNAME"}),
    "MEMORY": frozenset({"USAGE", "STATS"}),
    "XINFO": frozenset({"STREAM", "GROUPS", "CONSUMERS"}),
    "OBJECT": frozenset({"ENCODING", "IDLETIME", "FREQ"}),
    "CLUSTER": frozenset({"INFO", "SLOTS", "SHARDS", "NODES", "MYID", "KEYSLOT"}),
    "SENTINEL": frozenset({"GET-MASTER-ADDR-BY-NAME", "MASTER", "MASTERS", "REPLICAS", "SLAVES", "SENTINELS"}),
}


def _text(x: Any) -> str:
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).decode("utf-8", "replace")
    return str(x)


def command_name(args: tuple) -> str:
    """'HGETALL', 'CONFIG GET', ... from packer arguments ('CLIENT LIST' may come as one string)."""
    words = _text(args[0]).upper().split()
    if words[0] in READ_SUBCOMMANDS:
        sub = words[1] if len(words) > 1 else (_text(args[1]).upper() if len(args) > 1 else "")
        return f"{words[0]} {sub}"
    return words[0]


def is_read_only(args: tuple) -> bool:
    name = command_name(args)
    head, _, sub = name.partition(" ")
    if head in READ_SUBCOMMANDS:
        return sub in READ_SUBCOMMANDS[head]
    return head in READ_COMMANDS


# Upper-case single-word read commands, checked by one dict lookup on the hot path.
_FAST = frozenset(READ_COMMANDS)


class CommandLedger:
    """Counts commands by name (for the manifest). One per capture (single-threaded)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def record(self, name: str) -> None:
        self.counts[name] += 1


class _GatedPacker:
    def __init__(self, inner, ledger: CommandLedger):
        self._inner = inner
        self._ledger = ledger
        # With hiredis, pack plain str/int arguments directly (what redis-py's serializer
        # ends up calling): a million-job capture packs millions of commands.
        self._direct = hiredis.pack_command if isinstance(inner, HiredisRespSerializer) else None

    def pack(self, *args):
        head = args[0] if args else None
        if head in _FAST:  # the hot path: single-word read commands named as str
            self._ledger.counts[head] += 1
            if self._direct is not None:
                try:
                    return [self._direct(args)]
                except TypeError:
                    pass
            return self._inner.pack(*args)
        if not args:
            raise UnsafeCommandError("empty command refused by the read-only gate")
        if not is_read_only(args):
            raise UnsafeCommandError(
                f"refused to send {command_name(args)!r}: queue-forensics only sends read commands"
            )
        self._ledger.record(command_name(args))
        return self._inner.pack(*args)

    def pack_many(self, cmds: list[tuple]) -> bytes:
        """Many commands in one buffer, through the same gate (the hot path of a capture:
        thousands of HGETALLs per round trip)."""
        direct, counts, out = self._direct, self._ledger.counts, []
        for c in cmds:
            head = c[0] if c else None
            if direct is not None and head in _FAST:
                try:
                    out.append(direct(c))
                    counts[head] += 1
                    continue
                except TypeError:
                    pass
            out.extend(self.pack(*c))
        return b"".join(out)


class _GateMixin:
    ledger: CommandLedger

    def _construct_command_packer(self, packer):  # called once per connection
        return _GatedPacker(super()._construct_command_packer(packer), self.ledger)


class _OnConnectMixin:
    """Sends ``on_connect`` (one read command) on every new connection, after the handshake,
    and reads its reply (an error reply, such as NOPERM, is fine)."""
    on_connect: str = "PING"

    def on_connect_check_health(self, check_health: bool = True):
        super().on_connect_check_health(check_health=check_health)
        self.send_command(self.on_connect, check_health=False)
        try:
            self.read_response()
        except redis.ResponseError:
            pass


class _TLSHandshakeMixin(_OnConnectMixin):
    # TLS 1.3 servers send session tickets after the handshake. redis-py reads them as
    # "data waiting" on a fresh connection (and refuses it: "Connection not ready") unless
    # a reply was read first: read one (PING, or its NOPERM for a bare ACL user).
    on_connect = "PING"


class _ReplicaReadsMixin(_OnConnectMixin):
    # A cluster replica answers reads only on a connection flagged READONLY (a flag of this
    # connection, not a change to any data); otherwise it redirects to its master.
    on_connect = "READONLY"


def _gated(base: type, ledger: CommandLedger, cluster_replica: bool = False) -> type:
    mixins: tuple[type, ...] = (_GateMixin,)
    if cluster_replica:
        mixins += (_ReplicaReadsMixin,)  # its READONLY reply also clears TLS session tickets
    elif issubclass(base, SSLConnection):
        mixins += (_TLSHandshakeMixin,)
    return type(f"ReadOnly{base.__name__}", (*mixins, base), {"ledger": ledger})


def read_only_client(url: str | None, ledger: CommandLedger, cluster_replica: bool = False,
                     **kwargs) -> redis.Redis:
    """A redis client whose every connection refuses non-read commands before sending
    (``url`` None: host, port and the rest given as keyword arguments). ``cluster_replica``:
    each connection sends READONLY first, to read a cluster replica."""
    # The handshake must stay read-only too: no CLIENT SETINFO, no maintenance
    # notifications subscription (redis-py >= 8 sends CLIENT MAINT_NOTIFICATIONS).
    kwargs.setdefault("driver_info", None)
    kwargs.setdefault("maint_notifications_config", MaintNotificationsConfig(enabled=False))
    pool = redis.ConnectionPool.from_url(url, **kwargs) if url else redis.ConnectionPool(**kwargs)
    base = pool.connection_class
    if base not in (Connection, SSLConnection, UnixDomainSocketConnection):
        base = Connection
    pool.connection_class = _gated(base, ledger, cluster_replica)
    return redis.Redis(connection_pool=pool)


def redact_url(url: str) -> str:
    """The URL without user name or password (for manifests, messages and reports)."""
    return re.sub(r"(?<=://)[^@/]*@", "", url)


# ---- secret redaction: see forensics.redact -----------------------------------------------

def redact_json_text(text: str) -> tuple[str, int]:
    """Redact values of secret-looking keys inside a JSON text, and secrets inside its
    strings. Returns (text, replacements); text that is not JSON gets the text rules only."""
    return Redaction().json_text(text)
