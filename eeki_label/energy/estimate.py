"""Estimated energy per inference on a device class (method ``estimated``).

Formula ``roofline-additive-v1`` (device data 1.0.0; docs/energy-model.md), or ``roofline-weighted-v2``
(device data 2.0.0: the data term multiplied by the class's fitted bytes weight ``w``, and ``k_class``
fitted on several workloads, :mod:`eeki_label.energy.fit`):

    bytes_moved   = precision_bytes * (activation_elements + parameters / batch_size)
    effective_MAC = MACs + ridge * bytes_moved,   ridge = peak_MAC_per_s / memory_bytes_per_s
    energy_J      = k_class * effective_MAC,      k_class = anchor_J / anchor_effective_MAC
    time_s        = effective_MAC / peak_MAC_per_s   (idealised, reported for orientation only)

Compute and memory time are added rather than overlapped (a "no-overlap" roofline): networks with
little arithmetic per byte, such as depthwise-separable ones, get a lower effective MAC rate, as
measured (BRIEF §7). ``k_class`` absorbs the whole system's power and the achieved fraction of peak,
which is why it is fitted on a whole-system measurement rather than on pJ-per-operation tables.

Measured energy (RAPL, NVML, meter traces) enters through :class:`EnergyFigure` with
``method="measured"``; grading treats both alike and the label says which one it used.
"""

from __future__ import annotations

from dataclasses import dataclass

from eeki_label.catalogue import WorkProfile
from eeki_label.energy.devices import DeviceClass, bytes_moved, effective_macs
from eeki_label.energy.fit import FORMULA_ID as FIT_FORMULA_ID

ESTIMATOR_ID = "roofline-additive-v1"


@dataclass(frozen=True)
class EnergyFigure:
    """Energy of one inference on one device class, with how it was obtained."""

    device_class: str
    energy_j: float | None
    """Joules per inference; None when the model does not fit the device."""
    method: str
    """``estimated`` or ``measured``."""
    estimator: str
    fits: bool
    fit_reason: str | None
    effective_macs: float | None
    bytes_moved: float | None
    time_s: float | None
    calibration_anchor: str
    meter: str | None = None


def fit_check(dc: DeviceClass, parameters: int, activation_peak_elements: int) -> str | None:
    """Why the model cannot run on the device (weights or activations over its memory), or None."""
    reasons = []
    if dc.weights_max_bytes is not None:
        w = parameters * dc.precision_bytes
        if w > dc.weights_max_bytes:
            reasons.append(f"weights need {w} bytes at {dc.precision}, the device has {dc.weights_max_bytes}")
    if dc.activations_max_bytes is not None:
        a = activation_peak_elements * dc.precision_bytes
        if a > dc.activations_max_bytes:
            reasons.append(
                f"the largest layer working set needs {a} bytes at {dc.precision}, the device has {dc.activations_max_bytes}"
            )
    return "does not fit: " + "; ".join(reasons) if reasons else None


def estimator_id(dc: DeviceClass) -> str:
    """``roofline-additive-v1`` for single-anchor classes (device data 1.0.0), ``roofline-weighted-v2``
    for classes fitted on several workloads (the bytes term weighted by the fitted ``w``)."""
    return FIT_FORMULA_ID if dc.workloads else ESTIMATOR_ID


def estimate_inference(work: WorkProfile, dc: DeviceClass, activation_peak_elements: int = 0) -> EnergyFigure:
    anchor = dc.calibration
    reason = fit_check(dc, work.parameters, activation_peak_elements)
    if reason:
        return EnergyFigure(dc.id, None, "estimated", estimator_id(dc), False, reason, None, None, None, anchor)
    eff = effective_macs(work, dc.ridge_mac_per_byte, dc.precision_bytes, dc.assumed_batch_size, dc.bytes_weight)
    return EnergyFigure(
        device_class=dc.id,
        energy_j=dc.j_per_effective_mac * eff,
        method="estimated",
        estimator=estimator_id(dc),
        fits=True,
        fit_reason=None,
        effective_macs=eff,
        bytes_moved=bytes_moved(work, dc.precision_bytes, dc.assumed_batch_size),
        time_s=eff / dc.peak_macs_per_s,
        calibration_anchor=anchor,
    )
