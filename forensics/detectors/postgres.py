"""PostgreSQL (BullMQ 6's PostgreSQL backend): what only that backend shows. Every job state
change is an UPDATE and every removal a DELETE, so the queue tables live on vacuum; a
transaction left open anywhere in the database holds vacuum back for all of them."""
from __future__ import annotations

from . import Context, detector


def _pg(ctx: Context) -> dict | None:
    return ctx.manifest.get("postgres") if ctx.manifest.get("backend") == "postgres" else None


@detector("pg-long-transaction", "config",
          "a session idle in (or running) a transaction for minutes: vacuum cannot clean the queue tables")
def pg_long_transaction(ctx: Context):
    """Sessions of the database (pg_stat_activity, the capture's own left out) whose
    transaction is older than ``pg_long_transaction_s``: ``idle in transaction`` is high (a
    client that forgot to COMMIT), a long-running statement medium. Either pins the oldest
    row version vacuum must keep, so dead job rows pile up in every BullMQ table."""
    pg = _pg(ctx)
    if not pg:
        return
    t = ctx.t
    long = [s for s in pg.get("sessions") or []
            if s.get("xact_age_s") is not None and s["xact_age_s"] >= t.pg_long_transaction_s]
    if not long:
        return
    idle = [s for s in long if (s.get("state") or "").startswith("idle in transaction")]
    worst = max(long, key=lambda s: s["xact_age_s"])
    yield ctx.finding(
        "pg-long-transaction", "high" if idle else "medium",
        f"{len(long)} session(s) with a transaction open for up to {int(worst['xact_age_s']):,} s"
        + (f" ({len(idle)} idle in transaction)" if idle else ""),
        count=len(long), evidence={"sessions": [
            {k: s.get(k) for k in ("pid", "user", "application_name", "state", "xact_age_s", "query")}
            for s in sorted(long, key=lambda s: -s["xact_age_s"])[:20]], "threshold_s": t.pg_long_transaction_s},
        remediation=("Find the client and make it COMMIT or ROLLBACK; end the session if it is abandoned "
                     "(`SELECT pg_terminate_backend(<pid>)`, as an administrator). Set "
                     "`idle_in_transaction_session_timeout` (e.g. '5min') for the application's role so a forgotten "
                     "transaction cannot hold vacuum back again."))


@detector("pg-table-bloat", "memory", "dead rows piling up in a BullMQ table that vacuum has not cleaned")
def pg_table_bloat(ctx: Context):
    """A table of the BullMQ schema with at least ``pg_dead_rows_min`` dead rows and
    ``pg_dead_share`` of its live ones (pg_stat_user_tables): autovacuum is behind, held back
    by a long transaction, or off for it. Each finished job left by unbounded retention
    is cleaned by a DELETE that leaves one more dead row too."""
    pg = _pg(ctx)
    if not pg:
        return
    t = ctx.t
    bloated = [x for x in pg.get("tables") or []
               if (x.get("dead_rows") or 0) >= t.pg_dead_rows_min
               and (x.get("dead_rows") or 0) >= t.pg_dead_share * max(x.get("live_rows") or 0, 1)]
    if not bloated:
        return
    held = any((x.get("xact_age_s") or 0) >= t.pg_long_transaction_s for x in pg.get("sessions") or [])
    worst = max(bloated, key=lambda x: x["dead_rows"])
    yield ctx.finding(
        "pg-table-bloat", "medium",
        f"{worst['dead_rows']:,} dead rows in {pg.get('schema')}.{worst['table']} ({worst['live_rows']:,} live); "
        f"last autovacuum {worst.get('last_autovacuum') or 'never'}",
        count=sum(x["dead_rows"] for x in bloated), evidence={"tables": bloated, "schema": pg.get("schema"),
                                                              "long_transaction": held},
        remediation=(f"Let vacuum catch up: end long transactions (pg-long-transaction), then `VACUUM (ANALYZE) "
                     f"{pg.get('schema')}.{worst['table']}`; make autovacuum visit the hot tables sooner "
                     f"(`ALTER TABLE {pg.get('schema')}.job SET (autovacuum_vacuum_scale_factor = 0.01)`), and "
                     "bound retention (`removeOnComplete: {count: 1000}`, `removeOnFail: {count: 5000}`) so fewer "
                     "rows churn."))
