"""Versioned rule sets (``rules/<id>-<version>.json``) and grading as pure functions.

A released rule file is never edited, only superseded by a new version; every label records the
rule set's id, version and the sha256 of the file that graded it. The rationale of each threshold is
in ``rules/README.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from eeki_label.errors import CatalogueError, UsageError
from eeki_label.resources import load_versioned, versions

CLASSES = ("A", "B", "C", "D", "E", "F", "G")
RULES_ID = "eeki-rules"


@dataclass(frozen=True)
class RuleSet:
    id: str
    version: str
    sha256: str
    file_name: str
    thresholds: tuple[tuple[str, float], ...]
    """(class, upper index bound, inclusive) for A..F, increasing; G is everything above F's bound."""
    default_task: str
    default_device_classes: tuple[str, ...]
    fidelity: dict
    raw: dict

    def threshold_map(self) -> dict[str, float | None]:
        out: dict[str, float | None] = dict(self.thresholds)
        out["G"] = None
        return out


def available_versions() -> list[str]:
    return versions("rules", f"{RULES_ID}-")


def load_rules(version: str | None = None) -> RuleSet:
    doc = load_versioned("rules", f"{RULES_ID}-", version, "rules")
    version = doc.name[len(RULES_ID) + 1:-len(".json")]
    c = doc.content
    try:
        thresholds = tuple((t["class"], float(t["max_index"])) for t in c["classes"] if t["class"] != "G")
        letters = [t[0] for t in thresholds]
        bounds = [t[1] for t in thresholds]
        if letters != list(CLASSES[:-1]) or any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])) or bounds[0] <= 0:
            raise CatalogueError(f"rule set {version}: classes must be A..F with increasing positive bounds")
        if c["version"] != version or c["id"] != RULES_ID:
            raise CatalogueError(f"rule file {doc.name} declares {c['id']} {c['version']}")
        return RuleSet(
            id=c["id"], version=c["version"], sha256=doc.sha256, file_name=doc.name, thresholds=thresholds,
            default_task=c["default_task"], default_device_classes=tuple(c["default_device_classes"]),
            fidelity=dict(c.get("fidelity", {})), raw=c,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogueError(f"rule set {version} is damaged: {e!r}") from e


def grade(index: float, thresholds: Sequence[tuple[str, float]]) -> str:
    """The class for an energy index: the first class whose upper bound the index does not exceed
    (bounds inclusive); above the last bound, G. A pure function of its arguments."""
    if not math.isfinite(index) or index < 0:
        raise ValueError(f"index must be a finite non-negative number, got {index}")
    for letter, upper in thresholds:
        if index <= upper:
            return letter
    return "G"


def class_rank(letter: str) -> int:
    """0 for A .. 6 for G."""
    try:
        return CLASSES.index(letter.upper())
    except ValueError as e:
        raise UsageError(f"unknown class {letter!r}; use one of {'..'.join((CLASSES[0], CLASSES[-1]))}") from e


def worse_than(letter: str, required: str) -> bool:
    return class_rank(letter) > class_rank(required)


T = TypeVar("T")


@dataclass(frozen=True)
class Selection:
    reference: object | None
    considered: int
    description: str
    quality_above_all: bool


def select_reference(
    candidates: Sequence[T],
    energy_j: Callable[[T], float | None],
    quality: Callable[[T], float],
    declared_quality: float | None,
    higher_is_better: bool = True,
) -> Selection:
    """The study's rule: among the task's references that do the task at least as well as the
    candidate declares, the one with the least energy on the device class. Without a declared
    quality, the least-energy reference of the task. When no reference reaches the declared
    quality, the best-quality reference is used and the selection says so."""
    usable = [c for c in candidates if energy_j(c) is not None]
    if not usable:
        return Selection(None, 0, "no catalogue reference fits this device class", False)
    if declared_quality is None:
        best = min(usable, key=lambda c: (energy_j(c), -quality(c) if higher_is_better else quality(c)))
        return Selection(best, len(usable), "least energy of the task's references (quality not declared)", False)

    def good_enough(c: T) -> bool:
        return quality(c) >= declared_quality if higher_is_better else quality(c) <= declared_quality

    qualified = [c for c in usable if good_enough(c)]
    if qualified:
        best = min(qualified, key=energy_j)
        return Selection(best, len(qualified),
                         f"least energy among references with quality >= the declared {declared_quality:g}", False)
    best = max(usable, key=quality) if higher_is_better else min(usable, key=quality)
    return Selection(best, len(usable),
                     f"no reference reaches the declared quality {declared_quality:g}; the best-quality one is used",
                     True)


@dataclass(frozen=True)
class Declaration:
    """The class printed for a measured index with a confidence interval (rule set section ``stability``)."""

    class_: str
    boundary_uncertain: bool
    classes_in_interval: tuple[str, ...]
    statement: str


def stability_tolerance(rules: RuleSet) -> float:
    """The rule set's verification tolerance (relative); 0 for rule sets without a stability section."""
    try:
        return float(rules.raw.get("stability", {}).get("verification_tolerance_rel", 0.0))
    except (TypeError, ValueError) as e:
        raise CatalogueError(f"rule set {rules.version}: stability.verification_tolerance_rel is not a number") from e


def declare_class(index: float, ci95: tuple[float, float], thresholds: Sequence[tuple[str, float]],
                  tolerance_rel: float) -> Declaration:
    """Which class to print for a measured ``index`` with interval ``ci95`` (EU verification practice,
    rules/README.md "Stability"): the class of the mean, unless the interval's upper end exceeds that
    class's upper bound by more than ``tolerance_rel``; then the class of the upper end. A pure function."""
    lo, hi = max(ci95[0], 0.0), max(ci95[1], 0.0)
    c_mean, c_lo, c_hi = grade(index, thresholds), grade(lo, thresholds), grade(hi, thresholds)
    span = CLASSES[class_rank(c_lo):class_rank(c_hi) + 1]
    bounds = dict(thresholds)
    upper = bounds.get(c_mean)
    if upper is not None and hi > upper * (1.0 + tolerance_rel):
        printed = c_hi
        why = (f"the interval's upper end {hi:.3g} exceeds class {c_mean}'s bound {upper:g} by more than the "
               f"{tolerance_rel:.0%} verification tolerance, so class {c_hi} is printed")
    else:
        printed = c_mean
        why = (f"class {c_mean} of the mean index is printed" + (
            f": the interval's upper end {hi:.3g} stays within class {c_mean}'s bound {upper:g} + "
            f"{tolerance_rel:.0%}" if upper is not None and c_hi != c_mean else ""))
    uncertain = c_lo != c_hi
    statement = (f"index {index:.3g}, 95 % interval {lo:.3g}..{hi:.3g} spans classes {'-'.join(span)}; " if uncertain
                 else f"index {index:.3g}, 95 % interval {lo:.3g}..{hi:.3g} within class {c_mean}; ") + why
    return Declaration(printed, uncertain, tuple(span), statement)


@dataclass(frozen=True)
class EstimateInterval:
    """The interval factor of an estimated energy (rule set section ``estimate_uncertainty``)."""

    factor: float
    method: str


def estimate_interval(rules: RuleSet, held_out_worst_ratio: "float | None", workloads: int) -> EstimateInterval | None:
    """``[E / f, E * f]`` for an estimate on a class with the given held-out error, or None when the rule
    set has no ``estimate_uncertainty`` section or the device data states no held-out error (1.0.0)."""
    sec = rules.raw.get("estimate_uncertainty")
    if not isinstance(sec, dict) or workloads == 0:
        return None
    try:
        floor, unvalidated = float(sec["minimum_factor"]), float(sec["unvalidated_factor"])
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogueError(f"rule set {rules.version}: estimate_uncertainty needs numeric minimum_factor and "
                             "unvalidated_factor") from e
    if floor < 1 or unvalidated < 1:
        raise CatalogueError(f"rule set {rules.version}: estimate_uncertainty factors must be at least 1")
    if held_out_worst_ratio is None:
        return EstimateInterval(unvalidated, f"no held-out error (the class is fitted on {workloads} workload): "
                                             f"E / {unvalidated:g} to E x {unvalidated:g}, the unvalidated factor of rule set section "
                                             "estimate_uncertainty")
    f = max(floor, held_out_worst_ratio)
    return EstimateInterval(f, f"the class's worst leave-one-workload-out error over {workloads} workloads: "
                               f"E / {f:.3g} to E x {f:.3g} (rule set section estimate_uncertainty)")


def estimate_boundary(index: float, factor: float, thresholds: Sequence[tuple[str, float]]) -> Declaration:
    """The printed class (the point index's: estimates are deterministic) and whether the index interval
    ``[index / f, index * f]`` spans a class boundary."""
    lo, hi = index / factor, index * factor
    c_mean, c_lo, c_hi = grade(index, thresholds), grade(lo, thresholds), grade(hi, thresholds)
    span = CLASSES[class_rank(c_lo):class_rank(c_hi) + 1]
    uncertain = c_lo != c_hi
    head = (f"estimated index {index:.3g}, interval {lo:.3g}..{hi:.3g} spans classes {'-'.join(span)}; " if uncertain
            else f"estimated index {index:.3g}, interval {lo:.3g}..{hi:.3g} within class {c_mean}; ")
    return Declaration(c_mean, uncertain, tuple(span),
                       head + f"class {c_mean} of the point index is printed (estimates are deterministic)")
