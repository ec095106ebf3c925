"""``eeki-label calibrate``: a device class for one's own hardware, fitted on measurements made here.

An auditor measures a few networks (the catalogue's references, exported with
``scripts/export_torchvision.py``, or any ONNX models) on their machine with a real meter, with the
same protocol as ``eeki-label measure`` (baseline, idle, scenario; docs/measured-energy.md), or hands
in archived records (``measure --out``). Each measured net energy per inference becomes a workload of
ONE class, profiled with the static profiler like every other workload, and the class is fitted
exactly like the shipped ones (:mod:`eeki_label.energy.fit`, formula ``roofline-weighted-v2``), with
its leave-one-workload-out error. The output is a device-data file in the format of
``data/energy/device-classes-2.0.0.json``; ``assess --device-data FILE`` grades with it and every label
names the file and its sha256 (``device_data.file``, ``device_data.sha256``).

The roofline needs the machine's peak MAC rate and memory bandwidth: they are datasheet figures the
auditor states with their source (``--peak-macs-per-s``, ``--memory-bytes-per-s``, ``--datasheet-source``);
nothing is guessed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial

from eeki_label.catalogue import Catalogue, WorkProfile
from eeki_label.energy.devices import DEVICE_PREFIX, DeviceClass, registry_from_document
from eeki_label.energy.fit import FORMULA_ID
from eeki_label.errors import UsageError
from eeki_label.resources import DataDocument

#: The bytes-weight bounds of an own class: those of device data 2.0.0, for the same reasons.
BYTES_WEIGHT_BOUNDS = {"min": 0.0, "max": 8.0}


@dataclass(frozen=True)
class MeasuredWorkload:
    """One model measured on this machine: its profile and its net energy per inference."""

    name: str
    file_name: str
    model_sha256: str
    work: WorkProfile
    energy_j: float
    ci95_j: tuple[float, float]
    runs: int
    meter: str
    record_sha256: str | None
    created_at: str
    host: str
    catalogue_model: str | None


@dataclass(frozen=True)
class MachineSpec:
    """What the auditor states about the machine (datasheet figures, with their source)."""

    class_id: str
    name: str
    reference_system: str | None
    peak_macs_per_s: float
    memory_bandwidth_bytes_per_s: float
    datasheet_source: str
    precision: str = "fp32"
    precision_bytes: int = 4
    data_version: str = "own-1"

    def check(self) -> None:
        if not (self.peak_macs_per_s > 0 and math.isfinite(self.peak_macs_per_s)):
            raise UsageError("--peak-macs-per-s must be a positive number")
        if not (self.memory_bandwidth_bytes_per_s > 0 and math.isfinite(self.memory_bandwidth_bytes_per_s)):
            raise UsageError("--memory-bytes-per-s must be a positive number")
        if not self.datasheet_source.strip():
            raise UsageError("--datasheet-source is required: every figure of a device class needs its source")
        if self.precision_bytes not in (1, 2, 4, 8):
            raise UsageError("--precision-bytes must be 1, 2, 4 or 8")
        if not self.class_id or not all(ch.isalnum() or ch in "-_." for ch in self.class_id):
            raise UsageError("--class-id: letters, digits, '-', '_' and '.' only")


def profile_work(loaded, shapes, options) -> tuple[WorkProfile, object]:
    """The static profile of a loaded model, as ``assess`` computes it."""
    from eeki_label.pipeline import work_of
    from eeki_label.profile.runtime import probe_shapes, probe_values
    from eeki_label.profile.static import check_activation_limit, static_profile, typed_graphs

    limits = dict(time_limit_s=options.runtime_time_limit_s, max_activation_bytes=options.limits.max_activation_bytes)
    typed = typed_graphs(loaded, shapes, partial(probe_shapes, loaded, shapes, **limits))
    static = static_profile(loaded, shapes, value_probe=partial(probe_values, loaded, shapes, **limits), typed=typed)
    check_activation_limit(static, options.limits.max_activation_bytes)
    return work_of(static), static


def catalogue_match(work: WorkProfile, catalogue: Catalogue | None) -> str | None:
    """The catalogue reference with exactly this profile (the auditor measured a reference), if any."""
    if catalogue is None:
        return None
    for m in catalogue.models:
        if m.work == work:
            return m.id
    return None


def workload_entry(w: MeasuredWorkload, tool_version: str) -> dict:
    e = {
        "benchmark": w.name,
        "model": w.file_name,
        "mode": "single-stream",
        "energy_j": w.energy_j,
        "source": {
            "title": f"measured with eeki-label calibrate on {w.host}",
            "meter": w.meter,
            "model_sha256": w.model_sha256,
            "record_sha256": w.record_sha256,
            "created_at": w.created_at,
            "derivation": (f"net energy per inference (scenario minus baseline power), mean of {w.runs} scenario runs; "
                           f"95 % interval {w.ci95_j[0]:.6g}..{w.ci95_j[1]:.6g} J (docs/measured-energy.md)"),
        },
        "profile": {
            "macs": w.work.macs, "activation_elements": w.work.activation_elements, "parameters": w.work.parameters,
            "source": f"eeki-label {tool_version} static profiler of {w.file_name} (sha256 {w.model_sha256[:16]}…)",
        },
    }
    if w.catalogue_model:
        e["catalogue_model"] = w.catalogue_model
    return e


def calibration_document(spec: MachineSpec, workloads: list[MeasuredWorkload], tool_version: str,
                         created_at: str) -> dict:
    """The device-data document (format of device-classes-2.0.0.json) with one class fitted on ``workloads``."""
    spec.check()
    if not workloads:
        raise UsageError("calibrate needs at least one measured model")
    names = [w.name for w in workloads]
    if len(set(names)) != len(names):
        raise UsageError(f"two measured models have the same name: {', '.join(sorted(names))}")
    first = workloads[0]
    system = spec.reference_system or first.host
    one = len(workloads) < 2
    entry = {
        "id": spec.class_id,
        "name": spec.name,
        "reference_system": system,
        "batch_mode": "batch-1",
        "assumed_batch_size": {"value": 1, "rationale": "each inference of the measurement runs one input of the "
                                                        "model's own shape; weights are read for every inference"},
        "precision": spec.precision,
        "precision_bytes": spec.precision_bytes,
        "peak_macs_per_s": {"value": spec.peak_macs_per_s, "source": spec.datasheet_source},
        "memory_bandwidth_bytes_per_s": {"value": spec.memory_bandwidth_bytes_per_s, "source": spec.datasheet_source},
        "ridge_mac_per_byte": round(spec.peak_macs_per_s / spec.memory_bandwidth_bytes_per_s, 6),
        "workloads": [workload_entry(w, tool_version) for w in workloads],
        "cross_checks": [],
        "fit": {
            "formula": FORMULA_ID,
            "method": "least squares in log space over k and the bytes weight w (eeki_label/energy/fit.py)",
            "bytes_weight_bounds": dict(BYTES_WEIGHT_BOUNDS, rationale="those of device data 2.0.0 "
                                        "(data/energy/device-classes-2.0.0.json, fit.bytes_weight_bounds)"),
            "note": ("ONE workload: w stays at its prior 1 and the class has no held-out error; measure more models"
                     if one else f"fitted on {len(workloads)} models measured on this machine"),
        },
    }
    doc = {
        "version": spec.data_version,
        "formula": f"{FORMULA_ID}, as device data 2.0.0 (docs/energy-model.md); written by eeki-label calibrate",
        "created_by": f"eeki-label {tool_version} calibrate",
        "created_at": created_at,
        "units": {"peak_macs_per_s": "MAC/s", "memory_bandwidth_bytes_per_s": "B/s", "ridge_mac_per_byte": "MAC/B",
                  "energy_j": "J"},
        "classes": [entry],
        "omitted": [],
    }
    reg = registry_from_document(DataDocument("energy", "calibrate", "", doc), None, shipped=False)
    entry["fit"]["result"] = fit_result_block(reg.get(spec.class_id))
    return doc


def fit_result_block(dc: DeviceClass) -> dict:
    """The fitted figures of a class as written into a device-data file (``fit.result``)."""
    h = dc.held_out
    return {
        "k_j_per_effective_mac": float(f"{dc.j_per_effective_mac:.6e}"),
        "bytes_weight": round(dc.bytes_weight, 6),
        "bytes_weight_at_bound": dc.bytes_weight_at_bound,
        "workloads": len(dc.workloads),
        "held_out": [
            {"workload": r.name, "measured_j": float(f"{r.measured_j:.6g}"),
             "predicted_j": float(f"{r.predicted_j:.6g}"), "error_rel": round(r.error_rel, 4)} for r in h.rows
        ],
        "held_out_median_abs_error": round(h.median_abs_error, 4) if h.rows else None,
        "held_out_worst_ratio": round(h.worst_ratio, 4) if h.rows else None,
    }


def dump_document(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def default_output_name(spec: MachineSpec) -> str:
    return f"{DEVICE_PREFIX}{spec.data_version}.json"


def measure_workloads(models, records, host_options, options, catalogue: Catalogue | None, progress=None
                      ) -> list[MeasuredWorkload]:
    """Profile every model and measure it here (``host_options``: meter and protocol), or take its archived
    record (``records[i]`` for ``models[i]``; each must be of that model file at those input shapes)."""
    from pathlib import Path

    from eeki_label.energy.host import measure_record
    from eeki_label.energy.measure import analyse, check_record_matches, load_record
    from eeki_label.model_io import load_model
    from eeki_label.profile.runtime import DEFAULT_PROBE_TIME_LIMIT_S, trial_run
    from eeki_label.profile.shapes import resolve_input_shapes

    if records and len(records) != len(models):
        raise UsageError(f"--measurements: give one record per model ({len(models)} models, {len(records)} records)")
    out = []
    for i, path in enumerate(models):
        loaded = load_model(path, options.limits)
        shapes = resolve_input_shapes(loaded.proto, options.input_shapes)
        work, _static = profile_work(loaded, shapes, options)
        if records:
            record, record_sha = load_record(records[i])
            check_record_matches(record, loaded, shapes)
        else:
            trial_run(loaded, shapes, time_limit_s=DEFAULT_PROBE_TIME_LIMIT_S, what="the trial run before the measurement")
            record, record_sha = measure_record(loaded, shapes, host_options, progress), None
        m = analyse(record)
        h = record.host
        out.append(MeasuredWorkload(
            name=Path(loaded.name).stem, file_name=loaded.name, model_sha256=loaded.sha256, work=work,
            energy_j=m.energy_j, ci95_j=tuple(m.net.ci95_j), runs=m.scenario_runs, meter=record.meter.description,
            record_sha256=record_sha, created_at=record.created_at,
            host=f"{h.cpu} ({h.logical_cpus} logical CPUs, {h.machine}, {h.platform}); {record.setup.execution_provider}",
            catalogue_model=catalogue_match(work, catalogue),
        ))
    return out
