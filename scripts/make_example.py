"""Regenerate the example snapshot shipped in snapshots/example from a real incident.

Starts a private redis-server, lets the real libraries produce the incident of
tests/node/scenario.js (BullMQ 5 under prefix `bull`, Bull 4 under prefix `legacy`),
adds one job whose payload tries to inject HTML (reports must show it as text), runs two
real pino-logging workers (tests/node/logging.js: a BullMQ worker leaking memory on queue
`images`, a Bull worker losing its job lock on `crunch`), starts a retry storm that goes on
during the capture (tests/node/incidents.js storm: queues `storm`, `trickle`, `blip`,
`burst`), then captures it with queue-forensics, attaches the two workers' logs, and saves
it. Needs node (make node) and redis-server.

    .venv/bin/python scripts/make_example.py snapshots/example
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

import forensics

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "tests" / "node"


def main(out: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp()
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", tmp, "--maxmemory", "256mb",
                            "--maxmemory-policy", "allkeys-lru"],
                           stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        for lib, prefix in (("bullmq5", "bull"), ("bull", "legacy")):
            subprocess.run(["node", str(NODE / "scenario.js"), lib, url, prefix], check=True,
                           cwd=NODE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["node", "-e", """
const { Queue } = require('bullmq5');
const q = new Queue('mail', { connection: { host: '127.0.0.1', port: %d }, prefix: 'bull' });
q.add('welcome', { user: '<script>alert("pwned")</script>', note: '<img src=x onerror=alert(1)>' })
 .then(() => q.close()).then(() => process.exit(0));
""" % port], check=True, cwd=NODE, stderr=subprocess.DEVNULL)
        logs = []
        for mode, lib, prefix, queue in (("leak", "bullmq5", "bull", "images"),
                                         ("locklost", "bull", "legacy", "crunch")):
            log = Path(tmp) / f"{queue}-worker.log"
            subprocess.run(["node", str(NODE / "logging.js"), mode, lib, url, prefix, queue, str(log), "30"],
                           check=True, cwd=NODE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            logs.append(str(log))
        storm = subprocess.Popen(["node", str(NODE / "incidents.js"), "storm", "bullmq5", url, "bull"], cwd=NODE,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            if storm.stdout.readline().strip() != "ready":
                raise SystemExit("incidents.js storm failed")
            snap = forensics.capture(url, prefix=["bull", "legacy"])  # while the storm goes on
        finally:
            storm.stdin.close()
            storm.wait(30)
        worker_logs = forensics.read_logs(logs)
        worker_logs.attrs["sources"] = [Path(x).name for x in logs]  # not this machine's temp paths
        snap.attach_logs(worker_logs)
        if Path(out).exists():
            shutil.rmtree(out)
        print(snap.save(out))
    finally:
        srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "snapshots/example")
