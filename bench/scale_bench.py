"""Speed at scale, side by side: one dataset, one run, one table.

    .venv/bin/python bench/scale_bench.py            # 1,000,000 jobs (make bench)
    .venv/bin/python bench/scale_bench.py --quick    # 100,000 jobs (make bench-quick)

The dataset: real BullMQ 5 jobs in mixed states (bench/dataset.js: completed, failed,
active, delayed, prioritized, waiting) in a private redis-server, plus 100,000 more in
database 1 for the series. It is built once and kept as an RDB dump under bench/.data/
(delete it to rebuild). Then every reader runs in its own process, in rounds (each round
runs every reader once, so a slow minute of the machine hits them all), and the table
gives the median of the rounds:

  forensics capture + save      forensics.capture(...).save(...), the default options
  hand-tuned reader             bench/hand_reader.py: raw socket + hiredis, two pipelined
                                batches in flight, GC off, the same typed jobs table
  Node BullMQ getJobs           bench/getjobs.js: Queue.getJobs per state, pages of 1000
  Python bullmq getJobs         bench/getjobs.py: the same with PyPI bullmq, into a DataFrame

with jobs/s, the time relative to forensics, the peak RSS of the reader's process, the
longest a PING loop in another client waited while it ran, and Redis SLOWLOG (commands
that ran over 1 ms inside Redis). Then: one capture at --max-ops-per-sec, `forensics
diagnose` and `forensics report` of the million-job snapshot, and load_series + diagnose of
100 captures of 100,000 jobs. Targets are checked at the end (figures only: nothing here
is a test).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = BENCH / ".data"
NODE_MODULES = ROOT / "tests" / "node" / "node_modules"
PY = sys.executable
FORENSICS = str(Path(PY).parent / "forensics")

CAPTURE = r'''
import sys, forensics
kw = {"max_ops_per_sec": float(sys.argv[3])} if len(sys.argv) > 3 else {}
snap = forensics.capture(sys.argv[1], prefix="bull", progress=False, **kw)
snap.save(sys.argv[2])
print(snap.row_count("jobs"))
'''

TRIAGE = r'''
import sys, tempfile, pathlib, papermill
from forensics.report import _kernel_config
work = pathlib.Path(tempfile.mkdtemp())
papermill.execute_notebook(sys.argv[2] + "/triage.ipynb", str(work / "triage.ipynb"),
                           parameters={"snapshot": sys.argv[1], "interactive": False}, kernel_name="python3",
                           progress_bar=False, cwd=sys.argv[2], execution_timeout=600, config=_kernel_config(work))
'''

SMALL = r'''
import json, sys, time
t0 = time.perf_counter()
import forensics
t1 = time.perf_counter()
snap = forensics.load(sys.argv[1])
t2 = time.perf_counter()
forensics.diagnose(snap)
t3 = time.perf_counter()
row = snap.jobs.iloc[0]
forensics.explain(snap, str(row["job_id"]), queue=f"{row['prefix']}:{row['queue']}")
t4 = time.perf_counter()
forensics.explain(snap, str(snap.jobs["job_id"].iloc[1]), queue=f"{snap.jobs['prefix'].iloc[1]}:{snap.jobs['queue'].iloc[1]}")
t5 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "diagnose_s": t3 - t2, "explain_first_s": t4 - t3, "explain_next_s": t5 - t4}))
'''

SERIES = r'''
import sys, forensics
series = forensics.load_series(sys.argv[1])
result = forensics.diagnose(series)
print(sum(s.row_count("jobs") for s in series))
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

    def run(self):
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.r.ping()
            self.worst = max(self.worst, time.perf_counter() - t0)
            time.sleep(0.001)


def _text(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


class Server:
    def __init__(self, dump: Path | None):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="forensics-bench-"))
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir)]
        if dump is not None:
            shutil.copyfile(dump, self.dir / "dump.rdb")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        r = redis.Redis(port=self.port)
        for _ in range(600):
            try:
                r.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.5)
        self.admin = redis.Redis(port=self.port, decode_responses=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def save(self, to: Path) -> None:
        """BGSAVE and wait (a blocking SAVE of a million jobs outlasts a client's read timeout)."""
        self.admin.bgsave()
        while True:
            time.sleep(0.5)
            p = self.admin.info("persistence")
            if not p.get("rdb_bgsave_in_progress"):
                if p.get("rdb_last_bgsave_status") != "ok":
                    raise SystemExit("BGSAVE of the dataset failed")
                break
        to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.dir / "dump.rdb", to)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RssPopen(subprocess.Popen):
    """Popen that records the child's peak RSS (ru_maxrss from wait4)."""
    rss_mb = 0.0

    def _try_wait(self, wait_flags):
        try:
            pid, sts, usage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return (self.pid, 0)
        if pid == self.pid:
            self.rss_mb = usage.ru_maxrss / 1024
        return (pid, sts)


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and all its descendants (MB): memory a reader uses
    in all its processes, pages shared after a fork counted once."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
                    break
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(k) for k in open(f"/proc/{p}/task/{task}/children").read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return total


class TreeSampler(threading.Thread):
    """The peak of ``tree_pss_mb`` while a reader runs, sampled every 0.5 s: reading
    smaps_rollup makes the kernel walk a process's page tables, which every 50 ms took enough
    of a 2-core machine to show in the other client's PING."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_pss_mb(self.pid))
            time.sleep(0.5)


def measure(srv: Server, cmd: list[str], env: dict | None = None) -> dict:
    """Run one reader in its own process; its wall time, peak RSS, the other client's worst
    PING and the SLOWLOG while it ran."""
    admin = srv.admin
    admin.config_set("slowlog-log-slower-than", 1000)   # every command over 1 ms
    admin.config_set("slowlog-max-len", 100000)
    admin.slowlog_reset()
    pinger = Pinger(srv.port)
    pinger.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    proc = RssPopen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    tree = TreeSampler(proc.pid)
    tree.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    tree.stop.set()
    tree.join()
    pinger.stop.set()
    pinger.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    slow = [e for e in admin.slowlog_get(100000) if "PING" not in _text(e["command"]).upper()
            and "SLOWLOG" not in _text(e["command"]).upper()]
    worst = max(slow, key=lambda e: e["duration"], default=None)
    lines = out.decode().strip().splitlines()
    # peak RSS: the largest of the reader's own peak and its processes' summed PSS
    return {"wall": wall, "jobs": int(lines[-1]) if lines and lines[-1].isdigit() else 0,
            "rss_mb": max(proc.rss_mb, tree.peak),
            "worst_ping_ms": pinger.worst * 1000, "slow_n": len(slow),
            "slowest_ms": worst["duration"] / 1000 if worst else 0.0,
            "slowest_cmd": _text(worst["command"]).split()[0] if worst else "-"}


def browser_load(html: Path) -> float | None:
    """Seconds until headless Chromium fires the report's load event with every plot drawn
    (None without Chromium: `make browser` installs it)."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from browser import CHROMIUM, open_page
    except ImportError:
        return None
    if not CHROMIUM:
        return None
    run = open_page(html, {"plots": "document.querySelectorAll('.plotly-graph-div .main-svg').length"}, timeout=600)
    return run.load_s


def build_dataset(jobs: int, series_jobs: int, data_bytes: int) -> Path:
    dump = DATA / f"bullmq5-mixed-{jobs}-{series_jobs}-{data_bytes}.rdb"
    if dump.exists():
        print(f"dataset: {dump.relative_to(ROOT)} (delete it to rebuild)", flush=True)
        return dump
    srv = Server(None)
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
    try:
        t0 = time.perf_counter()
        for db, n in ((0, jobs), (1, series_jobs)):
            if db == 1 and series_jobs == jobs:
                break
            subprocess.run(["node", str(BENCH / "dataset.js"), srv.url(db), "bull", "bench", str(n), str(data_bytes)],
                           check=True, env=env)
        srv.save(dump)
        print(f"dataset: built in {time.perf_counter() - t0:.0f} s, saved to {dump.relative_to(ROOT)}", flush=True)
    finally:
        srv.stop()
    return dump


def build_series(srv: Server, db: int, count: int, jobs: int) -> Path:
    """``count`` real captures of the ``jobs``-job queue in database ``db``, kept under bench/.data."""
    folder = DATA / f"series-{count}x{jobs}"
    if (folder / "series.json").exists() and len([c for c in folder.iterdir() if c.is_dir()]) >= count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([FORENSICS, "capture", "--redis", srv.url(db), "--every", "0.01", "--count", str(count),
                    "--out", str(folder), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    print(f"series: {count} captures of {jobs:,} jobs in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def small_snapshot_figures() -> dict:
    """The shipped example (a small snapshot): diagnose and explain in a fresh Python (median of
    three), the CLI's diagnose and report (wall time, median of three and one)."""
    example = ROOT / "snapshots" / "example"
    runs = []
    for _ in range(3):
        out = subprocess.run([PY, "-c", SMALL, str(example)], capture_output=True, text=True, check=True, cwd=ROOT)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    fig = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    walls = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([FORENSICS, "diagnose", str(example)], capture_output=True, check=True, cwd=ROOT)
        walls.append(time.perf_counter() - t)
    fig["cli_diagnose_s"] = statistics.median(walls)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        subprocess.run([FORENSICS, "report", str(example), "--out", str(Path(d) / "r.html")], capture_output=True,
                       check=True, cwd=ROOT)
        fig["report_s"] = time.perf_counter() - t
    meta = json.loads((example / "manifest.json").read_text())
    fig["queues"] = meta.get("row_counts", {}).get("queues", 0)
    fig["jobs"] = meta.get("row_counts", {}).get("jobs", 0)
    return fig


def fmt_row(label: str, r: dict, base: float | None) -> str:
    ratio = f"{r['wall'] / base:5.2f}x" if base else "    -"
    return (f"{label:<44} {r['wall']:8.1f} s {r['jobs'] / r['wall']:>9,.0f} {ratio:>7} {r['rss_mb']:>8,.0f} MB "
            f"{r['worst_ping_ms']:>8.1f} ms {r['slow_n']:>6} {r['slowest_ms']:>6.1f} ms {r['slowest_cmd']}")


def median_of(runs: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in runs) for k in ("wall", "rss_mb", "slow_n", "slowest_ms")}
    out["jobs"] = runs[0]["jobs"]
    out["worst_ping_ms"] = max(r["worst_ping_ms"] for r in runs)   # the worst of all rounds
    slowest = max(runs, key=lambda r: r["slowest_ms"])
    out["slowest_cmd"] = slowest["slowest_cmd"]
    out["walls"] = [round(r["wall"], 2) for r in runs]
    return out


def compile_bytecode() -> None:
    """Compile forensics' modules once, as installing a package does. Where
    PYTHONDONTWRITEBYTECODE is set (it is on this project's machines), every Python reader
    would otherwise compile them again in each run (0.1-0.3 s, the hand-tuned reader too)."""
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "forensics")], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 jobs (and the series)")
    ap.add_argument("--runs", type=int, default=3, help="rounds of readers; the table gives the median (default 3)")
    ap.add_argument("--data-bytes", type=int, default=100)
    ap.add_argument("--throttle", type=float, default=20000, help="--max-ops-per-sec of the throttled capture")
    ap.add_argument("--series", type=int, default=100, help="captures in the series (default 100)")
    ap.add_argument("--series-jobs", type=int, default=100_000)
    ap.add_argument("--skip", action="append", default=[],
                    help="leave out a part: node, pybullmq, throttle, report, series (repeatable)")
    ap.add_argument("--dataset-only", action="store_true", help="build (or find) the dataset and stop")
    args = ap.parse_args()
    if args.quick:
        args.jobs = 100_000
    dump = build_dataset(args.jobs, args.series_jobs, args.data_bytes)
    if args.dataset_only:
        return
    compile_bytecode()
    srv = Server(dump)
    work = Path(tempfile.mkdtemp(prefix="forensics-bench-out-"))
    node_env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
    results: dict = {"date": dt.date.today().isoformat(), "jobs": args.jobs}
    try:
        mem = srv.admin.info("memory")["used_memory_human"]
        readers = [("forensics capture + save", lambda k: [PY, "-c", CAPTURE, srv.url(0), str(work / f"snap{k}")],
                    None),
                   ("hand-tuned reader (hiredis, 2 in flight)",
                    lambda k: [PY, str(BENCH / "hand_reader.py"), srv.url(0), "bull:bench:"], None)]
        if "node" not in args.skip:
            readers.append(("Node BullMQ 5 getJobs (pages of 1000)",
                            lambda k: ["node", str(BENCH / "getjobs.js"), srv.url(0), "bull", "bench"], node_env))
        if "pybullmq" not in args.skip:
            readers.append(("Python bullmq getJobs (pages of 1000)",
                            lambda k: [PY, str(BENCH / "getjobs.py"), srv.url(0), "bull", "bench"], None))
        print(f"\n{args.jobs:,} BullMQ 5 jobs in mixed states, Redis used_memory {mem}; {args.runs} rounds, "
              f"each reader in its own process", flush=True)
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in readers}
        for k in range(args.runs):
            for label, cmd, env in readers:
                r = measure(srv, cmd(k), env)
                if label == "forensics capture + save":   # where its time went (the manifest's phases)
                    meta = json.loads((work / f"snap{k}" / "manifest.json").read_text())
                    r["phases"] = meta.get("phases", {})
                    r["helper_chunks"] = meta.get("counts", {}).get("helper_chunks", 0)
                runs[label].append(r)
                print(f"  round {k + 1}: {label:<40} {r['wall']:7.1f} s  {r['rss_mb']:7,.0f} MB  "
                      f"worst PING {r['worst_ping_ms']:5.1f} ms", flush=True)
        table = {label: median_of(rs) for label, rs in runs.items()}
        mid = sorted(runs["forensics capture + save"], key=lambda r: r["wall"])[len(runs["forensics capture + save"]) // 2]
        results["capture_phases"], results["helper_chunks"] = mid["phases"], mid["helper_chunks"]
        base = table["forensics capture + save"]["wall"]
        results["readers"] = table
        throttled = None
        if "throttle" not in args.skip:
            throttled = measure(srv, [PY, "-c", CAPTURE, srv.url(0), str(work / "throttled"), str(args.throttle)])
            results["throttled"] = dict(throttled, rate=args.throttle)
        snap = work / "snap0"
        diag = [measure(srv, [FORENSICS, "diagnose", str(snap), "--format", "json"]) for _ in range(args.runs)]
        results["diagnose_s"] = statistics.median(d["wall"] for d in diag)
        results["diagnose_rss_mb"] = statistics.median(d["rss_mb"] for d in diag)
        if "report" not in args.skip:
            html = work / "report.html"
            rep = measure(srv, [FORENSICS, "report", str(snap), "--out", str(html)])
            results["report_s"], results["report_rss_mb"] = rep["wall"], rep["rss_mb"]
            results["report_mb"] = html.stat().st_size / 1e6
            results["report_load_s"] = browser_load(html)
        if "report" not in args.skip:
            tri = measure(srv, [PY, "-c", TRIAGE, str(snap), str(ROOT / "notebooks")])
            results["triage_s"] = tri["wall"]
        if "series" not in args.skip:
            folder = build_series(srv, 0 if args.jobs == args.series_jobs else 1, args.series, args.series_jobs)
            ser = measure(srv, [PY, "-c", SERIES, str(folder)])
            results["series_s"], results["series_rss_mb"] = ser["wall"], ser["rss_mb"]
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nqueue-forensics bench, {results['date']}: {args.jobs:,} real BullMQ 5 jobs in mixed states "
          f"(Redis used_memory {mem}); median of {args.runs} rounds, each reader in its own process\n")
    print(f"{'reader':<44} {'time':>10} {'jobs/s':>9} {'vs fx':>7} {'peak RSS':>11} {'other PING':>11} "
          f"{'SLOWLOG':>6} {'slowest':>9}")
    for label, r in table.items():
        print(fmt_row(label, r, base))
    if throttled:
        print(fmt_row(f"forensics --max-ops-per-sec {args.throttle:,.0f} (1 run)", throttled, base))
    print("(vs fx: time relative to forensics capture + save; peak RSS: of all the reader's processes, pages "
          "shared after a fork counted once; other PING: the longest another client waited, worst of all rounds; "
          "SLOWLOG: commands over 1 ms inside Redis, and the slowest)\n")
    ph = results["capture_phases"]
    spent = {k[:-2]: v for k, v in ph.items() if k.endswith("_s")}
    print(f"the capture's phases in its median round, in its own process (each without the phases inside it; "
          f"its helper read {results['helper_chunks']} chunks of job hashes meanwhile, not counted here): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]))
          + f"; {ph.get('bytes_read', 0) / 1e6:,.0f} MB of replies read by both\n")
    print(f"forensics diagnose of the {args.jobs:,}-job snapshot: {results['diagnose_s']:.1f} s "
          f"(peak RSS {results['diagnose_rss_mb']:,.0f} MB)")
    if "report_s" in results:
        load = results.get("report_load_s")
        print(f"forensics report of it: {results['report_s']:.1f} s, HTML {results['report_mb']:.1f} MB "
              f"(peak RSS {results['report_rss_mb']:,.0f} MB); "
              + (f"headless Chromium draws it in {load:.1f} s" if load is not None else "no Chromium to open it"))
    if "triage_s" in results:
        print(f"the triage notebook (summary, diagnosis, state plot, queue picker, threshold sliders) executed on it "
              f"by papermill: {results['triage_s']:.1f} s")
    if "series_s" in results:
        print(f"load_series + diagnose of {args.series} captures of {args.series_jobs:,} jobs: "
              f"{results['series_s']:.1f} s (peak RSS {results['series_rss_mb']:,.0f} MB)")
    small = small_snapshot_figures()
    print(f"the shipped example (snapshots/example, {small['queues']} queues, {small['jobs']} jobs): diagnose "
          f"{small['diagnose_s']:.2f} s in Python (the CLI {small['cli_diagnose_s']:.2f} s, {small['import_s']:.2f} s of "
          f"it importing), explain {small['explain_first_s']:.2f} s for a first job and {small['explain_next_s']:.2f} s "
          f"for the next, report {small['report_s']:.1f} s")
    hand = table["hand-tuned reader (hiredis, 2 in flight)"]["wall"]
    fx = table["forensics capture + save"]
    node = table.get("Node BullMQ 5 getJobs (pages of 1000)", {}).get("wall")
    checks = [("capture <= 1.0x the hand-tuned reader's time", base <= hand, f"{base / hand:.2f}x"),
              *([("capture <= 0.8x Node getJobs' time", base <= 0.8 * node, f"{base / node:.2f}x")] if node else []),
              ("diagnose of the example <= 1 s (in Python)", small["diagnose_s"] <= 1, f"{small['diagnose_s']:.2f} s"),
              ("report of the example <= 12 s", small["report_s"] <= 12, f"{small['report_s']:.1f} s"),
              ("capture peak RSS < 1 GB", fx["rss_mb"] < 1024, f"{fx['rss_mb']:,.0f} MB"),
              ("another client's worst wait < 20 ms", fx["worst_ping_ms"] < 20, f"{fx['worst_ping_ms']:.1f} ms"),
              ("diagnose < 10 s", results["diagnose_s"] < 10, f"{results['diagnose_s']:.1f} s")]
    if "report_s" in results:
        checks.append(("report < 60 s, HTML < 15 MB", results["report_s"] < 60 and results["report_mb"] < 15,
                       f"{results['report_s']:.1f} s, {results['report_mb']:.1f} MB"))
    if "series_s" in results:
        checks.append(("load_series + diagnose < 60 s", results["series_s"] < 60, f"{results['series_s']:.1f} s"))
    print("\ntargets" + ("" if args.jobs >= 1_000_000 else f" (set for 1,000,000 jobs; this run has {args.jobs:,})"))
    for what, ok, fig in checks:
        print(f"  {'met ' if ok else 'MISS'}  {what}: {fig}")
    DATA.mkdir(exist_ok=True)
    out = DATA / f"results-{args.jobs}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\n(figures also in {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
