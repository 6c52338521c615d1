"""`forensics scan` benchmark: a source tree of --files JS/TS files (default 10,000), made
from the test fixtures (tests/fixtures/code: Bull, BullMQ, TypeScript, NestJS) with their
queue names varied, plus the same number of node_modules files that must be skipped. Prints
files/s, MB/s, sites and findings, and peak RSS.

    .venv/bin/python bench/scan_bench.py [--files 10000]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "code"


def make_tree(folder: Path, n: int) -> int:
    sources = [p for p in FIX.rglob("*") if p.suffix in (".js", ".ts") and p.is_file()]
    texts = [(p.suffix, p.read_text()) for p in sources]
    (folder / "package.json").write_text((FIX / "app" / "package.json").read_text())
    size = 0
    for i in range(n):
        suffix, text = texts[i % len(texts)]
        d = folder / "src" / f"m{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        body = text.replace("'conversion'", f"'conversion{i}'").replace("'export'", f"'export{i}'")
        (d / f"f{i}{suffix}").write_text(body)
        size += len(body)
        dep = folder / "node_modules" / f"dep{i // 100}"
        dep.mkdir(parents=True, exist_ok=True)
        (dep / f"index{i}.js").write_text(body)
    return size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    args = ap.parse_args()
    import forensics
    tmp = Path(tempfile.mkdtemp(prefix="scan-bench-"))
    try:
        size = make_tree(tmp, args.files)
        t0 = time.perf_counter()
        r = forensics.scan(tmp)
        dt = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"forensics scan: {r.files:,} files ({size / 1e6:.1f} MB; {args.files:,} in node_modules skipped) "
              f"in {dt:.1f} s: {r.files / dt:,.0f} files/s, {size / 1e6 / dt:.1f} MB/s; "
              f"{len(r.sites):,} sites, {len(r.findings):,} findings; peak RSS {rss:,.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
