"""Structure-aware fuzzing of the loader and the static stages: hypothesis strategies that build
valid small ONNX graphs with onnx.helper, then mutate them (drop, duplicate and rename nodes,
change dims, dtypes and attributes, swap inputs, corrupt tensor payloads and external-data
references, add subgraphs and functions, change operators, opsets and names) and finally,
sometimes, flip or cut bytes of the serialised file.

The property (:func:`check_file`): ``load_model`` + ``resolve_input_shapes`` + ``static_profile``
(through ``pipeline.assess`` with no runtime profile, so the label, its JSON and the recycling
section are built too) and reading every stored tensor either succeed or raise an ``EekiError``
subclass, never anything else.

Used by tests/adversarial/test_adv_fuzz.py (a short, derandomised run in CI) and by ``make fuzz``
(``HYPOTHESIS_PROFILE=eeki-fuzz-long``, thousands of examples). Imported as ``from fuzz_models import ...``.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from eeki_label.errors import EekiError
from support import read_every_tensor

DTYPES = [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16, TensorProto.INT64,
          TensorProto.INT32, TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL, TensorProto.STRING,
          TensorProto.COMPLEX64, TensorProto.FLOAT8E4M3FN, TensorProto.UINT4, TensorProto.INT4, 0, 17, 999, -1]
DIMS = [-(2**63), -7, -1, 0, 1, 2, 3, 7, 64, 2**31, 2**32, 2**62, 2**63 - 1]
OPS = ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Identity", "Add", "Mul", "Sub", "Div", "MatMul", "Gemm", "Conv",
       "ConvTranspose", "Reshape", "Transpose", "Flatten", "Concat", "Split", "Slice", "Gather", "Expand",
       "ConstantOfShape", "Shape", "Cast", "Softmax", "ReduceSum", "ReduceMean", "GlobalAveragePool", "MaxPool",
       "AveragePool", "BatchNormalization", "LSTM", "GRU", "RNN", "Einsum", "If", "Loop", "Scan", "Constant",
       "Range", "Tile", "Pad", "Resize", "TopK", "NonZero", "Where", "QLinearConv", "QLinearMatMul", "MatMulInteger",
       "ConvInteger", "DequantizeLinear", "QuantizeLinear", "FusedConv", "Attention", "NhwcConv", "Frobnicate"]
DOMAINS = ["", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training", "local", "com.example"]
ATTR_NAMES = ["group", "pads", "strides", "kernel_shape", "dilations", "axis", "axes", "perm", "transA", "transB",
              "to", "value", "keepdims", "equation", "body", "then_branch", "else_branch", "epsilon", "alpha",
              "hidden_size", "direction", "layout", "num_scan_inputs", "mode", "x"]
LOCATIONS = ["weights.bin", "model.onnx", "../weights.bin", "/etc/passwd", "", "a\x00b", "sub/../../x",
             "C:\\x", ".", "nonexistent.bin", "\\\\server\\share", "w" * 300]
NAMES = st.one_of(st.sampled_from(["x", "y", "w", "", " ", "a/b", "<script>", "\u202e", "名前", "x" * 5000]),
                  st.text(max_size=12))
OPSET_VERSIONS = [-1, 0, 1, 7, 11, 13, 17, 21, 28, 29, 1000]
IR_VERSIONS = [0, 1, 3, 4, 7, 8, 9, 10, 11, 12, 13, 99]


def _f32(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Valid base graphs


@st.composite
def base_models(draw) -> onnx.ModelProto:
    """A valid small model: input [1, C, H, W] through a chain of shape-keeping ops (element-wise,
    Conv with padding, Add of a per-channel initializer, Mul by a Constant node, If/Loop wrappers),
    optionally ending in GlobalAveragePool, Flatten, Gemm."""
    c, h, w = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    batch = draw(st.sampled_from([1, "N"]))
    nodes, inits, extra_outputs = [], [], []
    cur = "x"
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["unary", "conv", "add", "mul_const", "if", "loop", "matmul", "einsum", "rnn"]))
        out = f"t{i}"
        if kind == "matmul":
            inits.append(numpy_helper.from_array(_f32((w, w), i), f"m{i}"))
            nodes.append(helper.make_node("MatMul", [cur, f"m{i}"], [out], name=f"n{i}"))
        elif kind == "einsum":
            inits.append(numpy_helper.from_array(_f32((w, w), i), f"e{i}"))
            nodes.append(helper.make_node("Einsum", [cur, f"e{i}"], [out], equation="bchw,wv->bchv", name=f"n{i}"))
        elif kind == "rnn":  # a side branch: [C*H, 1, W] sequence through an LSTM/GRU/RNN, an extra output
            op = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
            gates, hidden = {"LSTM": 4, "GRU": 3, "RNN": 1}[op], draw(st.integers(1, 3))
            inits += [numpy_helper.from_array(np.array([c * h, 1, w], np.int64), f"rs{i}"),
                      numpy_helper.from_array(_f32((1, gates * hidden, w), i), f"W{i}"),
                      numpy_helper.from_array(_f32((1, gates * hidden, hidden), i), f"R{i}")]
            nodes += [helper.make_node("Reshape", [cur, f"rs{i}"], [f"seq{i}"], name=f"r{i}"),
                      helper.make_node(op, [f"seq{i}", f"W{i}", f"R{i}"], [f"Y{i}", f"Yh{i}"], hidden_size=hidden,
                                       name=f"rnn{i}")]
            extra_outputs.append(helper.make_tensor_value_info(f"Yh{i}", TensorProto.FLOAT, None))
            continue
        elif kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Identity"])),
                                          [cur], [out], name=f"n{i}"))
        elif kind == "conv":
            k = draw(st.sampled_from([1, 3]))
            # 1.5 kB weights and more go through the loader's self-references
            inits.append(numpy_helper.from_array(_f32((c, c, k, k), i), f"w{i}"))
            nodes.append(helper.make_node("Conv", [cur, f"w{i}"], [out], pads=[k // 2] * 4, name=f"n{i}"))
        elif kind == "add":
            inits.append(numpy_helper.from_array(_f32((c, 1, 1), i), f"b{i}"))
            nodes.append(helper.make_node("Add", [cur, f"b{i}"], [out], name=f"n{i}"))
        elif kind == "mul_const":
            nodes.append(helper.make_node("Constant", [], [f"k{i}"], value=numpy_helper.from_array(
                np.array(draw(st.floats(-2, 2, allow_nan=False)), np.float32), f"k{i}"), name=f"c{i}"))
            nodes.append(helper.make_node("Mul", [cur, f"k{i}"], [out], name=f"n{i}"))
        elif kind == "if":
            nodes.append(helper.make_node("Constant", [], [f"cond{i}"], value=helper.make_tensor(
                f"cond{i}", TensorProto.BOOL, [], [draw(st.booleans())]), name=f"c{i}"))
            then = helper.make_graph([helper.make_node("Relu", [cur], [f"{out}_t"])], f"then{i}", [],
                                     [helper.make_tensor_value_info(f"{out}_t", TensorProto.FLOAT, None)])
            other = helper.make_graph([helper.make_node("Neg", [cur], [f"{out}_e"])], f"else{i}", [],
                                      [helper.make_tensor_value_info(f"{out}_e", TensorProto.FLOAT, None)])
            nodes.append(helper.make_node("If", [f"cond{i}"], [out], then_branch=then, else_branch=other, name=f"n{i}"))
        else:
            inits.append(numpy_helper.from_array(np.array(draw(st.integers(0, 3)), np.int64), f"trip{i}"))
            inits.append(numpy_helper.from_array(np.array(True), f"go{i}"))
            body = helper.make_graph(
                [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Relu", ["v_in"], ["v_out"])],
                f"body{i}", [helper.make_tensor_value_info("it", TensorProto.INT64, []),
                             helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                             helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
                [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
            nodes.append(helper.make_node("Loop", [f"trip{i}", f"go{i}", cur], [out], body=body, name=f"n{i}"))
        cur = out
    out_shape = [batch, c, h, w]
    if draw(st.booleans()):
        inits.append(numpy_helper.from_array(_f32((3, c), 99), "fc"))
        nodes += [helper.make_node("GlobalAveragePool", [cur], ["gap"], name="gap"),
                  helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
                  helper.make_node("Gemm", ["flat", "fc"], ["y"], transB=1, name="fc")]
        out_shape = [batch, 3]
    else:
        nodes.append(helper.make_node("Identity", [cur], ["y"], name="out"))
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)] + extra_outputs,
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fuzz")


# --------------------------------------------------------------------------------------------
# Mutations: each takes ``draw`` and changes the model in place


def _all_graphs(m):
    out, stack = [], [m.graph]
    while stack:
        g = stack.pop()
        out.append(g)
        for n in g.node:
            for a in n.attribute:
                if a.type == AttributeProto.GRAPH:
                    stack.append(a.g)
                stack.extend(a.graphs)
    return out


def _graph(draw, m):
    return draw(st.sampled_from(_all_graphs(m)))


def _node(draw, m):
    g = _graph(draw, m)
    return (g, draw(st.sampled_from(list(g.node)))) if len(g.node) else (g, None)


def _names(m):
    names = {"x", "y", ""}
    for g in _all_graphs(m):
        for n in g.node:
            names.update(n.input)
            names.update(n.output)
        names.update(t.name for t in g.initializer)
    return sorted(names)


def mut_drop_node(draw, m):
    g, n = _node(draw, m)
    if n is not None:
        g.node.remove(n)


def mut_duplicate_node(draw, m):
    g, n = _node(draw, m)
    if n is not None:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        if draw(st.booleans()):
            copy.output[:] = [o + "_dup" for o in copy.output]
        g.node.insert(draw(st.integers(0, len(g.node))), copy)


def mut_rename(draw, m):
    g, n = _node(draw, m)
    if n is None:
        return
    name = draw(st.one_of(st.sampled_from(_names(m)), NAMES))
    where = draw(st.sampled_from(["input", "output", "name"]))
    if where == "name":
        n.name = name
    elif where == "input" and len(n.input):
        n.input[draw(st.integers(0, len(n.input) - 1))] = name
    elif where == "output" and len(n.output):
        n.output[draw(st.integers(0, len(n.output) - 1))] = name


def mut_swap_inputs(draw, m):
    g, n = _node(draw, m)
    if n is not None and len(n.input) > 1:
        n.input[:] = list(reversed(n.input))


def _shape_holders(m):
    holders = []
    for g in _all_graphs(m):
        holders += [vi.type.tensor_type.shape for vi in list(g.input) + list(g.output) + list(g.value_info)]
    return holders


def mut_dims(draw, m):
    if draw(st.booleans()):
        inits = [t for g in _all_graphs(m) for t in g.initializer]
        if inits:
            t = draw(st.sampled_from(inits))
            dims = list(t.dims)
            op = draw(st.sampled_from(["set", "add", "drop"]))
            if op == "set" and dims:
                dims[draw(st.integers(0, len(dims) - 1))] = draw(st.sampled_from(DIMS))
            elif op == "add":
                dims.append(draw(st.sampled_from(DIMS)))
            elif dims:
                dims.pop()
            t.dims[:] = dims
        return
    holders = _shape_holders(m)
    if holders:
        shape = draw(st.sampled_from(holders))
        op = draw(st.sampled_from(["value", "param", "add", "clear"]))
        if op == "clear":
            shape.ClearField("dim")
        elif op == "add" or not len(shape.dim):
            shape.dim.add().dim_value = draw(st.sampled_from(DIMS))
        else:
            d = shape.dim[draw(st.integers(0, len(shape.dim) - 1))]
            if op == "value":
                d.dim_value = draw(st.sampled_from(DIMS))
            else:
                d.dim_param = draw(NAMES)


def mut_dtype(draw, m):
    if draw(st.booleans()):
        inits = [t for g in _all_graphs(m) for t in g.initializer]
        if inits:
            draw(st.sampled_from(inits)).data_type = draw(st.sampled_from(DTYPES))
        return
    vis = [vi for g in _all_graphs(m) for vi in list(g.input) + list(g.output) + list(g.value_info)]
    if vis:
        vi = draw(st.sampled_from(vis))
        kind = draw(st.sampled_from(["elem", "sequence", "optional", "none"]))
        if kind == "elem":
            vi.type.tensor_type.elem_type = draw(st.sampled_from(DTYPES))
        elif kind == "sequence":
            vi.type.sequence_type.elem_type.tensor_type.elem_type = TensorProto.FLOAT
        elif kind == "optional":
            vi.type.optional_type.elem_type.tensor_type.elem_type = TensorProto.FLOAT
        else:
            vi.ClearField("type")


def _attr_value(draw, name):
    kind = draw(st.sampled_from(["int", "float", "ints", "string", "tensor", "graph", "floats", "strings"]))
    if kind == "int":
        return draw(st.sampled_from([-(2**63), -1, 0, 1, 2, 3, 1000, 2**31, 2**63 - 1]))
    if kind == "float":
        return draw(st.sampled_from([0.0, 1e-5, -1.0, float("nan"), float("inf"), 1e38]))
    if kind == "ints":
        return draw(st.lists(st.sampled_from([-(2**40), -1, 0, 1, 2, 3, 7, 2**40]), max_size=8))
    if kind == "floats":
        return draw(st.lists(st.floats(allow_nan=True), max_size=4))
    if kind == "string":
        return draw(st.sampled_from([b"", b"ij,jk->ik", b"...,ab->", b"a" * 64, b"\xff\xfe", b"constant", b"NOTSET"]))
    if kind == "strings":
        return [b"a", b"\xff"]
    if kind == "tensor":
        return numpy_helper.from_array(_f32(draw(st.sampled_from([(), (1,), (2, 3), (300,)]))), name)
    g = helper.make_graph([helper.make_node("Identity", [draw(st.sampled_from(["x", "v_in", "q"]))], ["o"])],
                          "sub", [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    return g


def mut_attribute(draw, m):
    g, n = _node(draw, m)
    if n is None:
        return
    op = draw(st.sampled_from(["set", "drop", "retype"]))
    if op == "drop" and len(n.attribute):
        del n.attribute[draw(st.integers(0, len(n.attribute) - 1))]
        return
    if op == "retype" and len(n.attribute):
        n.attribute[draw(st.integers(0, len(n.attribute) - 1))].type = draw(st.sampled_from(range(0, 15)))
        return
    _set_attr(draw, n, draw(st.sampled_from(ATTR_NAMES)))


def _set_attr(draw, n, name):
    """Replace attribute ``name`` of node ``n`` with a drawn value (silently skip values onnx refuses)."""
    for a in list(n.attribute):
        if a.name == name:
            n.attribute.remove(a)
    try:
        n.attribute.append(helper.make_attribute(name, _attr_value(draw, name)))
    except (ValueError, TypeError):
        pass


def mut_payload(draw, m):
    inits = [t for g in _all_graphs(m) for t in g.initializer]
    consts = [a.t for g in _all_graphs(m) for n in g.node for a in n.attribute if a.HasField("t")]
    tensors = inits + consts
    if not tensors:
        return
    t = draw(st.sampled_from(tensors))
    op = draw(st.sampled_from(["truncate", "extend", "float_data", "both", "external", "segment", "clear",
                               "int64_data", "string_data"]))
    if op == "truncate":
        t.raw_data = t.raw_data[:draw(st.integers(0, max(0, len(t.raw_data) - 1)))]
    elif op == "extend":
        t.raw_data = t.raw_data + bytes(draw(st.integers(1, 64)))
    elif op == "float_data":
        t.ClearField("raw_data")
        t.float_data[:] = [1.0] * draw(st.integers(0, 40))
    elif op == "both":
        t.float_data[:] = [1.0, 2.0]
    elif op == "external":
        keep_raw = draw(st.booleans())
        if not keep_raw:
            t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for key in draw(st.lists(st.sampled_from(["location", "offset", "length", "checksum", "bogus"]),
                                 max_size=4)):
            value = (draw(st.sampled_from(LOCATIONS)) if key == "location"
                     else draw(st.sampled_from(["0", "-1", "12", "4096", "99999999999999999999", "abc", "", "1e3"])))
            t.external_data.add(key=key, value=value)
    elif op == "segment":
        t.segment.begin, t.segment.end = draw(st.integers(-5, 100)), draw(st.integers(-5, 100))
    elif op == "int64_data":
        t.int64_data[:] = [2**62] * draw(st.integers(0, 5))
    elif op == "string_data":
        t.string_data[:] = [b"a", b"\xff"]
    else:
        t.ClearField("raw_data")


def mut_subgraph(draw, m):
    g, n = _node(draw, m)
    if n is None:
        return
    depth = draw(st.integers(1, 5))
    body = helper.make_graph([helper.make_node("Identity", [draw(st.sampled_from(_names(m)))], ["o0"])], "b0", [],
                             [helper.make_tensor_value_info("o0", TensorProto.FLOAT, None)])
    for i in range(1, depth):
        cond = helper.make_node("Constant", [], [f"c{i}"], value=helper.make_tensor(f"c{i}", TensorProto.BOOL, [], [True]))
        iff = helper.make_node("If", [f"c{i}"], [f"o{i}"], then_branch=body, else_branch=body)
        body = helper.make_graph([cond, iff], f"b{i}", [], [helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, None)])
    where = draw(st.sampled_from(["attr", "wrap"]))
    if where == "attr":
        n.attribute.append(helper.make_attribute(draw(st.sampled_from(["body", "then_branch", "x"])), body))
    else:
        cond = helper.make_node("Constant", [], ["wrapc"], value=helper.make_tensor("wrapc", TensorProto.BOOL, [], [True]))
        g.node.insert(0, cond)
        g.node.append(helper.make_node("If", ["wrapc"], [f"o{depth - 1}_outer"], then_branch=body, else_branch=body))


def mut_operator(draw, m):
    g, n = _node(draw, m)
    if n is None:
        return
    if draw(st.booleans()):
        n.op_type = draw(st.sampled_from(OPS))
    if draw(st.booleans()):
        n.domain = draw(st.sampled_from(DOMAINS))


def mut_versions(draw, m):
    op = draw(st.sampled_from(["ir", "opset", "add_opset", "clear_opset"]))
    if op == "ir":
        m.ir_version = draw(st.sampled_from(IR_VERSIONS))
    elif op == "opset" and len(m.opset_import):
        m.opset_import[0].version = draw(st.sampled_from(OPSET_VERSIONS))
    elif op == "add_opset":
        m.opset_import.append(helper.make_opsetid(draw(st.sampled_from(DOMAINS)), draw(st.sampled_from(OPSET_VERSIONS))))
    else:
        del m.opset_import[:]


def mut_function(draw, m):
    name = draw(st.sampled_from(["F", "G", "Relu"]))
    body_op = draw(st.sampled_from(["Relu", "F", "G", "Frobnicate"]))
    f = helper.make_function("local", name, ["a"], ["b"], [helper.make_node(body_op, ["a"], ["b"], domain=(
        "local" if body_op in ("F", "G") else ""))], [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    m.functions.append(f)
    if draw(st.booleans()):
        m.opset_import.append(helper.make_opsetid("local", 1))
    g, n = _node(draw, m)
    if n is not None and draw(st.booleans()):
        n.op_type, n.domain = name, "local"


def mut_wrap_in_function(draw, m, twice: bool = True):
    """Move a main-graph node into a new local function and call it (possibly calling it from another
    function, several levels deep; with ``twice``, sometimes twice per level)."""
    g, n = _node(draw, m)
    if n is None or g is not m.graph:
        return
    inner = onnx.NodeProto()
    inner.CopyFrom(n)
    inner.input[:] = [f"i{k}" if x else "" for k, x in enumerate(n.input)]
    inner.output[:] = [f"o{k}" if x else "" for k, x in enumerate(n.output)]
    ops = list(m.opset_import) + [helper.make_opsetid("local", 1)]
    name = f"W{len(m.functions)}"
    body = [inner]
    for level in range(draw(st.integers(1, 4))):
        m.functions.append(helper.make_function("local", f"{name}_{level}", [x for x in inner.input if x],
                                                [x for x in inner.output if x], body, ops))
        ins, outs = [x for x in inner.input if x], [x for x in inner.output if x]
        call = helper.make_node(f"{name}_{level}", ins, outs, domain="local")
        body = [call]
        if twice and len(ins) == len(outs) == 1 and draw(st.booleans()):  # call it twice, in a chain
            body = [helper.make_node(call.op_type, ins, ["mid"], domain="local"),
                    helper.make_node(call.op_type, ["mid"], outs, domain="local")]
    n.op_type, n.domain = call.op_type, "local"
    n.input[:] = [x for x in n.input if x]
    n.output[:] = [x for x in n.output if x]
    del n.attribute[:]
    if draw(st.booleans()):
        m.opset_import.append(helper.make_opsetid("local", 1))


def mut_sparse(draw, m):
    n = draw(st.integers(0, 4))
    vals = numpy_helper.from_array(np.ones(n, np.float32), draw(st.sampled_from(["sp", "x", "w0"])))
    idx = numpy_helper.from_array(np.array(draw(st.lists(st.sampled_from([-1, 0, 1, 3, 2**40]), min_size=n,
                                                         max_size=n)), np.int64).reshape(-1), "sp_idx")
    try:
        sp = helper.make_sparse_tensor(vals, idx, draw(st.lists(st.sampled_from([0, 1, 4, -1, 2**40]), max_size=3)))
    except ValueError:
        return
    m.graph.sparse_initializer.append(sp)


def mut_names(draw, m):
    which = draw(st.sampled_from(["graph", "producer", "doc", "metadata", "input"]))
    text = draw(NAMES)
    if which == "graph":
        m.graph.name = text
    elif which == "producer":
        m.producer_name = text
    elif which == "doc":
        m.doc_string = text * draw(st.integers(1, 3))
    elif which == "metadata":
        m.metadata_props.add(key=text, value=draw(NAMES))
    elif len(m.graph.input):
        old = m.graph.input[0].name
        m.graph.input[0].name = text
        if draw(st.booleans()):
            for n in m.graph.node:
                n.input[:] = [text if i == old else i for i in n.input]


SEMANTIC = {"Conv": ("", ["group", "pads", "strides", "dilations", "kernel_shape"]),
            "FusedConv": ("com.microsoft", ["group", "activation"]), "NhwcConv": ("com.microsoft", ["group"]),
            "Gemm": ("", ["transA", "transB", "alpha"]), "FusedMatMul": ("com.microsoft", ["transA", "alpha"]),
            "LSTM": ("", ["layout", "hidden_size", "direction"]), "GRU": ("", ["layout", "linear_before_reset"]),
            "Einsum": ("", ["equation"]), "ConvTranspose": ("", ["group", "output_shape"]),
            "QLinearConv": ("", ["group"]), "MatMulInteger": ("", []), "Reshape": ("", ["allowzero"])}


def mut_semantic(draw, m):
    """Make a node one of the operators the profile computes MACs for, in a matching or another
    domain, with attributes of the expected names and random types."""
    g, n = _node(draw, m)
    if n is None:
        return
    n.op_type = draw(st.sampled_from(sorted(SEMANTIC)))
    domain, attrs = SEMANTIC[n.op_type]
    n.domain = draw(st.sampled_from([domain, domain, "com.microsoft", "local"]))
    if n.domain == "com.microsoft" and not any(o.domain == "com.microsoft" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    for name in draw(st.lists(st.sampled_from(attrs or ["x"]), max_size=3)):
        _set_attr(draw, n, name)


def mut_value_info(draw, m):
    g = _graph(draw, m)
    name = draw(st.sampled_from(_names(m)))
    vi = helper.make_tensor_value_info(name, draw(st.sampled_from(DTYPES[:9])),
                                       draw(st.lists(st.sampled_from(DIMS + ["N"]), max_size=5)))
    g.value_info.append(vi)


MUTATIONS = [mut_drop_node, mut_duplicate_node, mut_rename, mut_swap_inputs, mut_dims, mut_dtype, mut_attribute,
             mut_payload, mut_subgraph, mut_operator, mut_versions, mut_function, mut_sparse, mut_names, mut_value_info,
             mut_semantic, mut_semantic, mut_wrap_in_function]


@st.composite
def mutated_model_files(draw) -> bytes:
    """A base model, 0 to 4 structural mutations, then (sometimes) byte-level damage."""
    m = draw(base_models())
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=5)):
        mutation(draw, m)
    try:
        data = m.SerializeToString()
    except Exception:  # a mutation produced a message protobuf will not write: use the base model
        data = draw(base_models()).SerializeToString()
    damage = draw(st.sampled_from(["none"] * 6 + ["flip", "cut", "insert"]))
    if damage != "none" and data:
        pos = draw(st.integers(0, len(data) - 1))
        if damage == "flip":
            data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1:]
        elif damage == "cut":
            data = data[:pos]
        else:
            data = data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:]
    return data


# --------------------------------------------------------------------------------------------
# The property


def _infer_in_process(skeleton):
    """static._infer without its child process (fuzzing throughput: a child costs ~0.3 s). The same
    error mapping; ``make fuzz`` runs under ``ulimit -v`` so that a blow-up is a MemoryError here."""
    from eeki_label.errors import ModelTooLargeError, ShapeError
    from eeki_label.profile._ortchild import inline_and_infer

    try:
        return inline_and_infer(skeleton)
    except MemoryError as e:
        raise ModelTooLargeError(f"onnx shape inference needed more memory than allowed: {e}") from e
    except Exception as e:
        if "bad_alloc" in str(e):
            raise ModelTooLargeError(f"onnx shape inference needed more memory than allowed: {e}") from e
        raise ShapeError(f"shape inference failed at the given input shapes: {' '.join(str(e).split())[:200]}") from e


_LIMITS = dict(max_file_bytes=1 << 22, max_tensor_bytes=1 << 24, max_activation_bytes=1 << 26)


def assess_file(path: Path, data: bytes, runtime: bool = False, inprocess_inference: bool = False):
    """Write ``data`` to ``path`` (beside a small ``weights.bin``) and assess it as the fuzz does:
    the label, or the EekiError raised (any other exception propagates: a finding)."""
    from eeki_label.model_io import LoadLimits
    from eeki_label.pipeline import AssessOptions, assess
    from eeki_label.transfer.stage import TransferOptions

    path.write_bytes(data)
    (path.parent / "weights.bin").write_bytes(bytes(4096))
    # the NNC stage (another engineer's, with its own tests) is left out: it runs the model in this process
    options = AssessOptions(device_classes=("edge-gpu-batch1",), runs=1 if runtime else 0, limits=LoadLimits(**_LIMITS),
                            runtime_time_limit_s=20.0, issued_at="2026-01-01T00:00:00+00:00",
                            transfer=TransferOptions(enabled=False))
    # without the runtime the shape probe (a child process running the model) is left out as well
    no_probe = nullcontext() if runtime else mock.patch.multiple(
        "eeki_label.pipeline", probe_shapes=lambda *a, **k: {}, probe_values=lambda *a, **k: {})
    infer = (mock.patch("eeki_label.profile.static._infer", _infer_in_process) if inprocess_inference
             else nullcontext())
    try:
        with no_probe, infer:
            return assess(path, options)
    except EekiError as e:
        assert "\n" not in str(e), "an error message must be one line"
        return e


def check_file(path: Path, data: bytes, runtime: bool = False, inprocess_inference: bool = False) -> str:
    """:func:`assess_file`, the label serialised, then every tensor read back; returns ``"label"`` or
    the name of the EekiError raised. ``inprocess_inference``: onnx shape inference in this process
    (faster, for fuzzing)."""
    from eeki_label.model_io import LoadLimits, load_model
    from eeki_label.models import dump_json

    result = assess_file(path, data, runtime, inprocess_inference)
    outcome = type(result).__name__ if isinstance(result, EekiError) else "label"
    if outcome == "label":
        dump_json(result)
    limits = LoadLimits(**_LIMITS)
    try:
        loaded = load_model(path, limits)
    except EekiError:
        return outcome
    read_every_tensor(loaded)
    return outcome


def fuzz_dir() -> "Path | None":
    """``FUZZ_DIR``: where a long run keeps the example being checked (``last.onnx``), so that a hang
    or a crash of the process can be reproduced."""
    d = os.environ.get("FUZZ_DIR")
    return Path(d) if d else None
