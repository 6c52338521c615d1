"""The one way this tool talks to PostgreSQL: a connection whose every statement passes an
allowlist (SELECT, SHOW, SET, BEGIN, COMMIT, ROLLBACK), with timeouts so a capture never
waits on, or holds up, the workers."""
from __future__ import annotations

import re
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

from ...errors import ConnectError, UnsafeCommandError, UsageError

ALLOWED = ("SELECT", "SHOW", "SET", "BEGIN", "COMMIT", "ROLLBACK")
# never inside a statement this tool sends: row locks, writes hidden in a CTE, functions with effects
FORBIDDEN = re.compile(r"\b(FOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)|INSERT|UPDATE|DELETE|TRUNCATE|"
                       r"CREATE|DROP|ALTER|GRANT|LOCK|COPY|CALL|DO|NOTIFY|LISTEN|VACUUM|nextval|setval|"
                       r"pg_advisory|pg_terminate|pg_cancel|set_config|lo_)\b", re.IGNORECASE)
APP_NAME = "queue-forensics"


def redact_dsn(url: str) -> str:
    """The URL without its password (user, host, port, database and parameters kept)."""
    try:
        p = urlsplit(url)
    except ValueError:
        return "postgresql://<unparsable>"
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{p.username}@" if p.username else "") + host + (f":{p.port}" if p.port else "")
    query = re.sub(r"(?i)(password|sslpassword)=[^&]*", r"\1=***", p.query)
    return urlunsplit((p.scheme, netloc, p.path, query, ""))


def check(sql: str) -> str:
    """The statement's verb when the gate lets it through; raises otherwise (a bug, never
    user input: every statement is this module's own text)."""
    words = sql.lstrip().split(None, 1)
    verb = words[0].upper() if words else ""
    if verb not in ALLOWED:
        raise UnsafeCommandError(f"refused to send {verb or 'an empty statement'} to PostgreSQL: "
                                 f"only {', '.join(ALLOWED)} pass the read-only gate")
    if verb == "SELECT" and FORBIDDEN.search(re.sub(r"'[^']*'", "''", sql)):
        raise UnsafeCommandError(f"refused a SELECT that could write or lock: {sql[:80]!r}")
    if verb == "SET" and not re.match(r"\s*SET\s+(SESSION\s+)?(statement_timeout|lock_timeout|"
                                      r"idle_in_transaction_session_timeout|application_name|search_path|"
                                      r"default_transaction_read_only|TRANSACTION)\b", sql, re.IGNORECASE):
        raise UnsafeCommandError(f"refused a SET the capture does not need: {sql[:80]!r}")
    return verb


class Session:
    """One connection, autocommit off by hand: BEGIN ... READ ONLY, REPEATABLE READ, then
    SELECTs, then COMMIT. Counts every statement by verb (the manifest's ``commands``)."""

    def __init__(self, url: str, *, statement_timeout_s: float = 60.0, lock_timeout_s: float = 1.0,
                 connect_timeout_s: float = 10.0, sslmode: str | None = None, sslrootcert: str | None = None,
                 sslcert: str | None = None, sslkey: str | None = None):
        try:
            import psycopg
        except ImportError as e:   # pragma: no cover - a dependency of the package
            raise UsageError("capturing PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from e
        self.url = url
        self.label = redact_dsn(url)
        self.counts: Counter = Counter()
        kw = {k: v for k, v in (("sslmode", sslmode), ("sslrootcert", sslrootcert), ("sslcert", sslcert),
                                ("sslkey", sslkey)) if v}
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout_s)),
                                        application_name=APP_NAME, **kw)
        except psycopg.OperationalError as e:
            raise ConnectError(f"cannot connect to PostgreSQL at {self.label}: {_first_line(e)}") from e
        except psycopg.ProgrammingError as e:   # a malformed URL or option
            raise UsageError(f"bad PostgreSQL URL {self.label}: {_first_line(e)}") from e
        self.server_ssl = bool(getattr(self.conn.info, "ssl_in_use", False)) if hasattr(self.conn, "info") else False
        # timeouts first (outside the transaction, so they hold for it), then the snapshot
        self.run(f"SET statement_timeout = {int(statement_timeout_s * 1000)}")
        self.run(f"SET lock_timeout = {int(lock_timeout_s * 1000)}")
        self.run("SET idle_in_transaction_session_timeout = 600000")   # a stuck capture lets go of its snapshot
        self.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def run(self, sql: str, params=None) -> list[tuple]:
        """Runs one statement through the gate; the rows (empty for SET / BEGIN / COMMIT)."""
        import psycopg
        verb = check(sql)
        self.counts[verb] += 1
        try:
            cur = self.conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.errors.InsufficientPrivilege as e:
            raise ConnectError(f"PostgreSQL role may not read this: {_first_line(e)} (see the README for the "
                               f"minimal role: GRANT USAGE ON SCHEMA, GRANT SELECT ON ALL TABLES IN SCHEMA)") from e
        except psycopg.errors.QueryCanceled as e:
            raise ConnectError(f"PostgreSQL cancelled a read after the statement timeout: {_first_line(e)}") from e
        except psycopg.OperationalError as e:
            raise ConnectionError(f"lost the connection to PostgreSQL: {_first_line(e)}") from e

    def close(self) -> None:
        try:
            if not self.conn.closed:
                try:
                    self.run("COMMIT")
                except Exception:  # noqa: BLE001  (a lost connection: nothing to commit)
                    pass
                self.conn.close()
        except Exception:  # noqa: BLE001
            pass


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
