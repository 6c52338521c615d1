"""Errors a user can act on, each tied to the CLI exit code of the DESIGN contract.

Every error carries a one-line message that says what went wrong and what to do;
the CLI prints it as is (no traceback unless ``--debug``).
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAIL_ON = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_INCOMPLETE = 4
EXIT_INTERNAL = 70  # a bug in queue-forensics (sysexits EX_SOFTWARE)


class ForensicsError(Exception):
    """Base class: a problem the user can fix, with a one-line message."""

    exit_code = EXIT_USAGE

    def _repr_html_(self) -> str:  # shown nicely when raised in a notebook
        from .htmlsafe import escape

        return (
            f'<div style="border-left:4px solid #c0392b;padding:4px 8px">'
            f"<b>{escape(type(self).__name__)}</b>: {escape(str(self))}</div>"
        )


class UsageError(ForensicsError):
    """Bad arguments or a path that is not what it should be."""


class SnapshotError(ForensicsError):
    """A folder that is not a snapshot, is damaged, or has a newer schema."""


class ConnectError(ForensicsError):
    """Redis cannot be reached, refuses the credentials, or denies a needed command."""

    exit_code = EXIT_CONNECT


class UnsafeCommandError(ForensicsError):
    """The read-only gate refused a command before it was sent. A bug, never user input."""


class CaptureIncomplete(ForensicsError):
    """A capture was cut short; what was read is kept in ``snapshot`` (complete: false)."""

    exit_code = EXIT_INCOMPLETE

    def __init__(self, message: str, snapshot=None):
        super().__init__(message)
        self.snapshot = snapshot
