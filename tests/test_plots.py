"""Plot builders: readable figures from a real snapshot, a clear message on an empty one."""
from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import pytest

import forensics
from forensics import plots

EXAMPLE = Path(__file__).resolve().parent.parent / "snapshots" / "example"


@pytest.fixture(scope="module")
def example():
    return forensics.load(EXAMPLE)


@pytest.fixture(scope="module")
def empty(redis_server):
    return forensics.capture(redis_server.url(0), prefix="no-queues-here")


@pytest.mark.parametrize("name", sorted(plots.FIGURES))
def test_figure_from_the_example_incident(example, name):
    fig = plots.FIGURES[name](example)
    assert isinstance(fig, go.Figure)
    assert fig.layout.title.text and len(fig.data) >= 1
    if name != "memory_breakdown":  # a treemap has no axes
        assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


@pytest.mark.parametrize("name", sorted(plots.FIGURES))
def test_figure_says_why_it_is_empty(empty, name):
    fig = plots.FIGURES[name](empty)
    assert len(fig.data) == 0 and fig.layout.annotations[0].text.startswith(("no ", "memory was not"))


def test_figures_carry_the_incident(example):
    states = {t.name for t in plots.jobs_by_state(example).data}
    assert {"completed", "failed", "active", "delayed", "paused"} <= states
    timeline = {t.name for t in plots.active_timeline(example).data}
    assert {"running, lock gone", "running, lock held"} <= timeline      # convert vs render
    errors = plots.error_fingerprints(example).data[0]
    assert "upstream <n> for user <id>" in list(errors.y)
    lines = [s.x0 for s in plots.payload_sizes(example).layout.shapes]
    assert lines == [1024, 100 * 1024, 1024 * 1024]


def test_user_text_cannot_break_out_of_the_html(example):
    jobs = example.jobs.copy()
    jobs["name"] = jobs["name"].astype("str")
    jobs.loc[jobs.index[0], "name"] = "</script><script>alert(1)</script>"
    snap = forensics.Snapshot({**example._tables, "jobs": jobs}, example.manifest)
    html = plots.payload_sizes(snap).to_html(include_plotlyjs=False)
    assert "</script><script>alert(1)" not in html


def test_attempts_chart_stays_light_whatever_the_counts(example):
    """The example holds a job with 1,131 attempts: the chart has one bar per count up to 10
    and buckets beyond (at most 16 categories), not a tick per attempt count (a thousand
    labels froze a JupyterLab tab for ~50 s)."""
    fig = plots.attempts_histogram(example)
    cats = fig.layout.xaxis.categoryarray
    assert "> 1,000" in cats and len(cats) <= 16
    assert {x for t in fig.data for x in t.x} <= set(cats)
    assert sum(sum(t.y) for t in fig.data) == int(example.jobs["attempts_made"].notna().sum())
