"""Recycling and transfer learning: what a model reuses from a pretrained base, and the training
energy that reuse avoids (BRIEF section 4).

Three questions, each answered by pure functions over loaded models:

1. **With a declared base** (:func:`match_tensors`): every tensor the candidate stores is *frozen*
   (bit-identical to a base tensor), *fine-tuned* (a base tensor of the same role and shape with
   changed values; ``relative_change = ||w - w_base||_2 / ||w_base||_2``, dimensionless) or *new*.
   Tensors are paired in three passes: by value name and shape; then, among the rest, by content
   (sha256 of the values, same shape and dtype); then by structure (the order of the remaining
   tensors' roles, ``consumer op : input index : dtype : shape``, aligned with
   :class:`difflib.SequenceMatcher`), which finds renamed, fine-tuned tensors.
2. **Training energy** (:func:`training_estimate`): multiply-accumulates are attributed to parts
   through the nodes that consume the tensors (per-node MACs from the static profiler's
   ``node_macs``). A node is *trained* when it consumes a fine-tuned or new tensor; a frozen node
   downstream of a trained one must still pass activation gradients back (no weight gradients);
   a frozen node upstream of every trained node runs its forward pass only. With MAC shares
   ``f_trained``, ``f_frozen_backprop``, ``f_frozen_forward`` (summing to 1) and the forward energy
   of one sample ``E_fwd_J`` on the training device class (formula ``roofline-additive-v1``)::

       E_scratch_J   = 3 * E_fwd_J * N * epochs_scratch
       E_recycling_J = 3 * E_fwd_J * N * epochs_finetune          (fine-tune the whole network)
       E_transfer_J  = E_fwd_J * N * (epochs_finetune * m + c)     (train only fine-tuned and new parts)
       m = 3 * f_trained + 2 * f_frozen_backprop + 1 * f_frozen_forward,  c = 0
       with cached features: the frozen forward-only part runs once: m loses its last term, c = f_frozen_forward
       saving_X = E_scratch_J - E_X_J

   (3 = forward + activation gradients + weight gradients, each about one forward pass; factors,
   defaults and their rationale are in the rule set's ``training`` section, rules/README.md.)
3. **Without a base** (:func:`structure_signature`, :func:`match_structure`): the candidate's
   weight layers (op type and weight shape, in graph order; weights wherever declared:
   initializers, ``Constant`` nodes, or typed graph inputs consumed as weights) are aligned with
   each catalogue architecture's signature. The closest family and the share of the candidate's
   weight-layer parameters it covers are reported, with the *potential* saving had the covered
   layers started from that pretrained network. A structural match is not proof of reuse.

Sizes in bytes, energies in joules (Wh, g CO2 and EUR only at the edges, via :mod:`eeki_label.units`).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from eeki_label.errors import CatalogueError
from eeki_label.model_io import (
    FLOAT_DTYPES,
    LoadedModel,
    TensorRef,
    iter_graphs,
    iter_stored_tensors,
    numel,
    tensor_array,
    tensor_nbytes,
)
from eeki_label.profile.shapes import Shape
from eeki_label.profile.static import CONV_WEIGHT_INDEX, node_macs, typed_graphs

FROZEN, FINE_TUNED, NEW = "frozen", "fine-tuned", "new"
#: A relative change at least this large suggests re-initialisation rather than fine-tuning (noted on the label).
REINIT_CHANGE = 0.5
STATUSES = (FROZEN, FINE_TUNED, NEW)
STRUCTURAL_MATCH_STATEMENT = (
    "structural match: the layer types and weight shapes agree with the catalogue architecture; "
    "this is not proof that its pretrained weights were reused"
)

# --------------------------------------------------------------------------------------------
# Nodes: labels, consumers, per-node MACs


def node_label(graph_path: str, index: int, node) -> str:
    """A node's name, or ``<op>#<index in its graph>`` when unnamed; prefixed by its subgraph path."""
    own = node.name or f"{node.op_type}#{index}"
    return f"{graph_path}/{own}" if graph_path else own


@dataclass(frozen=True)
class NodeWork:
    """One node and the multiply-accumulates of one forward pass through it."""

    label: str
    op_type: str
    graph_path: str
    order: int
    """Position in the model's node order (main graph first, topologically sorted)."""
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    macs: int
    """MACs of one forward pass (0 for ops without multiply-accumulates or with unknown shapes)."""
    resolved: bool


def _iter_nodes(model: ModelProto) -> Iterable[tuple[int, str, int, object]]:
    order = 0
    for path, graph in iter_graphs(model):
        for i, node in enumerate(graph.node):
            yield order, path, i, node
            order += 1


def node_work(loaded: LoadedModel, shapes: Mapping[str, Shape],
              probe: "Callable[[list[str]], dict[str, Shape]] | None" = None,
              subgraph_runs: "Mapping[str, int | None] | None" = None, typed=None) -> tuple[NodeWork, ...]:
    """Per-node MACs per inference at the resolved input ``shapes``, with the static profiler's shape
    inference and ``node_macs``; ``probe`` (as for :func:`~eeki_label.profile.static.static_profile`)
    supplies shapes that static inference leaves unknown, ``subgraph_runs`` (the static profile's) how
    often each subgraph runs, ``typed`` the result of ``typed_graphs`` when the caller has it. Their
    sum equals the static profile's ``macs``."""
    inferred, types_by_path = typed or typed_graphs(loaded, dict(shapes), probe)
    runs = dict(subgraph_runs or {})
    out = []
    for order, path, i, node in _iter_nodes(inferred):
        if node.op_type == "Constant":
            macs, ok = 0, True
        else:
            n, _ = node_macs(node, types_by_path[path])
            times = runs.get(path)
            macs, ok = (0, False) if n is None else (int(n) * (1 if times is None else times), True)
        out.append(NodeWork(node_label(path, i, node), node.op_type, path, order, tuple(node.input),
                            tuple(node.output), macs, ok))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Stored tensors


@dataclass(frozen=True)
class StoredTensor:
    """A tensor the model stores, with what matching needs. Sizes in elements and bytes."""

    key: str
    """:class:`~eeki_label.model_io.TensorRef` key (``<graph path>/<kind>:<name>``)."""
    name: str
    """The value name the graph uses (a Constant node's output name for constants)."""
    graph_path: str
    shape: tuple[int, ...]
    dtype: int
    parameters: int
    nbytes: int
    role: str
    """``<op>:<input index>`` of the first consuming node, or ``unused``."""
    position: int
    """Node order of the first consumer (unused tensors sort last)."""
    consumers: tuple[str, ...]
    """Labels of the nodes that consume the tensor."""
    digest: str
    """sha256 of the tensor's values (dtype and shape included)."""

    @property
    def role_token(self) -> str:
        return f"{self.role}:{self.dtype}:{'x'.join(map(str, self.shape))}"


def value_name(ref: TensorRef) -> str:
    """The name a graph uses for a stored tensor (a Constant node's output for constants)."""
    last = ref.key.rsplit("/", 1)[-1]
    if last.startswith("constant:"):
        return last[len("constant:"):].split("~")[0]
    return ref.tensor.name


def _consumer_map(model: ModelProto) -> dict[str, list[tuple[int, str, str, int]]]:
    """value name -> [(node order, node label, op type, input index)] over every graph."""
    out: dict[str, list[tuple[int, str, str, int]]] = {}
    for order, path, i, node in _iter_nodes(model):
        label = node_label(path, i, node)
        for idx, name in enumerate(node.input):
            if name:
                out.setdefault(name, []).append((order, label, node.op_type, idx))
    return out


def _digest(arr: np.ndarray) -> str:
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def stored_tensors(loaded: LoadedModel) -> tuple[StoredTensor, ...]:
    """Every stored tensor of ``loaded`` (one tensor's values in memory at a time)."""
    consumers = _consumer_map(loaded.proto)
    last = 1 << 62
    out = []
    for ref in iter_stored_tensors(loaded.proto):
        name = value_name(ref)
        uses = sorted(consumers.get(name, ()))
        role = f"{uses[0][2]}:{uses[0][3]}" if uses else "unused"
        out.append(StoredTensor(
            key=ref.key, name=name, graph_path=ref.graph_path, shape=tuple(int(d) for d in ref.tensor.dims),
            dtype=int(ref.tensor.data_type), parameters=numel(ref.tensor.dims), nbytes=tensor_nbytes(ref.tensor),
            role=role, position=uses[0][0] if uses else last, consumers=tuple(dict.fromkeys(u[1] for u in uses)),
            digest=_digest(tensor_array(loaded, ref.tensor)),
        ))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Matching a candidate against a declared base


@dataclass(frozen=True)
class TensorStatus:
    """How one candidate tensor relates to the base."""

    tensor: StoredTensor
    status: str
    """``frozen``, ``fine-tuned`` or ``new``."""
    base: StoredTensor | None
    matched_by: str | None
    """``name``, ``content`` or ``structure``; None for new tensors."""
    relative_change: float | None = None
    """||w - w_base||_2 / ||w_base||_2 for fine-tuned float tensors (dimensionless); None otherwise
    (infinite when the base tensor is all zeros)."""
    replaces: str | None = None
    """For a new tensor: the base tensor of the same name but another shape that it replaces."""


@dataclass(frozen=True)
class TensorMatch:
    """Result of :func:`match_tensors`. Parameters are elements of stored tensors."""

    statuses: tuple[TensorStatus, ...]
    """One per candidate tensor, in the candidate's storage order."""
    removed: tuple[StoredTensor, ...]
    """Base tensors no candidate tensor was matched to (e.g. the replaced classifier head)."""
    candidate_parameters: int
    base_parameters: int

    def of(self, status: str) -> tuple[TensorStatus, ...]:
        return tuple(s for s in self.statuses if s.status == status)

    def parameters(self, status: str) -> int:
        return sum(s.tensor.parameters for s in self.of(status))

    def share(self, status: str) -> float:
        return self.parameters(status) / self.candidate_parameters if self.candidate_parameters else 0.0

    def layers(self, status: str) -> tuple[str, ...]:
        """Labels of the nodes consuming tensors of ``status``, in graph order."""
        found = sorted(((s.tensor.position, c) for s in self.of(status) for c in s.tensor.consumers))
        return tuple(dict.fromkeys(c for _, c in found))

    def trained_nodes(self) -> frozenset[str]:
        return frozenset(c for s in self.statuses if s.status != FROZEN for c in s.tensor.consumers)

    def all_keys_match(self) -> bool:
        """Every frozen or fine-tuned tensor was paired with the base tensor of the same key."""
        return all(s.base is not None and s.base.key == s.tensor.key for s in self.statuses if s.status != NEW)


def _relative_change(cand: LoadedModel, c: StoredTensor, base: LoadedModel, b: StoredTensor) -> float | None:
    if c.dtype not in FLOAT_DTYPES or b.dtype not in FLOAT_DTYPES:
        return None
    w = _array(cand, c.key).astype(np.float64)
    w0 = _array(base, b.key).astype(np.float64)
    num = float(np.linalg.norm((w - w0).ravel()))
    den = float(np.linalg.norm(w0.ravel()))
    if den == 0.0:
        return float("inf") if num else 0.0
    return num / den


def _array(loaded: LoadedModel, key: str) -> np.ndarray:
    for ref in iter_stored_tensors(loaded.proto):
        if ref.key == key:
            return tensor_array(loaded, ref.tensor)
    raise KeyError(key)  # pragma: no cover - keys come from the same model


def match_tensors(candidate: LoadedModel, base: LoadedModel,
                  cand_tensors: "Sequence[StoredTensor] | None" = None,
                  base_tensors: "Sequence[StoredTensor] | None" = None) -> TensorMatch:
    """Classify every tensor ``candidate`` stores against ``base`` (see the module docstring)."""
    cts = tuple(cand_tensors) if cand_tensors is not None else stored_tensors(candidate)
    bts = tuple(base_tensors) if base_tensors is not None else stored_tensors(base)
    pair: dict[int, tuple[int, str]] = {}  # candidate index -> (base index, matched_by)
    used: set[int] = set()

    # 1. by value name (and graph), same shape
    by_name: dict[tuple[str, str], list[int]] = {}
    for j, b in enumerate(bts):
        by_name.setdefault((b.graph_path, b.name), []).append(j)
    same_name_other_shape: dict[int, str] = {}
    for i, c in enumerate(cts):
        for j in by_name.get((c.graph_path, c.name), ()):
            if j in used:
                continue
            if bts[j].shape == c.shape:
                pair[i] = (j, "name")
                used.add(j)
                break
            same_name_other_shape[i] = bts[j].name

    # 2. by content: bit-identical values, same shape and dtype (prefer the same role, then the nearest position)
    by_digest: dict[str, list[int]] = {}
    for j, b in enumerate(bts):
        if j not in used:
            by_digest.setdefault(b.digest, []).append(j)
    for i, c in enumerate(cts):
        if i in pair:
            continue
        options = [j for j in by_digest.get(c.digest, ()) if j not in used]
        if options:
            j = min(options, key=lambda j: (bts[j].role != c.role, abs(bts[j].position - c.position)))
            pair[i] = (j, "content")
            used.add(j)

    # 3. by structure: align the remaining tensors' role sequences (order of consumers in the graph)
    rest_c = sorted((i for i in range(len(cts)) if i not in pair), key=lambda i: (cts[i].position, i))
    rest_b = sorted((j for j in range(len(bts)) if j not in used), key=lambda j: (bts[j].position, j))
    sm = difflib.SequenceMatcher(None, [cts[i].role_token for i in rest_c], [bts[j].role_token for j in rest_b],
                                 autojunk=False)
    for a0, b0, size in sm.get_matching_blocks():
        for k in range(size):
            i, j = rest_c[a0 + k], rest_b[b0 + k]
            if cts[i].role != "unused":
                pair[i] = (j, "structure")
                used.add(j)

    statuses = []
    for i, c in enumerate(cts):
        if i not in pair:
            statuses.append(TensorStatus(c, NEW, None, None, replaces=same_name_other_shape.get(i)))
            continue
        j, how = pair[i]
        b = bts[j]
        if b.digest == c.digest:
            statuses.append(TensorStatus(c, FROZEN, b, how))
        else:
            statuses.append(TensorStatus(c, FINE_TUNED, b, how, _relative_change(candidate, c, base, b)))
    removed = tuple(b for j, b in enumerate(bts) if j not in used)
    return TensorMatch(tuple(statuses), removed, sum(c.parameters for c in cts), sum(b.parameters for b in bts))


# --------------------------------------------------------------------------------------------
# Attributing MACs to trained and frozen parts


@dataclass(frozen=True)
class MacSplit:
    """Forward-pass MACs of one sample, split by what training must do with each node."""

    trained: int
    """Nodes that consume a fine-tuned or new tensor: forward + activation and weight gradients."""
    frozen_backprop: int
    """Frozen nodes downstream of a trained node: forward + activation gradients."""
    frozen_forward: int
    """Frozen nodes upstream of every trained node: forward only (cacheable)."""
    unresolved_nodes: int
    """Compute nodes whose MACs are unknown (counted as 0)."""

    @property
    def total(self) -> int:
        return self.trained + self.frozen_backprop + self.frozen_forward


def split_macs(nodes: Sequence[NodeWork], trained_nodes: "frozenset[str] | set[str]") -> MacSplit:
    """Attribute every node's MACs to trained / frozen-with-backprop / frozen-forward-only.

    Downstream means: some input is produced, directly or through other nodes, by a trained node
    (main graph; nodes in subgraphs are classified by their own tensors only)."""
    tainted: set[str] = set()
    trained = backprop = forward = unresolved = 0
    for n in sorted(nodes, key=lambda n: n.order):
        if not n.resolved:
            unresolved += 1
        is_trained = n.label in trained_nodes
        downstream = n.graph_path == "" and any(x in tainted for x in n.inputs)
        if is_trained or downstream:
            tainted.update(o for o in n.outputs if o)
        if is_trained:
            trained += n.macs
        elif downstream:
            backprop += n.macs
        else:
            forward += n.macs
    return MacSplit(trained, backprop, forward, unresolved)


# --------------------------------------------------------------------------------------------
# Training energy


@dataclass(frozen=True)
class TrainingParams:
    """Training assumptions (defaults in the rule set's ``training`` section)."""

    device_class: str
    train_samples: int
    """Samples in the training data set (N)."""
    fine_tune_epochs: int
    """Epochs of recycling and transfer learning."""
    scratch_epochs: int
    scratch_epochs_source: str
    features_cached: bool
    """Whether the frozen forward-only part's features are computed once and reused across epochs."""
    trained_factor: float = 3.0
    frozen_backprop_factor: float = 2.0
    frozen_forward_factor: float = 1.0


@dataclass(frozen=True)
class Scenario:
    """Training energy of one way of obtaining the candidate. Joules."""

    id: str
    """``scratch``, ``recycling`` or ``transfer-learning``."""
    epochs: int
    passes_per_sample: float
    """Forward-pass equivalents per sample over the whole training (epochs x multiplier + one-time cached pass)."""
    energy_j: float
    saving_j: float | None
    """Energy saved against ``scratch`` (None for scratch itself)."""


@dataclass(frozen=True)
class TrainingEstimate:
    forward_energy_per_sample_j: float
    """Energy of one forward pass of one sample on the training device class (J)."""
    split: MacSplit
    multiplier: float
    """m: forward-pass equivalents per sample and epoch for transfer learning."""
    scenarios: tuple[Scenario, ...]
    params: TrainingParams
    nothing_trained: bool


def transfer_multiplier(split: MacSplit, p: TrainingParams) -> tuple[float, float]:
    """(m, c): forward-pass equivalents per sample and epoch of transfer learning, and the one-time
    pass per sample for cached features (see the module docstring)."""
    total = split.total
    if total <= 0:
        return p.trained_factor, 0.0
    f_t, f_bp, f_fw = split.trained / total, split.frozen_backprop / total, split.frozen_forward / total
    m = p.trained_factor * f_t + p.frozen_backprop_factor * f_bp
    if p.features_cached:
        return m, p.frozen_forward_factor * f_fw
    return m + p.frozen_forward_factor * f_fw, 0.0


def training_estimate(forward_energy_j: float, split: MacSplit, p: TrainingParams,
                      nothing_trained: bool = False) -> TrainingEstimate:
    """Energies of scratch training, recycling and transfer learning for ``p.train_samples`` samples.

    ``forward_energy_j`` is one sample's forward pass on the training device class (J). With
    ``nothing_trained`` (the candidate equals its base) transfer learning costs nothing."""
    n = p.train_samples
    scratch_passes = p.trained_factor * p.scratch_epochs
    recycle_passes = p.trained_factor * p.fine_tune_epochs
    m, c = transfer_multiplier(split, p)
    transfer_passes = 0.0 if nothing_trained else p.fine_tune_epochs * m + c
    e_s = forward_energy_j * n * scratch_passes
    scen = (
        Scenario("scratch", p.scratch_epochs, scratch_passes, e_s, None),
        Scenario("recycling", p.fine_tune_epochs, recycle_passes, forward_energy_j * n * recycle_passes,
                 e_s - forward_energy_j * n * recycle_passes),
        Scenario("transfer-learning", p.fine_tune_epochs, transfer_passes, forward_energy_j * n * transfer_passes,
                 e_s - forward_energy_j * n * transfer_passes),
    )
    return TrainingEstimate(forward_energy_j, split, 0.0 if nothing_trained else m, scen, p, nothing_trained)


def training_params(rules_raw: Mapping, *, device_class: str | None = None, train_samples: int | None = None,
                    fine_tune_epochs: int | None = None, scratch_epochs: int | None = None,
                    scratch_epochs_source: str | None = None, features_cached: bool | None = None) -> TrainingParams:
    """Training assumptions: explicit values win, else the rule set's ``training`` defaults.

    ``scratch_epochs`` falls back to ``scratch_epochs`` given by the caller from the catalogue
    (``scratch_epochs_source`` says where it came from), then to the rule set's fallback."""
    t = rules_raw.get("training")
    if not isinstance(t, Mapping):
        raise CatalogueError("the rule set has no 'training' section (needed for training-energy figures)")
    try:
        f = t["factors"]
        return TrainingParams(
            device_class=device_class or str(t["default_device_class"]),
            train_samples=int(train_samples if train_samples is not None else t["train_samples"]),
            fine_tune_epochs=int(fine_tune_epochs if fine_tune_epochs is not None else t["fine_tune_epochs"]),
            scratch_epochs=int(scratch_epochs if scratch_epochs is not None else t["scratch_epochs_fallback"]),
            scratch_epochs_source=scratch_epochs_source or "rule set fallback (training.scratch_epochs_fallback)",
            features_cached=bool(features_cached if features_cached is not None else t["features_cached"]),
            trained_factor=float(f["trained"]), frozen_backprop_factor=float(f["frozen_backprop"]),
            frozen_forward_factor=float(f["frozen_forward"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogueError(f"the rule set's 'training' section is damaged: {e!r}") from e


# --------------------------------------------------------------------------------------------
# Structure signature and catalogue matching


@dataclass(frozen=True)
class Layer:
    """A weight layer: op family and normalised weight shape ([out, in, ...] for FC)."""

    node: str
    op: str
    """``Conv``, ``ConvTranspose``, ``FC`` (Gemm or MatMul with a weight), ``LSTM``, ``GRU``, ``RNN``."""
    weight_shape: tuple[int, ...]
    group: int = 1

    @property
    def token(self) -> str:
        g = f"/g{self.group}" if self.group != 1 else ""
        return f"{self.op}:{'x'.join(map(str, self.weight_shape))}{g}"

    @property
    def parameters(self) -> int:
        return numel(self.weight_shape)


def token_parameters(token: str) -> int:
    """Weight elements of a signature token such as ``Conv:64x3x7x7/g1``."""
    dims = token.split(":", 1)[1].split("/", 1)[0]
    return numel([int(d) for d in dims.split("x") if d])


def _declared_shapes(graph: GraphProto) -> dict[str, tuple[int, ...]]:
    """Shapes of the weights a graph declares: initializers, Constants, and typed graph inputs with
    fixed dims that no node reads as its first input (architecture-only exports declare weights as
    inputs; the data input is what a node reads first)."""
    out: dict[str, tuple[int, ...]] = {}
    data_like = {node.input[0] for node in graph.node if node.input}
    for vi in graph.input:
        tt = vi.type.tensor_type
        if vi.name not in data_like and vi.type.HasField("tensor_type") and tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if dims and all(d > 0 for d in dims):
                out[vi.name] = tuple(dims)
    for t in graph.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.type == AttributeProto.TENSOR:
                    out[node.output[0]] = tuple(int(d) for d in a.t.dims)
    return out


def _int_attr(node, name: str, default: int) -> int:
    from eeki_label.profile.static import _int_attr as checked_int_attr

    return checked_int_attr(node, name, default)  # a non-integer attribute: ModelInvalidError, not a crash


def structure_signature(model: ModelProto) -> tuple[Layer, ...]:
    """The weight layers of the main graph, in order: Conv, ConvTranspose, Gemm/MatMul with a weight
    of declared shape (normalised to [out, in]), LSTM/GRU/RNN. Biases and normalisation layers are
    left out (exports fold batch norm into convolutions or not; the weights carry the structure)."""
    g = model.graph
    shapes = _declared_shapes(g)
    layers = []
    for i, node in enumerate(g.node):
        op = node.op_type
        label = node_label("", i, node)
        if op in CONV_WEIGHT_INDEX or op == "ConvTranspose":
            idx = CONV_WEIGHT_INDEX.get(op, 1)
            w = shapes.get(node.input[idx]) if len(node.input) > idx else None
            if w and len(w) >= 3:
                layers.append(Layer(label, "ConvTranspose" if op == "ConvTranspose" else "Conv", w,
                                    _int_attr(node, "group", 1)))
        elif op == "Gemm" and len(node.input) > 1:
            w = shapes.get(node.input[1])
            if w and len(w) == 2:
                layers.append(Layer(label, "FC", w if _int_attr(node, "transB", 0) else (w[1], w[0])))
        elif op == "MatMul" and len(node.input) > 1:
            w = shapes.get(node.input[1])
            if w and len(w) == 2:
                layers.append(Layer(label, "FC", (w[1], w[0])))
        elif op in ("LSTM", "GRU", "RNN") and len(node.input) > 1:
            w = shapes.get(node.input[1])
            if w:
                layers.append(Layer(label, op, w))
    return tuple(layers)


@dataclass(frozen=True)
class FamilyMatch:
    """How well one catalogue architecture covers the candidate's weight layers."""

    model_id: str
    name: str
    coverage: float
    """Share of the candidate's weight-layer parameters in layers matching the architecture (0..1)."""
    reference_coverage: float
    """Share of the architecture's weight-layer parameters that the candidate's matching layers have."""
    matched_layers: int
    candidate_layers: int
    reference_layers: int
    matched: tuple[bool, ...]
    """Per candidate layer: whether it matches a layer of the architecture (in order)."""


def match_family(layers: Sequence[Layer], model_id: str, name: str, signature: Sequence[str]) -> FamilyMatch:
    tokens = [layer.token for layer in layers]
    sm = difflib.SequenceMatcher(None, tokens, list(signature), autojunk=False)
    matched = [False] * len(tokens)
    for a0, _, size in sm.get_matching_blocks():
        for k in range(size):
            matched[a0 + k] = True
    cand_total = sum(layer.parameters for layer in layers)
    ref_total = sum(token_parameters(t) for t in signature)
    covered = sum(layer.parameters for layer, m in zip(layers, matched) if m)
    return FamilyMatch(
        model_id, name, covered / cand_total if cand_total else 0.0, covered / ref_total if ref_total else 0.0,
        sum(matched), len(tokens), len(signature), tuple(matched))


def match_structure(layers: Sequence[Layer], references: Sequence) -> FamilyMatch | None:
    """The catalogue architecture that covers most of the candidate's weight-layer parameters (ties:
    the one more of whose own parameters are covered); None when none shares a single layer.
    ``references`` need ``id``, ``name`` and ``structure`` (a sequence of signature tokens); those
    without a signature are skipped."""
    best = None
    for ref in references:
        sig = getattr(ref, "structure", ())
        if not sig or not layers:
            continue
        fm = match_family(layers, ref.id, ref.name, sig)
        if best is None or (fm.coverage, fm.reference_coverage) > (best.coverage, best.reference_coverage):
            best = fm
    return best if best is not None and best.matched_layers else None


# --------------------------------------------------------------------------------------------
# The update to ship


@dataclass(frozen=True)
class UpdateSize:
    """What must travel when the base is already on the device. Bytes."""

    changed_tensors: int
    changed_parameters: int
    raw_bytes: int
    """Fine-tuned and new tensors at their declared sizes (raw, e.g. float32)."""
    codec: str
    """``nnc`` when ``coded_bytes`` is an NNC delta container, else ``raw``."""
    coded_bytes: int | None
    note: str | None = None


def update_size(match: TensorMatch, coded_bytes: int | None = None, note: str | None = None) -> UpdateSize:
    changed = [s for s in match.statuses if s.status != FROZEN]
    return UpdateSize(len(changed), sum(s.tensor.parameters for s in changed), sum(s.tensor.nbytes for s in changed),
                      "nnc" if coded_bytes is not None else "raw", coded_bytes, note)


def nnc_update_bytes(candidate: LoadedModel, base: LoadedModel, shapes: Mapping[str, Shape],
                     time_limit_s: float | None = None, bound=None) -> tuple[int | None, str | None]:
    """Bytes of the NNC delta container that turns ``base`` into ``candidate``, or (None, why not).

    The same coder as the transfer stage's delta (:func:`eeki_label.transfer.nnc.encode_model` with
    ``previous=base``): tensors are paired as :func:`match_tensors` pairs them (renamed, added and
    removed tensors included), the container carries the new graph. ``bound`` is the rule set's
    :class:`~eeki_label.transfer.fidelity.FidelityBound` (default: the codec's)."""
    try:
        from eeki_label.transfer.fidelity import FidelityBound
        from eeki_label.transfer.nnc import encode_model
    except ImportError as e:  # the transfer stage is not installed in this build
        return None, f"NNC codec unavailable ({e}); raw bytes of the changed tensors"
    from eeki_label.errors import EekiError, UsageError

    try:
        result = encode_model(candidate, shapes, bound or FidelityBound(), previous=base, time_limit_s=time_limit_s)
    except UsageError:
        raise
    except EekiError as e:
        return None, f"NNC delta coding failed ({type(e).__name__}: {e}); raw bytes of the changed tensors"
    return int(result.compressed_bytes), None


def with_coded_update(result: "RecyclingResult", coded_bytes: int | None, note: str | None) -> "RecyclingResult":
    """``result`` with its update sized by a delta coded elsewhere (the transfer stage's, against the
    same base): one update figure on the label."""
    if result.match is None:
        return result
    return replace(result, update=update_size(result.match, coded_bytes, note))


# --------------------------------------------------------------------------------------------
# The stage: everything above for one candidate, and its label section


@dataclass(frozen=True)
class GridFigures:
    """Grid carbon intensity (g CO2/kWh) and electricity price (EUR/kWh), with their sources."""

    grid_g_per_kwh: float | None
    grid_source: str | None
    price_eur_per_kwh: float | None
    price_source: str | None


def grid_figures() -> GridFigures:
    """The defaults of ``data/energy/transfer.json`` (shared with the transfer stage)."""
    from eeki_label.resources import load_json

    try:
        c = load_json("energy", "transfer.json").content
    except CatalogueError:
        return GridFigures(None, None, None, None)
    try:
        country, price = c["default_country"], c["default_price"]
        g, p = c["grid_g_per_kwh"][country], c["price_eur_per_kwh"][price]
        return GridFigures(float(g["value"]), f"data/energy/transfer.json grid_g_per_kwh.{country}: {g['source']}",
                           float(p["value"]), f"data/energy/transfer.json price_eur_per_kwh.{price}: {p['source']}")
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogueError(f"data/energy/transfer.json is damaged: {e!r}") from e


@dataclass(frozen=True)
class RecyclingOptions:
    """What ``assess`` was asked about training (None: the rule set's default)."""

    train_samples: int | None = None
    fine_tune_epochs: int | None = None
    scratch_epochs: int | None = None
    training_device_class: str | None = None
    features_cached: bool | None = None
    update_codec: str = "auto"
    """``auto``: the NNC delta container when the codec can code the update; ``raw``: never code;
    ``deferred``: the caller sizes it later with the transfer stage's delta (:func:`with_coded_update`)."""
    codec_time_limit_s: float | None = 600.0


@dataclass(frozen=True)
class RecyclingResult:
    basis: str
    """``declared-base`` or ``structural-match``."""
    base: LoadedModel | None
    match: TensorMatch | None
    family: FamilyMatch | None
    family_recognised: bool
    candidate_layers: tuple[Layer, ...]
    training: TrainingEstimate | None
    update: UpdateSize | None
    grid: GridFigures
    notes: tuple[str, ...] = field(default=())


def assess_recycling(loaded: LoadedModel, shapes: Mapping[str, Shape], work, base: LoadedModel | None,
                     rules_raw: Mapping, references: Sequence, devices, options: RecyclingOptions = RecyclingOptions(),
                     probe=None, activation_peak_elements: int = 0,
                     subgraph_runs: "Mapping[str, int | None] | None" = None, typed=None) -> RecyclingResult:
    """The recycling stage. ``work`` is the candidate's :class:`~eeki_label.catalogue.WorkProfile`,
    ``references`` the catalogue models, ``devices`` the device registry, ``subgraph_runs`` and
    ``typed`` the static profile's (see :func:`node_work`)."""
    from eeki_label.energy.estimate import estimate_inference

    params0 = training_params(rules_raw)  # fail early on a rule set without a training section
    min_cov = float(rules_raw["training"].get("min_structural_coverage", 0.5))
    dc = devices.get(options.training_device_class or params0.device_class)
    notes: list[str] = []

    layers = structure_signature(loaded.proto)
    family = match_structure(layers, references)
    recognised = family is not None and family.coverage >= min_cov
    ref = next((r for r in references if family is not None and r.id == family.model_id), None)
    scratch_epochs, source = options.scratch_epochs, "--scratch-epochs" if options.scratch_epochs else None
    if scratch_epochs is None and recognised and ref is not None and getattr(ref, "scratch_epochs", None):
        scratch_epochs = ref.scratch_epochs
        source = f"catalogue {ref.id}: {ref.scratch_epochs_source}"
    p = training_params(rules_raw, device_class=dc.id, train_samples=options.train_samples,
                        fine_tune_epochs=options.fine_tune_epochs, scratch_epochs=scratch_epochs,
                        scratch_epochs_source=source, features_cached=options.features_cached)

    nodes = node_work(loaded, shapes, probe, subgraph_runs, typed)
    fwd = estimate_inference(work, dc, activation_peak_elements).energy_j
    match = update = training = None
    if base is not None:
        basis = "declared-base"
        match = match_tensors(loaded, base)
        trained = match.trained_nodes()
        if fwd is not None:
            training = training_estimate(fwd, split_macs(nodes, trained), p, nothing_trained=not trained)
        coded, why = None, None
        if options.update_codec == "auto" and any(s.status != FROZEN for s in match.statuses):
            coded, why = nnc_update_bytes(loaded, base, shapes, options.codec_time_limit_s, _rules_bound(rules_raw))
        update = update_size(match, coded, why)
        reinit = [s for s in match.of(FINE_TUNED) if s.relative_change is not None and s.relative_change >= REINIT_CHANGE]
        if reinit:
            notes.append(f"{len(reinit)} fine-tuned tensor(s) changed by at least {REINIT_CHANGE:.0%} (relative L2), "
                         "probably re-initialised rather than fine-tuned (e.g. a replaced head of the same shape); "
                         "they count as trained either way")
        if match.candidate_parameters and match.share(FROZEN) == 0 and match.share(FINE_TUNED) == 0:
            notes.append("no tensor of the candidate was found in the declared base")
    else:
        basis = "structural-match"
        if recognised and fwd is not None:
            differing = {layer.node for layer, m in zip(layers, family.matched) if not m}
            if not differing:  # the catalogue architecture itself: transfer learning retrains the head
                differing = {layers[-1].node}
                notes.append(f"every weight layer matches {family.name}; transfer learning is assumed to retrain "
                             f"only the last weight layer ({layers[-1].node}), the usual transfer-learning practice")
            training = training_estimate(fwd, split_macs(nodes, frozenset(differing)), p,
                                         nothing_trained=False)
            notes.append("potential saving: the figures assume the matching layers start from the pretrained "
                         f"{family.name} and stay frozen; {STRUCTURAL_MATCH_STATEMENT}")
        elif family is not None and not recognised:
            notes.append(f"no catalogue architecture covers at least {min_cov:.0%} of the weight-layer parameters "
                         f"(closest: {family.name}, {family.coverage:.1%}); no saving is credited")
        elif not layers:
            notes.append("no weight layers (Conv, Gemm/MatMul with a weight, recurrent) with declared weight shapes")
        else:
            notes.append("no catalogue architecture shares a weight layer (type and shape) with the model")
    if fwd is None:
        notes.append(f"the model does not fit the training device class {dc.id}; no training energy")
    unresolved = sum(1 for n in nodes if not n.resolved)
    if training is not None and unresolved:
        notes.append(f"{unresolved} compute node(s) with unknown shapes count 0 MACs in the training split")
    return RecyclingResult(basis, base, match, family, recognised, layers, training, update, grid_figures(),
                           tuple(notes))


def _rules_bound(rules_raw: Mapping):
    """The rule set's fidelity bound for the update coder (None: the codec's default)."""
    f = rules_raw.get("fidelity") or {}
    try:
        from eeki_label.transfer.fidelity import FidelityBound

        return FidelityBound(max_rel_error=float(f["relative_output_error_max"]),
                             min_top1_agreement=float(f["classifier_top1_agreement_min"]))
    except (ImportError, KeyError, TypeError, ValueError):
        return None


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def recycling_info(r: RecyclingResult, full_model_weight_bytes: int):
    """The label section (:class:`eeki_label.models.RecyclingInfo`) of a :class:`RecyclingResult`."""
    from eeki_label import units
    from eeki_label.models import (
        BaseMatchInfo, ChangedTensorInfo, RecyclingInfo, StructuralMatchInfo, TensorClassInfo, TrainingEnergyInfo,
        TrainingScenarioInfo, UpdateInfo,
    )

    base_info = None
    if r.match is not None and r.base is not None:
        m = r.match

        def cls(status: str) -> TensorClassInfo:
            return TensorClassInfo(tensors=len(m.of(status)), parameters=m.parameters(status), share=m.share(status),
                                   layers=list(m.layers(status)))

        how = [s.matched_by for s in m.statuses]
        base_info = BaseMatchInfo(
            file_name=r.base.name, sha256=r.base.sha256, parameters=m.base_parameters,
            frozen=cls(FROZEN), fine_tuned=cls(FINE_TUNED), new=cls(NEW),
            matched_by_name=how.count("name"), matched_by_content=how.count("content"),
            matched_by_structure=how.count("structure"), removed_tensors=len(m.removed),
            removed_parameters=sum(b.parameters for b in m.removed),
            changed_tensors=[
                ChangedTensorInfo(name=s.tensor.name, status=s.status, shape=list(s.tensor.shape),
                                  parameters=s.tensor.parameters, relative_change=_finite(s.relative_change),
                                  base_name=s.base.name if s.base else None, matched_by=s.matched_by,
                                  replaces=s.replaces, layers=list(s.tensor.consumers))
                for s in sorted(m.statuses, key=lambda s: s.tensor.position) if s.status != FROZEN
            ],
        )
    structure = None
    if r.family is not None:
        f = r.family
        structure = StructuralMatchInfo(
            model_id=f.model_id, name=f.name, coverage=f.coverage, reference_coverage=f.reference_coverage,
            matched_layers=f.matched_layers, candidate_layers=f.candidate_layers, reference_layers=f.reference_layers,
            differing_layers=[layer.node for layer, ok in zip(r.candidate_layers, f.matched) if not ok],
            recognised=r.family_recognised, statement=STRUCTURAL_MATCH_STATEMENT)
    training = None
    if r.training is not None:
        t, g = r.training, r.grid
        scratch_j = t.scenarios[0].energy_j

        def co2(j):
            return None if g.grid_g_per_kwh is None or j is None else units.co2_g(j, g.grid_g_per_kwh)

        def eur(j):
            return None if g.price_eur_per_kwh is None or j is None else units.cost_eur(j, g.price_eur_per_kwh)

        training = TrainingEnergyInfo(
            basis=r.basis, device_class=t.params.device_class, train_samples=t.params.train_samples,
            fine_tune_epochs=t.params.fine_tune_epochs, scratch_epochs=t.params.scratch_epochs,
            scratch_epochs_source=t.params.scratch_epochs_source, features_cached=t.params.features_cached,
            forward_energy_per_sample_j=t.forward_energy_per_sample_j, macs_trained=t.split.trained,
            macs_frozen_backprop=t.split.frozen_backprop, macs_frozen_forward=t.split.frozen_forward,
            transfer_multiplier=t.multiplier, grid_g_per_kwh=g.grid_g_per_kwh, grid_source=g.grid_source,
            price_eur_per_kwh=g.price_eur_per_kwh, price_source=g.price_source, formula=training_formula(t.params),
            scenarios=[
                TrainingScenarioInfo(
                    id=s.id, epochs=s.epochs, passes_per_sample=s.passes_per_sample,
                    energy_wh=units.j_to_wh(s.energy_j), co2_g=co2(s.energy_j), cost_eur=eur(s.energy_j),
                    saving_wh=None if s.saving_j is None else units.j_to_wh(s.saving_j),
                    saving_co2_g=co2(s.saving_j), saving_eur=eur(s.saving_j),
                    saving_share=None if s.saving_j is None or scratch_j <= 0 else s.saving_j / scratch_j)
                for s in t.scenarios
            ],
        )
    update = None
    if r.update is not None:
        u = r.update
        update = UpdateInfo(changed_tensors=u.changed_tensors, changed_parameters=u.changed_parameters,
                            raw_bytes=u.raw_bytes, codec=u.codec, coded_bytes=u.coded_bytes,
                            full_model_weight_bytes=full_model_weight_bytes, note=u.note)
    return RecyclingInfo(basis=r.basis, base=base_info, structure=structure, training=training, update=update,
                         notes=list(r.notes))


def training_formula(p: TrainingParams) -> str:
    """The training-energy formula with the factors in use, in words for the label."""
    t, bp, fw = (f"{x:g}" for x in (p.trained_factor, p.frozen_backprop_factor, p.frozen_forward_factor))
    transfer = (f"epochs_finetune x ({t} f_trained + {bp} f_frozen_backprop) + {fw} f_frozen_forward (features cached)"
                if p.features_cached else
                f"epochs_finetune x ({t} f_trained + {bp} f_frozen_backprop + {fw} f_frozen_forward)")
    return (f"E = E_fwd_J x N x passes; passes: scratch = {t} x epochs_scratch; recycling = {t} x epochs_finetune; "
            f"transfer learning = {transfer}; f = shares of forward MACs; saving = E_scratch - E")


def load_base(path, limits) -> LoadedModel:
    """Load the declared base with the same safe loader and limits as the model."""
    from eeki_label.model_io import load_related

    return load_related(path, limits, "base model (--base)")
