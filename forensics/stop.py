"""A stop the user asked for (the first Ctrl-C or SIGTERM during a capture).

The signal handler only raises a flag; every long loop -- reading, decoding, redaction,
spooling, saving -- looks at it between two pieces of work (a value, a batch, a block of a
file) and raises ``Stopped``, so a stop is honoured within a fraction of a second whatever
phase is running, and the capture keeps what it had read. Outside a capture the flag is
never up and ``check_stop`` costs one comparison.
"""
from __future__ import annotations

import contextlib


class Stopped(Exception):
    """The user asked the capture to stop (first Ctrl-C or SIGTERM); what was read is kept."""


_up = [False]
_finishing = [0]   # nested ``finishing()`` blocks running


def request_stop() -> None:
    _up[0] = True


def clear_stop() -> None:
    _up[0] = False


def stop_requested() -> bool:
    return _up[0]


def check_stop() -> None:
    if _up[0] and not _finishing[0]:
        raise Stopped()


@contextlib.contextmanager
def finishing():
    """A short piece of work that ends once begun, even when a stop comes meanwhile: what
    was read is being made keepable (redacted into a table: a megabyte at most, tens of
    milliseconds). ``check_stop`` does not raise inside; the stop is honoured right after."""
    _finishing[0] += 1
    try:
        yield
    finally:
        _finishing[0] -= 1
