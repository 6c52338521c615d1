"""PostgreSQL capture bench (BullMQ 6's PostgreSQL backend): forensics capture + save of one
queue of N real BullMQ 6 jobs (bench/pg_dataset.js, built once into a private PostgreSQL
cluster kept in bench/.data/pg-<N>/), beside the ceiling: `COPY (SELECT ...) TO STDOUT` of the
same job and event rows, read and thrown away. Medians of 3; the ratio is capture / COPY.

    .venv/bin/python bench/pg_bench.py [--jobs 1000000] [--quick]     (make bench runs it)
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NODE_MODULES = ROOT / "tests" / "node" / "node_modules"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, data: Path):
        self.data, self.port = data, free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.sock = Path(tempfile.mkdtemp(prefix="forensics-pgbench-"))
        if self.as_user:
            shutil.chown(self.sock, "postgres")
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            if self.as_user:
                shutil.chown(data, "postgres")
            subprocess.run([*self.as_user, "initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
                            "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*self.as_user, "pg_ctl", "-D", str(data), "-l", str(self.sock / "log"), "-w", "start", "-o",
                        f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                        "-c synchronous_commit=off -c shared_buffers=512MB"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self):
        subprocess.run([*self.as_user, "pg_ctl", "-D", str(self.data), "-m", "fast", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.sock, ignore_errors=True)


def jobs_in(url: str) -> int:
    import psycopg
    with psycopg.connect(url) as c:
        try:
            return c.execute("SELECT count(*) FROM bullmq.job").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


def copy_ceiling(url: str) -> tuple[float, int]:
    """COPY of the rows a capture reads (jobs with their jsonb as text, and events), discarded."""
    import psycopg
    t0, n = time.perf_counter(), 0
    with psycopg.connect(url) as c:
        with c.cursor() as cur:
            for sql in ("COPY (SELECT id, name, state, data::text, opts::text, priority, delay_ms, attempts_made, "
                        "attempts_started, progress::text, return_value::text, failed_reason, stacktrace::text, "
                        "processed_by, added_at_ms, process_at_ms, processed_at_ms, finished_at_ms, lock_token, "
                        "locked_until_ms FROM bullmq.job) TO STDOUT",
                        "COPY (SELECT id, event, data::text, created_at_ms FROM bullmq.event) TO STDOUT"):
                with cur.copy(sql) as cp:
                    for block in cp:
                        n += len(block)
    return time.perf_counter() - t0, n


def capture_once(url: str) -> tuple[float, int]:
    """forensics capture + save in a child process (its own peak RSS)."""
    code = ("import sys, tempfile, time, resource, forensics\n"
            "t0 = time.perf_counter()\n"
            "snap = forensics.capture(sys.argv[1], progress=False)\n"
            "snap.save(tempfile.mkdtemp() + '/s')\n"
            "print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 jobs")
    n = 100_000 if ap.parse_args().quick else ap.parse_args().jobs
    cluster = Cluster(ROOT / "bench" / ".data" / f"pg-{n}")
    try:
        if jobs_in(cluster.url) != n:
            print(f"building the dataset: {n:,} BullMQ 6 jobs on PostgreSQL (once; kept in {cluster.data}) ...",
                  file=sys.stderr)
            subprocess.run(["node", str(ROOT / "bench" / "pg_dataset.js"), cluster.url, "bullmq", "bench", str(n)],
                           check=True, env={**os.environ, "NODE_PATH": str(NODE_MODULES)})
            import psycopg
            with psycopg.connect(cluster.url, autocommit=True) as c:
                c.execute("VACUUM ANALYZE")
        caps = [capture_once(cluster.url) for _ in range(3)]
        copies = [copy_ceiling(cluster.url) for _ in range(3)]
        cap_s = statistics.median(c[0] for c in caps)
        copy_s = statistics.median(c[0] for c in copies)
        rss_mb = max(c[1] for c in caps) / 1024
        print(f"\nPostgreSQL capture, {n:,} BullMQ 6 jobs (medians of 3)")
        print(f"  {'forensics capture + save':<32} {cap_s:8.2f} s   {n / cap_s:>10,.0f} jobs/s   peak RSS {rss_mb:,.0f} MB")
        print(f"  {'COPY (SELECT ...) TO STDOUT':<32} {copy_s:8.2f} s   {n / copy_s:>10,.0f} jobs/s   "
              f"{copies[0][1] / 1e6:,.0f} MB of rows")
        print(f"  {'ratio (capture / COPY)':<32} {cap_s / copy_s:8.2f} x")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
