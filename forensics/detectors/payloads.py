"""Payloads: job data, return values, stack traces and logs that bloat Redis."""
from __future__ import annotations

import json

import pandas as pd

from ..summary import human_bytes
from . import Context, detector


@detector("oversized-payload", "payloads", "job data above 1 KB / 100 KB / 1 MB")
def oversized_payload(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        size = jq["data_bytes"].fillna(0)
        hit = jq[size > t.payload_guideline_bytes]
        if not len(hit):
            continue
        huge = int((size > t.payload_huge_bytes).sum())
        large = int(((size > t.payload_large_bytes) & (size <= t.payload_huge_bytes)).sum())
        weight = ctx.memory_weight(float(size.sum()), q)
        sev = "high" if weight["heavy"] else "medium" if huge or large else "low"
        by_name = hit.groupby("name", observed=True)["data_bytes"].max().sort_values(ascending=False)
        yield ctx.finding(
            "oversized-payload", sev,
            f"{len(hit)} job(s) carry more than {human_bytes(t.payload_guideline_bytes)} of data "
            f"(largest {human_bytes(float(size.max()))})", q, hit, order="data_bytes", ascending=False,
            evidence={"over_1kb_guideline": len(hit) - large - huge, "over_100kb": large, "over_1mb": huge,
                      "p50_bytes": int(size.median()), "p95_bytes": int(size.quantile(0.95)),
                      "max_bytes": int(size.max()), "total_bytes": int(size.sum()),
                      "share": weight["share"], "share_of": weight["of"],
                      "largest_by_name": {str(k): int(v) for k, v in by_name.head(5).items()}},
            remediation="Keep job data small (the guideline is < 1 KB): store the document in object "
                        "storage or a database and pass its id or URL. Redis keeps data for every "
                        "waiting and retained job, and every worker fetch moves it over the network.")


@detector("binary-payload", "payloads", "Node Buffers or long base64 inside job data")
def binary_payload(ctx: Context):
    t = ctx.t
    jobs = ctx.jobs
    b64 = pd.Series(False, index=jobs.index)
    long_enough = jobs["data_bytes"].fillna(0) >= t.base64_min_chars
    if long_enough.any():
        pay = ctx.payloads[["prefix", "queue", "job_id", "data"]]
        cand = jobs.loc[long_enough, ["prefix", "queue", "job_id"]].astype("str").reset_index()
        pay = pay.astype({"prefix": "str", "queue": "str", "job_id": "str"})
        m = cand.merge(pay, on=["prefix", "queue", "job_id"], how="left")
        # a run looked at from its start only (else each position of a run just short of the
        # threshold rescans it); base64url counts too
        run = m["data"].str.extract(r"(?<![A-Za-z0-9+/_-])([A-Za-z0-9+/_-]{%d,}={0,2})" % t.base64_min_chars,
                                    expand=False)
        # base64 of bytes mixes several characters; "xxxx…" padding (one repeated letter) is not binary
        found = run.notna() & run.map(lambda r: isinstance(r, str) and len(set(r[:4096])) >= 4)
        b64[m.loc[found.to_numpy(), "index"]] = True
    for q, jq in ctx.by_queue(jobs):
        buf = jq["data_has_buffer"].fillna(False).astype(bool)
        hit = jq[buf | b64[jq.index]]
        if not len(hit):
            continue
        yield ctx.finding(
            "binary-payload", "medium", f"{len(hit)} job(s) carry binary content in their data", q, hit,
            order="data_bytes", ascending=False,
            evidence={"node_buffers": int(buf.sum()), "base64_runs": int(b64[jq.index].sum()),
                      "bytes": int(hit["data_bytes"].fillna(0).sum())},
            remediation="A Node Buffer is stored as JSON `{\"type\":\"Buffer\",\"data\":[...]}`, about 3-4 "
                        "bytes per byte, and comes back as that object, not a Buffer; base64 adds a third. "
                        "Upload the bytes (object storage) and pass a reference.")


def big_stream_values(ev: pd.DataFrame, limit: int) -> pd.DataFrame:
    """`completed` entries of an events stream whose return value exceeds ``limit`` bytes:
    stream_id, job_id, bytes. (BullMQ copies each return value into its `completed` entry,
    where it outlives a job removed on completion.) A ``--no-data`` capture keeps the size
    as ``returnvalue_bytes`` in place of the value."""
    fields = ev["fields"]
    c = ev[ev["event"].eq("completed") & ((fields.str.len() > limit)
                                          | fields.str.contains('"returnvalue_bytes"', regex=False))]
    if not len(c):
        return pd.DataFrame({"stream_id": [], "job_id": [], "bytes": []})

    def size(text: str) -> int:
        try:
            obj = json.loads(text)
            value = obj.get("returnvalue")
        except (ValueError, AttributeError):
            return 0
        if isinstance(obj.get("returnvalue_bytes"), int):
            return obj["returnvalue_bytes"]
        return len(value.encode("utf-8", "replace")) if isinstance(value, str) else 0
    sizes = c["fields"].map(size)
    big = c[sizes > limit]
    return pd.DataFrame({"stream_id": big["stream_id"], "job_id": big["job_id"], "bytes": sizes[big.index]})


# Below this many characters a `completed` entry's return value is not parsed for the
# total weight (10,000 such entries weigh at most 10 MB: under the total threshold).
_SMALL_ENTRY = 1024


@detector("oversized-returnvalue", "payloads",
          "large return values kept in Redis (job hashes or the events stream), one by one or by their total weight")
def oversized_returnvalue(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        size = jq["returnvalue_bytes"].fillna(0)
        ev = ctx.events_of(q)
        # every return value worth counting, in the stream and in the hashes: their weight
        every = big_stream_values(ev, _SMALL_ENTRY) if len(ev) else big_stream_values(ev.iloc[0:0], 0)
        weight_bytes = int(size.sum()) + int(every["bytes"].sum())
        by_weight = weight_bytes >= t.returnvalue_total_bytes
        if by_weight:
            hit, stream = jq[size > 0], every
        else:
            hit, stream = jq[size > t.returnvalue_large_bytes], every[every["bytes"] > t.returnvalue_large_bytes]
        only_stream = stream[~stream["job_id"].isin(set(jq["job_id"]))] if len(stream) else stream
        if not len(hit) and not len(stream):
            continue
        total = int(size[hit.index].sum()) + int(stream["bytes"].sum())
        top = max(float(size.max()) if len(size) else 0.0, float(stream["bytes"].max()) if len(stream) else 0.0)
        weight = ctx.memory_weight(total, q)
        n = len(hit) + only_stream["job_id"].nunique()
        where = []
        if len(hit):
            where.append(f"{len(hit)} in job hashes")
        if len(stream):
            where.append(f"{len(stream)} copied into the events stream"
                         + (f" ({only_stream['job_id'].nunique()} only there: the jobs were removed)" if len(only_stream) else ""))
        ids = [*jq.loc[hit.index].sort_values("returnvalue_bytes", ascending=False)["job_id"].astype(str),
               *only_stream.sort_values("bytes", ascending=False)["job_id"].dropna().astype(str)]
        title = (f"return values weigh {human_bytes(total)} together, {n:,} job(s) of up to {human_bytes(top)} ("
                 if by_weight and top <= t.returnvalue_large_bytes else
                 f"{n} job(s) returned more than {human_bytes(t.returnvalue_large_bytes)} (")
        yield ctx.finding(
            "oversized-returnvalue", "high" if weight["heavy"] else "medium",
            title + "; ".join(where) + ")", q, hit,
            count=n, evidence={"max_bytes": int(top), "total_bytes": total, "judged_by": "total" if by_weight else "size",
                               "in_job_hashes": len(hit),
                               "in_events_stream": len(stream), "only_in_events_stream": int(only_stream["job_id"].nunique()),
                               "event_ids": stream.sort_values("bytes", ascending=False)["stream_id"].head(20).tolist(),
                               "share": weight["share"], "share_of": weight["of"]},
            remediation="Return a small result (an id, a URL, a count) and store big results elsewhere: the return "
                        "value is kept in the job hash of every retained job, and BullMQ also copies it into the "
                        "`completed` entry of the events stream, where it outlives `removeOnComplete`. "
                        "`removeOnComplete: {count: 1000}` and a lower `streams.events.maxLen` bound how many are kept.",
        ).with_ids(list(dict.fromkeys(ids)))


@detector("stacktrace-bloat", "payloads", "large or many stack traces kept per job")
def stacktrace_bloat(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        big = jq["stacktrace_bytes"].fillna(0) > t.stacktrace_max_bytes
        many = jq["stacktrace_count"].fillna(0) > t.stacktrace_max_entries
        hit = jq[big | many]
        if not len(hit):
            continue
        weight = ctx.memory_weight(float(jq["stacktrace_bytes"].fillna(0).sum()), q)
        yield ctx.finding(
            "stacktrace-bloat", "high" if weight["heavy"] else "medium" if big.any() else "low",
            f"{len(hit)} job(s) keep oversized stack traces", q, hit, order="stacktrace_bytes", ascending=False,
            evidence={"max_bytes": int(jq["stacktrace_bytes"].fillna(0).max()),
                      "max_entries": int(jq["stacktrace_count"].fillna(0).max()),
                      "total_bytes": int(jq.loc[hit.index, "stacktrace_bytes"].fillna(0).sum()),
                      "share": weight["share"], "share_of": weight["of"]},
            remediation="Set `stackTraceLimit: 3` in the job options (one trace is kept per failed "
                        "attempt) and avoid huge error messages (no payload dumps in errors).")


@detector("log-bloat", "payloads", "jobs with very many log lines")
def log_bloat(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        hit = jq[jq["log_count"].fillna(0) > t.log_lines_max]
        if not len(hit):
            continue
        log_bytes = ctx.family_bytes(q, ["logs"])
        weight = ctx.memory_weight(log_bytes, q)
        yield ctx.finding(
            "log-bloat", "high" if weight["heavy"] else "medium" if hit["log_count"].max() > 10 * t.log_lines_max else "low",
            f"{len(hit)} job(s) keep more than {t.log_lines_max} log lines", q, hit,
            order="log_count", ascending=False,
            evidence={"max_lines": int(hit["log_count"].max()), "total_lines": int(hit["log_count"].sum()),
                      "log_bytes": log_bytes, "share": weight["share"]},
            remediation=("Log less per job (`job.log()` writes to Redis); removing finished jobs removes "
                         "their logs." if q["flavor"] == "bull" else
                         "Set `keepLogs: 100` in the job options to keep only the newest lines, and log "
                         "less through `job.log()` (it writes to Redis)."))
