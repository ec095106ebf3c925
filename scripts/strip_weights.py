#!/usr/bin/env python3
"""Turn an ONNX model into an "architecture-only" model.

Every FLOAT initializer with more than ``--max-elements`` elements (default 16)
is removed from the graph initializers and declared instead as a graph input
with the same name, element type and fixed shape.  Integer initializers (shape
constants, axes, ...) and small float initializers are kept, so that shape
inference still resolves every tensor shape.  ``Constant`` nodes holding large
float tensors are converted in the same way.

The result has the same graph (same nodes, same shapes, same operator counts)
but is only a few kilobytes: handy as a test fixture for tools that analyse
model structure (FLOPs, parameter counts, memory traffic) without running it.

Optionally (``--fold-shapes``) shape arithmetic is folded first: ``Shape``
nodes whose input shape is fully static, and the small integer computations
fed by them (Gather, Add, Div, Slice, Concat, ...), are replaced by
``Constant`` nodes.  The TorchScript exporter emits such sub-graphs for
``x.size()``/``chunk`` even with a fixed input shape; ONNX shape inference
cannot see through some of them (e.g. ``Div``), leaving later tensor shapes
unknown.  After folding every shape is static.

Depends only on ``onnx`` (and numpy, which onnx requires).

Usage:
    python scripts/strip_weights.py IN.onnx OUT.onnx [--max-elements 16] [--fold-shapes]
"""

from __future__ import annotations

import argparse
import math
import sys

import onnx
from onnx import TensorProto, helper

FLOAT_TYPES = {TensorProto.FLOAT}


def _numel(dims) -> int:
    return int(math.prod(dims)) if len(dims) else 1


def strip_model(model: onnx.ModelProto, max_elements: int = 16) -> onnx.ModelProto:
    """Return a copy of *model* with large float weights turned into graph inputs.

    The input model is not modified.  Only the main graph is processed
    (torchvision exports have no subgraphs holding weights).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph

    existing_inputs = {i.name for i in graph.input}
    kept, new_inputs = [], []
    for init in graph.initializer:
        if init.data_type in FLOAT_TYPES and _numel(init.dims) > max_elements:
            if init.name not in existing_inputs:
                new_inputs.append(
                    helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                )
        else:
            kept.append(init)

    # Constant nodes with a large float 'value' attribute -> graph inputs too.
    nodes = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            val = next((a for a in node.attribute if a.name == "value"), None)
            if (
                val is not None
                and val.t.data_type in FLOAT_TYPES
                and _numel(val.t.dims) > max_elements
            ):
                new_inputs.append(
                    helper.make_tensor_value_info(node.output[0], val.t.data_type, list(val.t.dims))
                )
                continue
        nodes.append(node)

    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.extend(new_inputs)
    # Intermediate value_info is recomputed by shape inference; drop it to stay small.
    del graph.value_info[:]
    return out


# Ops that may be evaluated at build time when all their inputs are constant.
_FOLDABLE = {
    "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Floor", "Ceil", "Cast",
    "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Range",
    "Equal", "Less", "Greater", "Where", "Min", "Max", "ReduceProd", "Identity",
}
_MAX_FOLD_ELEMENTS = 64  # never materialise large tensors


def _static_shape(vi):
    dims = vi.type.tensor_type.shape.dim
    if not vi.type.tensor_type.HasField("shape"):
        return None
    if all(d.HasField("dim_value") for d in dims):
        return [d.dim_value for d in dims]
    return None


def _fold_once(model: onnx.ModelProto) -> int:
    """One folding sweep over the main graph; returns the number of nodes folded."""
    import numpy as np
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    # Shapes come from inference on a weight-free copy (cheap for big models).
    inferred = onnx.shape_inference.infer_shapes(strip_model(model), data_prop=True)
    shapes = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        shp = _static_shape(vi)
        if shp is not None:
            shapes[vi.name] = shp

    known = {}
    for init in graph.initializer:
        if _numel(init.dims) <= _MAX_FOLD_ELEMENTS:
            known[init.name] = numpy_helper.to_array(init)
    new_nodes, folded = [], 0
    for node in graph.node:
        value = None
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None and _numel(attr.t.dims) <= _MAX_FOLD_ELEMENTS:
                known[node.output[0]] = numpy_helper.to_array(attr.t)
            new_nodes.append(node)
            continue
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            shp = shapes[node.input[0]]
            if node.op_type == "Size":
                value = np.array(int(np.prod(shp)), dtype=np.int64)
            else:
                attrs = {a.name: a.i for a in node.attribute}
                start, end = attrs.get("start", 0), attrs.get("end", len(shp))
                value = np.array(shp[start:end], dtype=np.int64)
        elif (
            node.op_type in _FOLDABLE
            and node.domain in ("", "ai.onnx")
            and len(node.output) == 1
            and all(i == "" or i in known for i in node.input)
        ):
            inputs = [i for i in node.input if i]
            g = helper.make_graph(
                [node], "fold",
                [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(known[i].dtype),
                                               list(known[i].shape)) for i in dict.fromkeys(inputs)],
                [helper.make_empty_tensor_value_info(node.output[0])],
            )
            m = helper.make_model(g, opset_imports=model.opset_import)
            try:
                value = ReferenceEvaluator(m).run(None, {i: known[i] for i in inputs})[0]
                value = np.asarray(value)
            except Exception:  # leave the node alone if the evaluator can't do it
                value = None
            if value is not None and value.size > _MAX_FOLD_ELEMENTS:
                value = None
        if value is None:
            new_nodes.append(node)
            continue
        known[node.output[0]] = value
        new_nodes.append(helper.make_node(
            "Constant", [], [node.output[0]], name=node.name,
            value=numpy_helper.from_array(value, node.output[0])))
        folded += 1

    # Dead-code elimination: drop nodes/initializers nothing uses any more.
    used = {o.name for o in graph.output}
    live = []
    for node in reversed(new_nodes):
        if any(o in used for o in node.output):
            live.append(node)
            used.update(i for i in node.input if i)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return folded


def fold_static_shapes(model: onnx.ModelProto, max_rounds: int = 50) -> onnx.ModelProto:
    """Return a copy of *model* with static shape arithmetic folded into Constants."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for _ in range(max_rounds):
        if _fold_once(out) == 0:
            break
    del out.graph.value_info[:]
    return out


def check(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run the ONNX checker and strict shape inference; return the inferred model."""
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def strip_file(src: str, dst: str, max_elements: int = 16,
               fold_shapes: bool = False) -> onnx.ModelProto:
    model = onnx.load(src)
    if fold_shapes:
        model = fold_static_shapes(model)
    stripped = strip_model(model, max_elements)
    check(stripped)
    onnx.save(stripped, dst)
    return stripped


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="input ONNX file")
    ap.add_argument("dst", help="output ONNX file (architecture only)")
    ap.add_argument("--max-elements", type=int, default=16,
                    help="float initializers with more elements than this become inputs")
    ap.add_argument("--fold-shapes", action="store_true",
                    help="first fold static Shape/integer arithmetic into Constants")
    args = ap.parse_args(argv)
    stripped = strip_file(args.src, args.dst, args.max_elements, args.fold_shapes)
    print(f"{args.dst}: {stripped.ByteSize()} bytes, "
          f"{len(stripped.graph.input)} inputs, {len(stripped.graph.initializer)} initializers kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
