"""Command line: a thin layer over the public functions, with meaningful exit codes.

Exit codes (DESIGN.md): 0 ok, 1 --fail-on met, 2 usage error, 3 cannot connect or
authenticate, 4 capture cut short (what was read is saved, complete: false),
70 internal error (a bug).
Errors are one line on stderr; --debug shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
import warnings

from ._version import __version__
from .detectors import SEVERITIES
from .errors import EXIT_FAIL_ON, EXIT_INCOMPLETE, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, ForensicsError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(EXIT_USAGE, f"forensics: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="forensics", description="Incident forensics for Bull and BullMQ queues.")
    p.add_argument("--version", action="version", version=f"queue-forensics {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("capture", help="snapshot every queue under a prefix (read-only)",
                       description="Read-only snapshot of every Bull/BullMQ queue under a prefix, "
                                   "saved as Parquet + manifest.json. The path is printed last.")
    c.add_argument("--redis", metavar="URL", default=None,
                   help="redis://, rediss:// (TLS), unix:// or redis+sentinel://HOST:26379[,HOST:PORT]/SERVICE[/DB] "
                        "(default: $REDIS_URL, then redis://localhost:6379/0)")
    c.add_argument("--postgres", metavar="URL", default=None,
                   help="capture BullMQ 6 queues kept in PostgreSQL instead: postgresql://USER@HOST:5432/DB"
                        "[?sslmode=verify-full&sslrootcert=FILE] (password from the URL, $PGPASSWORD or ~/.pgpass); "
                        "read in one READ ONLY, REPEATABLE READ transaction")
    c.add_argument("--schema", metavar="NAME", default=None,
                   help="with --postgres: the schema BullMQ uses (default: bullmq)")
    cl = c.add_mutually_exclusive_group()
    cl.add_argument("--cluster", dest="cluster", action="store_true", default=None,
                    help="the URL is a Redis Cluster node: read every master (default: detected)")
    cl.add_argument("--no-cluster", dest="cluster", action="store_false",
                    help="read only the node the URL names, even if it is a cluster node")
    c.add_argument("--replica", action="store_true",
                   help="read a replica instead of the primary (of the sentinels' master; on a cluster, of each "
                        "master): the lowest-impact capture")
    c.add_argument("--tls-ca", metavar="FILE", help="CA certificate(s) to verify the server with (implies TLS)")
    c.add_argument("--tls-cert", metavar="FILE", help="client certificate (with --tls-key), when the server asks for one")
    c.add_argument("--tls-key", metavar="FILE", help="the client certificate's private key")
    c.add_argument("--tls-insecure", action="store_true",
                   help="do not verify the server's certificate or host name (recorded in the manifest)")
    c.add_argument("--rdb", metavar="DUMP", help="capture an RDB backup instead of a live Redis: a private "
                                                 "redis-server loads a copy of it (loopback only, nothing written back)")
    c.add_argument("--db", type=int, default=0, metavar="N", help="with --rdb: the database of the dump (default 0)")
    c.add_argument("--redis-server", metavar="PATH",
                   help="with --rdb: the redis-server binary to load it with (default: the one on PATH)")
    c.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="give up on a Redis that does not answer one request for this long: what was read is "
                        "saved, marked incomplete (default 30)")
    c.add_argument("--max-ops-per-sec", type=float, metavar="N",
                   help="send at most N commands a second, for a fragile production Redis; progress shows the "
                        "expected duration (default: no limit)")
    c.add_argument("--prefix", action="append", metavar="P", help="key prefix (default: bull); repeatable")
    c.add_argument("--queue", action="append", metavar="Q", help="only this queue; repeatable")
    c.add_argument("--out", metavar="DIR", help="snapshot folder (default: snapshots/<UTC timestamp>)")
    c.add_argument("--every", type=float, metavar="SECONDS",
                   help="capture a series: one snapshot every SECONDS into --out (a series folder)")
    c.add_argument("--count", type=int, metavar="N",
                   help="with --every: stop after N snapshots (default: until Ctrl-C)")
    c.add_argument("--logs", action="append", metavar="FILE",
                   help="attach worker logs to the snapshot (pino/winston JSON lines or text; .gz; - for stdin)")
    c.add_argument("--code", action="append", metavar="SRC",
                   help="keep a scan of the application's source with the snapshot (file or folder; repeatable): "
                        "diagnose, report and the notebooks then join it without --code")
    c.add_argument("--no-redact", action="store_true",
                   help="keep secrets: fields that look secret (password, token, ...) and tokens in text (URL "
                        "passwords, ?token=, Bearer, AWS keys, JWTs) are redacted by default")
    c.add_argument("--redact-field", action="append", metavar="REGEX", default=[],
                   help="also redact data fields whose name matches REGEX (case-insensitive), e.g. 'ssn|email'; "
                        "repeatable")
    c.add_argument("--no-data", action="store_true",
                   help="keep sizes, shapes and field names but no values (job data, return values, messages "
                        "reduced to their fingerprints): a snapshot to share outside the team")
    c.add_argument("--memory-samples", type=int, default=1000, metavar="N",
                   help="MEMORY USAGE at most N keys per queue key family, extrapolate the rest (default 1000)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")
    g.add_argument("--progress", action="store_true", help="progress on stderr even when not a terminal")
    c.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    d = sub.add_parser("diagnose", help="findings and checklist verdicts for a snapshot",
                       description="Run every detector and the production checklist over a saved "
                                   "snapshot. Exit 1 when --fail-on is met.")
    d.add_argument("path", metavar="PATH", help="snapshot folder or series folder")
    d.add_argument("--logs", action="append", metavar="FILE",
                   help="worker logs to read with it (JSON lines or text; .gz; - for stdin); repeatable")
    d.add_argument("--format", choices=["table", "json", "markdown"], default="table")
    d.add_argument("--fail-on", choices=SEVERITIES, metavar="SEVERITY",
                   help=f"exit 1 if a finding this severe or worse exists ({', '.join(SEVERITIES)})")
    d.add_argument("--threshold", action="append", metavar="KEY=VALUE",
                   help="override a threshold, e.g. max_attempts=20 (repeatable; see forensics.Thresholds)")
    d.add_argument("--code", action="append", metavar="SRC",
                   help="the application's source (file or folder; repeatable): findings gain the code sites of "
                        "their queue, the checklist the code's evidence (see `forensics scan`)")
    d.add_argument("--no-code", action="store_true",
                   help="judge from Redis alone: leave out the code scan a snapshot keeps (capture --code)")
    d.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    r = sub.add_parser("report", help="render the postmortem of a snapshot as one HTML file",
                       description="Execute notebooks/postmortem.ipynb on a snapshot (papermill) and "
                                   "convert it to a self-contained HTML file; its path is printed last.")
    r.add_argument("path", metavar="PATH", help="snapshot folder or series folder")
    r.add_argument("--out", metavar="FILE", help="where to write (default: PATH/report.html, .md or .pdf)")
    r.add_argument("--format", choices=["html", "md", "pdf"], default="html",
                   help="html: the whole postmortem with plots (offline, self-contained); md: summary, impact, "
                        "timeline, root causes, action items and checklist as Markdown, to paste into an "
                        "incident doc or a GitHub issue (no plots); pdf: the HTML printed by headless Chromium")
    r.add_argument("--logs", action="append", metavar="FILE", help="worker logs to include (repeatable)")
    r.add_argument("--threshold", action="append", metavar="KEY=VALUE", help="override a threshold (repeatable)")
    r.add_argument("--code", action="append", metavar="SRC",
                   help="the application's source (file or folder; repeatable): code findings and sites in the report")
    r.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    x = sub.add_parser("diff", help="what changed between two snapshots",
                       description="Compare two snapshots of the same Redis: jobs stuck in both (same lock), "
                                   "queues that grew or drained, new failures by error fingerprint, bytes added.")
    x.add_argument("old", metavar="OLD", help="the earlier snapshot folder")
    x.add_argument("new", metavar="NEW", help="the later snapshot folder")
    x.add_argument("--format", choices=["table", "json"], default="table")
    x.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    e = sub.add_parser("explain", help="one job's story: why it is in its state, its attempts, events, logs",
                       description="Tell one job's story from a snapshot: its state and why it is there (no "
                                   "worker, lock gone, waiting for children, delayed until, starved, rate-limited), "
                                   "each attempt with its error, its events, the worker log lines naming it, and the "
                                   "findings that cover it.")
    e.add_argument("path", metavar="PATH", help="snapshot folder or series folder (its latest capture)")
    e.add_argument("job_id", metavar="JOB_ID", help="the job id, as Bull/BullMQ show it")
    e.add_argument("--queue", metavar="Q", help="the queue (name or prefix:name) when the id is in several")
    e.add_argument("--logs", action="append", metavar="FILE", help="worker logs to read with it (repeatable; - for stdin)")
    e.add_argument("--format", choices=["text", "json"], default="text")
    e.add_argument("--threshold", action="append", metavar="KEY=VALUE", help="override a threshold (repeatable)")
    e.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    v = sub.add_parser("verify", help="check a snapshot or series file by file against its manifest",
                       description="Check every table file of a snapshot (or of every snapshot in a series) "
                                   "against its manifest: Parquet footer, row count, size and sha256. Exit 2 "
                                   "naming the first damaged file.")
    v.add_argument("path", metavar="PATH", help="snapshot folder or series folder")
    v.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    qy = sub.add_parser("query", help="SQL (DuckDB) over a snapshot's or a series' tables",
                        description="Run one SQL query (DuckDB's dialect) over the tables of a snapshot or series, "
                                    "read straight from their Parquet files: jobs, payloads, events, queues, workers, "
                                    "redis, metrics, memory (and logs). In a series every table gains snapshot and "
                                    "captured_at, and a snapshots view lists the members.")
    qy.add_argument("path", metavar="PATH", help="snapshot folder or series folder")
    qy.add_argument("sql", metavar="SQL", help="e.g. \"SELECT state, count(*) FROM jobs GROUP BY 1\"")
    qy.add_argument("--format", choices=["table", "csv", "json"], default="table",
                    help="table (default), csv, or json (one object per row)")
    qy.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    sc = sub.add_parser("scan", help="read the application's JS/TS queue code: findings at the lines that cause them",
                        description="Parse JavaScript and TypeScript (tree-sitter; nothing is executed) for Bull and "
                                    "BullMQ queue code, and flag the production checklist's red flags with file:line. "
                                    "Exit 1 when --fail-on is met.")
    sc.add_argument("paths", nargs="+", metavar="SRC", help="source files or folders (node_modules, build output "
                                                            "and VCS folders are skipped)")
    sc.add_argument("--format", choices=["table", "json", "md", "markdown"], default="table")
    sc.add_argument("--fail-on", choices=SEVERITIES, metavar="SEVERITY",
                    help=f"exit 1 if a finding this severe or worse exists ({', '.join(SEVERITIES)})")
    sc.add_argument("--threshold", action="append", metavar="KEY=VALUE",
                    help="override a threshold, e.g. max_concurrency=100 (repeatable)")
    sc.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    s = sub.add_parser("summary", help="print a readable summary of a snapshot",
                       description="Describe a saved snapshot: source, queues, state counts, oddities.")
    s.add_argument("path", metavar="PATH", help="snapshot folder or series folder")
    s.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return p


def _capture(args) -> int:
    from pathlib import Path

    from .capture import capture
    from .errors import UsageError
    from .logs import describe, read_logs
    from .redact import Redaction
    from .snapshot import MANIFEST
    if args.count is not None and args.every is None:
        raise UsageError("--count needs --every SECONDS (a series)")
    policy = Redaction(secrets=not args.no_redact, fields=tuple(args.redact_field), no_data=args.no_data)
    logs = read_logs(args.logs, progress=None if not args.quiet else False, redact=policy) if args.logs else None
    if logs is not None:
        print(f"logs: {describe(logs)}", file=sys.stderr)
    scanned = None
    if args.code:
        missing = [p for p in args.code if not Path(p).exists()]
        if missing:
            raise UsageError(f"--code: no such file or folder: {', '.join(missing)}")
        if args.every is not None:
            raise UsageError("--code goes with one capture; give a series its code at diagnose (--code SRC)")
        from .code import scan
        scanned = scan(args.code)   # before the capture: a wrong path costs nothing
        print(f"code: {scanned._head()}", file=sys.stderr)
    if args.schema is not None and not args.postgres:
        raise UsageError("--schema goes with --postgres (a Redis capture takes --prefix)")
    if args.postgres and (args.redis or args.rdb or args.prefix or args.cluster or args.replica or args.tls_ca
                          or args.tls_cert or args.tls_key or args.tls_insecure or args.max_ops_per_sec):
        raise UsageError("--postgres reads PostgreSQL: it goes without --redis, --rdb, --prefix, --cluster, "
                         "--replica, --tls-* and --max-ops-per-sec (TLS: sslmode, sslrootcert, sslcert in the URL)")
    if args.every is not None:
        if args.rdb is not None:
            raise UsageError("--every captures a live Redis over time; a backup (--rdb) is captured once")
        return _capture_series(args, logs)
    out = Path(args.out) if args.out else None
    # Refuse a bad destination before a long capture, not after it.
    if out is not None and out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise UsageError(f"--out {out} exists and is not a snapshot folder; choose a new path")
    with warnings.catch_warnings():  # an incomplete capture is reported below, in the CLI's words
        warnings.simplefilter("ignore", UserWarning)
        shown = False if args.quiet else (True if args.progress else None)
        if args.postgres:
            from .capture.postgres import capture_postgres
            snap = capture_postgres(args.postgres, schema=args.schema or "bullmq", queues=args.queue,
                                    redact=not args.no_redact, redact_fields=args.redact_field, no_data=args.no_data,
                                    progress=shown, statement_timeout_s=args.timeout)
        else:
            snap = capture(args.redis, prefix=args.prefix or ["bull"], queues=args.queue,
                           redact=not args.no_redact, redact_fields=args.redact_field, no_data=args.no_data,
                           memory_samples=args.memory_samples, progress=shown, **_connect_args(args))
    from .capture.progress import finish_on_stop
    with finish_on_stop("finishing the save of what was read"):
        if logs is not None:
            snap.attach_logs(logs)
        if scanned is not None:
            snap.attach_code(scanned)
        path = snap.save(args.out)
    m = snap.manifest
    for w in m.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"captured {len(snap.queues)} queues, {snap.row_count('jobs'):,} jobs in {m['duration_s']} s"
          f"{'' if snap.complete else ' (INCOMPLETE: ' + str(m['incomplete_reason']) + ')'}", file=sys.stderr)
    print(path)
    return EXIT_OK if snap.complete else EXIT_INCOMPLETE


def _connect_args(args) -> dict:
    """How to reach Redis (the capture's connection keyword arguments)."""
    from .errors import UsageError
    if args.rdb is None and (args.db or args.redis_server):
        raise UsageError("--db and --redis-server go with --rdb (for a live Redis, put the database in the URL)")
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    out = dict(socket_timeout=args.timeout, max_ops_per_sec=args.max_ops_per_sec, cluster=args.cluster,
               replica=args.replica, tls_ca=args.tls_ca,
               tls_cert=args.tls_cert, tls_key=args.tls_key, tls_insecure=args.tls_insecure)
    if args.rdb is not None:
        out.update(rdb=args.rdb, db=args.db, redis_server=args.redis_server)
    return out


def _capture_series(args, logs) -> int:
    from .series import capture_series, progress_line
    quiet = args.quiet

    def tick(i, snap, error):
        if not quiet or error:
            print(progress_line(i, args.count, snap, error, args.every), file=sys.stderr, flush=True)
    if not quiet:
        print(f"series: one capture every {args.every:g} s"
              + (f", {args.count} in all" if args.count else ", until Ctrl-C"), file=sys.stderr, flush=True)
    if args.postgres:   # each tick one consistent READ ONLY transaction, as a single capture
        where = dict(url=args.postgres, prefix=args.schema or "bullmq", schema=args.schema or "bullmq",
                     socket_timeout=args.timeout)
    else:
        where = dict(url=args.redis, prefix=args.prefix or ["bull"], **_connect_args(args))
    series, reason = capture_series(
        queues=args.queue, every=args.every, count=args.count,
        out=args.out, redact=not args.no_redact, redact_fields=args.redact_field, no_data=args.no_data,
        memory_samples=args.memory_samples,
        progress=True if args.progress else False, logs=logs, on_tick=tick, **where)
    gaps = len(series.manifest.get("gaps", []))
    print(f"series: {len(series)} snapshots over {series.span.total_seconds():.0f} s"
          + (f", {gaps} gap(s)" if gaps else "") + f"; stopped: {reason}", file=sys.stderr)
    print(series.path)
    cut_short = (args.count is not None and len(series) < args.count) or not series.complete
    return EXIT_INCOMPLETE if cut_short else EXIT_OK


def _diagnose(args) -> int:
    from .diagnosis import diagnose
    from .thresholds import Thresholds
    thresholds = Thresholds.parse(args.threshold)
    from .logs import read_logs
    logs = read_logs(args.logs, progress=None) if args.logs else None
    if args.code:
        from pathlib import Path

        from .errors import UsageError
        missing = [p for p in args.code if not Path(p).exists()]
        if missing:
            raise UsageError(f"--code: no such file or folder: {', '.join(missing)}")
    if args.no_code and args.code:
        raise UsageError("--code and --no-code contradict each other")
    result = diagnose(args.path, logs=logs, thresholds=thresholds, code=False if args.no_code else args.code)
    out = {"table": result.to_table, "json": result.to_json, "markdown": result.to_markdown}[args.format]()
    print(out)
    if args.fail_on and len(result.at_least(args.fail_on)):
        return EXIT_FAIL_ON
    return EXIT_OK


def _scan(args) -> int:
    from pathlib import Path

    from .code import scan
    from .errors import UsageError
    from .thresholds import Thresholds
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    result = scan(args.paths, thresholds=Thresholds.parse(args.threshold))
    fmt = "md" if args.format == "markdown" else args.format
    print({"table": result.to_table, "json": result.to_json, "md": result.to_markdown}[fmt]())
    if args.fail_on and len(result.at_least(args.fail_on)):
        return EXIT_FAIL_ON
    return EXIT_OK


def _report(args) -> int:
    from .report import render
    from .thresholds import Thresholds
    changes = {k: v for k, v in Thresholds.parse(args.threshold).as_dict().items()
               if v != getattr(Thresholds(), k)}
    if args.format in ("md", "pdf"):
        from .report import render_markdown, render_pdf
        fn = render_markdown if args.format == "md" else render_pdf
        print(fn(args.path, args.out, thresholds=changes, logs=args.logs, code=args.code))
        return EXIT_OK
    print(render(args.path, args.out, thresholds=changes, logs=args.logs, code=args.code))
    return EXIT_OK


def _diff(args) -> int:
    from .diff import diff
    d = diff(args.old, args.new)
    print(d.to_table() if args.format == "table" else d.to_json())
    return EXIT_OK


def _explain(args) -> int:
    from .explain import explain
    from .logs import read_logs
    from .thresholds import Thresholds
    thresholds = Thresholds.parse(args.threshold)
    logs = read_logs(args.logs, progress=None) if args.logs else None
    story = explain(args.path, args.job_id, queue=args.queue, logs=logs, thresholds=thresholds)
    print(story.to_text() if args.format == "text" else story.to_json())
    return EXIT_OK


def _verify(args) -> int:
    from .series import verify
    for line in verify(args.path):
        print(line)
    return EXIT_OK


def _query(args) -> int:
    from .query import query
    df = query(args.path, args.sql)
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", date_format="iso", lines=True) if len(df) else "", end="")
    else:
        shown = df.head(QUERY_ROWS)
        print(shown.to_string(index=False, max_colwidth=80) if len(df.columns) else "(no columns)")
        if len(df) > QUERY_ROWS:
            print(f"({len(df):,} rows; the first {QUERY_ROWS} shown: --format csv gives them all)", file=sys.stderr)
    return EXIT_OK


QUERY_ROWS = 200


def _summary(args) -> int:
    from .series import Series, open_path
    from .summary import summary
    src = open_path(args.path)
    if isinstance(src, Series):
        print(f"series {src.path}: {len(src)} snapshots, {src.first.captured_at} to {src.latest.captured_at}"
              + "".join(f"\n! {w}" for w in src.warnings) + "\nlatest:")
        src = src.latest
    print(summary(src))
    return EXIT_OK


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # SIGTERM acts as Ctrl-C from the start (a capture then installs its own two-step
    # handler): never a silent kill half-way through a command.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return _main(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or bool(os.environ.get("FORENSICS_DEBUG"))
    try:
        return {"capture": _capture, "diagnose": _diagnose, "report": _report, "diff": _diff,
                "explain": _explain, "summary": _summary, "verify": _verify,
                "query": _query, "scan": _scan}[args.command](args)
    except ForensicsError as e:
        if debug:
            traceback.print_exc()
        print(f"forensics: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("forensics: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # a bug: still one line, the traceback on request
        if debug:
            traceback.print_exc()
        print(f"forensics: internal error: {type(e).__name__}: {e} "
              "(a bug; rerun with --debug and report the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
