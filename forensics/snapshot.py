"""Snapshot: the captured tables as DataFrames, saved as Parquet files plus manifest.json.

A snapshot folder holds one Parquet file per table and ``manifest.json``. Loading checks
the manifest and schema version first, so a wrong or damaged folder fails with one clear
message instead of a pyarrow traceback. ``payloads`` (raw job texts) is the big table: it
is read from disk only when first used (``snap.payloads``).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .errors import SnapshotError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# Tables every snapshot has, in the order they are listed and saved.
TABLES = ("queues", "jobs", "payloads", "events", "workers", "clients", "dedup", "schedulers", "redis",
          "metrics", "memory")

# Tables added after snapshots were first saved: one saved before has none, and loads it
# empty (its manifest lists no row count for it); one whose manifest lists it must have it.
LATER = ("clients", "dedup", "schedulers")


def _empty_later(name: str) -> pd.DataFrame:
    from .capture.tables import empty_clients, empty_dedup, empty_schedulers
    return {"clients": empty_clients, "dedup": empty_dedup, "schedulers": empty_schedulers}[name]()


# Tables a snapshot may have: worker logs attached at capture (``capture --logs``), and the
# application's code scan kept with it (``capture --code``; ``Snapshot.attach_code``).
OPTIONAL = ("logs", "code")

# Big tables are read from their Parquet file on first use (loading or capturing a
# million-job snapshot must not hold what nobody looked at).
LAZY = ("jobs", "payloads", "events")


# The redis table's types in Parquet. A column every row leaves empty (maxclients without CONFIG, a
# replica's lag on a primary, cluster fields on one node) is given its type rather than
# Parquet's "null" type, so the files of every capture share one schema (Spark, Trino and
# DuckDB read a folder of captures as one table).
REDIS_TYPES = {
    "redis_version": "string", "server_type": "string", "server_version": "string", "redis_mode": "string", "maxmemory_policy": "string", "node": "string",
    "role": "string", "cluster_node_id": "string", "mem_fragmentation_ratio": "float64",
    "info_available": "boolean", "config_available": "boolean",
    **{c: "Int64" for c in ("used_memory", "used_memory_peak", "used_memory_rss", "maxmemory", "evicted_keys",
                            "expired_keys", "rejected_connections", "connected_clients", "blocked_clients",
                            "maxclients", "instantaneous_ops_per_sec", "total_commands_processed",
                            "uptime_in_seconds", "db", "db_keys", "db_expires", "aof_enabled", "slots",
                            "replication_lag_bytes", "master_last_io_seconds_ago", "measured_queue_bytes")},
}


PARQUET_TYPES = {"redis": REDIS_TYPES}


def typed_empty_columns(df: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """Give each column that holds no value at all its declared type (for the file)."""
    empty = {c: t for c, t in types.items() if c in df.columns and df[c].isna().all()}
    return df.astype(empty) if empty else df


def untyped_empty_columns(df: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """In memory, an empty column holds None, as it always has (``if row.get(x)`` keeps working)."""
    for c in types:
        if c in df.columns and len(df) and df[c].isna().all():
            df[c] = pd.Series([None] * len(df), index=df.index, dtype=object)
    return df


class Snapshot:
    """A frozen picture of every queue under a prefix. Tables are DataFrame attributes."""

    def __init__(self, tables: dict[str, pd.DataFrame], manifest: dict[str, Any],
                 files: dict[str, str | os.PathLike] | None = None, path: str | None = None):
        self._tables = dict(tables)
        self._files = {k: Path(v) for k, v in (files or {}).items()}
        self.manifest = manifest
        self.path = path
        self._spool: Path | None = None          # the capture's private working folder
        self._digests: dict[str, dict] = {}      # size and sha256 of files hashed as they were written

    # -- tables -----------------------------------------------------------------------
    def __getattr__(self, name: str) -> pd.DataFrame:
        if name.startswith("_"):
            raise AttributeError(name)
        tables = self.__dict__.get("_tables", {})
        if name in tables:
            return tables[name]
        files = self.__dict__.get("_files", {})
        if name in files:
            tables[name] = read_table(files[name], name)
            if name == "logs":
                tables[name].attrs.update(self.__dict__.get("manifest", {}).get("logs", {}))
            return tables[name]
        if name == "logs":
            from .logs import empty_logs
            return empty_logs()
        if name == "code":
            from .code import empty_sites
            return empty_sites()
        if name in LATER:
            tables[name] = _empty_later(name)
            return tables[name]
        raise AttributeError(f"Snapshot has no table {name!r}; tables: {', '.join(TABLES)}")

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(TABLES) | set(OPTIONAL))

    def attach_logs(self, logs: pd.DataFrame) -> None:
        """Keep worker log records with the snapshot (saved as logs.parquet)."""
        self._tables["logs"] = logs
        self.manifest = {**self.manifest, "logs": {k: v for k, v in logs.attrs.items()}}

    @property
    def has_logs(self) -> bool:
        return self.has("logs")

    def has(self, name: str) -> bool:
        """Whether the snapshot carries an optional table (``logs``, ``code``)."""
        return name in self._tables or name in self._files

    def attach_code(self, scan) -> None:
        """Keep the application's code scan with the snapshot (saved as code.parquet, the
        scan's roots, packages and skipped files in the manifest): ``diagnose`` joins it
        without being given the source again."""
        self._tables["code"] = scan.sites
        self.manifest = {**self.manifest, "code": scan.meta()}

    @property
    def code_scan(self):
        """The kept code scan (a ``CodeScan``, judged with default thresholds), or None."""
        if not self.has("code"):
            return None
        from .code import kept_scan
        return kept_scan(self.code, self.manifest.get("code") or {})

    @property
    def tables(self) -> tuple[str, ...]:
        return TABLES

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete", False))

    @property
    def captured_at(self) -> pd.Timestamp:
        return pd.Timestamp(self.manifest["captured_at"])

    def payloads_of(self, prefix: str, queue: str, job_ids, columns=("data", "returnvalue", "stacktrace", "opts",
                                                                     "logs")) -> pd.DataFrame:
        """Payload rows (job_id + ``columns``) of some jobs of one queue. Reads only those rows
        from the Parquet file unless the whole table is already loaded."""
        ids = [str(j) for j in job_ids]
        cols = ["job_id", *[c for c in columns if c != "job_id"]]
        if not ids:
            return pd.DataFrame({c: pd.Series(dtype="str") for c in cols})
        if "payloads" in self._tables or "payloads" not in self._files:
            p = self.payloads
            sel = p[(p["prefix"].astype("str") == str(prefix)) & (p["queue"].astype("str") == str(queue))
                    & p["job_id"].astype("str").isin(ids)]
            return sel[[c for c in cols if c in sel.columns]].astype({"job_id": "str"}).reset_index(drop=True)
        import pyarrow.compute as pc
        have = pq.ParquetFile(self._files["payloads"]).schema_arrow.names
        where = (pc.field("prefix") == str(prefix)) & (pc.field("queue") == str(queue)) & pc.field("job_id").isin(ids)
        try:
            table = pq.read_table(self._files["payloads"], columns=[c for c in cols if c in have], filters=where)
        except (OSError, pa.ArrowException, ValueError) as e:
            raise SnapshotError(f"snapshot table payloads at {self._files['payloads']} is damaged: "
                                f"{str(e).splitlines()[0]}") from e
        return table.to_pandas().astype({"job_id": "str"})

    def row_count(self, name: str) -> int:
        """Rows of a table without loading it."""
        if name in self._tables:
            return len(self._tables[name])
        return pq.ParquetFile(self._files[name]).metadata.num_rows

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> str:
        """Write every table as Parquet plus manifest.json; returns the folder path.

        Tables not loaded since capture or load are copied file to file; a capture's own
        working files are linked into place where the file system allows (their sha256 was
        taken as they were written), so saving gigabytes of payloads takes a moment."""
        if path is None:
            stamp = self.captured_at.strftime("%Y%m%dT%H%M%SZ")
            path = Path("snapshots") / stamp
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not (path / MANIFEST).exists():
            raise SnapshotError(f"{path} exists and is not a snapshot folder; choose another --out")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=path.parent))
        try:
            rows, listed = {}, {}
            for name in TABLES + tuple(n for n in OPTIONAL if self.has(n)):
                target = tmp / f"{name}.parquet"
                known = None
                if name not in self._tables and name in self._files:
                    known = self._place(self._files[name], target, self._digests.get(name))
                else:
                    table = typed_empty_columns(getattr(self, name), PARQUET_TYPES.get(name, {}))
                    table.to_parquet(target, index=False)
                rows[name] = pq.ParquetFile(target).metadata.num_rows
                size = target.stat().st_size
                listed[f"{name}.parquet"] = {"bytes": size, "rows": rows[name],
                                             "sha256": known["sha256"] if known and known["bytes"] == size
                                             else file_sha256(target)}
            manifest = dict(self.manifest)
            manifest["row_counts"] = rows
            manifest["files"] = listed  # load() checks sizes and rows; verify also the hashes
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):  # a full disk or a file-size limit: one line, nothing half-written
                raise SnapshotError(f"could not save the snapshot to {path}: {e.strerror or e} "
                                    f"(nothing was written there; free space or choose another --out)") from e
            raise
        self.manifest = manifest
        self.path = str(path)
        self._files = {name: path / f"{name}.parquet" for name in rows}
        self._digests = {}
        return str(path)

    def _place(self, src: Path, target: Path, digest: dict | None) -> dict | None:
        """A table file into the folder being saved: a hard link to a capture's own working
        file (same file system), else a copy. Returns the digest still valid for it."""
        if self._spool is not None and src.parent == self._spool:
            try:
                os.link(src, target)
                return digest
            except OSError:
                pass
        shutil.copyfile(src, target)
        return digest if self._spool is not None and src.parent == self._spool else None

    # -- display ----------------------------------------------------------------------
    def __repr__(self) -> str:
        m = self.manifest
        return (f"<Snapshot {m.get('source')} prefix={m.get('options', {}).get('prefixes')} "
                f"captured_at={m.get('captured_at')} queues={len(self.queues)} "
                f"jobs={self.row_count('jobs')}"
                f"{'' if self.complete else ' INCOMPLETE'}>")

    def _repr_html_(self) -> str:
        from .summary import summary_html
        return summary_html(self)


def read_table(file: Path, name: str) -> pd.DataFrame:
    """One table from Parquet; Arrow buffers are freed column by column as pandas takes them."""
    try:
        df = pq.read_table(file).to_pandas(self_destruct=True, split_blocks=True)
        return untyped_empty_columns(df, PARQUET_TYPES[name]) if name in PARQUET_TYPES else df
    except (OSError, pa.ArrowException, ValueError) as e:
        raise SnapshotError(f"snapshot table {name} at {file} is damaged: {str(e).splitlines()[0]}") from e


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise SnapshotError(f"{path}: no such snapshot folder")
    if not path.is_dir():
        raise SnapshotError(f"{path} is a file; a snapshot is a folder holding {MANIFEST}")
    mf = path / MANIFEST
    if not mf.exists():
        members = [c for c in path.iterdir() if c.is_dir() and (c / MANIFEST).exists()]
        if members:
            raise SnapshotError(f"{path} is a series folder ({len(members)} snapshots): "
                                "use forensics.load_series() (the CLI commands take it as is)")
        raise SnapshotError(f"{path} is not a snapshot: it has no {MANIFEST}")
    try:
        manifest = json.loads(mf.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise SnapshotError(f"{mf} is damaged: {e}") from e
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise SnapshotError(f"{mf} has no schema_version: not a queue-forensics snapshot")
    if version > SCHEMA_VERSION:
        raise SnapshotError(
            f"{path} has snapshot schema {version}, newer than this queue-forensics "
            f"{__version__} reads ({SCHEMA_VERSION}); upgrade queue-forensics")
    return manifest


def file_sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(path: str | os.PathLike, verify: bool = False) -> Snapshot:
    """Load a snapshot folder written by ``Snapshot.save`` (big tables load on first use).

    Every file's footer, row count and size (as the manifest lists them) is checked now, so
    a damaged snapshot fails here with one clear message rather than later in a notebook
    cell. ``verify=True`` also checks every file's sha256 against the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    expected = manifest.get("row_counts", {})
    listed = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    tables, files = {}, {}

    def check(name: str, file: Path) -> None:
        try:
            rows = pq.ParquetFile(file).metadata.num_rows
        except (OSError, pa.ArrowException, ValueError) as e:
            raise SnapshotError(f"snapshot table {name} at {file} is damaged: "
                                f"{str(e).splitlines()[0]}") from e
        if name in expected and expected[name] != rows:
            raise SnapshotError(
                f"snapshot {path} is damaged: {name} has {rows} rows, manifest says {expected[name]}")
        want = listed.get(file.name)
        if not isinstance(want, dict):
            return  # saved before files were listed: footer and rows only
        size = file.stat().st_size
        if want.get("bytes") is not None and size != want["bytes"]:
            raise SnapshotError(f"snapshot {path} is damaged: {file.name} is {size:,} bytes, "
                                f"the manifest says {want['bytes']:,}")
        if verify and want.get("sha256") and file_sha256(file) != want["sha256"]:
            raise SnapshotError(f"snapshot {path} is damaged: {file.name} does not match its sha256 in the manifest")
    for name in TABLES:
        file = path / f"{name}.parquet"
        if name in LATER and not file.exists() and name not in expected:
            tables[name] = _empty_later(name)  # saved before this table existed
            continue
        if not file.exists():
            raise SnapshotError(f"snapshot {path} is damaged: {name}.parquet is missing")
        check(name, file)
        if name in LAZY:
            files[name] = file
        else:
            tables[name] = read_table(file, name)
    for name in OPTIONAL:  # worker logs and the code scan, when attached
        file = path / f"{name}.parquet"
        if file.exists():
            check(name, file)
            files[name] = file
    return Snapshot(tables, manifest, files=files, path=str(path))


def new_spool() -> Path:
    """A private temp folder for tables written while capturing; removed with its owner."""
    return Path(tempfile.mkdtemp(prefix="forensics-spool-"))


def attach_spool(snap: Snapshot, spool: Path, digests: dict[str, dict] | None = None) -> None:
    snap._spool = spool
    snap._digests = dict(digests or {})
    weakref.finalize(snap, shutil.rmtree, str(spool), True)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
