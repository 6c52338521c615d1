"""A series: snapshots of the same Redis taken over time, in one folder.

    forensics capture --every 30 --count 20 --out snapshots/watch     # writes the series
    series = forensics.load_series("snapshots/watch")
    series.redis          # every table stacked, with a leading captured_at column
    series.latest         # the newest Snapshot

Layout: ``<folder>/series.json`` (what was asked, what happened: gaps, why it stopped) and
one snapshot folder per tick, ``0001-20261128T163000Z/`` and so on. Any folder whose
sub-folders are snapshots loads as a series, so separate captures can be put side by side.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from .capture.progress import STOP_SIGNALS
from .errors import ConnectError, ForensicsError, SnapshotError, UsageError
from .htmlsafe import escape
from .snapshot import MANIFEST, TABLES, Snapshot, load, read_manifest, utcnow

SERIES_FILE = "series.json"
SERIES_KIND = "forensics.series/1"


class Series:
    """Snapshots ordered by capture time; tables stacked with ``captured_at``."""

    def __init__(self, snapshots: list[Snapshot], path: str | None = None,
                 manifest: dict | None = None, warnings: list[str] | None = None):
        if not snapshots:
            raise SnapshotError(f"{path or 'series'}: no readable snapshot in it")
        self.snapshots = sorted(snapshots, key=lambda s: s.captured_at)
        self.path = path
        self.manifest = manifest or {}
        self.warnings = list(warnings or [])
        self._stacked: dict[str, pd.DataFrame] = {}

    def __len__(self) -> int:
        return len(self.snapshots)

    def __iter__(self):
        return iter(self.snapshots)

    def __getitem__(self, i: int) -> Snapshot:
        return self.snapshots[i]

    @property
    def latest(self) -> Snapshot:
        return self.snapshots[-1]

    @property
    def first(self) -> Snapshot:
        return self.snapshots[0]

    @property
    def captured_at(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex([s.captured_at for s in self.snapshots])

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.snapshots)

    @property
    def for_trends(self) -> "Series":
        """The complete members (a capture cut short reads as a sudden drop); all of them
        when fewer than two are complete."""
        done = [s for s in self.snapshots if s.complete]
        if len(done) == len(self.snapshots) or len(done) < 2:
            return self
        if "_trend_view" not in self.__dict__:
            self.__dict__["_trend_view"] = Series(done, path=self.path, manifest=self.manifest, warnings=self.warnings)
        return self.__dict__["_trend_view"]

    @property
    def span(self) -> pd.Timedelta:
        return self.latest.captured_at - self.first.captured_at

    def __getattr__(self, name: str) -> pd.DataFrame:
        if name.startswith("_") or name not in TABLES + ("logs",):
            raise AttributeError(name)
        if name not in self._stacked:
            parts = []
            for s in self.snapshots:
                df = getattr(s, name)
                df = df.drop(columns=["captured_at"], errors="ignore")  # redis has its own (the same)
                parts.append(df.assign(captured_at=s.captured_at)[["captured_at", *df.columns]])
            self._stacked[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        return self._stacked[name]

    def __repr__(self) -> str:
        return (f"<Series {len(self)} snapshots {self.first.captured_at.isoformat()} .. "
                f"{self.latest.captured_at.isoformat()} path={self.path}>")

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{escape(str(s.captured_at))}</td><td>{len(s.queues)}</td>"
            f"<td style='text-align:right'>{s.row_count('jobs'):,}</td>"
            f"<td>{'' if s.complete else 'INCOMPLETE'}</td></tr>" for s in self.snapshots)
        from .notebook import left
        return left(f"<div><b>Series of {len(self)} snapshots</b> ({escape(str(self.path))}), "
                    f"span {escape(str(self.span))}<table><tr><th>captured</th><th>queues</th>"
                    f"<th>jobs</th><th></th></tr>{rows}</table></div>")


def is_series(path: str | os.PathLike) -> bool:
    """A folder that is not itself a snapshot but holds series.json or snapshot folders."""
    p = Path(path)
    if not p.is_dir() or (p / MANIFEST).exists():
        return False
    return (p / SERIES_FILE).exists() or any((c / MANIFEST).exists() for c in p.iterdir() if c.is_dir())


def load_series(path: str | os.PathLike) -> Series:
    """Load every snapshot in a series folder, oldest first.

    A damaged member is skipped with a warning in ``series.warnings`` (the others are
    still evidence); a folder with no readable snapshot is a SnapshotError. A single
    snapshot folder loads as a series of one."""
    p = Path(path)
    if not p.exists():
        raise SnapshotError(f"{p}: no such series folder")
    if not p.is_dir():
        raise SnapshotError(f"{p} is a file; a series is a folder of snapshot folders")
    if (p / MANIFEST).exists():
        return Series([load(p)], path=str(p))
    manifest: dict[str, Any] = {}
    warnings: list[str] = []
    if (p / SERIES_FILE).exists():
        try:
            manifest = json.loads((p / SERIES_FILE).read_text())
        except (ValueError, UnicodeDecodeError) as e:
            warnings.append(f"{SERIES_FILE} is damaged ({e}); reading the snapshot folders")
    snaps = []
    for child in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")):
        if not (child / MANIFEST).exists():
            continue
        try:
            snaps.append(load(child))
        except SnapshotError as e:
            warnings.append(f"skipped {child.name}: {e}")
    if not snaps:
        raise SnapshotError(f"{p} holds no readable snapshot"
                            + (f" ({warnings[0]})" if warnings else " (is it a series folder?)"))
    return Series(snaps, path=str(p), manifest=manifest, warnings=warnings + list(manifest.get("warnings", [])))


def verify(path: str | os.PathLike) -> list[str]:
    """Check a snapshot, or every snapshot of a series, file by file against its manifest
    (footer, rows, size and sha256). One line per snapshot checked; the first damaged file
    raises SnapshotError naming it."""
    p = Path(path)
    if p.is_dir() and not (p / MANIFEST).exists():
        members = sorted(c for c in p.iterdir() if c.is_dir() and (c / MANIFEST).exists())
    else:
        members = [p]
    if not members:
        read_manifest(p)  # raises the right one-line error
    out = []
    for m in members:
        snap = load(m, verify=True)
        files = snap.manifest.get("files")
        out.append(f"ok  {m}: " + (f"{len(files)} files, {sum(int(f.get('rows', 0)) for f in files.values()):,} rows; "
                                   "sizes, row counts and sha256 match the manifest" if files else
                                   "row counts match (saved by an older queue-forensics: no file sizes or hashes to check)"))
    return out


def open_path(path: str | os.PathLike) -> Snapshot | Series:
    """A snapshot folder as a Snapshot, a series folder as a Series."""
    return load_series(path) if is_series(path) else load(path)


def capture_series(url: str | None, prefix: str | Iterable[str] = "bull", queues: Iterable[str] | None = None, *,
                   every: float, count: int | None, out: str | os.PathLike | None = None,
                   redact: bool = True, redact_fields: Iterable[str] = (), no_data: bool = False,
                   memory_samples: int = 1000, progress: bool | None = None,
                   logs: pd.DataFrame | None = None,
                   on_tick: Callable[[int, Snapshot | None, str | None], None] | None = None,
                   **connect: Any) -> tuple[Series, str]:
    """Capture every ``every`` seconds, ``count`` times (None: until Ctrl-C), into ``out``.

    Ticks follow a fixed schedule from the start; a capture longer than ``every`` starts the
    next one at once. A tick that cannot reach Redis is recorded as a gap and the series goes
    on (the first of this run fails fast: wrong URL or password). A capture that loses Redis
    mid-read is kept (``complete: false``; trends skip it). Ctrl-C or SIGTERM stops cleanly: between
    ticks at once; during a capture, that partial capture is discarded (kept only when it
    is the first snapshot, so nothing read is lost). ``logs`` are attached once, to this
    run's first snapshot. Returns (Series, reason) where reason is why it stopped ("done",
    "interrupted (Ctrl-C)", ...)."""
    from .capture import capture
    if every <= 0:
        raise UsageError("--every must be a positive number of seconds")
    if count is not None and count < 1:
        raise UsageError("--count must be at least 1")
    root = Path(out) if out else Path("snapshots") / (utcnow().strftime("%Y%m%dT%H%M%SZ") + "-series")
    if root.exists() and (root / MANIFEST).exists():
        raise UsageError(f"--out {root} is a snapshot folder; a series needs a new or series folder")
    if root.exists() and any(root.iterdir()) and not is_series(root):
        raise UsageError(f"--out {root} exists and is not a series folder; choose a new path")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
    existing = sorted(c.name for c in root.iterdir() if (c / MANIFEST).exists())
    meta: dict[str, Any] = {
        "kind": SERIES_KIND, "started_at": utcnow().isoformat(), "every_s": every, "count": count,
        "options": {"prefixes": prefixes, "queues": list(queues) if queues else None, "redact": redact,
                    "redact_fields": list(redact_fields or ()), "no_data": no_data},
        "snapshots": existing, "gaps": [], "stopped": None}
    if existing and (root / SERIES_FILE).exists():  # continuing a series: keep its history
        try:
            before = json.loads((root / SERIES_FILE).read_text())
            meta["gaps"] = list(before.get("gaps", []))
            if before.get("incomplete"):
                meta["incomplete"] = list(before["incomplete"])
            meta["started_at"] = before.get("started_at", meta["started_at"])
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass
    stop = threading.Event()
    stopped_by = ["Ctrl-C"]
    reason = "done"

    def write_meta():  # whole or not at all: a full disk leaves the last good series.json
        tmp = root / f".{SERIES_FILE}.tmp"
        try:
            tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
            os.replace(tmp, root / SERIES_FILE)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise SnapshotError(f"could not write {root / SERIES_FILE}: {e.strerror or e}") from None

    def on_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stopped_by[0] = STOP_SIGNALS.get(signum, "a signal")
        stop.set()
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_stop) for s in STOP_SIGNALS} if main else {}
    write_meta()
    t0 = time.monotonic()
    tick = saved = 0
    try:
        while count is None or tick < count:
            due = t0 + tick * every
            if stop.wait(max(0.0, due - time.monotonic())):
                reason = f"interrupted ({stopped_by[0]})"
                break
            tick += 1
            try:
                with warnings.catch_warnings():  # an incomplete tick is reported below, once
                    warnings.simplefilter("ignore")
                    snap = capture(url, prefix=prefixes, queues=queues, redact=redact,
                                   redact_fields=redact_fields, no_data=no_data,
                                   memory_samples=memory_samples, progress=progress, **connect)
            except ConnectError as e:
                if not saved:  # nothing read yet in this run: a wrong URL or password, say so now
                    raise
                meta["gaps"].append({"tick": tick, "at": utcnow().isoformat(), "error": str(e)})
                write_meta()
                if on_tick:
                    on_tick(tick, None, str(e))
                continue
            cut = str(snap.manifest.get("incomplete_reason") or "")
            if not snap.complete and cut.startswith("interrupted") and meta["snapshots"]:
                # A tick cut short by the user is not a member: its counts are lower bounds and
                # would read as a sudden drop. The complete snapshots before it are the series.
                reason = f"{cut} during capture {tick}; that partial capture was discarded"
                break
            if logs is not None and not saved:
                snap.attach_logs(logs)  # once, with this run's first snapshot: the logs are the same for all
            name = f"{len(meta['snapshots']) + 1:04d}-{snap.captured_at.strftime('%Y%m%dT%H%M%SZ')}"
            snap.save(root / name)
            saved += 1
            meta["snapshots"].append(name)
            write_meta()
            if on_tick:
                on_tick(tick, snap, None)
            if not snap.complete:
                if cut.startswith("interrupted"):
                    reason = cut
                    break
                # Redis went away mid-read: keep what was read (trends skip incomplete
                # members) and carry on, as with a tick that could not connect.
                meta.setdefault("incomplete", []).append(name)
                write_meta()
            if stop.is_set():
                reason = f"interrupted ({stopped_by[0]})"
                break
    except KeyboardInterrupt:
        reason = f"interrupted ({stopped_by[0]}, twice)"
    except ForensicsError as e:  # a full disk, say: the snapshots saved so far stay whole and listed
        reason = f"stopped at capture {tick}: {e}"
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        meta["stopped"] = {"at": utcnow().isoformat(), "reason": reason, "ticks": tick}
        try:
            write_meta()
        except SnapshotError:  # a full disk: series.json keeps its last good state
            pass
    if not meta["snapshots"]:
        raise ForensicsError(f"series stopped before the first snapshot was saved ({reason})")
    return load_series(root), reason


def progress_line(tick: int, count: int | None, snap: Snapshot | None, error: str | None,
                  every: float | None = None) -> str:
    from .summary import human_bytes
    of = f"{tick}/{count}" if count else f"{tick}"
    if snap is None:
        return f"series: [{of}] gap: {error}"
    r = snap.redis.iloc[0] if len(snap.redis) else {}
    used = r.get("used_memory") if hasattr(r, "get") else None
    backlog = int(snap.queues[["n_wait", "n_paused", "n_prioritized", "n_delayed"]].sum().sum()) if len(snap.queues) else 0
    return (f"series: [{of}] {snap.captured_at:%H:%M:%S} {len(snap.queues)} queues, "
            f"{snap.row_count('jobs'):,} jobs, backlog {backlog:,}"
            + (f", used_memory {human_bytes(used)}" if used is not None and pd.notna(used) else "")
            + ("" if snap.complete else " (INCOMPLETE)")
            + (f"; this capture took {took:.1f} s, longer than --every {every:g} s: the next starts at once"
               if every and (took := float(snap.manifest.get("duration_s") or 0)) > every else ""))
