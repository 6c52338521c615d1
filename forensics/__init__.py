"""queue-forensics: incident forensics for Bull and BullMQ job queues.

    snap = forensics.capture("redis://localhost:6379/0", prefix="bull")
    snap.save("snapshots/incident")
    snap = forensics.load("snapshots/incident")
    snap.jobs, snap.queues, snap.events, snap.payloads, ...
    result = forensics.diagnose(snap)            # result.findings, result.checklist
"""
from ._version import __version__
from .capture import capture
from .diagnosis import Diagnosis, diagnose
from .errors import ConnectError, ForensicsError, SnapshotError, UsageError
from .snapshot import Snapshot, load
from .summary import summary
from .thresholds import Thresholds

__all__ = ["__version__", "capture", "load", "Snapshot", "summary", "diagnose", "Diagnosis",
           "Thresholds", "ForensicsError", "ConnectError", "SnapshotError", "UsageError"]
