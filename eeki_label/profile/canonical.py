"""The graph a runtime executes, as opposed to the graph an exporter wrote.

Two exports of one network differ in nodes that do no work at run time: ``Identity`` chains, a
Conv's bias split into a following ``Add``, shape arithmetic on constants, ``Dropout`` in inference.
onnxruntime removes or fuses them when it creates a session (its basic graph optimisations:
constant folding, Identity/Dropout/no-op Cast elimination, Conv+Add/Mul/BatchNormalization fusion,
views for Reshape/Squeeze/Unsqueeze/Flatten). The static profile counts data movement on this
*runtime view* so that the figures depend on the network, not on how it was exported. Roles:

* ``noop``: the node's output aliases its input (``Identity``, ``Dropout`` in inference, ``Cast`` to
  the type it already has, ``Reshape``/``Squeeze``/``Unsqueeze``/``Flatten``): it moves no bytes.
* ``folded``: every input is a stored tensor or the output of another folded node (or, for
  ``Shape``/``Size``, the input's shape is known at the resolved input shapes): computed once when
  the session is created, so it does no MACs and moves no bytes per inference.
* ``fused``: an element-wise ``Add``/``Sub``/``Mul``/``Div`` with a per-channel constant
  operand, or a ``BatchNormalization``, applied to the output of a Conv/ConvTranspose (or an ``Add``
  bias after a Gemm/MatMul) that nothing else reads: the runtime folds it into that node's weights,
  so its output is the producer's and is not written twice.

Weight-like operands may be graph inputs (architecture-only exports declare weights as inputs): a
graph input whose size is the channel count counts as constant for fusion.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx import AttributeProto, GraphProto, NodeProto

from eeki_label.model_io import numel

NOOP_OPS = frozenset({"Identity", "Dropout", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})
#: Operators whose output differs from run to run: never folded.
_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                               "Multinomial", "Bernoulli"})
#: Operators that create a tensor from a shape alone: a constant built by them is a weight made at
#: run time (counted as parameters by the static profile).
GENERATORS = frozenset({"ConstantOfShape", "EyeLike", "Range"})
_FUSE_INTO = frozenset({"Conv", "ConvTranspose", "FusedConv", "NhwcConv", "QLinearConv", "ConvInteger"})
_LINEAR = frozenset({"Gemm", "MatMul", "FusedMatMul", "FusedGemm"})
_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div"})


@dataclass(frozen=True)
class RuntimeView:
    """Roles of one graph's nodes (by index) in the runtime view; unlisted nodes execute as written."""

    roles: dict[int, str]
    constants: frozenset[str]
    """Values known when the session is created: stored tensors and outputs of folded nodes."""
    generated: frozenset[str]
    """Of ``constants``, those computed from a generator (ConstantOfShape...), not read from storage."""


def _cast_is_noop(node: NodeProto, types) -> bool:
    to = next((a.i for a in node.attribute if a.name == "to" and a.type == AttributeProto.INT), None)
    entry = types.get(node.input[0]) if node.input else None
    return to is not None and entry is not None and entry[1] == to


def _dropout_is_noop(node: NodeProto, constants) -> bool:
    # Dropout-12+: a third input training_mode; in inference (absent, or a constant) onnxruntime removes it
    return len(node.input) < 3 or not node.input[2] or node.input[2] in constants


def runtime_view(graph: GraphProto, types, outer_constants: "frozenset[str]" = frozenset(),
                 weight_inputs: "frozenset[str]" = frozenset(), outputs_needed: "frozenset[str] | None" = None
                 ) -> RuntimeView:
    """Roles of ``graph``'s nodes (see the module docstring). ``types`` maps a value name to
    ``(shape or None, elem_type)``; ``outer_constants``: constants of enclosing graphs;
    ``weight_inputs``: graph inputs taken as weights for fusion (architecture-only exports)."""
    constants = set(outer_constants) | {t.name for t in graph.initializer}
    generated: set[str] = set()
    roles: dict[int, str] = {}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                consumers[name] = consumers.get(name, 0) + 1
        for a in node.attribute:  # values a subgraph reads from this scope: not private to one consumer
            if a.type == AttributeProto.GRAPH:
                for sub in a.g.node:
                    for name in sub.input:
                        consumers[name] = consumers.get(name, 0) + 2
    graph_outputs = {o.name for o in graph.output} if outputs_needed is None else set(outputs_needed)
    fusable: set[str] = set()  # outputs a per-channel element-wise node may fuse into
    weights = set(weight_inputs)  # graph inputs taken as weights, and views of them (a bias reshaped to [C, 1, 1])
    for i, node in enumerate(graph.node):
        op = node.op_type
        ins = [x for x in node.input if x]
        has_subgraph = any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)
        if op == "Constant":
            constants.update(o for o in node.output if o)
            continue
        if op in ("Shape", "Size") and ins and _known(types, ins[0]):
            roles[i] = "folded"
            constants.update(o for o in node.output if o)
            continue
        if op not in _NONDETERMINISTIC and not has_subgraph and node.output \
                and (ins or op in GENERATORS) and all(x in constants for x in ins):
            roles[i] = "folded"
            constants.update(o for o in node.output if o)
            if op in GENERATORS or any(x in generated for x in ins):
                generated.update(o for o in node.output if o)
            continue
        if op in NOOP_OPS and (op != "Dropout" or _dropout_is_noop(node, constants)):
            roles[i] = "noop"
        elif op == "Cast" and _cast_is_noop(node, types):
            roles[i] = "noop"
        elif _fuses(node, types, fusable, consumers, graph_outputs, constants | weights):
            roles[i] = "fused"
            fusable.add(node.output[0])
        if roles.get(i) == "noop" and ins and ins[0] in weights | constants:
            weights.update(o for o in node.output if o)
        if roles.get(i) == "noop" and node.op_type in ("Identity", "Dropout", "Cast") and ins \
                and ins[0] in fusable and consumers.get(ins[0], 0) == 1 and ins[0] not in graph_outputs:
            fusable.add(node.output[0])  # the runtime removes the Identity first, then fuses
        if op in _FUSE_INTO or op in _LINEAR:
            if node.output and node.output[0]:
                fusable.add(node.output[0])
    return RuntimeView(roles, frozenset(constants), frozenset(generated))


def _known(types, name: str) -> bool:
    entry = types.get(name)
    return entry is not None and entry[0] is not None


def _fuses(node: NodeProto, types, fusable: set[str], consumers: dict[str, int], graph_outputs: set[str],
           weights: set[str]) -> bool:
    """Whether ``node`` is a per-channel element-wise op or BatchNormalization on the private output
    of a Conv (or a bias Add on a Gemm/MatMul) that a runtime folds into that node."""
    op = node.op_type
    if op not in _ELEMENTWISE and op != "BatchNormalization":
        return False
    ins = [x for x in node.input]
    if len(node.output) != 1 or len(ins) < 2:
        return False
    if op in _ELEMENTWISE:
        if ins[0] in fusable:
            data, others = ins[0], ins[1:]
        elif op in ("Add", "Mul") and ins[1] in fusable:
            data, others = ins[1], ins[:1]
        else:
            return False
    else:
        data, others = ins[0], [x for x in ins[1:5] if x]
    if consumers.get(data, 0) != 1 or data in graph_outputs:
        return False
    y = types.get(data, (None, 0))[0]
    if y is None or len(y) < 2:
        return False
    for x in others:
        if x not in weights:
            return False
        s = types.get(x, (None, 0))[0]
        if s is None:
            return False
        if op == "BatchNormalization":
            if numel(s) != y[1]:
                return False
        elif not _per_channel(s, y):
            return False
    return True


def _per_channel(s: tuple[int, ...], y: tuple[int, ...]) -> bool:
    """A shape that broadcasts onto ``y`` ([N, C, ...] for convolutions, [..., N] for linear layers)
    and varies at most along one axis of size C (channels) or the last axis (features)."""
    if len(s) > len(y) or numel(s) == 1:
        return False  # a scalar (HardSwish's "+ 3") is an activation's arithmetic, not a folded bias
    aligned = (1,) * (len(y) - len(s)) + tuple(s)
    varying = [k for k, d in enumerate(aligned) if d != 1]
    if len(varying) != 1:
        return False
    k = varying[0]
    return aligned[k] == y[k] and k in (1, len(y) - 1)


def describe(noop: int, folded: int, fused: int) -> str:
    """The sentence a label prints about the profiled graph."""
    return ("runtime view of the exported graph (as onnxruntime's basic optimisations leave it): "
            f"{noop} no-op node(s) (Identity, Dropout, same-type Cast, Reshape/Squeeze/Unsqueeze/Flatten views) "
            f"move no bytes, {folded} constant-foldable node(s) run once at load, {fused} element-wise/"
            "BatchNormalization node(s) fused into the preceding Conv/Gemm/MatMul")

