"""Regenerate snapshots/pdflab: an incident of the application whose source ships beside it
in snapshots/pdflab-app (PDFLab's background jobs: BullMQ 5 under prefix `pdflab`, Bull 4
under `legacy`), captured with that source's scan kept in the snapshot.

Nothing here writes a key itself: the app's own processes do, as in production.
1. `producer.js 60` enqueues a day's traffic: 60 uploads (conversion with the PDF inside the
   job, thumbnails, OCR), webhooks, emails, image resizes, usage reports, a delayed invoice.
2. `admin.js pause reports`: an operator pauses the reports queue (and forgets it).
3. `workers/images.js 30`: the image worker resizes 30 images and exits; it keeps every
   rendered image in a module-level Map (its pino log shows the heap climbing).
4. `workers/ocr.js`: the OCR worker takes two jobs and is SIGKILLed mid-job, as the OOM
   killer does; its 10 s locks lapse and nothing runs OCR any more.
5. `workers/main.js` with the converter down (a closed port) and customers' webhook
   endpoints answering 410: conversions retry 10 times, 1 s apart (a retry storm), webhooks
   retry client errors; thumbnails return 150 KB base64 images; email (Bull) is healthy.
6. The capture runs while the storm goes on; the workers then get SIGTERM and close.

    .venv/bin/python scripts/make_pdflab.py        (make pdflab; needs node and redis-server)
"""
from __future__ import annotations

import http.server
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

import forensics

ROOT = Path(__file__).resolve().parent.parent
APP = Path("snapshots") / "pdflab-app"          # relative: the kept scan names files as a user sees them
OUT = Path("snapshots") / "pdflab"
NODE_MODULES = ROOT / "tests" / "node" / "node_modules"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gone(http.server.BaseHTTPRequestHandler):
    """A customer's webhook endpoint that was removed: 410 for everything."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(410)
        self.end_headers()

    def log_message(self, *a):
        pass


def main() -> None:
    os.chdir(ROOT)
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(tmp), "--maxmemory", "512mb",
                            "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL)
    hooks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gone)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    procs: list[subprocess.Popen] = []
    try:
        url = f"redis://127.0.0.1:{port}/0"
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        # the app's `bullmq` is the pinned BullMQ 5 of the test fixtures; bull, ioredis, pino as pinned there
        mods = tmp / "node_modules"
        mods.mkdir()
        (mods / "bullmq").symlink_to(NODE_MODULES / "bullmq5", target_is_directory=True)
        uploads = tmp / "uploads"
        uploads.mkdir()
        rnd = random.Random(7)
        for n in range(60):   # what the upload handler left on disk: PDFs of 6-16 KB, one scan of 900 KB
            size = 900_000 if n == 7 else rnd.randrange(6_000, 16_000)
            (uploads / f"upload-{n}.pdf").write_bytes(b"%PDF-1.7\n" + rnd.randbytes(size))
        env = {**os.environ, "NODE_PATH": f"{mods}:{NODE_MODULES}", "REDIS_URL": url, "UPLOAD_DIR": str(uploads),
               "WEBHOOK_URL": f"http://127.0.0.1:{hooks.server_address[1]}/hooks",
               "CONVERTER_URL": f"http://127.0.0.1:{free_port()}", "HEALTH_PORT": "0", "OCR_PAGE_MS": "1500"}

        def node(*args, log: str | None = None, wait: bool = True) -> subprocess.Popen:
            out = open(tmp / log, "ab") if log else subprocess.DEVNULL
            p = subprocess.Popen(["node", *args], cwd=APP, env=env, stdout=out, stderr=subprocess.PIPE)
            if wait:
                _, err = p.communicate(timeout=180)
                if p.returncode:
                    raise SystemExit(f"node {' '.join(args)} failed: {err.decode()[-2000:]}")
            else:
                procs.append(p)
            return p

        node("src/producer.js", "60")
        node("src/admin.js", "pause", "reports")
        node("src/workers/images.js", "30", log="images-worker.log")
        ocr = node("src/workers/ocr.js", log="ocr-worker.log", wait=False)
        t0 = time.time()
        while r.llen("pdflab:ocr:active") < 2:
            if time.time() - t0 > 30:
                raise SystemExit("the OCR worker took no job")
            time.sleep(0.1)
        time.sleep(3)                      # a few pages read, progress reported
        ocr.send_signal(signal.SIGKILL)    # the OOM killer
        ocr.wait()
        killed = time.time()
        main_workers = node("src/workers/main.js", log="main-workers.log", wait=False)
        while time.time() - killed < 12:   # OCR's 10 s locks lapse; conversions retry meanwhile
            time.sleep(0.2)
        snap = forensics.capture(url, prefix=["pdflab", "legacy"])   # while the storm goes on
        main_workers.send_signal(signal.SIGTERM)
        main_workers.wait(30)
        logs = [str(tmp / n) for n in ("images-worker.log", "ocr-worker.log", "main-workers.log")]
        worker_logs = forensics.read_logs(logs)
        worker_logs.attrs["sources"] = [Path(x).name for x in logs]   # not this machine's temp paths
        snap.attach_logs(worker_logs)
        snap.attach_code(forensics.scan(APP))
        print(snap.save(OUT))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        hooks.shutdown()
        srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main() if len(sys.argv) == 1 else sys.exit(__doc__)
