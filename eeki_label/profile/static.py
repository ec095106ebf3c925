"""Static profile: what a model stores and how much arithmetic one inference needs.

Counting conventions (the catalogue is measured with the same code, so candidate and references
are compared like for like):

* **parameters** are the elements of every stored tensor: initializers, ``Constant`` nodes and
  tensors in subgraphs, of any dtype (the small integer shape constants of an export are a few
  dozen elements; ``float_parameters`` counts floating-point tensors alone).
* **macs** are multiply-accumulates of one inference at the resolved input shapes (one MAC = 1),
  counted by the rules of :data:`MAC_RULES` (Conv, grouped and depthwise, ConvTranspose, Gemm, MatMul
  batched and broadcast, Einsum, LSTM/GRU/RNN and their quantised and fused forms; other modules add
  rules with :func:`register_mac_rule`). Element-wise ops, pooling and normalisation are not MACs (as
  in torchvision's published GFLOPS, which count MACs). A Loop body counts its stored trip count
  times, a Scan body the length of its scan input, an If the branch its condition takes (stored, or
  seen by the value probe; both once when unknown); a body whose count is known only at run time
  counts once, and ``loop_bodies`` says how many there are (the figure is then a lower bound).
  ``macs_coverage`` is the share of compute-bearing nodes whose MACs are known.
* **activation_bytes** is the sum of the sizes of every tensor a node produces during one
  inference (what is written to memory), on the *runtime view* of the graph
  (:mod:`eeki_label.profile.canonical`): no-op views, constant-folded nodes and per-channel
  operations fused into a Conv write nothing of their own; **activation_peak_bytes** is the largest
  inputs-plus-outputs working set of any single node, a lower bound on the memory needed.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import onnx
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto

from eeki_label.errors import EekiError, ModelInvalidError, ModelTooLargeError, ShapeError
from eeki_label.model_io import (
    FLOAT_DTYPES,
    LoadedModel,
    dtype_bytes,
    expanded_node_count,
    iter_graphs,
    iter_stored_tensors,
    numel,
    tensor_nbytes,
)
from eeki_label.profile import attention
from eeki_label.profile.canonical import describe, runtime_view
from eeki_label.profile.shapes import Shape, dtype_name, graph_inputs

@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Shape
    dtype: str


@dataclass(frozen=True)
class StaticProfile:
    """Result of the static stage. Sizes in bytes, arithmetic in multiply-accumulates (MACs)."""

    parameters: int
    """Elements of every stored tensor, all graphs (initializers, Constant nodes, subgraphs)."""
    weight_bytes: int
    """Bytes of those tensors as stored (declared dims x dtype size)."""
    float_parameters: int
    """Of ``parameters``, the elements of floating-point tensors (what a weight codec compresses)."""
    stored_tensors: int
    """Number of stored tensors (initializers, Constant values, subgraph tensors)."""
    macs: int
    """Multiply-accumulates for one inference at ``inputs``' shapes."""
    macs_depthwise: int
    """Of ``macs``, those in depthwise convolutions (group == input channels > 1)."""
    macs_by_op: dict[str, int]
    activation_bytes: int
    """Sum of the sizes of all tensors produced by nodes in one inference."""
    activation_elements: int
    """Elements of all tensors produced by nodes in one inference (precision-independent)."""
    activation_peak_bytes: int
    """Largest single-node working set (its activation inputs plus outputs)."""
    activation_peak_elements: int
    """The same working set in elements (precision-independent)."""
    node_count: int
    op_histogram: dict[str, int]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opset: dict[str, int]
    ir_version: int
    producer: str
    loop_bodies: int
    """Subgraph bodies run a number of times not known here; each is counted once, so ``macs`` is a
    lower bound when > 0."""
    unresolved_nodes: tuple[str, ...] = field(default=())
    """Compute nodes whose MACs could not be determined because shapes stayed unknown."""
    uncounted_ops: tuple[tuple[str, int], ...] = field(default=())
    """(operator, nodes) of operators in ``MAC_OPS_NOT_COUNTED``: ``macs`` is a lower bound."""
    subgraph_runs: tuple[tuple[str, "int | None"], ...] = field(default=())
    """(graph path, runs per inference) of every subgraph (None: unknown, counted once)."""
    elapsed_s: float = 0.0
    activation_peak_node: str = ""
    """The node whose working set is ``activation_peak_bytes`` (its name, else ``op#index``)."""
    compute_nodes: int = 0
    """Compute-bearing nodes that run (operators with a MAC rule or in ``MAC_OPS_NOT_COUNTED``; not
    those constant-folded, nor those in an If branch not taken)."""
    compute_nodes_resolved: int = 0
    """Of ``compute_nodes``, those whose MACs per inference are known (a rule, known shapes, and a known
    number of runs of the graph holding them)."""
    unmodelled_ops: tuple[tuple[str, int], ...] = field(default=())
    """(operator, nodes) of compute-bearing nodes whose MACs per inference are not known (no rule,
    unknown shapes, or an unknown number of runs): what keeps ``macs_coverage`` below 1."""
    if_branches: tuple["IfBranch", ...] = field(default=())
    """Every If of the main graph: the branch counted and the MACs of the other."""
    profiled_graph: str = ""
    """Which graph the figures describe (canonical.describe): the runtime view of the export."""
    attention_macs: int = 0
    """Of ``macs``, attention scores and weighted sums (``QK^T``, ``AV``) at the full ``s_q x s_k`` rectangle
    (profile/attention.py), plus projections inside attention kernels."""
    attention_macs_causal: int = 0
    """``attention_macs`` with a causal mask's skipped positions left out (what a causal decoder needs)."""
    attention_causal_declared: bool = False
    """An attention kernel declares a causal mask (plain MatMul chains do not say)."""
    attention_upper_bound: bool = False
    """An attention kernel was counted at a padded or maximum length known only at run time."""

    @property
    def macs_coverage(self) -> float:
        """Share of compute-bearing nodes whose MACs are known (1.0 when there are none)."""
        return self.compute_nodes_resolved / self.compute_nodes if self.compute_nodes else 1.0



@dataclass(frozen=True)
class IfBranch:
    """One If node of the main graph: ``taken`` is ``"then_branch"``/``"else_branch"`` (the branch the
    representative inputs take; None: condition unknown, both counted), MACs of each branch's own nodes
    (None: some unknown)."""

    node: str
    taken: "str | None"
    macs_taken: "int | None"
    macs_other: "int | None"


def _with_fixed_inputs(model: ModelProto, shapes: dict[str, Shape]) -> ModelProto:
    """A structural copy of the model whose inputs carry the resolved shapes.

    Weight payloads are not needed for shape inference: tensors over 64 elements that no shape
    computation reads (floats) are copied without their data, which keeps memory near the size of
    the graph rather than of the weights.
    """
    skeleton = ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    stash: list[tuple[TensorProto, bytes]] = []
    try:
        for ref in iter_stored_tensors(model):
            t = ref.tensor
            if t.data_type in FLOAT_DTYPES and numel(t.dims) > 64 and t.HasField("raw_data"):
                stash.append((t, t.raw_data))
                t.ClearField("raw_data")
        skeleton.graph.CopyFrom(model.graph)
    finally:
        for t, raw in stash:
            t.raw_data = raw
    for ref in iter_stored_tensors(skeleton):
        t = ref.tensor
        if t.data_type in FLOAT_DTYPES and numel(t.dims) > 64 and not t.HasField("raw_data") \
                and t.data_location != TensorProto.EXTERNAL:
            del t.float_data[:]
            del t.double_data[:]
            del t.int32_data[:]
    by_name = {vi.name: vi for vi in skeleton.graph.input}
    for name, dims in shapes.items():
        tt = by_name[name].type.tensor_type
        tt.shape.ClearField("dim")
        for d in dims:
            tt.shape.dim.add().dim_value = d
    return skeleton


#: Wall-clock limit of onnx shape inference, seconds: ``INFER_TIME_BASE_S`` plus ``INFER_TIME_PER_NODE_S``
#: per node once local functions are inlined, at most ``INFER_TIME_LIMIT_S``. Inference is linear in
#: the graph (seconds for 50,000 nodes); a small model that keeps it busy (it has looped forever on an
#: invalid Einsum equation) is stopped after half a minute, not five.
INFER_TIME_BASE_S = 30.0
INFER_TIME_PER_NODE_S = 0.005
INFER_TIME_LIMIT_S = 300.0
#: Memory allowed to onnx shape inference: this much plus ``INFER_MEMORY_PER_BYTE`` per byte of the
#: serialised skeleton (the graph without weight payloads).
INFER_MEMORY_BASE_BYTES = 2 * 1024**3
INFER_MEMORY_PER_BYTE = 64


def _infer(skeleton: ModelProto) -> ModelProto:
    """onnx shape inference with data propagation, in a child process (profile/sandbox.py) under a
    time and memory limit: on absurd declared shapes its C++ code has allocated without bound (a 1-D
    value declared 2^31 long: tens of GB), and malformed models have crashed it. Contradictions
    raise :class:`ShapeError` (exit code 16), exhausted memory :class:`ModelTooLargeError` (11)."""
    import base64

    from eeki_label.errors import RuntimeProfileError
    from eeki_label.profile.sandbox import run_child

    data = skeleton.SerializeToString()
    time_limit_s = min(INFER_TIME_LIMIT_S, INFER_TIME_BASE_S + INFER_TIME_PER_NODE_S * expanded_node_count(skeleton))
    try:
        done = run_child({"task": "infer"}, data, time_limit_s=time_limit_s, max_activation_bytes=None,
                         data_limit_bytes=INFER_MEMORY_BASE_BYTES + INFER_MEMORY_PER_BYTE * len(data),
                         what="onnx shape inference", max_line=8 * len(data) + (1 << 24),
                         option=f"{INFER_TIME_BASE_S:g} s plus {INFER_TIME_PER_NODE_S * 1e3:g} ms per node, at most "
                                f"{INFER_TIME_LIMIT_S:g} s")
        inferred = ModelProto()
        inferred.ParseFromString(base64.b64decode(done.value["model_b64"], validate=True))
    except RuntimeProfileError as e:  # a crash of the child: not onnxruntime's here
        raise ShapeError(f"shape inference failed: {e}") from e
    except EekiError:  # ModelTooLargeError (memory), LimitExceededError (time), ShapeError
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise ShapeError("shape inference answered something that is not a model") from e
    except Exception as e:  # protobuf's DecodeError
        raise ShapeError(f"shape inference answered something that is not a model ({type(e).__name__})") from e
    return inferred


def _tensor_types(graph: GraphProto, outer: dict[str, tuple[Shape | None, int]]) -> dict[str, tuple[Shape | None, int]]:
    """name -> (shape or None if any dim unknown, elem_type) for every typed value of a graph."""
    types = dict(outer)
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        shape: Shape | None = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            shape = None if any(d < 0 for d in dims) else tuple(dims)
        if vi.name not in types or types[vi.name][0] is None:
            types[vi.name] = (shape, tt.elem_type)
    for t in graph.initializer:
        types[t.name] = (tuple(t.dims), t.data_type)
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.type == AttributeProto.TENSOR:
                    types[node.output[0]] = (tuple(a.t.dims), a.t.data_type)
    return types


def _attr(node: NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _int_attr(node: NodeProto, name: str, default: int) -> int:
    """An integer attribute. The checker verifies attribute types only for operators it has a schema
    for; on others (e.g. com.microsoft's FusedConv) a non-integer makes the model invalid here."""
    for a in node.attribute:
        if a.name == name:
            if a.type == AttributeProto.INT or (a.type == AttributeProto.UNDEFINED and a.HasField("i")):
                return int(a.i)
            raise ModelInvalidError(f"node {node.name or node.op_type!r} ({node.op_type}): attribute {name!r} is not "
                                    "an integer")
    return default


def _shape(types, name: str) -> Shape | None:
    entry = types.get(name) if name else None
    return entry[0] if entry else None


def _io(names, i: int) -> str:
    """The ``i``-th input or output name, ``""`` when the node has fewer (possible on operators the
    checker has no schema for, e.g. com.microsoft ones)."""
    return names[i] if len(names) > i else ""


def _einsum_macs(node: NodeProto, types) -> int | None:
    eq = _attr(node, "equation", b"")
    try:
        eq = eq.decode("utf-8") if isinstance(eq, bytes) else str(eq)
    except UnicodeDecodeError:
        return None  # not an equation: not counted
    lhs = eq.replace(" ", "").split("->")[0]
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for term, name in zip(terms, node.input):
        shape = _shape(types, name)
        if shape is None or "." in term or len(term) != len(shape):
            return None
        for letter, d in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), d)
    return numel(list(sizes.values())) if len(terms) > 1 else 0


CONV_WEIGHT_INDEX = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "NhwcConv": 1, "FusedConv": 1}
"""Convolutions and their quantised and fused forms: the index of the weight input ([M, C/group, k...])."""
#: MatMul and its quantised and fused forms (com.microsoft: FusedMatMul, MatMulNBits and MatMulBnb4 for
#: 4-bit weights, MatMulIntegerToFloat, DynamicQuantizeMatMul, GemmFastGelu): MACs = output
#: elements x the last dimension of A (the B index is that of the weight input).
_MATMUL_B_INDEX = {"MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "FusedMatMul": 1, "MatMulNBits": 1,
                   "MatMulBnb4": 1, "MatMulIntegerToFloat": 1, "DynamicQuantizeMatMul": 1, "GemmFastGelu": 1}
#: Gemm and its fused and quantised forms: the index of B (A is input 0; QGemm: A, a_scale, a_zero_point, B, ...).
_GEMM_B_INDEX = {"Gemm": 1, "FusedGemm": 1, "QGemm": 3}
#: Operators that multiply-accumulate but whose MACs no rule of :data:`MAC_RULES` models (attention
#: kernels, deformable convolution, float8 GEMMs): a model using them gets a note that its MACs are a
#: lower bound, and the coverage gate (rules "coverage") withholds its grade. An operator that gets a
#: rule (:func:`register_mac_rule`) leaves this set by itself.
MAC_OPS_NOT_COUNTED = frozenset({
    "Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention", "PackedMultiHeadAttention",
    "QAttention", "QOrderedAttention", "DecoderAttention", "DecoderMaskedMultiHeadAttention",
    "DecoderMaskedSelfAttention", "LongformerAttention", "SparseAttention", "PagedAttention", "RelativePositionBias",
    "DeformConv", "GemmFloat8", "QOrderedMatMul", "QOrderedLongformerAttention", "QOrderedGelu",
    "ConvTransposeWithDynamicPads", "FusedConvTranspose", "AttnLSTM", "QLinearAttention",
}) - attention.MS_KERNELS  # attention kernels: counted by profile/attention.py (registered below)
_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}

MacRule = Callable[[NodeProto, dict], "tuple[int | None, bool]"]
"""``rule(node, types) -> (MACs or None when shapes are unknown, whether depthwise)``; ``types`` maps a
value name to ``(shape or None, elem_type)`` (:func:`_tensor_types`)."""
MAC_RULES: dict[str, MacRule] = {}
"""operator type -> its MAC rule. Every operator listed here, or in :data:`MAC_OPS_NOT_COUNTED`, is
*compute-bearing*: the coverage figure (``macs_coverage``) is the share of those nodes whose MACs are known."""


def register_mac_rule(op_types, rule: MacRule) -> None:
    """Count ``op_types`` (a name or names) with ``rule``: the hook through which other profile
    modules (e.g. attention kernels) extend this table. A later registration replaces an earlier one."""
    for op in ([op_types] if isinstance(op_types, str) else op_types):
        MAC_RULES[op] = rule


def is_compute_bearing(op_type: str) -> bool:
    return op_type in MAC_RULES or op_type in MAC_OPS_NOT_COUNTED


def is_modelled(op_type: str) -> bool:
    return op_type in MAC_RULES


def _ints(node: NodeProto, name: str) -> "list[int] | None":
    for a in node.attribute:
        if a.name == name:
            if a.type == AttributeProto.INTS:
                return [int(v) for v in a.ints]
            raise ModelInvalidError(f"node {node.name or node.op_type!r} ({node.op_type}): attribute {name!r} is not "
                                    "a list of integers")
    return None


def _str_attr(node: NodeProto, name: str, default: str) -> str:
    v = _attr(node, name, default)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else default


def _conv_output_elements(node: NodeProto, x: Shape, w: Shape) -> "int | None":
    """Elements of a convolution's output computed from its input and weight shapes and attributes
    (the output shape is unknown where onnx shape inference has no schema, e.g. com.microsoft ops)."""
    spatial_in = x[1:-1] if node.op_type == "NhwcConv" else x[2:]
    kernel = w[2:]
    n = len(kernel)
    if len(spatial_in) != n or n == 0:
        return None
    strides = _ints(node, "strides") or [1] * n
    dilations = _ints(node, "dilations") or [1] * n
    pads = _ints(node, "pads") or [0] * (2 * n)
    auto_pad = _str_attr(node, "auto_pad", "NOTSET")
    if len(strides) != n or len(dilations) != n or len(pads) != 2 * n or min(strides) < 1:
        return None
    out = []
    for i in range(n):
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-spatial_in[i] // strides[i]))
        else:
            p = 0 if auto_pad == "VALID" else pads[i] + pads[i + n]
            out.append((spatial_in[i] + p - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1)
    if any(d < 0 for d in out):
        return None
    return x[0] * w[0] * numel(out)


def _conv_macs(node: NodeProto, types):
    w = _shape(types, _io(node.input, CONV_WEIGHT_INDEX[node.op_type]))
    if w is None or len(w) < 2:
        return None, False
    y = _shape(types, _io(node.output, 0))
    out = numel(y) if y is not None else None
    if out is None:
        x = _shape(types, _io(node.input, 0))
        out = _conv_output_elements(node, x, w) if x is not None and len(x) >= 3 else None
        if out is None:
            return None, False
    group = _int_attr(node, "group", 1)
    return out * numel(w[1:]), group > 1 and w[1] == 1


def _conv_transpose_macs(node: NodeProto, types):
    x = _shape(types, _io(node.input, 0))
    w = _shape(types, _io(node.input, 1))
    if x is None or w is None:
        return None, False
    return numel(x) * numel(w[1:]), False


def _gemm_macs(node: NodeProto, types):
    a = _shape(types, _io(node.input, 0))
    if a is None or len(a) != 2:
        return None, False
    k = a[0] if _int_attr(node, "transA", 0) else a[1]
    m = a[1] if _int_attr(node, "transA", 0) else a[0]
    b = _shape(types, _io(node.input, _GEMM_B_INDEX[node.op_type]))
    if b is not None and len(b) == 2:
        return m * (b[0] if _int_attr(node, "transB", 0) else b[1]) * k, False
    y = _shape(types, _io(node.output, 0))
    return (numel(y) * k, False) if y is not None else (None, False)


def _broadcast(a: Shape, b: Shape) -> "Shape | None":
    out = []
    for i in range(max(len(a), len(b))):
        x = a[len(a) - 1 - i] if i < len(a) else 1
        y = b[len(b) - 1 - i] if i < len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        out.append(x if y == 1 else y)
    return tuple(reversed(out))


def _matmul_macs(node: NodeProto, types):
    a = _shape(types, _io(node.input, 0))
    if a is None:
        return None, False
    k = a[-1] if a else 1
    if node.op_type in ("MatMulNBits", "MatMulBnb4"):  # B is packed: N and K are attributes
        n_out = _int_attr(node, "N", 0)
        return (numel(a) * n_out, False) if n_out > 0 else (None, False)
    y = _shape(types, _io(node.output, 0))
    if y is not None:
        return numel(y) * k, False
    b = _shape(types, _io(node.input, _MATMUL_B_INDEX[node.op_type]))
    if b is None or len(a) < 1 or len(b) < 1:
        return None, False
    if len(b) == 1:
        return numel(a), False
    batch = _broadcast(a[:-2], b[:-2])
    if batch is None:
        return None, False
    rows = a[-2] if len(a) >= 2 else 1
    return numel(batch) * rows * b[-1] * k, False


def _rnn_macs(node: NodeProto, types):
    """LSTM/GRU/RNN: seq x batch x directions x gates*hidden x (input + hidden) (W: [dirs, gates*H, input])."""
    x = _shape(types, _io(node.input, 0))
    w = _shape(types, _io(node.input, 1))
    r = _shape(types, _io(node.input, 2))
    if x is None or w is None or r is None or len(x) != 3 or len(w) != 3 or len(r) != 3:
        return None, False  # unknown, or ranks the operator does not have (not counted; ORT refuses it)
    seq, batch, inp = x if _int_attr(node, "layout", 0) == 0 else (x[1], x[0], x[2])
    directions, gates_hidden, _ = w
    hidden = r[2]
    return seq * batch * directions * gates_hidden * (inp + hidden), False


def _dynamic_quantize_lstm_macs(node: NodeProto, types):
    """com.microsoft DynamicQuantizeLSTM (onnxruntime's dynamic quantisation of LSTM): the LSTM's
    count, with the int8 weights stored transposed (W: [dirs, input, 4H], R: [dirs, H, 4H])."""
    x = _shape(types, _io(node.input, 0))
    w = _shape(types, _io(node.input, 1))
    r = _shape(types, _io(node.input, 2))
    if x is None or w is None or r is None or len(x) != 3 or len(w) != 3 or len(r) != 3:
        return None, False
    seq, batch, inp = x
    directions, _, gates_hidden = w
    hidden = r[1]
    return seq * batch * directions * gates_hidden * (inp + hidden), False


register_mac_rule(CONV_WEIGHT_INDEX, _conv_macs)
register_mac_rule("ConvTranspose", _conv_transpose_macs)
register_mac_rule(_GEMM_B_INDEX, _gemm_macs)
register_mac_rule(_MATMUL_B_INDEX, _matmul_macs)
register_mac_rule(_RNN_GATES, _rnn_macs)
register_mac_rule("DynamicQuantizeLSTM", _dynamic_quantize_lstm_macs)
register_mac_rule("Einsum", lambda node, types: (_einsum_macs(node, types), False))


def _attention_kernel_macs(node: NodeProto, types) -> tuple[int | None, bool]:
    """com.microsoft attention kernels and the ONNX ``Attention`` op (profile/attention.py); the same op
    name in another domain is not modelled (None: unresolved)."""
    if not attention.is_kernel(node):
        return None, False
    count = attention.kernel_count(node, types)
    return (None if count is None else count.macs), False


register_mac_rule(attention.MS_KERNELS | {"Attention"}, _attention_kernel_macs)


def node_macs(node: NodeProto, types) -> tuple[int | None, bool]:
    """(MACs of one node or None if its shapes are unknown, whether it is a depthwise conv).
    Returns (0, False) for ops that do no multiply-accumulates (and for those no rule models:
    :data:`MAC_OPS_NOT_COUNTED`)."""
    rule = MAC_RULES.get(node.op_type)
    return rule(node, types) if rule is not None else (0, False)


@dataclass(frozen=True)
class SubgraphLink:
    parent: str
    """Path of the graph holding the node (``""``: the main graph)."""
    node: NodeProto
    attribute: str


def subgraph_links(model: ModelProto) -> dict[str, SubgraphLink]:
    """For each subgraph path of :func:`iter_graphs` (bodies of If/Loop/Scan, at any depth), the graph
    and node that hold it. Paths are not split on ``/``: node names may contain it."""
    links: dict[str, SubgraphLink] = {}
    for path, graph in iter_graphs(model):
        if path.startswith("fn:"):
            continue
        for i, node in enumerate(graph.node):
            for a in node.attribute:
                if a.type == AttributeProto.GRAPH:
                    links[f"{path}/{node.name or f'#{i}'}.{a.name}" if path else f"{node.name or f'#{i}'}.{a.name}"
                          ] = SubgraphLink(path, node, a.name)
    return links


#: A Loop trip count above this is taken for the "run until the condition says stop" sentinel that
#: exporters write (2^63 - 1), not for an iteration count: such a loop counts as of unknown length.
MAX_STATIC_TRIP_COUNT = 1_000_000


def _small_int_constants(graph: GraphProto) -> dict[str, int]:
    """Integer scalars (or one-element tensors) a graph stores: initializers and Constant nodes."""
    from onnx import numpy_helper

    out: dict[str, int] = {}
    tensors = [(t.name, t) for t in graph.initializer]
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.type == AttributeProto.TENSOR:
                    tensors.append((node.output[0], a.t))
                elif a.name == "value_int" and a.type == AttributeProto.INT:
                    out[node.output[0]] = int(a.i)
    for name, t in tensors:
        if t.data_type in (TensorProto.INT64, TensorProto.INT32) and numel(t.dims) == 1 \
                and t.data_location != TensorProto.EXTERNAL:
            try:
                out[name] = int(numpy_helper.to_array(t).reshape(-1)[0])
            except (ValueError, IndexError):
                pass
    return out


def iteration_counts(model: ModelProto, graph_types: dict[str, dict], run_values: "dict[str, int] | None" = None
                     ) -> dict[str, "int | None"]:
    """How many times each subgraph runs per run of the graph holding it: a Loop body its trip count
    when that is a stored integer or, for a loop of the main graph, in ``run_values`` (values seen in
    a run; at most ``MAX_STATIC_TRIP_COUNT``; the loop's condition may stop it sooner, so this is an
    upper bound), a Scan body the length of its first scan input, an If branch 1 (both branches are
    counted: an upper bound). None: not known (a trip count computed at run time and not in
    ``run_values``, the "until the condition stops it" sentinel, or an operator not listed here)."""
    graphs = dict(iter_graphs(model))
    links = subgraph_links(model)
    scan_8 = any(o.domain in ("", "ai.onnx") and o.version < 9 for o in model.opset_import)
    constants: dict[str, dict[str, int]] = {}
    counts: dict[str, "int | None"] = {}
    for path, link in links.items():
        node = link.node
        if node.op_type == "If" and node.domain in ("", "ai.onnx"):
            counts[path] = 1
        elif node.op_type == "Loop" and node.domain in ("", "ai.onnx") and link.attribute == "body":
            m = _io(node.input, 0)
            value, where = None, link.parent
            while m and value is None:  # the trip count may be stored in this graph or an enclosing one
                if where not in constants:
                    constants[where] = _small_int_constants(graphs[where])
                value = constants[where].get(m)
                if where not in links:
                    if value is None and run_values:
                        value = run_values.get(m)
                    break
                where = links[where].parent
            counts[path] = value if value is not None and 0 <= value <= MAX_STATIC_TRIP_COUNT else None
        elif node.op_type == "Scan" and node.domain in ("", "ai.onnx") and link.attribute == "body":
            n_scan = _int_attr(node, "num_scan_inputs", 0)
            # Scan-8 scans axis 1 of [batch, sequence, ...] inputs; from Scan-9 on, scan_input_axes (default 0)
            axes = [1] if scan_8 else (_attr(node, "scan_input_axes", None) or [0])
            first = _io(node.input, len(node.input) - n_scan) if 0 < n_scan <= len(node.input) else ""
            shape = _shape(graph_types.get(link.parent, {}), first)
            try:
                axis = int(axes[0])
            except (TypeError, ValueError, IndexError):
                axis = None
            counts[path] = shape[axis] if shape and axis is not None and -len(shape) <= axis < len(shape) else None
        else:
            counts[path] = None
    return counts


def runs_per_inference(links: dict[str, SubgraphLink], counts: dict[str, "int | None"]) -> dict[str, "int | None"]:
    """Runs of every graph per inference: the product of the iteration counts on its way up to the
    main graph (None when one of them is unknown)."""
    runs: dict[str, "int | None"] = {"": 1}

    def of(path: str) -> "int | None":
        if path not in runs:
            link = links.get(path)
            outer = of(link.parent) if link is not None else 1
            runs[path] = None if outer is None or counts.get(path) is None else outer * counts[path]
        return runs[path]

    for path in links:
        of(path)
    return runs


#: Levels of nested If nodes whose taken branch is put in place for the shape probe.
MAX_INLINED_IF_DEPTH = 4


class TypedGraphs(tuple):
    """``(inferred model, {graph path: name -> (shape, elem_type)})``, as :func:`typed_graphs` answers,
    with ``branches``: ``{If branch path: 1 when the representative inputs take it, else 0}`` for the
    If nodes of the main graph whose condition is known (stored, or seen by the value probe)."""

    branches: dict

    def __new__(cls, inferred: ModelProto, graph_types: dict, branches: "dict[str, int] | None" = None):
        self = super().__new__(cls, (inferred, graph_types))
        self.branches = dict(branches or {})
        return self


def _if_conditions(graph: GraphProto) -> dict[str, int]:
    """Stored one-element boolean or integer tensors of a graph (If conditions), as 0/1."""
    from onnx import numpy_helper

    out = {name: int(bool(v)) for name, v in _small_int_constants(graph).items()}
    tensors = [(t.name, t) for t in graph.initializer] + [
        (n.output[0], a.t) for n in graph.node if n.op_type == "Constant" and n.output
        for a in n.attribute if a.name == "value" and a.type == AttributeProto.TENSOR]
    for name, t in tensors:
        if t.data_type == TensorProto.BOOL and numel(t.dims) == 1 and t.data_location != TensorProto.EXTERNAL:
            try:
                out[name] = int(bool(numpy_helper.to_array(t).reshape(-1)[0]))
            except (ValueError, IndexError):
                pass
    return out


def _unknown_names(graph: GraphProto, types, allowed: set[str]) -> set[str]:
    """Inputs and outputs of the compute nodes of ``graph`` whose MACs stay unknown, not yet typed."""
    return {name for node in graph.node if node_macs(node, types)[0] is None
            for name in list(node.input) + list(node.output) if name and _shape(types, name) is None} & allowed


def _apply_probe(types, found, only: "set[str] | None" = None) -> None:
    dtypes = getattr(found, "dtypes", {}) or {}
    for name, dims in found.items():
        if only is not None and name not in only:
            continue
        types[name] = (tuple(dims), dtypes.get(name) or types.get(name, (None, TensorProto.FLOAT))[1])


def typed_graphs(loaded: LoadedModel, shapes: dict[str, Shape], probe=None, value_probe=None) -> TypedGraphs:
    """Shape-inferred structure of the model and, per graph path, ``name -> (shape, elem_type)``.

    The inferred model carries no weight payloads (see :func:`_with_fixed_inputs`). ``probe(names)``,
    when given, supplies concrete shapes of main-graph tensors static inference leaves unknown.
    ``value_probe(names)``, when given, supplies the conditions of main-graph If nodes computed at
    run time; the branch they choose is then probed too (``probe(names, inline=...)`` runs the model
    with that branch in place of the If). Shared by the static profile and by stages that need
    per-node figures (recycling).
    """
    inferred = _infer(_with_fixed_inputs(loaded.proto, shapes))
    graph_types: dict[str, dict] = {}
    links = subgraph_links(inferred)
    for path, graph in iter_graphs(inferred):
        outer = graph_types.get(links[path].parent, {}) if path in links else {}
        graph_types[path] = _tensor_types(graph, outer)
    own = main_graph_names(loaded.proto)
    # If nodes of the main graph: which branch do the representative inputs take?
    ifs = {path: link for path, link in links.items()
           if link.parent == "" and link.node.op_type == "If" and link.node.domain in ("", "ai.onnx")
           and link.attribute in ("then_branch", "else_branch")}
    conditions = _if_conditions(inferred.graph)
    asked = sorted(({_io(link.node.input, 0) for link in ifs.values()} - set(conditions)) & own)
    if asked and value_probe is not None:
        conditions.update({n: int(bool(v)) for n, v in value_probe(asked).items()})
    branches: dict[str, int] = {}
    for path, link in ifs.items():
        cond = conditions.get(_io(link.node.input, 0))
        if cond is not None:
            branches[path] = int((link.attribute == "then_branch") == bool(cond))
    if probe is not None:
        # Shapes static inference could not settle (e.g. a Reshape target computed at run time):
        # ask the runtime once for the concrete shapes of the tensors those nodes touch.
        # Only names of the model's own main graph can be asked for: values inside inlined local
        # functions have names the inliner made up (their nodes stay unresolved when unknown).
        top = graph_types[""]
        missing = sorted((_unknown_names(inferred.graph, top, own)
                          | {o.name for o in inferred.graph.output if _shape(top, o.name) is None}) & own)
        if missing:
            _apply_probe(top, probe(missing))
        # Inside the branches taken: one more run with those branches in place of their If nodes; an If
        # inside a taken branch is decided by the condition seen in that run, and so on (a few levels).
        from eeki_label.errors import RuntimeProfileError, UnsupportedOperatorError

        graph_of = dict(iter_graphs(inferred))
        loaded_ifs = {n.output[0]: n for _, g in iter_graphs(loaded.proto) for n in g.node
                      if n.op_type == "If" and n.output}
        inline: dict[str, str] = {}
        frontier = [path for path, taken in branches.items() if taken]
        for _ in range(MAX_INLINED_IF_DEPTH):
            wanted: dict[str, set[str]] = {}
            inner: dict[str, str] = {}  # If branch path inside a taken branch -> its condition's name
            for path in frontier:
                link = links[path]
                key = _io(link.node.output, 0)
                body = next((a.g for a in loaded_ifs[key].attribute if a.name == link.attribute), None) \
                    if key in loaded_ifs else None
                if body is None:
                    continue
                inline[key] = link.attribute
                body_names = {o for n in body.node for o in n.output}
                wanted[path] = _unknown_names(graph_of[path], graph_types[path], body_names)
                stored = _if_conditions(graph_of[path])
                for sub, sub_link in links.items():
                    if sub_link.parent == path and sub_link.node.op_type == "If" \
                            and sub_link.attribute in ("then_branch", "else_branch"):
                        cond = _io(sub_link.node.input, 0)
                        if cond in stored:
                            branches[sub] = int((sub_link.attribute == "then_branch") == bool(stored[cond]))
                        elif cond in body_names:
                            inner[sub] = cond
            asked_names = set().union(*wanted.values(), set(inner.values())) if wanted else set()
            if not asked_names:
                break
            try:
                found = probe(sorted(asked_names), inline=dict(inline))
            except (RuntimeProfileError, UnsupportedOperatorError):
                break  # the rewritten model does not run: those nodes stay unresolved (and are listed)
            for path, names in wanted.items():
                _apply_probe(graph_types[path], found, names)
            values = getattr(found, "values", {}) or {}
            for sub, cond in inner.items():
                if cond in values:
                    branches[sub] = int((links[sub].attribute == "then_branch") == bool(values[cond]))
            frontier = [sub for sub in inner if branches.get(sub)] + [
                sub for sub, taken in branches.items() if taken and sub not in inner
                and links[sub].parent in frontier]
    return TypedGraphs(inferred, graph_types, branches)


def main_graph_names(model: ModelProto) -> set[str]:
    """Values of the model's own main graph (inputs, initializers, node outputs): the only ones a probe
    can ask onnxruntime for (values inside inlined functions have names the inliner made up)."""
    g = model.graph
    return {n for node in g.node for n in node.output} | {vi.name for vi in g.input} | {t.name for t in g.initializer}


def _runtime_trip_counts(inferred: ModelProto, links, counts, own: set[str]) -> list[str]:
    """Trip-count inputs of main-graph Loops whose count is not stored, to ask a value probe for (a
    stored count above ``MAX_STATIC_TRIP_COUNT`` is the endless-loop sentinel: nothing to ask)."""
    stored = _small_int_constants(inferred.graph)
    return sorted({_io(link.node.input, 0) for path, link in links.items()
                   if link.parent == "" and link.node.op_type == "Loop" and counts.get(path) is None
                   and _io(link.node.input, 0) in own and _io(link.node.input, 0) not in stored})


def static_profile(loaded: LoadedModel, shapes: dict[str, Shape], probe=None, value_probe=None,
                   typed: "tuple[ModelProto, dict[str, dict]] | None" = None) -> StaticProfile:
    """Profile ``loaded`` at the concrete input ``shapes`` (from :func:`resolve_input_shapes`).

    ``probe(names) -> {name: shape}``, when given, supplies concrete shapes of main-graph tensors
    that static shape inference leaves unknown (the pipeline passes
    :func:`eeki_label.profile.runtime.probe_shapes`); without it such nodes are listed in
    ``unresolved_nodes``. ``value_probe(names) -> {name: int}``, when given, supplies trip counts of
    main-graph Loops computed at run time (:func:`eeki_label.profile.runtime.probe_values`).
    ``typed``: the result of :func:`typed_graphs` when the caller has it already (shape inference and
    the probe then do not run again).
    """
    t0 = time.perf_counter()
    model = loaded.proto
    parameters = float_parameters = weight_bytes = stored_tensors = 0
    for ref in iter_stored_tensors(model):
        n = tensor_nbytes(ref.tensor)
        stored_tensors += 1
        parameters += numel(ref.tensor.dims)
        weight_bytes += n
        if ref.tensor.data_type in FLOAT_DTYPES:
            float_parameters += numel(ref.tensor.dims)

    typed = typed or typed_graphs(loaded, shapes, probe, value_probe)
    inferred, graph_types = typed
    branches = dict(getattr(typed, "branches", {}) or {})
    graphs = list(iter_graphs(inferred))
    links = subgraph_links(inferred)
    counts = iteration_counts(inferred, graph_types)
    asked = _runtime_trip_counts(inferred, links, counts, main_graph_names(model)) if value_probe else []
    if asked:
        counts = iteration_counts(inferred, graph_types, value_probe(asked))
    counts.update(branches)  # an If counts the branch its condition takes, not both
    runs = runs_per_inference(links, counts)

    macs = macs_dw = activation = activation_elems = peak = peak_elems = node_count = loops = 0
    compute_nodes = resolved_nodes = 0
    peak_node = ""
    att_macs = att_causal = 0
    att_declared = att_upper = False
    by_op: Counter[str] = Counter()
    hist: Counter[str] = Counter()
    unresolved: list[str] = []
    uncounted: Counter[str] = Counter()
    role_counts: Counter[str] = Counter()
    unmodelled: Counter[str] = Counter()
    branch_macs: dict[str, "int | None"] = {}
    loops = sum(1 for path, link in links.items() if runs.get(path) is None)
    main_inputs = {vi.name for vi in graph_inputs(model)}
    weight_inputs = frozenset(name for name in main_inputs if _shape(graph_types.get("", {}), name) is not None
                              and len(_shape(graph_types[""], name)) <= 4)
    constants_of: dict[str, frozenset[str]] = {}
    for path, graph in graphs:
        types = graph_types[path]
        times = runs.get(path)
        known_runs = times is not None
        times = 1 if times is None else times  # run an unknown number of times: counts once (``loop_bodies``)
        outer = constants_of.get(links[path].parent, frozenset()) if path in links else frozenset()
        view = runtime_view(graph, types, outer, weight_inputs if path == "" else frozenset())
        constants_of[path] = view.constants
        stored = set(view.constants)
        # weights built at run time from a shape (ConstantOfShape + fill): parameters too, as stored ones
        consumed = {x for j, nd in enumerate(graph.node) if j not in view.roles or view.roles[j] != "folded"
                    for x in nd.input}
        parameters += sum(_elements(types, g) for g in view.generated & consumed
                          if types.get(g, (None, 0))[1] in FLOAT_DTYPES)
        path_macs: "int | None" = 0
        for count in attention.graph_attention(graph.node, types, stored).values():
            att_macs += count.macs * times
            att_causal += (count.macs - count.score_macs + count.causal_score_macs) * times
            att_declared |= count.causal
            att_upper |= count.upper_bound
        for i, node in enumerate(graph.node):
            node_count += 1
            hist[node.op_type] += 1
            if node.op_type == "Constant":
                continue
            role = view.roles.get(i)
            n, depthwise = node_macs(node, types)
            if path_macs is not None and role != "folded":
                path_macs = None if n is None else path_macs + n
            if times == 0:
                continue  # the branch an If does not take
            if role:
                role_counts[role] += 1
            if role == "folded":  # computed once when the session is created: no MACs, no bytes per inference,
                peak, peak_elems, peak_node = _peak(  # but the memory it takes then still counts toward the peak
                    node, types, stored, (peak, peak_elems, peak_node), (f"{path}/" if path else "") + (
                        node.name or f"{node.op_type}#{i}"), inputs_too=False)
                continue
            if is_compute_bearing(node.op_type):
                compute_nodes += 1
                if not is_modelled(node.op_type):
                    uncounted[node.op_type] += 1
                if is_modelled(node.op_type) and n is not None and known_runs:
                    resolved_nodes += 1
                else:
                    unmodelled[node.op_type] += 1
            if n is None:
                unresolved.append((f"{path}/" if path else "") + (node.name or f"{node.op_type}#{i}"))
            elif n:
                macs += n * times
                by_op[node.op_type] += n * times
                if depthwise:
                    macs_dw += n * times
            if role is not None:
                continue  # a no-op view or a node fused into its producer: moves no bytes of its own
            out_bytes = sum(_bytes(types, o) for o in node.output if o)
            in_bytes = sum(_bytes(types, x) for x in node.input if x and x not in stored)
            activation += out_bytes * times
            out_elems = sum(_elements(types, o) for o in node.output if o)
            activation_elems += out_elems * times
            if out_bytes + in_bytes > peak:
                peak = out_bytes + in_bytes
                peak_node = (f"{path}/" if path else "") + (node.name or f"{node.op_type}#{i}")
            peak_elems = max(peak_elems, out_elems + sum(_elements(types, x) for x in node.input if x and x not in stored))
        branch_macs[path] = path_macs
    if_branches = []
    for path, link in links.items():
        if link.node.op_type == "If" and link.attribute == "then_branch" and link.parent == "":
            other = path[: -len("then_branch")] + "else_branch"
            name = link.node.name or _io(link.node.output, 0)
            if path in branches:
                taken, skipped = (path, other) if branches[path] else (other, path)
                if_branches.append(IfBranch(name, links[taken].attribute if taken in links else "",
                                            branch_macs.get(taken), branch_macs.get(skipped)))
            else:
                if_branches.append(IfBranch(name, None, branch_macs.get(path), branch_macs.get(other)))

    inputs = tuple(
        TensorInfo(vi.name, shapes[vi.name], dtype_name(vi.type.tensor_type.elem_type)) for vi in graph_inputs(model)
    )
    top_types = graph_types.get("", {})
    outputs = tuple(
        TensorInfo(o.name, tuple(_shape(top_types, o.name) or ()), dtype_name(o.type.tensor_type.elem_type))
        for o in inferred.graph.output
    )
    return StaticProfile(
        parameters=parameters,
        weight_bytes=weight_bytes,
        float_parameters=float_parameters,
        stored_tensors=stored_tensors,
        macs=macs,
        macs_depthwise=macs_dw,
        macs_by_op=dict(sorted(by_op.items())),
        activation_bytes=activation,
        activation_elements=activation_elems,
        activation_peak_bytes=peak,
        activation_peak_elements=peak_elems,
        node_count=node_count,
        op_histogram=dict(sorted(hist.items())),
        inputs=inputs,
        outputs=outputs,
        opset={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        ir_version=model.ir_version,
        producer=" ".join(f"{model.producer_name} {model.producer_version}".split()),
        loop_bodies=loops,
        unresolved_nodes=tuple(unresolved),
        uncounted_ops=tuple(sorted(uncounted.items())),
        compute_nodes=compute_nodes,
        compute_nodes_resolved=resolved_nodes,
        unmodelled_ops=tuple(sorted(unmodelled.items())),
        if_branches=tuple(if_branches),
        profiled_graph=describe(role_counts["noop"], role_counts["folded"], role_counts["fused"]),
        subgraph_runs=tuple((path, n) for path, n in runs.items() if path),
        elapsed_s=time.perf_counter() - t0,
        activation_peak_node=peak_node,
        attention_macs=att_macs,
        attention_macs_causal=att_causal,
        attention_causal_declared=att_declared,
        attention_upper_bound=att_upper,
    )


def check_activation_limit(profile: StaticProfile, max_bytes: "int | None") -> None:
    """Refuse, before anything runs, a model whose largest single-node working set (activation
    inputs plus outputs, at the resolved shapes) exceeds ``max_bytes``: onnxruntime could not run it
    within the same cap. Raises :class:`ModelTooLargeError` (exit code 11)."""
    if max_bytes and profile.activation_peak_bytes > max_bytes:
        raise ModelTooLargeError(
            f"node {profile.activation_peak_node!r} works on {profile.activation_peak_bytes} bytes of activations "
            f"(inputs plus outputs at the resolved input shapes), over the limit of {max_bytes} bytes "
            "(raise it with --max-activation-bytes)")


def _peak(node: NodeProto, types, stored, current: tuple[int, int, str], label: str, inputs_too: bool = True):
    """(peak bytes, peak elements, node) after taking ``node``'s working set into account."""
    peak, peak_elems, peak_node = current
    ins = [x for x in node.input if x and x not in stored] if inputs_too else []
    total = sum(_bytes(types, o) for o in node.output if o) + sum(_bytes(types, x) for x in ins)
    if total > peak:
        peak, peak_node = total, label
    elems = sum(_elements(types, o) for o in node.output if o) + sum(_elements(types, x) for x in ins)
    return peak, max(peak_elems, elems), peak_node


def _elements(types, name: str) -> int:
    entry = types.get(name)
    return numel(entry[0]) if entry and entry[0] is not None else 0


def _bytes(types, name: str) -> int:
    entry = types.get(name)
    if not entry or entry[0] is None:
        return 0
    return numel(entry[0]) * dtype_bytes(entry[1])

