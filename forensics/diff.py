"""forensics diff OLD NEW: what changed between two snapshots of the same Redis.

    d = forensics.diff("snapshots/0900", "snapshots/0930")
    d.stuck         # active in both, same lock token: one worker has held it all along
    d.queues        # per queue: backlog and finished counts, bytes, grew / drained
    d.failures      # jobs that failed since OLD, by error fingerprint
    d.memory        # where bytes were added, per queue and key family
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from .diagnosis import _plain
from .errors import UsageError
from .fingerprint import fingerprints
from .htmlsafe import escape
from .summary import human_bytes

SCHEMA = "forensics.diff/1"
STATES = ["wait", "paused", "prioritized", "delayed", "waiting-children", "active", "completed", "failed"]
BACKLOG = ["n_wait", "n_paused", "n_prioritized", "n_delayed"]
KEY = ["prefix", "queue"]


def _open(x):
    from .series import Series, open_path
    from .snapshot import Snapshot
    if isinstance(x, Snapshot):
        return x
    if isinstance(x, Series):
        raise UsageError("diff compares two snapshots; pass series[0] and series[-1] (or two snapshot folders)")
    src = open_path(x)
    if isinstance(src, Series):
        raise UsageError(f"{x} is a series folder; diff takes two snapshot folders, e.g. its first and last")
    return src


def _strs(df: pd.DataFrame, cols=("prefix", "queue")) -> pd.DataFrame:
    return df.astype({c: "str" for c in cols if c in df.columns})


class Diff:
    """The changes between two snapshots, as DataFrames; ``to_table()`` / ``to_json()``."""

    def __init__(self, old, new):
        self.old, self.new = old, new
        self.swapped = False
        if new.captured_at < old.captured_at:
            self.old, self.new, self.swapped = new, old, True
        self.interval = self.new.captured_at - self.old.captured_at
        self.queues = self._queues()
        self.stuck = self._stuck()
        self.failures = self._failures()
        self.memory = self._memory()
        self.redis = self._redis()

    # -- tables -----------------------------------------------------------------------
    def _queues(self) -> pd.DataFrame:
        cols = ["n_" + s.replace("-", "_") for s in STATES] + ["memory_bytes", "workers", "id_counter"]
        o = _strs(self.old.queues).set_index(KEY)[cols]
        n = _strs(self.new.queues).set_index(KEY)[cols]
        both = o.join(n, how="outer", suffixes=("_old", "_new"))
        out = pd.DataFrame(index=both.index)
        for c in cols:
            out[f"{c}_old"] = both[f"{c}_old"]
            out[f"{c}_new"] = both[f"{c}_new"]
        out["backlog_old"] = both[[f"{c}_old" for c in BACKLOG]].sum(axis=1, min_count=1)
        out["backlog_new"] = both[[f"{c}_new" for c in BACKLOG]].sum(axis=1, min_count=1)
        out["backlog_delta"] = out["backlog_new"].fillna(0) - out["backlog_old"].fillna(0)
        out["added"] = (both["id_counter_new"] - both["id_counter_old"]).astype("Float64")
        out["finished_delta"] = (both["n_completed_new"].fillna(0) + both["n_failed_new"].fillna(0)
                                 - both["n_completed_old"].fillna(0) - both["n_failed_old"].fillna(0))
        out["memory_delta"] = both["memory_bytes_new"].astype("Float64").fillna(0) - \
            both["memory_bytes_old"].astype("Float64").fillna(0)

        d = out["backlog_delta"]
        out["status"] = np.select(
            [out["backlog_old"].isna(), out["backlog_new"].isna(), d > 0, (d < 0) & (out["backlog_new"] == 0), d < 0],
            ["new", "gone", "grew", "drained", "draining"], default="same")
        return out.reset_index().sort_values("backlog_delta", ascending=False, kind="stable").reset_index(drop=True)

    def _stuck(self) -> pd.DataFrame:
        cols = ["prefix", "queue", "job_id", "name", "processed_at", "lock_present", "lock_token", "processed_by"]
        o = _strs(self.old.jobs[self.old.jobs["state"] == "active"][cols])
        n = _strs(self.new.jobs[self.new.jobs["state"] == "active"][cols])
        m = o.merge(n, on=["prefix", "queue", "job_id"], suffixes=("_old", "_new"))
        same_lock = m["lock_present_old"].fillna(False).astype(bool) & m["lock_present_new"].fillna(False).astype(bool) \
            & (m["lock_token_old"] == m["lock_token_new"])
        no_lock = ~m["lock_present_old"].fillna(False).astype(bool) & ~m["lock_present_new"].fillna(False).astype(bool) \
            & (m["processed_at_old"] == m["processed_at_new"])
        m = m[same_lock | no_lock].copy()
        m["why"] = ["same lock token in both: one worker has held it all along" if s else
                    "no lock in either and never restarted: stalled, nothing picked it up"
                    for s in same_lock[same_lock | no_lock]]
        m["running_for"] = self.new.captured_at - m["processed_at_new"]
        out = m.rename(columns={"name_new": "name", "processed_at_new": "processed_at", "lock_token_new": "lock_token",
                                "processed_by_new": "processed_by"})
        return out[["prefix", "queue", "job_id", "name", "processed_at", "running_for", "lock_token",
                    "processed_by", "why"]].sort_values("running_for", ascending=False).reset_index(drop=True)

    def _failures(self) -> pd.DataFrame:
        cols = ["prefix", "queue", "job_id", "finished_at", "failed_reason", "attempts_made"]
        o = _strs(self.old.jobs[self.old.jobs["state"] == "failed"][cols])
        n = _strs(self.new.jobs[self.new.jobs["state"] == "failed"][cols])
        m = n.merge(o[["prefix", "queue", "job_id", "finished_at"]], on=["prefix", "queue", "job_id"],
                    how="left", suffixes=("", "_old"), indicator=True)
        fresh = m[(m["_merge"] == "left_only") | (m["finished_at"] != m["finished_at_old"])].copy()
        fresh["fingerprint"] = fingerprints(fresh["failed_reason"]).fillna("(no failed reason)")
        old_fps = set(fingerprints(o["failed_reason"]).dropna())
        rows = []
        for fp, g in fresh.groupby("fingerprint", sort=False):
            rows.append({"fingerprint": fp, "count": len(g),
                         "queues": sorted({f"{p}:{q}" for p, q in zip(g["prefix"], g["queue"])}),
                         "new_error": fp not in old_fps, "example": str(g["failed_reason"].dropna().iloc[0])[:300]
                         if g["failed_reason"].notna().any() else None,
                         "job_ids": [str(x) for x in g["job_id"].head(20)]})
        out = pd.DataFrame(rows, columns=["fingerprint", "count", "queues", "new_error", "example", "job_ids"])
        return out.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)

    def _memory(self) -> pd.DataFrame:
        k = ["prefix", "queue", "family"]
        o = _strs(self.old.memory).set_index(k)[["keys", "bytes"]]
        n = _strs(self.new.memory).set_index(k)[["keys", "bytes"]]
        both = o.join(n, how="outer", suffixes=("_old", "_new")).fillna(0)
        both["bytes_delta"] = both["bytes_new"] - both["bytes_old"]
        both["keys_delta"] = both["keys_new"] - both["keys_old"]
        both = both[both["bytes_delta"] != 0]
        return both.reset_index().sort_values("bytes_delta", ascending=False, kind="stable").reset_index(drop=True)

    def _redis(self) -> dict[str, Any]:
        def get(s, col):
            return s.redis.iloc[0].get(col) if len(s.redis) else None
        out = {}
        for col in ("used_memory", "evicted_keys", "connected_clients", "total_commands_processed"):
            a, b = get(self.old, col), get(self.new, col)
            out[col] = {"old": _plain(a), "new": _plain(b),
                        "delta": _plain(b - a) if a is not None and b is not None and pd.notna(a) and pd.notna(b) else None}
        return out

    # -- renderings -------------------------------------------------------------------
    def to_dict(self) -> dict:
        q = self.queues
        return _plain({
            "schema": SCHEMA,
            "old": {"path": self.old.path, "captured_at": self.old.manifest.get("captured_at")},
            "new": {"path": self.new.path, "captured_at": self.new.manifest.get("captured_at")},
            "swapped": self.swapped, "interval_s": self.interval.total_seconds(),
            "same_source": self.old.manifest.get("source") == self.new.manifest.get("source"),
            "redis": self.redis,
            "queues": [{"prefix": r.prefix, "queue": r.queue, "status": r.status,
                        "backlog_old": r.backlog_old, "backlog_new": r.backlog_new, "backlog_delta": r.backlog_delta,
                        "added": r.added, "finished_delta": r.finished_delta,
                        "active_old": r.n_active_old, "active_new": r.n_active_new,
                        "failed_old": r.n_failed_old, "failed_new": r.n_failed_new,
                        "memory_delta": r.memory_delta} for r in q.itertuples()],
            "stuck": [{**{k: v for k, v in r.items() if k != "running_for"},
                       "running_for_s": r["running_for"].total_seconds() if pd.notna(r["running_for"]) else None}
                      for r in self.stuck.to_dict("records")],
            "new_failures": self.failures.to_dict("records"),
            "memory": self.memory.to_dict("records"),
        })

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, default=str)

    def to_table(self) -> str:
        o, n = self.old, self.new
        mins = self.interval.total_seconds() / 60
        lines = [f"forensics diff: {o.path or '(old)'} ({o.manifest.get('captured_at')}) → "
                 f"{n.path or '(new)'} ({n.manifest.get('captured_at')}), {mins:.1f} min apart"
                 + (" [OLD was the newer one: compared the other way round]" if self.swapped else "")]
        if o.manifest.get("source") != n.manifest.get("source"):
            lines.append(f"! different sources: {o.manifest.get('source')} vs {n.manifest.get('source')} "
                         "(is this the same Redis?)")
        r = self.redis["used_memory"]
        if r["old"] is not None and r["new"] is not None:
            lines.append(f"Redis used_memory {human_bytes(r['old'])} → {human_bytes(r['new'])} "
                         f"({'+' if r['delta'] >= 0 else '-'}{human_bytes(abs(r['delta']))})")
        ev = self.redis["evicted_keys"]
        if ev["delta"]:
            lines.append(f"! {int(ev['delta']):,} keys evicted in between")
        lines += ["", f"Stuck: {len(self.stuck)} job(s) active in both snapshots without progress"]
        for s in self.stuck.head(20).itertuples():
            run = s.running_for.total_seconds() / 60 if pd.notna(s.running_for) else float("nan")
            lines.append(f"  {s.prefix}:{s.queue} job {s.job_id} ({s.name}) running {run:.1f} min — {s.why}")
        lines += ["", "Queues (backlog = waiting + paused + prioritized + delayed):"]
        q = self.queues
        if len(q):
            lines.append(f"  {'QUEUE':<30} {'STATUS':<9} {'BACKLOG':>18} {'ADDED':>8} {'FINISHED':>9} "
                         f"{'ACTIVE':>9} {'BYTES':>12}")
            for r in q.itertuples():
                bl = f"{_n(r.backlog_old)} → {_n(r.backlog_new)}"
                mem = ("+" if r.memory_delta >= 0 else "-") + human_bytes(abs(r.memory_delta))
                lines.append(f"  {(r.prefix + ':' + r.queue)[:30]:<30} {r.status:<9} {bl:>18} {_n(r.added, '+'):>8} "
                             f"{_n(r.finished_delta, '+'):>9} {_n(r.n_active_old)}→{_n(r.n_active_new):<5} {mem:>12}")
        lines += ["", f"New failures since OLD: {int(self.failures['count'].sum()) if len(self.failures) else 0}"]
        for f in self.failures.head(15).itertuples():
            lines.append(f"  {f.count:>6,}  {f.fingerprint}" + ("  [new error]" if f.new_error else "")
                         + f"  ({', '.join(f.queues[:3])})")
        lines += ["", "Where bytes were added (top 10):"]
        for m in self.memory.head(10).itertuples():
            sign = "+" if m.bytes_delta >= 0 else "-"
            lines.append(f"  {sign}{human_bytes(abs(m.bytes_delta)):>10}  {m.prefix}:{m.queue} {m.family} "
                         f"({int(m.keys_old):,} → {int(m.keys_new):,} keys)")
        if not len(self.memory):
            lines.append("  (no change measured)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<Diff {self.interval} apart: {len(self.stuck)} stuck, "
                f"{int(self.failures['count'].sum()) if len(self.failures) else 0} new failures>")

    def _repr_html_(self) -> str:
        return f"<pre>{escape(self.to_table())}</pre>"


def _n(x, sign: str = "") -> str:
    if x is None or pd.isna(x):
        return "-"
    x = int(x)
    return f"{'+' if sign and x > 0 else ''}{x:,}"


def diff(old, new) -> Diff:
    """Compare two snapshots (Snapshot objects or folders); the older one is OLD whatever the order."""
    return Diff(_open(old), _open(new))
