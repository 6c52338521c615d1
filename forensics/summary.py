"""A readable account of a snapshot: what was captured, per queue, and what looks odd.

Plain text for terminals (`forensics summary`, `make demo`), HTML for notebooks. This is
a description, not a diagnosis: verdicts are the diagnose step's job.
"""
from __future__ import annotations

import pandas as pd

from .htmlsafe import escape, frame_html

STATE_COLS = [("n_wait", "wait"), ("n_active", "active"), ("n_paused", "paused"),
              ("n_prioritized", "prio"), ("n_delayed", "delayed"),
              ("n_waiting_children", "children"), ("n_failed", "failed"),
              ("n_completed", "done"), ("n_orphan", "orphan"), ("n_missing_hash", "no-hash")]


def human_bytes(n) -> str:
    if n is None or pd.isna(n):
        return "?"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _age(td: pd.Timedelta) -> str:
    s = int(td.total_seconds())
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def queue_label(df: pd.DataFrame) -> pd.Series:
    """The queue name, qualified with its prefix when a snapshot spans several prefixes."""
    if df["prefix"].nunique() > 1:
        return df["prefix"].astype("str") + ":" + df["queue"].astype("str")
    return df["queue"].astype("str")


def queue_overview(snap) -> pd.DataFrame:
    """One row per queue with state counts and the figures an on-call engineer scans first."""
    q = snap.queues.copy()
    if not len(q):
        return pd.DataFrame()
    q["queue"] = queue_label(q)
    cols = ["queue", "flavor", "library_version", "paused", "workers"] + [c for c, _ in STATE_COLS if c in q]
    out = q[cols].rename(columns=dict(STATE_COLS))
    out["memory"] = q["memory_bytes"].map(human_bytes) if "memory_bytes" in q else "?"
    return out.set_index("queue")


def observations(snap) -> list[str]:
    """Facts worth a look, stated plainly (no severity: see diagnose)."""
    notes = []
    jobs, now = snap.jobs.copy(), snap.captured_at
    multi = snap.queues["prefix"].nunique() > 1
    if multi:
        jobs["queue"] = queue_label(jobs)
    active = jobs[jobs["state"] == "active"]
    if len(active):
        no_lock = active[~active["lock_present"].fillna(False).astype(bool)]
        for qn, grp in no_lock.groupby("queue", observed=True):
            notes.append(f"{qn}: {len(grp)} active job(s) without a lock (worker gone?): "
                         f"ids {', '.join(grp['job_id'].head(5))}")
        locked = active[active["lock_present"].fillna(False).astype(bool)]
        for _, j in locked.iterrows():
            if pd.notna(j["processed_at"]):
                notes.append(f"{j['queue']}: job {j['job_id']} active for {_age(now - j['processed_at'])}, "
                             f"lock held (ttl {j['lock_ttl_ms']} ms, token {str(j['lock_token'])[:13]}…)")
    failed = jobs[jobs["state"] == "failed"]
    if len(failed):
        reasons = failed.groupby(["queue", "failed_reason"], observed=True).size() \
            .sort_values(ascending=False, kind="stable")
        for (qn, reason), n in reasons.head(5).items():
            notes.append(f"{qn}: {n} failed with \"{str(reason)[:100]}\"")
        if len(reasons) > 5:
            notes.append(f"... and {len(reasons) - 5} more distinct failure reasons "
                         f"({len(failed):,} failed jobs in all)")
    q = snap.queues.copy()
    q["queue"] = queue_label(q) if len(q) else q["queue"]
    for _, row in q.iterrows():
        if row.get("paused"):
            notes.append(f"{row['queue']}: queue is paused")
        waiting = sum(int(row.get(c, 0) or 0) for c in ("n_wait", "n_paused", "n_prioritized"))
        if waiting and not row.get("workers"):
            notes.append(f"{row['queue']}: {waiting} job(s) waiting and no worker connection seen")
    big = jobs[jobs["data_bytes"].fillna(0) > 100_000]
    if len(big):
        notes.append(f"{len(big)} job(s) carry more than 100 KB of data (largest {human_bytes(big['data_bytes'].max())})")
    if jobs["data_has_buffer"].fillna(False).any():
        notes.append(f"{int(jobs['data_has_buffer'].fillna(False).sum())} job(s) carry a Node Buffer serialized as JSON")
    r = snap.redis.iloc[0] if len(snap.redis) else {}
    pol = r.get("maxmemory_policy") if hasattr(r, "get") else None
    if pol and pol != "noeviction":
        notes.append(f"Redis maxmemory-policy is {pol} (BullMQ requires noeviction)")
    return notes


def topology_line(m: dict) -> str | None:
    """How the data was reached, in one line (None for one plain node)."""
    t = m.get("topology") or {}
    mode = t.get("mode")
    if m.get("rdb"):
        r = m["rdb"]
        return (f"RDB backup {r.get('path')} ({human_bytes(r.get('bytes'))}, written {r.get('written_at') or '?'} "
                f"by Redis {r.get('written_by') or '?'}; sha256 {str(r.get('sha256'))[:12]}…)")
    if mode == "cluster":
        nodes = t.get("nodes", [])
        down = [n["addr"] for n in nodes if n.get("error")]
        return (f"Redis Cluster, {len(nodes)} masters, {t.get('slots_covered', '?')} slots covered"
                + (f"; DOWN: {', '.join(down)}" if down else ""))
    rep = t.get("replication")
    if rep:
        return (f"replica {rep.get('replica')} of {rep.get('primary') or '?'}"
                + (f" via sentinel service {t['service']}" if t.get("service") else "")
                + f", {rep.get('lag_bytes') if rep.get('lag_bytes') is not None else '?'} bytes behind, "
                  f"link {rep.get('master_link_status')}")
    if mode == "sentinel":
        return f"master {t['nodes'][0]['addr']} named by sentinel service {t.get('service')}"
    return None


def values_line(options: dict) -> str:
    """What the snapshot keeps of job values: all, secrets redacted, or none (--no-data)."""
    if options.get("no_data"):
        return "none kept (--no-data): sizes, shapes, field names and error fingerprints only"
    if options.get("redact") is False:
        return "kept as read, secrets included (--no-redact)"
    extra = options.get("redact_fields") or []
    return "kept, secrets redacted" + (f" (and fields matching {', '.join(extra)})" if extra else "")


def _server(r) -> str:
    """'7.2.4', or 'valkey 8.1.0' / 'dragonfly 1.2' when the server read is not Redis."""
    kind, version = r.get("server_type"), r.get("server_version")
    if isinstance(kind, str) and kind != "redis":
        return f"{kind} {version or ''}".strip()
    return str(r.get("redis_version"))


def summary(snap) -> str:
    """Plain-text summary of a snapshot."""
    m = snap.manifest
    r = snap.redis.iloc[0] if len(snap.redis) else pd.Series(dtype=object)
    lines = [
        f"Snapshot {snap.path or '(not saved)'}",
        f"  source      {m.get('source')}  prefixes {', '.join(m.get('options', {}).get('prefixes', []))}",
        f"  captured    {m.get('captured_at')}  in {m.get('duration_s')} s"
        f"  {'complete' if snap.complete else 'INCOMPLETE: ' + str(m.get('incomplete_reason'))}",
        f"  redis       {_server(r)}  used {human_bytes(r.get('used_memory'))}"
        f"  maxmemory {human_bytes(r.get('maxmemory')) if r.get('maxmemory') else 'unlimited'}"
        f"  policy {r.get('maxmemory_policy')}  clients {r.get('connected_clients')}"
        + (f" of {int(r.get('maxclients')):,}" if pd.notna(r.get("maxclients")) else ""),
        f"  contents    {len(snap.queues)} queues, {len(snap.jobs):,} jobs, {len(snap.events):,} events,"
        f" {len(snap.workers)} worker connections"
        + (f", {len(snap.schedulers)} schedulers" if len(snap.schedulers) else ""),
        f"  values      {values_line(m.get('options', {}))}",
    ]
    if m.get("backend") == "postgres":   # BullMQ 6 on PostgreSQL: a schema, a database, one consistent read
        pg = m.get("postgres") or {}
        lines[1] = f"  source      {m.get('source')}  schema {pg.get('schema')} (BullMQ schema version " \
                   f"{pg.get('schema_version')})  backend postgres"
        lines[3] = (f"  postgres    {r.get('server_version')}  database {pg.get('database')} "
                    f"{human_bytes(r.get('used_memory'))}  sessions {r.get('connected_clients')}"
                    f"{'  (a replica)' if pg.get('in_recovery') else ''}  {m.get('consistency')}")
    if len(snap.redis) > 1 and "node" in snap.redis:  # a cluster: one line per master
        i = next(k for k, ln in enumerate(lines) if ln.startswith("  redis "))
        lines[i:i + 1] = [
            f"  redis       {row.get('node')}  {_server(row)}  used {human_bytes(row.get('used_memory'))}"
            f"  maxmemory {human_bytes(row.get('maxmemory')) if row.get('maxmemory') else 'unlimited'}"
            f"  policy {row.get('maxmemory_policy')}" for _, row in snap.redis.iterrows()]
    where = topology_line(m)
    if where:
        lines.insert(2, f"  topology    {where}")
    if snap.has_logs:
        from .logs import describe
        lines.append(f"  logs        {describe(snap.logs)}")
    lines += [
        "",
    ]
    ov = queue_overview(snap)
    if len(ov):
        lines.append(ov.to_string())
    else:
        lines.append("No Bull/BullMQ queues found under the prefix.")
    notes = observations(snap)
    if notes:
        lines += ["", "Worth a look:"] + [f"  - {n}" for n in notes]
    for w in m.get("warnings", []):
        lines.append(f"  ! {w}")
    return "\n".join(lines)


def summary_html(snap) -> str:
    """The same summary as HTML; every value from the snapshot is escaped."""
    m = snap.manifest
    ov = queue_overview(snap)
    notes = "".join(f"<li>{escape(n)}</li>" for n in observations(snap))
    table = frame_html(ov) if len(ov) else "<p>No queues found.</p>"
    state = "complete" if snap.complete else f"INCOMPLETE: {m.get('incomplete_reason')}"
    return (f"<div><b>Snapshot</b> {escape(str(snap.path or '(not saved)'))} — "
            f"{'PostgreSQL ' if m.get('backend') == 'postgres' else ''}"
            f"{escape(str(m.get('source')))} at {escape(str(m.get('captured_at')))} "
            f"({escape(state)})<br>{table}<ul>{notes}</ul></div>")
