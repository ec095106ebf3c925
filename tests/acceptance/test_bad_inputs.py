"""Every bad input ends with one clear line on stderr, a documented exit code, and no output file."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from support import save, tiny_cnn
from eeki_label.cli import main


def _external_model(tmp_path, location, make_file=True, length=None):
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    m = tiny_cnn()
    w = m.graph.initializer[0]
    data = numpy_helper.to_array(w).tobytes()
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length or len(data)))):
        e = w.external_data.add()
        e.key, e.value = k, v
    if make_file:
        (folder / "weights.bin").write_bytes(data)
    path = folder / "m.onnx"
    path.write_bytes(m.SerializeToString())
    return path


def case_missing(tmp_path):
    return tmp_path / "nope.onnx"


def case_directory(tmp_path):
    d = tmp_path / "dir.onnx"
    d.mkdir()
    return d


def case_empty(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    return p


def case_not_protobuf(tmp_path):
    p = tmp_path / "text.onnx"
    p.write_bytes(b"this is not an onnx model, just text\n" * 10)
    return p


def case_truncated(tmp_path):
    data = tiny_cnn().SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    return p


def case_no_nodes(tmp_path):
    graph = helper.make_graph([], "empty", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "nonodes.onnx")


def case_custom_op(tmp_path):
    graph = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    return save(m, tmp_path / "custom.onnx")


def case_huge_declared_tensor(tmp_path):
    m = tiny_cnn()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    del t.dims[:]
    t.dims.extend([1 << 20, 1 << 20, 1 << 10])  # 2^50 floats declared, 4 PiB
    p = tmp_path / "huge.onnx"
    p.write_bytes(m.SerializeToString())
    return p


def case_payload_shorter_than_dims(tmp_path):
    m = tiny_cnn()
    m.graph.initializer[0].raw_data = b"\x00" * 8
    p = tmp_path / "short.onnx"
    p.write_bytes(m.SerializeToString())
    return p


def case_external_absolute(tmp_path):
    return _external_model(tmp_path, "/etc/passwd")


def case_external_dotdot(tmp_path):
    return _external_model(tmp_path, "../weights.bin")


def case_external_symlink_out(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\x00" * 4096)
    path = _external_model(tmp_path, "link.bin", make_file=False)
    os.symlink(outside, path.parent / "link.bin")
    return path


def case_external_missing(tmp_path):
    return _external_model(tmp_path, "weights.bin", make_file=False)


def case_external_short(tmp_path):
    path = _external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(b"\x00" * 16)
    return path


def case_unknown_dim(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", 8])])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "dyn.onnx")


def case_checker_failure(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "dup.onnx")


CASES = [
    (case_missing, [], 10, "no such file"),
    (case_directory, [], 10, "not a regular file"),
    (case_empty, [], 12, "empty file"),
    (case_not_protobuf, [], 12, "not an ONNX model"),
    (case_truncated, [], None, ""),  # 12 or 13 depending on where the cut falls
    (case_no_nodes, [], 13, "no nodes"),
    (case_custom_op, [], 14, "custom domain 'com.example'"),
    (case_huge_declared_tensor, [], 11, "over the limit"),
    (case_payload_shorter_than_dims, [], 13, "stores 8 bytes"),
    (case_external_absolute, [], 15, "absolute external data location refused"),
    (case_external_dotdot, [], 15, "'..' refused"),
    (case_external_symlink_out, [], 15, "outside the model's folder"),
    (case_external_missing, [], 15, "is missing"),
    (case_external_short, [], 15, "shorter than"),
    (case_unknown_dim, [], 16, "input 'x': dimension 2 is 'H'"),
    (case_checker_failure, [], 13, "ONNX checker"),
    (lambda p: save(tiny_cnn(), p / "ok.onnx"), ["--input-shape", "x=1x3"], 16, "rank 2 given"),
    (lambda p: save(tiny_cnn(), p / "ok.onnx"), ["--input-shape", "nonsense"], 2, "expected NAME="),
    (lambda p: save(tiny_cnn(), p / "ok.onnx"), ["--task", "Juggling!"], 2, "--task 'Juggling!': a task id is"),
    (lambda p: save(tiny_cnn(), p / "ok.onnx"), ["-d", "toaster"], 20, "unknown device class 'toaster'"),
    (lambda p: save(tiny_cnn(), p / "ok.onnx"), ["--rules", "9.9.9"], 20, "unknown rules version"),
    (lambda p: save(tiny_cnn(), p / "ok.onnx"), ["--fail-below", "Z"], 2, "unknown class 'Z'"),
    (lambda p: save(tiny_cnn(), p / "ok.onnx"), ["--max-file-bytes", "100"], 11, "over the limit of 100 bytes"),
]


@pytest.mark.parametrize("builder,extra,code,message", CASES, ids=lambda v: getattr(v, "__name__", None))
def test_bad_input(builder, extra, code, message, tmp_path, capsys):
    model = builder(tmp_path)
    out = tmp_path / "out"
    rc = main(["assess", str(model), "--runs", "1", "--out", str(out), "--json", str(out / "x.json"), "-q"] + extra)
    stdout, stderr = capsys.readouterr()
    if code is None:
        assert rc in (12, 13)
    else:
        assert rc == code, stderr
    assert stderr.count("\n") == 1 and stderr.startswith(("error:", "usage error:")), stderr
    assert "Traceback" not in stderr and message in stderr
    assert not out.exists() or not any(out.iterdir()), "no output file after a failure"


def test_truncation_at_every_cut_is_a_clean_error(tmp_path, capsys):
    data = tiny_cnn(with_constant=True).SerializeToString()
    p = tmp_path / "cut.onnx"
    for cut in range(1, len(data), max(1, len(data) // 97)):
        p.write_bytes(data[:cut])
        rc = main(["assess", str(p), "--runs", "1", "-q"])
        _, err = capsys.readouterr()
        assert rc in (12, 13, 16, 17), (cut, rc, err)
        assert err.count("\n") == 1 and "Traceback" not in err
