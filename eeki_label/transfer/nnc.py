"""Encode a model's weights with NNC (ISO/IEC 15938-17) under a fidelity bound, and decode them.

:func:`encode_model` codes every float tensor the model stores (initializers, ``Constant`` nodes,
tensors in If/Loop/Scan bodies) with the NNC reference codec, sends small and structural tensors
bit-exactly, picks per-tensor quantisation parameters so that the reconstructed model stays within
a :class:`~eeki_label.transfer.fidelity.FidelityBound` on calibration inputs, writes the result into
a self-describing container (:mod:`eeki_label.transfer.container`), decodes that container again,
and checks that the reconstructed model runs in onnxruntime and meets the bound.

With ``previous`` it codes the update instead (delta coding): ``new - old`` for every float tensor
that changed, nothing for tensors that did not, and :func:`decode_bitstream` rebuilds the new model
from the previous model plus the bitstream.

Memory (peak RSS about 4.7x the float32 weights on a ResNet18-size model, 1.5x of which is the
interpreter with onnxruntime loaded; it was 10x, see docs/transfer.md): weights are read from the model file when needed
instead of being held (:class:`~eeki_label.transfer.search.Candidate` readers); the search keeps one
set of dequantised weights and no levels (:class:`~eeki_label.transfer.search._Realiser`); the
sessions never overlap (the original file's outputs for the final check are taken before the search,
the search's session is dropped before coding); the final check decodes the bitstream tensor by
tensor into a temporary model with an external data file (:func:`write_reconstruction`) instead of
an in-memory model and its serialisation; file-based sessions use basic graph optimisations only
(the extended ones copy convolution weights into blocked layouts); and freed memory is handed back
between phases (:func:`release_memory`).

Units: sizes in bytes, times in seconds (wall clock), QP at nncodec's ``qp_density`` 2 (step
doubles every 4 QP), errors dimensionless.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto, numpy_helper

from eeki_label.errors import TransferError
from eeki_label.model_io import (
    FLOAT_DTYPES,
    LoadedModel,
    TensorRef,
    read_external_bytes,
    iter_all_tensors,
    iter_graphs,
    iter_stored_tensors,
    tensor_array,
    tensor_nbytes,
)
from eeki_label.transfer import _nncore
from eeki_label.transfer.container import Container, Entry, header_size, keys_digest, pack, section_sizes, unpack
from eeki_label.transfer.fidelity import (
    Fidelity,
    FidelityBound,
    Reference,
    WeightFeedRunner,
    calibration_feeds,
    compare,
    run_model,
)
from eeki_label.transfer.search import (
    Candidate,
    Evaluator,
    Plan,
    search_single_qp,
    search_sensitivity,
    tensor_rms,
)

#: Float tensors with fewer elements than this are sent bit-exactly (scalars, tiny vectors, scales).
MIN_CODED_ELEMENTS = 16
#: Inputs of operators that carry shapes, indices, scales or bounds rather than weights, or that the
#: output depends on non-linearly (batch-norm variance, divisors): a float tensor feeding one of these
#: positions is sent bit-exactly whatever its size (Resize scales that come back as 1.9999981 break
#: the model; a batch-norm variance of 0.005 rounded to 0 multiplies a channel by 14).
STRUCTURAL_INPUTS: dict[str, frozenset[int]] = {
    "Reshape": frozenset({1}), "Expand": frozenset({1}), "Tile": frozenset({1}),
    "Slice": frozenset({1, 2, 3, 4}), "Pad": frozenset({1, 2, 3}), "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}), "ConstantOfShape": frozenset({0}), "Range": frozenset({0, 1, 2}),
    "TopK": frozenset({1}), "Squeeze": frozenset({1}), "Unsqueeze": frozenset({1}),
    "Split": frozenset({1}), "OneHot": frozenset({1, 2}), "Clip": frozenset({1, 2}),
    "Pow": frozenset({1}), "QuantizeLinear": frozenset({1, 2}), "DequantizeLinear": frozenset({1, 2}),
    "NonMaxSuppression": frozenset({2, 3, 4}), "CenterCropPad": frozenset({1}), "Col2Im": frozenset({1, 2}),
    "ReduceSum": frozenset({1}), "ReduceMean": frozenset({1}), "ReduceMax": frozenset({1}),
    "ReduceMin": frozenset({1}), "ReduceProd": frozenset({1}), "ReduceL2": frozenset({1}),
    # divisors: the output depends on 1/value, so a small value rounded towards zero explodes
    "BatchNormalization": frozenset({4}), "Div": frozenset({1}),
    "GatherElements": frozenset({1}), "Gather": frozenset({1}), "ScatterND": frozenset({1}),
    "ScatterElements": frozenset({1}), "Trilu": frozenset({1}), "RoiAlign": frozenset({2}),
}
#: Input elements the sensitivity runs may use per probe (1 sample of 3x640x640 or 3x224x224, 9 of 3x48x192).
SENSITIVITY_INPUT_ELEMENTS = 250_000
#: Synthetic calibration (no calibration data): as many samples as hold this many input elements,
#: within [MIN_SYNTHETIC_SAMPLES, MAX_SYNTHETIC_SAMPLES] (4 of 3x640x640 or 3x224x224, 16 of 3x48x192).
SYNTHETIC_INPUT_ELEMENTS = 500_000
MIN_SYNTHETIC_SAMPLES, MAX_SYNTHETIC_SAMPLES = 4, 16
#: The search aims at margin x the bound on the calibration inputs: real calibration data ...
SEARCH_MARGIN = 0.7
#: ... and synthetic inputs, a stand-in for what the model will see: more headroom (on PP-OCRv4 det
#: the error on real photos was 1.4-1.7x the error on the synthetic images).
SYNTHETIC_SEARCH_MARGIN = 0.5
_CODED_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16})
STRATEGIES = ("sensitivity", "single-qp")


@dataclass(frozen=True)
class TensorChoice:
    """How one stored tensor travels."""

    key: str
    mode: str
    """``nnc`` (quantised, NNC-coded), ``delta`` (update NNC-coded), ``raw`` (bit-exact), ``same`` (unchanged)."""
    shape: tuple[int, ...]
    dtype: int
    """ONNX TensorProto data type."""
    original_bytes: int
    qp: int | None
    step: float | None
    """Quantiser step size (same unit as the tensor's values); None unless NNC-coded."""
    coded_bytes: int | None
    """Bytes of the tensor's NNC data unit, or of its serialised TensorProto (raw, before zlib)."""
    reason: str
    """Why raw/same, or the strategy that chose the QP."""
    base_key: str | None = None
    """For ``same`` and ``delta``: the previous model's tensor it is taken from."""
    matched_by: str | None = None
    """How the tensor was paired with the previous model's (``name``, ``content``, ``structure``), or None."""


@dataclass(frozen=True)
class UpdateSummary:
    """What a delta container says about the two graphs (see :func:`plan_update`)."""

    graph_changed: bool
    """The new model's skeleton (graph without tensor payloads) differs from the previous one's."""
    graph_section_bytes: int
    """Bytes of the compressed graph patch in the container (0 when the graph is unchanged)."""
    whole_model: bool
    """Nothing in common with the previous model: the update is the whole model coded."""
    removed: tuple[str, ...]
    """Keys of the previous model's tensors the new model no longer has."""
    matched_by: dict
    """Paired tensors by how they were paired: ``name``, ``content``, ``structure``."""
    whole_reason: str | None = None
    """Why the update is the whole model (``whole_model``)."""


@dataclass(frozen=True)
class QpSummary:
    """QPs used by the NNC-coded tensors (None when none is coded)."""

    min: int | None
    median: float | None
    max: int | None
    distinct: int


@dataclass(frozen=True)
class Baselines:
    """Other ways to send the same NNC-coded tensors, for comparison. Bytes; fidelity like the result's."""

    float32_bytes: int
    """The coded tensors as raw float32."""
    zstd19_bytes: int | None
    """Their float32 bytes compressed with zstd level 19 (lossless); None without ``zstandard``."""
    uint8_zstd19_bytes: int | None
    """Per-tensor min/max uniform 8-bit quantisation (plus 8 bytes of scale/offset per tensor), zstd-19."""
    uint8_fidelity: Fidelity | None
    single_qp: int | None
    """The coarsest single QP (rank >= 2 tensors; rank-1 at -75) meeting the bound."""
    single_qp_nnc_bytes: int | None
    single_qp_fidelity: Fidelity | None
    single_qp_search_s: float | None
    single_qp_entropy_coding_s: float | None


@dataclass(frozen=True)
class NncResult:
    """The outcome of :func:`encode_model`. Sizes in bytes, times in seconds."""

    original_bytes: int
    """All tensors the model stores, at their declared sizes."""
    coded_float_bytes: int
    """The NNC-coded tensors as float32 (what a float32 transfer of them would take)."""
    compressed_bytes: int
    """The whole container: header, NNC bitstream, raw section."""
    nnc_bytes: int
    """The NNC bitstream alone."""
    raw_section_bytes: int
    header_bytes: int
    ratio: float
    """compressed_bytes / original_bytes."""
    nnc_ratio: float
    """nnc_bytes / coded_float_bytes: the NNC bitstream as a fraction of the float32 bytes it replaces."""
    qp: QpSummary
    tensors: tuple[TensorChoice, ...]
    fidelity: Fidelity
    """Of the decoded, reconstructed model, run in onnxruntime against the original."""
    bound: FidelityBound
    calibration: str
    """``calibration data`` or ``synthetic``."""
    calibration_samples: int
    strategy: str
    search_iterations: int
    sensitivity_runs: int
    encode_s: float
    """Search plus entropy coding plus container (not the final check and its reference outputs, not
    the baselines)."""
    search_s: float
    entropy_coding_s: float
    decode_s: float
    """Decoding the container and writing the reconstructed model (to a temporary folder, the final check)."""
    delta: bool
    base_sha256: str | None
    model_sha256: str
    baselines: Baselines | None
    bitstream: bytes = field(repr=False)
    update: UpdateSummary | None = None
    """For a delta: the graph and the tensor mapping."""


# --------------------------------------------------------------------------------------------
# Which tensors are coded


def _consumers(model: ModelProto) -> dict[str, set[tuple[str, int]]]:
    out: dict[str, set[tuple[str, int]]] = {}
    for _, g in iter_graphs(model):
        for node in g.node:
            for i, name in enumerate(node.input):
                if name:
                    out.setdefault(name, set()).add((node.op_type, i))
    for fn in model.functions:
        for node in fn.node:
            for i, name in enumerate(node.input):
                if name:
                    out.setdefault(name, set()).add((node.op_type, i))
    return out


def _tensor_value_name(ref: TensorRef) -> str:
    if ref.kind == "constant":
        return ref.key.rsplit("constant:", 1)[1].split("~")[0]
    return ref.tensor.name


def raw_reason(ref: TensorRef, consumers: Mapping[str, set], min_elements: int = MIN_CODED_ELEMENTS) -> str | None:
    """Why ``ref`` must be sent bit-exactly, or None if it may be NNC-coded (values not inspected)."""
    t = ref.tensor
    if t.data_type not in FLOAT_DTYPES:
        return "not a float tensor"
    if t.data_type not in _CODED_TYPES:
        return "float type NNC does not code here (double/bfloat16)"
    if ref.kind == "sparse":
        return "sparse tensor"
    if ref.graph_path.startswith("fn:"):
        return "inside a function body"
    n = 1
    for d in t.dims:
        n *= int(d)
    if n < min_elements:
        return f"small (< {min_elements} elements)"
    for op, idx in consumers.get(_tensor_value_name(ref), ()):
        if idx in STRUCTURAL_INPUTS.get(op, ()):
            return f"input {idx} of {op} (structural or non-linear)"
    return None


# --------------------------------------------------------------------------------------------
# Encoding


def _serialise_raw(arr_tensor: TensorProto) -> bytes:
    t = TensorProto()
    t.CopyFrom(arr_tensor)
    t.name = ""
    return t.SerializeToString()


def _inline_tensor(loaded: LoadedModel, t: TensorProto) -> TensorProto:
    if t.data_location != TensorProto.EXTERNAL:
        return t
    return numpy_helper.from_array(tensor_array(loaded, t), t.name)


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def encode_model(
    loaded: LoadedModel,
    shapes: Mapping[str, tuple[int, ...]],
    bound: FidelityBound = FidelityBound(),
    calibration: "Mapping[str, np.ndarray] | None" = None,
    previous: LoadedModel | None = None,
    time_limit_s: float | None = None,
    *,
    strategy: str = "sensitivity",
    baselines: bool = False,
    workers: int | None = None,
    calibration_samples: int | None = None,
    sensitivity_samples: int | None = None,
    max_units: int = 48,
    margin: float | None = None,
    seed: int = 0,
    whole: "NncResult | None" = None,
    progress: "Callable[[str, int, int], None] | None" = None,
) -> NncResult:
    """Encode ``loaded``'s weights (or, with ``previous``, its update against ``previous``).

    ``shapes`` are the resolved input shapes; ``calibration`` maps input names to arrays (see
    :func:`~eeki_label.transfer.fidelity.calibration_feeds`), else ``calibration_samples`` synthetic
    feeds are used (default: as many as hold :data:`SYNTHETIC_INPUT_ELEMENTS` input elements, 4 to
    16; structured images for image-like inputs, see :mod:`~eeki_label.transfer.synthetic`).
    ``sensitivity_samples`` of them (default: as many as hold
    :data:`SENSITIVITY_INPUT_ELEMENTS` input elements together, at least one) drive the sensitivity
    measurement over at most ``max_units`` tensor groups; all of them the fidelity checks. Nothing
    depends on timings, so the same inputs give the same bitstream. ``progress(step, done, total)`` is
    told of each phase and each tensor group the search probes (for the CLI's display). ``time_limit_s`` bounds the encoding (LimitExceededError). ``baselines``
    also computes zstd, 8-bit and single-QP figures (slower: zstd-19 runs at a few MB/s).
    ``workers`` processes entropy-code large models in parallel (default: the usable CPUs).
    ``margin`` (0 < margin <= 1) makes the search aim at ``margin * bound.max_rel_error`` on the
    calibration inputs, so that inputs it was not tuned on stay within the bound too (default
    :data:`SEARCH_MARGIN` with calibration data, :data:`SYNTHETIC_SEARCH_MARGIN` without); the
    decoded model is then checked against the bound itself.

    With ``previous`` the tensors are paired as :func:`eeki_label.recycle.match_tensors` pairs them
    (name and shape, then content, then structure; see :func:`plan_update`): unchanged ones cost
    nothing, changed ones of the same shape are coded as differences, new or reshaped ones whole,
    and the container carries the patch to the new graph. A new model with nothing in common with
    ``previous`` is coded whole (``whole``, the full-model result of the same model and bound, is
    reused instead of coding again).
    """
    if margin is None:
        margin = SEARCH_MARGIN if calibration is not None else SYNTHETIC_SEARCH_MARGIN
    if not 0.0 < margin <= 1.0:
        raise TransferError(f"margin must be in (0, 1], got {margin}")
    if strategy not in STRATEGIES:
        raise TransferError(f"unknown NNC strategy {strategy!r}; choose one of {STRATEGIES}")
    t_start = time.perf_counter()
    workers = _nncore.default_workers() if workers is None else max(1, int(workers))
    _nncore._core()  # fail early, with the install hint, if the codec is missing

    if progress is not None:
        progress("reading the tensors", 0, 1)
    refs = list(iter_stored_tensors(loaded.proto))
    keys = [r.key for r in refs]
    consumers = _consumers(loaded.proto)
    plan_u: UpdatePlan | None = None
    prev_list: list[TensorRef] = []
    if previous is not None:
        plan_u = plan_update(loaded, previous)
        if plan_u.in_common == 0:  # nothing to difference against: the update is the whole model
            return _whole_as_update(loaded, previous, plan_u, whole, dict(
                shapes=shapes, bound=bound, calibration=calibration, time_limit_s=time_limit_s, strategy=strategy,
                workers=workers, calibration_samples=calibration_samples, sensitivity_samples=sensitivity_samples,
                max_units=max_units, margin=margin, seed=seed))
        prev_list = list(iter_stored_tensors(previous.proto))

    modes: list[str] = []
    reasons: list[str] = []
    bases: dict[int, int] = {}  # new tensor index -> previous tensor index (same, delta)
    why_whole: dict[int, str] = {}  # paired tensors coded whole, and why
    cands: list[Candidate] = []
    cand_index: dict[str, int] = {}
    exact: dict[str, Callable[[], np.ndarray]] = {}  # key -> reader of the model's own values
    raw_blobs: dict[int, bytes] = {}
    for i, ref in enumerate(refs):
        why = raw_reason(ref, consumers)
        pair = plan_u.pairs[i] if plan_u is not None else None
        if pair is not None:
            j, status = pair[0], pair[1]
            prev = prev_list[j]
            if status == "frozen":  # bit-identical values (content digest, dtype and shape included)
                modes.append("same")
                reasons.append("unchanged since the previous model")
                bases[i] = j
                continue
            same_decl = prev.tensor.data_type == ref.tensor.data_type and list(prev.tensor.dims) == list(ref.tensor.dims)
            if same_decl and why is None:
                a_new = tensor_array(loaded, ref.tensor)
                a_old = tensor_array(previous, prev.tensor)
                if not (np.all(np.isfinite(a_new)) and np.all(np.isfinite(a_old))):
                    pass  # coded whole (or raw) below
                elif _norm(a_new.astype(np.float64) - a_old) >= _norm(a_new):
                    why_whole[i] = ("changed by more than its own size since the previous model "
                                    "(re-initialised?): coded whole")
                else:
                    # values are read again from the models when needed: the search holds no copies
                    cands.append(Candidate(ref.key, _delta_reader(loaded, ref.tensor, previous, prev.tensor),
                                           _reader(previous, prev.tensor), shape=a_new.shape))
                    exact[ref.key] = _reader(loaded, ref.tensor)
                    cand_index[ref.key] = i
                    modes.append("delta")
                    reasons.append(strategy)
                    bases[i] = j
                    continue
                del a_new, a_old
        if why is None:
            arr = tensor_array(loaded, ref.tensor)
            if not np.all(np.isfinite(arr)):
                why = "contains NaN or infinity"
            else:
                read = _reader(loaded, ref.tensor)
                cands.append(Candidate(ref.key, read, shape=arr.shape, rms=tensor_rms(arr.astype(np.float32))))
                exact[ref.key] = read
                cand_index[ref.key] = i
                modes.append("nnc")
                reasons.append(why_whole.get(i, strategy))
                continue
        modes.append("raw")
        reasons.append(why)
        raw_blobs[i] = _serialise_raw(_inline_tensor(loaded, ref.tensor))

    # calibration, reference outputs and the weight-feeding runner
    if calibration_samples is None:
        calibration_samples = default_calibration_samples(shapes)
    feeds, source = calibration_feeds(loaded.proto, shapes, calibration, calibration_samples, seed)
    if progress is not None:
        progress("reference outputs", 0, 1)
    # the original file's outputs for the final check, now, while this process holds the least
    # memory (one onnxruntime session at a time); timed with the check, not with the encoding
    t_ref = time.perf_counter()
    final_ref = _original_outputs(loaded, feeds)
    final_base = _comparable_outputs(previous, feeds, final_ref) if previous is not None else None
    release_memory()
    reference_s = time.perf_counter() - t_ref
    runner = WeightFeedRunner(loaded, [c.key for c in cands])
    # the exact weights, fed for every tensor a sensitivity probe leaves alone; dropped before the
    # closed loop, which feeds a full reconstruction every time
    runner.set_defaults({k: read() for k, read in exact.items()})
    ref_out = runner.run({}, feeds)
    if sensitivity_samples is None:  # deterministic: from the input size, never from timings
        per_sample = sum(int(a.size) for a in feeds[0].values())
        sensitivity_samples = int(SENSITIVITY_INPUT_ELEMENTS // max(per_sample, 1))
    sens_feeds = feeds[: max(1, min(sensitivity_samples, len(feeds)))]
    # a delta's error is relative to the update's own effect (the previous model's outputs), when the
    # previous model's outputs are comparable with the new one's; else to the new model's outputs
    base_out = final_base
    reference = Reference.of(runner.output_names, ref_out, base_out)
    sens_ref = Reference.of(runner.output_names, ref_out[: len(sens_feeds)],
                            None if base_out is None else base_out[: len(sens_feeds)])
    search_bound = FidelityBound(bound.max_rel_error * margin, bound.min_top1_agreement, bound.rel_error_on_classifiers)

    def sens_score(w: dict) -> float:
        release_memory()  # what the last probe or quantisation freed (a fragmented heap keeps it)
        return compare(sens_ref, runner.run(w, sens_feeds), search_bound).score()

    def full_fidelity(w: dict) -> Fidelity:
        release_memory()
        return compare(reference, runner.run(w, feeds), search_bound)

    def after_sensitivities() -> None:
        runner.set_defaults({})
        release_memory()

    evaluator = Evaluator(sens_score, full_fidelity, after_sensitivities)
    if strategy == "sensitivity":
        plan = search_sensitivity(cands, evaluator, search_bound, max_units=max_units,
                                  time_limit_s=time_limit_s, clock_start=t_start, seed=seed, progress=progress,
                                  workers=workers)
    else:
        plan = search_single_qp(cands, evaluator, search_bound, time_limit_s=time_limit_s, clock_start=t_start,
                                workers=workers)
    search_s = time.perf_counter() - t_start - reference_s

    # free the search's session and arrays before coding (forked coder processes share the parent's
    # pages) and before the final check: peak memory is then the largest phase's, not the sum
    t_bl = time.perf_counter()
    base = compute_baselines(cands, evaluator, search_bound, workers) if baselines else None
    baselines_s = time.perf_counter() - t_bl  # not part of encode_s
    plan_qps = dict(plan.qps)
    search_stats = (plan.strategy, plan.iterations, plan.sensitivity_runs)
    levels = plan.levels
    runner = evaluator = plan = exact = None  # noqa: F841 (drop the references)
    ref_out = base_out = reference = sens_ref = None  # noqa: F841
    release_memory()

    # entropy coding, once
    if progress is not None:
        progress(f"entropy coding ({len(cands)} tensors)", 0, 1)
    t_ec = time.perf_counter()
    items = [_nncore.CodedTensor(f"t{cand_index[c.key]}", levels[c.key], plan_qps[c.key]) for c in cands]
    levels = None
    nnc_stream, unit_bytes = _nncore.encode(items, workers)
    items = None
    entropy_s = time.perf_counter() - t_ec

    entries, raw_parts, offset = [], [], 0
    for i, mode in enumerate(modes):
        if mode == "raw":
            blob = raw_blobs[i]
            entries.append(Entry(i, "raw", offset, len(blob)))
            raw_parts.append(blob)
            offset += len(blob)
        else:
            entries.append(Entry(i, mode, base=bases.get(i, -1)))
    container = Container(loaded.sha256, previous.sha256 if previous is not None else None, keys_digest(keys),
                          len(refs), tuple(entries), nnc_stream, b"".join(raw_parts),
                          *((plan_u.patch, plan_u.graph_sha256, plan_u.removed) if plan_u is not None else ()))
    blob = pack(container)
    nnc_len = len(nnc_stream)
    container = raw_parts = nnc_stream = None  # noqa: F841 (the container holds the only copy)
    encode_s = time.perf_counter() - t_start - baselines_s - reference_s
    coded_bytes = {c.key: n for c, n in zip(cands, unit_bytes)}
    coded_float_bytes = sum(c.n * 4 for c in cands)
    cands = None
    release_memory()

    # decode what we wrote, and check the reconstructed model for real
    if progress is not None:
        progress("decoding and checking the reconstructed model", 0, 1)
    fidelity, decode_s = _final_fidelity(blob, previous if previous is not None else loaded, final_ref,
                                         final_base, feeds, bound, workers)
    final_ref = final_base = None
    if not fidelity.meets:
        raise TransferError(
            f"the decoded model misses the fidelity bound (relative error {fidelity.max_rel_error:.4g}, "
            f"bound {bound.max_rel_error:g}) although the search met it: onnxruntime differs between runs?")

    choices = []
    for i, ref in enumerate(refs):
        mode = modes[i]
        qp = plan_qps.get(ref.key) if mode in ("nnc", "delta") else None
        choices.append(TensorChoice(
            key=ref.key, mode=mode, shape=tuple(int(d) for d in ref.tensor.dims), dtype=int(ref.tensor.data_type),
            original_bytes=tensor_nbytes(ref.tensor), qp=qp,
            step=_nncore.step_for_qp(qp) if qp is not None else None,
            coded_bytes=coded_bytes.get(ref.key) if mode in ("nnc", "delta") else (len(raw_blobs[i]) if mode == "raw" else None),
            reason=reasons[i], base_key=prev_list[bases[i]].key if i in bases else None,
            matched_by=plan_u.pairs[i][2] if plan_u is not None and plan_u.pairs[i] is not None else None))
    qps = [c.qp for c in choices if c.qp is not None]
    qp_summary = QpSummary(min(qps), float(statistics.median(qps)), max(qps), len(set(qps))) if qps else QpSummary(None, None, None, 0)
    original_bytes = sum(tensor_nbytes(r.tensor) for r in refs)
    hdr = header_size(blob)
    raw_section = len(blob) - hdr - nnc_len

    result = NncResult(
        original_bytes=original_bytes, coded_float_bytes=coded_float_bytes, compressed_bytes=len(blob),
        nnc_bytes=nnc_len, raw_section_bytes=raw_section, header_bytes=hdr,
        ratio=len(blob) / original_bytes if original_bytes else 1.0,
        nnc_ratio=nnc_len / coded_float_bytes if coded_float_bytes else 1.0,
        qp=qp_summary, tensors=tuple(choices), fidelity=fidelity, bound=bound, calibration=source,
        calibration_samples=len(feeds), strategy=search_stats[0], search_iterations=search_stats[1],
        sensitivity_runs=search_stats[2], encode_s=encode_s, search_s=search_s,
        entropy_coding_s=entropy_s, decode_s=decode_s, delta=previous is not None,
        base_sha256=previous.sha256 if previous is not None else None, model_sha256=loaded.sha256,
        baselines=base, bitstream=blob,
        update=plan_u.summary(section_sizes(blob)["graph"], whole_model=False) if plan_u is not None else None)
    if plan_u is not None and whole is not None and whole.bound == bound and result.compressed_bytes > whole.compressed_bytes:
        # an update never costs more than the whole model: send the whole-model coding instead
        alt = _whole_as_update(loaded, previous, plan_u, whole, {}, LARGER_THAN_WHOLE)
        if alt.compressed_bytes < result.compressed_bytes:
            return alt
    return result


# --------------------------------------------------------------------------------------------
# Updates across graphs


@dataclass(frozen=True)
class UpdatePlan:
    """How the new model's stored tensors relate to the previous model's, and the graph patch."""

    pairs: tuple
    """Per new tensor (stored-tensor order): ``(previous index, "frozen" | "fine-tuned", matched_by)`` or None (new)."""
    removed: tuple[str, ...]
    patch: bytes | None
    """The graph patch (:mod:`eeki_label.transfer.graphdiff`); None when the skeletons are identical."""
    graph_sha256: str | None

    @property
    def in_common(self) -> int:
        return sum(1 for p in self.pairs if p is not None)

    def summary(self, graph_section_bytes: int, whole_model: bool, whole_reason: str | None = None) -> UpdateSummary:
        how: dict[str, int] = {}
        for p in self.pairs:
            if p is not None:
                how[p[2]] = how.get(p[2], 0) + 1
        return UpdateSummary(self.patch is not None, graph_section_bytes, whole_model, self.removed, how,
                             whole_reason)


def plan_update(loaded: LoadedModel, previous: LoadedModel) -> UpdatePlan:
    """Pair ``loaded``'s stored tensors with ``previous``'s as the recycling stage does
    (:func:`eeki_label.recycle.match_tensors`), and make the patch from the previous graph to the new
    one (checked: applying it rebuilds the new skeleton bit-exactly)."""
    from eeki_label.recycle import FROZEN, NEW, match_tensors
    from eeki_label.transfer import graphdiff

    match = match_tensors(loaded, previous)
    prev_index = {r.key: j for j, r in enumerate(iter_stored_tensors(previous.proto))}
    # a tensor whose values the previous model holds somewhere (e.g. a name now used by another layer
    # of the same shape) is sent as a copy of those values, whatever the pairing says
    by_digest = {b.digest: b for b in [*(s.base for s in match.statuses if s.base is not None), *match.removed]}
    pairs = []
    for s in match.statuses:
        if s.status == FROZEN:
            pairs.append((prev_index[s.base.key], "frozen", s.matched_by))
        elif s.tensor.digest in by_digest:
            pairs.append((prev_index[by_digest[s.tensor.digest].key], "frozen", "content"))
        elif s.status == NEW:
            pairs.append(None)
        else:
            pairs.append((prev_index[s.base.key], "fine-tuned", s.matched_by))
    pairs = tuple(pairs)
    old, new = graphdiff.skeleton(previous), graphdiff.skeleton(loaded)
    new_sha = graphdiff.digest(new)
    patch = sha = None
    if graphdiff.digest(old) != new_sha:
        patch = graphdiff.make_patch(old, new)
        if graphdiff.digest(graphdiff.apply_patch(old, patch)) != new_sha:
            raise TransferError("the graph patch does not rebuild the new graph (internal check)")
        sha = new_sha
    return UpdatePlan(pairs, tuple(b.key for b in match.removed), patch, sha)


NOTHING_IN_COMMON = "no tensor of the new model is found in the previous one"
LARGER_THAN_WHOLE = "the coded difference came out larger than the whole model coded"


def _whole_as_update(loaded: LoadedModel, previous: LoadedModel, plan: UpdatePlan, whole: "NncResult | None",
                     encode_args: dict, reason: str = NOTHING_IN_COMMON) -> NncResult:
    """The update when the new model shares nothing with ``previous``: the full-model coding (``whole``
    when it is of this model, else coded now) in a delta container that also carries the new graph
    (sent whole, as a patch that replaces everything) and names the previous model."""
    import tempfile

    if whole is None or whole.delta or whole.model_sha256 != loaded.sha256 or whole.bound != encode_args.get("bound", whole.bound):
        whole = encode_model(loaded, **encode_args)
    t0 = time.perf_counter()
    c = unpack(whole.bitstream)
    patch = plan.patch
    sha = plan.graph_sha256
    if patch is None:  # identical skeletons but no tensor in common: the receiver still needs no graph
        sha = None
    blob = pack(Container(loaded.sha256, previous.sha256, c.keys_sha256, c.tensor_count, c.entries, c.nnc, c.raw,
                          patch, sha, plan.removed))
    encode_s = whole.encode_s + (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory(prefix="eeki-nnc-") as d:  # it must decode against the previous model
        t_dec = time.perf_counter()
        write_reconstruction(blob, previous, Path(d), encode_args.get("workers"))
        decode_s = time.perf_counter() - t_dec
    hdr = header_size(blob)
    sizes = section_sizes(blob)
    return replace(whole, compressed_bytes=len(blob), header_bytes=hdr, raw_section_bytes=sizes["raw"],
                   ratio=len(blob) / whole.original_bytes if whole.original_bytes else 1.0, encode_s=encode_s,
                   decode_s=decode_s, delta=True, base_sha256=previous.sha256, baselines=None, bitstream=blob,
                   update=plan.summary(sizes["graph"], whole_model=True, whole_reason=reason))


def _comparable_outputs(previous: LoadedModel, feeds, new_outputs: tuple[list[str], list]) -> "list | None":
    """The previous model's outputs on ``feeds`` when they can stand for "before the update" (same
    output names, shapes and types as the new model's); None when they cannot (other inputs or
    outputs, e.g. a replaced head with another number of classes)."""
    from eeki_label.errors import EekiError

    names, new = new_outputs
    try:
        prev_names, out = run_model(str(previous.path), feeds, f"the previous model {previous.name}")
    except EekiError:
        return None
    if prev_names != names:
        return None
    for a_row, b_row in zip(out, new):
        if any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(a_row, b_row)):
            return None
    return out


def default_calibration_samples(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Synthetic calibration samples for these input shapes: as many as hold
    :data:`SYNTHETIC_INPUT_ELEMENTS` input elements, within [MIN_SYNTHETIC_SAMPLES, MAX_SYNTHETIC_SAMPLES]."""
    per_sample = sum(int(np.prod(shape)) for shape in shapes.values())
    return int(min(max(-(-SYNTHETIC_INPUT_ELEMENTS // max(per_sample, 1)), MIN_SYNTHETIC_SAMPLES),
                   MAX_SYNTHETIC_SAMPLES))


def verify_bitstream(bitstream: bytes, loaded: LoadedModel, shapes: Mapping[str, tuple[int, ...]],
                     bound: FidelityBound, calibration: "Mapping[str, np.ndarray] | None" = None,
                     previous: LoadedModel | None = None, *, relative_to_previous: bool = True,
                     calibration_samples: int | None = None, seed: int = 0, workers: int | None = None) -> Fidelity:
    """The final check of :func:`encode_model` on a stored container: decode it (against
    ``previous`` for a delta), run the reconstruction on the same calibration inputs
    :func:`encode_model` uses by default and compare it with ``loaded``'s outputs under ``bound``
    (for a delta relative to the update's own effect when the previous model's outputs are
    comparable and ``relative_to_previous``, as the coding measured it). Raises TransferError when
    the container does not belong to these models."""
    c = unpack(bytes(bitstream))
    if c.model_sha256 != loaded.sha256 or c.base_sha256 != (previous.sha256 if previous is not None else None):
        raise TransferError("the bitstream belongs to another model (or another previous version)")
    workers = _nncore.default_workers() if workers is None else max(1, int(workers))
    if calibration_samples is None:
        calibration_samples = default_calibration_samples(shapes)
    feeds, _ = calibration_feeds(loaded.proto, shapes, calibration, calibration_samples, seed)
    ref = _original_outputs(loaded, feeds)
    base = _comparable_outputs(previous, feeds, ref) if previous is not None and relative_to_previous else None
    release_memory()
    fidelity, _ = _final_fidelity(bitstream, previous if previous is not None else loaded, ref, base, feeds, bound,
                                  workers)
    return fidelity


def release_memory() -> None:
    """Hand memory freed by the last phase back to the operating system (glibc's ``malloc_trim``;
    a no-op elsewhere). Freed blocks otherwise stay in the process, so that every phase's peak
    would add to the previous phases' leftovers."""
    global _TRIM
    if _TRIM is None:
        _TRIM = False
        try:
            import ctypes
            import ctypes.util
            import sys

            if sys.platform.startswith("linux"):
                _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def _norm(a: np.ndarray) -> float:
    return float(np.sqrt(np.sum(np.square(a, dtype=np.float64))))


def _reader(loaded: LoadedModel, tensor: TensorProto) -> Callable[[], np.ndarray]:
    """Reads a stored tensor's values as float32 again on each call (from the model file for the
    loader's on-disk payloads)."""
    return lambda: np.ascontiguousarray(tensor_array(loaded, tensor), dtype=np.float32)


def _delta_reader(new: LoadedModel, t_new: TensorProto, old: LoadedModel, t_old: TensorProto):
    return lambda: (np.ascontiguousarray(tensor_array(new, t_new), dtype=np.float32)
                    - np.ascontiguousarray(tensor_array(old, t_old), dtype=np.float32))


def _original_outputs(loaded: LoadedModel, feeds) -> tuple[list[str], list[list[np.ndarray]]]:
    # the checked file itself (external data stays on disk)
    return run_model(str(loaded.path), feeds, f"the model {loaded.name}")


def _final_fidelity(blob: bytes, decode_with: LoadedModel, original: tuple[list[str], list], base: list | None,
                    feeds, bound: FidelityBound, workers: int) -> tuple[Fidelity, float]:
    """Fidelity of the decoded model against the original file's outputs (names, outputs per
    sample; ``base``: the previous model's, for a delta), and the decoding time in seconds.

    The reconstruction is written to a temporary folder with its tensors in an external data file,
    so that neither a whole in-memory copy of the model nor its serialisation is needed, and run in
    its own onnxruntime session (the only one alive then).
    """
    import tempfile

    names, ref = original
    with tempfile.TemporaryDirectory(prefix="eeki-nnc-") as d:
        t_dec = time.perf_counter()
        path = write_reconstruction(blob, decode_with, Path(d), workers)
        decode_s = time.perf_counter() - t_dec
        release_memory()
        _, out = run_model(str(path), feeds)
    return compare(Reference.of(names, ref, base), out, bound), decode_s


# --------------------------------------------------------------------------------------------
# Decoding


def decode_bitstream(bitstream: bytes, loaded: LoadedModel, workers: int | None = None) -> ModelProto:
    """Rebuild the reconstructed model from a container and the model it belongs to.

    For a full bitstream ``loaded`` must be the encoded model (same sha256); for a delta it must be
    the previous model the delta was made against. Returns a new ModelProto with every tensor
    inline; ``loaded`` is not changed.
    """
    return _reconstruct(bitstream, loaded, workers, _InlineStore())


def write_reconstruction(bitstream: bytes, loaded: LoadedModel, folder: Path, workers: int | None = None) -> Path:
    """Like :func:`decode_bitstream`, but writes the reconstructed model into ``folder`` (``model.onnx``
    plus its tensors in one external data file) one tensor at a time, so that memory stays near the
    decoded NNC tensors alone. Returns the model file's path."""
    folder = Path(folder)
    used = {e.value for t in iter_all_tensors(loaded.proto) for e in t.external_data if e.key == "location"}
    name = "reconstruction.weights"
    while name in used:
        name = "_" + name
    with open(folder / name, "wb") as f:
        model = _reconstruct(bitstream, loaded, workers, _ExternalStore(f, name))
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                "string_data", "external_data", "data_location")


class _InlineStore:
    """Writes reconstructed tensors into the model itself (every tensor inline)."""

    location = None

    def array(self, t: TensorProto, arr: np.ndarray) -> None:
        t.CopyFrom(numpy_helper.from_array(arr, t.name))

    def proto(self, t: TensorProto, new: TensorProto) -> None:
        t.CopyFrom(new)

    def stored_bytes(self, t: TensorProto, data: bytes) -> None:
        """``t``'s own stored bytes (its raw_data layout), read from the loaded model's storage."""
        del t.external_data[:]
        t.ClearField("data_location")
        t.raw_data = data


class _ExternalStore(_InlineStore):
    """Appends each decoded NNC tensor's bytes to an open external data file and leaves only a
    reference in the model (no payload passes through the protobuf message, whose arena would keep
    every copy until the whole model is freed); tensors under :attr:`MIN_BYTES`, raw ones and
    unchanged ones stay inline."""

    MIN_BYTES = 1024

    def __init__(self, f, location: str):
        self.f, self.location, self.offset = f, location, 0

    def _refer(self, t: TensorProto, data: np.ndarray) -> None:
        n = data.nbytes
        self.f.write(data)
        for name in _DATA_FIELDS:
            t.ClearField(name)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", str(self.offset)), ("length", str(n))):
            e = t.external_data.add()
            e.key, e.value = k, v
        self.offset += n

    def array(self, t: TensorProto, arr: np.ndarray) -> None:
        if arr.nbytes < self.MIN_BYTES:
            return super().array(t, arr)
        self._refer(t, np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).reshape(-1).view(np.uint8))


def _reconstruct(bitstream: bytes, loaded: LoadedModel, workers: int | None, store: _InlineStore) -> ModelProto:
    """The reconstructed model: a copy of ``loaded``'s graph (or, for an update that carries a graph
    section, the new graph rebuilt from ``loaded``'s) whose tensors ``store`` fills in, one at a time
    (decoded NNC tensors, raw tensors, unchanged tensors of the previous model, then every tensor
    still on ``loaded``'s storage)."""
    from eeki_label.transfer import graphdiff

    c = unpack(bytes(bitstream))
    if c.base_sha256 is not None:
        if loaded.sha256 != c.base_sha256:
            raise TransferError(
                f"this bitstream is an update against the model with sha256 {c.base_sha256[:16]}..., but "
                f"{loaded.name} has sha256 {loaded.sha256[:16]}...: pass the previous model it was made against")
    elif loaded.sha256 != c.model_sha256:
        raise TransferError(
            f"this bitstream belongs to the model with sha256 {c.model_sha256[:16]}..., but {loaded.name} "
            f"has sha256 {loaded.sha256[:16]}...: pass the model it was encoded from")
    base_refs = list(iter_stored_tensors(loaded.proto))  # the previous model's own tensors (read only)
    if c.graph is not None:
        if c.base_sha256 is None:
            raise TransferError("NNC bitstream carries a graph section but names no previous model")
        model = graphdiff.apply_patch(graphdiff.skeleton(loaded), c.graph)
        if graphdiff.digest(model) != c.graph_sha256:
            raise TransferError("NNC bitstream graph section does not rebuild the graph it declares")
    else:
        model = ModelProto()
        model.CopyFrom(loaded.proto)  # payloads stay where the loader keeps them until replaced
    refs = list(iter_stored_tensors(model))
    if len(refs) != c.tensor_count or keys_digest([r.key for r in refs]) != c.keys_sha256:
        raise TransferError("the model's stored tensors do not match the bitstream's (different graph)")
    workers = _nncore.default_workers() if workers is None else max(1, int(workers))
    for e in c.entries:
        if not 0 <= e.index < len(refs):
            raise TransferError("NNC bitstream names a tensor index outside the model")
        if e.mode in ("same", "delta"):
            if c.base_sha256 is None or not 0 <= e.base < len(base_refs):
                raise TransferError("NNC bitstream names a previous-model tensor outside that model")
            b, t = base_refs[e.base].tensor, refs[e.index].tensor
            if b.data_type != t.data_type or list(b.dims) != list(t.dims):
                raise TransferError(f"NNC bitstream pairs {refs[e.index].key} with a previous tensor of another "
                                    "type or shape")
    if c.graph is not None and len({e.index for e in c.entries}) != len(refs):
        raise TransferError("NNC bitstream does not say how every tensor of the new graph is sent")
    total = sum(int(np.prod(refs[e.index].tensor.dims)) for e in c.entries if e.mode in ("nnc", "delta"))
    coded = {f"t{e.index}": e for e in c.entries if e.mode in ("nnc", "delta")}
    # decoded tensors one at a time, each written and dropped before the next (see iter_decode)
    for name, arr in (_nncore.iter_decode(c.nnc, workers, total) if c.nnc else ()):
        e = coded.pop(name, None)
        if e is None:
            continue  # a tensor the container does not list (or listed twice) is ignored
        ref = refs[e.index]
        t = ref.tensor
        shape = tuple(int(d) for d in t.dims)
        if arr.size != int(np.prod(shape)):
            raise TransferError(f"NNC tensor {name} has {arr.size} elements; {ref.key} needs {shape}")
        arr = arr.reshape(shape)
        if e.mode == "delta":
            arr = tensor_array(loaded, base_refs[e.base].tensor).astype(np.float32) + arr
        dtype = np.float16 if t.data_type == TensorProto.FLOAT16 else np.float32
        store.array(t, arr.astype(dtype, copy=False))
        del arr
    if coded:
        e = next(iter(coded.values()))
        raise TransferError(f"NNC bitstream lacks tensor t{e.index} ({refs[e.index].key})")
    for e in c.entries:
        t = refs[e.index].tensor
        if e.mode == "raw":
            if e.offset < 0 or e.offset + e.length > len(c.raw):
                raise TransferError("NNC bitstream raw entry points outside the raw section")
            new = TensorProto()
            try:
                new.ParseFromString(c.raw[e.offset:e.offset + e.length])
            except Exception as err:
                raise TransferError(f"raw tensor for {refs[e.index].key} is corrupt") from err
            new.name = t.name
            store.proto(t, new)
        elif e.mode == "same" and (c.graph is not None or e.base != e.index):
            _copy_payload(store, t, loaded, base_refs[e.base].tensor)
    # what still lives on the loaded model's storage (unchanged tensors of a delta, tensors in other
    # attributes or function bodies): read it inline, so that the result is self-contained
    for t in iter_all_tensors(model):
        if t.data_location == TensorProto.EXTERNAL and not any(
                x.key == "location" and x.value == store.location for x in t.external_data):
            _InlineStore.stored_bytes(store, t, read_external_bytes(loaded, t))  # as materialize() reads them
    return model


def _copy_payload(store: _InlineStore, t: TensorProto, loaded: LoadedModel, src: TensorProto) -> None:
    """Give ``t`` the values of ``loaded``'s tensor ``src`` (same type and shape), bit-exactly."""
    if src.data_location == TensorProto.EXTERNAL:
        _InlineStore.stored_bytes(store, t, read_external_bytes(loaded, src))
        return
    new = TensorProto()
    new.CopyFrom(src)
    new.name = t.name
    store.proto(t, new)


def bitstream_info(bitstream: bytes) -> dict:
    """What a container says about itself (for ``decode`` messages and tests)."""
    c = unpack(bytes(bitstream))
    counts: dict[str, int] = {}
    for e in c.entries:
        counts[e.mode] = counts.get(e.mode, 0) + 1
    return {"model_sha256": c.model_sha256, "base_sha256": c.base_sha256, "tensor_count": c.tensor_count,
            "nnc_bytes": len(c.nnc), "modes": counts, "graph": c.graph is not None, "removed": list(c.removed),
            "nnc_sha256": hashlib.sha256(c.nnc).hexdigest()}


# --------------------------------------------------------------------------------------------
# Baselines


def compute_baselines(cands, evaluator: Evaluator, bound: FidelityBound, workers: int,
                      time_limit_s: float | None = None) -> Baselines:
    """zstd-19, uniform 8-bit + zstd-19 and single-QP NNC on the NNC-coded tensors."""
    float32 = b"".join(c.signal().tobytes() for c in cands)
    zstd19 = u8z = None
    u8_fid = None
    try:
        import zstandard
    except ImportError:
        zstandard = None
    q8, recon = [], {}
    for c in cands:
        x = c.signal()
        lo, hi = float(x.min()), float(x.max())
        scale = (hi - lo) / 255.0 if hi > lo else 1.0
        q = np.clip(np.round((x - lo) / scale), 0, 255).astype(np.uint8)
        q8.append(q.tobytes())
        rec = (q.astype(np.float32) * np.float32(scale) + np.float32(lo))
        recon[c.key] = c.with_base(rec)
    if cands:
        u8_fid = evaluator.fidelity(recon)
    del recon
    if zstandard is not None:
        cctx = zstandard.ZstdCompressor(level=19)
        zstd19 = len(cctx.compress(float32))
        u8z = len(cctx.compress(b"".join(q8))) + 8 * len(cands)
    single = sbytes = sfid = ss = se = None
    if cands:
        plan: Plan = search_single_qp(cands, evaluator, bound, time_limit_s=time_limit_s, workers=workers)
        t = time.perf_counter()
        items = [_nncore.CodedTensor(f"t{i}", plan.levels[c.key], plan.qps[c.key]) for i, c in enumerate(cands)]
        stream, _ = _nncore.encode(items, workers)
        se = time.perf_counter() - t
        qps = [plan.qps[c.key] for c in cands if c.ndim >= 2]
        single = qps[0] if qps else None
        sbytes, sfid, ss = len(stream), plan.fidelity, plan.search_s
    return Baselines(len(float32), zstd19, u8z, u8_fid, single, sbytes, sfid, ss, se)
