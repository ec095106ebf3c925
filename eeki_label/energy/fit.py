"""Fitting a device class on several measured workloads, and its held-out error.

Formula ``roofline-weighted-v2`` (docs/energy-model.md): for a workload with ``M`` MACs and
``bytes`` bytes moved at the class's precision and batch size,

    E = k * (M + w * ridge * bytes)

``ridge`` is the datasheet roofline ridge (peak MAC/s over memory bytes/s); ``k`` (joules per
effective MAC) and the bytes weight ``w`` are fitted by least squares in log space,

    minimise  sum_i (ln E_measured_i - ln E_predicted_i)^2   over  k > 0,  w_min <= w <= w_max.

For a fixed ``w`` the best ``ln k`` is the mean of ``ln E_i - ln W_i(w)``, so the fit is a bounded
one-dimensional search over ``w`` (a fixed grid, then golden-section refinement: deterministic, no
random start). ``w = 1`` is the additive roofline of device data 1.0.0 (compute and data movement at
datasheet rates, not overlapped); ``w`` below 1 means data movement is partly hidden behind compute
or served from caches, above 1 that the achieved bandwidth falls further below the datasheet than
the achieved MAC rate. With fewer than two workloads ``w`` cannot be identified and stays at the
prior (1).

**Held-out error.** Leave-one-workload-out: each workload is predicted by the fit on the others,
and its error is ``predicted / measured - 1``. The class's figures are the median of the absolute
errors and the worst ratio ``max(p/m, m/p)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FORMULA_ID = "roofline-weighted-v2"
W_PRIOR = 1.0
_GRID = 400
_GOLDEN_STEPS = 80


@dataclass(frozen=True)
class Point:
    """One workload reduced to what the fit needs."""

    name: str
    macs: float
    bytes_moved: float
    energy_j: float


@dataclass(frozen=True)
class Fit:
    k_j_per_effective_mac: float
    bytes_weight: float
    bytes_weight_at_bound: bool
    rms_log_error: float
    """Root mean square of ln(predicted / measured) over the fitted workloads (in-sample)."""


@dataclass(frozen=True)
class HeldOut:
    name: str
    measured_j: float
    predicted_j: float
    error_rel: float
    """predicted / measured - 1."""

    @property
    def ratio(self) -> float:
        """The error as a factor >= 1: max(p/m, m/p)."""
        r = self.predicted_j / self.measured_j
        return max(r, 1 / r)


@dataclass(frozen=True)
class HeldOutSummary:
    rows: tuple[HeldOut, ...]

    @property
    def median_abs_error(self) -> float | None:
        if not self.rows:
            return None
        v = sorted(abs(r.error_rel) for r in self.rows)
        n = len(v)
        return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2

    @property
    def worst_ratio(self) -> float | None:
        return max((r.ratio for r in self.rows), default=None)

    @property
    def worst(self) -> HeldOut | None:
        return max(self.rows, key=lambda r: r.ratio, default=None)


def _effective(p: Point, w: float, ridge: float) -> float:
    return p.macs + w * ridge * p.bytes_moved


def _log_k(points: "list[Point] | tuple[Point, ...]", w: float, ridge: float) -> float:
    return sum(math.log(p.energy_j) - math.log(_effective(p, w, ridge)) for p in points) / len(points)


def _sse(points, w: float, ridge: float) -> float:
    lk = _log_k(points, w, ridge)
    return sum((math.log(p.energy_j) - lk - math.log(_effective(p, w, ridge))) ** 2 for p in points)


def fit(points: "list[Point] | tuple[Point, ...]", ridge: float, w_min: float, w_max: float) -> Fit:
    """Least squares in log space over k and the bounded bytes weight w (see the module text)."""
    if not points:
        raise ValueError("no workloads to fit")
    if not (0 <= w_min <= W_PRIOR <= w_max):
        raise ValueError(f"bytes-weight bounds [{w_min}, {w_max}] must contain the prior {W_PRIOR}")
    for p in points:
        if p.energy_j <= 0 or p.macs < 0 or p.bytes_moved < 0 or p.macs + p.bytes_moved <= 0:
            raise ValueError(f"workload {p.name}: energy must be positive and the work non-negative")
    if len(points) < 2 or w_min == w_max:
        w = W_PRIOR if len(points) < 2 else w_min
    else:
        grid = [w_min + (w_max - w_min) * i / _GRID for i in range(_GRID + 1)]
        errs = [_sse(points, g, ridge) for g in grid]
        i = min(range(len(grid)), key=lambda j: (errs[j], abs(grid[j] - W_PRIOR)))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, _GRID)]
        g = (math.sqrt(5) - 1) / 2
        a, b = lo, hi
        c, d = b - g * (b - a), a + g * (b - a)
        for _ in range(_GOLDEN_STEPS):
            if _sse(points, c, ridge) <= _sse(points, d, ridge):
                b, d = d, c
                c = b - g * (b - a)
            else:
                a, c = c, d
                d = a + g * (b - a)
        w = (a + b) / 2
        if _sse(points, grid[i], ridge) < _sse(points, w, ridge):
            w = grid[i]
    lk = _log_k(points, w, ridge)
    rms = math.sqrt(_sse(points, w, ridge) / len(points))
    span = w_max - w_min
    at_bound = len(points) >= 2 and span > 0 and (w - w_min < 1e-6 * span or w_max - w < 1e-6 * span)
    return Fit(math.exp(lk), w, at_bound, rms)


def predict(f: Fit, p: Point, ridge: float) -> float:
    return f.k_j_per_effective_mac * _effective(p, f.bytes_weight, ridge)


def leave_one_out(points: "list[Point] | tuple[Point, ...]", ridge: float, w_min: float, w_max: float) -> HeldOutSummary:
    """Each workload predicted by the fit on all the others (empty with fewer than two workloads)."""
    if len(points) < 2:
        return HeldOutSummary(())
    rows = []
    for i, p in enumerate(points):
        rest = [q for j, q in enumerate(points) if j != i]
        e = predict(fit(rest, ridge, w_min, w_max), p, ridge)
        rows.append(HeldOut(p.name, p.energy_j, e, e / p.energy_j - 1))
    return HeldOutSummary(tuple(rows))
