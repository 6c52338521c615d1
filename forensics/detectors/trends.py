"""Trends over a series of captures: is Redis memory growing, is a backlog draining?

Both read a robust trend through the captures (``trend``: Theil–Sen slope, Kendall's tau)
and speak only when the values rise consistently (``trend_min_tau``), still rise in the
latter half (``trend_late_share``: a rise that levelled off is not growth) and the growth
clears its threshold; with fewer than ``series_min_points`` captures they say nothing.
"""
from __future__ import annotations

import pandas as pd

from ..summary import human_bytes
from ..stats import rising
from . import Context, detector, trend

BACKLOG = ["n_wait", "n_paused", "n_prioritized", "n_delayed"]


def duration(seconds: float | None) -> str:
    """'200 ms', '4.5 s', '40 s', '3 min', '2.5 h', '4 days' (None: 'never')."""
    if seconds is None:
        return "never"
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 10:
        return f"{s:.1f} s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def byte_rate(per_s: float, span_s: float) -> str:
    """A growth rate in the unit that fits how long it was watched: per minute for short
    watches (an hourly figure from 5 s of data overstates what is known)."""
    if span_s < 3600:
        return f"{human_bytes(per_s * 60)}/min"
    return f"{human_bytes(per_s * 3600)}/h"


def trend_series(ctx: Context):
    """The captures a trend is read from (complete ones), or None with too few of them."""
    series = ctx.series.for_trends if ctx.series is not None else None
    return series if series is not None and len(series) >= ctx.t.series_min_points else None


def memory_trend(series, rows: pd.DataFrame | None = None) -> dict | None:
    r = series.redis if rows is None else rows
    if not len(r) or "used_memory" not in r or r["used_memory"].notna().sum() < 2:
        return None
    if rows is None and "node" in r and r["node"].nunique() > 1:  # a cluster: all masters together
        r = r.groupby("captured_at", as_index=False)["used_memory"].sum(min_count=1)
    return trend(r["captured_at"], r["used_memory"])


def redis_by_node(series) -> list[tuple[str | None, pd.DataFrame]]:
    """The series' redis rows per node (a cluster captures one row per master per capture);
    one group labelled None for a single node."""
    r = series.redis
    if len(r) and "node" in r and r["node"].nunique() > 1:
        return [(str(n), g.sort_values("captured_at")) for n, g in r.groupby("node", sort=True)]
    return [(None, r)]


def queue_growth(series, column: str = "memory_bytes", top: int = 5, node: str | None = None) -> dict[str, int]:
    """Per queue (of ``node``, on a cluster): last minus first value of a queues column over
    the series, biggest first."""
    q = series.queues
    if not len(q) or column not in q:
        return {}
    if node is not None and "node" in q:
        q = q[q["node"] == node]
    q = q.astype({"prefix": "str", "queue": "str"}).sort_values("captured_at")
    g = q.groupby(["prefix", "queue"])[column]
    delta = (g.last() - g.first()).dropna().sort_values(ascending=False)
    return {f"{p}:{n}": int(v) for (p, n), v in delta.head(top).items() if v > 0}


@detector("redis-memory-growth", "memory", "Redis memory grows over the series")
def redis_memory_growth(ctx: Context):
    series = trend_series(ctx)
    if series is None:
        return
    for node, rows in redis_by_node(series):
        yield from _memory_growth(ctx, series, node, rows)


def _memory_growth(ctx: Context, series, node: str | None, rows: pd.DataFrame):
    t = ctx.t
    tr = memory_trend(series, rows)
    if tr is None or tr["points"] < t.series_min_points or not rising(tr, t.trend_min_tau, t.trend_late_share):
        return
    grown = tr["last"] - tr["first"]
    if grown < t.memory_growth_min_bytes or grown < t.memory_growth_min_share * max(tr["first"], 1):
        return
    last = rows.iloc[-1]
    used, limit, policy = float(last["used_memory"]), last.get("maxmemory"), last.get("maxmemory_policy")
    per_hour = tr["slope_per_s"] * 3600
    eta = None
    if pd.notna(limit) and limit:
        eta = max(0.0, (float(limit) - used) / tr["slope_per_s"])
    full_at = (series.latest.captured_at + pd.Timedelta(seconds=eta)) if eta is not None else None
    severity = ("medium" if eta is None else "critical" if eta <= 3600 else "high" if eta <= 86400 else "medium")
    title = ((f"node {node}: " if node else "") + f"Redis memory grew {human_bytes(tr['observed_first'])} → {human_bytes(tr['observed_last'])} "
             f"in {duration(tr['span_s'])} (+{byte_rate(tr['slope_per_s'], tr['span_s'])})")
    title += (f"; maxmemory {human_bytes(limit)} reached in ~{duration(eta)} (about {full_at:%H:%M} UTC)"
              if eta is not None else "; no maxmemory: it grows until the host runs out")
    outcome = ("writes then fail with OOM (noeviction)" if policy == "noeviction" else
               f"Redis then evicts keys ({policy}), destroying queue state" if isinstance(policy, str) and policy
               else "writes fail or keys are evicted")
    yield ctx.finding(
        "redis-memory-growth", severity, title, None, None, count=0,
        evidence={"points": tr["points"], "span_s": round(tr["span_s"], 1), "grown_bytes": int(grown),
                  "first_used": int(tr["observed_first"]),
                  "last_used": int(used), "growth_bytes_per_hour": int(per_hour), "tau": tr["tau"], "r2": tr["r2"],
                  "maxmemory": None if pd.isna(limit) else int(limit), "maxmemory_policy": policy,
                  "seconds_to_maxmemory": None if eta is None else round(eta),
                  "projected_full_at": None if full_at is None else full_at.isoformat(),
                  "growing_queues": queue_growth(series, node=node)} | ({"node": node} if node else {}),
        remediation=f"At maxmemory {outcome}. Find what grows (`growing_queues`, `forensics diff FIRST LAST`): "
                    "usually finished jobs kept without `removeOnComplete`/`removeOnFail`, a backlog no worker "
                    "drains, or large payloads. Bound it, or raise maxmemory to buy time.")


@detector("backlog-growth", "memory", "a queue's backlog grows faster than workers drain it")
def backlog_growth(ctx: Context):
    series = trend_series(ctx)
    if series is None:
        return
    t = ctx.t
    q = series.queues
    if not len(q):
        return
    q = q.assign(backlog=q[BACKLOG].sum(axis=1)).astype({"prefix": "str", "queue": "str"})
    redis_last = series.redis.iloc[-1] if len(series.redis) else pd.Series(dtype=object)
    latest = {(r["prefix"], r["queue"]): r for _, r in ctx.queues.iterrows()}
    for (prefix, name), g in q.sort_values("captured_at").groupby(["prefix", "queue"], sort=False):
        if len(g) < t.series_min_points:
            continue
        tr = trend(g["captured_at"], g["backlog"])
        if not rising(tr, t.trend_min_tau, t.trend_late_share):
            continue
        span = tr["span_s"]
        grown = int(g["backlog"].iloc[-1] - g["backlog"].iloc[0])
        if tr["last"] - tr["first"] < t.backlog_growth_min_jobs or grown < t.backlog_growth_min_jobs:
            continue
        ids = g["id_counter"].astype("Float64")
        arrivals = None
        # Bull and BullMQ INCR the queue's id counter on every add, custom jobId or not. Fewer
        # adds than growth means jobs came back (stall recovery, retries): then it says nothing.
        if ids.notna().all() and (ids.diff().dropna() >= 0).all() and float(ids.iloc[-1] - ids.iloc[0]) >= grown:
            arrivals = float(ids.iloc[-1] - ids.iloc[0]) / span
        if arrivals is not None:
            drain = max(0.0, arrivals - grown / span)
            drain_basis = "jobs added (id counter) minus backlog growth"
        else:  # finished jobs kept is a lower bound of what was drained
            fin = (g["n_completed"] + g["n_failed"]).astype("float64")
            drain = max(0.0, float(fin.iloc[-1] - fin.iloc[0]) / span)
            drain_basis = "growth of completed + failed (a lower bound)"
        backlog_now = int(g["backlog"].iloc[-1])
        to_drain = backlog_now / drain if drain > 0 else None
        eta = None
        qrow = latest.get((prefix, name))
        limit = redis_last.get("maxmemory")
        if qrow is not None and pd.notna(qrow["memory_bytes"]) and pd.notna(limit) and limit:
            jobs_now = int(sum(int(qrow[c]) for c in qrow.index if str(c).startswith("n_")))
            per_job = float(qrow["memory_bytes"]) / max(jobs_now, 1)
            used = float(redis_last.get("used_memory") or 0)
            eta = max(0.0, (float(limit) - used) / (tr["slope_per_s"] * per_job)) if per_job > 0 else None
        # (almost) nothing drains: counts and the id counter are read moments apart, so "none"
        # can come out as a few percent of the arrivals
        starved = drain <= 0.05 * arrivals if arrivals else drain == 0
        # nothing drains: nothing progresses now (critical); memory full within the hour: high
        severity = "critical" if starved else "high" if eta is not None and eta <= 3600 else "medium"
        per_min = tr["slope_per_s"] * 60
        title = (f"backlog grew {int(g['backlog'].iloc[0]):,} → {backlog_now:,} in {duration(span)} "
                 f"(+{per_min:,.0f}/min): "
                 + (f"jobs arrive at {arrivals * 60:,.0f}/min, " if arrivals is not None else "")
                 + (f"workers drain {drain * 60:,.0f}/min" if not starved else
                    f"nothing drains it (about {drain * 60:,.0f}/min)" if drain > 0 else "nothing drains it"))
        qs = pd.Series({"prefix": prefix, "queue": name})
        yield ctx.finding(
            "backlog-growth", severity, title, qs, None, count=grown,
            evidence={"points": tr["points"], "span_s": round(span, 1), "first_backlog": int(g["backlog"].iloc[0]),
                      "last_backlog": backlog_now, "growth_per_min": round(per_min, 1),
                      "arrivals_per_min": None if arrivals is None else round(arrivals * 60, 1),
                      "drain_per_min": round(drain * 60, 1), "drain_basis": drain_basis, "tau": tr["tau"], "r2": tr["r2"],
                      "seconds_to_drain_if_producers_stop": None if to_drain is None else round(to_drain),
                      "seconds_to_maxmemory_at_this_growth": None if eta is None else round(eta),
                      "workers": int(g["workers"].iloc[-1])},
            remediation="Workers take jobs slower than producers add them. Check the stuck findings first (no "
                        "worker, paused, stalled). Then add capacity: more worker processes, or a higher "
                        "`concurrency` (BullMQ Worker option; Bull `queue.process(name, concurrency, fn)`) if the "
                        "work is I/O-bound; or slow producers down (a rate `limiter`, batching).")
