"""read_logs benchmark: a big pino log, read by queue-forensics and by pandas' own reader.

Makes the log from real pino output (tests/node/logging.js, a leaking BullMQ worker, in a
private redis-server), repeated with fresh job ids and times up to --lines, plus a
gzipped copy. Each reader runs in its own process; prints lines/s, wall time and peak
RSS. The baseline, ``pd.read_json(lines=True)``, only parses: no levels, no job ids, no
memory figures, and it stops at the first bad line.

    .venv/bin/python bench/logs_bench.py [--lines 1000000]
"""
from __future__ import annotations

import argparse
import gzip
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "tests" / "node"

READERS = {
    "pandas read_json(lines=True)": "import pandas as pd, sys; df = pd.read_json(sys.argv[1], lines=True); n = len(df)",
    "forensics.read_logs": "import forensics, sys; df = forensics.read_logs(sys.argv[1]); n = len(df)",
    "forensics.read_logs (.gz)": "import forensics, sys; df = forensics.read_logs(sys.argv[1] + '.gz'); n = len(df)",
}
RUN = r'''
import resource, sys, time
t0 = time.perf_counter()
{code}
dt = time.perf_counter() - t0
print(n, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
'''


def real_pino_lines(tmp: Path) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                            "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        log = tmp / "pino.log"
        subprocess.run(["node", str(NODE / "logging.js"), "leak", "bullmq5", f"redis://127.0.0.1:{port}", "bench",
                        "images", str(log), "30"], check=True, cwd=NODE)
        return [json.loads(x) for x in log.read_text().splitlines()]
    finally:
        srv.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="logs-bench-"))
    seed = real_pino_lines(tmp)
    path = tmp / "big.log"
    t = seed[0]["time"]
    with open(path, "w") as f:
        for i in range(args.lines):
            rec = dict(seed[i % len(seed)])
            rec["jobId"], rec["time"] = str(i + 1), t + i
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
    with open(path, "rb") as src, gzip.open(str(path) + ".gz", "wb", compresslevel=1) as dst:
        dst.write(src.read())
    size = path.stat().st_size / 1024 / 1024
    print(f"{args.lines:,} pino lines, {size:,.0f} MB ({path})")
    for name, code in READERS.items():
        out = subprocess.run([sys.executable, "-c", RUN.format(code=code), str(path)], capture_output=True,
                             text=True, check=True).stdout.split()
        n, dt, rss = int(out[0]), float(out[1]), int(out[2])
        print(f"{name:<32} {n:>10,} rows  {dt:6.1f} s  {n / dt:>10,.0f} lines/s  peak RSS {rss:,} MB")


if __name__ == "__main__":
    main()
