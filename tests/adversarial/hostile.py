"""Builders of hostile and broken ONNX files for the adversarial suite, all small and generated.

Each builder takes the test's ``tmp_path`` and returns the model path (some also create external
data files, folders and symbolic links beside it). Imported as ``from hostile import ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from eeki_label.model_io import _encode_varint
from support import tiny_cnn

OPSET = [helper.make_opsetid("", 17)]


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def model(nodes, inputs, outputs, inits=(), opset=None, **kw) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=opset or OPSET, producer_name="eeki-adversarial", **kw)


def write(m: "onnx.ModelProto | bytes", path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
    return path


def tiny(batch=1) -> onnx.ModelProto:
    return tiny_cnn(batch=batch)


def field(no: int, value, varint: bool = False) -> bytes:
    """One protobuf field: a varint (``varint=True``) or length-delimited bytes."""
    if varint:
        return _encode_varint(no << 3) + _encode_varint(value)
    return _encode_varint(no << 3 | 2) + _encode_varint(len(value)) + value


# --------------------------------------------------------------------------------------------
# External data and symbolic links


def with_external(tmp_path: Path, location: str, *, write_data: bool = True, offset=None, length=None,
                  folder: str = "model") -> Path:
    """tiny_cnn with its conv weight ``w`` (864 bytes) as external data at ``location``."""
    d = tmp_path / folder
    d.mkdir(parents=True, exist_ok=True)
    m = tiny()
    w = m.graph.initializer[0]
    data = numpy_helper.to_array(w).tobytes()
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entries = [("location", location)]
    if offset is not None:
        entries.append(("offset", str(offset)))
    entries.append(("length", str(len(data) if length is None else length)))
    for k, v in entries:
        w.external_data.add(key=k, value=v)
    if write_data:
        (d / "weights.bin").write_bytes(data)
    return write(m, d / "m.onnx")


def big_weights_model() -> onnx.ModelProto:
    """MatMul with a 64x64 float weight (16 KiB: kept in the file as a self-reference by the loader)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    return model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [vi("x", [1, 64])], [vi("y", [1, 64])], [w])


# --------------------------------------------------------------------------------------------
# Graph structure


def nested_if_bytes(depth: int) -> bytes:
    """If inside If ``depth`` deep (then-branch nests, else-branch is flat), serialised by hand:
    protobuf itself refuses to build such a message."""
    flat = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "g", [], [vi("o", [1])]).SerializeToString()
    body = flat
    for _ in range(depth):
        then_ = field(1, b"then_branch") + field(20, AttributeProto.GRAPH, True) + field(6, body)
        else_ = field(1, b"else_branch") + field(20, AttributeProto.GRAPH, True) + field(6, flat)
        node = field(1, b"c") + field(2, b"o") + field(4, b"If") + field(5, then_) + field(5, else_)
        body = field(1, node) + field(2, b"g") + field(12, vi("o", [1]).SerializeToString())
    top = body + field(11, vi("c", [], TensorProto.BOOL).SerializeToString()) + field(11, vi("x", [1]).SerializeToString())
    return field(1, 9, True) + field(7, top) + field(8, OPSET[0].SerializeToString())


def markup_model() -> onnx.ModelProto:
    """Names and doc strings full of HTML, JavaScript and reportlab paragraph markup."""
    m = tiny()
    m.graph.name = "<script>alert(1)</script><para>&amp;</para>"
    m.doc_string = "<b>bold</b><font color=red>x</font>&#x41;<br/>\x1b[31m]]></a>"
    m.producer_name = "<img src=x onerror=alert(1)>"
    m.graph.node[0].name = "<i>conv</i>"
    return m


def non_utf8(where: str) -> bytes:
    """tiny_cnn serialised with two bytes of one string field replaced by 0xFF 0xFE."""
    m = tiny()
    marks = {"graph_name": "GRAPHNAM", "doc_string": "DOCSTRNG", "node_name": "NODENAME",
             "value_name": "VALUENAM", "producer": "PRODUCER", "metadata_key": "METAKEYX"}
    mark = marks[where]
    m.graph.name = m.graph.name if where != "graph_name" else mark
    if where == "doc_string":
        m.doc_string = mark
    elif where == "node_name":
        m.graph.node[1].name = mark
    elif where == "value_name":
        m.graph.node[1].output[0] = mark
        m.graph.node[2].input[0] = mark
    elif where == "producer":
        m.producer_name = mark
    elif where == "metadata_key":
        m.metadata_props.add(key=mark, value="v")
    data = m.SerializeToString()
    assert data.count(mark.encode()) >= 1
    return data.replace(mark.encode(), b"\xff\xfe" + mark[2:].encode())


# --------------------------------------------------------------------------------------------
# Run-time behaviour


def loop_forever() -> onnx.ModelProto:
    """A Loop with a trip count of 10^15 whose body adds one: runs until stopped."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body", [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("v_in", [1])],
        [vi("cond_out", [], TensorProto.BOOL), vi("v_out", [1])],
        initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")])
    return model([helper.make_node("Loop", ["M", "c", "x"], ["y"], body=body)], [vi("x", [1])], [vi("y", [1])],
                 [numpy_helper.from_array(np.array(10**15, np.int64), "M"), numpy_helper.from_array(np.array(True), "c")])


def slow_kernel(n: int = 8192) -> onnx.ModelProto:
    """One MatMul of two n x n matrices made at run time from a scalar (Expand): a single kernel
    that takes seconds to minutes, which onnxruntime's terminate flag cannot interrupt."""
    return model([helper.make_node("Expand", ["x", "s"], ["big"]), helper.make_node("MatMul", ["big", "big"], ["mm"]),
                  helper.make_node("ReduceSum", ["mm"], ["y"], keepdims=0)],
                 [vi("x", [1])], [vi("y", [])], [numpy_helper.from_array(np.array([n, n], np.int64), "s")])


def giant_from_constant(op: str) -> onnx.ModelProto:
    """ConstantOfShape or Expand to [2^20, 2^20, 2^10] floats (4 EiB) from a tiny file."""
    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 20, 1 << 10], np.int64), "s")
    first = (helper.make_node("ConstantOfShape", ["s"], ["big"]) if op == "ConstantOfShape"
             else helper.make_node("Expand", ["x", "s"], ["big"]))
    return model([first, helper.make_node("ReduceSum", ["big"], ["r"], keepdims=0),
                  helper.make_node("Add", ["x", "r"], ["y"])], [vi("x", [1])], [vi("y", [1])], [shape])


def giant_from_input_shape(factor: int) -> onnx.ModelProto:
    """ConstantOfShape whose shape is computed at run time (input shape times ``factor``): static
    shape inference cannot see how big it gets."""
    k = numpy_helper.from_array(np.array([factor], np.int64), "k")
    return model([helper.make_node("Shape", ["x"], ["sx"]), helper.make_node("Mul", ["sx", "k"], ["s"]),
                  helper.make_node("ConstantOfShape", ["s"], ["big"]),
                  helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)],
                 [vi("x", [1])], [vi("y", [])], [k])


def giant_from_input_value(factor: int) -> onnx.ModelProto:
    """ConstantOfShape whose shape is an input's *value* times ``factor`` (the runtime profile feeds
    integer inputs with ones): no static analysis can know the size before the model runs."""
    k = numpy_helper.from_array(np.array([factor], np.int64), "k")
    return model([helper.make_node("Mul", ["n", "k"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["big"]),
                  helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)],
                 [vi("n", [1], TensorProto.INT64)], [vi("y", [])], [k])


def huge_declared_activations() -> onnx.ModelProto:
    """Relu, Neg over a declared [1, 2^20, 2^20] input: 4 TiB per tensor, nothing allocated statically."""
    return model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])],
                 [vi("x", [1, 1 << 20, 1 << 20])], [vi("y", [1, 1 << 20, 1 << 20])])


def shape_inference_memory_bomb() -> onnx.ModelProto:
    """Found by ``make fuzz``: an If output that the graph's value_info declares as a 1-D tensor of
    2^31 elements, then Add. onnx shape inference with data propagation allocated tens of GB for it
    (the fuzzing process was OOM-killed at 24 GB)."""
    x = vi("x", [1, 3, 4, 5])
    then = helper.make_graph([helper.make_node("Relu", ["t0"], ["a"])], "then", [], [vi("a", None)])
    other = helper.make_graph([helper.make_node("Neg", ["t0"], ["b"])], "else", [], [vi("b", None)])
    m = model([helper.make_node("MatMul", ["x", "m0"], ["t0"]),
               helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
               helper.make_node("If", ["c"], ["t1"], then_branch=then, else_branch=other),
               helper.make_node("Add", ["t1", "bias"], ["t2"]), helper.make_node("Identity", ["t2"], ["y"])],
              [x], [vi("y", [1, 3, 4, 5])],
              [numpy_helper.from_array(np.ones((5, 5), np.float32), "m0"),
               numpy_helper.from_array(np.ones((3, 1, 1), np.float32), "bias")])
    m.graph.value_info.append(vi("t1", [2**31]))
    return m


LOCAL = helper.make_opsetid("local", 1)


def function_fanout(depth: int) -> onnx.ModelProto:
    """Local functions f0..f{depth-1}, each calling the next twice; the last is one Relu. A few hundred
    bytes that expand to 2^(depth-1) nodes: onnxruntime and onnx shape inference inline every call
    (depth 17 kept both busy for 90 s, depth 30 for hours)."""
    funcs = []
    for i in range(depth):
        body = ([helper.make_node(f"f{i + 1}", ["a"], ["t"], domain="local"),
                 helper.make_node(f"f{i + 1}", ["t"], ["b"], domain="local")] if i + 1 < depth
                else [helper.make_node("Relu", ["a"], ["b"])])
        funcs.append(helper.make_function("local", f"f{i}", ["a"], ["b"], body, OPSET + [LOCAL]))
    return model([helper.make_node("f0", ["x"], ["y"], domain="local")], [vi("x", [1, 4])], [vi("y", [1, 4])],
                 opset=OPSET + [LOCAL], functions=funcs)


def conv_in_local_function(wrapped: bool) -> onnx.ModelProto:
    """A 3x3 convolution, 3 -> 64 channels on 64x64, as a plain node or as the body of a local function
    (a way to hide the compute from a profiler that does not look into functions)."""
    w = numpy_helper.from_array(np.random.default_rng(0).random((64, 3, 3, 3), np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"] if not wrapped else ["a", "k"], ["y"] if not wrapped else ["b"],
                            pads=[1, 1, 1, 1])
    io = ([vi("x", [1, 3, 64, 64])], [vi("y", [1, 64, 64, 64])])
    if not wrapped:
        return model([conv], *io, [w])
    block = helper.make_function("local", "Block", ["a", "k"], ["b"], [conv], OPSET)
    return model([helper.make_node("Block", ["x", "w"], ["y"], domain="local")], *io, [w], opset=OPSET + [LOCAL],
                 functions=[block])


def symlink(target: Path, link: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)
    return link
