"""Capture benchmark: queue-forensics vs a plain pipelined HGETALL reader, same data.

Builds a dataset with the real library (BullMQ 5 addBulk via tests/node/fill.js) in a
private redis-server, then runs each reader in its own process and prints:
  jobs/s, wall time, peak RSS of the process, the worst PING latency another client saw
  while it ran (includes CPU contention on this machine), and Redis's own SLOWLOG: every
  command that ran over 1 ms inside Redis (how long the reader blocks everybody else).
The ratio line compares queue-forensics with the plain reader from the same run.

    .venv/bin/python bench/capture_bench.py [--jobs 1000000] [--data-bytes 100]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "tests" / "node"

BASELINE = r'''
import sys, pandas as pd, redis
url, key = sys.argv[1], sys.argv[2]
r = redis.Redis.from_url(url, decode_responses=True)
n = r.llen(key + "wait")
ids = []
for start in range(0, n, 10000):
    ids += r.lrange(key + "wait", start, start + 9999)
rows = []
for i in range(0, len(ids), 1000):
    p = r.pipeline(transaction=False)
    for j in ids[i:i + 1000]:
        p.hgetall(key + j)
    rows += p.execute()
df = pd.DataFrame.from_records(rows)
print(len(df))
'''

CAPTURE = r'''
import sys, tempfile, forensics
snap = forensics.capture(sys.argv[1], prefix="bull", progress=False)
path = snap.save(tempfile.mkdtemp() + "/snap")
print(snap.row_count("jobs"))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pinger(threading.Thread):
    """Another client: PING in a loop, remember the slowest answer."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.r = redis.Redis(port=port)
        self.stop = threading.Event()
        self.worst = 0.0
        self.samples = []

    def run(self):
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.r.ping()
            dt = time.perf_counter() - t0
            self.samples.append(dt)
            self.worst = max(self.worst, dt)
            time.sleep(0.001)


def _text(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


def run(label: str, code: str, *args: str, port: int) -> dict:
    admin = redis.Redis(port=port, decode_responses=True)
    admin.config_set("slowlog-log-slower-than", 1000)   # every command over 1 ms
    admin.config_set("slowlog-max-len", 10000)
    admin.slowlog_reset()
    pinger = Pinger(port)
    pinger.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode().strip()
    pinger.stop.set()
    pinger.join()
    if status != 0:
        raise SystemExit(f"{label} failed (status {status})")
    jobs = int(out.splitlines()[-1])
    slow = [e for e in admin.slowlog_get(10000) if "PING" not in _text(e["command"]).upper()]
    worst = max(slow, key=lambda e: e["duration"], default=None)
    s = sorted(pinger.samples)
    p99 = s[int(len(s) * 0.99)] if s else 0.0
    res = {"label": label, "jobs": jobs, "wall": wall, "rate": jobs / wall,
           "rss_mb": usage.ru_maxrss / 1024, "worst_ms": pinger.worst * 1000, "p99_ms": p99 * 1000,
           "slow_n": len(slow), "slowest_ms": worst["duration"] / 1000 if worst else 0.0,
           "slowest_cmd": _text(worst["command"]).split()[0] if worst else "-"}
    print(f"{label:<22} {jobs:>9,} jobs {wall:8.1f} s {res['rate']:>10,.0f} jobs/s "
          f"peak RSS {res['rss_mb']:7.0f} MB   other client: worst {res['worst_ms']:6.1f} ms, "
          f"p99 {res['p99_ms']:5.1f} ms", flush=True)
    print(f"{'':<22} Redis SLOWLOG: {res['slow_n']} command(s) over 1 ms, slowest "
          f"{res['slowest_ms']:.1f} ms ({res['slowest_cmd']})", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--data-bytes", type=int, default=100)
    args = ap.parse_args()
    port = free_port()
    tmp = tempfile.mkdtemp()
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        url = f"redis://127.0.0.1:{port}/0"
        t0 = time.perf_counter()
        subprocess.run(["node", str(NODE / "fill.js"), "bullmq5", url, "bull", "bench",
                        str(args.jobs), str(args.data_bytes)], check=True, cwd=NODE)
        info = redis.Redis(port=port).info("memory")
        print(f"dataset: {args.jobs:,} BullMQ 5 jobs ({args.data_bytes} B padding) in "
              f"{time.perf_counter() - t0:.0f} s, Redis used_memory {info['used_memory_human']}")
        base = run("plain pipelined reader", BASELINE, url, "bull:bench:", port=port)
        cap = run("forensics.capture+save", CAPTURE, url, port=port)
        print(f"ratio: capture takes {cap['wall'] / base['wall']:.2f}x the plain reader's time, "
              f"{cap['rss_mb'] / base['rss_mb']:.2f}x its peak memory")
    finally:
        srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
