"""Capture after the fact: a private ``redis-server`` on a copy of an RDB backup.

The server is the real binary, started on a free loopback port with its own temporary
folder and a random password, persistence off (nothing is ever written back to the dump:
it reads a copy), and stopped when the capture ends. The dump's header is read first, so a
dump from a newer Redis or a file that is not a dump gets a clear one-line error.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from ...errors import UsageError
from ...snapshot import file_sha256

# The newest RDB format each Redis release reads (src/rdb.h RDB_VERSION).
RDB_VERSION_BY_RELEASE = ((2, 6, 6), (2, 8, 6), (3, 2, 7), (4, 0, 8), (5, 0, 9), (6, 0, 9), (6, 2, 9),
                          (7, 0, 10), (7, 2, 11), (7, 4, 12), (8, 0, 12))


class RdbError(UsageError):
    """The dump cannot be read (not a dump, damaged, or from a newer Redis)."""


def _length(f) -> tuple[int | None, int | None]:
    """(length, special encoding) of an RDB length field."""
    b = f.read(1)
    if not b:
        raise EOFError
    kind, low = b[0] >> 6, b[0] & 0x3F
    if kind == 0:
        return low, None
    if kind == 1:
        return (low << 8) | f.read(1)[0], None
    if kind == 2:
        if b[0] == 0x80:
            return struct.unpack(">I", f.read(4))[0], None
        if b[0] == 0x81:
            return struct.unpack(">Q", f.read(8))[0], None
        raise ValueError(f"bad length byte {b[0]:#x}")
    return None, low


def _string(f) -> str:
    n, enc = _length(f)
    if enc is None:
        return f.read(n).decode("utf-8", "replace")
    if enc == 0:
        return str(struct.unpack("<b", f.read(1))[0])
    if enc == 1:
        return str(struct.unpack("<h", f.read(2))[0])
    if enc == 2:
        return str(struct.unpack("<i", f.read(4))[0])
    if enc == 3:  # LZF-compressed: skip it (aux fields are short and never compressed in practice)
        clen, _ = _length(f)
        _length(f)
        f.read(clen)
        return ""
    raise ValueError(f"unknown string encoding {enc}")


def read_header(path: str | os.PathLike) -> dict:
    """RDB version and the aux fields at the head of a dump (redis-ver, ctime, used-mem, ...)."""
    with open(path, "rb") as f:
        head = f.read(9)
        if len(head) < 9 or not head.startswith(b"REDIS") or not head[5:].isdigit():
            raise RdbError(f"{path} is not a Redis RDB dump (it does not start with REDIS and a format version)")
        out: dict = {"rdb_version": int(head[5:]), "aux": {}}
        try:
            while True:
                op = f.read(1)
                if op != b"\xfa":
                    break
                key = _string(f)
                out["aux"][key] = _string(f)
        except (EOFError, ValueError, struct.error, IndexError):
            raise RdbError(f"{path} is damaged: its header cannot be read") from None
    return out


def server_version(binary: str) -> tuple[str, tuple[int, int]]:
    try:
        text = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError as e:
        raise UsageError(f"cannot run {binary}: {e.strerror or e} (install redis-server or pass --redis-server PATH)") \
            from None
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", text)
    if not m:
        raise UsageError(f"{binary} does not look like redis-server ({text.strip()[:80]!r})")
    return m.group(0)[2:], (int(m.group(1)), int(m.group(2)))


def max_rdb_version(release: tuple[int, int]) -> int:
    best = 0
    for major, minor, v in RDB_VERSION_BY_RELEASE:
        if (major, minor) <= release:
            best = v
    return best


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RdbServer:
    """``with RdbServer(path) as srv: srv.url(db)``: a private redis-server holding the dump."""

    def __init__(self, path: str | os.PathLike, binary: str | None = None, progress=None):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise UsageError(f"--rdb {path}: no such file")
        self.binary = binary or os.environ.get("FORENSICS_REDIS_SERVER") or shutil.which("redis-server") \
            or "redis-server"
        self.progress = progress
        self.proc: subprocess.Popen | None = None
        self.tmp: Path | None = None
        self.password = secrets.token_hex(16)
        self.port = 0
        self.info: dict = {}

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> "RdbServer":
        header = read_header(self.path)
        version, release = server_version(self.binary)
        newest = max_rdb_version(release)
        aux = header["aux"]
        if header["rdb_version"] > newest:
            raise RdbError(f"{self.path} is RDB format {header['rdb_version']} (written by Redis "
                           f"{aux.get('redis-ver', 'a newer release')}); {self.binary} {version} reads up to "
                           f"format {newest}: pass --redis-server PATH to a newer redis-server")
        stat = self.path.stat()
        ctime = aux.get("ctime")
        self.info = {
            "path": str(self.path), "bytes": stat.st_size, "sha256": file_sha256(self.path),
            "rdb_version": header["rdb_version"], "written_by": aux.get("redis-ver"),
            "written_at": (dt.datetime.fromtimestamp(int(ctime), dt.timezone.utc).isoformat()
                           if ctime and ctime.lstrip("-").isdigit() else None),
            "file_modified_at": dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc).isoformat(),
            "used_memory_when_written": int(aux["used-mem"]) if aux.get("used-mem", "").isdigit() else None,
            "loaded_by": f"redis-server {version}",
        }
        self.tmp = Path(tempfile.mkdtemp(prefix="forensics-rdb-"))
        os.chmod(self.tmp, 0o700)
        shutil.copyfile(self.path, self.tmp / "dump.rdb")  # the server reads a copy; the backup is never touched
        self.port = _free_port()
        log = self.tmp / "redis.log"
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
             "--requirepass", self.password, "--dir", str(self.tmp), "--dbfilename", "dump.rdb",
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(log),
             "--databases", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            self._wait(log)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait(self, log: Path) -> None:
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=5)
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RdbError(f"redis-server could not load {self.path}: {self._why(log)}")
            try:
                client.execute_command("PING")  # a private server of our own: not the user's Redis
                break
            except redis.BusyLoadingError:
                if self.progress is not None:
                    self.progress.update(f"loading {self.path.name} ({time.monotonic() - t0:.0f} s)", force=True)
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            time.sleep(0.05)
        client.close()

    @staticmethod
    def _why(log: Path) -> str:
        try:
            lines = [ln.split(" * ", 1)[-1].split(" # ", 1)[-1].strip()
                     for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "it exited at once"
        keys = ("RDB", "rdb", "checksum", "Short read", "Bad file", "format", "Fatal", "error", "Error")
        hits = [ln for ln in lines if any(k in ln for k in keys)]
        return (hits or lines or ["it exited at once"])[-1]

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # --save "": SIGTERM does not write a dump
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
