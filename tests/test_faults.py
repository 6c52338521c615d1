"""Faults mid-capture, with real processes: a redis-server SIGKILLed or SIGSTOPped while job
hashes are read, a loopback TCP proxy that cuts, stalls or trickles the replies, SIGTERM to a
capture and to a series, and a disk that fills while saving.

Each fault must end the same way: the exit code of the contract, what was read saved and
marked ``complete: false`` with the reason, and a snapshot that loads, verifies and diagnoses.
The queues are written by the real BullMQ 5 (fill.js) once, dumped, and every test starts its
own redis-server from a copy of that dump.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import forensics
from conftest import RedisServer, forensics_cli, forensics_exe, run_node
from forensics.capture import CHUNK
from forensics.capture.redis.helper import CHUNK_ROWS

BIG = 3 * CHUNK          # jobs in queue "big": three decode chunks
SMALL = 200              # jobs in queue "small"


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    """An RDB file holding BullMQ 5 queues `big` and `small`, written by the real library."""
    d = tmp_path_factory.mktemp("faults-dump")
    srv = RedisServer(d, "--dbfilename", "dump.rdb")
    try:
        run_node("fill.js", "bullmq5", srv.url(), "bull", "big", str(BIG), timeout=300)
        run_node("fill.js", "bullmq5", srv.url(), "bull", "small", str(SMALL))
        srv.client().save()
        digest = srv.client().execute_command("DEBUG", "DIGEST")
    finally:
        srv.stop()
    return d / "dump.rdb", digest


def server_from(dump, tmp_path) -> RedisServer:
    d = tmp_path / "redis"
    d.mkdir()
    shutil.copy(dump[0], d / "dump.rdb")
    return RedisServer(d, "--dbfilename", "dump.rdb")


def hgetall_calls(client) -> int:
    return client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)


def when_reading_jobs(srv: RedisServer, act) -> threading.Thread:
    """Run ``act()`` once the first chunk of job hashes has been read and the second is being
    fetched (Redis's own command counter)."""
    watcher = srv.client()

    def watch():
        deadline = time.time() + 120
        while time.time() < deadline:
            if hgetall_calls(watcher) >= CHUNK + CHUNK // 4:
                act()
                return
            time.sleep(0.002)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def assert_partial(res, out: Path, reason: str, exit_code: int = 4) -> forensics.Snapshot:
    """The contract for a capture cut short: exit code, one clear line, the path printed last,
    what was read saved with the reason, and the snapshot loads, verifies and diagnoses."""
    assert res.returncode == exit_code, res.stderr
    assert "Traceback" not in res.stderr
    assert "INCOMPLETE" in res.stderr and reason in res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out)
    snap = forensics.load(out, verify=True)
    assert snap.manifest["complete"] is False and reason in snap.manifest["incomplete_reason"]
    # at least one whole chunk kept: two processes share these job hashes, in chunks of
    # CHUNK_ROWS, and when the cut comes each may be partway through one of its own
    assert CHUNK_ROWS <= snap.row_count("jobs") < BIG + SMALL
    assert len(snap.payloads) == snap.row_count("jobs")
    assert forensics_cli("verify", str(out)).returncode == 0
    d = forensics.diagnose(out)
    assert "INCOMPLETE snapshot" in d.to_table()
    return snap


# ---- the server dies or freezes -----------------------------------------------------------

def test_redis_sigkilled_mid_hgetall(dump, tmp_path):
    srv = server_from(dump, tmp_path)
    try:
        t = when_reading_jobs(srv, lambda: srv.proc.send_signal(signal.SIGKILL))
        out = tmp_path / "killed"
        res = forensics_cli("capture", "--redis", srv.url(), "--queue", "big", "--out", str(out))
        t.join(10)
        assert srv.proc.poll() == -signal.SIGKILL            # it really was killed mid-read
        assert_partial(res, out, "lost the connection")
    finally:
        srv.stop()


def test_redis_paused_past_the_timeout_then_resumed(dump, tmp_path):
    srv = server_from(dump, tmp_path)
    try:
        t = when_reading_jobs(srv, lambda: srv.proc.send_signal(signal.SIGSTOP))
        out = tmp_path / "frozen"
        t0 = time.monotonic()
        res = forensics_cli("capture", "--redis", srv.url(), "--queue", "big", "--timeout", "1.5",
                            "--out", str(out))
        waited = time.monotonic() - t0
        t.join(10)
        srv.proc.send_signal(signal.SIGCONT)
        assert_partial(res, out, "sent nothing for 1.5 s")
        assert waited < 60                                    # gave up, did not hang for the default 30 s x N
        # The patient is unharmed: it answers again, with the same data.
        assert srv.client().execute_command("DEBUG", "DIGEST") == dump[1]
    finally:
        srv.proc.send_signal(signal.SIGCONT)
        srv.stop()


def test_one_sigterm_ends_a_capture_waiting_on_a_frozen_redis(dump, tmp_path):
    """Redis freezes (SIGSTOP) mid-read and --timeout is long: the first SIGTERM is enough,
    the capture stops waiting, exits 4 and keeps what was read (it used to wait the whole
    --timeout before it saw the stop, and a second signal was the only way out)."""
    srv = server_from(dump, tmp_path)
    try:
        out = tmp_path / "stopped"
        proc = subprocess.Popen([forensics_exe(), "capture", "--redis", srv.url(), "--queue", "big", "--timeout", "600",
                                 "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def freeze_then_stop():
            srv.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
        t = when_reading_jobs(srv, freeze_then_stop)
        stdout, stderr = proc.communicate(timeout=60)   # not 600: one signal ended the wait
        t.join(10)
        srv.proc.send_signal(signal.SIGCONT)
        res = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert stderr.count("SIGTERM: stopping") == 1
        assert_partial(res, out, "interrupted (SIGTERM)")
    finally:
        srv.proc.send_signal(signal.SIGCONT)
        srv.stop()


# ---- the network misbehaves: a real loopback proxy between the tool and Redis -------------

class Proxy:
    """A loopback TCP proxy. Client-to-server bytes pass; server-to-client bytes pass until
    ``after`` bytes in all, then: ``cut`` closes both sides, ``stall`` forwards nothing more
    (the sockets stay open), ``trickle`` forwards ``piece`` bytes every ``pause`` seconds
    from the start."""

    def __init__(self, target: int, mode: str = "pass", after: int = 0, piece: int = 512, pause: float = 0.0005):
        self.target, self.mode, self.after, self.piece, self.pause = target, mode, after, piece, pause
        self.sent = 0
        self.lock = threading.Lock()
        self.tripped = threading.Event()
        self.closing = threading.Event()
        self.socks: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self):
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool):
        try:
            while True:
                data = src.recv(self.piece if replies and self.mode == "trickle" else 65536)
                if not data:
                    break
                if replies and self.mode in ("cut", "stall"):
                    with self.lock:
                        room = self.after - self.sent
                        self.sent += len(data)
                    if room <= 0 or len(data) > room:
                        dst.sendall(data[:max(room, 0)])
                        self.tripped.set()
                        if self.mode == "cut":
                            break
                        self.closing.wait()       # stall: hold the connection open, send nothing
                        break
                elif replies:
                    with self.lock:
                        self.sent += len(data)
                    if self.mode == "trickle":
                        time.sleep(self.pause)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.closing.set()
        self.listener.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def redis_from_dump(dump, tmp_path):
    srv = server_from(dump, tmp_path)
    yield srv
    srv.stop()


def reply_bytes_of_a_capture(srv: RedisServer, tmp_path: Path, *args: str) -> int:
    p = Proxy(srv.port)
    try:
        res = forensics_cli("capture", "--redis", p.url(), *args, "--out", str(tmp_path / "through-proxy"))
        assert res.returncode == 0, res.stderr
        return p.sent
    finally:
        p.close()


@pytest.mark.parametrize("mode,args,reason", [
    ("cut", [], "lost the connection"),                              # the connection dies mid-reply
    ("stall", ["--timeout", "1"], "sent nothing for 1 s"),           # it stays open, silent
])
def test_a_proxy_that_cuts_or_stalls_mid_reply(redis_from_dump, tmp_path, mode, args, reason):
    total = reply_bytes_of_a_capture(redis_from_dump, tmp_path, "--queue", "big")
    # In the middle of the job hashes' replies (they are most of the bytes), mid-reply.
    p = Proxy(redis_from_dump.port, mode, after=int(total * 0.6) + 7)
    try:
        out = tmp_path / mode
        res = forensics_cli("capture", "--redis", p.url(), "--queue", "big", *args, "--out", str(out), timeout=120)
        assert p.tripped.is_set()
        assert_partial(res, out, reason)
    finally:
        p.close()


def test_proxy_that_trickles_bytes_gives_the_same_snapshot(redis_from_dump, tmp_path):
    """Replies split into 512-byte pieces with pauses between them: slow, but exactly the
    snapshot a direct capture gives."""
    direct = forensics.capture(redis_from_dump.url(), queues=["small"], progress=False)
    p = Proxy(redis_from_dump.port, "trickle", piece=512, pause=0.0005)
    try:
        out = tmp_path / "trickled"
        res = forensics_cli("capture", "--redis", p.url(), "--queue", "small", "--timeout", "2", "--out", str(out))
        assert res.returncode == 0, res.stderr
        assert p.sent > 100 * 512                             # it really came in many pieces
    finally:
        p.close()
    slow = forensics.load(out, verify=True)
    assert slow.complete and len(slow.jobs) == SMALL
    cols = ["queue", "job_id", "state", "name", "attempts_made", "data_bytes"]
    a = direct.jobs[cols].sort_values("job_id").reset_index(drop=True)
    b = slow.jobs[cols].sort_values("job_id").reset_index(drop=True)
    assert a.equals(b)


# ---- signals to the tool itself --------------------------------------------------------------

def test_sigterm_to_a_capture_saves_what_was_read(redis_from_dump, tmp_path):
    out = tmp_path / "terminated"
    proc = subprocess.Popen([forensics_exe(), "capture", "--redis", redis_from_dump.url(), "--queue", "big",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    when_reading_jobs(redis_from_dump, lambda: proc.send_signal(signal.SIGTERM))
    stdout, stderr = proc.communicate(timeout=120)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert "SIGTERM: stopping" in stderr
    assert_partial(res, out, "interrupted (SIGTERM)")
    assert not list(tmp_path.glob(".saving-*"))


def test_sigterm_to_a_series_keeps_every_saved_snapshot(redis_from_dump, tmp_path):
    out = tmp_path / "watch"
    proc = subprocess.Popen([forensics_exe(), "capture", "--redis", redis_from_dump.url(), "--queue", "small",
                             "--every", "0.3", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(list(out.glob("0*/manifest.json"))) < 2:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr                       # no --count: a signal is how it ends
    assert "stopped: interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    assert stdout.strip().splitlines()[-1] == str(out)
    series = forensics.load_series(out)
    assert len(series) >= 2 and series.complete
    meta = json.loads((out / "series.json").read_text())
    assert meta["stopped"]["reason"].startswith("interrupted (SIGTERM)")
    assert meta["snapshots"] == sorted(p.name for p in out.iterdir() if p.is_dir())
    assert forensics_cli("verify", str(out)).returncode == 0


# ---- the disk fills while saving ----------------------------------------------------------

def limit_file_size(nbytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def test_disk_full_during_a_capture_one_line_and_no_litter(redis_from_dump, tmp_path):
    """A file-size limit (RLIMIT_FSIZE) makes the capture's working files fail as a full disk
    would: one clear line naming where, exit 2, no folder that could pass for a snapshot and
    no working files left in TMPDIR."""
    out = tmp_path / "snaps" / "full"
    out.parent.mkdir()
    work = tmp_path / "tmp"
    work.mkdir()
    proc = subprocess.run([forensics_exe(), "capture", "--redis", redis_from_dump.url(), "--queue", "big",
                           "--out", str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(work)}, preexec_fn=limit_file_size(256 * 1024))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("forensics:")]
    assert len(lines) == 1 and "could not write the capture's working file" in lines[0], proc.stderr
    assert str(work) in lines[0] and "File too large" in lines[0] and "TMPDIR" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and list(out.parent.iterdir()) == []
    assert list(work.iterdir()) == []


SAVE_UNDER_A_LIMIT = """
import resource, sys, forensics
url, out, again = sys.argv[1:]
snap = forensics.capture(url, queues=["big"], progress=False)
# the disk fills now (the big working files are linked into place, not written again: the
# limit must catch the tables that are written)
resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024, resource.RLIM_INFINITY))
try:
    snap.save(out)
except forensics.SnapshotError as e:
    print(e)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space freed
print(snap.save(again))
"""


def test_disk_full_while_saving_loses_nothing(redis_from_dump, tmp_path):
    """The disk fills in the middle of Snapshot.save: a clear error, no half-written folder
    (the tables go to a temporary folder renamed into place when whole), and the snapshot in
    hand can still be saved once there is room."""
    out, again = tmp_path / "snaps" / "full", tmp_path / "snaps" / "after"
    out.parent.mkdir()
    proc = subprocess.run([sys.executable, "-c", SAVE_UNDER_A_LIMIT, redis_from_dump.url(), str(out), str(again)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    error, saved = proc.stdout.strip().splitlines()
    assert error.startswith(f"could not save the snapshot to {out}: ") and "File too large" in error
    assert "nothing was written there" in error
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == ["after"]       # no .saving-* left behind
    snap = forensics.load(saved, verify=True)
    assert snap.complete and snap.row_count("jobs") == BIG


def test_disk_full_during_a_series_keeps_the_snapshots_already_saved(redis_from_dump, tmp_path):
    """The first ticks fit; then the queue grows past the limit: the series stops with one
    line, exit 2, and the snapshots saved before stay whole and listed."""
    out = tmp_path / "watch"
    proc = subprocess.Popen([forensics_exe(), "capture", "--redis", redis_from_dump.url(), "--queue", "small",
                             "--every", "0.3", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=limit_file_size(256 * 1024))
    deadline = time.time() + 60
    while len(list(out.glob("0*/manifest.json"))) < 2:
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    run_node("fill.js", "bullmq5", redis_from_dump.url(), "bull", "small", "30000")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("forensics:")]
    assert len(lines) == 1 and "File too large" in lines[0] and "Traceback" not in stderr
    meta = json.loads((out / "series.json").read_text())
    assert "File too large" in meta["stopped"]["reason"]
    assert len(meta["snapshots"]) >= 2
    assert meta["snapshots"] == sorted(p.name for p in out.iterdir() if p.is_dir())   # no half-written member
    assert forensics_cli("verify", str(out)).returncode == 0
    assert len(forensics.load_series(out)) == len(meta["snapshots"])


# ---- the capture's helper process (the second core) -------------------------------------------

def tables_of(snap: forensics.Snapshot) -> dict:
    key = ["prefix", "queue", "job_id"]
    out = {}
    for name, order in (("jobs", key), ("payloads", key), ("events", ["prefix", "queue", "stream_id"])):
        df = getattr(snap, name)
        out[name] = df.astype({c: "str" for c in order}).sort_values(order).reset_index(drop=True)
    out["queues"] = snap.queues
    return out


def test_the_helper_process_changes_nothing_in_the_snapshot(redis_from_dump, tmp_path):
    """60,000 jobs: read with the helper process sharing the job hashes, and alone
    (FORENSICS_HELPER=0): the same tables, the same commands, and Redis untouched."""
    digest = redis_from_dump.client().execute_command("DEBUG", "DIGEST")
    runs = {}
    for label, env in (("shared", {}), ("alone", {"FORENSICS_HELPER": "0"})):
        out = tmp_path / label
        res = forensics_cli("capture", "--redis", redis_from_dump.url(), "--out", str(out), "--quiet", env=env)
        assert res.returncode == 0, res.stderr
        runs[label] = forensics.load(out, verify=True)
    shared, alone = runs["shared"], runs["alone"]
    assert shared.manifest["counts"].get("helper_chunks", 0) >= 1                 # the helper did read chunks
    assert alone.manifest["counts"].get("helper_chunks", 0) == 0
    assert shared.manifest["commands"] == alone.manifest["commands"]             # its commands are counted
    a, b = tables_of(shared), tables_of(alone)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    assert shared.row_count("jobs") == BIG + SMALL
    assert redis_from_dump.client().execute_command("DEBUG", "DIGEST") == digest


def test_the_helper_starts_at_the_scans_first_reply_only_when_the_prefix_is_big(redis_from_dump, tmp_path):
    """The helper is started at the SCAN's first reply when the database's keys, times the
    share of them that reply matched, reach MIN_JOBS: for the whole prefix (60,000 job
    hashes) it is running before the SCAN ends; for the 200-job queue of the same database
    none is started, and the snapshot is the one read alone."""
    import multiprocessing
    from forensics.capture.redis import readers
    order: list[str] = []
    orig, discover = readers.helper_mod.Helper, readers.Capture.discover

    class Counted(orig):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            order.append("helper")

    def watched(self, prefix):
        try:
            return discover(self, prefix)
        finally:
            order.append("scanned")
    readers.helper_mod.Helper, readers.Capture.discover = Counted, watched
    try:
        whole = forensics.capture(redis_from_dump.url(), progress=False)
        assert order == ["helper", "scanned"] and whole.manifest["counts"].get("helper_chunks", 0) >= 1
        order.clear()
        small = forensics.capture(redis_from_dump.url(), queues=["small"], progress=False)
        assert order == ["scanned"]
    finally:
        readers.helper_mod.Helper, readers.Capture.discover = orig, discover
    assert multiprocessing.active_children() == []
    assert small.complete and small.row_count("jobs") == SMALL
    res = forensics_cli("capture", "--redis", redis_from_dump.url(), "--queue", "small", "--out", str(tmp_path / "a"),
                        "--quiet", env={"FORENSICS_HELPER": "0"})
    assert res.returncode == 0, res.stderr
    a, b = tables_of(small), tables_of(forensics.load(tmp_path / "a"))
    for name in ("jobs", "payloads", "events"):
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def test_an_early_helper_is_closed_when_the_prefix_holds_too_few_job_hashes(redis_from_dump):
    """Started early on an estimate, the helper is closed once the SCAN has counted fewer job
    hashes than are worth it, and not started again."""
    from forensics.capture.progress import Progress
    from forensics.capture.redis import readers
    from forensics.redact import Redaction
    cap = readers.Capture(redis_from_dump.url(), ["bull"], ["small"], redact=Redaction(), memory_samples=8,
                          progress=Progress(enabled=False))
    try:
        cap.connect()
        cap.read_server()
        cap.start_helper(None, share=1.0)          # as if the first reply had matched every key it looked at
        early = cap.helper
        assert early is not None and early.proc.is_alive()
        cap.start_helper({"bull": cap.discover("bull")})
        assert cap.helper is None
        early.proc.join(5)
        assert not early.proc.is_alive()
    finally:
        cap.close()


def helper_pids(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def test_a_helper_killed_mid_capture_leaves_the_capture_whole(redis_from_dump, tmp_path):
    """SIGKILL to the helper process while it reads: the capture takes its chunks back,
    says so, and the snapshot is complete and the same as one read alone."""
    out = tmp_path / "killed"
    proc = subprocess.Popen([forensics_exe(), "capture", "--redis", redis_from_dump.url(), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = []

    def kill():
        for _ in range(2000):
            kids = helper_pids(proc.pid) if proc.poll() is None else []
            if kids:
                os.kill(kids[0], signal.SIGKILL)
                killed.append(kids[0])
                return
            time.sleep(0.002)
    t = when_reading_jobs(redis_from_dump, kill)
    stdout, stderr = proc.communicate(timeout=120)
    t.join(10)
    assert killed, "no helper process was seen"
    assert proc.returncode == 0, stderr
    assert "helper process stopped" in stderr and "Traceback" not in stderr
    snap = forensics.load(out, verify=True)
    assert snap.complete and snap.row_count("jobs") == BIG + SMALL
    alone = tmp_path / "alone"
    res = forensics_cli("capture", "--redis", redis_from_dump.url(), "--out", str(alone), "--quiet",
                        env={"FORENSICS_HELPER": "0"})
    assert res.returncode == 0, res.stderr
    a, b = tables_of(snap), tables_of(forensics.load(alone))
    for name in ("jobs", "payloads"):
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def test_chunks_of_a_helper_that_died_come_back_to_be_read_here():
    """The helper SIGKILLed: a queue begun with it fails on the dead pipe, the helper is
    given up, and every chunk -- those it had claimed included -- is claimed by the
    capture, so none is lost (a lost chunk once made the capture wait forever at full CPU)."""
    from forensics.capture.redis.helper import Helper
    from forensics.capture.redis.readers import _Extras
    from forensics.capture.redis.sources import Node
    from forensics.redact import Redaction

    h = Helper(Redaction())
    try:
        os.kill(h.proc.pid, signal.SIGKILL)
        h.proc.join(5)
        node = Node.__new__(Node)
        node.addr, node.spec = "127.0.0.1:1", {}
        q = types.SimpleNamespace(prefix="bull", name="q", flavor="bullmq", base="bull:q:")
        ids = pd.DataFrame({"job_id": [str(i) for i in range(40)], "state": "wait", "score": np.nan})
        bounds = [(a, a + 10) for a in range(0, 40, 10)]
        h.begin(q, ids, _Extras(None, None, set(), None, [0]), {}, None, None, node, bounds, 10)
        assert h.broken                          # the hand-over hit the dead pipe
        with h.claims.get_lock():                # as if it had claimed chunk 0 before it died
            h.claims[1] = 1
        assert h.held() == [0]
        assert [h.claim(0) for _ in range(4)] == [1, 2, 3, None]
        assert not h.poll(0.1)
    finally:
        h.close()


def test_neither_process_reads_far_ahead_of_the_chunks_written():
    """Chunks are claimed from one counter, never more than AHEAD past the first chunk not
    yet written: the capture holds a bounded number of decoded chunks."""
    from forensics.capture.redis import helper as helper_mod
    from forensics.capture.redis.readers import _Extras
    from forensics.capture.redis.sources import Node
    from forensics.redact import Redaction

    h = helper_mod.Helper(Redaction())
    try:
        os.kill(h.proc.pid, signal.SIGKILL)   # (the capture's side alone)
        h.proc.join(5)
        node = Node.__new__(Node)
        node.addr, node.spec = "127.0.0.1:1", {}
        q = types.SimpleNamespace(prefix="bull", name="q", flavor="bullmq", base="bull:q:")
        n = helper_mod.AHEAD + 4
        ids = pd.DataFrame({"job_id": [str(i) for i in range(n)], "state": "wait", "score": np.nan})
        h.begin(q, ids, _Extras(None, None, set(), None, [0]), {}, None, None, node, [(i, i + 1) for i in range(n)], 1)
        got = [h.claim(0) for _ in range(n)]
        assert got == list(range(helper_mod.AHEAD)) + [None] * 4
        assert h.claim(3) == helper_mod.AHEAD     # three written: three more may be read
    finally:
        h.close()


SPAWNED = """
import sys, threading, forensics
open(sys.argv[3], "a").write("ran\\n")   # the script's own side effect: once, not again in the helper
threading.Thread(target=threading.Event().wait, daemon=True).start()   # as in Jupyter: not one thread
snap = forensics.capture(sys.argv[1], progress=False)
snap.save(sys.argv[2])
"""


def test_a_capture_in_a_process_with_threads_spawns_its_helper(redis_from_dump, tmp_path):
    """A process with other threads (a notebook's kernel) is not forked: the helper is
    spawned, and the snapshot is the same. The script has no ``if __name__ == "__main__"``
    guard, as scripts often do not: its top level runs once (a spawned child runs the
    parent's main module again unless it is kept from it)."""
    out, alone, ran = tmp_path / "spawned", tmp_path / "alone", tmp_path / "ran.txt"
    script = tmp_path / "incident.py"
    script.write_text(SPAWNED)
    proc = subprocess.run([sys.executable, str(script), redis_from_dump.url(), str(out), str(ran)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert ran.read_text() == "ran\n"
    assert "Traceback" not in proc.stderr and "helper" not in proc.stderr, proc.stderr
    res = forensics_cli("capture", "--redis", redis_from_dump.url(), "--out", str(alone), "--quiet",
                        env={"FORENSICS_HELPER": "0"})
    assert res.returncode == 0, res.stderr
    snap = forensics.load(out, verify=True)
    assert snap.manifest["counts"].get("helper_chunks", 0) >= 1
    a, b = tables_of(snap), tables_of(forensics.load(alone))
    for name in ("jobs", "payloads"):
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
