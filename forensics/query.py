"""SQL over snapshots and series with DuckDB, straight from their Parquet files.

    forensics.query("snapshots/incident", "SELECT state, count(*) FROM jobs GROUP BY 1")
    forensics.query("snapshots/watch", '''
        SELECT captured_at, queue, count(*) FILTER (WHERE state = 'wait') AS waiting
        FROM jobs GROUP BY ALL ORDER BY 1''')

Each table of the snapshot (``jobs``, ``payloads``, ``events``, ``queues``, ``workers``,
``redis``, ``metrics``, ``memory``, and ``logs`` when logs were attached) is a view over its
Parquet file: DuckDB reads only the columns and row groups a query needs, so a question
about millions of jobs, or about every capture of a series, never loads them into pandas.
In a series, every table gains ``snapshot`` (the member's folder name) and ``captured_at``
first, and a ``snapshots`` view lists the members (snapshot, captured_at, complete, jobs).
A snapshot still in memory (a capture not saved yet) is queried from its DataFrames.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from .errors import UsageError
from .snapshot import OPTIONAL, TABLES, Snapshot


def _quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _members(source: Any) -> tuple[list[Snapshot], bool]:
    from .series import Series, is_series, load_series
    from .snapshot import load
    if isinstance(source, Snapshot):
        return [source], False
    if isinstance(source, Series):
        return list(source.snapshots), True
    if isinstance(source, (str, os.PathLike)):
        if is_series(source):
            return list(load_series(source).snapshots), True
        return [load(source)], False
    raise UsageError(f"query: expected a Snapshot, a Series or a folder, not {type(source).__name__}")


def _file(snap: Snapshot, name: str) -> Path | None:
    """The table's Parquet file when it holds what the snapshot holds (not replaced in memory)."""
    files = snap.__dict__.get("_files", {})
    tables = snap.__dict__.get("_tables", {})
    if name in files and (name not in tables or snap.path is not None):
        return Path(files[name])
    return None


def connect(source: Any):
    """A DuckDB connection with a view per table of ``source`` (a snapshot or series folder,
    a ``Snapshot`` or a ``Series``). Close it when done; ``query`` does this for you."""
    import duckdb
    snaps, series = _members(source)
    con = duckdb.connect()
    names = [n for n in TABLES] + [n for n in OPTIONAL if any(s.has(n) for s in snaps)]
    if not series:
        snap = snaps[0]
        for name in names:
            f = _file(snap, name)
            if f is not None:
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({_quote(f)})")
            else:
                con.register(f"_{name}_frame", getattr(snap, name))
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_frame")
        return con
    labels = [Path(s.path).name if s.path else f"#{i}" for i, s in enumerate(snaps)]
    con.register("_members", pd.DataFrame({
        "snapshot": labels,
        "captured_at": pd.to_datetime([s.captured_at for s in snaps], utc=True),
        "complete": [bool(s.complete) for s in snaps],
        "jobs": [s.row_count("jobs") for s in snaps]}))
    con.execute("CREATE VIEW snapshots AS SELECT * FROM _members ORDER BY captured_at")
    for name in names:
        files = [(label, _file(s, name)) for label, s in zip(labels, snaps)]
        if all(f is not None for _, f in files):
            con.register(f"_{name}_files", pd.DataFrame({"snapshot": [label for label, _ in files],
                                                         "file": [str(f) for _, f in files]}))
            own = "captured_at" in pq.read_schema(files[0][1]).names
            listed = ", ".join(_quote(f) for _, f in files)
            con.execute(
                f"CREATE VIEW {name} AS SELECT m.snapshot, m.captured_at, "
                f"t.* EXCLUDE (filename{', captured_at' if own else ''}) "
                f"FROM read_parquet([{listed}], union_by_name = true, filename = true) t "
                f"JOIN _{name}_files f ON t.filename = f.file JOIN _members m ON m.snapshot = f.snapshot")
        else:  # a member still in memory: stack the DataFrames (as Series does)
            parts = []
            for label, s in zip(labels, snaps):
                df = getattr(s, name).drop(columns=["captured_at"], errors="ignore")
                parts.append(df.assign(snapshot=label, captured_at=s.captured_at)[
                    ["snapshot", "captured_at", *df.columns]])
            con.register(f"_{name}_frame", pd.concat(parts, ignore_index=True))
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_frame")
    return con


def query(source: Any, sql: str, params: list | dict | None = None) -> pd.DataFrame:
    """Run ``sql`` (DuckDB's dialect) over the tables of a snapshot or series and return the
    result as a DataFrame. ``source``: a snapshot or series folder, a ``Snapshot`` or a
    ``Series``; ``params`` fill ``?`` or ``$name`` placeholders. A query DuckDB refuses is a
    ``UsageError`` with DuckDB's message."""
    import duckdb
    con = connect(source)
    try:
        try:
            return con.execute(sql, params).df() if params is not None else con.execute(sql).df()
        except duckdb.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"query failed: {first}") from None
    finally:
        con.close()
