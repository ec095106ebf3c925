"""The low-memory loader: large tensors stay in the file as self-referencing external data.

Each test builds tiny models with onnx.helper; values read through ``tensor_array`` must equal what
``onnx.load`` + ``numpy_helper.to_array`` give, and damaged files must raise only EekiError subclasses.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eeki_label import model_io
from eeki_label.errors import (
    EekiError,
    ExternalDataError,
    ModelFileError,
    ModelFormatError,
    ModelInvalidError,
    ModelTooLargeError,
)
from eeki_label.model_io import (
    SELF_REFERENCE_MIN_BYTES,
    LoadLimits,
    iter_all_tensors,
    iter_stored_tensors,
    load_model,
    materialize,
    tensor_array,
)
from support import SHARED_MODELS, read_every_tensor

REAL_MODELS = {  # file: (elements of all stored tensors, sha256), as in shared/models/README.md
    "ppocr_mobile_v2_cls.onnx": (133_777, "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    "ppocr_v4_det.onnx": (1_171_841, "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
}

RNG = np.random.default_rng(0)
N = 64  # width of the toy network; a [N, N] float32 tensor is 16 KiB (external), [N] is 256 B (inline)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _external(name: str, dims, location: str, offset: "int | None" = None, length: "int | None" = None):
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims, data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value=location)
    if offset is not None:
        t.external_data.add(key="offset", value=str(offset))
    if length is not None:
        t.external_data.add(key="length", value=str(length))
    return t


def _vi(name: str, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _branch(name: str, x: str, depth: int) -> onnx.GraphProto:
    """Subgraph computing MatMul(x, own initializer), with a nested If ``depth`` levels deep."""
    w = numpy_helper.from_array(_f32(N, N), f"{name}.w")
    nodes = [helper.make_node("MatMul", [x, w.name], [f"{name}.mm"])]
    out = f"{name}.mm"
    if depth > 0:
        nodes.append(helper.make_node("Constant", [], [f"{name}.cond"], value=helper.make_tensor(
            f"{name}.cond", TensorProto.BOOL, [], [True])))
        nodes.append(helper.make_node("If", [f"{name}.cond"], [f"{name}.if"],
                                      then_branch=_branch(f"{name}.t", out, depth - 1),
                                      else_branch=_branch(f"{name}.e", out, 0)))
        out = f"{name}.if"
    nodes.append(helper.make_node("Identity", [out], [f"{name}.out"]))
    return helper.make_graph(nodes, name, [], [_vi(f"{name}.out", [1, N])], initializer=[w])


def build_model(folder: Path, name: str = "model.onnx", subgraph_depth: int = 2) -> Path:
    """A model exercising every place a tensor can sit. Writes ``name`` (and ``weights.bin``)."""
    w_raw = numpy_helper.from_array(_f32(N, N), "w_raw")
    bias = numpy_helper.from_array(_f32(N), "bias")  # small: stays inline
    w_float_data = helper.make_tensor("w_float_data", TensorProto.FLOAT, [N, N], _f32(N, N).ravel().tolist())
    d_double = helper.make_tensor("d_double", TensorProto.DOUBLE, [1, 256],
                                  RNG.standard_normal(256).tolist())  # double_data, 2 KiB
    idx = numpy_helper.from_array(RNG.integers(0, N, 300).astype(np.int64), "idx")  # int64 raw, 2400 B
    f16 = numpy_helper.from_array(_f32(N, N).astype(np.float16), "w_f16")
    shape = numpy_helper.from_array(np.array([N, 1], dtype=np.int64), "shape")  # read by shape inference
    ext_values = _f32(N, N)
    (folder / "weights.bin").write_bytes(b"\0" * 16 + ext_values.tobytes())
    w_ext = _external("w_ext", [N, N], "weights.bin", 16, ext_values.nbytes)
    sparse_values = numpy_helper.from_array(_f32(400), "sp")  # 1600 B, but sparse tensors stay inline
    sparse_idx = numpy_helper.from_array(np.arange(400, dtype=np.int64) * 2, "sp_idx")
    sparse = helper.make_sparse_tensor(sparse_values, sparse_idx, [1000])

    fn = helper.make_function(
        "local.fn", "BigScale", ["x"], ["y"],
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(_f32(N, N), "fn_c")),
         helper.make_node("MatMul", ["x", "c"], ["y"])],
        [helper.make_opsetid("", 17)],
    )
    nodes = [
        helper.make_node("MatMul", ["X", "w_raw"], ["y1"]),
        helper.make_node("Add", ["y1", "bias"], ["y2"]),
        helper.make_node("MatMul", ["y2", "w_float_data"], ["y3"]),
        helper.make_node("Constant", [], ["c_big"], value=numpy_helper.from_array(_f32(N, N), "c_big")),
        helper.make_node("MatMul", ["y3", "c_big"], ["y4"]),
        helper.make_node("MatMul", ["y4", "w_ext"], ["y5"]),
        helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("cond", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["cond"], ["y6"], then_branch=_branch("then", "y5", subgraph_depth),
                         else_branch=_branch("else", "y5", 0)),
        helper.make_node("BigScale", ["y6"], ["y7"], domain="local.fn"),
        helper.make_node("Cast", ["y7"], ["y7h"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["y7h", "w_f16"], ["y8h"]),
        helper.make_node("Cast", ["y8h"], ["y8"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["y8", "idx"], ["gathered"], axis=1),
        helper.make_node("Reshape", ["y8", "shape"], ["reshaped"]),
        helper.make_node("Cast", ["d_double"], ["d_float"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "toy", [_vi("X", [1, N])],
        [_vi("gathered", [1, 300]), _vi("reshaped", [N, 1]), _vi("d_float", [1, 256])],
        initializer=[w_raw, bias, w_float_data, d_double, idx, f16, shape, w_ext],
        sparse_initializer=[sparse],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local.fn", 1)],
                              functions=[fn])
    model.ir_version = 9
    path = folder / name
    path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(path))
    return path


def _reference_tensors(path: Path) -> dict[str, TensorProto]:
    ref = onnx.load(str(path))  # loads external data inline
    return {r.key: r.tensor for r in iter_stored_tensors(ref)}


def _assert_same_values(loaded, path: Path) -> None:
    expected = _reference_tensors(path)
    refs = list(iter_stored_tensors(loaded.proto))
    assert [r.key for r in refs] == list(expected)
    for r in refs:
        e = expected[r.key]
        assert list(r.tensor.dims) == list(e.dims) and r.tensor.data_type == e.data_type, r.key
        got, want = tensor_array(loaded, r.tensor), numpy_helper.to_array(e)
        assert got.dtype == want.dtype and got.shape == want.shape, r.key
        np.testing.assert_array_equal(got, want, err_msg=r.key)


def _location(t: TensorProto) -> "str | None":
    if t.data_location != TensorProto.EXTERNAL:
        return None
    return {e.key: e.value for e in t.external_data}["location"]


# --------------------------------------------------------------------------------------------


def test_values_equal_plain_onnx_load(tmp_path):
    path = build_model(tmp_path)
    loaded = load_model(path)
    _assert_same_values(loaded, path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.file_bytes == path.stat().st_size
    assert loaded.external_bytes == N * N * 4  # weights.bin only; the model's own tensors are not counted


def test_large_tensors_point_into_the_model_file(tmp_path):
    path = build_model(tmp_path)
    loaded = load_model(path)
    where = {r.key: _location(r.tensor) for r in iter_stored_tensors(loaded.proto)}
    for key in ("initializer:w_raw", "initializer:w_float_data", "initializer:d_double", "initializer:idx",
                "initializer:w_f16", "constant:c_big", "#7.then_branch/initializer:then.w",
                "#7.then_branch/#2.then_branch/#2.then_branch/initializer:then.t.t.w",
                "fn:local.fn.BigScale/constant:c"):
        assert where.get(key) == "model.onnx", (key, where)
    assert where["initializer:w_ext"] == "weights.bin"  # already external: reference kept
    for key in ("initializer:bias", "initializer:shape", "constant:cond", "sparse:sp"):
        assert where[key] is None, key
    # the raw bytes at the recorded offset are the payload, whatever field stored it
    raw = path.read_bytes()
    for r in iter_stored_tensors(loaded.proto):
        if _location(r.tensor) == "model.onnx":
            info = {e.key: int(e.value) for e in r.tensor.external_data if e.key != "location"}
            assert info["length"] == model_io.tensor_nbytes(r.tensor) >= SELF_REFERENCE_MIN_BYTES
            values = tensor_array(loaded, r.tensor)
            assert raw[info["offset"]:info["offset"] + info["length"]] == values.astype(values.dtype.newbyteorder("<")).tobytes()
    assert loaded.proto.ByteSize() < path.stat().st_size / 5


def test_keys_and_dims_match_plain_load_for_every_tensor(tmp_path):
    path = build_model(tmp_path)
    loaded = load_model(path)
    ref = onnx.load(str(path))
    mine = [(list(t.dims), t.data_type, t.name) for t in iter_all_tensors(loaded.proto)]
    theirs = [(list(t.dims), t.data_type, t.name) for t in iter_all_tensors(ref)]
    assert mine == theirs


def test_materialize_is_self_contained_and_runs(tmp_path):
    import onnxruntime as ort

    path = build_model(tmp_path)
    loaded = load_model(path)
    full = materialize(loaded)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in iter_all_tensors(full))
    onnx.checker.check_model(full)
    x = {"X": _f32(1, N)}
    from_bytes = ort.InferenceSession(full.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    from_path = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)
    for a, b in zip(from_bytes, from_path):
        np.testing.assert_array_equal(a, b)
    # the loaded proto itself is untouched
    assert any(_location(t) == "model.onnx" for t in iter_all_tensors(loaded.proto))


def test_static_profile_and_probe_work_on_self_references(tmp_path):
    from eeki_label.profile.runtime import probe_shapes
    from eeki_label.profile.shapes import resolve_input_shapes
    from eeki_label.profile.static import _with_fixed_inputs, static_profile

    path = build_model(tmp_path)
    loaded = load_model(path)
    shapes = resolve_input_shapes(loaded.proto, {})
    before = loaded.proto.SerializeToString()
    skeleton = _with_fixed_inputs(loaded.proto, shapes)
    assert loaded.proto.SerializeToString() == before  # nothing stashed and restored wrongly
    assert skeleton.ByteSize() < path.stat().st_size / 5
    prof = static_profile(loaded, shapes)
    expected = _reference_tensors(path)
    assert prof.parameters == sum(math.prod(t.dims) for t in expected.values())
    assert prof.macs > 0 and not prof.unresolved_nodes
    outs = {o.name: o.shape for o in prof.outputs}
    assert outs["reshaped"] == (N, 1) and outs["gathered"] == (1, 300)  # Reshape target read by inference
    assert probe_shapes(loaded, shapes, ["y4", "y8"]) == {"y4": (1, N), "y8": (1, N)}


def test_symlink_leaving_the_folder_falls_back_to_inline(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    path = build_model(real)
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.bin").symlink_to(real / "weights.bin")  # keep the existing external tensor findable
    link = other / "link.onnx"
    link.symlink_to(path)
    with pytest.raises(ExternalDataError, match="outside the model's folder"):
        load_model(link)  # weights.bin itself is a link leaving the folder: refused, as before
    (other / "weights.bin").unlink()
    (other / "weights.bin").write_bytes((real / "weights.bin").read_bytes())
    loaded = load_model(link)
    assert not any(_location(t) == "link.onnx" for t in iter_all_tensors(loaded.proto))
    _assert_same_values(loaded, path)
    # a link inside the same folder keeps self-references, under the link's own name
    inside = real / "alias.onnx"
    inside.symlink_to(path)
    loaded = load_model(inside)
    assert any(_location(t) == "alias.onnx" for t in iter_all_tensors(loaded.proto))
    _assert_same_values(loaded, path)


def test_file_changed_after_loading_is_refused(tmp_path):
    path = build_model(tmp_path)
    loaded = load_model(path)
    big = next(r.tensor for r in iter_stored_tensors(loaded.proto) if _location(r.tensor) == "model.onnx")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ModelFileError, match="changed"):
        tensor_array(loaded, big)


def test_limits_still_apply(tmp_path):
    path = build_model(tmp_path)
    with pytest.raises(ModelTooLargeError):
        load_model(path, LoadLimits(max_tensor_bytes=10_000))
    with pytest.raises(ModelTooLargeError):
        load_model(path, LoadLimits(max_file_bytes=100))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        load_model(empty)


def test_declared_size_mismatch_stays_an_invalid_model(tmp_path):
    t = numpy_helper.from_array(_f32(N, N), "w")
    t.raw_data = t.raw_data[:-4]  # 4 bytes short: not moved out, reported as before
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "w"], ["Y"])], "g", [_vi("X", [1, N])],
                              [_vi("Y", [1, N])], initializer=[t])
    path = tmp_path / "short.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(ModelInvalidError, match="stores"):
        load_model(path)


def test_forged_self_reference_out_of_bounds(tmp_path):
    t = _external("w", [N, N], "forged.onnx", 10, N * N * 4)
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "w"], ["Y"])], "g", [_vi("X", [1, N])],
                              [_vi("Y", [1, N])], initializer=[t])
    path = tmp_path / "forged.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(ExternalDataError, match="shorter"):
        load_model(path)


def test_external_outside_folder_is_refused_in_any_attribute(tmp_path):
    t = _external("w", [4], "../secret.bin")
    graph = helper.make_graph([helper.make_node("Constant", [], ["Y"], value=t)], "g", [], [_vi("Y", [4])])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(ExternalDataError, match=r"'\.\.'"):
        load_model(path)


# --------------------------------------------------------------------------------------------
# Malformed files: only EekiError subclasses, one-line messages


def _load_must_be_clean(path: Path) -> None:
    try:
        loaded = load_model(path)
    except EekiError as e:
        assert "\n" not in str(e)
        return
    read_every_tensor(loaded)  # a file that still loads must also read cleanly


def test_truncated_files_give_only_eeki_errors(tmp_path):
    data = build_model(tmp_path).read_bytes()
    cuts = sorted(set(range(0, 64)) | set(range(64, len(data), max(1, len(data) // 150))) | {len(data) - 1})
    path = tmp_path / "cut.onnx"
    for cut in cuts:
        path.write_bytes(data[:cut])
        _load_must_be_clean(path)


def test_random_byte_flips_give_only_eeki_errors(tmp_path):
    src = build_model(tmp_path)
    data = src.read_bytes()
    loaded = load_model(src)
    # flips are aimed mostly at structure (not at payload bytes, where they just change values)
    payload = np.zeros(len(data), dtype=bool)
    for t in iter_all_tensors(loaded.proto):
        if _location(t) == "model.onnx":
            info = {e.key: e.value for e in t.external_data}
            payload[int(info["offset"]):int(info["offset"]) + int(info["length"])] = True
    structure = np.flatnonzero(~payload).tolist()
    rnd = random.Random(1234)
    path = tmp_path / "flipped.onnx"
    for _ in range(400):
        buf = bytearray(data)
        for _ in range(rnd.choice((1, 1, 2, 4))):
            pos = rnd.choice(structure) if rnd.random() < 0.9 else rnd.randrange(len(buf))
            buf[pos] = rnd.randrange(256) if rnd.random() < 0.5 else buf[pos] ^ (1 << rnd.randrange(8))
        path.write_bytes(bytes(buf))
        _load_must_be_clean(path)


def _varint(v: int) -> bytes:
    return model_io._encode_varint(v)


@pytest.mark.parametrize("blob, fragment", [
    (b"\x08" + b"\xff" * 11, "varint"),                       # ir_version: an endless varint
    (b"\x08\x07\x3a\x10\x0a", "past the end"),                # graph says 16 bytes, 1 follows
    (b"\x08\x07\x38\x05", "wire type 0"),                     # graph (field 7) as a varint
    (b"\x08\x07\x3b\x3c", "wire type 3"),                     # a group
    (b"\x08\x07\x00", "field number 0"),
    (b"\x08\x07\x3a" + _varint(2000) + b"\x0a" + _varint(1990) + b"\x2a" + _varint(3000) + b"\x00" * 50,
     "past the end"),                                          # deep length overrun inside node
])
def test_malformed_wire_format(tmp_path, blob, fragment):
    path = tmp_path / "bad.onnx"
    path.write_bytes(blob)
    with pytest.raises(ModelFormatError, match=fragment) as info:
        load_model(path)
    assert "\n" not in str(info.value) and "not an ONNX model" in str(info.value)


def _nested_model_bytes(depth: int, weight_elements: int = 256) -> bytes:
    """Serialised bytes of If bodies nested ``depth`` deep, each holding an initializer (a large
    one: the scanner descends all the way); written by hand because protobuf refuses to build it."""
    w = numpy_helper.from_array(_f32(weight_elements), "w")
    inner = helper.make_graph([helper.make_node("Identity", ["w"], ["o"])], "g", [],
                              [_vi("o", [weight_elements])], initializer=[w]).SerializeToString()
    body = inner
    for i in range(depth):
        attr = _field(1, b"then_branch") + _field(20, onnx.AttributeProto.GRAPH, varint=True) + _field(6, body)
        node = _field(1, b"c") + _field(2, b"o") + _field(4, b"If") + _field(5, attr)
        body = _field(1, node) + _field(5, w.SerializeToString()) + _field(12, _vi("o", [weight_elements]).SerializeToString())
    return _field(1, 9, varint=True) + _field(7, body) + _field(8, helper.make_opsetid("", 17).SerializeToString())


def _field(no: int, value, varint: bool = False) -> bytes:
    if varint:
        return _varint(no << 3) + _varint(value)
    return _varint(no << 3 | 2) + _varint(len(value)) + value


def test_deep_subgraph_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.onnx"
    path.write_bytes(_nested_model_bytes(model_io.MAX_SUBGRAPH_DEPTH + 5))
    with pytest.raises(ModelFormatError, match="nested deeper"):
        load_model(path)
    path.write_bytes(_nested_model_bytes(1000, weight_elements=1))  # small levels: left to protobuf
    with pytest.raises(ModelFormatError):
        load_model(path)


def test_scanner_field_numbers_match_onnx_proto():
    assert model_io._CHILDREN[model_io._MODEL] == {7: model_io._GRAPH, 25: model_io._FUNCTION}
    assert model_io._CHILDREN[model_io._GRAPH] == {1: model_io._NODE, 5: model_io._TENSOR}
    assert model_io._CHILDREN[model_io._FUNCTION] == {7: model_io._NODE}
    assert model_io._CHILDREN[model_io._NODE] == {5: model_io._ATTRIBUTE}
    assert set(model_io._CHILDREN[model_io._ATTRIBUTE]) == {5, 6, 10, 11}
    assert (model_io._T_RAW, model_io._T_FLOAT, model_io._T_DOUBLE) == (9, 4, 10)


# --------------------------------------------------------------------------------------------
# The real trained models


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_real_models(name):
    path = SHARED_MODELS / name
    if not path.is_file():
        pytest.fail(f"real test model {name} is missing: expected in ../shared/models/ relative to the project "
                    "root (see its README.md for how to get it)")
    params, sha = REAL_MODELS[name]
    readme = SHARED_MODELS / "README.md"
    if readme.is_file():
        assert sha in readme.read_text(), f"{name}: sha256 in shared/models/README.md differs from this test's"
    loaded = load_model(path)
    assert loaded.sha256 == sha
    assert sum(math.prod(r.tensor.dims) for r in iter_stored_tensors(loaded.proto)) == params
    assert any(_location(t) == name for t in iter_all_tensors(loaded.proto))
    _assert_same_values(loaded, path)
