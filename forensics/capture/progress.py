"""Progress on stderr and the Ctrl-C protocol of a capture (first: stop and keep what was
read; second: stop at once)."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time


class Stopped(Exception):
    """The user asked the capture to stop (first Ctrl-C or SIGTERM); what was read is kept."""


STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


@contextlib.contextmanager
def stop_on_ctrl_c(cap, progress: "Progress"):
    """First Ctrl-C (or SIGTERM, as a service manager or ``timeout`` sends): finish the round
    trip in hand, then stop and keep what was read. A second one: stop at once. The signal's
    name is left in ``cap.stop_signal``. (Signal handlers exist only in the main thread.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if cap.stop_requested:
            raise KeyboardInterrupt
        cap.stop_requested = True
        cap.stop_signal = STOP_SIGNALS.get(signum, "a signal")
        again = "Ctrl-C" if signum == signal.SIGINT else "send it"
        progress.stream.write(f"\ncapture: {cap.stop_signal}: stopping, saving what was read ({again} again to abort)\n")
        progress.stream.flush()

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Progress:
    """Progress on stderr: a live line on a terminal, a line per 2 s when forced elsewhere."""

    def __init__(self, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = tty if enabled is None else enabled
        self.tty = tty
        self.t0 = time.monotonic()
        self.last = 0.0
        self.jobs = 0

    def update(self, text: str, jobs: int = 0, force: bool = False) -> None:
        self.jobs += jobs
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 2.0):
            return
        self.last = now
        rate = self.jobs / max(now - self.t0, 1e-6)
        line = f"capture: {text} | {self.jobs:,} jobs read, {rate:,.0f} jobs/s"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:200])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


