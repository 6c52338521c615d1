"""Payloads at the sizes users have: the realistic-payload table.

    .venv/bin/python bench/payload_bench.py          (make bench, make bench-quick)

The dataset (bench/payload_dataset.js, the real BullMQ 5, built once and kept as an RDB
dump under bench/.data/): 360 documents carrying 50 KB-1 MB of base64 (PDF-like) with job
logs and 5-attempt stack traces, 2,000 thumbnails whose 50 KB base64 return values live on
in the events stream (~100 MB), 3,000 orders of 10-50 KB JSON with many keys, 5,000 small
webhooks. Each capture runs in its own process, in rounds (default, then --no-redact), and
the table gives medians:

  * the default capture + save and the --no-redact one: time, MB/s of payload, peak RSS,
    another client's worst PING; their ratio (target <= 1.5x);
  * the default capture's phases (the manifest's ``phases``: read, decode, redact, stream
    entries, spool) and the save, each as MB/s of payload read;
  * redaction alone over the snapshot's values: base64-heavy values (target >= 50 MB/s) and
    JSON documents with many keys (target >= 20 MB/s), beside the rules it replaced.

Figures only: nothing here is a test.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from scale_bench import DATA, NODE_MODULES, PY, ROOT, Server, measure  # noqa: E402

CAPTURE = r'''
import json, sys, time, forensics
redact = sys.argv[3] == "redact"
snap = forensics.capture(sys.argv[1], progress=False, redact=redact)
t = time.perf_counter()
snap.save(sys.argv[2])
save_s = time.perf_counter() - t
open(sys.argv[2] + ".save.json", "w").write(json.dumps({"save_s": save_s}))
print(snap.row_count("jobs"))
'''


def build(docs: int, thumbs: int, records: int) -> Path:
    dump = DATA / f"payloads-{docs}-{thumbs}-{records}.rdb"
    if dump.exists():
        print(f"dataset: {dump.relative_to(ROOT)} (delete it to rebuild)", flush=True)
        return dump
    srv = Server(None)
    try:
        t0 = time.perf_counter()
        subprocess.run(["node", str(BENCH / "payload_dataset.js"), srv.url(0), "bull", str(docs), str(thumbs),
                        str(records)], check=True, env=dict(os.environ, NODE_PATH=str(NODE_MODULES)))
        srv.save(dump)
        print(f"dataset: built in {time.perf_counter() - t0:.0f} s, saved to {dump.relative_to(ROOT)}", flush=True)
    finally:
        srv.stop()
    return dump


def capture_once(srv: Server, out: Path, mode: str) -> dict:
    """One capture + save in its own process: wall time, peak RSS, worst PING, and the
    manifest's phases with the save's time."""
    r = measure(srv, [PY, "-c", CAPTURE, srv.url(0), str(out), mode])
    phases = json.loads((out / "manifest.json").read_text())["phases"]
    r.update(phases, bytes=phases["bytes_read"], **json.loads(Path(str(out) + ".save.json").read_text()))
    return r


def redaction_alone(snap_path: Path) -> dict:
    """MB/s of Redaction.column over the snapshot's own values, by kind; and the old rules
    (Python re, kept in tests/redact_oracle.py) on one document, for contrast."""
    import pandas as pd

    import forensics
    from forensics.redact import Redaction
    snap = forensics.load(snap_path)
    pay = snap.payloads
    ev = snap.events
    rv = ev.loc[ev["event"].eq("completed") & ev["fields"].str.contains('"returnvalue"', regex=False), "fields"]
    rv = rv.map(lambda f: json.loads(f).get("returnvalue")).dropna()
    sets = {
        "base64-heavy values (documents' data, thumbnails' return values)":
            pd.concat([pay.loc[pay["queue"].astype(str) == "documents", "data"].dropna(), rv], ignore_index=True),
        "JSON documents with many keys (orders, 10-50 KB)":
            pay.loc[pay["queue"].astype(str) == "records", "data"].dropna().reset_index(drop=True),
    }
    out = {}
    for label, s in sets.items():
        s = s.astype(object)
        mb = s.map(lambda v: len(v.encode())).sum() / 1e6
        times = []
        for _ in range(3):
            red = Redaction()   # a fresh one: nothing cached from the round before
            t = time.perf_counter()
            red.column(s, "json")
            times.append(time.perf_counter() - t)
        out[label] = {"mb": mb, "s": statistics.median(times), "mb_s": mb / statistics.median(times)}
    sys.path.insert(0, str(ROOT / "tests"))
    import redact_oracle
    doc = sets["base64-heavy values (documents' data, thumbnails' return values)"].iloc[2][:250_000]
    t = time.perf_counter()
    redact_oracle.text(doc)
    out["old rules (Python re) on 250 KB of base64"] = {"mb": 0.25, "s": time.perf_counter() - t,
                                                       "mb_s": 0.25 / (time.perf_counter() - t)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="rounds of captures; the table gives the median (default 3)")
    ap.add_argument("--docs", type=int, default=360)
    ap.add_argument("--thumbnails", type=int, default=2000)
    ap.add_argument("--records", type=int, default=3000)
    args = ap.parse_args()
    dump = build(args.docs, args.thumbnails, args.records)
    srv = Server(dump)
    work = Path(tempfile.mkdtemp(prefix="forensics-bench-payloads-"))
    try:
        mem = srv.admin.info("memory")["used_memory_human"]
        runs: dict[str, list[dict]] = {"redact": [], "no-redact": []}
        for k in range(args.runs):
            for mode in runs:
                out = work / f"{mode}-{k}"
                r = capture_once(srv, out, mode)
                runs[mode].append(r)
                print(f"  round {k + 1}: {mode:<9} {r['wall']:6.1f} s  {r['bytes'] / 1e6 / r['wall']:6.0f} MB/s  "
                      f"{r['rss_mb']:6,.0f} MB  worst PING {r['worst_ping_ms']:5.1f} ms", flush=True)
        alone = redaction_alone(work / "no-redact-0")
    finally:
        srv.stop()

    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], (int, float))}
           for m, rs in runs.items()}
    for m, rs in runs.items():
        med[m]["worst_ping_ms"] = max(r["worst_ping_ms"] for r in rs)
    mb = med["redact"]["bytes"] / 1e6
    ratio = med["redact"]["wall"] / med["no-redact"]["wall"]
    print(f"\nqueue-forensics payload bench, {dt.date.today().isoformat()}: {args.docs} documents (50 KB-1 MB base64), "
          f"{args.thumbnails:,} thumbnails (50 KB base64, in the events stream), {args.records:,} orders (10-50 KB "
          f"JSON), 5,000 webhooks; Redis used_memory {mem}, {mb:,.0f} MB of replies; median of {args.runs} rounds\n")
    print(f"{'capture + save':<28} {'time':>8} {'MB/s':>8} {'peak RSS':>10} {'other PING':>11}")
    for label, m in (("default (redacted)", med["redact"]), ("--no-redact", med["no-redact"])):
        print(f"{label:<28} {m['wall']:6.1f} s {mb / m['wall']:8.0f} {m['rss_mb']:8,.0f} MB {m['worst_ping_ms']:8.1f} ms")
    print(f"\nphases of the default capture (each without the phases inside it; MB/s of payload read):")
    for ph in ("read", "decode", "redact", "events", "spool", "save", "scan", "other"):
        s = med["redact"].get(f"{ph}_s", 0.0)
        print(f"  {ph:<8} {s:6.2f} s  {mb / s if s else float('inf'):8,.0f} MB/s")
    for label, r in alone.items():
        print(f"redaction alone, {label}: {r['mb']:,.1f} MB in {r['s']:.2f} s = {r['mb_s']:,.1f} MB/s")
    b64 = next(v for k, v in alone.items() if k.startswith("base64"))
    docs = next(v for k, v in alone.items() if k.startswith("JSON"))
    checks = [("default capture <= 1.5x --no-redact", ratio <= 1.5, f"{ratio:.2f}x"),
              ("redaction >= 50 MB/s on base64-heavy values", b64["mb_s"] >= 50, f"{b64['mb_s']:,.0f} MB/s"),
              ("redaction >= 20 MB/s on JSON documents with many keys", docs["mb_s"] >= 20, f"{docs['mb_s']:,.0f} MB/s"),
              ("capture peak RSS <= 1 GB", med["redact"]["rss_mb"] <= 1024, f"{med['redact']['rss_mb']:,.0f} MB"),
              ("another client's worst wait <= 20 ms", med["redact"]["worst_ping_ms"] <= 20,
               f"{med['redact']['worst_ping_ms']:.1f} ms")]
    print("\ntargets")
    for what, ok, fig in checks:
        print(f"  {'met ' if ok else 'MISS'}  {what}: {fig}")
    DATA.mkdir(exist_ok=True)
    out = DATA / "results-payloads.json"
    out.write_text(json.dumps({"date": dt.date.today().isoformat(), "runs": runs, "median": med, "ratio": ratio,
                               "redaction_alone": alone}, indent=2, default=str) + "\n")
    print(f"\n(figures also in {out.relative_to(ROOT)})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
