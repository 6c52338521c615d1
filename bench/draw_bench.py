"""How long the report and each notebook take to draw in a browser, and how a postmortem of
many queues fares.

    .venv/bin/python bench/draw_bench.py              # make bench, make bench-quick
    .venv/bin/python bench/draw_bench.py --queues 0   # the shipped snapshots only

1. Each notebook of notebooks/ (and the report, which is the postmortem notebook) executed on
   the shipped snapshots (snapshots/example, snapshots/pdflab) and turned into one HTML page
   as `forensics report` does (plotly.js inlined once), then opened in headless Chromium
   (Debian's; the tests' harness, tests/browser.py): seconds until the load event with every
   figure drawn, and the figures drawn.
2. A many-queue incident made by the real BullMQ 5 (tests/node/manyqueues.js: in each of
   --queues queues, jobs failed by a worker, a job no worker serves, a delayed one) in a
   private redis-server: capture, diagnose, the report (HTML size, draw time) and the
   Markdown postmortem, with where the root causes and "and N more" lines stand.

Figures only: nothing here is a test. Without Chromium the draw times are left out.
"""
from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

FORENSICS = str(Path(sys.executable).parent / "forensics")
# figures drawn (a plotly div with its SVG) / figures on the page
PLOTS = ("[...document.querySelectorAll('.plotly-graph-div')].filter((d) => d.querySelector('.main-svg')).length"
         " + '/' + document.querySelectorAll('.plotly-graph-div').length")


def draw(html: Path) -> tuple[float | None, int | None, list[str]]:
    """(seconds to the load event with the figures drawn, "drawn/figures", page errors)."""
    from browser import CHROMIUM, open_page
    if not CHROMIUM:
        return None, None, []
    run = open_page(html, {"plots": PLOTS}, timeout=600)
    return run.load_s, run.values.get("plots"), run.errors


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def notebooks_table(work: Path) -> list[dict]:
    from forensics.report import render
    rows = []
    for snap in ("example", "pdflab"):
        for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
            out = work / f"{snap}-{nb.stem}.html"
            t0 = time.perf_counter()
            render(ROOT / "snapshots" / snap, out, notebook=nb)
            made = time.perf_counter() - t0
            load, plots, errors = draw(out)
            rows.append({"snapshot": snap, "page": "report" if nb.stem == "postmortem" else nb.stem,
                         "render_s": made, "mb": out.stat().st_size / 1e6, "draw_s": load, "plots": plots,
                         "errors": len(errors)})
            print(f"  {snap:<8} {rows[-1]['page']:<14} rendered in {made:5.1f} s, {rows[-1]['mb']:5.1f} MB, "
                  + (f"drawn in {load:4.1f} s ({plots} figures drawn, {len(errors)} page errors)" if load is not None
                     else "no Chromium"), flush=True)
    return rows


def many_queues(work: Path, queues: int) -> dict:
    from scale_bench import NODE_MODULES, Server
    srv = Server(None)
    try:
        t0 = time.perf_counter()
        subprocess.run(["node", str(ROOT / "tests" / "node" / "manyqueues.js"), srv.url(0), "many", str(queues)],
                       check=True, cwd=ROOT / "tests" / "node", stderr=subprocess.DEVNULL,
                       env={"PATH": "/usr/bin:/bin:/usr/local/bin", "NODE_PATH": str(NODE_MODULES)})
        made = time.perf_counter() - t0
        snap = work / "many"
        cap = timed([FORENSICS, "capture", "--redis", srv.url(0), "--prefix", "many", "--out", str(snap), "--quiet"])
    finally:
        srv.stop()
    diag = timed([FORENSICS, "diagnose", str(snap), "--format", "json"])
    html, md = work / "many.html", work / "many.md"
    rep = timed([FORENSICS, "report", str(snap), "--out", str(html)])
    mdt = timed([FORENSICS, "report", str(snap), "--format", "md", "--out", str(md)])
    load, plots, errors = draw(html)
    text = md.read_text()
    return {"queues": queues, "made_s": made, "capture_s": cap, "diagnose_s": diag, "report_s": rep,
            "report_mb": html.stat().st_size / 1e6, "draw_s": load, "plots": plots, "errors": len(errors),
            "md_s": mdt, "md_kb": len(text.encode()) / 1e3,
            "more_lines": sum(1 for line in text.splitlines() if re.search(r"and [\d,]+ more", line))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queues", type=int, default=500, help="queues of the many-queue incident (0: skip it)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="forensics-draw-"))
    print(f"draw bench, {dt.date.today().isoformat()}: each notebook rendered as `forensics report` does, then "
          "drawn by headless Chromium", flush=True)
    rows = notebooks_table(work)
    drawn = [r["draw_s"] for r in rows if r["draw_s"] is not None]
    if drawn:
        worst = max(rows, key=lambda r: r["draw_s"] or 0)
        print(f"slowest page to draw: {worst['snapshot']} {worst['page']}, {worst['draw_s']:.1f} s; "
              f"every page drawn within {max(drawn):.1f} s")
    if args.queues:
        print(f"\na postmortem of {args.queues} queues (tests/node/manyqueues.js, real BullMQ 5):", flush=True)
        m = many_queues(work, args.queues)
        print(f"  made in {m['made_s']:.1f} s; capture {m['capture_s']:.1f} s, diagnose {m['diagnose_s']:.1f} s, "
              f"report {m['report_s']:.1f} s ({m['report_mb']:.1f} MB"
              + (f", drawn in {m['draw_s']:.1f} s, {m['plots']} figures drawn" if m["draw_s"] is not None else "")
              + f"), Markdown {m['md_s']:.1f} s ({m['md_kb']:.0f} kB, {m['more_lines']} 'and N more' lines)")
        print(f"  target: HTML <= 15 MB: {'met' if m['report_mb'] <= 15 else 'MISSED'}")


if __name__ == "__main__":
    main()
