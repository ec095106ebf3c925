"""The only module that knows the order of the stages.

``assess(path, options) -> LabelSet``: load and check -> resolve input shapes -> static profile ->
runtime profile -> per device class: energy, reference, grade -> one complete Label per class.
No printing, no files: the CLI renders and writes.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import onnx

from eeki_label import __version__
from eeki_label.catalogue import Catalogue, WorkProfile, load_catalogue
from eeki_label.energy.devices import DeviceClass, DeviceRegistry, load_devices
from eeki_label.energy.estimate import EnergyFigure, estimate_inference
from eeki_label.energy.host import HOST_CLASS_ID, HostOptions, host_labels
from eeki_label.energy.host import prepare as prepare_host
from eeki_label.model_io import LoadedModel, LoadLimits, load_model, load_related
from eeki_label.models import (
    CatalogueInfo, DeviceClassInfo, DeviceDataInfo, InferenceEnergy, Label, LabelGrade, LabelSet, ModelInfo,
    QualityInfo, ReferenceInfo, RulesInfo, RuntimeInfo, TaskInfo, TensorSpec, ToolInfo,
)
from eeki_label.profile.runtime import (
    DEFAULT_RUNS, RuntimeProfile, probe_shapes, probe_values, runtime_profile, trial_run,
)
from eeki_label.profile import decoder
from eeki_label.profile.shapes import Shape, resolve_input_shapes
from eeki_label.profile.static import StaticProfile, check_activation_limit, static_profile, typed_graphs
from eeki_label.rules import RuleSet, grade, load_rules, select_reference
from eeki_label.recycle import RecyclingOptions, assess_recycling, load_base, recycling_info
from eeki_label.errors import TransferError
from eeki_label.transfer.stage import TransferOptions, TransferOutcome, assess_transfer

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AssessOptions:
    device_classes: tuple[str, ...] = ()
    """Device class ids, or ("all",); empty means the rule set's default."""
    task: str | None = None
    accuracy: float | None = None
    input_shapes: dict[str, Shape] = field(default_factory=dict)
    runs: int = DEFAULT_RUNS
    threads: int | None = None
    seed: int = 0
    rules_version: str | None = None
    catalogue_version: str | None = None
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


def load_context(rules_version: str | None = None, catalogue_version: str | None = None) -> Context:
    catalogue = load_catalogue(catalogue_version)
    return Context(load_rules(rules_version), catalogue, load_devices(catalogue))


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
    step = progress or (lambda name, done, total: None)
    ctx = load_context(options.rules_version, options.catalogue_version)
    task_id = options.task or ctx.rules.default_task
    ctx.catalogue.task(task_id)  # unknown task: fail before the expensive stages
    requested = options.device_classes or (
        (HOST_CLASS_ID,) if options.host and options.host.measurements else ctx.rules.default_device_classes)
    others = tuple(c for c in requested if c != HOST_CLASS_ID)
    classes = ctx.devices.select(others) if others else ()
    # host: check the meter (or read the record) before the expensive stages
    host_plan = prepare_host(options.host or HostOptions()) if HOST_CLASS_ID in requested else None
    if options.recycling.training_device_class:
        ctx.devices.get(options.recycling.training_device_class)  # unknown class: fail early

    step("load", 0, 1)
    loaded = load_model(path, options.limits)
    base = load_base(options.base, options.limits) if options.base is not None else None
    previous = (load_related(options.transfer.previous, options.limits, "previous version (--previous)")
                if options.transfer.enabled and options.transfer.previous is not None else None)
    signature = decoder.detect(loaded.proto)
    dprof = None
    limits = dict(time_limit_s=options.runtime_time_limit_s, max_activation_bytes=options.limits.max_activation_bytes)
    if signature is not None:  # a decoder with a KV cache: one query = prefill + decode steps (profile/decoder.py)
        lengths = decoder.lengths_from_rules(ctx.rules.raw, options.length_preset, options.prompt_tokens,
                                             options.output_tokens)
        shapes = decoder.step_shapes(loaded.proto, signature, 0, lengths.prompt_tokens, options.input_shapes)
    else:
        shapes = resolve_input_shapes(loaded.proto, options.input_shapes)
    step("static profile", 0, 1)
    probe = partial(probe_shapes, loaded, shapes, **limits)
    typed = typed_graphs(loaded, shapes, probe)  # shape inference once, for the static profile and recycling
    static = static_profile(loaded, shapes, value_probe=partial(probe_values, loaded, shapes, **limits), typed=typed)
    if signature is not None:
        def profile_at(at_shapes):
            if at_shapes == shapes:
                return static
            return static_profile(loaded, at_shapes, typed=typed_graphs(
                loaded, at_shapes, partial(probe_shapes, loaded, at_shapes, **limits)),
                value_probe=partial(probe_values, loaded, at_shapes, **limits))
        dprof = decoder.profile_decoder(loaded, signature, lengths, profile_at, options.input_shapes)
        static = dprof.query_static()
    check_activation_limit(static, options.limits.max_activation_bytes)  # before anything else runs the model
    step("recycling", 0, 1)
    recycling = recycling_info(assess_recycling(
        loaded, shapes, work_of(static), base, ctx.rules.raw, ctx.catalogue.models, ctx.devices, options.recycling,
        activation_peak_elements=static.activation_peak_elements, subgraph_runs=dict(static.subgraph_runs), typed=typed,
    ), static.weight_bytes)
    runtime = None
    if options.runs > 0:
        runtime = runtime_profile(
            loaded, shapes, runs=options.runs, threads=options.threads, seed=options.seed,
            time_limit_s=options.runtime_time_limit_s, max_activation_bytes=options.limits.max_activation_bytes,
            progress=lambda done, total: step("runtime profile", done, total),
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
                work_of(static), dc, static.activation_peak_elements), ctx, task_id, options, issued_at,
                recycling=recycling))
        else:
            qe = decoder.query_energy(dprof, dc, estimate_inference)
            labels.append(with_query_figures(build_label(loaded, static, runtime, dc, qe.query, ctx, task_id, options,
                                                         issued_at, recycling=recycling), dprof, qe, dc))
    # Live measurement (host) and the NNC stage run the model in this process, where the time limit and
    # the memory cap cannot be enforced: unless the sandboxed runtime profile has shown that the model
    # ends within them, a sandboxed trial run does first.
    bounded = [runtime is not None]

    def prove_bounded(before: str) -> None:
        if not bounded[0]:
            trial_run(loaded, shapes, time_limit_s=options.runtime_time_limit_s,
                      max_activation_bytes=options.limits.max_activation_bytes, what=f"the trial run before {before}")
            bounded[0] = True

    if host_plan is not None:
        if host_plan.record is None and host_plan.unavailable is None:
            prove_bounded("the measurement")
        labels += host_labels(host_plan, loaded, static, runtime, shapes, ctx, task_id, options, issued_at, step,
                              recycling=recycling)
    transfer = None
    if options.transfer.enabled:
        prove_bounded("the NNC transfer stage")
        step("NNC transfer", 0, 1)
        try:
            transfer = assess_transfer(loaded, shapes, static.weight_bytes, ctx.rules.raw, ctx.rules.fidelity,
                                       options.transfer, previous)
        except TransferError as e:
            # The label stands without transfer figures: a model NNC cannot code within the fidelity
            # bound is still graded; the artefacts the user asked for (--bitstream) then fail the run.
            if options.transfer.required:
                raise
            labels = [_with_note(lab, f"transfer not assessed: {e}") for lab in labels]
        else:
            labels = [lab.model_copy(update={"transfer": transfer.info}) for lab in labels]
    labels = [with_attention(lab, static, dprof is not None) for lab in labels]
    if decode_run is not None:
        labels = [with_decode_run(lab, decode_run) for lab in labels]
    return Assessment(LabelSet(labels=labels), transfer)


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


def _with_note(label: Label, note: str) -> Label:
    grade_ = label.label.model_copy(update={"notes": [*label.label.notes, note]})
    return label.model_copy(update={"label": grade_})


def reference_energy(ctx: Context, dc: DeviceClass):
    def energy(ref) -> float | None:
        return estimate_inference(ref.work, dc).energy_j
    return energy


def build_label(
    loaded: LoadedModel, static: StaticProfile, runtime: RuntimeProfile | None, dc: DeviceClass,
    energy: EnergyFigure, ctx: Context, task_id: str, options: AssessOptions, issued_at: str, recycling=None,
) -> Label:
    task = ctx.catalogue.task(task_id)
    refs = ctx.catalogue.for_task(task_id)
    ref_energy = reference_energy(ctx, dc)
    sel = select_reference(refs, ref_energy, lambda r: r.quality, options.accuracy, task.higher_is_better)
    ref = sel.reference
    ref_e = ref_energy(ref) if ref is not None else None

    notes: list[str] = []
    if options.task is None:
        notes.append(f"task not declared: compared with the references of the default task {task_id!r}")
    if options.accuracy is None:
        notes.append("quality not declared: the reference is the least-energy model of the task at any quality")
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

    gradable = energy.energy_j is not None and ref_e is not None and ref_e > 0
    index = energy.energy_j / ref_e if gradable else None
    letter = grade(index, ctx.rules.thresholds) if index is not None else None
    reason = None if gradable else (energy.fit_reason or sel.description)

    return Label(
        label=LabelGrade(**{"class": letter}, index=index, thresholds=ctx.rules.threshold_map(), gradable=gradable,
                         reason=reason, quality_declared=options.accuracy is not None, notes=notes),
        model=_model_info(loaded, static),
        device_class=DeviceClassInfo(id=dc.id, name=dc.name, reference_system=dc.reference_system,
                                     batch_mode=dc.batch_mode, precision=dc.precision),
        inference=InferenceEnergy(
            energy_j=energy.energy_j,
            energy_wh_per_1000=energy.energy_j * 1000 / 3600 if energy.energy_j is not None else None,
            method=energy.method, estimator=energy.estimator, fits=energy.fits, fit_reason=energy.fit_reason,
            effective_macs=energy.effective_macs, bytes_moved=energy.bytes_moved, time_s_estimate=energy.time_s,
            calibration_anchor=energy.calibration_anchor, meter=energy.meter,
        ),
        task=TaskInfo(id=task_id, declared=options.task is not None,
                      quality=QualityInfo(metric=task.metric, declared=options.accuracy)),
        reference=ReferenceInfo(
            model_id=ref.id if ref else None, name=ref.name if ref else None, task=task_id,
            quality=ref.quality if ref else None, energy_j=ref_e, macs=ref.work.macs if ref else None,
            parameters=ref.work.parameters if ref else None, selection=sel.description,
            candidates_considered=sel.considered,
        ),
        runtime=_runtime_info(runtime) if runtime else None,
        rules=RulesInfo(id=ctx.rules.id, version=ctx.rules.version, sha256=ctx.rules.sha256),
        catalogue=CatalogueInfo(id=ctx.catalogue.id, version=ctx.catalogue.version, sha256=ctx.catalogue.sha256),
        device_data=DeviceDataInfo(version=ctx.devices.version, sha256=ctx.devices.sha256),
        tool=_tool_info(),
        issued_at=issued_at,
        issuer=options.issuer,
        recycling=recycling,
    )


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
