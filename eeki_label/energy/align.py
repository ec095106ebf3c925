"""Clock alignment of an external meter's trace with the run markers.

An external meter logs with its own clock; the markers are stamped with this machine's. The sign
convention everywhere (option ``--trace-offset-s``, label field ``measurement.clock_offset_s``) is
**logger clock minus tool clock**: a logger 2 s ahead has offset +2 s, and its timestamps are moved
back by 2 s before the runs are integrated.

The offset is found from the power itself. The protocol's phases draw different power (baseline, then
idle with the session loaded, then the scenario runs), so the trace steps where the markers say the
phases begin and end. For every candidate offset the samples inside the runs are grouped by phase and
the pooled within-phase variance is computed (prefix sums, so one candidate costs a few binary
searches); the true offset is where the phases are most homogeneous. This is the least-squares form of
cross-correlating the trace with the baseline/idle/scenario step pattern, with the phase levels fitted
rather than assumed.

The result is one of: *aligned* (the minimum lies within a sample interval of the offset in use),
*detected* (a clear, single minimum elsewhere), *ambiguous* (a second, separate minimum with a residual within twice the best one's: e.g. a trace
that covers two measurements), or *undetectable*
(the phases draw so nearly the same power that the steps explain less than half the variance: a
no-load trace). The caller decides what to apply (:func:`eeki_label.energy.measure.attach_trace`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

PHASES = ("baseline", "idle", "scenario")


@dataclass(frozen=True)
class OffsetScan:
    """What the trace's steps say about the clock offset (logger clock minus tool clock, seconds)."""

    status: str
    """``aligned``, ``detected``, ``ambiguous`` or ``undetectable``."""
    offset_s: float
    """Best offset relative to the timestamps as scanned (0 for ``aligned``/``undetectable``)."""
    resolution_s: float
    """Grid step of the final search: the offset is known to about this."""
    explained: float
    """Share of the in-run power variance that the phase steps explain at the best offset (0..1)."""
    second_s: float | None = None
    """For ``ambiguous``: the other offset that fits almost as well."""
    searched_s: tuple[float, float] = (0.0, 0.0)


def _msr(t: np.ndarray, c1: np.ndarray, c2: np.ndarray, starts: np.ndarray, ends: np.ndarray,
         phase_of_run: np.ndarray, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled within-phase mean squared residual, and the pooled variance ignoring phases, per delta."""
    lo = np.searchsorted(t, starts[None, :] + deltas[:, None], side="left")
    hi = np.searchsorted(t, ends[None, :] + deltas[:, None], side="right")
    n = (hi - lo).astype(float)
    s1 = c1[hi] - c1[lo]
    s2 = c2[hi] - c2[lo]
    ssr = np.zeros(len(deltas))
    n_all = n.sum(axis=1)
    s1_all = s1.sum(axis=1)
    s2_all = s2.sum(axis=1)
    level = {}
    for ph in np.unique(phase_of_run):
        m = phase_of_run == ph
        nn, a1, a2 = n[:, m].sum(axis=1), s1[:, m].sum(axis=1), s2[:, m].sum(axis=1)
        ssr += np.where(nn > 0, a2 - a1 * a1 / np.maximum(nn, 1), 0.0)
        level[int(ph)] = np.where(nn > 0, a1 / np.maximum(nn, 1), np.nan)
    n_safe = np.maximum(n_all, 1)
    flat = (s2_all - s1_all * s1_all / n_safe) / n_safe
    msr = ssr / n_safe
    # the model draws power: an offset at which the scenario runs draw less than the baseline (or the
    # idle runs) is no fit of the protocol's step pattern, however homogeneous its phases
    scen = level.get(PHASES.index("scenario"))
    if scen is not None:
        for other in (PHASES.index("baseline"), PHASES.index("idle")):
            if other in level:
                msr = np.where(scen > level[other], msr, np.inf)
    return msr, flat


def scan_offset(times_s: Sequence[float], power_w: Sequence[float], runs: Sequence[tuple[str, float, float]],
                search_s: float, sample_interval_s: float, min_explained: float = 0.5) -> OffsetScan:
    """Scan offsets in [-search_s, search_s] (restricted to those at which the trace still covers every
    run). ``runs``: (phase, start, end) in tool-clock seconds; ``times_s`` in the logger's clock."""
    t = np.asarray(times_s, dtype=float)
    p = np.asarray(power_w, dtype=float)
    p = p - float(np.mean(p))  # numerically kinder prefix sums
    c1 = np.concatenate(([0.0], np.cumsum(p)))
    c2 = np.concatenate(([0.0], np.cumsum(p * p)))
    starts = np.array([r[1] for r in runs], dtype=float)
    ends = np.array([r[2] for r in runs], dtype=float)
    phase = np.array([PHASES.index(r[0]) for r in runs])
    lo_lim = max(-search_s, t[0] - starts.min())
    hi_lim = min(search_s, t[-1] - ends.max())
    dt = max(sample_interval_s, 1e-6)
    if len(np.unique(phase)) < 2 or hi_lim < lo_lim:
        return OffsetScan("undetectable", 0.0, dt, 0.0, searched_s=(lo_lim, hi_lim))
    coarse = max(dt / 2.0, (hi_lim - lo_lim) / 20000.0)
    grid = np.arange(lo_lim, hi_lim + coarse / 2, coarse)
    if not np.any(np.isclose(grid, 0.0)) and lo_lim <= 0.0 <= hi_lim:
        grid = np.sort(np.append(grid, 0.0))
    msr, flat = _msr(t, c1, c2, starts, ends, phase, grid)
    # only offsets at which the phases' steps explain enough of the variance count: where every window
    # falls into one stretch of constant power (before or after the measurement) the phases are
    # homogeneous too, but show no steps at all
    share = np.where(flat > 0, 1.0 - msr / np.where(flat > 0, flat, 1.0), 0.0)
    msr = np.where(share >= min_explained, msr, np.inf)
    if not np.isfinite(msr).any():
        top = float(np.nanmax(np.where(np.isfinite(share), share, 0.0))) if len(share) else 0.0
        return OffsetScan("undetectable", 0.0, coarse, max(top, 0.0), searched_s=(lo_lim, hi_lim))
    i = int(np.argmin(msr))
    best, floor, pooled = float(grid[i]), float(msr[i]), float(flat[i])
    explained = 1.0 - floor / pooled if pooled > 0 else 0.0
    # refine around the minimum
    fine_step = max(dt / 8.0, 1e-6)
    fine = np.arange(best - coarse, best + coarse + fine_step / 2, fine_step)
    fine = fine[(fine >= lo_lim) & (fine <= hi_lim)]
    if len(fine):
        fm, _ = _msr(t, c1, c2, starts, ends, phase, fine)
        lowest = fm.min()
        at = fine[fm <= lowest + 1e-12 * max(1.0, abs(lowest))]
        best, floor = float((at.min() + at.max()) / 2.0), float(lowest)  # middle of the flat minimum
    depth = pooled - floor
    # the basin of the minimum: contiguous grid points within half the depth; another dip outside it
    # that fits nearly as well (residual within twice the best one's) with phase levels as distinct is a
    # second candidate
    basin = msr <= floor + 0.5 * depth
    j0 = j1 = i
    while j0 > 0 and basin[j0 - 1]:
        j0 -= 1
    while j1 < len(grid) - 1 and basin[j1 + 1]:
        j1 += 1
    outside = np.ones(len(grid), dtype=bool)
    outside[j0:j1 + 1] = False
    # (and whose phases differ about as much: a stretch of constant power makes any grouping homogeneous)
    rival = outside & (msr <= 2.0 * floor + 1e-12 * depth) & ((flat - msr) >= 0.5 * depth)
    if rival.any():
        k = int(np.flatnonzero(rival)[np.argmin(msr[rival])])
        return OffsetScan("ambiguous", best, coarse, explained, float(grid[k]), (lo_lim, hi_lim))
    if abs(best) <= dt:
        return OffsetScan("aligned", 0.0, fine_step, explained, searched_s=(lo_lim, hi_lim))
    return OffsetScan("detected", best, fine_step, explained, searched_s=(lo_lim, hi_lim))
