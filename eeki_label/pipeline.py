"""The only module that knows the order of the stages.

``assess(path, options) -> LabelSet``: load and check -> resolve input shapes -> static profile ->
runtime profile -> per device class: energy, reference, grade -> one complete Label per class.
No printing, no files: the CLI renders and writes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

import onnx

from eeki_label import __version__
from eeki_label.catalogue import Catalogue, WorkProfile, load_catalogue
from eeki_label.energy.devices import DeviceClass, DeviceRegistry, load_devices
from eeki_label.energy.estimate import EnergyFigure, estimate_inference
from eeki_label.energy import host as _host
from eeki_label.energy.host import HOST_CLASS_ID, HostOptions
from eeki_label.energy.measure import MeasurementRules
from eeki_label.model_io import LoadedModel, LoadLimits, load_model, load_related
from eeki_label.models import (
    CatalogueInfo, DeviceClassInfo, DeviceDataInfo, IfBranchInfo, InferenceEnergy, Label, LabelGrade, LabelSet, ModelInfo,
    QualityInfo, ReferenceInfo, RulesInfo, RuntimeInfo, TaskInfo, TensorSpec, ToolInfo,
)
from eeki_label.profile.runtime import (
    DEFAULT_RUNS, RuntimeProfile, probe_shapes, probe_values, runtime_profile, trial_run,
)
from eeki_label.profile import decoder
from eeki_label.profile.shapes import Shape, resolve_input_shapes
from eeki_label.profile.static import StaticProfile, check_activation_limit, static_profile, typed_graphs
from eeki_label.rules import RuleSet, Selection, estimate_boundary, estimate_interval, grade, load_rules, select_reference
from eeki_label.recycle import RecyclingOptions, assess_recycling, load_base, recycling_info, with_coded_update
from eeki_label.errors import UsageError
from eeki_label.tasks import (
    TaskResolution, check_shapes, check_task_id, data_inputs, dynamic_axes, resolve_task, shape_plan,
)
from eeki_label.transfer.stage import TransferOptions, TransferOutcome, assess_transfer, delta_update_bytes

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AssessOptions:
    device_classes: tuple[str, ...] = ()
    """Device class ids, or ("all",); empty means the rule set's default."""
    task: str | None = None
    """Declared task id (``--task``); None: detected from the model's signature (eeki_label/tasks.py)."""
    accuracy: float | None = None
    """Declared quality in the task's metric: a claim by the issuer, range-checked against the metric."""
    inputs: "str | os.PathLike[str] | None" = None
    """``--inputs FILE.npz``: real inputs (keyed by input name) for the runtime profile, the probes and, unless
    calibration data is given, the NNC fidelity check; their shapes set the assessed shapes."""
    accuracy_evidence: "str | os.PathLike[str] | None" = None
    """A file backing the declared quality (any format): its sha256 is recorded in the label."""
    input_shapes: dict[str, Shape] = field(default_factory=dict)
    runs: int = DEFAULT_RUNS
    threads: int | None = None
    seed: int = 0
    rules_version: str | None = None
    catalogue_version: str | None = None
    device_data: str | None = None
    """Device data: a shipped version ("1.0.0"), an own file (``eeki-label calibrate``), or None for the newest."""
    limits: LoadLimits = LoadLimits()
    runtime_time_limit_s: float | None = 600.0
    issued_at: str | None = None
    """Fixed issue time (ISO 8601) for reproducible documents; default: now (UTC)."""
    issuer: str | None = None
    """Who issues the label (recorded as ``issuer``); None: not stated."""
    base: "str | os.PathLike[str] | None" = None
    """Declared pretrained base model (``--base``): loaded with the same checks and limits as the model."""
    recycling: RecyclingOptions = RecyclingOptions()
    """Training assumptions for the recycling section (None fields: the rule set's defaults)."""
    transfer: TransferOptions = TransferOptions()
    """The NNC transfer stage (transfer/stage.py); ``TransferOptions(enabled=False)`` skips it."""
    host: "HostOptions | None" = None
    """Options of the ``host`` device class (this machine, measured; energy/host.py); None: defaults."""
    prompt_tokens: "int | None" = None
    """Cached decoders: prompt tokens of one query (None: the rule set's ``decoder`` preset)."""
    output_tokens: "int | None" = None
    """Cached decoders: output tokens of one query (None: the rule set's ``decoder`` preset)."""
    length_preset: "str | None" = None
    """Cached decoders: the rule set's length preset (``default``, ``short``, ``long``; None: its default)."""


@dataclass(frozen=True)
class Context:
    """The versioned data a label is graded with."""

    rules: RuleSet
    catalogue: Catalogue
    devices: DeviceRegistry


def load_context(rules_version: str | None = None, catalogue_version: str | None = None,
                 device_data: str | None = None) -> Context:
    catalogue = load_catalogue(catalogue_version)
    return Context(load_rules(rules_version), catalogue, load_devices(catalogue, device_data))


def work_of(profile: StaticProfile) -> WorkProfile:
    return WorkProfile(profile.macs, profile.activation_elements, profile.parameters)


@dataclass(frozen=True)
class Assessment:
    """Everything ``assess`` produces: the labels and the artefacts an auditor may want to keep."""

    labels: LabelSet
    transfer: TransferOutcome | None
    """The NNC outcome, with the bitstream(s) that ``eeki-label decode`` turns back into a model."""


def assess(path, options: AssessOptions = AssessOptions(), progress: Progress | None = None) -> LabelSet:
    """Assess an ONNX model file; raises :class:`eeki_label.errors.EekiError` on bad input."""
    return run_assessment(path, options, progress).labels


def run_assessment(path, options: AssessOptions = AssessOptions(), progress: Progress | None = None) -> Assessment:
    """As :func:`assess`, returning the artefacts too (the NNC bitstream)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="eeki-inputs-") as scratch:
        return _run_assessment(path, options, progress, scratch)


def _given_inputs(options: AssessOptions, loaded: LoadedModel) -> dict:
    """``--inputs``: the arrays keyed by real input name (checked for shape after shapes are resolved)."""
    from eeki_label.profile.shapes import graph_inputs
    from eeki_label.transfer.stage import load_calibration

    arrays = load_calibration(options.inputs, what="--inputs")
    known = {vi.name for vi in graph_inputs(loaded.proto)}
    extra = sorted(set(arrays) - known)
    if extra:
        raise UsageError(f"--inputs {os.path.basename(os.fspath(options.inputs))}: arrays {', '.join(map(repr, extra))} "
                         f"are not inputs of the model (it has: {', '.join(sorted(known))})")
    return arrays


def _run_assessment(path, options: AssessOptions, progress: Progress | None, scratch: str) -> Assessment:
    step = progress or (lambda name, done, total: None)
    ctx = load_context(options.rules_version, options.catalogue_version, options.device_data)
    if options.task is not None:
        check_task_id(options.task)
        declared_task = ctx.catalogue.find(options.task)
        if declared_task is not None and options.accuracy is not None:
            declared_task.check_quality(options.accuracy)  # before the expensive stages
    if options.accuracy is not None and options.accuracy != options.accuracy:
        raise UsageError("--accuracy must be a number")
    evidence = _evidence(options.accuracy_evidence) if options.accuracy_evidence is not None else None
    requested = options.device_classes or (
        (HOST_CLASS_ID,) if options.host and options.host.measurements else ctx.rules.default_device_classes)
    others = tuple(c for c in requested if c != HOST_CLASS_ID)
    classes = ctx.devices.select(others) if others else ()
    # host: check the meter (or read the record) before the expensive stages
    host_plan = (_host.prepare(options.host or HostOptions(), MeasurementRules.of(ctx.rules))
                 if HOST_CLASS_ID in requested else None)
    training_devices = ctx.devices.with_shipped_fallback(ctx.catalogue)
    if options.recycling.training_device_class:
        training_devices.get(options.recycling.training_device_class)  # unknown class: fail early

    step("load", 0, 1)
    loaded = load_model(path, options.limits)
    base = load_base(options.base, options.limits) if options.base is not None else None
    previous = (load_related(options.transfer.previous, options.limits, "previous version (--previous)")
                if options.transfer.enabled and options.transfer.previous is not None else None)
    task = resolve_task(ctx.catalogue, loaded.proto, options.task, ctx.rules.default_task)
    if task.task is not None and options.accuracy is not None:
        task.task.check_quality(options.accuracy)
    plan = shape_plan(task.task, loaded.proto)
    signature = decoder.detect(loaded.proto)
    dprof = None
    if signature is not None and options.inputs is not None:
        raise UsageError("--inputs: a decoder with a KV cache is fed generated token ids per step; drop --inputs")
    given = _given_inputs(options, loaded) if options.inputs is not None else {}
    if signature is not None:  # a decoder with a KV cache: one query = prefill + decode steps (profile/decoder.py)
        lengths = decoder.lengths_from_rules(ctx.rules.raw, options.length_preset, options.prompt_tokens,
                                             options.output_tokens)
        shapes = decoder.step_shapes(loaded.proto, signature, 0, lengths.prompt_tokens, options.input_shapes)
    else:
        overrides = {**{k: tuple(v.shape) for k, v in given.items()}, **options.input_shapes}
        shapes = resolve_input_shapes(loaded.proto, overrides, plan.defaults)
    given_path = None
    if given:
        import numpy as np

        from eeki_label.profile.inputs import check_given_inputs

        given_path = os.path.join(scratch, "inputs.npz")
        np.savez(given_path, **check_given_inputs(given, loaded.proto, shapes,
                                                  os.path.basename(os.fspath(options.inputs))))
    step("static profile", 0, 1)
    limits = dict(time_limit_s=options.runtime_time_limit_s, max_activation_bytes=options.limits.max_activation_bytes,
                  given_inputs=given_path)
    probe = partial(probe_shapes, loaded, shapes, **limits)
    value_probe = partial(probe_values, loaded, shapes, **limits)
    typed = typed_graphs(loaded, shapes, probe, value_probe)  # shape inference once, for the static profile and recycling
    static = static_profile(loaded, shapes, value_probe=value_probe, typed=typed)
    if signature is not None:
        def profile_at(at_shapes):
            if at_shapes == shapes:
                return static
            vp = partial(probe_values, loaded, at_shapes, **limits)
            return static_profile(loaded, at_shapes, value_probe=vp, typed=typed_graphs(
                loaded, at_shapes, partial(probe_shapes, loaded, at_shapes, **limits), vp))
        dprof = decoder.profile_decoder(loaded, signature, lengths, profile_at, options.input_shapes)
        static = dprof.query_static()
    check_activation_limit(static, options.limits.max_activation_bytes)  # before anything else runs the model
    graded = _graded_work(loaded, shapes, static, task, plan, options, limits, evidence)
    if dprof is not None:
        graded = replace(graded, query_lengths=(dprof.lengths.prompt_tokens, dprof.lengths.output_tokens))
    step("recycling", 0, 1)
    # one update figure: the update against the base is the transfer stage's delta when it codes one
    delta_ref = previous if previous is not None else (
        base if base is not None and options.recycling.update_codec == "auto" else None)
    shared_delta = (options.transfer.enabled and base is not None and delta_ref is not None
                    and delta_ref.sha256 == base.sha256 and options.recycling.update_codec == "auto")
    # the structural match (no --base) looks among the references of the model's own task when it has some
    candidates = [m for m in ctx.catalogue.models if m.task == task.id] if task.id in ctx.catalogue.tasks else []
    recycled = assess_recycling(
        loaded, shapes, work_of(static), base, ctx.rules.raw, candidates or ctx.catalogue.models, training_devices,
        replace(options.recycling, update_codec="deferred") if shared_delta else options.recycling,
        activation_peak_elements=static.activation_peak_elements, subgraph_runs=dict(static.subgraph_runs), typed=typed,
    )
    recycling = recycling_info(recycled, static.weight_bytes)
    runtime = None
    if options.runs > 0:
        runtime = runtime_profile(
            loaded, shapes, runs=options.runs, threads=options.threads, seed=options.seed,
            time_limit_s=options.runtime_time_limit_s, max_activation_bytes=options.limits.max_activation_bytes,
            given_inputs=given_path, progress=lambda done, total: step("runtime profile", done, total),
        )
    decode_run = None
    if dprof is not None and options.runs > 0:
        step("decode run", 0, 1)
        decode_run = decoder.runtime_decode(loaded, signature, dprof.lengths, options.input_shapes,
                                            time_limit_s=options.runtime_time_limit_s,
                                            max_activation_bytes=options.limits.max_activation_bytes, seed=options.seed)
    issued_at = options.issued_at or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    labels = []
    for dc in classes:
        if dprof is None:
            labels.append(build_label(loaded, static, runtime, dc, estimate_inference(
                work_of(static), dc, static.activation_peak_elements), ctx, graded, options, issued_at,
                recycling=recycling))
        else:
            qe = decoder.query_energy(dprof, dc, estimate_inference)
            labels.append(with_query_figures(build_label(loaded, static, runtime, dc, qe.query, ctx, graded, options,
                                                         issued_at, recycling=recycling), dprof, qe, dc))
    # Live measurement (host) and the NNC stage run the model in this process, where the time limit and
    # the memory cap cannot be enforced: unless the sandboxed runtime profile has shown that the model
    # ends within them, a sandboxed trial run does first.
    bounded = [runtime is not None]

    def prove_bounded(before: str) -> None:
        if not bounded[0]:
            trial_run(loaded, shapes, time_limit_s=options.runtime_time_limit_s,
                      max_activation_bytes=options.limits.max_activation_bytes, what=f"the trial run before {before}",
                      given_inputs=given_path)
            bounded[0] = True

    if host_plan is not None:
        if host_plan.record is None and host_plan.unavailable is None:
            prove_bounded("the measurement")
        labels += host_labels(host_plan, loaded, static, runtime, shapes, ctx, graded, options, issued_at, step,
                              recycling=recycling)
    transfer = None
    if options.transfer.enabled:
        prove_bounded("the NNC transfer stage")
        step("NNC transfer", 0, 1)
        # A codec failure never costs the label: the transfer section then says what failed and why
        # (transfer/stage.py); the artefacts the user asked for (--bitstream) fail the command after it.
        topts = options.transfer
        if options.inputs is not None and topts.calibration_data is None:
            import dataclasses

            topts = dataclasses.replace(topts, calibration_data=given_path)  # the checked --inputs
        transfer = assess_transfer(loaded, shapes, static.weight_bytes, ctx.rules.raw, ctx.rules.fidelity,
                                   topts, delta_ref, "previous" if previous is not None else "base", progress=step)
        labels = [lab.model_copy(update={"transfer": transfer.info}) for lab in labels]
        if shared_delta:
            recycling = recycling_info(with_coded_update(recycled, *delta_update_bytes(transfer)), static.weight_bytes)
            labels = [lab.model_copy(update={"recycling": recycling}) for lab in labels]
    labels = [with_attention(lab, static, dprof is not None) for lab in labels]
    if decode_run is not None:
        labels = [with_decode_run(lab, decode_run) for lab in labels]
    return Assessment(LabelSet(labels=labels), transfer)


def host_labels(plan: "_host.HostPlan", loaded, static, runtime, shapes, ctx: Context, graded: "GradedTask",
                options: AssessOptions, issued_at: str, step, **label_kwargs) -> list[Label]:
    """The ``host`` label (measured; energy/host.py), or with ``--allow-estimate`` and nothing measurable,
    the estimated label of the reference class with a note saying why."""
    from eeki_label.energy.measure import analyse, check_record_matches

    hopts = plan.options
    work = work_of(static)
    if plan.unavailable is not None:
        ref = ctx.devices.get(_host.reference_class_id(hopts, None))
        label = build_label(loaded, static, runtime, ref,
                            estimate_inference(work, ref, static.activation_peak_elements), ctx, graded, options,
                            issued_at, **label_kwargs)
        return [_with_note(label, _host.fallback_note(plan.unavailable, ref), first=True)]
    rules = MeasurementRules.of(ctx.rules)
    record, record_sha = plan.record, plan.record_sha256
    if record is None:
        record = _host.complete_record(_host.measure_record(loaded, shapes, hopts, progress=step), hopts, rules)
    else:
        check_record_matches(record, loaded, shapes)
    ref = ctx.devices.get(_host.reference_class_id(hopts, record))
    m = analyse(record, rules)
    figure = _host.measured_figure(m, record)
    if m.unresolved is not None:  # not graded: the mean may be zero or negative; finish_label restores it
        figure = dataclasses.replace(figure, energy_j=None, fit_reason=m.unresolved)
    label = build_label(loaded, static, runtime, _host.host_device_class(ref, record), figure,
                        ctx, graded, options, issued_at, **label_kwargs)
    estimate = estimate_inference(work, ref, static.activation_peak_elements)
    measured_ref = None
    if plan.references:  # like with like: references measured on this machine
        task = graded.resolution.task
        refs = ctx.catalogue.for_task(graded.resolution.id) if graded.reason is None else []
        measured_ref = _host.measured_reference(plan.references, record, refs, options.accuracy,
                                                task.higher_is_better if task else True)
        if measured_ref is None:
            label = _with_note(label, "host: no reference measured on this machine reaches the declared quality; "
                                      "graded against the estimated reference of the reference class")
    return [_host.finish_label(label, m, record, record_sha, ref, estimate, ctx.rules, measured_ref)]


def _with_note(label: Label, note: str, first: bool = False) -> Label:
    notes = [note, *label.label.notes] if first else [*label.label.notes, note]
    grade_ = label.label.model_copy(update={"notes": notes})
    return label.model_copy(update={"label": grade_})


def with_attention(label: Label, static: StaticProfile, causal_decoder: bool) -> Label:
    """``model.attention_macs`` (and its causal figure for cached decoders or kernels declaring causality)."""
    causal = static.attention_macs_causal if causal_decoder or static.attention_causal_declared else None
    model = label.model.model_copy(update={"attention_macs": static.attention_macs, "attention_macs_causal": causal})
    label = label.model_copy(update={"model": model})
    if static.attention_upper_bound:
        label = _with_note(label, "an attention kernel (PackedAttention, PackedMultiHeadAttention or a shared-buffer "
                                  "DecoderMaskedMultiHeadAttention) is counted at its padded or maximum length, known "
                                  "only at run time: its MACs are an upper bound")
    return label


def with_decode_run(label: Label, run: "decoder.DecodeRun") -> Label:
    """The real prefill and decode steps (profile/decoder.py ``runtime_decode``) in ``runtime``."""
    if label.runtime is None:
        return label
    runtime = label.runtime.model_copy(update=dict(
        prefill_latency_ms=run.prefill_ms, decode_steps_run=len(run.step_ms),
        decode_latency_ms_median=run.decode_ms_median if run.step_ms else None))
    return label.model_copy(update={"runtime": runtime})


def with_query_figures(label: Label, dp: "decoder.DecoderProfile", qe: "decoder.QueryEnergy", dc: DeviceClass) -> Label:
    """The per-query, prefill and decode figures of a cached decoder (profile/decoder.py) in ``inference``."""
    from eeki_label.models import DecodeInfo, PrefillInfo

    n, m = dp.lengths.prompt_tokens, dp.lengths.output_tokens
    pre, stp = qe.prefill, qe.decode_step
    per_query = qe.query.energy_j
    decode = None
    if dp.decode_first is not None:
        decode = DecodeInfo(
            steps=dp.decode_steps, context_first=n, context_last=n + m - 2,
            macs_per_token=dp.decode_macs_per_token,
            attention_macs_per_token=(dp.decode_first.attention_macs + dp.decode_last.attention_macs) / 2,
            activation_elements_per_token=dp.decode_activation_elements_per_token,
            kv_cache_bytes_per_token=dp.kv_cache_bytes_per_token,
            kv_cache_bytes_full_context=(n + m - 1) * dp.kv_cache_bytes_per_token,
            energy_j_per_token=stp.energy_j, bytes_moved_per_token=stp.bytes_moved,
            time_s_estimate_per_token=stp.time_s)
    inference = label.inference.model_copy(update=dict(
        unit="query", prompt_tokens=n, output_tokens=m, length_preset=dp.lengths.preset,
        batch_size=dc.assumed_batch_size,
        boundary=(f"one query: prefill of {n} prompt tokens plus {m - 1} decode steps ({m} output tokens), batch "
                  f"{dc.assumed_batch_size}, estimated whole-system energy of the {dc.id} class (energy/estimate.py); "
                  "tokenisation, sampling and networking excluded"),
        prefill=PrefillInfo(tokens=n, macs=dp.prefill.macs, attention_macs=dp.prefill.attention_macs,
                            activation_elements=dp.prefill.activation_elements, energy_j=pre.energy_j,
                            bytes_moved=pre.bytes_moved, time_s_estimate=pre.time_s),
        decode=decode,
        energy_per_query_j=per_query,
        energy_wh_per_1000_queries=per_query * 1000 / 3600 if per_query is not None else None,
        energy_per_output_token_j=(stp.energy_j if stp is not None else None),
    ))
    return label.model_copy(update={"inference": inference})


def reference_energy(ctx: Context, dc: DeviceClass):
    def energy(ref) -> float | None:
        if ref.query is not None:  # per query: prefill and decode steps, like the candidate's (profile/decoder.py)
            return ref.query.energy(ref.work.parameters, dc, estimate_inference).energy_j
        return estimate_inference(ref.work, dc).energy_j
    return energy


@dataclass(frozen=True)
class GradedTask:
    """The task of a label and the work it is graded on (the task's evaluation input)."""

    resolution: TaskResolution
    shapes: dict[str, Shape]
    """Input shapes the grade is computed at."""
    work: WorkProfile | None
    """Work at ``shapes`` when they differ from the assessed shapes (None: the assessed work)."""
    activation_peak_elements: int | None
    reason: str | None
    """Why the label cannot be graded for this task whatever its energy (None: it can be)."""
    evidence: "tuple[str, str] | None" = None
    """(file name, sha256) of --accuracy-evidence."""
    query_lengths: "tuple[int, int] | None" = None
    """A cached decoder's (prompt, output) tokens per query; None for other models."""


def _evidence(path) -> tuple[str, str]:
    import hashlib

    from eeki_label.fileio import open_regular

    h = hashlib.sha256()
    with open_regular(path, UsageError, "--accuracy-evidence") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return os.path.basename(os.fspath(path)), h.hexdigest()


def _graded_work(loaded, shapes, static, task: TaskResolution, plan, options, limits, evidence) -> GradedTask:
    """Compare the assessed shapes with the task's evaluation input; profile at that input when the model's
    dynamic dimensions allow it and the assessed input differs (rules/README.md, "Units of work")."""
    if task.task is None or task.reason is not None:
        return GradedTask(task, shapes, None, None, task.reason, evidence)
    check = check_shapes(plan, shapes, dynamic_axes(loaded.proto), task.task)
    if not check.ok:
        return GradedTask(task, shapes, None, None, check.reason, evidence)
    if check.graded_shapes is None:
        return GradedTask(task, shapes, None, None, None, evidence)
    g = check.graded_shapes
    limits = {**limits, "given_inputs": None}  # --inputs have the assessed shapes, not these
    probe = partial(probe_shapes, loaded, g, **limits)
    value_probe = partial(probe_values, loaded, g, **limits)
    at_task = static_profile(loaded, g, value_probe=value_probe, typed=typed_graphs(loaded, g, probe, value_probe))
    check_activation_limit(at_task, options.limits.max_activation_bytes)
    return GradedTask(task, g, work_of(at_task), at_task.activation_peak_elements, None, evidence)


@dataclass(frozen=True)
class EstimateUncertainty:
    """The interval fields of an estimated label (rule set section ``estimate_uncertainty``)."""

    energy_fields: dict = field(default_factory=dict)
    grade_fields: dict = field(default_factory=dict)


def estimate_uncertainty(ctx: Context, dc: DeviceClass, energy: EnergyFigure, index: float | None) -> EstimateUncertainty:
    """``energy_j_ci95`` from the class's held-out error, and the index interval with its boundary flag;
    empty for measured energies, for device data without held-out errors (1.0.0) and rule sets without the
    section. The printed class is never changed: it stays the point index's."""
    if energy.method != "estimated" or energy.energy_j is None:
        return EstimateUncertainty()
    iv = estimate_interval(ctx.rules, dc.held_out.worst_ratio, len(dc.workloads))
    if iv is None:
        return EstimateUncertainty()
    e, f = energy.energy_j, iv.factor
    out = EstimateUncertainty({"energy_j_ci95": (e / f, e * f), "interval_method": iv.method})
    if index is not None:
        d = estimate_boundary(index, f, ctx.rules.thresholds)
        out.grade_fields.update(index_ci95=(index / f, index * f), boundary_uncertain=d.boundary_uncertain,
                                classes_in_interval=list(d.classes_in_interval), boundary_rule=d.statement)
    return out


def build_label(
    loaded: LoadedModel, static: StaticProfile, runtime: RuntimeProfile | None, dc: DeviceClass,
    energy: EnergyFigure, ctx: Context, graded: GradedTask, options: AssessOptions, issued_at: str, recycling=None,
) -> Label:
    res = graded.resolution
    task = res.task
    refs = ctx.catalogue.for_task(res.id) if graded.reason is None else []
    per_query = [r for r in refs if r.query is not None]
    if per_query:  # per-query references: compare at the same lengths, and only a cached decoder's queries
        lengths = {(r.query.prompt_tokens, r.query.output_tokens) for r in per_query}
        if graded.query_lengths is None:
            graded = dataclasses.replace(graded, reason=f"task {res.id} is graded per query of a decoder with a KV "
                                         "cache (past_key_values inputs, present outputs); this model has none")
            refs = []
        elif graded.query_lengths not in lengths:
            want = ", ".join(f"{p} prompt / {o} output tokens" for p, o in sorted(lengths))
            graded = dataclasses.replace(graded, reason=(
                f"assessed at {graded.query_lengths[0]} prompt / {graded.query_lengths[1]} output tokens; the "
                f"references of task {res.id} are profiled at {want}: assess at those lengths to grade"))
            refs = []
        else:
            refs = [r for r in per_query if (r.query.prompt_tokens, r.query.output_tokens) == graded.query_lengths]
    ref_energy = reference_energy(ctx, dc)
    if graded.reason is not None:
        sel = Selection(None, 0, "not compared: the label is not graded for this task (see the reason)", False)
    else:
        sel = select_reference(refs, ref_energy, lambda r: r.quality, options.accuracy, task.higher_is_better)
    ref = sel.reference
    ref_e = ref_energy(ref) if ref is not None else None
    grade_energy = energy.energy_j
    if graded.work is not None and energy.energy_j is not None:
        if energy.method == "measured":
            grade_energy = None
            graded = GradedTask(res, graded.shapes, None, None,
                                "measured at another input than the task's evaluation input ("
                                + ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in graded.shapes.items())
                                + "); measure at that input to grade", graded.evidence)
        else:
            grade_energy = estimate_inference(graded.work, dc, graded.activation_peak_elements).energy_j

    notes: list[str] = []
    if res.id is not None and not res.declared:
        notes.append(f"task {res.id} detected: {res.detected_from}")
    if options.accuracy is None and graded.reason is None:
        notes.append("quality not declared: the reference is the least-energy model of the task at any quality")
    elif options.accuracy is not None:
        notes.append(f"graded on a declared quality of {options.accuracy:g} ({task.metric if task else 'metric n/a'}), "
                     f"a claim by {options.issuer or 'an issuer not stated'}")
    if graded.work is not None and graded.reason is None:
        shapes_text = ", ".join(f"{vi.name}={'x'.join(map(str, graded.shapes[vi.name]))}"
                                for vi in data_inputs(loaded.proto))
        notes.append(f"graded at the task's evaluation input {shapes_text} ({task.unit_description}); the energy "
                     "above is at the assessed input")
    if sel.quality_above_all:
        notes.append(sel.description)
    if static.unresolved_nodes:
        notes.append(f"{len(static.unresolved_nodes)} compute node(s) with unknown shapes are not counted in MACs")
    if static.uncounted_ops:
        ops = ", ".join(f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in static.uncounted_ops)
        notes.append(f"operators whose multiply-accumulates are not modelled: {ops}; MACs are a lower bound")
    if static.loop_bodies:
        notes.append(f"{static.loop_bodies} subgraph(s) (Loop/Scan bodies) run a number of times known only at run "
                     "time; each is counted once, so MACs are a lower bound")

    if static.if_branches:
        notes.append("If nodes: " + "; ".join(_if_note(b) for b in static.if_branches))
    # a measured energy does not rest on the counted MACs: the gate is for estimates
    coverage_reason = (_coverage_reason(static, ctx.rules.raw.get("coverage")) if energy.method != "measured"
                       else None)

    gradable = (graded.reason is None and coverage_reason is None and grade_energy is not None
                and ref_e is not None and ref_e > 0)
    index = grade_energy / ref_e if gradable else None
    letter = grade(index, ctx.rules.thresholds) if index is not None else None
    reason = None if gradable else (coverage_reason or graded.reason or energy.fit_reason or sel.description)
    uncertainty = estimate_uncertainty(ctx, dc, energy, index)
    if uncertainty.grade_fields.get("boundary_uncertain"):
        notes.append(f"boundary uncertain: {uncertainty.grade_fields['boundary_rule']}")

    return Label(
        label=LabelGrade(**{"class": letter}, index=index, thresholds=ctx.rules.threshold_map(), gradable=gradable,
                         reason=reason, quality_declared=options.accuracy is not None, notes=notes,
                         graded_energy_j=grade_energy if graded.work is not None and gradable else None,
                         **uncertainty.grade_fields),
        model=_model_info(loaded, static),
        device_class=DeviceClassInfo(id=dc.id, name=dc.name, reference_system=dc.reference_system,
                                     batch_mode=dc.batch_mode, precision=dc.precision),
        inference=InferenceEnergy(
            energy_j=energy.energy_j,
            energy_wh_per_1000=energy.energy_j * 1000 / 3600 if energy.energy_j is not None else None,
            method=energy.method, estimator=energy.estimator, fits=energy.fits, fit_reason=energy.fit_reason,
            effective_macs=energy.effective_macs, bytes_moved=energy.bytes_moved, time_s_estimate=energy.time_s,
            calibration_anchor=energy.calibration_anchor, meter=energy.meter,
            **uncertainty.energy_fields,
        ),
        task=TaskInfo(
            id=res.id, declared=res.declared, detected_from=res.detected_from,
            catalogued=task is not None and task.catalogued and task.status == "graded",
            unit=task.unit if task else "inference",
            unit_description=task.unit_description if task else None,
            evaluation_input=({vi.name: list(graded.shapes[vi.name]) for vi in data_inputs(loaded.proto)}
                              if graded.reason is None else None),
            quality=QualityInfo(
                metric=task.metric if task else "n/a", declared=options.accuracy,
                declared_by=(options.issuer or "not stated") if options.accuracy is not None else None,
                evidence_file=graded.evidence[0] if graded.evidence else None,
                evidence_sha256=graded.evidence[1] if graded.evidence else None)),
        reference=ReferenceInfo(
            model_id=ref.id if ref else None, name=ref.name if ref else None, task=ref.task if ref else None,
            quality=ref.quality if ref else None, energy_j=ref_e, macs=ref.work.macs if ref else None,
            parameters=ref.work.parameters if ref else None, selection=sel.description,
            candidates_considered=sel.considered,
        ),
        runtime=_runtime_info(runtime) if runtime else None,
        rules=RulesInfo(id=ctx.rules.id, version=ctx.rules.version, sha256=ctx.rules.sha256),
        catalogue=CatalogueInfo(id=ctx.catalogue.id, version=ctx.catalogue.version, sha256=ctx.catalogue.sha256),
        device_data=DeviceDataInfo(version=ctx.devices.version, sha256=ctx.devices.sha256, file=ctx.devices.file),
        tool=_tool_info(),
        issued_at=issued_at,
        issuer=options.issuer,
        recycling=recycling,
    )


def _coverage_reason(static: StaticProfile, coverage: "dict | None") -> "str | None":
    """Why the label is not graded for want of counted arithmetic (rules section ``coverage``), else None."""
    if not isinstance(coverage, dict) or coverage.get("min_macs_coverage") is None:
        return None
    minimum = float(coverage["min_macs_coverage"])
    if static.macs_coverage >= minimum:
        return None
    ops = ", ".join(f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in static.unmodelled_ops)
    return (f"MACs of {static.compute_nodes - static.compute_nodes_resolved} of {static.compute_nodes} compute "
            f"nodes are not known ({ops}): coverage {static.macs_coverage:.1%} is below the rule set's "
            f"{minimum:.0%}, so MACs are a lower bound and no class is given")


def _if_note(b) -> str:
    if b.taken is None:
        return f"{b.node!r}: condition unknown, both branches counted"
    other = "else_branch" if b.taken == "then_branch" else "then_branch"
    macs_other = "unknown" if b.macs_other is None else f"{b.macs_other:,}"
    return f"{b.node!r} counts its {b.taken} (the representative inputs take it); the {other} would do {macs_other} MACs"


def _model_info(loaded: LoadedModel, s: StaticProfile) -> ModelInfo:
    return ModelInfo(
        file_name=loaded.name, sha256=loaded.sha256, file_bytes=loaded.file_bytes,
        external_data_bytes=loaded.external_bytes, producer=s.producer, ir_version=s.ir_version, opset=s.opset,
        parameters=s.parameters, float_parameters=s.float_parameters, weight_bytes=s.weight_bytes, macs=s.macs,
        macs_depthwise=s.macs_depthwise, macs_by_op=s.macs_by_op, activation_bytes=s.activation_bytes,
        activation_peak_bytes=s.activation_peak_bytes, node_count=s.node_count, op_histogram=s.op_histogram,
        inputs=[TensorSpec(name=t.name, shape=list(t.shape), dtype=t.dtype) for t in s.inputs],
        outputs=[TensorSpec(name=t.name, shape=list(t.shape), dtype=t.dtype) for t in s.outputs],
        loop_bodies=s.loop_bodies, unresolved_nodes=list(s.unresolved_nodes),
        macs_coverage=s.macs_coverage, unmodelled_ops=dict(s.unmodelled_ops), profiled_graph=s.profiled_graph,
        if_branches=[IfBranchInfo(node=b.node, taken=b.taken, macs_taken=b.macs_taken, macs_other=b.macs_other)
                     for b in s.if_branches],
        graph_name=loaded.proto.graph.name or None,
        doc_string=(loaded.proto.doc_string or loaded.proto.graph.doc_string or "")[:1000] or None,
    )


def _runtime_info(r: RuntimeProfile) -> RuntimeInfo:
    return RuntimeInfo(
        runs=r.runs, warmup_runs=r.warmup_runs, latency_ms_median=r.latency_ms_median,
        latency_ms_p90=r.latency_ms_p90, latency_ms_mean=r.latency_ms_mean,
        latency_ms_ci95=(r.latency_ms_ci95_low, r.latency_ms_ci95_high), intra_op_threads=r.intra_op_threads,
        onnxruntime_version=r.onnxruntime_version, execution_provider=r.execution_provider, host_cpu=r.host_cpu,
        host_logical_cpus=r.host_logical_cpus, host_machine=r.host_machine, input_seed=r.seed,
    )


def _tool_info() -> ToolInfo:
    import onnxruntime

    return ToolInfo(name="eeki-label", version=__version__, onnx_version=onnx.__version__,
                    onnxruntime_version=onnxruntime.__version__, python_version=platform.python_version())
