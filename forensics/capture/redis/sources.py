"""Sources: how a capture reaches the data (one node, a cluster's masters, a master or
replica found through Sentinel, a private server on an RDB backup).

A source owns the connections. TLS and credentials live here, and every connection it
makes goes through the read-only gate (``safety.read_only_client``). The readers
(``readers.py``) never see a topology: they hand commands to ``Commands`` (``commands.py``),
which asks the source which node serves each key (``route``) and follows the cluster's MOVED
and ASK redirections.
"""
from __future__ import annotations

import ssl
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.crc import key_slot
from redis._parsers.helpers import parse_info

from ...stop import check_stop
from ...errors import ConnectError, UsageError
from ...safety import CommandLedger, read_only_client, redact_url

SLOTS = 16384


@dataclass
class Connect:
    """How to reach the Redis to capture (``forensics.capture`` keyword arguments)."""
    url: str
    cluster: bool | None = None        # None: detect (INFO cluster)
    replica: bool = False              # read a replica of the primary instead of the primary
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    socket_timeout: float = 30.0

    @property
    def tls(self) -> bool:
        return self.url.startswith(("rediss://", "rediss+sentinel://")) or \
            bool(self.tls_ca or self.tls_cert or self.tls_key or self.tls_insecure)

    def tls_kwargs(self) -> dict:
        if not self.tls:
            return {}
        if bool(self.tls_cert) != bool(self.tls_key):
            raise UsageError("--tls-cert and --tls-key go together (the client certificate and its key)")
        for flag, path in (("--tls-ca", self.tls_ca), ("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as e:
                    raise UsageError(f"{flag} {path}: {e.strerror or e}") from None
        return {"connection_class": SSLConnection, "ssl_ca_certs": self.tls_ca,
                "ssl_certfile": self.tls_cert, "ssl_keyfile": self.tls_key,
                "ssl_cert_reqs": "none" if self.tls_insecure else "required",
                "ssl_check_hostname": not self.tls_insecure}

    def describe_tls(self) -> dict | None:
        if not self.tls:
            return None
        out = {"verify": not self.tls_insecure, "ca": self.tls_ca or "system default",
               "client_certificate": bool(self.tls_cert)}
        if self.tls_insecure:
            out["warning"] = ("--tls-insecure: the server's certificate and host name were NOT verified; "
                              "anyone on the path could have served this data")
        return out


class Node:
    """One Redis server the capture talks to, through its own gated connection pool."""

    def __init__(self, host: str | None, port: int | None, params: dict, ledger: CommandLedger,
                 role: str = "standalone", cluster_replica: bool = False):
        self.role = role
        self.node_id: str | None = None
        self.slots: list[tuple[int, int]] = []
        self.error: str | None = None
        self.replica_addrs: list[tuple[str, int, str | None]] = []  # a cluster master's replicas
        self.replica_of: str | None = None
        self.replication: dict | None = None
        self.received = [0]  # bytes of replies read from this node (sizes the next pipelines)
        # what another process needs to open its own gated connection to this node (the helper)
        self.spec = (host, port, params, role, cluster_replica)
        if "path" in params:  # a unix socket (unix:///run/redis.sock)
            self.host, self.port, self.addr = None, None, f"unix:{params['path']}"
            self.client = read_only_client(None, ledger, **params)
            return
        self.host, self.port = host, int(port)
        self.addr = f"{host}:{port}"
        self.client = read_only_client(None, ledger, cluster_replica=cluster_replica, host=host, port=int(port),
                                       **params)

    def send(self, cmds: list[tuple]) -> list[Any]:
        """Raw RESP2 replies (hiredis; errors returned as ``hiredis.ReplyError``), one round trip."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            # the gated packer (see safety.py)
            conn.send_packed_command([conn._command_packer.pack_many(cmds)], check_health=False)
            return read_replies(conn, len(cmds), tally=self.received)
        except BaseException:
            conn.disconnect()  # never reuse a connection with unread replies
            raise
        finally:
            pool.release(conn)

    def send_batches(self, batches: list[list[tuple]]):
        """Yield each batch's raw replies, with the next batch already on the wire while one
        is read (two in flight): Redis works on one while we parse the other."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            packer = conn._command_packer  # the gated packer (see safety.py)

            def put(cmds):
                conn.send_packed_command([packer.pack_many(cmds)], check_health=False)
            reader = hiredis.Reader(encoding="utf-8", errors="replace")
            put(batches[0])
            for k, batch in enumerate(batches):
                if k + 1 < len(batches):
                    put(batches[k + 1])
                yield read_replies(conn, len(batch), reader, self.received)
        except BaseException:
            conn.disconnect()  # never reuse a connection with unread replies
            raise
        finally:
            pool.release(conn)

    def call(self, *cmd) -> Any:
        return self.send([cmd])[0]

    def close(self) -> None:
        try:
            self.client.close()
            self.client.connection_pool.disconnect()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"Node({self.addr}, {self.role})"


STOP_POLL = 0.5   # seconds a read waits on a silent Redis before it looks for a stop


def read_replies(conn, n: int, reader: "hiredis.Reader | None" = None, tally: list[int] | None = None) -> list[Any]:
    """``n`` replies off the socket. With several batches in flight, pass one ``reader`` for
    all of them: a recv may carry the start of the next batch's replies. ``tally[0]`` grows by
    the bytes received."""
    sock = conn._sock
    if reader is None:
        reader = hiredis.Reader(encoding="utf-8", errors="replace")
    replies: list[Any] = []
    limit = sock.gettimeout()
    waited = 0.0
    # Wake every STOP_POLL s while Redis is silent: a stop is honoured then, not after --timeout.
    sock.settimeout(min(limit, STOP_POLL) if limit else STOP_POLL)
    try:
        while len(replies) < n:
            r = reader.gets()
            if r is not False:
                replies.append(r)
                continue
            try:
                data = sock.recv(262144)
            except socket.timeout:
                waited += sock.gettimeout()
                check_stop()
                if limit is not None and waited >= limit:
                    raise redis.TimeoutError(f"Redis sent nothing for {limit:g} s (--timeout)") from None
                continue
            except ssl.SSLWantReadError:
                continue
            waited = 0.0
            if not data:
                raise redis.ConnectionError("Redis closed the connection")
            if tally is not None:
                tally[0] += len(data)
            reader.feed(data)
    finally:
        sock.settimeout(limit)
    return replies


def connect_error(where: str, e: BaseException, tls: bool) -> ConnectError:
    """One line an on-call engineer can act on, for a failed connection or handshake."""
    text = str(e)
    if isinstance(e, redis.AuthenticationError) or "WRONGPASS" in text or "invalid username-password" in text:
        return ConnectError(f"Redis at {where} refused the credentials: {text}. Check the user name and password in the URL")
    if "NOAUTH" in text:
        return ConnectError(f"Redis at {where} needs a password: {text}")
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        hint = ("host name does not match the certificate (connect by the name it was issued for)"
                if "match" in text or "hostname" in text.lower() or "IP address mismatch" in text
                else "the server's certificate is not signed by a trusted CA (pass --tls-ca FILE with the CA that signed it)")
        return ConnectError(f"TLS to Redis at {where} failed: {hint}: {text}")
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text or "record layer failure" in text:
        return ConnectError(f"TLS to Redis at {where} failed: the port does not speak TLS (use redis:// without "
                            f"--tls-* flags): {text}")
    if "CERTIFICATE_REQUIRED" in text or "certificate required" in text:
        return ConnectError(f"TLS to Redis at {where} failed: the server wants a client certificate "
                            f"(--tls-cert FILE --tls-key FILE): {text}")
    if tls and "Timeout connecting" in text:
        return ConnectError(f"TLS to Redis at {where} failed: no answer to the TLS handshake (is this a TLS port? a "
                            f"plain Redis port stays silent: use redis:// without --tls-* flags): {text}")
    if tls and ("Connection reset" in text or "closed" in text.lower() or "EOF" in text):
        return ConnectError(f"TLS to Redis at {where} failed: the server closed the handshake (it may want a client "
                            f"certificate: --tls-cert/--tls-key): {text}")
    if not tls and ("Connection reset" in text or "Connection closed by server" in text):
        return ConnectError(f"cannot connect to Redis at {where}: the server closed the connection (if it serves TLS, "
                            f"use rediss://): {text}")
    if isinstance(e, redis.exceptions.NoPermissionError):
        return ConnectError(f"Redis at {where}: permission denied ({text})")
    return ConnectError(f"cannot connect to Redis at {where}: {text}")


def ping(node: Node, tls: bool, where: str | None = None) -> None:
    """Check a node answers and accepts the credentials. A user without PING (a bare
    ``+@read`` ACL user) answers NOPERM: it is authenticated, which is all we need."""
    where = where or node.addr
    try:
        r = node.call("PING")
    except redis.ResponseError as e:  # raised by the handshake (AUTH / SELECT)
        raise connect_error(where, e, tls) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise connect_error(where, e, tls) from None
    if isinstance(r, hiredis.ReplyError):
        text = str(r)
        if text.startswith("NOPERM"):
            return
        raise connect_error(where, redis.ResponseError(text), tls)


def _flat_info(text: Any) -> dict:
    return parse_info(text) if isinstance(text, str) else {}


class Source:
    """One node (the default). Subclasses add topology."""
    mode = "standalone"
    clustered = False

    def __init__(self, c: Connect, ledger: CommandLedger, warn):
        self.c = c
        self.ledger = ledger
        self.warn = warn
        self.params = self._params(c)
        self.nodes: list[Node] = []          # the nodes whose data is read
        self.down: list[Node] = []           # nodes that could not be reached
        self.workers_nodes: list[Node] = []  # where CLIENT LIST shows the workers
        self.workers_note: str | None = None  # why the workers are unknown, if they are
        self.replication: dict | None = None
        self.extra: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return redact_url(self.c.url)

    def _params(self, c: Connect) -> dict:
        return node_params(c)

    def open(self) -> None:
        host, port = self.params.pop("host"), self.params.pop("port")
        node = Node(host, port, self.params, self.ledger)
        ping(node, self.c.tls, self.label)
        self.nodes = [node]
        self.workers_nodes = [node]

    def route(self, cmds: list[tuple]) -> list[tuple[Node, range | list[int]]]:
        return [(self.nodes[0], range(len(cmds)))]

    def node_of(self, key: str) -> Node:
        return self.nodes[0]

    def describe(self) -> dict:
        out: dict[str, Any] = {"mode": self.mode,
                               "nodes": [self._node_dict(n) for n in self.nodes + self.down]}
        if self.replication:
            out["replication"] = self.replication
        out.update(self.extra)
        return out

    @staticmethod
    def _node_dict(n: Node) -> dict:
        d: dict[str, Any] = {"addr": n.addr, "role": n.role}
        if n.node_id:
            d["id"] = n.node_id
        if n.slots:
            d["slots"] = sum(b - a + 1 for a, b in n.slots)
            d["slot_ranges"] = [[a, b] for a, b in n.slots]
        if n.replica_of:
            d["replica_of"] = n.replica_of
        if n.replication:
            d["lag_bytes"] = n.replication.get("lag_bytes")
        if n.error:
            d["error"] = n.error
        return d

    def close(self) -> None:
        seen = set()
        for n in self.nodes + self.down + self.workers_nodes:
            if id(n) not in seen:
                seen.add(id(n))
                n.close()


def node_params(c: Connect) -> dict:
    """Connection keyword arguments shared by every node (credentials, db, TLS, timeouts)."""
    try:
        p = parse_url(c.url)
    except ValueError as e:
        raise UsageError(f"bad Redis URL {redact_url(c.url)!r}: {e}") from None
    if p.pop("connection_class", None) is UnixDomainSocketConnection:
        if c.tls:
            raise UsageError("TLS over a unix socket is not supported: use rediss://host:port")
        p["connection_class"] = UnixDomainSocketConnection
        p.update(host=None, port=None)
    p.setdefault("host", "localhost")
    p.setdefault("port", 6379)
    p.update(c.tls_kwargs())
    p.update(decode_responses=True, protocol=2, encoding_errors="replace",
             socket_timeout=c.socket_timeout, socket_connect_timeout=min(c.socket_timeout, 10))
    return p


class ClusterSource(Source):
    """Every master of a Redis Cluster; each key read from the node that owns its slot."""
    mode = "cluster"
    clustered = True

    def _refresh(self, via: Node) -> None:
        r = via.call("CLUSTER", "SLOTS")
        if isinstance(r, hiredis.ReplyError):
            raise ConnectError(f"cannot read the cluster's slots from {via.addr} (CLUSTER SLOTS: {r}); "
                               "grant the user +cluster|slots, or capture each node with --no-cluster")
        masters: dict[str, Node] = {n.addr: n for n in getattr(self, "masters", [])}
        for n in masters.values():
            n.slots = []
        for entry in r:
            a, b, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0] or via.host
            addr = f"{host}:{int(primary[1])}"
            node = masters.get(addr)
            if node is None:
                node = via if addr == via.addr else Node(host, int(primary[1]), self.params, self.ledger)
                masters[addr] = node
            node.role = "master"
            node.node_id = primary[2] if len(primary) > 2 else None
            node.slots.append((a, b))
            node.replica_addrs = [(str(x[0] or host), int(x[1]), x[2] if len(x) > 2 else None) for x in entry[3:]]
            for s in range(a, b + 1):
                self.slot_node[s] = node
        self.masters = sorted(masters.values(), key=lambda n: (n.host, n.port))
        for n in self.masters:
            n.slots.sort()

    def use_replicas(self) -> None:
        """--replica: read each master's slots from one of its replicas (connections flagged
        READONLY); CLIENT LIST stays on the masters, where the workers connect."""
        chosen = []
        for m in self.nodes:
            picked, errors = None, []
            for host, port, node_id in m.replica_addrs:
                n = Node(host, port, self.params, self.ledger, role="replica", cluster_replica=True)
                try:
                    ping(n, self.c.tls)
                except ConnectError as e:
                    errors.append(str(e))
                    n.close()
                    continue
                info = _flat_info(n.call("INFO", "replication"))
                if info and info.get("master_link_status") not in (None, "up"):
                    errors.append(f"{n.addr}: link to its master is {info.get('master_link_status')}")
                    n.close()
                    continue
                picked = n
                picked.node_id = node_id
                break
            if picked is None:
                self.warn(f"no replica of master {m.addr} can be read ({'; '.join(errors) or 'it has none'}): "
                          "its slots are read from the master")
                chosen.append(m)
                continue
            picked.slots, picked.replica_of = list(m.slots), m.addr
            picked.replication = replication_of(picked, m)
            for a, b in m.slots:
                for slot in range(a, b + 1):
                    self.slot_node[slot] = picked
            chosen.append(picked)
        self.workers_nodes = list(self.nodes)
        self.nodes = chosen
        self.extra["reads"] = "replicas"

    def route(self, cmds):
        groups: dict[int, tuple[Node, list[int]]] = {}
        sn = self.slot_node
        for i, c in enumerate(cmds):
            key = c[2] if c[0] == "MEMORY" else c[1]
            node = sn[key_slot(key.encode("utf-8", "surrogateescape"))] or self.seed
            g = groups.get(id(node))
            if g is None:
                groups[id(node)] = g = (node, [])
            g[1].append(i)
        return list(groups.values())

    def node_of(self, key: str) -> Node:
        return self.slot_node[key_slot(key.encode("utf-8", "surrogateescape"))] or self.seed

    def moved(self, slot: int, addr: str) -> Node:
        node = self.node_at(addr)
        self.slot_node[slot] = node
        if node not in self.nodes and node not in self.down:
            try:
                ping(node, self.c.tls)
                self.nodes.append(node)
            except ConnectError as e:
                node.error = str(e)
                self.down.append(node)
        return node

    def node_at(self, addr: str) -> Node:
        for n in self.masters + self.nodes + self.down:
            if n.addr == addr:
                return n
        host, _, port = addr.rpartition(":")
        n = Node(host, int(port), self.params, self.ledger, role="master")
        self.masters.append(n)
        return n

    def describe(self) -> dict:
        out = super().describe()
        out["slots_covered"] = sum(1 for n in self.slot_node if n is not None)
        return out

    def close(self) -> None:
        super().close()
        for n in self.masters + [self.seed]:  # masters only met through MOVED, and the seed node
            n.close()


class ReplicaSource(Source):
    """A replica of the primary the URL names (or the URL's replica itself): the lowest-impact
    capture on a loaded system. CLIENT LIST is read on the primary, where the workers are."""
    mode = "replica"

    def open(self) -> None:
        super().open()
        seed = self.nodes[0]
        info = _flat_info(seed.call("INFO", "replication"))
        if not info:
            raise ConnectError(f"--replica: INFO replication is not allowed at {seed.addr}; cannot find a replica "
                               "(connect to the replica's own address instead, without --replica)")
        if info.get("role") == "slave":
            replica, primary = seed, None
            host, port = info.get("master_host"), info.get("master_port")
            if host and port:
                primary = Node(str(host), int(port), self.params, self.ledger, role="master")
        else:
            replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            online = [r for r in replicas if r.get("state") == "online"]
            if not online:
                raise ConnectError(f"--replica: the primary at {seed.addr} has no online replica "
                                   f"({len(replicas)} known); capture the primary without --replica")
            best = max(online, key=lambda r: int(r.get("offset", 0)))
            primary, replica = seed, Node(str(best["ip"]), int(best["port"]), self.params, self.ledger)
            ping(replica, self.c.tls)
        replica.role = "replica"
        self._settle(replica, primary)

    def _settle(self, replica: Node, primary: Node | None) -> None:
        self.nodes = [replica]
        reachable = primary
        if primary is not None:
            try:
                ping(primary, self.c.tls)
                self.workers_nodes = [primary]
            except ConnectError as e:
                primary.error = str(e)
                self.workers_nodes = []
                self.workers_note = f"the primary {primary.addr} could not be reached ({e}): workers unknown"
                reachable = None
        else:
            self.workers_nodes = []
            self.workers_note = "the replica does not name its primary: workers unknown"
        rep = replication_of(replica, reachable)
        rep["primary"] = primary.addr if primary is not None else None
        if rep["master_link_status"] not in (None, "up"):
            self.warn(f"the replica's link to its primary is {rep['master_link_status']}: its data may be old "
                      f"(last contact {rep['master_last_io_seconds_ago']} s ago)")
        replica.replication = rep
        self.replication = rep


def replication_of(replica: Node, primary: Node | None) -> dict:
    """How far behind its primary a replica is (bytes), its link status and last contact."""
    rinfo = _flat_info(replica.call("INFO", "replication"))
    rep: dict[str, Any] = {"replica": replica.addr, "primary": primary.addr if primary else None,
                           "master_link_status": rinfo.get("master_link_status"),
                           "master_last_io_seconds_ago": rinfo.get("master_last_io_seconds_ago"),
                           "replica_offset": rinfo.get("slave_repl_offset", rinfo.get("master_repl_offset")),
                           "primary_offset": None, "lag_bytes": None}
    if primary is not None:
        pinfo = _flat_info(primary.call("INFO", "replication"))
        rep["primary_offset"] = pinfo.get("master_repl_offset")
        if rep["primary_offset"] is not None and rep["replica_offset"] is not None:
            rep["lag_bytes"] = max(int(rep["primary_offset"]) - int(rep["replica_offset"]), 0)
    return rep


class SentinelSource(ReplicaSource):
    """``redis+sentinel://[user:pass@]host:26379[,host:26380]/service[/db]``: the sentinels
    name the master (and its replicas, with ``--replica``)."""
    mode = "sentinel"

    def _params(self, c: Connect) -> dict:
        self.sentinels, self.service, db = parse_sentinel_url(c.url)
        params = node_params(Connect(f"{'rediss' if c.tls else 'redis'}://{_userinfo(c.url)}x:1/{db}",
                                     tls_ca=c.tls_ca, tls_cert=c.tls_cert, tls_key=c.tls_key,
                                     tls_insecure=c.tls_insecure, socket_timeout=c.socket_timeout))
        params.pop("host"), params.pop("port")
        # Sentinels are asked without the data nodes' credentials and database.
        self.sentinel_params = {k: v for k, v in params.items() if k not in ("username", "password", "db")}
        return params

    def open(self) -> None:
        answers, errors, replicas = [], [], []
        master = None
        for host, port in self.sentinels:
            s = Node(host, port, self.sentinel_params, self.ledger, role="sentinel")
            try:
                r = s.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                errors.append(f"{s.addr}: {e}")
                s.close()
                continue
            if isinstance(r, hiredis.ReplyError) or not r:
                errors.append(f"{s.addr}: {r or 'does not know ' + repr(self.service)}")
                s.close()
                continue
            answers.append(s.addr)
            if master is None:
                master = (r[0], int(r[1]))
                if self.c.replica:
                    raw = s.call("SENTINEL", "REPLICAS", self.service)
                    if isinstance(raw, list):
                        replicas = [dict(zip(x[0::2], x[1::2])) for x in raw]
            s.close()
        self.extra = {"sentinels": [f"{h}:{p}" for h, p in self.sentinels], "service": self.service,
                      "sentinels_answered": answers, "sentinel_errors": errors}
        if master is None:
            raise ConnectError(f"no sentinel named a master for {self.service!r}: " + "; ".join(errors))
        primary = Node(master[0], master[1], self.params, self.ledger, role="master")
        ping(primary, self.c.tls)
        if not self.c.replica:
            self.nodes = [primary]
            self.workers_nodes = [primary]
            return
        healthy = [r for r in replicas
                   if not any(f in r.get("flags", "") for f in ("s_down", "o_down", "disconnected"))
                   and r.get("master-link-status", "ok") == "ok"]
        if not healthy:
            raise ConnectError(f"--replica: the sentinels know no healthy replica of {self.service!r} "
                               f"({len(replicas)} known); capture the master without --replica")
        best = max(healthy, key=lambda r: int(r.get("slave-repl-offset", 0)))
        replica = Node(best["ip"], int(best["port"]), self.params, self.ledger, role="replica")
        ping(replica, self.c.tls)
        self._settle(replica, primary)


def _userinfo(url: str) -> str:
    u = urlsplit(url)
    if u.username is None and u.password is None:
        return ""
    return (u.username or "") + (":" + u.password if u.password is not None else "") + "@"


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int]:
    """(sentinels, service name, db) of ``redis+sentinel://h1:26379,h2:26380/service/db``."""
    u = urlsplit(url)
    hosts = u.netloc.rpartition("@")[2]
    sentinels = []
    for part in hosts.split(","):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep:
            host, port = part, "26379"
        try:
            sentinels.append((host.strip("[]") or "localhost", int(port)))
        except ValueError:
            raise UsageError(f"bad sentinel address {part!r} in {redact_url(url)!r}") from None
    path = [unquote(p) for p in u.path.split("/") if p]
    if not sentinels or not path:
        raise UsageError(f"a sentinel URL names the sentinels and the service: "
                         f"redis+sentinel://host:26379[,host:26380]/SERVICE[/DB], not {redact_url(url)!r}")
    try:
        db = int(path[1]) if len(path) > 1 else 0
    except ValueError:
        raise UsageError(f"bad database {path[1]!r} in {redact_url(url)!r}") from None
    return sentinels, path[0], db


def is_cluster(node: Node) -> bool | None:
    """True/False when the node tells; None when INFO and CLUSTER are both refused."""
    info = node.call("INFO", "cluster")
    if isinstance(info, str):
        return str(_flat_info(info).get("cluster_enabled", 0)) == "1"
    r = node.call("CLUSTER", "INFO")
    if isinstance(r, str):
        return True
    if isinstance(r, hiredis.ReplyError) and "cluster support disabled" in str(r):
        return False
    return None


def open_source(c: Connect, ledger: CommandLedger, warn) -> Source:
    """The source the connection options ask for, connected (raises ConnectError)."""
    if c.url.startswith(("redis+sentinel://", "rediss+sentinel://")):
        if c.cluster:
            raise UsageError("--cluster cannot go with a sentinel URL")
        src: Source = SentinelSource(c, ledger, warn)
        src.open()
        return src
    if not c.url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"bad Redis URL {redact_url(c.url)!r}: it should start with redis://, rediss://, "
                         "unix:// or redis+sentinel://")
    if c.replica and c.cluster is False:
        src = ReplicaSource(c, ledger, warn)
        src.open()
        return src
    src = Source(c, ledger, warn)
    src.open()
    if c.cluster is False:
        return src
    clustered = is_cluster(src.nodes[0])
    if c.replica and not c.cluster and clustered is not True:
        src.close()
        src = ReplicaSource(c, ledger, warn)
        src.open()
        return src
    if clustered is None and c.cluster is None:
        warn("could not tell whether this is a Redis Cluster node (INFO and CLUSTER refused): read as one node; "
             "pass --cluster if it is one")
    if clustered or c.cluster:
        if clustered is False:
            raise UsageError(f"--cluster: {src.nodes[0].addr} is not a cluster node (cluster_enabled:0)")
        seed = src.nodes[0]
        cl = ClusterSource(c, ledger, warn)
        cl.params = src.params
        cl.nodes = [seed]
        cl.seed = seed
        cl.slot_node = [None] * SLOTS
        cl._refresh(seed)
        up = []
        for n in cl.masters:
            try:
                if n is not seed:
                    ping(n, c.tls)
                up.append(n)
            except ConnectError as e:
                n.error = str(e)
                cl.down.append(n)
        if not up:
            raise ConnectError(f"no master of the cluster at {src.label} answers: "
                               + "; ".join(f"{n.addr}: {n.error}" for n in cl.down))
        cl.nodes = up
        cl.workers_nodes = up
        if c.replica:
            cl.use_replicas()
        if seed not in cl.masters:  # a replica node given as the seed: not read, but closed
            cl.extra["seed"] = seed.addr
        return cl
    return src
