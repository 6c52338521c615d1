"""Payloads: job data, return values, stack traces and logs that bloat Redis."""
from __future__ import annotations

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
        sev = "high" if huge else "medium" if large else "low"
        by_name = hit.groupby("name", observed=True)["data_bytes"].max().sort_values(ascending=False)
        yield ctx.finding(
            "oversized-payload", sev,
            f"{len(hit)} job(s) carry more than {human_bytes(t.payload_guideline_bytes)} of data "
            f"(largest {human_bytes(float(size.max()))})", q, hit, order="data_bytes", ascending=False,
            evidence={"over_1kb_guideline": len(hit) - large - huge, "over_100kb": large, "over_1mb": huge,
                      "p50_bytes": int(size.median()), "p95_bytes": int(size.quantile(0.95)),
                      "max_bytes": int(size.max()), "total_bytes": int(size.sum()),
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
        run = m["data"].str.extract(r"([A-Za-z0-9+/]{%d,}={0,2})" % t.base64_min_chars, expand=False)
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


@detector("oversized-returnvalue", "payloads", "large return values kept in Redis")
def oversized_returnvalue(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        size = jq["returnvalue_bytes"].fillna(0)
        hit = jq[size > t.returnvalue_large_bytes]
        if not len(hit):
            continue
        yield ctx.finding(
            "oversized-returnvalue", "high" if size.max() > t.payload_huge_bytes else "medium",
            f"{len(hit)} job(s) returned more than {human_bytes(t.returnvalue_large_bytes)}", q, hit,
            order="returnvalue_bytes", ascending=False,
            evidence={"max_bytes": int(size.max()), "total_bytes": int(size[hit.index].sum())},
            remediation="Return a small result (an id, a URL, a count) and store big results elsewhere; "
                        "`removeOnComplete: {count: 1000}` bounds how many are kept.")


@detector("stacktrace-bloat", "payloads", "large or many stack traces kept per job")
def stacktrace_bloat(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        big = jq["stacktrace_bytes"].fillna(0) > t.stacktrace_max_bytes
        many = jq["stacktrace_count"].fillna(0) > t.stacktrace_max_entries
        hit = jq[big | many]
        if not len(hit):
            continue
        yield ctx.finding(
            "stacktrace-bloat", "medium" if big.any() else "low",
            f"{len(hit)} job(s) keep oversized stack traces", q, hit, order="stacktrace_bytes", ascending=False,
            evidence={"max_bytes": int(jq["stacktrace_bytes"].fillna(0).max()),
                      "max_entries": int(jq["stacktrace_count"].fillna(0).max()),
                      "total_bytes": int(jq.loc[hit.index, "stacktrace_bytes"].fillna(0).sum())},
            remediation="Set `stackTraceLimit: 3` in the job options (one trace is kept per failed "
                        "attempt) and avoid huge error messages (no payload dumps in errors).")


@detector("log-bloat", "payloads", "jobs with very many log lines")
def log_bloat(ctx: Context):
    t = ctx.t
    for q, jq in ctx.by_queue(ctx.jobs):
        hit = jq[jq["log_count"].fillna(0) > t.log_lines_max]
        if not len(hit):
            continue
        yield ctx.finding(
            "log-bloat", "medium" if hit["log_count"].max() > 10 * t.log_lines_max else "low",
            f"{len(hit)} job(s) keep more than {t.log_lines_max} log lines", q, hit,
            order="log_count", ascending=False,
            evidence={"max_lines": int(hit["log_count"].max()), "total_lines": int(hit["log_count"].sum())},
            remediation=("Log less per job (`job.log()` writes to Redis); removing finished jobs removes "
                         "their logs." if q["flavor"] == "bull" else
                         "Set `keepLogs: 100` in the job options to keep only the newest lines, and log "
                         "less through `job.log()` (it writes to Redis)."))
