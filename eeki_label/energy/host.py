"""The ``host`` pseudo device class: this machine, measured.

``assess --device-class host`` measures the model on the machine it runs on (or takes an archived
record, ``--measurements FILE``) and grades the measured net energy per inference.

**Reference energy on ``host``.** The catalogue's references are not measured on this machine, so
the index compares the measured candidate with the *expected* energy of the reference on a
calibrated device class, the **reference class** (``--reference-class``; default
``single-board-cpu`` when the model ran on the CPU, the only CPU class of the device data (FP32,
batch 1, as onnxruntime's CPU provider runs it), and ``datacenter-gpu-batch1`` when it ran on a GPU).
That is how the EU Energy Efficiency Index works: a measured value over an expected value from a
formula (BRIEF §6). It is honest only with its caveat, which every such label states in its notes:
the index grades the model *on this machine*, so a machine less efficient than the reference class's
reference system makes the index worse. The label also gives the candidate's own estimate on the
reference class and the ratio measured / estimated, and the estimated index, so a reader sees how
much of the index is the machine.

The alternative, scaling the references by the candidate's measured / estimated ratio, was rejected:
it makes the index identical to the estimated index (the measurement cancels out), so a "measured"
class would be an estimated class in disguise and the measurement's uncertainty would never reach
the grade.

**Fallback.** When nothing can be measured here, the error says why in one line (exit code 50).
Only with ``--allow-estimate`` is the estimate given instead, as a normal *estimated* label of the
reference class (``device_class.id`` is that class, not ``host``) with a note naming the reason:
never silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from eeki_label.energy.devices import DeviceClass
from eeki_label.energy.estimate import EnergyFigure, estimate_inference
from eeki_label.energy.measure import (
    METHOD_ID, MeasuredEnergy, OnnxWorkload, ProtocolConfig, analyse, attach_trace, build_record,
    check_record_matches, load_record, load_trace_for,
)
from eeki_label.energy.meters import METER_KINDS, load_trace, open_meter
from eeki_label.energy.record import MeasurementRecord, TraceSettings
from eeki_label.energy.stats import INTERVAL_DESCRIPTION
from eeki_label.errors import MeasurementRecordError, MeterUnavailableError, UsageError

HOST_CLASS_ID = "host"
HOST_CLASS_NAME = "This machine, measured"
CPU_REFERENCE_CLASS = "single-board-cpu"
GPU_REFERENCE_CLASS = "datacenter-gpu-batch1"


@dataclass(frozen=True)
class HostOptions:
    """Options of the ``host`` class (CLI: ``--meter``, ``--allow-estimate``, ``--measurements``, ``--trace``,
    ``--reference-class``; the protocol's options are on ``eeki-label measure``)."""

    meter: str = "auto"
    allow_estimate: bool = False
    measurements: str | None = None
    """An archived record (``measure --out``) to build the label from instead of measuring."""
    trace: str | None = None
    """An external meter's trace: for ``--meter trace``, or to complete a record taken with it."""
    trace_settings: TraceSettings = field(default_factory=TraceSettings)
    reference_class: str | None = None
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    powercap_root: str | None = None
    """RAPL's sysfs root (default /sys/class/powercap); tests replay recorded trees."""

    def check(self) -> None:
        if self.meter not in METER_KINDS:
            raise UsageError(f"unknown --meter {self.meter!r}; use one of {', '.join(METER_KINDS)}")
        if self.meter == "trace" and not (self.trace or self.measurements):
            raise UsageError("--meter trace needs the meter's log: --trace FILE")


@dataclass
class HostPlan:
    """What ``prepare`` found out before the expensive stages."""

    options: HostOptions
    record: MeasurementRecord | None = None
    record_sha256: str | None = None
    unavailable: str | None = None
    """Why nothing can be measured (only kept when --allow-estimate allows the fallback)."""


def prepare(options: HostOptions) -> HostPlan:
    """Check early that the host can be measured (or the record read), before any profiling."""
    options.check()
    if options.measurements:
        record, sha = load_record(options.measurements)
        if options.trace:
            record = attach_trace(record, load_trace_for(record, options.trace))
        return HostPlan(options, record, sha)
    try:
        if options.meter == "trace":
            load_trace(options.trace, options.trace_settings.format, options.trace_settings.field,
                       options.trace_settings.precision, options.trace_settings.offset_s)
        else:
            open_meter(options.meter, options.powercap_root).close()
    except MeterUnavailableError as e:
        if not options.allow_estimate:
            raise MeterUnavailableError(f"{e} (--allow-estimate gives the estimate instead)") from e
        return HostPlan(options, unavailable=str(e))
    return HostPlan(options)


def measure_record(loaded, shapes, options: HostOptions, progress=None) -> MeasurementRecord:
    """Run the protocol on this machine with the chosen meter and return the record."""
    from eeki_label.energy.measure import run_protocol

    meter = open_meter(options.meter, options.powercap_root)
    try:
        provider = "cuda" if meter.info.kind == "nvml" else "cpu"
        cfg = options.protocol
        workload = OnnxWorkload(loaded, shapes, cfg.seed, cfg.threads, provider)
        result = run_protocol(meter, workload, cfg, progress=progress)
        record = build_record(loaded, shapes, cfg, meter.info, result, workload.execution_provider,
                              options.trace_settings if meter.info.kind == "trace" else None,
                              sample_interval_s=meter.sample_interval_s)
    finally:
        meter.close()
    if options.trace:
        s = options.trace_settings
        record = attach_trace(record, load_trace(options.trace, s.format, s.field, s.precision, s.offset_s))
    return record


def reference_class_id(options: HostOptions, record: MeasurementRecord | None) -> str:
    if options.reference_class:
        return options.reference_class
    on_gpu = record is not None and record.setup.execution_provider != "CPUExecutionProvider"
    return GPU_REFERENCE_CLASS if on_gpu else CPU_REFERENCE_CLASS


def host_device_class(ref: DeviceClass, record: MeasurementRecord) -> DeviceClass:
    """A device class for ``host`` that carries the reference class's calibration (for the reference
    energies) and describes this machine."""
    h = record.host
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in record.setup.input_shapes.items())
    return dataclasses.replace(
        ref, id=HOST_CLASS_ID, name=HOST_CLASS_NAME,
        reference_system=f"{h.cpu} ({h.logical_cpus} logical CPUs, {h.machine}, {h.platform}); "
                         f"{record.setup.execution_provider}",
        batch_mode=f"as measured ({shapes})", precision="as stored in the model",
    )


def measured_figure(m: MeasuredEnergy, record: MeasurementRecord) -> EnergyFigure:
    return EnergyFigure(
        device_class=HOST_CLASS_ID, energy_j=m.energy_j, method="measured", estimator=METHOD_ID, fits=True,
        fit_reason=None, effective_macs=None, bytes_moved=None, time_s=None,
        calibration_anchor=f"measured on this machine: {record.meter.description}", meter=record.meter.kind,
    )


def host_labels(plan: HostPlan, loaded, static, runtime, shapes, ctx, task_id, options, issued_at, step,
                **label_kwargs) -> list:
    """The ``host`` label (measured), or with ``--allow-estimate`` and nothing measurable, the estimated
    label of the reference class with a note saying why."""
    from eeki_label.pipeline import build_label, work_of

    hopts = plan.options
    work = work_of(static)
    if plan.unavailable is not None:
        ref = ctx.devices.get(reference_class_id(hopts, None))
        label = build_label(loaded, static, runtime, ref,
                            estimate_inference(work, ref, static.activation_peak_elements), ctx, task_id, options,
                            issued_at, **label_kwargs)
        note = (f"host requested but not measured: {plan.unavailable}; --allow-estimate: this is the estimate on "
                f"the reference class {ref.id!r}, not a measurement of this machine")
        return [label.model_copy(update={"label": label.label.model_copy(
            update={"notes": [note] + list(label.label.notes)})})]

    record, record_sha = plan.record, plan.record_sha256
    if record is None:
        record = measure_record(loaded, shapes, hopts, progress=step)
    else:
        check_record_matches(record, loaded, shapes)
    ref = ctx.devices.get(reference_class_id(hopts, record))
    m = analyse(record)
    dc = host_device_class(ref, record)
    label = build_label(loaded, static, runtime, dc, measured_figure(m, record), ctx, task_id, options, issued_at,
                        **label_kwargs)
    estimate = estimate_inference(work, ref, static.activation_peak_elements)
    return [finish_label(label, m, record, record_sha, ref, estimate, ctx.rules)]


def finish_label(label, m: MeasuredEnergy, record: MeasurementRecord, record_sha256: str | None, ref: DeviceClass,
                 estimate: EnergyFigure, rules):
    """Add the measurement's fields and the stability rule to a label graded on ``host``."""
    from eeki_label.models import Label, MeasurementInfo, Repetitions
    from eeki_label.rules import declare_class, stability_tolerance

    lab = label.model_dump(by_alias=True)
    g, inf = lab["label"], lab["inference"]
    lo_j, hi_j = m.net.ci95_j
    inf.update(
        domains=list(m.domains),
        repetitions=Repetitions(baseline_runs=m.baseline_runs, idle_runs=m.idle_runs, scenario_runs=m.scenario_runs,
                                inferences_per_run=m.inferences_per_run).model_dump(),
        energy_j_ci95=[lo_j, hi_j],
        interval_method=m.interval_method,
        measurement=MeasurementInfo(
            method=METHOD_ID, interval=INTERVAL_DESCRIPTION, baseline_power_w=m.net.baseline_power_w,
            baseline_power_w_std=m.net.baseline_power_w_std, idle_power_w=m.idle_power_w,
            scenario_power_w=m.scenario_power_w, degrees_of_freedom=m.net.dof,
            record_sha256=record_sha256, record_created_at=record.created_at,
            execution_provider=record.setup.execution_provider, input_seed=record.setup.seed,
            order=record.setup.order, reference_class=ref.id,
            trace_file=record.trace.file_name if record.trace else None,
            trace_sha256=record.trace.sha256 if record.trace else None,
        ).model_dump(),
    )
    notes = list(g["notes"])
    ref_e = lab["reference"]["energy_j"]
    est_e = estimate.energy_j
    notes.append(
        f"host: reference energy is the calibrated estimate of the reference on {ref.id!r} ({ref.reference_system}), "
        "not measured here; the index grades the model on this machine, so the machine's own efficiency enters it")
    if est_e:
        ratio = m.energy_j / est_e
        est_index = f"{est_e / ref_e:.3g}" if ref_e else "n/a"
        notes.append(f"host: the candidate's estimate on {ref.id!r} is {est_e * 1e3:.4g} mJ; measured / estimated = "
                     f"{ratio:.3g}; the estimated index on that class is {est_index}")
    notes.extend(f"measurement: {n}" for n in m.notes)
    if g["gradable"] and ref_e:
        index = m.energy_j / ref_e
        ci = (max(lo_j, 0.0) / ref_e, hi_j / ref_e)
        d = declare_class(index, ci, rules.thresholds, stability_tolerance(rules))
        g.update(**{"class": d.class_}, index_ci95=list(ci), boundary_uncertain=d.boundary_uncertain,
                 classes_in_interval=list(d.classes_in_interval), boundary_rule=d.statement)
        if d.boundary_uncertain:
            notes.append(f"boundary uncertain: {d.statement}")
    g["notes"] = notes
    try:
        return Label.model_validate(lab)
    except Exception as e:  # a bug: the fields above are ours
        raise MeasurementRecordError(f"cannot build the measured label: {e}") from e
