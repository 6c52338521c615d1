"""queue-forensics: incident forensics for Bull and BullMQ job queues.

    snap = forensics.capture("redis://localhost:6379/0", prefix="bull")
    snap.save("snapshots/incident")
    snap = forensics.load("snapshots/incident")
    snap.jobs, snap.queues, snap.events, snap.payloads, ...
    result = forensics.diagnose(snap)            # result.findings, result.checklist
    series = forensics.load_series("snapshots/watch")   # captures over time
    logs = forensics.read_logs("worker.log")            # pino / winston / text
    forensics.diagnose(series, logs=logs); forensics.diff(old, new)
    forensics.explain(snap, "42", queue="mail")          # one job's story
    forensics.query("snapshots/watch", "SELECT ... FROM jobs")  # SQL (DuckDB) on the Parquet files
"""
from ._version import __version__
from .capture import capture
from .diagnosis import Diagnosis, diagnose
from .diff import Diff, diff
from .code import CodeScan, scan
from .errors import ConnectError, ForensicsError, SnapshotError, UsageError
from .explain import Explanation, explain
from .logs import join_logs, read_logs
from .query import query
from .series import Series, load_series
from .snapshot import Snapshot, load
from .summary import summary
from .thresholds import Thresholds

__all__ = ["__version__", "capture", "load", "Snapshot", "summary", "diagnose", "Diagnosis",
           "load_series", "Series", "read_logs", "join_logs", "diff", "Diff", "explain", "Explanation",
           "query", "scan", "CodeScan",
           "Thresholds", "ForensicsError", "ConnectError", "SnapshotError", "UsageError"]
