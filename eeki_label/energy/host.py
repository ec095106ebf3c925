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

**Like with like.** No catalogue reference has been measured on this machine, so the grade compares
a measurement here with an estimate on another class; the label says so plainly
(``measurement.reference_basis``, a note, page 1 of the PDF).

**Structure.** The pipeline owns the flow (``pipeline.host_labels``: measure or read the record,
analyse, build the label, finish it); this module supplies the pieces and never imports the pipeline.

**Fallback.** When nothing can be measured here, the error says why in one line (exit code 50).
Only with ``--allow-estimate`` is the estimate given instead, as a normal *estimated* label of the
reference class (``device_class.id`` is that class, not ``host``) with a note naming the reason:
never silently.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from eeki_label.energy.devices import DeviceClass
from eeki_label.energy.estimate import EnergyFigure
from eeki_label.energy.measure import (
    FIRST_MEASUREMENT_RULES, METHOD_ID, MeasuredEnergy, MeasurementRules, OnnxWorkload, ProtocolConfig,
    attach_trace, build_record, load_record, load_trace_for,
)
from eeki_label.energy.meters import METER_KINDS, SAMPLE_MODES, load_trace, open_meter
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
    clock_offset_s: float | None = None
    """``--trace-offset-s`` on assess: logger clock minus tool clock (overrides the record's; None: as recorded,
    or detected from the power steps)."""
    sample_mode: str | None = None
    """``--trace-sample-mode`` on assess (overrides the record's; None: as recorded)."""
    reference_records: tuple[tuple[str, str], ...] = ()
    """``--reference-record ID=RECORD``: catalogue references measured on this machine with ``measure``;
    when given, the grade compares like with like (BRIEF section 5)."""
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    powercap_root: str | None = None
    """RAPL's sysfs root (default /sys/class/powercap); tests replay recorded trees."""

    def check(self) -> None:
        if self.meter not in METER_KINDS:
            raise UsageError(f"unknown --meter {self.meter!r}; use one of {', '.join(METER_KINDS)}")
        if self.meter == "trace" and not (self.trace or self.measurements):
            raise UsageError("--meter trace needs the meter's log: --trace FILE")
        if (self.clock_offset_s is not None or self.sample_mode is not None) and not self.trace:
            raise UsageError("--trace-offset-s and --trace-sample-mode apply to a trace: give --trace FILE")
        if self.sample_mode is not None and self.sample_mode not in SAMPLE_MODES:
            raise UsageError(f"--trace-sample-mode {self.sample_mode!r}: use one of {', '.join(SAMPLE_MODES)}")
        if self.clock_offset_s is not None and not math.isfinite(self.clock_offset_s):
            raise UsageError("--trace-offset-s must be a finite number of seconds")

    def settings_for(self, record: MeasurementRecord | None) -> TraceSettings:
        """How to read the trace: the record's settings (or this run's), with assess's overrides."""
        base = (record.trace_settings if record is not None and record.trace_settings else None) or self.trace_settings
        update = {}
        if self.clock_offset_s is not None:
            update["clock_offset_s"] = self.clock_offset_s
        if self.sample_mode is not None:
            update["sample_mode"] = self.sample_mode
        return base.model_copy(update=update)


@dataclass
class HostPlan:
    """What ``prepare`` found out before the expensive stages."""

    options: HostOptions
    record: MeasurementRecord | None = None
    record_sha256: str | None = None
    unavailable: str | None = None
    """Why nothing can be measured (only kept when --allow-estimate allows the fallback)."""
    references: tuple["MeasuredReference", ...] = ()


@dataclass(frozen=True)
class MeasuredReference:
    """A catalogue reference measured on this machine (``--reference-record ID=RECORD``)."""

    ref_id: str
    record: MeasurementRecord
    sha256: str
    energy: MeasuredEnergy


def load_reference_records(pairs, rules: MeasurementRules) -> tuple[MeasuredReference, ...]:
    from eeki_label.energy.measure import analyse

    out = []
    for ref_id, path in pairs:
        record, sha = load_record(path)
        m = analyse(record, rules)
        if m.unresolved:
            raise MeasurementRecordError(f"reference record {ref_id} ({path}): {m.unresolved}")
        out.append(MeasuredReference(ref_id, record, sha, m))
    return tuple(out)


def measured_reference(references, record: MeasurementRecord, refs, accuracy: float | None, higher_is_better: bool):
    """The least-energy reference measured on this machine that reaches the declared quality, as
    (MeasuredReference, ReferenceModel, how it was chosen), or None when none qualifies. Records of
    another machine, execution provider or meter are refused: that would not be like with like."""
    by_id = {r.id: r for r in refs}
    h = record.host
    usable = []
    for mr in references:
        if mr.ref_id not in by_id:
            raise UsageError(f"--reference-record {mr.ref_id}: not a catalogue reference of this task "
                             f"({', '.join(sorted(by_id)) or 'none'})")
        rh = mr.record.host
        same = ((rh.cpu, rh.logical_cpus, rh.machine) == (h.cpu, h.logical_cpus, h.machine)
                and mr.record.setup.execution_provider == record.setup.execution_provider
                and mr.record.meter.kind == record.meter.kind)
        if not same:
            raise MeasurementRecordError(
                f"reference record {mr.ref_id} was measured on {rh.cpu} ({mr.record.setup.execution_provider}, "
                f"{mr.record.meter.kind}), the candidate on {h.cpu} ({record.setup.execution_provider}, "
                f"{record.meter.kind}): like with like needs the same machine, provider and meter")
        ref = by_id[mr.ref_id]
        shapes = list(mr.record.setup.input_shapes.values())
        if len(shapes) == 1 and tuple(shapes[0]) != tuple(ref.input_shape):
            raise MeasurementRecordError(f"reference record {mr.ref_id} was measured at input {shapes[0]}, the "
                                         f"catalogue reference is defined at {list(ref.input_shape)}")
        ok = accuracy is None or (ref.quality >= accuracy if higher_is_better else ref.quality <= accuracy)
        if ok:
            usable.append((mr, ref))
    if not usable:
        return None
    mr, ref = min(usable, key=lambda x: x[0].energy.energy_j)
    why = (f"least measured energy among the {len(usable)} reference(s) measured on this machine"
           + (" at any quality (quality not declared)" if accuracy is None else " that reach the declared quality"))
    return mr, ref, why, len(usable)


def prepare(options: HostOptions, rules: MeasurementRules = FIRST_MEASUREMENT_RULES) -> HostPlan:
    """Check early that the host can be measured (or the record read and its trace attached), before any
    profiling."""
    options.check()
    references = load_reference_records(options.reference_records, rules)
    if options.measurements:
        record, sha = load_record(options.measurements)
        if options.trace:
            settings = options.settings_for(record)
            record = attach_trace(record, load_trace_for(record, options.trace, settings), settings, rules)
        return HostPlan(options, record, sha, references=references)
    try:
        if options.meter == "trace":
            s = options.settings_for(None)
            load_trace(options.trace, s.format, s.field, s.precision, s.offset_s, s.sample_mode)
        else:
            open_meter(options.meter, options.powercap_root).close()
    except MeterUnavailableError as e:
        if not options.allow_estimate:
            raise MeterUnavailableError(f"{e} (--allow-estimate gives the estimate instead)") from e
        return HostPlan(options, unavailable=str(e))
    return HostPlan(options, references=references)


def measure_record(loaded, shapes, options: HostOptions, progress=None) -> MeasurementRecord:
    """Run the protocol on this machine with the chosen meter and return the record. With ``--meter
    trace`` the record holds the markers and no energies yet: :func:`complete_record` reads the trace in
    a separate step, so a trace that cannot be read loses no runs."""
    from eeki_label.energy.measure import run_protocol

    meter = open_meter(options.meter, options.powercap_root)
    try:
        provider = "cuda" if meter.info.kind == "nvml" else "cpu"
        cfg = options.protocol
        workload = OnnxWorkload(loaded, shapes, cfg.seed, cfg.threads, provider)
        result = run_protocol(meter, workload, cfg, progress=progress)
        record = build_record(loaded, shapes, cfg, meter.info, result, workload.execution_provider,
                              options.settings_for(None) if meter.info.kind == "trace" else None,
                              sample_interval_s=meter.sample_interval_s)
    finally:
        meter.close()
    return record


def complete_record(record: MeasurementRecord, options: HostOptions,
                    rules: MeasurementRules = FIRST_MEASUREMENT_RULES) -> MeasurementRecord:
    """The record with the external meter's trace attached (``--trace``), or as it is."""
    if not options.trace or record.meter.kind != "trace":
        return record
    settings = options.settings_for(record)
    return attach_trace(record, load_trace_for(record, options.trace, settings), settings, rules)


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


def fallback_note(unavailable: str, ref: DeviceClass) -> str:
    return (f"host requested but not measured: {unavailable}; --allow-estimate: this is the estimate on "
            f"the reference class {ref.id!r}, not a measurement of this machine")


def reference_basis(ref: DeviceClass) -> str:
    """Like with like (BRIEF section 5), said plainly: the catalogue holds no reference measured on this
    machine, so the reference energy is an estimate on another class."""
    return (f"estimated energy of the reference on the device class {ref.id!r} ({ref.reference_system}); no "
            "reference has been measured on this machine, so this is not a like-with-like measurement")


def finish_label(label, m: MeasuredEnergy, record: MeasurementRecord, record_sha256: str | None, ref: DeviceClass,
                 estimate: EnergyFigure, rules, measured_ref=None):
    """Add the measurement's fields, the resolution gate and the stability rule to a label graded on ``host``."""
    from eeki_label.models import Label, MeasurementInfo, Repetitions
    from eeki_label.rules import declare_class, stability_tolerance

    lab = label.model_dump(by_alias=True)
    g, inf = lab["label"], lab["inference"]
    lo_j, hi_j = m.ci95_j
    tr = record.trace
    est_ref_e = lab["reference"]["energy_j"]
    basis = reference_basis(ref)
    ref_lo = ref_hi = None
    if measured_ref is not None:
        mr, cat_ref, why, considered = measured_ref
        lab["reference"].update(model_id=cat_ref.id, name=cat_ref.name, quality=cat_ref.quality,
                                energy_j=mr.energy.energy_j, macs=cat_ref.work.macs, parameters=cat_ref.work.parameters,
                                selection=why, candidates_considered=considered)
        ref_lo, ref_hi = mr.energy.ci95_j
        basis = (f"measured on this machine with the same protocol and meter: {cat_ref.id} ({mr.record.model.file_name}, "
                 f"record sha256 {mr.sha256}), {mr.energy.energy_j * 1e3:.4g} mJ per inference (95 % "
                 f"{ref_lo * 1e3:.4g} .. {ref_hi * 1e3:.4g} mJ)")
        if lab["reference"]["energy_j"]:
            g["index"] = m.energy_j / lab["reference"]["energy_j"]
    inf.update(
        energy_j=m.energy_j, energy_wh_per_1000=m.energy_j * 1000 / 3600, fits=True, fit_reason=None,
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
            trace_file=tr.file_name if tr else None,
            trace_sha256=tr.sha256 if tr else None,
            statistical_ci95_j=list(m.net.ci95_j), quantisation_j=m.quantisation_j,
            sample_interval_s=m.sample_interval_s, min_samples_per_run=m.min_samples_per_run,
            sample_mode=tr.sample_mode if tr else None, trace_integration=tr.integration if tr else None,
            clock_offset_s=tr.clock_offset_s if tr else None,
            clock_offset_source=tr.clock_offset_source if tr else None,
            resolved=m.unresolved is None, resolution_rule=m.rules_source,
            reference_basis=basis, reference_measured=measured_ref is not None,
        ).model_dump(),
    )
    notes = list(g["notes"])
    ref_e = lab["reference"]["energy_j"]
    est_e = estimate.energy_j
    if measured_ref is None:
        notes.append(
            f"host: reference energy is the calibrated estimate of the reference on {ref.id!r} ({ref.reference_system}), "
            "not measured here (no reference has been measured on this machine): the index grades the model on this "
            "machine against another class, so the machine's own efficiency enters it")
    else:
        notes.append(f"host: like with like: the reference is {basis}")
    if est_e:
        ratio = m.energy_j / est_e
        est_index = f"{est_e / est_ref_e:.3g}" if est_ref_e else "n/a"
        notes.append(f"host: the candidate's estimate on {ref.id!r} is {est_e * 1e3:.4g} mJ; measured / estimated = "
                     f"{ratio:.3g}; the estimated index on that class is {est_index}")
    notes.extend(f"measurement: {n}" for n in m.notes)
    if m.unresolved is not None:
        g.update(**{"class": None}, index=None, gradable=False, reason=f"measurement not resolved: {m.unresolved}",
                 index_ci95=[lo_j / ref_e, hi_j / ref_e] if ref_e else None)
    elif g["gradable"] and ref_e:
        index = m.energy_j / ref_e
        ci = (max(lo_j, 0.0) / ref_e, hi_j / ref_e)
        if ref_lo is not None and ref_lo > 0:  # a measured reference has an interval of its own
            ci = (max(lo_j, 0.0) / ref_hi, hi_j / ref_lo)
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


def unresolved_reason(labels) -> str | None:
    """One line naming the measured labels the resolution gate left ungraded (None: none)."""
    out = [f"{lab.device_class.id}: {lab.label.reason}" for lab in labels
           if lab.inference.measurement is not None and lab.inference.measurement.resolved is False]
    return "; ".join(out) or None


def verify_measurement(doc, record_path, trace_path=None) -> str:
    """``verify LABEL --record REC [--trace LOG]``: the record (and trace) must be the ones the measured
    label names (sha256), and the energy and interval recomputed from them must be the label's. Raises
    :class:`MeasurementMismatchError` (exit 47) otherwise; returns one line per checked label."""
    from eeki_label.energy.measure import analyse
    from eeki_label.errors import MeasurementMismatchError
    from eeki_label.rules import load_rules

    labels = [lab for lab in getattr(doc, "labels", [doc]) if lab.inference.measurement is not None]
    if not labels:
        raise MeasurementMismatchError("the label has no measured energy (inference.measurement): nothing to recompute")
    record, sha = load_record(record_path)
    lines = []
    for lab in labels:
        mi = lab.inference.measurement
        if mi.record_sha256 is None:
            raise MeasurementMismatchError(
                f"{lab.device_class.id}: the label names no record (measured during assess): archive measurements "
                "with 'eeki-label measure --out' and label them with 'assess --measurements'")
        if mi.record_sha256 != sha:
            raise MeasurementMismatchError(f"{lab.device_class.id}: record sha256 {sha[:16]}… is not the labelled "
                                           f"{mi.record_sha256[:16]}…")
        if record.model.sha256 != lab.model.sha256:
            raise MeasurementMismatchError(f"{lab.device_class.id}: the record is of another model")
        rec = record
        if record.meter.kind == "trace":
            if trace_path is None and record.trace is None:
                raise MeasurementMismatchError("the record holds no trace: give the meter's log with --trace")
            if trace_path is not None:
                settings = (record.trace_settings or TraceSettings()).model_copy(
                    update={"clock_offset_s": mi.clock_offset_s or 0.0, "sample_mode": mi.sample_mode or "auto"})
                trace = load_trace_for(record, trace_path, settings)
                if mi.trace_sha256 != trace.sha256:
                    raise MeasurementMismatchError(f"{lab.device_class.id}: trace sha256 {trace.sha256[:16]}… is not "
                                                   f"the labelled {(mi.trace_sha256 or 'none')[:16]}…")
                rec = attach_trace(record, trace, settings, MeasurementRules.of(load_rules(lab.rules.version)))
            elif record.trace.sha256 != mi.trace_sha256:
                raise MeasurementMismatchError(f"{lab.device_class.id}: the record's trace is not the labelled one")
        m = analyse(rec, MeasurementRules.of(load_rules(lab.rules.version)))
        got = (m.energy_j, *m.ci95_j)
        want = (lab.inference.energy_j, *(lab.inference.energy_j_ci95 or (math.nan, math.nan)))
        if not all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15) for a, b in zip(got, want)):
            raise MeasurementMismatchError(
                f"{lab.device_class.id}: recomputed {m.energy_j * 1e3:.6g} mJ (95 % {m.ci95_j[0] * 1e3:.6g} .. "
                f"{m.ci95_j[1] * 1e3:.6g}), the label says {want[0] * 1e3:.6g} mJ ({want[1] * 1e3:.6g} .. "
                f"{want[2] * 1e3:.6g})")
        lines.append(f"measurement: {lab.device_class.id} recomputed from record {sha[:16]}…"
                     + (f" and trace {mi.trace_sha256[:16]}…" if mi.trace_sha256 else "")
                     + f": {m.energy_j * 1e3:.6g} mJ per inference, as labelled")
    return "\n".join(lines)
