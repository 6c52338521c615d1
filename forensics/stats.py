"""Robust trend statistics for the growth detectors (memory, backlog, worker heaps).

A least-squares line is pulled around by a pause, a burst or one garbage collection: a
worker that leaked 57 MB over 300 jobs, with a quiet stretch of slow jobs in the middle,
fitted only 40 MB over wall time. These are the rank-based estimators instead:

- **Theil–Sen slope**: the median of the slopes between every pair of points. Half the
  points can be outliers before it moves.
- **Kendall's tau**: how consistently the values rise (+1 every later point is higher,
  0 no order, -1 falling). It measures a monotone trend, whatever its shape.
- **late slope**: the Theil–Sen slope of the latter half of the points. A heap that warms
  up and then levels off has a clear early rise, and a late slope near zero.

Pairwise work is O(n^2): more than ``MAX_POINTS`` points are first reduced to the medians
of consecutive runs (order and level are kept).
"""
from __future__ import annotations

import numpy as np

MAX_POINTS = 400


def _reduce(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= limit:
        return x, y
    edges = np.linspace(0, len(x), limit + 1).astype(int)
    xs = np.array([np.median(x[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a])
    ys = np.array([np.median(y[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a])
    return xs, ys


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept): the median pairwise slope, and the median of y - slope * x."""
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    ok = dx != 0
    if not ok.any():
        return 0.0, float(np.median(y)) if len(y) else 0.0
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    return slope, float(np.median(y - slope * x))


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties in either variable allowed); 0.0 when undefined."""
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[j] - x[i]), np.sign(y[j] - y[i])
    n_x, n_y = float(np.count_nonzero(sx)), float(np.count_nonzero(sy))
    if not n_x or not n_y:
        return 0.0
    return float((sx * sy).sum() / np.sqrt(n_x * n_y))


def robust_trend(x, y) -> dict | None:
    """Trend of ``y`` along ``x`` (both numeric, NaN pairs dropped, sorted by x).

    Returns slope (per unit of x), tau, late_slope, fitted first/last values, span of x,
    the number of points and the observed first/last values; None with fewer than two
    points or no spread in x."""
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return None
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    span = float(x[-1] - x[0])
    if span <= 0:
        return None
    xr, yr = _reduce(x - x[0], y)
    slope, icept = theil_sen(xr, yr)
    half = xr >= np.median(xr)
    late = theil_sen(xr[half], yr[half])[0] if half.sum() >= 2 else slope
    fit = slope * xr + icept
    ss_tot = float(((yr - yr.mean()) ** 2).sum())
    r2 = 1.0 - float(((yr - fit) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0
    return {"slope": slope, "tau": round(kendall_tau(xr, yr), 3), "late_slope": late,
            "first": icept, "last": icept + slope * span, "span": span, "points": int(len(x)),
            "observed_first": float(y[0]), "observed_last": float(y[-1]), "r2": round(r2, 3)}


def rising(tr: dict | None, min_tau: float, late_share: float = 0.25) -> bool:
    """A trend that rises consistently (tau) and is still rising in its latter half."""
    return bool(tr) and tr["slope"] > 0 and tr["tau"] >= min_tau and tr["late_slope"] >= late_share * tr["slope"]
