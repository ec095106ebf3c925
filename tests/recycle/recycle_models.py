"""Builders for the recycling tests: a small CNN base and models derived from it.

Base: Conv(3->8) Relu Conv(8->16) Relu Conv(16->16) Relu GlobalAveragePool Flatten Gemm(16->10),
input 1x3x16x16, every conv 3x3 with padding 1, so the MACs are easy to count by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: The repository root and the architecture-only exports (as in tests/conftest.py; imported from here so that
#: another folder's conftest module cannot shadow them).
ROOT = Path(__file__).resolve().parents[2]
ARCH = ROOT / "tests" / "data" / "arch"
SIDE = 16
#: MACs per node at 1x3x16x16 (output elements x weight elements per output).
CONV_MACS = {"conv1": 8 * SIDE * SIDE * 3 * 9, "conv2": 16 * SIDE * SIDE * 8 * 9, "conv3": 16 * SIDE * SIDE * 16 * 9}


def head_macs(classes: int) -> int:
    return classes * 16


def weights(seed: int = 0, classes: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = np.float32
    return {
        "conv1.w": rng.standard_normal((8, 3, 3, 3)).astype(f), "conv1.b": rng.standard_normal(8).astype(f),
        "conv2.w": rng.standard_normal((16, 8, 3, 3)).astype(f), "conv2.b": rng.standard_normal(16).astype(f),
        "conv3.w": rng.standard_normal((16, 16, 3, 3)).astype(f), "conv3.b": rng.standard_normal(16).astype(f),
        "fc.w": rng.standard_normal((classes, 16)).astype(f), "fc.b": rng.standard_normal(classes).astype(f),
    }


def cnn(w: dict[str, np.ndarray], names: "dict[str, str] | None" = None, as_constants: bool = False,
        weights_as_inputs: bool = False) -> onnx.ModelProto:
    """The CNN with weights ``w`` (keys as in :func:`weights`); ``names`` renames tensors."""
    names = names or {}
    n = {k: names.get(k, k) for k in w}
    classes = w["fc.w"].shape[0]
    nodes = [
        helper.make_node("Conv", ["x", n["conv1.w"], n["conv1.b"]], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", n["conv2.w"], n["conv2.b"]], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", n["conv3.w"], n["conv3.b"]], ["c3"], pads=[1, 1, 1, 1], name="conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", n["fc.w"], n["fc.b"]], ["y"], transB=1, name="fc"),
    ]
    tensors = [numpy_helper.from_array(v, n[k]) for k, v in w.items()]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIDE, SIDE])]
    inits = tensors
    if as_constants:
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in tensors] + nodes
        inits = []
    elif weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in tensors]
        inits = []
    graph = helper.make_graph(nodes, "cnn", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="eeki-tests")


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def new_head(w: dict[str, np.ndarray], classes: int = 2, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = dict(w)
    out["fc.w"] = rng.standard_normal((classes, 16)).astype(np.float32)
    out["fc.b"] = rng.standard_normal(classes).astype(np.float32)
    return out


def fine_tune(w: dict[str, np.ndarray], keys=("conv3.w", "conv3.b"), scale: float = 0.01, seed: int = 3):
    rng = np.random.default_rng(seed)
    out = dict(w)
    for k in keys:
        out[k] = (w[k] + scale * rng.standard_normal(w[k].shape) * np.abs(w[k]).mean()).astype(np.float32)
    return out
