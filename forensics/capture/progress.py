"""Progress on stderr and the Ctrl-C protocol of a capture (first: stop and keep what was
read; second: stop at once)."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time

from ..stop import Stopped, clear_stop, request_stop  # noqa: F401  (Stopped: re-exported)


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
        request_stop()  # every long loop (decoding, redaction, spooling) sees it
        cap.stop_signal = STOP_SIGNALS.get(signum, "a signal")
        again = "Ctrl-C" if signum == signal.SIGINT else "send it"
        progress.stream.write(f"\ncapture: {cap.stop_signal}: stopping, saving what was read ({again} again to abort)\n")
        progress.stream.flush()

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    clear_stop()
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        clear_stop()


@contextlib.contextmanager
def finish_on_stop(what: str, stream=None):
    """While what was read is being saved: a first Ctrl-C or SIGTERM lets the save finish (it
    takes a moment: the big files are linked, their hashes known); a second one aborts it,
    leaving nothing half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked: list[str] = []

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(STOP_SIGNALS.get(signum, "a signal"))
        again = "Ctrl-C" if signum == signal.SIGINT else "send it"
        out = stream or sys.stderr
        out.write(f"\ncapture: {asked[0]}: {what} ({again} again to abort)\n")
        out.flush()

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Throttle:
    """At most ``rate`` commands a second (``--max-ops-per-sec``), over the whole capture and
    every thread of it: command k is not sent before start + k / rate. Pipelines shrink to
    ``batch`` commands (1/20 s worth) so the commands reach Redis as a trickle, not as bursts
    followed by silence."""

    def __init__(self, rate: float):
        self.rate = float(rate)
        self.batch = max(1, min(500, int(self.rate / 20)))
        self.lock = threading.Lock()
        self.t0: float | None = None
        self.sent = 0
        self.expected = 0  # commands the capture expects to send in all (an estimate)

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            if self.t0 is None:
                self.t0 = now
            due = self.t0 + self.sent / self.rate
            self.sent += n
            if due > now:
                time.sleep(due - now)

    def describe(self) -> str:
        """'throttled to 2,000 commands/s, about 4 min 10 s left' (once an estimate is known)."""
        text = f"throttled to {self.rate:,.0f} commands/s"
        if self.expected:
            left = max(self.expected - self.sent, 0) / self.rate
            text += f", about {duration_text(left)} left"
        return text


def duration_text(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class Progress:
    """Progress on stderr: a live line on a terminal, a line per 2 s when forced elsewhere."""

    def __init__(self, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = tty if enabled is None else enabled
        self.quiet = enabled is False  # asked for no progress at all (--quiet)
        self.tty = tty
        self.t0 = time.monotonic()
        self.last = 0.0
        self.jobs = 0
        self.bytes = 0
        self.throttle: Throttle | None = None

    def update(self, text: str, jobs: int = 0, force: bool = False) -> None:
        """``jobs``: read since the last call. (The capture adds the bytes it read to
        ``self.bytes`` itself, so subclasses keep this signature.)"""
        self.jobs += jobs
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 2.0):
            return
        self.last = now
        took = max(now - self.t0, 1e-6)
        line = f"capture: {text} | {self.jobs:,} jobs read, {self.jobs / took:,.0f} jobs/s"
        if self.bytes >= 1 << 20:  # big payloads: jobs/s alone says little
            line += f", {self.bytes / 1e6:,.0f} MB at {self.bytes / 1e6 / took:,.0f} MB/s"
        if self.throttle is not None:
            line += " | " + self.throttle.describe()
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:200])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """One line worth seeing even without a terminal (unless asked to be quiet)."""
        if self.quiet:
            return
        self.stream.write(("\r\x1b[2K" if self.tty and self.enabled else "") + f"capture: {text}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


