"""Small generated ONNX graphs for the transfer tests (built with onnx.helper, a few hundred kB).

Imported as ``from nnc_models import ...``; the fixtures are in conftest.py beside it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eeki_label.model_io import load_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # images.py
SHARED_MODELS = HERE.parents[1].parent / "shared" / "models"


def _conv_w(rng, cout, cin, k, scale=None):
    fan_in = cin * k * k
    return (rng.standard_normal((cout, cin, k, k)) * (scale or np.sqrt(2.0 / fan_in))).astype(np.float32)


def small_cnn(seed: int = 0, channels: int = 32, with_subgraph: bool = True, classes: int = 10) -> onnx.ModelProto:
    """conv-bn-relu x2 (initializers), a Resize with constant scales, a conv whose weight is a
    Constant node, global pooling, a Gemm classifier with softmax; an If whose branches hold a
    Constant tensor (a subgraph tensor). Input ``x``: [1, 3, 16, 16]; output ``prob``: [1, classes]."""
    rng = np.random.default_rng(seed)
    c = channels
    inits = [
        numpy_helper.from_array(_conv_w(rng, c, 3, 3), "w1"),
        numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array((1 + 0.1 * rng.standard_normal(c)).astype(np.float32), "bn_scale"),
        numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), "bn_bias"),
        numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), "bn_mean"),
        numpy_helper.from_array((0.5 + rng.random(c)).astype(np.float32), "bn_var"),
        numpy_helper.from_array(_conv_w(rng, c, c, 3), "w2"),
        numpy_helper.from_array((rng.standard_normal((classes, c)) * 0.3).astype(np.float32), "fc_w"),
        numpy_helper.from_array((rng.standard_normal(classes) * 0.1).astype(np.float32), "fc_b"),
        numpy_helper.from_array(np.array([1.0, 1.0, 2.0, 2.0], np.float32), "scales"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(True), "cond"),
    ]
    w3 = numpy_helper.from_array(_conv_w(rng, c, c, 1), "w3_value")
    branch_const = numpy_helper.from_array((rng.standard_normal((1, c, 1, 1)) * 0.1).astype(np.float32), "branch_value")
    then_g = helper.make_graph(
        [helper.make_node("Constant", [], ["branch_bias"], value=branch_const),
         helper.make_node("Add", ["pooled", "branch_bias"], ["then_out"])],
        "then", [], [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1, c, 1, 1])])
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["pooled"], ["else_out"])],
        "else", [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, c, 1, 1])])
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Resize", ["r2", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Constant", [], ["w3"], value=w3),
        helper.make_node("Conv", ["up", "w3"], ["c3"]),
        helper.make_node("GlobalAveragePool", ["c3"], ["pooled"]),
    ]
    if with_subgraph:
        nodes.append(helper.make_node("If", ["cond"], ["branched"], then_branch=then_g, else_branch=else_g))
        last = "branched"
    else:
        last = "pooled"
    nodes += [
        helper.make_node("Reshape", [last, "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def wide_mlp(seed: int = 0, width: int = 256, layers: int = 4) -> onnx.ModelProto:
    """A dense net (MatMul + Add + Relu) with ``layers`` hidden layers; input ``x`` [1, 64], output ``y`` [1, 32]."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    prev, dim = "x", 64
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((dim, width)) / np.sqrt(dim)).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array((0.05 * rng.standard_normal(width)).astype(np.float32), f"b{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"h{i}"])]
        prev, dim = f"h{i}", width
    inits.append(numpy_helper.from_array((rng.standard_normal((dim, 32)) / np.sqrt(dim)).astype(np.float32), "w_out"))
    nodes.append(helper.make_node("MatMul", [prev, "w_out"], ["y"]))
    graph = helper.make_graph(nodes, "wide_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save_and_load(model: onnx.ModelProto, path: Path):
    onnx.save(model, str(path))
    return load_model(path)
