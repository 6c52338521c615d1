"""Snapshot: the captured tables as DataFrames, saved as Parquet files plus manifest.json.

A snapshot folder holds one Parquet file per table and ``manifest.json``. Loading checks
the manifest and schema version first, so a wrong or damaged folder fails with one clear
message instead of a pyarrow traceback. ``payloads`` (raw job texts) is the big table: it
is read from disk only when first used (``snap.payloads``).
"""
from __future__ import annotations

import datetime as dt
import html
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
TABLES = ("queues", "jobs", "payloads", "events", "workers", "redis", "metrics", "memory")


class Snapshot:
    """A frozen picture of every queue under a prefix. Tables are DataFrame attributes."""

    def __init__(self, tables: dict[str, pd.DataFrame], manifest: dict[str, Any],
                 payloads_file: str | os.PathLike | None = None, path: str | None = None):
        self._tables = dict(tables)
        self.manifest = manifest
        self.path = path
        self._payloads_file = Path(payloads_file) if payloads_file else None

    # -- tables -----------------------------------------------------------------------
    def __getattr__(self, name: str) -> pd.DataFrame:
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "payloads":
            return self._load_payloads()
        tables = self.__dict__.get("_tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(f"Snapshot has no table {name!r}; tables: {', '.join(TABLES)}")

    def _load_payloads(self) -> pd.DataFrame:
        if "payloads" not in self._tables:
            if self._payloads_file is None or not self._payloads_file.exists():
                from .decode import empty_payloads
                self._tables["payloads"] = empty_payloads()
            else:
                self._tables["payloads"] = _read_table(self._payloads_file, "payloads")
        return self._tables["payloads"]

    @property
    def tables(self) -> tuple[str, ...]:
        return TABLES

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete", False))

    @property
    def captured_at(self) -> pd.Timestamp:
        return pd.Timestamp(self.manifest["captured_at"])

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> str:
        """Write every table as Parquet plus manifest.json; returns the folder path."""
        if path is None:
            stamp = self.captured_at.strftime("%Y%m%dT%H%M%SZ")
            path = Path("snapshots") / stamp
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not (path / MANIFEST).exists():
            raise SnapshotError(f"{path} exists and is not a snapshot folder; choose another --out")
        tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=path.parent if path.parent.exists() else None))
        try:
            rows = {}
            for name in TABLES:
                target = tmp / f"{name}.parquet"
                if name == "payloads" and "payloads" not in self._tables and self._payloads_file \
                        and self._payloads_file.exists():
                    shutil.copyfile(self._payloads_file, target)
                    rows[name] = pq.ParquetFile(target).metadata.num_rows
                    continue
                df = getattr(self, name)
                df.to_parquet(target, index=False)
                rows[name] = len(df)
            manifest = dict(self.manifest)
            manifest["row_counts"] = rows
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest = manifest
        self.path = str(path)
        self._payloads_file = path / "payloads.parquet"
        return str(path)

    # -- display ----------------------------------------------------------------------
    def __repr__(self) -> str:
        m = self.manifest
        return (f"<Snapshot {m.get('source')} prefix={m.get('options', {}).get('prefixes')} "
                f"captured_at={m.get('captured_at')} queues={len(self.queues)} jobs={len(self.jobs)}"
                f"{'' if self.complete else ' INCOMPLETE'}>")

    def _repr_html_(self) -> str:
        from .summary import summary_html
        return summary_html(self)


def _read_table(file: Path, name: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(file)
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


def load(path: str | os.PathLike) -> Snapshot:
    """Load a snapshot folder written by ``Snapshot.save`` (payloads load lazily)."""
    path = Path(path)
    manifest = read_manifest(path)
    tables = {}
    for name in TABLES:
        if name == "payloads":
            continue
        file = path / f"{name}.parquet"
        if not file.exists():
            raise SnapshotError(f"snapshot {path} is damaged: {name}.parquet is missing")
        tables[name] = _read_table(file, name)
    expected = manifest.get("row_counts", {})
    for name, df in tables.items():
        if name in expected and expected[name] != len(df):
            raise SnapshotError(
                f"snapshot {path} is damaged: {name} has {len(df)} rows, manifest says {expected[name]}")
    if not (path / "payloads.parquet").exists():
        raise SnapshotError(f"snapshot {path} is damaged: payloads.parquet is missing")
    return Snapshot(tables, manifest, payloads_file=path / "payloads.parquet", path=str(path))


def new_spool() -> Path:
    """A private temp folder for tables written while capturing; removed with its owner."""
    return Path(tempfile.mkdtemp(prefix="forensics-spool-"))


def attach_spool(snap: Snapshot, spool: Path) -> None:
    weakref.finalize(snap, shutil.rmtree, str(spool), True)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def escape(text: Any) -> str:
    return html.escape(str(text))
