"""Which key under a prefix belongs to which queue, and what it is.

Queue names and job ids may contain ':' (bull, BullMQ < 5.12.12, repeat ids), so keys are
parsed by known suffixes and known queue names, never by splitting on ':'. Everything is
vectorized over a pandas Series of key names: a big Redis holds millions of keys.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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


def arrow_text(keys) -> pa.Array:
    """Texts (a list, a Series, an Arrow array) as one Arrow array, not chunked: a Series that
    pandas keeps in Arrow is not copied, only its chunks joined."""
    if not isinstance(keys, (pa.Array, pa.ChunkedArray)):
        keys = pa.array(pd.Series(keys).astype("str"), type=pa.large_string(), from_pandas=True)
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def _mask(m) -> pa.Array:
    return pc.fill_null(m, False)


def queue_candidates(keys, prefix: str) -> dict[str, list[str]]:
    """{queue name: [anchor suffixes seen]} from key names alone (types checked later)."""
    arr = arrow_text(keys)
    head = prefix + ":"
    rest = pc.utf8_slice_codeunits(arr.filter(_mask(pc.starts_with(arr, head))), len(head))
    found: dict[str, list[str]] = {}
    for suffix in ANCHORS:
        tail = ":" + suffix
        hits = rest.filter(_mask(pc.ends_with(rest, tail)))
        for name in pc.unique(pc.utf8_slice_codeunits(hits, 0, -len(tail))).to_pylist():
            if name:
                found.setdefault(name, []).append(suffix)
    return found


def classify(keys, prefix: str, queues: list[str]) -> pd.DataFrame:
    """One row per key: queue (NA for keys of no known queue), family, job_id, key.

    family is a queue-level key name (``wait``, ``events``, ...), ``job`` (a job hash),
    a job side family (``lock``, ``logs``, ``flow``), ``metrics``, ``dedup``, ``limiter``,
    ``repeat``, or ``foreign`` (under the prefix but of no queue). ``key`` is kept only
    where the name cannot be rebuilt from the others (see ``key_names``).
    Runs in Arrow compute: millions of keys, no Python object per key.
    """
    arr = arrow_text(keys)
    null = pa.scalar(None, pa.large_string())
    rest = pc.utf8_slice_codeunits(arr, len(prefix) + 1)
    has_colon = _mask(pc.match_substring(rest, ":"))
    # the name before the first ':' and what follows it (one split: two regex replacements
    # over every key took 0.3 s a million)
    parts = pc.split_pattern(rest, ":", max_splits=1)
    first = pc.list_element(parts, 0)
    after = pc.replace_with_mask(rest, has_colon, pc.list_element(parts.filter(has_colon), 1)) \
        if pc.any(has_colon).as_py() else rest
    plain = [q for q in queues if ":" not in q]
    hit = pc.and_(has_colon, _mask(pc.is_in(first, value_set=pa.array(plain, pa.large_string()))))
    queue = pc.if_else(hit, first, null)
    sub = pc.if_else(hit, after, null)
    # Queue names with ':' are matched by prefix, shortest first so the longest wins.
    for q in sorted((q for q in queues if ":" in q), key=len):
        m = _mask(pc.starts_with(rest, q + ":"))
        queue = pc.if_else(m, pa.scalar(q, pa.large_string()), queue)
        sub = pc.if_else(m, pc.utf8_slice_codeunits(rest, len(q) + 1), sub)
    known = pc.is_valid(queue)
    fam = pc.if_else(known, pa.scalar("job", pa.large_string()), pa.scalar("foreign", pa.large_string()))
    jid = sub
    # Side keys (locks, logs, flows, metrics, dedup, repeat) all have a ':' after the queue
    # name; job hashes (nearly every key) have none. The passes that tell side keys apart
    # run on the keys with one only, and their answers go back in place.
    side = _mask(pc.match_substring(sub, ":"))
    if pc.any(side).as_py():
        s_sub, s_fam, s_jid = sub.filter(side), fam.filter(side), jid.filter(side)

        def is_job():
            return pc.equal(s_fam, "job")

        for suffix, name in JOB_SIDE_SUFFIXES.items():
            m = pc.and_(_mask(pc.ends_with(s_sub, suffix)), is_job())
            s_fam = pc.if_else(m, pa.scalar(name, pa.large_string()), s_fam)
            s_jid = pc.if_else(m, pc.utf8_slice_codeunits(s_sub, 0, -len(suffix)), s_jid)
        for start, name in QUEUE_PREFIX_FAMILIES.items():
            m = _mask(pc.starts_with(s_sub, start))
            s_fam = pc.if_else(m, pa.scalar(name, pa.large_string()), s_fam)
            s_jid = pc.if_else(m, null, s_jid)
        m = pc.and_(pc.and_(_mask(pc.starts_with(s_sub, "repeat:")),
                            pc.invert(_mask(pc.match_substring_regex(s_sub, _REPEAT_JOB)))), is_job())
        s_fam = pc.if_else(m, pa.scalar("repeat", pa.large_string()), s_fam)
        s_jid = pc.if_else(m, null, s_jid)
        fam = pc.replace_with_mask(fam, side, s_fam)
        jid = pc.replace_with_mask(jid, side, s_jid)
    m = _mask(pc.is_in(sub, value_set=pa.array(list(QUEUE_KEY_TYPES), pa.large_string())))
    fam = pc.if_else(m, sub, fam)
    jid = pc.if_else(m, null, jid)
    rebuildable = _mask(pc.is_in(fam, value_set=pa.array(list(REBUILT), pa.large_string())))
    key = pc.if_else(rebuildable, null, arr)

    def series(a, dtype):
        return pd.Series(pd.array(a, dtype="str")).astype(dtype)
    return pd.DataFrame({"queue": series(queue, "category"), "family": series(fam, "category"),
                         "job_id": series(jid, "str"), "key": series(key, "str")})


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
