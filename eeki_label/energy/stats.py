"""Statistics for measured energies: Student's t quantiles and the Welch interval of a net energy.

numpy has no t distribution and SciPy is not a dependency, so the quantile is computed here from the
regularised incomplete beta function (continued fraction, Lentz's method) by bisection; a test checks
it against tabulated values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (not necessarily integer) degrees of freedom."""
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (e.g. ``t_quantile(0.975, 9) = 2.262``)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_var(values: Sequence[float]) -> tuple[float, float]:
    """Mean and unbiased sample variance (0 for fewer than two values)."""
    n = len(values)
    m = math.fsum(values) / n
    v = math.fsum((x - m) ** 2 for x in values) / (n - 1) if n > 1 else 0.0
    return m, v


INTERVAL_METHOD = "welch-t-95"
INTERVAL_DESCRIPTION = (
    "95 % Student t interval of the mean net energy per inference; its standard error combines the "
    "scenario runs' scatter and the baseline power's uncertainty, with Welch-Satterthwaite degrees of freedom"
)


@dataclass(frozen=True)
class NetEnergy:
    """Net energy per inference (joules) over the scenario runs, with its 95 % confidence interval."""

    mean_j: float
    ci95_j: tuple[float, float]
    std_error_j: float
    dof: float
    t_quantile: float
    per_run_j: tuple[float, ...]
    baseline_power_w: float
    baseline_power_w_std: float


def net_energy_per_inference(
    scenario_energy_j: Sequence[float], scenario_duration_s: Sequence[float], scenario_inferences: Sequence[int],
    baseline_energy_j: Sequence[float], baseline_duration_s: Sequence[float],
) -> NetEnergy:
    """Net joules per inference: ``(E_scenario,i - P_baseline * t_scenario,i) / n_i`` per scenario run i,
    where ``P_baseline`` is the mean power of the baseline runs (W = J / s), i.e. the baseline energy
    over the scenario run's own duration; then the mean over the runs.

    Interval: ``mean +- t(0.975, dof) * se`` with ``se^2 = s_net^2 / n_s + tau^2 * s_P^2 / n_b``,
    ``tau`` the mean seconds per inference, ``s_net`` and ``s_P`` the sample standard deviations of
    the per-run net energies and the baseline powers, and ``dof`` by Welch-Satterthwaite. The second
    term carries the baseline's own uncertainty, which every run's subtraction shares."""
    n_s, n_b = len(scenario_energy_j), len(baseline_energy_j)
    if n_s < 2 or n_b < 2:
        raise ValueError("at least two scenario and two baseline runs are needed for an interval")
    if any(d <= 0 for d in list(scenario_duration_s) + list(baseline_duration_s)) or any(n < 1 for n in scenario_inferences):
        raise ValueError("durations must be positive and every scenario run must have inferences")
    powers = [e / t for e, t in zip(baseline_energy_j, baseline_duration_s)]
    p_b, var_p = mean_var(powers)
    net = [(e - p_b * t) / n for e, t, n in zip(scenario_energy_j, scenario_duration_s, scenario_inferences)]
    mean, var_net = mean_var(net)
    tau = math.fsum(t / n for t, n in zip(scenario_duration_s, scenario_inferences)) / n_s
    a, b = var_net / n_s, tau * tau * var_p / n_b
    se2 = a + b
    if se2 <= 0:  # identical runs: a zero-width interval
        return NetEnergy(mean, (mean, mean), 0.0, math.inf, t_quantile(0.975, math.inf), tuple(net), p_b, 0.0)
    denom = (a * a / (n_s - 1)) + (b * b / (n_b - 1))
    dof = se2 * se2 / denom
    tq = t_quantile(0.975, dof)
    se = math.sqrt(se2)
    return NetEnergy(mean, (mean - tq * se, mean + tq * se), se, dof, tq, tuple(net), p_b, math.sqrt(var_p))
