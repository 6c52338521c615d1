"""Connections: clients that pile up until Redis refuses new ones."""
from __future__ import annotations

import pandas as pd

from . import Context, detector


def _n(v) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


@detector("connection-leak", "config", "idle connections piling up from one address, or Redis near maxclients")
def connection_leak(ctx: Context):
    """From CLIENT LIST (the ``clients`` table) and INFO: one address holding
    ``leak_min_connections`` or more idle unnamed connections (a worker's and a QueueEvents'
    are named; a Queue created per request and never closed leaves unnamed ones), or the server near
    ``maxclients``; critical once Redis has rejected connections. A pool of named
    connections that are in use is not a leak."""
    t = ctx.t
    clients = ctx.snap.clients
    for node, row in ctx.redis_nodes():
        mine = clients[clients["node"].astype("str") == node] if node is not None and len(clients) else clients
        connected, maxclients = _n(row.get("connected_clients")), _n(row.get("maxclients"))
        rejected = _n(row.get("rejected_connections")) or 0
        near = bool(connected and maxclients and connected >= t.clients_near_max_share * maxclients)
        groups = []
        if len(mine):
            # a worker's, a QueueEvents' connection is named; a Queue's (and most leaks) is not.
            # Subscribers (P), replicas (S), masters (M) and blocked clients (b) idle by design.
            special = mine["flags"].fillna("").astype("str").str.contains("[PSMb]", regex=True)
            spare = mine[(mine["idle_s"].astype("float64") >= t.leak_idle_s) & ~special & mine["name"].isna()]
            for host, g in spare.groupby(spare["host"].astype("str"), sort=False):
                if len(g) < t.leak_min_connections:
                    continue
                of_host = mine[mine["host"].astype("str") == host]
                groups.append({
                    "address": host, "idle_connections": len(g), "connections": len(of_host),
                    "unnamed": int(g["name"].isna().sum()),
                    "idle_s_median": int(g["idle_s"].astype("float64").median()),
                    "idle_s_max": int(g["idle_s"].astype("float64").max()),
                    "last_commands": {str(k): int(v) for k, v in g["last_command"].astype("str").value_counts().head(5).items()},
                    "names": {str(k): int(v) for k, v in g["name"].dropna().astype("str").value_counts().head(5).items()},
                    "libraries": {str(k): int(v) for k, v in (g["lib_name"].fillna("") + " " + g["lib_ver"].fillna(""))
                                  .str.strip().replace("", "unknown").value_counts().head(3).items()}})
        groups.sort(key=lambda x: -x["idle_connections"])
        if not groups and not near:
            continue
        sev = "critical" if rejected else "high" if near else "medium"
        leaked = sum(x["idle_connections"] for x in groups)
        what = []
        if groups:
            what.append(f"{leaked:,} idle connection(s) from {len(groups)} address(es), "
                        f"most from {groups[0]['address']} ({groups[0]['idle_connections']:,})")
        if near:
            what.append(f"{connected:,} of maxclients {maxclients:,} connections in use")
        if rejected:
            what.append(f"{rejected:,} connection(s) rejected since Redis started")
        yield ctx.finding(
            "connection-leak", sev, "; ".join(what)[:1].upper() + "; ".join(what)[1:], None, None,
            count=leaked or (connected or 0),
            evidence={"node": node, "connected_clients": connected, "maxclients": maxclients,
                      "rejected_connections": rejected, "blocked_clients": _n(row.get("blocked_clients")),
                      "listed": len(mine), "by_address": groups[:10]},
            remediation="Create Queue (and QueueEvents) objects once per process and reuse them: one created "
                        "per request and never closed keeps its connections open. Close them on shutdown "
                        "(`await queue.close()`), share one ioredis connection between Queues, and set a "
                        "connection name so CLIENT LIST tells them apart. `CLIENT KILL` on the leaking "
                        "address buys time; raise `maxclients` only after the leak is fixed.")
