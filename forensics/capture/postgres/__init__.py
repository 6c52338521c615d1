"""Capture of BullMQ 6 queues kept in PostgreSQL (``createPostgresBackend``): the same
snapshot tables as a Redis capture, read in one ``READ ONLY``, ``REPEATABLE READ``
transaction, so every table is as of one moment.

* ``gate.py``: the connection, its settings (read-only transaction, statement and lock
  timeouts) and the statement allowlist every query passes.
* ``reader.py``: what is read, table by table, and how each row becomes the row a Redis
  capture would have written (the job row as the hash BullMQ keeps in Redis, decoded and
  redacted by the same code).

The schema is BullMQ's own (``bullmq`` by default; its migrations are the ground truth:
``dist/cjs/postgres/sql-scripts.js`` of the ``bullmq`` 6 package). Nothing here creates,
migrates or locks anything: SELECT, SHOW, SET, BEGIN and COMMIT only.
"""
from __future__ import annotations

from .reader import KNOWN_SCHEMA_VERSIONS, capture_postgres, is_postgres_url

__all__ = ["capture_postgres", "is_postgres_url", "KNOWN_SCHEMA_VERSIONS"]
