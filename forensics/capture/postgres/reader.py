"""What a PostgreSQL capture reads, and how each row becomes the one a Redis capture writes.

The schema (BullMQ 6, migrations 1-11): ``job`` (one row per job: ``state`` is waiting /
active / completed / failed / delayed / waiting-children; a prioritized job is a waiting
one with ``priority > 0``; pause is ``meta`` field ``paused``), ``job_log``, ``event`` (the
events stream), ``metrics`` (per-minute deltas, newest first), ``rate_limit``, ``dedup``,
``scheduler``, ``meta`` and the ``migration`` ledger. Workers and QueueEvents name their
``LISTEN`` session (``application_name``): the queue name, ``<queue>:w:<worker name>``, or
``<queue>:qe``, as the Redis ones name their connection.
"""
from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa

from ..._version import __version__
from ...decode import JOB_COLUMNS, PAYLOAD_COLUMNS, decode_jobs, empty_jobs, empty_payloads
from ...errors import ConnectError, UsageError
from ...redact import Redaction
from ...snapshot import SCHEMA_VERSION, Snapshot, new_spool, utcnow
from ...stop import check_stop
from ..progress import Progress
from ..steps import Log, Reader, run, spooled_snapshot
from ..tables import (QUEUE_COLUMNS, STATES, Spool, as_json, empty_clients, empty_dedup, empty_events, event_texts,
                      empty_memory, empty_metrics, empty_schedulers, empty_workers)
from .gate import Session

KNOWN_SCHEMA_VERSIONS = range(1, 12)   # BullMQ 6.7's migrations 0001-0011
BATCH = 1000           # job rows in the first page of a queue (keyset pages on the primary key) ...
MAX_BATCH = 20_000     # ... then as many as fit in PAGE_BYTES, up to this (decoding costs per page)
PAGE_BYTES = 32 << 20  # megabyte payloads: a page stays near this many bytes of rows
EVENT_BATCH = 5000
LOG_LINES = 20
TABLES = ("job", "job_log", "job_dependency", "event", "metrics", "rate_limit", "dedup", "scheduler", "meta",
          "dedup_next", "migration")
JOB_SQL = """SELECT id, name, state::text, data::text, opts::text, priority, delay_ms, attempts_made,
  attempts_started, progress::text, return_value::text, failed_reason, stacktrace::text, deferred_failure,
  processed_by, added_at_ms, process_at_ms, processed_at_ms, finished_at_ms, lock_token, locked_until_ms,
  stalled_count, dedup_id, scheduler_id, parent_queue, parent_id, parent_key, pg_column_size(j.*)
  FROM {schema}.job j WHERE queue = %s AND id > %s ORDER BY id LIMIT %s"""


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0].lower() in ("postgres", "postgresql")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def capture_postgres(url: str, schema: str = "bullmq", queues=None, *, redact: bool = True,
                     redact_fields=(), no_data: bool = False, progress: bool | Progress | None = None,
                     statement_timeout_s: float = 30.0, sslmode: str | None = None, sslrootcert: str | None = None,
                     sslcert: str | None = None, sslkey: str | None = None) -> Snapshot:
    """Capture every BullMQ queue in ``schema`` of the PostgreSQL database at ``url``
    (``postgresql://user:password@host:5432/db?sslmode=verify-full``), read-only and
    consistent: one ``READ ONLY``, ``REPEATABLE READ`` transaction. The snapshot's ``prefix``
    column holds the schema name (PostgreSQL's namespace, as Redis's is the key prefix).

    Raises ``ConnectError`` (unreachable, refused credentials, a role that may not read the
    schema) or ``UsageError`` (no such schema, or one at a BullMQ schema version this tool does
    not know). A capture cut short (connection lost, Ctrl-C) returns what was read, with
    ``snap.complete`` False."""
    if not schema:
        raise UsageError("--schema must not be empty")
    prog = progress if isinstance(progress, Progress) else Progress(progress)
    policy = Redaction(secrets=bool(redact), fields=tuple(redact_fields or ()), no_data=no_data)
    cap = PgCapture(url, schema, list(queues) if queues else None, policy, prog,
                    dict(statement_timeout_s=statement_timeout_s, sslmode=sslmode, sslrootcert=sslrootcert,
                         sslcert=sslcert, sslkey=sslkey))
    return run(cap)


class PgCapture(Reader):
    """One PostgreSQL capture: the steps of ``steps.run``, each a few SELECTs in the one
    read-only transaction of its session."""

    LOST = (ConnectionError,)   # the gate's: "lost the connection to PostgreSQL: ..."
    server_name = "PostgreSQL"

    def __init__(self, url, schema, only, redact: Redaction, progress: Progress, connect: dict):
        super().__init__()
        self.url, self.schema, self.only, self.redact, self.progress = url, schema, only, redact, progress
        self.connect_opts = connect
        self.s = _ident(schema)
        self.spool = new_spool()
        self.started = utcnow()
        self.log = Log()
        self.warnings = self.log.warnings
        self.session: Session | None = None
        self.jobs_file, self.payload_file, self.events_file = (self.spool / f"{n}.parquet"
                                                               for n in ("jobs", "payloads", "events"))
        self._jobs = Spool(self.jobs_file, pa.Schema.from_pandas(
            empty_jobs().assign(in_stalled_set=pd.Series(dtype="boolean")), preserve_index=False), 100_000)
        self._payloads = Spool(self.payload_file, pa.Schema.from_pandas(empty_payloads(), preserve_index=False), 20_000)
        self._events = Spool(self.events_file, pa.Schema.from_pandas(empty_events(), preserve_index=False), 100_000)
        self.counts: dict[str, dict] = {}
        self.rows = {"workers": [], "clients": [], "dedup": [], "schedulers": [], "metrics": [], "memory": []}
        self.server: dict = {}
        self.table_stats: list[dict] = []
        self.schema_version = None
        self.queues: list[str] = []
        self.meta: dict[str, dict] = {}
        self.events_len: dict[str, int] = {}
        self.job_bytes: dict[str, int] = {}

    # -- the capture, step by step (``steps.run``) -----------------------------------------
    def connect(self) -> None:
        self.session = Session(self.url, **self.connect_opts)

    def read_server(self) -> None:
        """The server's row, then the schema: there, readable, at a version this tool knows."""
        self._read_server()
        self.check_schema()

    def find_queues(self) -> list[str]:
        self.read_queues()
        return self.queues

    def read_queue(self, q: str) -> None:
        self.read_jobs(q)
        self.read_events(q)

    def read_workers(self) -> None:
        self.read_sessions()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def lost_reason(self, err: BaseException) -> str:
        return str(err)

    def q(self, sql: str, params=None) -> list[tuple]:
        check_stop()
        return self.session.run(sql.replace("{schema}", self.s), params)

    def _read_server(self) -> None:
        (version, num, db, size, recovery, now_ms, user), = self.q(
            "SELECT version(), current_setting('server_version_num')::int, current_database(), "
            "pg_database_size(current_database()), pg_is_in_recovery(), "
            "(extract(epoch from now()) * 1000)::bigint, current_user")
        self.now_ms = int(now_ms)
        self.server = {"version_text": version, "version": str(version).split()[1] if version else None,
                       "version_num": num, "database": db, "database_bytes": int(size), "in_recovery": bool(recovery),
                       "user": user}
        try:
            (stats,), = self.q("SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')")
        except ConnectError:
            stats = False
        self.server["read_all_stats"] = bool(stats)

    def check_schema(self) -> None:
        found = self.q("SELECT n.nspname FROM pg_namespace n WHERE n.nspname = %s", (self.schema,))
        if not found:
            others = [r[0] for r in self.q(
                "SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_name = 'job' "
                "AND table_schema IN (SELECT table_schema FROM information_schema.tables WHERE table_name = 'migration') "
                "ORDER BY 1")]
            hint = f"BullMQ schemas in this database: {', '.join(others)} (--schema NAME)" if others else \
                "no BullMQ schema in this database (BullMQ 6's PostgreSQL backend creates `bullmq` by default)"
            raise UsageError(f"schema {self.schema!r} not found in database {self.server['database']!r}; {hint}")
        tables = {r[0] for r in self.q("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                       (self.schema,))}
        if "migration" not in tables or "job" not in tables:
            raise UsageError(f"schema {self.schema!r} holds no BullMQ tables (no `migration` ledger and `job` table; "
                             f"found: {', '.join(sorted(tables)[:8]) or 'nothing this role may see'})")
        (version, min_client), = self.q("SELECT max(version), max(min_client_version) FROM {schema}.migration")
        self.schema_version = version
        if version not in KNOWN_SCHEMA_VERSIONS:
            raise UsageError(f"schema {self.schema!r} is at BullMQ schema version {version} (minimum client "
                             f"BullMQ {min_client}); this queue-forensics reads versions "
                             f"{KNOWN_SCHEMA_VERSIONS.start}-{KNOWN_SCHEMA_VERSIONS.stop - 1}: upgrade it")
        missing = [t for t in TABLES if t not in tables and t not in ("dedup_next",)]
        if missing:
            self.log.warn(f"tables missing from schema {self.schema}: {', '.join(missing)}")
        self.tables = tables

    def read_queues(self) -> None:
        """Per queue: counts by state, meta, events, schedulers, dedup, rate limit, metrics,
        log counts; and the schema's table sizes and vacuum state."""
        counts: dict[str, dict] = {}
        for queue, state, prio, n, nbytes in self.q(
                "SELECT queue, state::text, priority > 0, count(*), sum(pg_column_size(j.*)) "
                "FROM {schema}.job j GROUP BY 1, 2, 3"):
            c = counts.setdefault(queue, {})
            name = {"waiting": "prioritized" if prio else "wait"}.get(state, state)
            c[name] = c.get(name, 0) + int(n)
            self.job_bytes[queue] = self.job_bytes.get(queue, 0) + int(nbytes or 0)
        for queue, field, value in self.q("SELECT queue, field, value FROM {schema}.meta"):
            self.meta.setdefault(queue, {})[field] = value
        events_bytes: dict[str, int] = {}
        for queue, n, nbytes in self.q("SELECT queue, count(*), sum(pg_column_size(e.*)) FROM {schema}.event e "
                                       "GROUP BY 1"):
            self.events_len[queue] = int(n)
            events_bytes[queue] = int(nbytes or 0)
        log_bytes: dict[str, tuple[int, int]] = {}
        if "job_log" in self.tables:
            for queue, n, nbytes in self.q("SELECT queue, count(*), sum(pg_column_size(l.*)) FROM {schema}.job_log l "
                                           "GROUP BY 1"):
                log_bytes[queue] = (int(n), int(nbytes or 0))
        self.limits = {r[0]: (r[1], r[2]) for r in self.q("SELECT queue, points, expire_at_ms FROM {schema}.rate_limit")} \
            if "rate_limit" in self.tables else {}
        scheds = self.q("SELECT queue, scheduler_id, name, next_run_ms, pattern, every_ms, tz, start_date_ms, "
                        "end_date_ms, limit_count, iteration_count, template_data::text FROM {schema}.scheduler "
                        "ORDER BY queue, next_run_ms LIMIT 100000") if "scheduler" in self.tables else []
        dedup = self.q("SELECT queue, dedup_id, job_id, expire_at_ms FROM {schema}.dedup ORDER BY queue, dedup_id "
                       "LIMIT 100000") if "dedup" in self.tables else []
        metrics = self.q("SELECT queue, kind, count, prev_ts, data FROM {schema}.metrics") \
            if "metrics" in self.tables else []
        names = set(counts) | set(self.meta) | set(self.events_len) | {r[0] for r in scheds} | {r[0] for r in metrics}
        self.queues = sorted(q for q in names if self.only is None or q in self.only)
        self.counts = counts
        mine = set(self.queues)
        self.schedulers_per_queue: dict[str, int] = {}
        for (queue, sid, name, next_ms, pattern, every, tz, start, end, limit, ic, data) in scheds:
            if queue not in mine:
                continue
            self.schedulers_per_queue[queue] = self.schedulers_per_queue.get(queue, 0) + 1
            data = self._redacted(data, "json")
            self.rows["schedulers"].append({
                "prefix": self.schema, "queue": queue, "kind": "job-scheduler", "key": sid, "name": name,
                "pattern": pattern, "every_ms": every, "tz": tz, "start_at": _ms(start), "end_at": _ms(end),
                "limit": limit, "next_run": _ms(next_ms), "iterations": ic, "data": data,
                "data_bytes": len(data.encode("utf-8", "replace")) if isinstance(data, str) else None,
                "next_job_id": f"repeat:{sid}:{next_ms}" if next_ms is not None else None})
        for queue, did, jid, expire in dedup:
            if queue in mine:
                self.rows["dedup"].append({"prefix": self.schema, "queue": queue, "dedup_id": did, "job_id": jid,
                                           "ttl_ms": None if expire is None else max(0, int(expire) - self.now_ms)})
        self.metric_totals: dict[tuple[str, str], int] = {}
        for queue, kind, count, prev_ts, data in metrics:
            if queue not in mine:
                continue
            self.metric_totals[(queue, kind)] = int(count)
            if prev_ts is None:
                continue
            minute = int(prev_ts) // 60000 * 60000
            for i, n in enumerate(data or []):   # newest first, one per minute (as in Redis)
                self.rows["metrics"].append({"prefix": self.schema, "queue": queue, "kind": kind,
                                             "time": pd.Timestamp(minute - i * 60000, unit="ms", tz="UTC"),
                                             "count": int(n)})
        for queue in self.queues:
            for family, (keys, nbytes) in (("job", (sum(counts.get(queue, {}).values()), self.job_bytes.get(queue, 0))),
                                           ("events", (self.events_len.get(queue, 0), events_bytes.get(queue, 0))),
                                           ("logs", log_bytes.get(queue, (0, 0)))):
                if keys:
                    self.rows["memory"].append({"prefix": self.schema, "queue": queue, "family": family,
                                                "keys": int(keys), "bytes": int(nbytes), "measured_keys": int(keys),
                                                "estimated": False})
        self.table_stats = [
            {"table": r[0], "live_rows": r[1], "dead_rows": r[2],
             "last_autovacuum": r[3].isoformat() if r[3] else None, "last_vacuum": r[4].isoformat() if r[4] else None,
             "total_bytes": r[5], "heap_bytes": r[6], "index_bytes": r[7], "toast_bytes": r[8]}
            for r in self.q(
                "SELECT s.relname, n_live_tup, n_dead_tup, last_autovacuum, last_vacuum, "
                "pg_total_relation_size(relid), pg_relation_size(relid), pg_indexes_size(relid), "
                "coalesce(pg_total_relation_size(c.reltoastrelid), 0) FROM pg_stat_user_tables s "
                "JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname = %s ORDER BY 1", (self.schema,))]

    def _redacted(self, text, kind: str):
        if text is None or not (self.redact.secrets or self.redact.fields):
            return text
        out, _ = self.redact.column(pd.Series([text], dtype=object), kind)
        return out.iloc[0]

    def read_jobs(self, queue: str) -> None:
        """The queue's jobs, a keyset page at a time (primary key order), each row as the hash
        BullMQ keeps in Redis, then decoded and redacted by the same code as a Redis capture."""
        total = sum(self.counts.get(queue, {}).values())
        logs = self._log_lines(queue)
        last, read, size = "", 0, BATCH
        while True:
            rows = self.q(JOB_SQL, (queue, last, size))
            if not rows:
                break
            last = rows[-1][0]
            ids, hashes, locks = [], [], []
            for r in rows:
                (jid, name, state, data, opts, prio, delay, made, started, progress, rv, reason, st, defa, pb,
                 added, process_at, processed, finished, token, until, stalled, deid, sched, pq, pid, pkey, nbytes) = r
                st_name = {"waiting": "prioritized" if prio and prio > 0 else "wait"}.get(state, state)
                score = None
                if st_name == "delayed" and process_at is not None:
                    score = float(int(process_at) * 4096)
                elif st_name == "prioritized":
                    score = float(int(prio) * 4294967296)
                ids.append((jid, st_name, score, nbytes))
                h = {"name": name, "data": data, "opts": opts, "timestamp": added, "delay": delay,
                     "priority": prio, "processedOn": processed, "finishedOn": finished, "atm": made,
                     "ats": started, "stc": stalled, "failedReason": reason, "stacktrace": st, "returnvalue": rv,
                     "progress": progress, "pb": pb, "defa": defa, "deid": deid, "rjk": sched, "parentKey": pkey,
                     "parent": as_json({"id": pid, "queueKey": pq}) if pid is not None else None}
                hashes.append({k: str(v) for k, v in h.items() if v is not None})
                locks.append((token, None if until is None else int(until) - self.now_ms))
            frame = pd.DataFrame({"prefix": self.schema, "queue": queue, "job_id": [i[0] for i in ids],
                                  "state": [i[1] for i in ids], "score": [i[2] for i in ids], "flavor": "bullmq"})
            jobs, payloads = decode_jobs(frame, hashes, redact=self.redact)
            token = pd.Series([t for t, _ in locks], dtype="str")
            ttl = pd.Series([t for _, t in locks], dtype="Int64")
            live = token.notna() & jobs["state"].eq("active") & ttl.gt(0).fillna(False)
            jobs["lock_token"] = token.where(live).astype("str")
            jobs["lock_present"] = live.astype("boolean")
            jobs["lock_ttl_ms"] = ttl.where(live).astype("Int64")
            jobs["memory_bytes"] = pd.Series([i[3] for i in ids], dtype="Int64")
            if logs is not None:
                jobs["log_count"] = jobs["job_id"].map(logs[0]).fillna(0).astype("Int32")
                payloads["logs"] = payloads["job_id"].map(logs[1]).astype("str")
            jobs["in_stalled_set"] = pd.Series(False, index=jobs.index, dtype="boolean")
            self._jobs.write(jobs.astype(JOB_COLUMNS | {"in_stalled_set": "boolean"}))
            self._payloads.write(payloads.astype(PAYLOAD_COLUMNS))
            read += len(rows)
            self.progress.update(f"{queue}: jobs {read:,} of {total:,}")
            if len(rows) < size:
                break
            per_row = max(1, sum(i[3] or 0 for i in ids) // len(ids))
            size = int(min(MAX_BATCH, max(100, PAGE_BYTES // per_row)))

    def _log_lines(self, queue: str):
        """job id -> log count, and job id -> its newest LOG_LINES lines (JSON, redacted)."""
        if "job_log" not in self.tables:
            return None
        rows = self.q("SELECT job_id, count(*), (array_agg(row ORDER BY idx DESC))[1:%s] FROM {schema}.job_log "
                      "WHERE queue = %s GROUP BY job_id", (LOG_LINES, queue))
        if not rows:
            return None
        ids = [r[0] for r in rows]
        counts = pd.Series([int(r[1]) for r in rows], index=ids, dtype="Int64")
        if self.redact.no_data:
            return counts, pd.Series(dtype="str")
        lines = pd.Series([as_json([self.redact.text(x)[0] for x in reversed(r[2] or [])]) for r in rows],
                          index=ids, dtype="str")
        return counts, lines

    def read_events(self, queue: str) -> None:
        """The event table of the queue (the events stream), a page at a time."""
        total = self.events_len.get(queue, 0)
        last, read = -1, 0
        while total:
            rows = self.q("SELECT id, event, data::text, created_at_ms FROM {schema}.event WHERE queue = %s AND id > %s "
                          "ORDER BY id LIMIT %s", (queue, last, EVENT_BATCH))
            if not rows:
                break
            last = rows[-1][0]
            fields, jobs = [], []
            for _, _, data, _ in rows:
                try:
                    f = json.loads(data) if data else {}
                except ValueError:
                    f = {}
                f = {k: v if isinstance(v, str) else as_json(v) for k, v in (f or {}).items()} \
                    if isinstance(f, dict) else {}
                jobs.append(f.pop("jobId", None))
                f.pop("event", None)
                fields.append(f)
            texts = event_texts(fields, self.redact)
            df = pd.DataFrame({"prefix": self.schema, "queue": queue,
                               "stream_id": [f"{int(r_[3])}-{int(r_[0])}" for r_ in rows],
                               "time": pd.to_datetime([int(r_[3]) for r_ in rows], unit="ms", utc=True),
                               "event": [r_[1] for r_ in rows], "job_id": jobs, "fields": texts})
            self._events.write(df.astype(empty_events().dtypes.to_dict()))
            read += len(rows)
            self.progress.update(f"{queue}: events {read:,} of {total:,}")
            if len(rows) < EVENT_BATCH:
                break

    def read_sessions(self) -> None:
        """pg_stat_activity: every session on the database (the clients table) and the ones
        BullMQ named (the workers table: `<queue>`, `<queue>:w:<name>`, `<queue>:qe`)."""
        rows = self.q(
            "SELECT pid, application_name, client_addr::text, client_port, "
            "(extract(epoch from now() - backend_start))::bigint, "
            "(extract(epoch from now() - state_change))::bigint, state, wait_event_type, wait_event, "
            "left(query, 200), usename, backend_type, (extract(epoch from now() - xact_start))::bigint "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        queues = set(self.queues) | set(self.counts)
        self.sessions = []
        for (pid, app, addr, port, age, idle, state, wtype, wevent, query, user, btype, xact) in rows:
            if btype not in (None, "client backend"):
                continue
            queue, role, wname = _bullmq_session(app or "", queues)
            listening = (query or "").lstrip().upper().startswith("LISTEN")
            client = {"client_id": pid, "addr": f"{addr}:{port}" if addr else "local", "host": addr,
                      "name": app or None, "age_s": age, "idle_s": idle if state == "idle" else 0,
                      "flags": state, "blocked": bool(state == "idle" and listening), "last_command": query,
                      "db": None, "user": user, "lib_name": None, "lib_ver": None, "node": self.server.get("database"),
                      "prefix": self.schema if queue else None, "queue": queue, "role": role}
            self.rows["clients"].append(client)
            self.sessions.append({"pid": pid, "application_name": app, "state": state, "xact_age_s": xact,
                                  "idle_s": idle, "wait_event": wevent, "user": user, "query": query})
            if queue:
                self.rows["workers"].append({
                    "prefix": self.schema, "queue": queue, "role": role, "worker_name": wname, "runtime": "node",
                    "client_name": app, "client_id": pid, "addr": client["addr"], "age_s": age,
                    "idle_s": client["idle_s"], "last_command": query, "db": None, "node": self.server.get("database"),
                    "flags": state, "blocked": client["blocked"], "blocking_command": "LISTEN" if listening else None})

    # -- the snapshot ----------------------------------------------------------------------
    def assemble(self) -> Snapshot:
        for sp in (self._jobs, self._payloads, self._events):
            sp.close()
        finished = utcnow()
        if not self.complete:
            self.warnings.insert(0, f"capture cut short: {self.reason}")
        queues = self._queues_table()
        server_row = {"captured_at": self.started, "node": self.server.get("database"), "role":
                      "replica" if self.server.get("in_recovery") else "primary",
                      "server_type": "postgresql", "server_version": self.server.get("version"),
                      "redis_version": None, "used_memory": self.server.get("database_bytes"),
                      "connected_clients": len(self.rows["clients"]), "info_available": bool(self.server),
                      "config_available": False, "measured_queue_bytes": int(sum(m["bytes"] for m in self.rows["memory"]))
                      or None}
        manifest = {
            "schema_version": SCHEMA_VERSION, "kind": "snapshot", "tool": "queue-forensics", "tool_version": __version__,
            "captured_at": self.started.isoformat(), "finished_at": finished.isoformat(),
            "duration_s": round((finished - self.started).total_seconds(), 3),
            "source": self.session.label if self.session else None,
            "backend": "postgres",
            "redis_version": None,
            "server": {"type": "postgresql", "version": self.server.get("version")},
            "options": {"prefixes": [self.schema], "queues": self.only, **self.redact.describe()},
            "complete": self.complete, "incomplete_reason": self.reason, "warnings": self.warnings,
            "counts": {"foreign_keys": 0, "vanished_jobs": 0, "state_conflicts": 0, "markers": 0, "undecodable_keys": 0},
            "memory": {"method": "pg_column_size of each row, summed per queue and table (job, event, job_log); "
                                 "tables' heap, TOAST and index bytes in postgres.tables", "estimated_families": 0},
            "consistency": "one READ ONLY, REPEATABLE READ transaction: every table as of one moment",
            "unavailable": [{
                "command": "maxmemory / maxmemory-policy", "node": self.server.get("database"),
                "error": "exist on Redis only",
                "consequence": "eviction-policy and memory-pressure (a PostgreSQL database grows on disk; "
                               "pg-table-bloat judges its queue tables)"}] + ([] if self.server.get("read_all_stats") else [{
                "command": "pg_stat_activity", "node": self.server.get("database"),
                "error": f"shows other roles' sessions by name only: role {self.server.get('user')} is not a member "
                         f"of pg_read_all_stats",
                "consequence": "other roles' sessions' state, idle time, address and query (workers are found by "
                               "name; pg-long-transaction sees this role's transactions only)"}]),
            "postgres": {"schema": self.schema, "schema_version": self.schema_version,
                         "database": self.server.get("database"), "in_recovery": self.server.get("in_recovery"),
                         "version": self.server.get("version_text"), "user": self.server.get("user"),
                         "tables": self.table_stats, "sessions": getattr(self, "sessions", []),
                         "sessions_read": hasattr(self, "sessions")},
            "commands": dict(sorted(self.session.counts.items())) if self.session else {},
        }
        tables = {"queues": queues, "workers": _frame(self.rows["workers"], empty_workers()),
                  "clients": _frame(self.rows["clients"], empty_clients()),
                  "dedup": _frame(self.rows["dedup"], empty_dedup()),
                  "schedulers": _frame(self.rows["schedulers"], empty_schedulers()),
                  "redis": pd.DataFrame([server_row]), "metrics": _frame(self.rows["metrics"], empty_metrics()),
                  "memory": _frame(self.rows["memory"], empty_memory())}
        return spooled_snapshot(tables, manifest, self.spool,
                                {"jobs": self._jobs, "payloads": self._payloads, "events": self._events})

    def _queues_table(self) -> pd.DataFrame:
        rows = []
        workers: dict[str, int] = {}
        for w in self.rows["workers"]:
            if w["role"] == "worker":
                workers[w["queue"]] = workers.get(w["queue"], 0) + 1
        memory: dict[str, int] = {}
        for m in self.rows["memory"]:
            memory[m["queue"]] = memory.get(m["queue"], 0) + m["bytes"]
        for q in self.queues:
            c = self.counts.get(q, {})
            meta = self.meta.get(q, {})
            limit = self.limits.get(q)
            version = meta.get("version")
            rows.append({
                "prefix": self.schema, "queue": q, "flavor": "bullmq",
                "library_version": version.split(":", 1)[1] if version and ":" in version else version,
                "flavor_evidence": "postgres schema", "paused": meta.get("paused") in ("1", "true"),
                **{f"n_{s.replace('-', '_')}": int(c.get(s, 0)) for s in STATES + ["orphan", "missing-hash"]},
                "workers": workers.get(q, 0), "meta": as_json(meta) if meta else None,
                "max_len_events": _int(meta.get("opts.maxLenEvents")), "global_concurrency": _int(meta.get("concurrency")),
                "rate_limit_max": _int(meta.get("max")), "rate_limit_duration_ms": _int(meta.get("duration")),
                "stalled_set": 0, "priority_zset": int(c.get("prioritized", 0)),
                "events_length": int(self.events_len.get(q, 0)), "id_counter": None,
                "limiter_ttl_ms": max(0, int(limit[1]) - self.now_ms) if limit and int(limit[1]) > self.now_ms else None,
                "limiter_value": int(limit[0]) if limit and int(limit[1]) > self.now_ms else None,
                "stalled_check_ttl_ms": None, "repeat_count": int(self.schedulers_per_queue.get(q, 0)), "markers": 0,
                "metrics_completed_total": self.metric_totals.get((q, "completed")),
                "metrics_failed_total": self.metric_totals.get((q, "failed")),
                "memory_bytes": memory.get(q) or None,
                "node": self.server.get("database"), "slot": None})
        df = pd.DataFrame(rows).reindex(columns=list(QUEUE_COLUMNS))
        ints = [c for c, t in QUEUE_COLUMNS.items() if t == "int64"]
        df[ints] = df[ints].fillna(0)
        return df.astype(QUEUE_COLUMNS)


def _bullmq_session(app: str, queues: set[str]) -> tuple[str | None, str | None, str | None]:
    """(queue, role, worker name) of a session BullMQ named, else (None, None, None)."""
    if not app:
        return None, None, None
    if app.endswith(":qe") and app[:-3] in queues:
        return app[:-3], "queue-events", None
    if ":w:" in app:
        q, _, name = app.partition(":w:")
        if q in queues:
            return q, "worker", name
    if app in queues:
        return app, "worker", None
    return None, None, None


def _frame(rows: list[dict], empty: pd.DataFrame) -> pd.DataFrame:
    if not rows:
        return empty
    return pd.DataFrame(rows).reindex(columns=list(empty.columns)).astype(empty.dtypes.to_dict())


def _ms(v):
    return None if v is None or int(v) <= 0 else pd.Timestamp(int(v), unit="ms", tz="UTC")


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
