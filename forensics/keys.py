"""Which key under a prefix belongs to which queue, and what it is.

Queue names and job ids may contain ':' (bull, BullMQ < 5.12.12, repeat ids), so keys are
parsed by known suffixes and known queue names, never by splitting on ':'. Everything is
vectorized over a pandas Series of key names: a big Redis holds millions of keys.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

# Queue-level keys and the Redis type each must have (types confirm a queue exists; a
# flow job's `<id>:failed` hash must not be taken for a queue's `failed` zset).
QUEUE_KEY_TYPES: dict[str, str] = {
    "meta": "hash", "id": "string", "wait": "list", "active": "list", "paused": "list",
    "delayed": "zset", "priority": "zset", "prioritized": "zset", "completed": "zset",
    "failed": "zset", "waiting-children": "zset", "events": "stream", "stalled": "set",
    "stalled-check": "string", "marker": "zset", "pc": "string", "limiter": "string",
    "repeat": "zset", "meta-paused": "string", "delay": "stream",
}
# Keys whose presence (with the right type) proves a queue: any one of them is enough.
ANCHORS = ("meta", "id", "wait", "active", "paused", "delayed", "priority", "prioritized",
           "completed", "failed", "waiting-children", "events", "marker", "meta-paused")
JOB_SIDE_SUFFIXES = {":lock": "lock", ":logs": "logs", ":dependencies": "flow",
                     ":processed": "flow", ":failed": "flow", ":unsuccessful": "flow"}
QUEUE_PREFIX_FAMILIES = {"metrics:": "metrics", "de:": "dedup", "dn:": "dedup",
                         "limiter:": "limiter"}
_REPEAT_JOB = r"^repeat:.+:\d+$"  # an iteration job of a repeatable / scheduler


def queue_candidates(keys: pd.Series, prefix: str) -> dict[str, list[str]]:
    """{queue name: [anchor suffixes seen]} from key names alone (types checked later)."""
    head = prefix + ":"
    rest = keys[keys.str.startswith(head)].str.slice(len(head))
    found: dict[str, list[str]] = {}
    for suffix in ANCHORS:
        tail = ":" + suffix
        names = rest[rest.str.endswith(tail)].str.slice(0, -len(tail))
        for name in names[names.str.len() > 0].unique():
            found.setdefault(str(name), []).append(suffix)
    return found


def classify(keys: pd.Series, prefix: str, queues: list[str]) -> pd.DataFrame:
    """One row per key: key, queue (NA for keys of no known queue), family, job_id.

    family is a queue-level key name (``wait``, ``events``, ...), ``job`` (a job hash),
    a job side family (``lock``, ``logs``, ``flow``), ``metrics``, ``dedup``, ``limiter``,
    ``repeat``, or ``foreign`` (under the prefix but of no queue).
    """
    head = prefix + ":"
    keys = keys.astype("str")
    rest = keys.str.slice(len(head))
    queue = pd.Series(pd.NA, index=keys.index, dtype="str")
    plain = [q for q in queues if ":" not in q]
    first = rest.str.partition(":")
    if plain:
        has_more = first[1] == ":"
        hit = first[0].isin(plain) & has_more
        queue[hit] = first[0][hit]
    # Queue names with ':' are matched by prefix, shortest first so the longest wins.
    for q in sorted((q for q in queues if ":" in q), key=len):
        queue[rest.str.startswith(q + ":")] = q
    known = queue.notna()
    # What follows "<queue>:" — vectorized for plain names, per key only for names with ':'.
    sub = first[2].where(known) if plain else pd.Series(pd.NA, index=keys.index, dtype="str")
    colon = known & queue.str.contains(":", regex=False).fillna(False).astype(bool)
    if colon.any():
        sub[colon] = [r[len(q) + 1:] for r, q in zip(rest[colon], queue[colon])]
    sub = sub[known].astype("str")
    family = pd.Series("foreign", index=keys.index, dtype="str")
    job_id = pd.Series(pd.NA, index=keys.index, dtype="str")

    fam = pd.Series("job", index=sub.index, dtype="str")
    jid = sub.copy()
    for suffix, name in JOB_SIDE_SUFFIXES.items():
        m = sub.str.endswith(suffix) & (fam == "job")
        fam[m] = name
        jid[m] = sub[m].str.slice(0, -len(suffix))
    for start, name in QUEUE_PREFIX_FAMILIES.items():
        m = sub.str.startswith(start)
        fam[m] = name
        jid[m] = pd.NA
    m = sub.str.startswith("repeat:") & ~sub.str.match(_REPEAT_JOB) & (fam == "job")
    fam[m] = "repeat"
    jid[m] = pd.NA
    m = sub.isin(list(QUEUE_KEY_TYPES))
    fam[m] = sub[m]
    jid[m] = pd.NA
    family[known] = fam
    job_id[known] = jid
    # Lean: queue and family as categories; the key name itself only where it cannot be
    # rebuilt from queue + family + job id (see key_names).
    rebuildable = family.isin(list(REBUILT))
    return pd.DataFrame({"queue": queue.astype("category"), "family": family.astype("category"),
                         "job_id": job_id, "key": keys.where(~rebuildable)})


# Families whose key name is rebuilt as <prefix>:<queue>:<job id><suffix>.
REBUILT = {"job": "", "lock": ":lock", "logs": ":logs"}


def key_names(base: str, family: str, rows: pd.DataFrame) -> list[str]:
    """Full key names of classified rows of one family (``base`` is '<prefix>:<queue>:')."""
    if family in REBUILT:
        return [base + j + REBUILT[family] for j in rows["job_id"].tolist()]
    if family in QUEUE_KEY_TYPES:
        return [base + family] * len(rows)
    return rows["key"].tolist()


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so a prefix or queue name matches literally."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def is_marker(ids: pd.Series) -> np.ndarray:
    """BullMQ 2.x-4.x marker entries in wait lists: '0' or '0:<ms>' (never a job id)."""
    s = ids.astype("str")
    return ((s == "0") | s.str.startswith("0:")).to_numpy(dtype=bool)


def isin(values: pd.Series, pool: pd.Series) -> np.ndarray:
    """values.isin(pool) for big string columns, in Arrow (pandas builds Python objects)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    v = pa.array(values.astype("str"), type=pa.large_string(), from_pandas=True)
    p = pa.array(pool.astype("str"), type=pa.large_string(), from_pandas=True)
    return pc.is_in(v, value_set=p).fill_null(False).to_numpy(zero_copy_only=False)
