"""Causal links between findings: which finding is the cause of which.

An incident rarely produces one finding. A queue with no worker also has a stale backlog,
delayed jobs nobody promotes and stalled jobs nobody recovers; a retry storm also leaves
an error hotspot and bloated stack traces. The links are declared here, one rule per
(cause, effect) pair with the scope it holds in and, where the pair alone is not enough,
a condition on the two findings' evidence. ``link`` applies them to a diagnosis: each
finding gets ``explains`` and ``explained_by`` (references to other findings), and the
findings nobody explains are the root causes the renderings lead with.

The rules form a directed acyclic graph over detector ids (checked at import), so a chain
of causes always ends in a root.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .detectors import REGISTRY, Finding

MEMORY_EFFECTS = ("redis-memory-growth", "memory-pressure")
BYTE_CAUSES = ("unbounded-retention", "events-stream-bloat", "oversized-payload", "oversized-returnvalue",
               "stacktrace-bloat")
MEMORY_LINK_SHARE = 0.10  # a queue's bytes explain Redis memory when they are this share of used_memory


@dataclass(frozen=True)
class Rule:
    cause: str
    effect: str
    scope: str  # "queue": the same queue; "redis": one of the two is Redis-wide
    why: str    # how the cause brings the effect about, in a phrase
    when: Callable[[Finding, Finding], bool] | None = None


def _restarted(cause: Finding, effect: Finding) -> bool:
    return bool(cause.evidence.get("restarts"))


def _evicting(cause: Finding, effect: Finding) -> bool:
    return bool(cause.evidence.get("evicted_keys"))


def _oom(cause: Finding, effect: Finding) -> bool:
    return effect.evidence.get("kind") == "oom"


def _max_clients(cause: Finding, effect: Finding) -> bool:
    return effect.evidence.get("kind") == "max-clients"


def finding_bytes(f: Finding) -> int | None:
    """The bytes a memory-family finding accounts for (None: not measured)."""
    ev = f.evidence
    for key in ("stream_bytes", "total_bytes"):
        if ev.get(key) is not None:
            return int(ev[key])
    parts = [ev.get(k) for k in ("set_bytes", "job_bytes_estimate") if ev.get(k) is not None]
    return int(sum(parts)) if parts else None


def _weighs_on_memory(cause: Finding, effect: Finding) -> bool:
    """The cause's queue grew over the series, or its bytes are a real share of used_memory."""
    label = f"{cause.prefix}:{cause.queue}"
    if label in (effect.evidence.get("growing_queues") or {}):
        return True
    used = effect.evidence.get("used_memory") or effect.evidence.get("last_used")
    nbytes = finding_bytes(cause)
    return bool(used and nbytes and nbytes >= MEMORY_LINK_SHARE * float(used))


def _in_stream(cause: Finding, effect: Finding) -> bool:
    return bool(cause.evidence.get("in_events_stream"))


def _grew(cause: Finding, effect: Finding) -> bool:
    return f"{cause.prefix}:{cause.queue}" in (effect.evidence.get("growing_queues") or {})


RULES: list[Rule] = [
    Rule("no-workers", "stale-backlog", "queue", "no worker takes the waiting jobs"),
    Rule("no-workers", "overdue-delayed", "queue", "no worker promotes delayed jobs"),
    Rule("no-workers", "stalled-active", "queue", "no worker's stalled checker recovers them"),
    Rule("no-workers", "backlog-growth", "queue", "nothing drains the backlog"),
    Rule("no-workers", "priority-starvation", "queue", "no worker takes the waiting jobs"),
    Rule("no-workers", "scheduler-stalled", "queue", "no worker runs the scheduler's job"),
    Rule("stopped-consuming", "stale-backlog", "queue", "the connected workers take no job"),
    Rule("stopped-consuming", "overdue-delayed", "queue", "the connected workers promote no delayed job"),
    Rule("stopped-consuming", "backlog-growth", "queue", "nothing drains the backlog"),
    Rule("stopped-consuming", "priority-starvation", "queue", "the connected workers take no job"),
    Rule("stopped-consuming", "scheduler-stalled", "queue", "the connected workers take no scheduled job"),
    Rule("missing-job-hash", "scheduler-stalled", "queue", "the scheduler's next job is gone"),
    Rule("paused-backlog", "backlog-growth", "queue", "a paused queue takes no job"),
    Rule("rate-limit-freeze", "stale-backlog", "queue", "the rate limiter holds the queue"),
    Rule("rate-limit-freeze", "backlog-growth", "queue", "the rate limiter holds the queue"),
    Rule("hung-active", "stale-backlog", "queue", "hung jobs hold the worker slots"),
    Rule("hung-active", "no-progress", "queue", "the same jobs hang"),
    Rule("retry-storm", "stacktrace-bloat", "queue", "every failed attempt keeps a stack trace"),
    Rule("retry-storm", "error-hotspot", "queue", "the same failure, retried over and over"),
    Rule("retry-storm", "events-stream-bloat", "queue", "every retry writes stream entries"),
    Rule("oversized-returnvalue", "events-stream-bloat", "queue",
         "each return value is copied into the stream's `completed` entry", _in_stream),
    Rule("worker-memory-growth", "stall-failures", "queue",
         "a leaking worker is killed mid-job (its RSS dropped: restarts or OOM kills)", _restarted),
    Rule("worker-memory-growth", "stalled-active", "queue",
         "a leaking worker is killed mid-job (its RSS dropped: restarts or OOM kills)", _restarted),
    Rule("worker-memory-growth", "lock-lost", "queue",
         "a leaking worker is killed or stalls in garbage collection", _restarted),
    Rule("lock-lost", "stall-failures", "queue", "a job whose lock is lost is taken back by the stalled checker"),
    *[Rule(c, e, "redis", "its bytes fill Redis", _weighs_on_memory) for c in BYTE_CAUSES for e in MEMORY_EFFECTS],
    Rule("backlog-growth", "redis-memory-growth", "redis", "the growing backlog is what fills Redis", _grew),
    Rule("redis-memory-growth", "memory-pressure", "redis", "memory keeps growing toward maxmemory"),
    Rule("memory-pressure", "redis-connection-errors", "redis",
         "Redis at maxmemory refuses writes with OOM", _oom),
    Rule("eviction-policy", "missing-job-hash", "redis", "Redis evicted the job hashes", _evicting),
    Rule("missing-job-hash", "swallowed-adds", "queue",
         "the job is gone but its deduplication key still holds its id", lambda c, e: bool(e.evidence.get("stale_dedup_keys"))),
    Rule("connection-leak", "redis-connection-errors", "redis",
         "leaked connections fill maxclients and Redis refuses new ones", _max_clients),
]


def _check_acyclic(rules: list[Rule]) -> None:
    edges: dict[str, set[str]] = {}
    for r in rules:
        unknown = {r.cause, r.effect} - set(REGISTRY)
        if unknown:
            raise RuntimeError(f"causal rule names unknown detector(s): {sorted(unknown)}")
        edges.setdefault(r.cause, set()).add(r.effect)
    state: dict[str, int] = {}

    def visit(node: str, path: tuple[str, ...]) -> None:
        if state.get(node) == 1:
            raise RuntimeError(f"causal rules form a cycle: {' -> '.join(path + (node,))}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in edges.get(node, ()):
            visit(nxt, path + (node,))
        state[node] = 2
    for node in list(edges):
        visit(node, ())


_check_acyclic(RULES)
BY_EFFECT: dict[str, list[Rule]] = {}
for _r in RULES:
    BY_EFFECT.setdefault(_r.effect, []).append(_r)


def _in_scope(rule: Rule, cause: Finding, effect: Finding) -> bool:
    if rule.scope == "redis":
        return cause.queue is None or effect.queue is None
    if cause.queue is None or effect.queue is None or cause.queue != effect.queue:
        return False
    # a finding named by worker logs alone has no prefix: the queue name is all there is
    return cause.prefix is None or effect.prefix is None or cause.prefix == effect.prefix


def ref(f: Finding, index: int, why: str) -> dict:
    return {"id": f.id, "prefix": f.prefix, "queue": f.queue, "index": index, "why": why}


def link(findings: list[Finding]) -> None:
    """Fill ``explains`` / ``explained_by`` of findings in their final order (``index`` in a
    reference is a position in that list)."""
    by_id: dict[str, list[int]] = {}
    for i, f in enumerate(findings):
        f.explains, f.explained_by = [], []
        by_id.setdefault(f.id, []).append(i)
    for j, effect in enumerate(findings):
        for rule in BY_EFFECT.get(effect.id, ()):
            for i in by_id.get(rule.cause, ()):
                cause = findings[i]
                if _in_scope(rule, cause, effect) and (rule.when is None or rule.when(cause, effect)):
                    cause.explains.append(ref(effect, j, rule.why))
                    effect.explained_by.append(ref(cause, i, rule.why))

