"""What a user gets from `pip install .` (not editable): the wheel carries the notebooks and
the report template, `forensics --version` answers, and `forensics report` renders the
postmortem from the installed package, far from the repository, printing nothing but its path.
And `make setup` installs the pinned set that the tests passed with."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_notebooks_and_template(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        assert f"forensics/notebooks/{nb.name}" in names
    assert "forensics/templates/report/forensics_report.html.j2" in names


def test_version_and_report_from_the_installed_package(installed, example_report):
    _, tmp, env = installed
    where = subprocess.run([sys.executable, "-c", "import forensics; print(forensics.__file__)"],
                           capture_output=True, text=True, cwd=tmp, env=env)
    assert where.stdout.strip().startswith(str(tmp / "site")), where   # not the repository's copy
    version = subprocess.run([sys.executable, "-m", "forensics", "--version"], capture_output=True, text=True,
                             cwd=tmp, env=env)
    assert re.fullmatch(r"queue-forensics \d+\.\d+\.\d+\S*\n", version.stdout), version
    res, out = example_report   # rendered by the installed package, from its own folder
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out) and res.stderr == ""
    assert "stalled-active" in out.read_text()


def test_make_setup_installs_the_pinned_set():
    """Every package queue-forensics[test] needs, down its whole dependency tree, is pinned in
    constraints.txt, and this virtualenv holds exactly that version (make setup installs with
    -c constraints.txt; `make lock` rewrites it)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[norm(name.strip())] = version.strip()
    needed, todo = {}, [("queue-forensics", {"test"})]
    while todo:
        name, extras = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # a marker-excluded or optional package that is not installed
        if norm(name) in needed and not extras:
            continue
        needed[norm(name)] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                continue
            todo.append((req.name, set(req.extras)))
    needed.pop("queue-forensics")
    for name in ("pandas", "redis", "pyarrow", "plotly", "papermill", "nbconvert", "pytest", "hypothesis"):
        assert name in needed
    unpinned = sorted(n for n in needed if n not in pins)
    assert not unpinned, f"needed but not pinned in constraints.txt (run make lock): {unpinned}"
    wrong = {n: (v, pins[n]) for n, v in needed.items() if pins[n] != v}
    assert not wrong, f"installed versions differ from constraints.txt (run make setup): {wrong}"
