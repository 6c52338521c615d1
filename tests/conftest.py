"""Test session fixtures: one real redis-server on a free port, real library scenarios.

Nothing here imitates Redis or the libraries: the server is the real binary, queue
states come from the pinned npm packages (tests/node) and the PyPI bullmq package.
Each scenario runs once per session under its own prefix; captures are shared.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
NODE_LIBS = ["bull", "bull3", "bullmq2", "bullmq3", "bullmq4", "bullmq5", "bullmq6"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server process (real binary), started and stopped by the tests;
    ``binary``: another server that takes the same options (valkey-server)."""

    def __init__(self, tmp: Path, *extra: str, port: int | None = None, ping_kw: dict | None = None,
                 binary: str | None = None):
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.port = port or free_port()
        self.dir = tmp
        self.extra = extra
        self.ping_kw = ping_kw or {}
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--enable-debug-command", "yes", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1, **self.ping_kw).ping()
                break
            except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
                break
            except redis.ResponseError as e:  # e.g. a cluster node answering before it is configured
                if "LOADING" not in str(e):
                    break
                time.sleep(0.05)
            except redis.ConnectionError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    def url(self, db: int = 0, auth: str = "") -> str:
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0, **kw) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, decode_responses=True, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not on PATH; install it (Debian: redis-server)")
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own (for tests that break or reconfigure it)."""
    srv = RedisServer(tmp_path)
    yield srv
    srv.stop()


def run_node(script: str, *args: str, timeout: int = 120, env: dict | None = None) -> str:
    if not (NODE_DIR / "node_modules").exists():
        pytest.fail("npm test fixtures missing: run `make node` (make test does it)")
    res = subprocess.run(["node", str(NODE_DIR / script), *args], capture_output=True,
                         text=True, timeout=timeout, cwd=NODE_DIR, env={**os.environ, **(env or {})})
    if res.returncode != 0:
        raise RuntimeError(f"node {script} {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return res.stdout


@pytest.fixture(scope="session")
def scenario(redis_server):
    """scenario(lib) -> (prefix, library report); runs tests/node/scenario.js once per lib."""
    cache: dict[str, tuple[str, dict]] = {}

    def get(lib: str):
        if lib not in cache:
            prefix = f"sc-{lib}"
            out = run_node("scenario.js", lib, redis_server.url(0), prefix)
            cache[lib] = (prefix, json.loads(out))
        return cache[lib]
    return get


@pytest.fixture(scope="session")
def captured(redis_server, scenario):
    """captured(lib) -> (Snapshot, library report); one capture per lib per session."""
    import forensics
    cache: dict[str, tuple] = {}

    def get(lib: str):
        if lib not in cache:
            prefix, report = scenario(lib)
            cache[lib] = (forensics.capture(redis_server.url(0), prefix=prefix), report)
        return cache[lib]
    return get


def forensics_exe() -> str:
    """The installed console script (the virtualenv's, beside this Python)."""
    return shutil.which("forensics", path=str(Path(os.sys.executable).parent)) or "forensics"


def forensics_cli(*args: str, env: dict | None = None, cwd=None, timeout: int = 300,
                  input_bytes: bytes | None = None):
    """Run the installed CLI as a user would (stdin from ``input_bytes``); returns
    CompletedProcess (text)."""
    return subprocess.run([forensics_exe(), *args], capture_output=True, text=True, timeout=timeout,
                          input=None if input_bytes is None else input_bytes.decode("utf-8", "replace"),
                          env={**os.environ, **(env or {})}, cwd=cwd)


def wait_for_worker_connection(srv: RedisServer, prefix: str, timeout: float = 10.0) -> None:
    """Block until a connection named for a queue under ``prefix`` is in CLIENT LIST.

    A BullMQ worker may take its first job on its ordinary connection before its named
    blocking connection has finished connecting; capture only once the worker is visible."""
    admin = srv.client()
    deadline = time.time() + timeout
    while not any(c.get("name", "").startswith(prefix + ":") for c in admin.client_list()):
        if time.time() > deadline:
            raise RuntimeError(f"no worker connection under {prefix!r} appeared")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def worker_logs(redis_server, tmp_path_factory):
    """worker_logs(mode, lib) -> (prefix, log file): tests/node/logging.js run once per session.

    Real workers of the pinned libraries writing real pino / winston logs while they leak
    memory, lose their lock, fail jobs, or cannot reach Redis (see logging.js)."""
    cache: dict[tuple[str, str], tuple[str, Path]] = {}
    folder = tmp_path_factory.mktemp("worker-logs")

    def get(mode: str, lib: str = "bullmq5", n: int = 30):
        if (mode, lib) not in cache:
            prefix = f"log-{mode}-{lib}"
            path = folder / f"{prefix}.log"
            url = redis_server.url(0)
            if mode == "refused":
                url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
            run_node("logging.js", mode, lib, url, prefix,
                     "images" if mode in ("leak", "steady", "leak-steps", "warmup") else "jobs",
                     str(path), str(n), timeout=120)
            cache[(mode, lib)] = (prefix, path)
        return cache[(mode, lib)]
    return get


@pytest.fixture(scope="session")
def growing_series(tmp_path_factory):
    """A series captured with the CLI (--every 1 --count 5) while a real BullMQ producer
    fills a Redis (maxmemory 256 MB, noeviction) faster than a slow worker drains it.
    Returns (series folder, the CLI's CompletedProcess, the Redis)."""
    srv = RedisServer(tmp_path_factory.mktemp("grow"), "--maxmemory", "256mb", "--maxmemory-policy", "noeviction")
    out = tmp_path_factory.mktemp("series") / "watch"
    proc = subprocess.Popen(["node", str(NODE_DIR / "produce.js"), "bullmq5", srv.url(), "grow", "uploads",
                             "300", "2000", "30", "20"], cwd=NODE_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "producing", proc.stderr.read() if proc.poll() else ""
        res = forensics_cli("capture", "--redis", srv.url(), "--prefix", "grow", "--every", "1", "--count", "5",
                            "--out", str(out))
    finally:
        proc.kill()
        proc.wait()
    yield out, res, srv
    srv.stop()


@contextlib.contextmanager
def hanging_worker(srv: RedisServer, prefix: str, queue: str, lib: str = "bullmq5"):
    """A live worker (tests/node/worker.js) holding one job of ``queue`` forever, its lock
    renewed; yields once the job has started and the worker's connection is visible."""
    proc = subprocess.Popen(["node", str(NODE_DIR / "worker.js"), lib, srv.url(0), prefix, queue, "30000"],
                            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().startswith("started")
        wait_for_worker_connection(srv, prefix)
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def incident(redis_server, tmp_path_factory):
    """incident(mode, lib) -> (Snapshot, worker logs or None): tests/node/incidents.js run
    once per session and captured while the incident goes on (storm, starve: the workers
    are still running during the capture; consume, leak: the workers and connections too).

    ``bloat`` runs in a Redis of its own with maxmemory 48 MB (noeviction), so the bytes
    it writes weigh against a real limit; ``leak`` in one with maxclients 800, so its
    connections are counted alone. ``adds`` runs tests/node/adds.js: adds the library
    swallows, and a deduplication key left behind by an evicted job; ``schedulers``
    tests/node/schedulers.js."""
    import forensics
    cache: dict[tuple[str, str], tuple] = {}
    folder = tmp_path_factory.mktemp("incidents")
    servers: list[RedisServer] = []

    def get(mode: str, lib: str = "bullmq5"):
        if (mode, lib) in cache:
            return cache[(mode, lib)]
        srv = redis_server
        if mode == "bloat":
            srv = RedisServer(tmp_path_factory.mktemp("bloat"), "--maxmemory", "48mb",
                              "--maxmemory-policy", "noeviction")
            servers.append(srv)
        elif mode == "leak":  # its connections alone (and the session's stay out of its count)
            srv = RedisServer(tmp_path_factory.mktemp("leak"), "--maxclients", "800")
            servers.append(srv)
        prefix = f"inc-{mode}-{lib}"
        if mode == "adds":  # tests/node/adds.js; between its steps, Redis evicts a job hash
            run_node("adds.js", lib, srv.url(0), prefix, "incident")
            srv.client().delete(f"{prefix}:nightly:1")   # what eviction does (allkeys-* policies)
            run_node("adds.js", lib, srv.url(0), prefix, "readd")
            cache[(mode, lib)] = (forensics.capture(srv.url(0), prefix=prefix), None)
            return cache[(mode, lib)]
        if mode == "schedulers":  # tests/node/schedulers.js (+ a BullMQ 6 deploy over the 5 queue)
            run_node("schedulers.js", lib, srv.url(0), prefix)
            if lib == "bullmq5":
                run_node("schedulers.js", "bullmq6", srv.url(0), prefix, "upgrade")
            if lib.startswith("bullmq"):   # eviction takes the `stuck` scheduler's next job
                admin = srv.client()
                admin.delete(*admin.keys(f"{prefix}:stuck:repeat:every-second:*"))
            cache[(mode, lib)] = (forensics.capture(srv.url(0), prefix=prefix), None)
            return cache[(mode, lib)]
        log = folder / f"{prefix}.log" if mode == "oomkill" else None
        proc = subprocess.Popen(["node", str(NODE_DIR / "incidents.js"), mode, lib, srv.url(0), prefix, str(log or ""),
                                 *(["3"] if mode in ("consume", "leak") else [])],
                                cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        watchdog = threading.Timer(120, proc.kill)
        watchdog.start()
        try:
            line = proc.stdout.readline()
            if line.strip() != "ready":
                proc.kill()
                raise RuntimeError(f"incidents.js {mode} {lib} failed:\n{proc.stderr.read()[-3000:]}")
            if mode in ("storm", "starve", "consume", "leak"):
                wait_for_worker_connection(srv, prefix)
            snap = forensics.capture(srv.url(0), prefix=prefix)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.stdin.close()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        cache[(mode, lib)] = (snap, forensics.read_logs(log) if log else None)
        return cache[(mode, lib)]
    yield get
    for srv in servers:
        srv.stop()


# ---- production topologies: one cluster, one sentinel set per session ------------------

def wait_until(ready, timeout: float, failure: str) -> None:
    """Poll ``ready()`` (Redis errors count as not ready) until true, else RuntimeError(failure)."""
    deadline = time.time() + timeout
    while True:
        try:
            if ready():
                return
        except redis.RedisError:
            pass
        if time.time() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.1)


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        p = free_port()
        if p + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    """Real masters and replicas (redis-server --cluster-enabled yes), joined by redis-cli --cluster create."""

    def __init__(self, tmp: Path, masters: int = 3, replicas: int = 1):
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            d = tmp / f"node{i}"
            d.mkdir()
            port = free_cluster_port()
            self.nodes.append(RedisServer(d, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                          "--cluster-node-timeout", "15000", port=port))
        res = subprocess.run(["redis-cli", "--cluster", "create", *self.addrs, "--cluster-replicas", str(replicas),
                              "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {res.stdout[-2000:]}{res.stderr[-2000:]}")
        self.wait_ok()
        # Masters first (nodes[0..masters-1]), then their replicas, once each replica is linked.
        role = {n.port: n.client(0).execute_command("ROLE")[0] for n in self.nodes}
        self.nodes.sort(key=lambda n: role[n.port] != "master")
        self.masters = masters
        wait_until(lambda: all(n.client(0).info("replication").get("master_link_status") == "up"
                               for n in self.nodes[masters:]), 30, "the cluster's replicas did not link up")
        # ... and every node's CLUSTER SLOTS lists them (gossip can lag behind the links).
        wait_until(lambda: all(len(entry) >= 3 + replicas for n in self.nodes
                               for entry in n.client(0).execute_command("CLUSTER", "SLOTS")),
                   30, "the cluster's nodes did not learn their replicas")

    @property
    def addrs(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def url(self, i: int = 0) -> str:
        return self.nodes[i].url(0)

    def client(self, i: int) -> redis.Redis:
        return self.nodes[i].client(0)

    def wait_ok(self, timeout: float = 30) -> None:
        def ok() -> bool:
            infos = [n.client(0).cluster("info") for n in self.nodes]
            return all(i.get("cluster_state") == "ok" and int(i.get("cluster_known_nodes", 0)) == len(self.nodes)
                       for i in infos)
        wait_until(ok, timeout, "the test cluster did not reach cluster_state:ok")

    def owner(self, key: str) -> int:
        """Index of the node that owns key's slot now."""
        slot = self.client(0).cluster("keyslot", key)
        for entry in self.client(0).execute_command("CLUSTER", "SLOTS"):
            a, b, primary = int(entry[0]), int(entry[1]), entry[2]
            if a <= slot <= b:
                port = int(primary[1])
                return next(i for i, n in enumerate(self.nodes) if n.port == port)
        raise LookupError(key)

    def synced(self) -> None:
        """Every replica is linked and has its master's writes (WAIT, on the test's own cluster)."""
        wait_until(lambda: all(n.client(0).info("replication").get("master_link_status") == "up"
                               for n in self.nodes[self.masters:]), 30, "a replica of the test cluster is unlinked")
        for n in self.nodes[:self.masters]:
            n.client(0).execute_command("WAIT", 1, 10000)

    def replica_of(self, i: int) -> int:
        """Index of master i's replica."""
        mid = self.node_id(i)
        return next(k for k in range(self.masters, len(self.nodes))
                    if self.client(k).info("replication").get("master_port") == self.nodes[i].port
                    or mid in self.client(k).execute_command("CLUSTER", "MYID"))

    def node_id(self, i: int) -> str:
        return self.client(i).execute_command("CLUSTER", "MYID")

    def digests(self) -> list[str]:
        return [n.client(0).execute_command("DEBUG", "DIGEST") for n in self.nodes]

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real cluster of 3 masters with a replica each, filled once through ioredis' Cluster
    client by BullMQ 5 and Bull (tests/node/cluster.js). Yields (cluster, library report)."""
    if not shutil.which("redis-cli"):
        pytest.fail("redis-cli is not on PATH; install it (Debian: redis-tools)")
    cl = RedisCluster(tmp_path_factory.mktemp("cluster"))
    report = json.loads(run_node("cluster.js", ",".join(cl.addrs[:cl.masters])).splitlines()[0])
    cl.synced()
    yield cl, report
    cl.stop()


class SentinelSet:
    """A real primary, a replica (--replicaof) and two sentinels (redis-server --sentinel)
    watching the primary as SERVICE."""

    SERVICE = "queues"

    def __init__(self, tmp: Path):
        (tmp / "primary").mkdir()
        (tmp / "replica").mkdir()
        self.primary = RedisServer(tmp / "primary")
        self.replica = RedisServer(tmp / "replica", "--replicaof", "127.0.0.1", str(self.primary.port))
        self.sentinels: list[subprocess.Popen] = []
        self.sentinel_ports: list[int] = []
        for i in range(2):
            port = free_port()
            conf = tmp / f"sentinel{i}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
                            f"sentinel down-after-milliseconds {self.SERVICE} 60000\n")
            self.sentinels.append(subprocess.Popen(
                [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.sentinel_ports.append(port)
        def up() -> bool:  # the replica is linked and both sentinels know it
            link = self.replica.client(0).info("replication").get("master_link_status")
            known = [redis.Redis(port=p, decode_responses=True).execute_command(
                "SENTINEL", "REPLICAS", self.SERVICE) for p in self.sentinel_ports]
            return link == "up" and all(k for k in known)
        wait_until(up, 30, "the sentinel set did not come up")

    def url(self, extra: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}{extra}/{self.SERVICE}"

    def synced(self, timeout: float = 10) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = self.primary.client(0).info("replication")["master_repl_offset"]
            r = self.replica.client(0).info("replication").get("slave_repl_offset")
            if r == p:
                return
            time.sleep(0.05)
        raise RuntimeError("the replica did not catch up")

    def stop(self) -> None:
        for s in self.sentinels:
            s.kill()
            s.wait(10)
        self.replica.stop()
        self.primary.stop()


@pytest.fixture(scope="session")
def sentinel_set(tmp_path_factory):
    """One sentinel set per session; the primary holds 40 real BullMQ 5 jobs (replicated)."""
    s = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    run_node("fill.js", "bullmq5", s.primary.url(0), "bull", "orders", "40")
    s.synced()
    yield s
    s.stop()


@contextlib.contextmanager
def monitored(ports: list[int], clients: bool = False):
    """Every command the servers on ``ports`` receive while the block runs (Redis MONITOR),
    as argument lists: what the tool really sent, whatever its own ledger says. With
    ``clients``: (port, "client address:port", argument list) tuples."""
    seen: list = []
    monitors = []
    for port in ports:
        m = redis.Redis(port=port, decode_responses=True).monitor()
        m.__enter__()
        monitors.append(m)

        def pump(m=m, port=port):
            try:
                while True:
                    c = m.next_command()
                    cmd = c["command"].split(" ")
                    seen.append((port, f"{c.get('client_address')}:{c.get('client_port')}", cmd) if clients else cmd)
            except Exception:
                pass
        threading.Thread(target=pump, daemon=True).start()
    try:
        yield seen
    finally:
        time.sleep(0.3)  # let the last commands arrive
        for m in monitors:
            try:
                m.connection.disconnect()
            except Exception:
                pass


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """queue-forensics as `pip install .` gives it: the wheel built from this checkout and
    installed (without dependencies: they are this virtualenv's) into a folder of its own,
    first on PYTHONPATH. Returns (wheel, folder, environment to run it with)."""
    tmp = tmp_path_factory.mktemp("install")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                          str(REPO), "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    wheel = next((tmp / "dist").glob("queue_forensics-*.whl"))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                          str(tmp / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return wheel, tmp, {**os.environ, "PYTHONPATH": str(tmp / "site")}


@pytest.fixture(scope="session")
def example_report(installed):
    """The postmortem of snapshots/example, rendered once per session by the installed
    package (python -m forensics report), far from the repository. Returns the finished
    process and the HTML path."""
    _, tmp, env = installed
    out = tmp / "postmortem.html"
    res = subprocess.run([sys.executable, "-m", "forensics", "report", str(REPO / "snapshots" / "example"),
                          "--out", str(out)], capture_output=True, text=True, cwd=tmp, env=env, timeout=600)
    return res, out


class PostgresServer:
    """A private PostgreSQL (the machine's initdb / pg_ctl) on a free port and a private
    folder: password auth over TCP, every statement logged with its session's
    application_name (the read-only proof reads that log), autovacuum off so dead rows stay
    where the tests put them. As root, the server runs as the `postgres` user (initdb
    refuses root)."""

    PASSWORD = "s3cret-pg"

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.port = free_port()
        self.data = tmp / "data"
        self.log = tmp / "postgres.log"
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_user:
            shutil.chown(tmp, "postgres")
        pw = tmp / "pw"
        pw.write_text(self.PASSWORD + "\n")
        if as_user:
            shutil.chown(pw, "postgres")
        subprocess.run([*as_user, "initdb", "-D", str(self.data), "-U", "postgres", "--pwfile", str(pw),
                        "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync", "-E", "UTF8"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        opts = (f"-p {self.port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c autovacuum=off "
                f"-c log_statement=all -c 'log_line_prefix=%a|%p|' -c logging_collector=off")
        # no pipes: the server would inherit them, and reading them would wait for it to exit
        subprocess.run([*as_user, "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "start"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.as_user = as_user
        self.sql("CREATE DATABASE app")

    def url(self, db: str = "app", user: str = "postgres", password: str | None = None) -> str:
        return f"postgresql://{user}:{password or self.PASSWORD}@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres", params=None):
        import psycopg
        with psycopg.connect(self.url(db), autocommit=True) as c:
            cur = c.execute(statement, params)
            return cur.fetchall() if cur.description is not None else None

    def stop(self) -> None:
        subprocess.run([*self.as_user, "pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    if not shutil.which("initdb") or not shutil.which("pg_ctl"):
        pytest.fail("initdb / pg_ctl are not on PATH; install PostgreSQL (Debian: postgresql)")
    import tempfile
    # not under pytest's folder: that one is private to root, and the server runs as `postgres`
    tmp = Path(tempfile.mkdtemp(prefix="forensics-pg-"))
    srv = PostgresServer(tmp)
    yield srv
    srv.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_incident(pg_server):
    """BullMQ 6 on the private PostgreSQL (tests/node/pg.js): schema `bullmq` holds a healthy
    queue whose worker stays connected (`emails`), a SIGKILLed worker's job (`ocr`) and
    failed / delayed / prioritized jobs (`exports`); schema `storm` a retry storm going on.
    Yields getJobCounts as the library reported them; the workers run until the session ends."""
    url = pg_server.url()
    procs = []
    try:
        scen = subprocess.Popen(["node", str(NODE_DIR / "pg.js"), "scenario", url, "bullmq"], cwd=NODE_DIR,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(scen)
        counts = None
        for line in scen.stdout:
            if line.startswith("counts "):
                counts = json.loads(line[7:])
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError(f"pg.js scenario failed: {scen.stderr.read()[-3000:]}")
        storm = subprocess.Popen(["node", str(NODE_DIR / "pg.js"), "storm", url, "storm"], cwd=NODE_DIR,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(storm)
        if storm.stdout.readline().strip() != "ready":
            raise RuntimeError(f"pg.js storm failed: {storm.stderr.read()[-3000:]}")
        yield counts
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.stdin.close()
                p.wait(15)
            if p.poll() is None:
                p.kill()
