"""The triage notebook clicked through in a real JupyterLab: the lab server this package
installs, on a free port, and the system Chromium driven by Playwright (playwright-core, no
browser download; tests/node/jupyterlab.js). Run All, then the job inspector and a
threshold slider as a user would move them. Screenshots are kept under build/jupyterlab/."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import NODE_DIR, ROOT, free_port

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (make test installs it where it "
                                                     "runs as root)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of triage.ipynb beside the shipped example snapshot (the
    notebook's default parameter), every cell in the page (no windowing), nothing written
    outside its folder."""
    root = tmp_path_factory.mktemp("lab")
    (root / "work" / "notebooks").mkdir(parents=True)
    (root / "work" / "snapshots").mkdir()
    shutil.copy(ROOT / "notebooks" / "triage.ipynb", root / "work" / "notebooks")
    (root / "work" / "snapshots" / "example").symlink_to(ROOT / "snapshots" / "example")
    settings = root / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (root / "settings" / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (root / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(root / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"), JUPYTER_RUNTIME_DIR=str(root / "runtime"),
               JUPYTER_CONFIG_DIR=str(root / "config"), JUPYTER_DATA_DIR=str(root / "data"),
               IPYTHONDIR=str(root / "ipython"))
    env.pop("JUPYTER_PATH", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={root / 'work'}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.port_retries=0", "--allow-root"],
        stdout=subprocess.DEVNULL, stderr=open(root / "lab.log", "w"), env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"jupyter lab exited: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.25)
        else:
            raise RuntimeError(f"jupyter lab did not answer: {(root / 'lab.log').read_text()[-2000:]}")
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_triage_runs_and_its_widgets_work_in_jupyterlab(lab):
    """Run All: no error in any cell or in the page, every figure drawn. The job inspector
    shows the job picked, and after a switch to a queue whose first job has the same id ("1"),
    that queue's job (it used to keep the previous queue's). A threshold typed into a slider's
    readout re-runs the detectors and lists what the move changed."""
    base, token = lab
    shots = ROOT / "build" / "jupyterlab"
    shots.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["node", str(NODE_DIR / "jupyterlab.js"), base, token, "notebooks/triage.ipynb", str(shots)],
                         cwd=NODE_DIR, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, CHROMIUM=CHROMIUM, INSPECT='["bull:backlog", "legacy:timer", "1"]',
                                  SLIDER="max_attempts=1"))
    seen = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
    assert res.returncode == 0 and "failure" not in seen, (seen.get("failure"), res.stderr[-2000:])
    assert seen["errors"] == [] and seen["cell_errors"] == [], seen
    assert seen["code_cells"] >= 10 and seen["figures_expected"] >= 1
    assert seen["figures_drawn"] >= seen["figures_expected"] and seen["widgets_drawn"] >= 5 and not seen["widget_errors"]
    assert seen["inspector_a"] == "bull:backlog / job 1"
    assert seen["inspector_b"] == "legacy:timer / job 1" and seen["inspector_b_job"].split("·")[0].strip() == "1"
    assert (seen["slider"], seen["slider_before"], seen["slider_after"]) == ("max_attempts", "10", "1")
    new = int(seen["threshold_output"].split(" new")[0].rsplit("(", 1)[1])
    assert new > 0 and "unbounded-attempts" in seen["threshold_output"]
    assert all((shots / f"jupyterlab-{n}.png").stat().st_size > 10_000 for n in ("run-all", "job-inspector", "threshold"))
