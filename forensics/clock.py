"""Where a capture's time goes, phase by phase (the manifest's ``phases``).

Phases nest (reading happens inside discovery, redaction inside decoding); each phase is
given the time spent in it minus the time of the phases inside it, so the figures add up to
the capture's duration (the rest is ``other``). Work done meanwhile by the spool's writer
thread is not counted: only what the capture waited for. Outside a capture ``phase`` costs
one comparison.
"""
from __future__ import annotations

import contextlib
import time

_active: list["Clock | None"] = [None]


class Clock:
    def __init__(self):
        self.spent: dict[str, float] = {}
        self.stack: list[float] = []
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def running(self):
        previous, _active[0] = _active[0], self
        try:
            yield self
        finally:
            _active[0] = previous

    def report(self, bytes_read: int) -> dict:
        total = time.perf_counter() - self.t0
        out = {f"{k}_s": round(v, 3) for k, v in sorted(self.spent.items())}
        out["other_s"] = round(max(total - sum(self.spent.values()), 0.0), 3)
        out["bytes_read"] = int(bytes_read)
        return out


@contextlib.contextmanager
def phase(name: str):
    clock = _active[0]
    if clock is None:
        yield
        return
    t0 = time.perf_counter()
    clock.stack.append(0.0)
    try:
        yield
    finally:
        took = time.perf_counter() - t0
        inner = clock.stack.pop()
        clock.spent[name] = clock.spent.get(name, 0.0) + took - inner
        if clock.stack:
            clock.stack[-1] += took
