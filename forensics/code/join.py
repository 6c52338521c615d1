"""A code scan joined with a snapshot: runtime findings gain the code sites that configure
their queue, the checklist takes the code's evidence where Redis cannot tell, and where the
code and Redis disagree that is a finding of its own."""
from __future__ import annotations

import json

import pandas as pd

from ..detectors import Finding

CONFIGURING = ("Queue", "Worker", "process", "add", "addBulk", "upsertJobScheduler")


def _prefix(options) -> str | None:
    try:
        o = json.loads(options) if isinstance(options, str) else {}
    except ValueError:
        return None
    p = o.get("prefix") if isinstance(o, dict) else None
    return p if isinstance(p, str) and not p.startswith("unresolved: ") else None


def sites_of(scan, prefix: str, queue: str) -> pd.DataFrame:
    """The code sites of one queue of the snapshot: its name, and its prefix where the code
    sets one (a Queue or Worker with `prefix`; sites that set none match any prefix)."""
    s = scan.sites
    if not len(s):
        return s
    if not hasattr(scan, "_by_queue"):   # split once: every finding and checklist row asks
        scan._by_queue = {str(k): g for k, g in s.groupby("queue", sort=False)}
    mine = scan._by_queue.get(str(queue), s.iloc[0:0])
    if not len(mine):
        return mine
    pfx = mine["prefix"].where(~mine["prefix"].fillna("").str.startswith("unresolved: "), None) \
        if "prefix" in mine else mine["options"].map(_prefix)
    return mine[pfx.isna() | (pfx == str(prefix))]


def where(rows: pd.DataFrame, n: int = 5) -> list[dict]:
    return [{"file": r.file, "line": int(r.line), "snippet": r.snippet} for r in rows.head(n).itertuples()]


def _at(rows: pd.DataFrame) -> str:
    return ", ".join(f"{r.file}:{int(r.line)}" for r in rows.head(3).itertuples())


def join_findings(ctx, scan, found: list[Finding]) -> list[Finding]:
    """Adds evidence.code to runtime findings; returns the code findings to add (queue
    names matched to the snapshot's prefixes) and the code/Redis disagreements."""
    queues = [(str(q["prefix"]), str(q["queue"])) for q in ctx.queue_rows]
    by_name: dict[str, list[str]] = {}
    for p, q in queues:
        by_name.setdefault(q, []).append(p)
    for f in found:
        if f.queue is not None and f.prefix is not None and "code" not in f.evidence:
            rows = sites_of(scan, f.prefix, f.queue)
            rows = rows[rows["kind"].isin(CONFIGURING)] if len(rows) else rows
            if len(rows):
                f.evidence["code"] = where(rows)
    extra: list[Finding] = []
    for r in scan.findings.itertuples():
        prefixes = by_name.get(r.queue, []) if isinstance(r.queue, str) else []
        extra.append(Finding(id=r.id, severity=r.severity, title=r.title, count=int(r.count),
                             prefix=prefixes[0] if len(prefixes) == 1 else None, queue=r.queue if isinstance(r.queue, str) else None,
                             evidence=dict(r.evidence), remediation=r.remediation, family="code"))
    extra += mismatches(ctx, scan)
    return extra


def _keep_count(value) -> int | None:
    """How many completed jobs a removeOnComplete value keeps (None: keeps all / unknown)."""
    try:
        v = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return None
    if v is True:
        return 0
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, dict) and isinstance(v.get("count"), (int, float)):
        return int(v["count"])
    return None


def mismatches(ctx, scan) -> list[Finding]:
    """The code bounds a queue's completed jobs (removeOnComplete on every add, or in the
    defaults), yet Redis holds far more: Bull 3 ignores the object form `{count: N}`, or
    another producer adds without it."""
    out = []
    s = scan.sites
    if not len(s):
        return out
    for q in ctx.queue_rows:
        mine = sites_of(scan, q["prefix"], q["queue"])
        if not len(mine):
            continue
        adds = mine[mine["kind"] == "add"]
        defaults = mine[(mine["kind"] == "Queue") & mine["default_job_options"].notna()]
        keeps = []
        for r in adds.itertuples():
            k = _keep_count(r.remove_on_complete)
            if k is None and len(defaults):
                d = json.loads(defaults["default_job_options"].iloc[0])
                k = _keep_count(d.get("removeOnComplete"))
            keeps.append(k)
        if not keeps or any(k is None for k in keeps):
            continue
        bound = max(keeps)
        held = int(q["n_completed"])
        if held <= bound + max(10, bound // 10):   # the library trims at each completion: a little slack
            continue
        lib = ctx.snap.queues.set_index(["prefix", "queue"]).loc[(q["prefix"], q["queue"]), "library_version"] \
            if "library_version" in ctx.snap.queues else None
        rows = pd.concat([adds, defaults])
        out.append(Finding(
            id="code-redis-mismatch", severity="medium",
            title=f"the code keeps {bound:,} completed job(s), Redis holds {held:,}", count=held - bound,
            prefix=str(q["prefix"]), queue=str(q["queue"]), family="code",
            evidence={"code": where(rows), "code_keeps": bound, "redis_completed": held,
                      "flavor": q["flavor"], "library_version": None if lib is None or pd.isna(lib) else str(lib),
                      "packages": scan.packages},
            remediation=("The code and Redis disagree. Bull 3 ignores the object form of removeOnComplete "
                         "(`{count: N}`, `{age}`) and removes nothing: give it a number (`removeOnComplete: 1000`) "
                         "or upgrade to Bull 4 / BullMQ. Otherwise another producer (another service, a script, "
                         "an older deploy) adds to this queue without the option: find it, or set the bound in "
                         "the Queue's defaultJobOptions.")))
    return out


def code_checklist(checklist: pd.DataFrame, scan, t) -> pd.DataFrame:
    """Verdicts Redis cannot give, taken from the code (with file:line): an `unknown` or a
    hedged `warn` becomes the code's pass / warn / fail; what Redis judged pass or fail stays."""
    if not len(checklist) or not len(scan.sites):
        return checklist
    out = checklist.copy()
    found = scan.findings
    s = scan.sites
    watches = s[s["kind"] == "memoryUsage"]
    health = s[s["kind"] == "health"]
    for i, row in out.iterrows():
        if row["verdict"] not in ("unknown", "warn"):
            continue
        mine = sites_of(scan, row["prefix"], row["queue"])
        if not len(mine):
            continue
        flagged = set(found.loc[found["queue"] == row["queue"], "id"]) if len(found) else set()
        procs = mine[mine["reports_progress"].notna()]
        workers = mine[mine["kind"].isin(["Worker", "process"])]
        files = set(workers["file"])
        v = None
        item = row["item"]
        if item in ("timeout", "progress", "concurrency", "memory-leak", "health-checks") and not len(workers) \
                and row["verdict"] == "unknown":
            v = ("warn", f"no worker for this queue in the scanned code (it is used at {_at(mine)}): "
                         f"scan the service that processes it")
        elif item == "memory-leak" and row["verdict"] == "unknown":
            leak = workers[workers["retains"].notna()] if "retains" in workers else workers.iloc[0:0]
            watched = watches[watches["file"].isin(files)]
            v = ("fail", f"the processor keeps every job in `{leak['retains'].iloc[0]}` ({_at(leak)})") if len(leak) else \
                ("pass", f"the worker logs its memory (process.memoryUsage() at {_at(watched)})") if len(watched) else \
                ("warn", f"nothing beside the worker watches its memory ({_at(workers)})")
        elif item == "health-checks" and row["verdict"] == "unknown":
            h = health[health["file"].isin(files)]
            v = ("pass", f"a health check beside the worker ({_at(h)})") if len(h) else \
                ("warn", f"no health endpoint or isRunning() check beside the worker ({_at(workers)})")
        elif item == "timeout" and len(procs):
            bounded = procs[procs["bounded"].fillna(False).astype(bool)]
            timed = mine[(mine["kind"] == "add") & mine["timeout_ms"].notna()]
            v = ("pass", f"the processor bounds its work ({_at(bounded)})") if len(bounded) else \
                ("pass", f"jobs are added with a `timeout` ({_at(timed)})") if len(timed) else \
                ("fail", f"neither the processor nor the jobs bound the work ({_at(procs)})")
        elif item == "concurrency" and len(workers):
            set_ = workers[workers["concurrency"].notna()]
            if len(set_):
                top = float(set_["concurrency"].max())
                v = ("fail" if top > t.max_concurrency else "pass", f"concurrency {top:g} set in code ({_at(set_)})")
            else:
                v = ("warn", f"concurrency not set: 1 by default ({_at(workers)})")
        elif item == "progress" and len(procs):
            rep = procs[procs["reports_progress"].fillna(False).astype(bool)]
            v = ("pass", f"the processor reports progress ({_at(rep)})") if len(rep) else \
                ("warn", f"the processor never reports progress ({_at(procs)})")
        elif item == "dead-letter" and len(workers):
            handlers = mine[(mine["kind"] == "on") & mine["event"].isin(["failed", "global:failed"])]
            v = ("pass", f"a `failed` handler ({_at(handlers)})") if len(handlers) else \
                ("fail" if "code-no-dead-letter" in flagged else "warn", f"no `failed` handler for this queue ({_at(workers)})")
        elif item == "cleanup" and row["verdict"] == "unknown":
            adds = mine[mine["kind"] == "add"]
            bounded = adds[adds["remove_on_complete"].notna()]
            if len(adds):
                v = ("pass", f"removeOnComplete set in code ({_at(bounded)})") if len(bounded) == len(adds) else \
                    ("warn", f"some adds keep completed jobs ({_at(adds[adds['remove_on_complete'].isna()])})")
        if v is not None and row["verdict"] in ("unknown", "warn"):
            out.at[i, "verdict"], out.at[i, "evidence"] = v[0], f"{v[1]}; Redis: {row['evidence']}"
    return out
