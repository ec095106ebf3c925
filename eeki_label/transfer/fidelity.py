"""How closely a reconstructed model matches the original: the bound, the measurement, the runner.

A lossy codec is only acceptable within a **fidelity bound** taken from the rule set
(:class:`FidelityBound`). Fidelity is measured on calibration inputs (the user's, from an ``.npz``,
or deterministic synthetic ones: structured images for image inputs, see
:mod:`~eeki_label.transfer.synthetic`) by running both models with onnxruntime:

* **relative output error** per output: ``||y - y_ref||_2 / ||y_ref||_2``, pooled over all
  calibration samples (sums of squares over every element of every sample), dimensionless;
* **top-1 agreement** for classifier-like outputs (float, rank 2, at least two classes): the
  fraction of rows whose arg-max is unchanged, in [0, 1];
* **exact agreement** for integer/boolean outputs (e.g. an arg-max output): fraction of equal elements.

For a delta (an update against a previous model) the error is taken relative to the update's own
effect: ``||y - y_new|| / ||y_new - y_old||`` (floored at ``1e-4 * ||y_new||``), so the step size
follows the size of the update rather than of the weights.

:class:`WeightFeedRunner` makes the search cheap: it rewrites a copy of the graph so that every coded
tensor becomes a graph input (Constant nodes and initializers are replaced by ``Identity`` nodes fed
from new inputs, also inside If/Loop/Scan bodies through outer-scope references). One onnxruntime
session then evaluates any set of candidate weights without rebuilding the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from onnx import ModelProto, TensorProto, helper

from eeki_label.errors import TransferError
from eeki_label.model_io import LoadedModel, iter_stored_tensors, tensor_array

Feeds = dict[str, np.ndarray]

#: Floor of a delta's output-change norm, relative to the output norm (see the module docstring).
DELTA_NORM_FLOOR = 1e-4


@dataclass(frozen=True)
class FidelityBound:
    """The largest deviation a reconstruction may show on the calibration inputs.

    ``max_rel_error`` (dimensionless, e.g. 0.03 = 3 %) bounds the relative output error of every
    dense output, and of classifier outputs too when ``rel_error_on_classifiers``. ``min_top1_agreement``
    (fraction in [0, 1]) bounds the top-1 agreement of classifier-like outputs and the exact agreement
    of integer outputs.
    """

    max_rel_error: float = 0.03
    min_top1_agreement: float = 1.0
    rel_error_on_classifiers: bool = True

    def __post_init__(self) -> None:
        if not (0.0 < self.max_rel_error < 10.0) or not math.isfinite(self.max_rel_error):
            raise ValueError(f"max_rel_error must be in (0, 10), got {self.max_rel_error}")
        if not (0.0 <= self.min_top1_agreement <= 1.0):
            raise ValueError(f"min_top1_agreement must be in [0, 1], got {self.min_top1_agreement}")


@dataclass(frozen=True)
class OutputFidelity:
    """Fidelity of one model output over all calibration samples."""

    name: str
    kind: str
    """``classifier`` (float, rank 2, >= 2 classes), ``dense`` (other float) or ``exact`` (int/bool)."""
    rel_error: float
    """Pooled relative L2 error (dimensionless); 0 for ``exact`` outputs."""
    max_sample_rel_error: float
    """Worst single-sample relative L2 error (dimensionless)."""
    top1_agreement: float | None
    """Fraction of rows with unchanged arg-max (classifier) or of equal elements (exact); else None."""
    meets: bool


@dataclass(frozen=True)
class Fidelity:
    """Fidelity of a reconstruction against a reference on ``samples`` calibration samples."""

    outputs: tuple[OutputFidelity, ...]
    samples: int
    meets: bool
    relative_to: str = "reference outputs"
    """``reference outputs`` or ``update effect`` (delta coding)."""

    @property
    def max_rel_error(self) -> float:
        """Largest pooled relative error over the float outputs (dimensionless)."""
        vals = [o.rel_error for o in self.outputs if o.kind != "exact"]
        return max(vals) if vals else 0.0

    @property
    def min_top1_agreement(self) -> float | None:
        vals = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(vals) if vals else None

    def score(self) -> float:
        """Mean squared relative error over the float outputs (what the QP search predicts)."""
        vals = [o.rel_error ** 2 for o in self.outputs if o.kind != "exact"]
        return float(np.mean(vals)) if vals else 0.0


def output_kind(ref: np.ndarray) -> str:
    if ref.dtype.kind not in "fc":
        return "exact"
    if ref.ndim == 2 and ref.shape[1] >= 2:
        return "classifier"
    return "dense"


@dataclass
class Reference:
    """Reference outputs per sample (list over samples of list over outputs) and their norms."""

    names: list[str]
    outputs: list[list[np.ndarray]]
    norms_sq: list[list[float]] = field(default_factory=list)
    relative_to: str = "reference outputs"

    @classmethod
    def of(cls, names: Sequence[str], outputs: list[list[np.ndarray]],
           base_outputs: "list[list[np.ndarray]] | None" = None) -> "Reference":
        norms = []
        for s, outs in enumerate(outputs):
            row = []
            for j, y in enumerate(outs):
                if y.dtype.kind not in "fc":
                    row.append(0.0)
                    continue
                y64 = y.astype(np.float64)
                n = float(np.sum(y64 * y64))
                if base_outputs is not None:
                    d = y64 - base_outputs[s][j].astype(np.float64)
                    n = max(float(np.sum(d * d)), (DELTA_NORM_FLOOR ** 2) * n)
                row.append(n)
            norms.append(row)
        return cls(list(names), outputs, norms, "update effect" if base_outputs is not None else "reference outputs")


def compare(reference: Reference, outputs: list[list[np.ndarray]], bound: FidelityBound) -> Fidelity:
    """Fidelity of ``outputs`` (same layout as ``reference.outputs``) under ``bound``."""
    result = []
    n_samples = len(reference.outputs)
    for j, name in enumerate(reference.names):
        kind = output_kind(reference.outputs[0][j])
        if kind == "exact":
            eq = sum(int(np.sum(outputs[s][j] == reference.outputs[s][j])) for s in range(n_samples))
            tot = sum(int(reference.outputs[s][j].size) for s in range(n_samples))
            agree = eq / tot if tot else 1.0
            result.append(OutputFidelity(name, kind, 0.0, 0.0, agree, agree >= bound.min_top1_agreement))
            continue
        err_sq = 0.0
        ref_sq = 0.0
        worst = 0.0
        rows = agree_rows = 0
        for s in range(n_samples):
            y = outputs[s][j].astype(np.float64)
            r = reference.outputs[s][j].astype(np.float64)
            if y.shape != r.shape:
                raise TransferError(f"output {name!r} changed shape from {r.shape} to {y.shape}")
            e = float(np.sum((y - r) ** 2)) if np.all(np.isfinite(y)) else math.inf
            n = reference.norms_sq[s][j]
            err_sq += e
            ref_sq += n
            worst = max(worst, _ratio(e, n))
            if kind == "classifier":
                rows += r.shape[0]
                agree_rows += int(np.sum(np.argmax(y, axis=1) == np.argmax(r, axis=1)))
        rel = _ratio(err_sq, ref_sq)
        top1 = agree_rows / rows if kind == "classifier" and rows else None
        if kind == "classifier":
            ok = top1 is not None and top1 >= bound.min_top1_agreement
            if bound.rel_error_on_classifiers:
                ok = ok and rel <= bound.max_rel_error
        else:
            ok = rel <= bound.max_rel_error
        result.append(OutputFidelity(name, kind, rel, worst, top1, bool(ok)))
    return Fidelity(tuple(result), n_samples, all(o.meets for o in result), reference.relative_to)


def _ratio(err_sq: float, ref_sq: float) -> float:
    if err_sq == 0.0:
        return 0.0
    if not math.isfinite(err_sq):
        return math.inf
    if ref_sq <= 0.0:
        return math.inf
    return math.sqrt(err_sq / ref_sq)


# --------------------------------------------------------------------------------------------
# Calibration inputs


def calibration_feeds(model: ModelProto, shapes: Mapping[str, tuple[int, ...]],
                      calibration: "Mapping[str, np.ndarray] | None", samples: int = 4,
                      seed: int = 0) -> tuple[list[Feeds], str]:
    """Calibration feeds and where they came from (``calibration data`` or ``synthetic``).

    ``calibration`` maps input names to arrays (e.g. from an ``.npz``). An array whose rank is the
    input's rank plus one holds one sample per entry of its first axis; an array of the input's own
    rank is cut along its first (batch) axis into samples of the resolved batch size (a stack of 8
    images for a 1x3xHxW input gives 8 samples). Every input must be given, with the same number of samples, the resolved
    shape and a castable dtype. Without calibration data, ``samples`` deterministic synthetic feeds are
    made with seeds ``seed .. seed + samples - 1`` (:func:`synthetic_feeds`: structured images for
    image-like inputs, not noise).
    """
    from eeki_label.profile.shapes import graph_inputs

    inputs = graph_inputs(model)
    if calibration is None:
        return [synthetic_feeds(model, shapes, seed + i) for i in range(samples)], "synthetic"
    names = [vi.name for vi in inputs]
    missing = [n for n in names if n not in calibration]
    if missing:
        raise TransferError(f"calibration data lacks input(s) {missing}; it has {sorted(calibration)}")
    per_input: dict[str, list[np.ndarray]] = {}
    for vi in inputs:
        arr = np.asarray(calibration[vi.name])
        want = tuple(shapes[vi.name])
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if arr.ndim == len(want) + 1:
            items = [arr[i] for i in range(arr.shape[0])]
        elif arr.ndim == len(want) and arr.ndim >= 1 and want[0] > 0 and tuple(arr.shape[1:]) == want[1:] \
                and arr.shape[0] % want[0] == 0:
            items = [arr[i:i + want[0]] for i in range(0, arr.shape[0], want[0])]
        else:
            raise TransferError(f"calibration input {vi.name!r} has shape {arr.shape}; expected {want} "
                                f"or (samples, *{want})")
        for it in items:
            if tuple(it.shape) != want:
                raise TransferError(f"calibration input {vi.name!r} sample has shape {it.shape}, expected {want}")
        try:
            per_input[vi.name] = [np.ascontiguousarray(it.astype(dtype, casting="same_kind"))
                                  for it in items]
        except TypeError as e:
            raise TransferError(f"calibration input {vi.name!r} has dtype {arr.dtype}, not castable to {dtype}") from e
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1:
        raise TransferError(f"calibration inputs hold different numbers of samples: {sorted(counts)}")
    n = counts.pop()
    if n == 0:
        raise TransferError("calibration data holds no samples")
    return [{k: v[i] for k, v in per_input.items()} for i in range(n)], "calibration data"


def synthetic_feeds(model: ModelProto, shapes: Mapping[str, tuple[int, ...]], seed: int) -> Feeds:
    """One deterministic synthetic sample: structured images (:mod:`~eeki_label.transfer.synthetic`)
    for image-like inputs (float NCHW, 1 or 3 channels), the profiler's feeds for every other input."""
    from eeki_label.profile.runtime import make_feeds
    from eeki_label.profile.shapes import graph_inputs
    from eeki_label.transfer.synthetic import is_image_input, synthetic_image_batch

    feeds = make_feeds(model, dict(shapes), seed)
    for vi in graph_inputs(model):
        x = feeds.get(vi.name)
        if x is not None and is_image_input(x.shape, x.dtype):
            feeds[vi.name] = synthetic_image_batch(x.shape, x.dtype, seed)
    return feeds


# --------------------------------------------------------------------------------------------
# Running models


def _session(model: "ModelProto | str", lean: bool = False):
    """A CPU session. ``lean``: basic graph optimisations only, for sessions on models that hold
    their weights (the extended ones re-lay convolution weights out in blocked copies: on a
    ResNet18-size model the session then takes about 150 MB instead of about 70 MB, and runs a few
    per cent slower). The search's runner, whose weights are inputs, keeps the default level."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4  # failures become one-line errors; onnxruntime's own log stays off stderr
    if lean:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    source = model if isinstance(model, str) else model.SerializeToString()
    try:
        return ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise TransferError(f"onnxruntime could not load the model for the fidelity check: "
                            f"{' '.join(str(e).split())[:300]}") from e


def run_model(model: "ModelProto | str", feeds: Sequence[Feeds],
              what: str = "the reconstructed model") -> tuple[list[str], list[list[np.ndarray]]]:
    """Run a self-contained model (or the model file at a path) on every feed; returns output names
    and outputs per sample. The session is lean (see :func:`_session`) and dropped on return."""
    sess = _session(model, lean=True)
    names = [o.name for o in sess.get_outputs()]
    out = []
    for f in feeds:
        try:
            out.append(sess.run(None, f))
        except Exception as e:
            raise TransferError(f"{what} does not run in onnxruntime: "
                                f"{' '.join(str(e).split())[:300]}") from e
    return names, out


class WeightFeedRunner:
    """One onnxruntime session on a copy of the model whose coded tensors are graph inputs.

    ``keys`` are :func:`~eeki_label.model_io.iter_stored_tensors` keys of tensors in the main graph
    or in If/Loop/Scan bodies (not in function bodies, which cannot see outer-scope values).
    :meth:`run` evaluates the model with any replacement values for those tensors.
    """

    def __init__(self, loaded: LoadedModel, keys: Sequence[str]):
        model = ModelProto()
        model.CopyFrom(loaded.proto)
        _unique_node_names(model)
        wanted = set(keys)
        self.feed_names: dict[str, str] = {}
        self.dtypes: dict[str, np.dtype] = {}
        existing_inputs = {vi.name for vi in model.graph.input}
        graph_by_path = {}
        from eeki_label.model_io import iter_graphs

        for path, g in iter_graphs(model):
            graph_by_path[path] = g
        pending = []
        new_inputs = []
        for i, ref in enumerate(list(iter_stored_tensors(model))):
            t = ref.tensor
            if ref.key not in wanted:
                if t.data_location == TensorProto.EXTERNAL:
                    t.CopyFrom(_inline(loaded, t))
                continue
            if ref.kind not in ("initializer", "constant") or ref.graph_path.startswith("fn:"):
                raise TransferError(f"tensor {ref.key!r} cannot be fed as an input")
            self.dtypes[ref.key] = helper.tensor_dtype_to_np_dtype(t.data_type)
            if ref.kind == "initializer" and ref.graph_path == "" and t.name in existing_inputs:
                # an old-style initializer that is also a graph input: feed it under its own name
                self.feed_names[ref.key] = t.name
            else:
                self.feed_names[ref.key] = f"__eeki_w{i}"
                new_inputs.append(helper.make_tensor_value_info(f"__eeki_w{i}", t.data_type, list(t.dims)))
            pending.append(ref)
        for ref in pending:
            g = graph_by_path[ref.graph_path]
            name = ref.tensor.name
            feed = self.feed_names[ref.key]
            if ref.kind == "initializer":
                _remove_initializer(g, name)
                if feed != name:
                    g.node.insert(0, helper.make_node("Identity", [feed], [name]))
                continue
            out = ref.key.rsplit("constant:", 1)[1]
            for node in g.node:
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output and node.output[0] == out:
                    del node.attribute[:]
                    node.op_type = "Identity"
                    node.domain = ""
                    node.input.append(feed)
                    break
            else:
                raise TransferError(f"Constant node for {ref.key!r} not found")
        model.graph.input.extend(new_inputs)
        self.defaults: dict[str, np.ndarray] = {}
        self.session = _session(model)
        del model
        self.output_names = [o.name for o in self.session.get_outputs()]

    def set_defaults(self, weights: Mapping[str, np.ndarray]) -> None:
        """Values fed for tensors a :meth:`run` call does not override (normally the exact weights)."""
        self.defaults = {self.feed_names[k]: np.ascontiguousarray(v, dtype=self.dtypes[k]) for k, v in weights.items()}

    def run(self, weights: Mapping[str, np.ndarray], feeds: Sequence[Feeds]) -> list[list[np.ndarray]]:
        """Outputs per sample with ``weights`` (key -> array of the tensor's shape) fed in, the
        defaults (:meth:`set_defaults`) for every other coded tensor."""
        wfeed = dict(self.defaults)
        wfeed.update({self.feed_names[k]: np.ascontiguousarray(v, dtype=self.dtypes[k]) for k, v in weights.items()})
        out = []
        for f in feeds:
            try:
                out.append(self.session.run(None, {**f, **wfeed}))
            except Exception as e:
                raise TransferError(f"onnxruntime failed during the fidelity search: "
                                    f"{' '.join(str(e).split())[:300]}") from e
        return out


def _unique_node_names(model: ModelProto) -> None:
    """Give every named node of every graph a distinct name. onnxruntime accepts a model whose nodes
    share a name when its constant folding removes the duplicates (Constant nodes), not once they
    read their values from inputs; names carry no meaning for the computation."""
    from eeki_label.model_io import iter_graphs

    seen: set[str] = set()
    for _, g in iter_graphs(model):
        for node in g.node:
            if not node.name:
                continue
            name, k = node.name, 0
            while name in seen:
                k += 1
                name = f"{node.name}__eeki{k}"
            node.name = name
            seen.add(name)


def _remove_initializer(g, name: str) -> None:
    for j, t in enumerate(g.initializer):
        if t.name == name:
            del g.initializer[j]
            return


def _inline(loaded: LoadedModel, t: TensorProto) -> TensorProto:
    from onnx import numpy_helper

    return numpy_helper.from_array(tensor_array(loaded, t), t.name)
