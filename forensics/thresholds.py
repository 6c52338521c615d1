"""Every threshold the detectors use, in one documented object.

Defaults follow the production checklist (3-5 attempts with exponential backoff, payloads
under 1 KB, bounded retention, noeviction). Override from Python
(``Thresholds(max_attempts=20)`` or ``diagnose(snap, thresholds={"max_attempts": 20})``),
from the CLI (``--threshold max_attempts=20``) or from a notebook parameter (a dict).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import UsageError


@dataclass(frozen=True)
class Thresholds:
    # --- stuck -----------------------------------------------------------------------
    stalled_grace_s: float = 1.0
    """An active job without a lock is stalled once it started more than this long ago
    (bull and BullMQ <= 4 set the lock a moment after moving the job to active)."""
    hung_active_minutes: float = 30.0
    """An active job whose lock is alive is hung after running this long ..."""
    hung_active_factor: float = 10.0
    """... or this many times the p95 run time of completed jobs of the same name."""
    overdue_delayed_s: float = 60.0
    """A delayed job this far past its due time is overdue (nothing promotes it)."""
    stale_backlog_minutes: float = 15.0
    """The oldest waiting job has waited longer than this: the backlog is not draining."""
    starvation_min_overtaken: int = 50
    """A waiting job that this many jobs added after it have overtaken (taken by a worker
    while it waited) is starved, whatever the wall clock says ..."""
    starvation_minutes: float = 15.0
    """... and high when it has also waited this long."""
    rate_limit_freeze_s: float = 60.0
    """A rate-limiter key living longer than this blocks the queue (manual rateLimit)."""
    scheduler_stall_loop: int = 3
    """A scheduler's job stalled this many times is in a loop: BullMQ never fails a
    scheduler's job for stalling, so a job that crashes its worker runs (and crashes) forever."""
    scheduler_grace_s: float = 60.0
    """A scheduler's next run this far past due, with no job left to run it, has stopped."""
    stopped_consuming_s: float = 60.0
    """Workers are connected, work has waited this long, and no job was taken or finished
    for this long (a healthy worker takes a waiting job within milliseconds) ..."""
    worker_block_max_s: float = 30.0
    """... and a worker connection blocked longer than this in one blocking read has a read
    that never settles (BullMQ blocks at most ~10 s at a time, Bull its drainDelay, 5 s)."""
    # --- retries ---------------------------------------------------------------------
    max_attempts: int = 10
    """More configured attempts than this is unbounded in practice (checklist: 3-5)."""
    min_backoff_ms: int = 1000
    """A fixed backoff shorter than this hammers the failing dependency."""
    retry_storm_per_min: float = 60.0
    """Retries per minute on one queue that make a retry storm, sustained: at least this
    many retries, and this many per minute over the window measured (a window shorter than
    a minute counts as a minute, so a short burst is not a storm)."""
    retry_storm_recent_minutes: float = 10.0
    """Bull (no events stream): jobs retried within this many minutes of the capture count."""
    retry_storm_jobs: int = 50
    """Also a storm: at least this many jobs waiting for a retry at once ..."""
    retry_storm_share: float = 0.10
    """... when they are also at least this share of the unfinished jobs."""
    hotspot_share: float = 0.5
    """One error fingerprint behind at least this share of failures is a hotspot ..."""
    hotspot_min_failures: int = 10
    """... counted only from this many failures."""
    failure_rate_warn: float = 0.2
    """Failed / finished above this is a high failure rate (medium) ..."""
    failure_rate_high: float = 0.5
    """... above this, high."""
    failure_rate_min_finished: int = 20
    """The failure rate is judged only from this many finished jobs."""
    # --- payloads --------------------------------------------------------------------
    payload_guideline_bytes: int = 1024
    """Job data above this breaks the 1 KB guideline (low)."""
    payload_large_bytes: int = 100 * 1024
    """Job data above this is large (medium)."""
    payload_huge_bytes: int = 1024 * 1024
    """Job data above this is huge (high)."""
    base64_min_chars: int = 1000
    """A base64 run at least this long inside job data is binary content."""
    returnvalue_large_bytes: int = 100 * 1024
    """A return value above this is kept in Redis for every retained job ..."""
    returnvalue_total_bytes: int = 16 * 1024 * 1024
    """... and return values of any size that weigh this much together (job hashes and the
    events stream's copies: 2,000 thumbnails of 50 KB are 100 MB)."""
    stacktrace_max_bytes: int = 20 * 1024
    """Stack traces above this per job bloat Redis ..."""
    stacktrace_max_entries: int = 10
    """... as do more kept stack traces than this (one per failed attempt)."""
    log_lines_max: int = 1000
    """More job log lines than this per job bloat Redis."""
    # --- memory ----------------------------------------------------------------------
    retention_max_jobs: int = 10_000
    """A completed/failed set larger than this, kept without removeOnComplete/Fail."""
    events_max_bytes: int = 10 * 1024 * 1024
    """An events stream holding more bytes than this (a full default stream of 10,000 small
    entries takes ~1.5 MB; return values and failure reasons are copied into it) ..."""
    events_max_entries: int = 20_000
    """... or, when its bytes were not read, more entries than this. A cap (maxLenEvents)
    raised above this is projected at the stream's bytes per entry."""
    bloat_high_share: float = 0.25
    """Bytes of one kind (payloads, return values, stream, retained jobs) taking this share of
    maxmemory (else of used_memory) raise a bloat finding to high: they will fill Redis ..."""
    bloat_high_min_bytes: int = 64 * 1024 * 1024
    """... on the used_memory basis (no maxmemory), only from this many bytes."""
    memory_pressure_share: float = 0.8
    """used_memory / maxmemory above this is pressure (high) ..."""
    memory_critical_share: float = 0.95
    """... above this, critical."""
    # --- trends (series of captures, worker logs) -------------------------------------
    series_min_points: int = 3
    """A trend needs at least this many captures (or memory log lines per worker: see below)."""
    trend_min_tau: float = 0.6
    """A trend counts only when the values rise consistently: Kendall's tau (rank
    correlation with time, or with jobs processed) at least this ..."""
    trend_late_share: float = 0.25
    """... and the latter half still rises at least this share of the overall (Theil–Sen)
    slope: a value that rose and then levelled off (a warm-up) is not growing."""
    memory_growth_min_bytes: int = 1024 * 1024
    """Redis used_memory must grow at least this much over the series ..."""
    memory_growth_min_share: float = 0.05
    """... and at least this share of where it started."""
    backlog_growth_min_jobs: int = 100
    """A queue's waiting + delayed jobs must grow at least this much over the series."""
    worker_memory_min_points: int = 5
    """Memory log lines needed per worker to judge its trend."""
    worker_memory_growth_bytes: int = 50 * 1024 * 1024
    """A worker's heap (or RSS) must grow at least this much over its log ..."""
    worker_memory_growth_share: float = 0.25
    """... and at least this share of where it started."""
    # --- config ----------------------------------------------------------------------
    max_concurrency: int = 50
    """More jobs active at once on one worker than this."""
    no_progress_minutes: float = 5.0
    """An active job running this long without ever reporting progress."""
    leak_min_connections: int = 50
    """One address holding this many idle connections that no worker uses (unnamed, or a
    Queue's) is leaking them (a Queue created per request and never closed) ..."""
    leak_idle_s: float = 60.0
    """... idle for at least this long."""
    clients_near_max_share: float = 0.8
    """connected_clients at this share of maxclients is close to refusing connections."""
    # --- PostgreSQL (BullMQ 6's PostgreSQL backend) -------------------------------------
    pg_long_transaction_s: float = 300.0
    """A session whose transaction has been open this long (idle in it, or running) holds
    back vacuum on the queue tables every worker updates."""
    pg_dead_rows_min: int = 10_000
    """A BullMQ table with this many dead rows ..."""
    pg_dead_share: float = 0.2
    """... and dead rows at least this share of its live ones is bloating (every state
    change of a job is an UPDATE, every removal a DELETE)."""

    @classmethod
    def coerce(cls, value: "Thresholds | Mapping[str, Any] | None") -> "Thresholds":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls().replace(**value)
        raise UsageError(f"thresholds must be a Thresholds or a dict, not {type(value).__name__}")

    def replace(self, **changes: Any) -> "Thresholds":
        known = {f.name: f for f in fields(self)}
        typed = {}
        for key, value in changes.items():
            if key not in known:
                raise UsageError(f"unknown threshold {key!r}; known: {', '.join(sorted(known))}")
            kind = type(getattr(self, key))
            try:
                typed[key] = kind(value)
            except (TypeError, ValueError, OverflowError):
                raise UsageError(f"threshold {key} needs a {kind.__name__}, got {value!r}") from None
            if not math.isfinite(typed[key]) or typed[key] < 0:
                raise UsageError(f"threshold {key} needs a finite number >= 0, got {value!r}")
        return dataclasses.replace(self, **typed)

    @classmethod
    def parse(cls, items: list[str] | None) -> "Thresholds":
        """From CLI ``key=value`` strings."""
        changes = {}
        for item in items or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"--threshold wants key=value, got {item!r}")
            changes[key.strip()] = value.strip()
        return cls().replace(**changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
