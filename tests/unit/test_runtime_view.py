"""Figures that depend on the network, not on how it was exported (issue 17): quantised and fused
operators counted from their weight shapes, the runtime view of the graph (twin exports agree), If
nodes counted by the branch their condition takes, and the coverage gate."""

from functools import partial

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from support import ARCH, save, tiny_cnn
from eeki_label.model_io import load_model
from eeki_label.profile.shapes import resolve_input_shapes
from eeki_label.profile.static import static_profile

MS = helper.make_opsetid("com.microsoft", 1)


def profile(model, tmp_path, name="m.onnx", probe=False, shapes=None):
    loaded = load_model(save(model, tmp_path / name))
    resolved = resolve_input_shapes(loaded.proto, shapes or {})
    if not probe:
        return static_profile(loaded, resolved)
    from eeki_label.profile.runtime import probe_shapes, probe_values

    return static_profile(loaded, resolved, probe=partial(probe_shapes, loaded, resolved),
                          value_probe=partial(probe_values, loaded, resolved))


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def out(name, rank, elem=TensorProto.FLOAT):
    """An output whose dimensions are left to inference."""
    return helper.make_tensor_value_info(name, elem, [f"{name}_{i}" for i in range(rank)])


def arr(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


# ------------------------------------------------------------------ quantised and fused operators

def _lstm_model(seq=50, batch=1, inp=40, hidden=64, directions=2, layers=2):
    """A stacked (bidirectional) LSTM and a projection, as a speaker-embedding or diacritisation model."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for k in range(layers):
        size = inp if k == 0 else directions * hidden
        inits += [arr(f"W{k}", rng.standard_normal((directions, 4 * hidden, size)).astype(np.float32)),
                  arr(f"R{k}", rng.standard_normal((directions, 4 * hidden, hidden)).astype(np.float32)),
                  arr(f"B{k}", rng.standard_normal((directions, 8 * hidden)).astype(np.float32)),
                  arr(f"s{k}", np.array([seq, batch, directions * hidden], np.int64))]
        nodes += [helper.make_node("LSTM", [x, f"W{k}", f"R{k}", f"B{k}"], [f"y{k}"], hidden_size=hidden,
                                   direction="bidirectional" if directions == 2 else "forward"),
                  helper.make_node("Transpose", [f"y{k}"], [f"t{k}"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"t{k}", f"s{k}"], [f"h{k}"])]
        x = f"h{k}"
    inits.append(arr("P", rng.standard_normal((directions * hidden, 16)).astype(np.float32)))
    nodes.append(helper.make_node("MatMul", [x, "P"], ["z"]))
    graph = helper.make_graph(nodes, "lstm", [vi("x", [seq, batch, inp])], [out("z", 3)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_dynamically_quantised_lstm_matches_the_hand_count(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    seq, batch, inp, hidden, dirs = 50, 1, 40, 64, 2
    save(_lstm_model(seq, batch, inp, hidden, dirs), tmp_path / "f.onnx")
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), op_types_to_quantize=["LSTM", "MatMul"],
                     weight_type=QuantType.QInt8)
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert [n.op_type for n in q.graph.node].count("DynamicQuantizeLSTM") == 2
    hand = sum(seq * batch * dirs * 4 * hidden * (size + hidden) for size in (inp, dirs * hidden))
    p = profile(q, tmp_path, "q2.onnx", probe=True)
    assert abs(p.macs_by_op["DynamicQuantizeLSTM"] / hand - 1) <= 0.01
    assert p.macs_by_op["DynamicQuantizeLSTM"] == profile(_lstm_model(), tmp_path, "f2.onnx").macs_by_op["LSTM"]
    assert p.macs_coverage == 1.0 and p.unmodelled_ops == ()
    # int8 weights are counted as int8 bytes
    assert p.weight_bytes < profile(_lstm_model(), tmp_path, "f3.onnx").weight_bytes / 3


def _single(node, inputs, output, inits, ms=False):
    graph = helper.make_graph([node], "g", inputs, [output], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)] + ([MS] if ms else []))


def _q(name, dtype=np.uint8):
    return arr(name, np.array(0, dtype))


def _s(name):
    return arr(name, np.array(0.1, np.float32))


def test_qlinear_conv_counts_like_conv_and_int8_activations_as_one_byte(tmp_path):
    w = arr("w", np.zeros((16, 8, 3, 3), np.int8))
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], pads=[1, 1, 1, 1])
    m = _single(node, [vi("x", [1, 8, 10, 10], TensorProto.UINT8)], out("y", 4, TensorProto.UINT8),
                [w, _s("xs"), _q("xz"), _s("ws"), _q("wz", np.int8), _s("ys"), _q("yz")])
    p = profile(m, tmp_path)
    assert p.macs == 16 * 10 * 10 * 8 * 9
    assert p.activation_bytes == 16 * 10 * 10  # uint8 output: one byte an element


def test_conv_integer_and_qlinear_matmul(tmp_path):
    m = _single(helper.make_node("ConvInteger", ["x", "w"], ["y"], strides=[2, 2]),
                [vi("x", [1, 4, 9, 9], TensorProto.UINT8)], out("y", 4, TensorProto.INT32),
                [arr("w", np.zeros((6, 4, 3, 3), np.uint8))])
    assert profile(m, tmp_path).macs == 6 * 4 * 4 * 4 * 9
    m = _single(helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"]),
                [vi("a", [2, 5, 32], TensorProto.UINT8)], out("y", 3, TensorProto.UINT8),
                [arr("b", np.zeros((32, 24), np.uint8)), _s("as"), _q("az"), _s("bs"), _q("bz"), _s("ys"), _q("yz")])
    assert profile(m, tmp_path, "b.onnx").macs == 2 * 5 * 24 * 32


@pytest.mark.parametrize("op", ["FusedConv", "NhwcConv"])
def test_com_microsoft_convolutions_without_an_output_shape(op, tmp_path):
    """onnx shape inference has no schema for these: the output is computed from input and weight."""
    x = [1, 3, 16, 16] if op == "FusedConv" else [1, 16, 16, 3]
    node = helper.make_node(op, ["x", "w"], ["y"], domain="com.microsoft", strides=[2, 2], pads=[1, 1, 1, 1],
                            kernel_shape=[3, 3], **({"activation": "Relu"} if op == "FusedConv" else {}))
    m = _single(node, [vi("x", x)], out("y", 4), [arr("w", np.zeros((8, 3, 3, 3), np.float32))], ms=True)
    p = profile(m, tmp_path)
    assert p.macs == 8 * 8 * 8 * 27 and p.macs_coverage == 1.0


def test_qgemm_counts_m_n_k(tmp_path):
    node = helper.make_node("QGemm", ["a", "as", "az", "b", "bs", "bz", "", "ys", "yz"], ["y"], domain="com.microsoft",
                            transB=1)
    m = _single(node, [vi("a", [4, 64], TensorProto.UINT8)], out("y", 2, TensorProto.UINT8),
                [arr("b", np.zeros((32, 64), np.uint8)), _s("as"), _q("az"), _s("bs"), _q("bz"), _s("ys"), _q("yz")],
                ms=True)
    p = profile(m, tmp_path)
    assert p.macs == 4 * 32 * 64 and p.unmodelled_ops == ()


def test_registered_rule_leaves_the_unmodelled_set(tmp_path):
    from eeki_label.profile import static

    node = helper.make_node("DeformConv", ["x", "w", "off"], ["y"], kernel_shape=[3, 3])
    m = helper.make_model(helper.make_graph(
        [node], "g", [vi("x", [1, 2, 5, 5]), vi("off", [1, 18, 3, 3])], [out("y", 4)],
        initializer=[arr("w", np.zeros((4, 2, 3, 3), np.float32))]), opset_imports=[helper.make_opsetid("", 19)])
    p = profile(m, tmp_path)
    assert p.macs_coverage == 0.0 and p.unmodelled_ops == (("DeformConv", 1),)
    saved = dict(static.MAC_RULES)
    try:
        static.register_mac_rule("DeformConv", lambda node, types: (7, False))
        p = profile(m, tmp_path, "b.onnx")
        assert p.macs == 7 and p.macs_coverage == 1.0 and p.uncounted_ops == ()
    finally:
        static.MAC_RULES.clear()
        static.MAC_RULES.update(saved)


# ------------------------------------------------------------------ coverage gate

def test_no_grade_below_the_coverage_threshold(tmp_path):
    from eeki_label.pipeline import AssessOptions, assess
    from eeki_label.transfer.stage import TransferOptions

    base = tiny_cnn(batch=1)
    g = base.graph
    # one Conv counted, one DeformConv not: coverage 50 %
    g.initializer.append(arr("dw", np.zeros((8, 8, 3, 3), np.float32)))
    g.initializer.append(arr("off", np.zeros((1, 18, 16, 16), np.float32)))
    relu = next(n for n in g.node if n.op_type == "Relu")
    relu.input[0] = "d"
    g.node.insert(1, helper.make_node("DeformConv", ["c", "dw", "off"], ["d"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    del base.opset_import[:]
    base.opset_import.append(helper.make_opsetid("", 19))
    path = save(base, tmp_path / "deform.onnx")
    options = AssessOptions(device_classes=("single-board-cpu",), task="image-classification", runs=0,
                            transfer=TransferOptions(enabled=False))
    lab = assess(path, options).labels[0]
    assert lab.model.macs_coverage == pytest.approx(2 / 3) and lab.model.unmodelled_ops == {"DeformConv": 1}
    assert lab.label.class_ is None and not lab.label.gradable and "DeformConv" in lab.label.reason
    ok = assess(save(tiny_cnn(batch=1), tmp_path / "ok.onnx"), options).labels[0]
    # fully counted: not gated on coverage (this 16x16 model is not graded for ImageNet's 224x224 input instead)
    assert ok.model.macs_coverage == 1.0 and "DeformConv" not in ok.label.reason and "224x224" in ok.label.reason


# ------------------------------------------------------------------ runtime view: twin exports

def re_export(model: onnx.ModelProto, rng: np.random.Generator, identity_share: float = 0.5) -> onnx.ModelProto:
    """The same network as another exporter writes it: every Conv's bias split into an Add (through
    an Unsqueeze to [C, 1, 1]), Identity chains (1-3 long) after a share of the nodes, Dropout in
    inference and a same-type Cast here and there."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    out = []
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 13)
    g.initializer.append(arr("__axes12", np.array([1, 2], np.int64)))

    def unsqueeze(x, y):  # the axes are an input from opset 13 on, an attribute before
        return (helper.make_node("Unsqueeze", [x, "__axes12"], [y]) if opset >= 13
                else helper.make_node("Unsqueeze", [x], [y], axes=[1, 2]))
    for k, node in enumerate(g.node):
        if node.op_type == "Conv" and len(node.input) == 3 and node.input[2]:
            bias, y = node.input[2], node.output[0]
            del node.input[2]
            node.output[0] = f"{y}__nobias"
            out += [node, unsqueeze(bias, f"{y}__b3"),
                    helper.make_node("Add", [f"{y}__nobias", f"{y}__b3"], [y])]
        else:
            out.append(node)
    chained = []
    for k, node in enumerate(out):
        chained.append(node)
        if node.op_type == "Constant" or not node.output or rng.random() >= identity_share:
            continue
        y = node.output[0]
        node.output[0] = f"{y}__0"
        length = int(rng.integers(1, 4))
        for j in range(length):
            op = ["Identity", "Dropout", "Identity"][j % 3] if rng.random() < 0.8 else "Identity"
            chained.append(helper.make_node(op, [f"{y}__{j}"], [y if j == length - 1 else f"{y}__{j + 1}"]))
    del g.node[:]
    g.node.extend(chained)
    return m


TWINS = ["squeezenet1_1.onnx", "resnet18.onnx", "mobilenet_v3_small.onnx"]


def _energy(p, device_class):
    from eeki_label.energy.estimate import estimate_inference
    from eeki_label.pipeline import work_of

    return estimate_inference(work_of(p), device_class, p.activation_peak_elements).energy_j


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(TWINS), seed=st.integers(0, 2**16), share=st.floats(0.2, 1.0))
def test_twin_exports_have_the_same_figures(name, seed, share, tmp_path):
    from eeki_label.pipeline import load_context

    plain = onnx.load(str(ARCH / name))
    twin = re_export(plain, np.random.default_rng(seed), share)
    a, b = profile(plain, tmp_path, "a.onnx"), profile(twin, tmp_path, "b.onnx")
    assert b.node_count > a.node_count
    assert a.macs == b.macs
    assert abs(b.activation_elements / a.activation_elements - 1) <= 0.01
    assert abs(b.activation_bytes / a.activation_bytes - 1) <= 0.01
    for dc in load_context().devices.select(("all",)):
        ea, eb = _energy(a, dc), _energy(b, dc)
        assert (ea is None) == (eb is None)
        if ea is not None:
            assert abs(eb / ea - 1) <= 0.01, dc.id


def test_twin_exports_get_the_same_class(tmp_path):
    from eeki_label.pipeline import AssessOptions, assess
    from eeki_label.transfer.stage import TransferOptions

    plain = onnx.load(str(ARCH / "resnet18.onnx"))
    options = AssessOptions(device_classes=("all",), task="image-classification", runs=0,
                            transfer=TransferOptions(enabled=False))
    a = assess(save(plain, tmp_path / "a.onnx"), options).labels
    b = assess(save(re_export(plain, np.random.default_rng(1), 1.0), tmp_path / "b.onnx"), options).labels
    assert [la.device_class.id for la in a] == [lb.device_class.id for lb in b]
    assert [la.label.class_ for la in a] == [lb.label.class_ for lb in b]
    graded = [(la, lb) for la, lb in zip(a, b) if la.label.index is not None]
    assert graded  # a model that fits no class (a microcontroller) is not graded, in both exports
    for la, lb in graded:
        assert abs(lb.label.index / la.label.index - 1) <= 0.01
    assert "runtime view" in b[0].model.profiled_graph


def test_no_op_folded_and_fused_nodes(tmp_path):
    """Identity, same-type Cast, Reshape views, shape arithmetic on constants and a Conv's bias Add
    move no bytes; a Cast to another type does."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c0", "b"], ["c"]),  # bias split from the Conv: fused
        helper.make_node("Identity", ["c"], ["i"]),
        helper.make_node("Cast", ["i"], ["k"], to=TensorProto.FLOAT),  # same type: no-op
        helper.make_node("Shape", ["k"], ["s"]),  # known shape: folded
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),  # on constants: folded
        helper.make_node("Concat", ["n", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["k", "target"], ["r"]),  # a view
        helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT16),  # converts: moves bytes
    ]
    inits = [arr("w", np.zeros((4, 3, 3, 3), np.float32)), arr("b", np.zeros((1, 4, 1, 1), np.float32)),
             arr("zero", np.array([0], np.int64)), arr("minus1", np.array([-1], np.int64))]
    m = helper.make_model(helper.make_graph(nodes, "g", [vi("x", [1, 3, 8, 8])], [out("y", 2, TensorProto.FLOAT16)],
                                            initializer=inits), opset_imports=[helper.make_opsetid("", 17)])
    p = profile(m, tmp_path)
    assert p.activation_elements == 2 * 4 * 8 * 8  # the Conv's output and the converting Cast's
    assert p.activation_bytes == 4 * 4 * 8 * 8 + 2 * 4 * 8 * 8
    assert "3 no-op" in p.profiled_graph and "3 constant-foldable" in p.profiled_graph and "1 element-wise" \
        in p.profiled_graph


def test_weights_made_at_run_time_are_parameters(tmp_path):
    """ConstantOfShape + fill (an Add of a stored scalar) builds a 256 x 128 weight before a MatMul."""
    nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["w0"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
             helper.make_node("Add", ["w0", "fill"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    inits = [arr("wshape", np.array([256, 128], np.int64)), arr("fill", np.array(0.1, np.float32))]
    m = helper.make_model(helper.make_graph(nodes, "g", [vi("x", [1, 256])], [out("y", 2)], initializer=inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    p = profile(m, tmp_path)
    assert p.parameters == 2 + 1 + 256 * 128
    assert p.macs == 256 * 128
    assert p.activation_elements == 128  # the weight is built once, at load


# ------------------------------------------------------------------ If branches

def _vad_like(shape_param=True):
    """Silero-VAD-like: an If on the sample rate chooses between two encoders (16 kHz: a strided Conv
    with 64 filters and a MatMul; 8 kHz: a smaller Conv), whose Reshape targets are computed at run
    time from the input's length (static inference cannot settle them inside the branch)."""
    rng = np.random.default_rng(0)

    def branch(name, filters, stride):
        w = arr(f"{name}_w", rng.standard_normal((filters, 1, 16)).astype(np.float32))
        p = arr(f"{name}_p", rng.standard_normal((filters, 32)).astype(np.float32))
        nodes = [helper.make_node("Shape", ["x"], [f"{name}_s"]),
                 helper.make_node("Gather", [f"{name}_s", "one"], [f"{name}_len"], axis=0),
                 helper.make_node("Concat", ["one", "one", f"{name}_len"], [f"{name}_t"], axis=0),
                 helper.make_node("Reshape", ["x", f"{name}_t"], [f"{name}_x3"]),
                 helper.make_node("Conv", [f"{name}_x3", f"{name}_w"], [f"{name}_c"], strides=[stride], name=f"{name}_conv"),
                 helper.make_node("ReduceMean", [f"{name}_c"], [f"{name}_m"], axes=[2], keepdims=0),
                 helper.make_node("MatMul", [f"{name}_m", f"{name}_p"], [f"{name}_y"], name=f"{name}_proj")]
        return helper.make_graph(nodes, name, [], [out(f"{name}_y", 2)], initializer=[w, p])

    nodes = [helper.make_node("Greater", ["sr", "limit"], ["is16k"]),
             helper.make_node("If", ["is16k"], ["y"], then_branch=branch("k16", 64, 8),
                              else_branch=branch("k8", 32, 4), name="sr_switch")]
    inits = [arr("limit", np.array(8000, np.int64)), arr("one", np.array([1], np.int64))]
    graph = helper.make_graph(nodes, "vad", [vi("x", [1, "N"] if shape_param else [1, 256]),
                                             vi("sr", [], TensorProto.INT64)], [out("y", 2)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_if_counts_the_branch_the_inputs_take(tmp_path):
    """The generated inputs are ones: sr = 1 <= 8000, so the 8 kHz (else) branch runs."""
    p = profile(_vad_like(), tmp_path, probe=True, shapes={"x": (1, 256)})
    out8 = (256 - 16) // 4 + 1
    out16 = (256 - 16) // 8 + 1
    k8 = 32 * out8 * 16 + 32 * 32
    k16 = 64 * out16 * 16 + 64 * 32
    assert p.macs == k8
    assert len(p.if_branches) == 1
    b = p.if_branches[0]
    assert (b.node, b.taken, b.macs_taken) == ("sr_switch", "else_branch", k8)
    assert b.macs_other in (None, k16)
    assert p.unresolved_nodes == () and p.macs_coverage == 1.0


def test_if_without_a_probe_lists_unresolved_nodes_by_name(tmp_path):
    p = profile(_vad_like(), tmp_path, shapes={"x": (1, 256)})
    assert any(n.endswith("k8_conv") for n in p.unresolved_nodes) or p.macs > 0
    assert p.if_branches[0].taken is None


# ------------------------------------------------------------------ inputs and dtypes

def test_an_empty_kv_cache_is_a_legal_input(tmp_path):
    """past [1, 0, 8] (no tokens yet) is concatenated with the new ones: a zero-size dimension."""
    from eeki_label.pipeline import AssessOptions, assess
    from eeki_label.transfer.stage import TransferOptions

    nodes = [helper.make_node("Concat", ["past", "x"], ["kv"], axis=1),
             helper.make_node("MatMul", ["kv", "w"], ["y"])]
    m = helper.make_model(helper.make_graph(
        nodes, "kv", [vi("past", [1, 0, 8]), vi("x", [1, 4, 8])], [vi("y", [1, 4, 16])],
        initializer=[arr("w", np.ones((8, 16), np.float32))]), opset_imports=[helper.make_opsetid("", 17)])
    options = AssessOptions(device_classes=("single-board-cpu",), runs=2, transfer=TransferOptions(enabled=False))
    lab = assess(save(m, tmp_path / "kv.onnx"), options).labels[0]
    assert lab.model.inputs[0].shape == [1, 0, 8] and lab.model.macs == 4 * 16 * 8


@pytest.mark.parametrize("dtype", ["FLOAT8E4M3FN", "INT4", "UINT4", "FLOAT4E2M1"])
def test_float8_and_int4_inputs_get_an_error_naming_the_type(dtype, tmp_path):
    from eeki_label.errors import UnsupportedOperatorError

    if not hasattr(TensorProto, dtype):
        pytest.skip(f"this onnx has no {dtype}")
    elem = getattr(TensorProto, dtype)
    m = helper.make_model(helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "g",
                                            [vi("x", [1, 4], elem)], [vi("y", [1, 4])]),
                          opset_imports=[helper.make_opsetid("", 21)])
    loaded = load_model(save(m, tmp_path / "f8.onnx"))
    with pytest.raises(UnsupportedOperatorError, match=dtype.lower()):
        resolve_input_shapes(loaded.proto)


def test_duplicate_node_names_do_not_break_the_fidelity_rewrite(tmp_path):
    """onnxruntime accepts the model (its Constant nodes fold away) but not the weights-as-inputs copy
    unless the names are made distinct."""
    from eeki_label.model_io import iter_stored_tensors
    from eeki_label.transfer.fidelity import WeightFeedRunner

    m = tiny_cnn(with_constant=True, batch=1)
    for node in m.graph.node:
        node.name = "same"
    loaded = load_model(save(m, tmp_path / "dup.onnx"))
    runner = WeightFeedRunner(loaded, [r.key for r in iter_stored_tensors(loaded.proto)])
    assert runner.output_names == ["y"]


def _renamed(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every value and node renamed (inputs and outputs of the graph included)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names: dict[str, str] = {}

    def new(name):
        if name and name not in names:
            names[name] = f"v{len(names)}"
        return names.get(name, name)

    for vi_ in list(g.input) + list(g.output) + list(g.value_info):
        vi_.name = new(vi_.name)
    for t in g.initializer:
        t.name = new(t.name)
    for k, node in enumerate(g.node):
        node.name = f"n{k}"
        node.input[:] = [new(x) for x in node.input]
        node.output[:] = [new(x) for x in node.output]
    return m


@pytest.mark.parametrize("variant", ["renamed", "opset_18"])
def test_renaming_and_another_opset_leave_the_figures(variant, tmp_path):
    from onnx import version_converter

    plain = onnx.load(str(ARCH / "squeezenet1_1.onnx"))
    other = _renamed(plain) if variant == "renamed" else version_converter.convert_version(plain, 18)
    a, b = profile(plain, tmp_path, "a.onnx"), profile(other, tmp_path, "b.onnx")
    assert (a.macs, a.activation_elements, a.activation_bytes, a.parameters) == \
        (b.macs, b.activation_elements, b.activation_bytes, b.parameters)


def test_an_if_inside_the_taken_branch_is_resolved_too(tmp_path):
    """The outer If takes its else branch (sr = 1); there an inner If on sr > 4000 takes its else branch:
    only that innermost branch's Conv and MatMul count."""
    outer = _vad_like()
    g = outer.graph
    iff = next(n for n in g.node if n.op_type == "If")
    then_g = next(a.g for a in iff.attribute if a.name == "then_branch")
    else_g = next(a.g for a in iff.attribute if a.name == "else_branch")
    inner_then = onnx.GraphProto()
    inner_then.CopyFrom(then_g)  # 64 filters, stride 8: the branch not taken
    wrapper = helper.make_graph(
        [helper.make_node("Greater", ["sr", "limit4k"], ["is4k"]),
         helper.make_node("If", ["is4k"], ["w_y"], then_branch=inner_then, else_branch=else_g, name="inner")],
        "wrapper", [], [out("w_y", 2)], initializer=[arr("limit4k", np.array(4000, np.int64))])
    small = helper.make_graph([helper.make_node("Constant", [], ["c_y"], value=numpy_helper.from_array(
        np.zeros((1, 32), np.float32)))], "none", [], [out("c_y", 2)])
    iff.ClearField("attribute")
    iff.attribute.extend([helper.make_attribute("then_branch", small), helper.make_attribute("else_branch", wrapper)])
    p = profile(outer, tmp_path, probe=True, shapes={"x": (1, 256)})
    k8 = 32 * ((256 - 16) // 4 + 1) * 16 + 32 * 32
    assert p.macs == k8 and p.unresolved_nodes == () and p.macs_coverage == 1.0
    assert p.if_branches[0].taken == "else_branch"
