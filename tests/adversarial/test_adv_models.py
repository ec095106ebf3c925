"""Hostile and broken model files through ``eeki-label assess``: each case has one expected outcome.

A failure must be exactly one line on stderr (``error: ...``, nothing from onnxruntime's own log:
``capfd`` captures file descriptor 2, not just ``sys.stderr``), the documented exit code (README,
"Exit codes"), no traceback and no file in ``--out``. A success must be a correct label.
Complements tests/acceptance/test_bad_inputs.py (not a protobuf, empty, truncated, no nodes, custom
domain, 2^50-element tensor, short payload, absolute / ``..`` / symlinked / missing / short external data).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hostile as H
from eeki_label.cli import main

DEVICE = ["-d", "edge-gpu-batch1", "--json-shape", "single"]  # these tests read one label


def assess(model, tmp_path, capfd, *extra, runs="1"):
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc = main(["assess", str(model), "--runs", runs, "--out", str(out), "--json", str(out / "x.json"), "-q",
               "--issued-at", "2026-01-01T00:00:00+00:00", *DEVICE, *[str(a) for a in extra]])
    elapsed = time.monotonic() - t0
    stdout, stderr = capfd.readouterr()
    return rc, stdout, stderr, out, elapsed


def assert_clean_failure(rc, stderr, out, code, fragment, tmp_path):
    assert rc == code, stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, f"not one line: {stderr!r}"
    assert stderr.startswith(("error: ", "usage error: ")), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert fragment in stderr, stderr
    assert not out.exists() or not any(out.iterdir()), "an output file was left after a failure"
    assert not list(tmp_path.rglob("*.part")), "a temporary output file was left behind"


def assert_label(rc, stderr, out):
    assert rc == 0, stderr
    assert stderr == "", stderr
    assert {p.name for p in out.iterdir()} == {"label.json", "label.pdf", "report.html", "x.json"}
    return json.loads((out / "label.json").read_text())


# --------------------------------------------------------------------------------------------
# Failures: (builder(tmp_path) -> model path, extra CLI arguments, exit code, message fragment)


def _dir_symlink_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.bin").write_bytes(b"\0" * 864)
    path = H.with_external(tmp_path, "d/weights.bin", write_data=False)
    H.symlink(outside, path.parent / "d")
    return path


def _self_reference_forged(tmp_path):
    """A tensor whose external data names the model file itself, with an offset past its end."""
    path = H.with_external(tmp_path, "m.onnx", write_data=False, offset=10**6)
    return path


def _fifo_external(tmp_path):
    path = H.with_external(tmp_path, "pipe.bin", write_data=False)
    os.mkfifo(path.parent / "pipe.bin")  # reading it would block forever
    return path


def _model_is_fifo(tmp_path):
    os.mkfifo(tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def _model_links_to_dev_zero(tmp_path):
    return H.symlink(os.devnull, tmp_path / "m.onnx")


def _initializer_dims(dims, raw=None):
    def build(tmp_path):
        m = H.tiny()
        t = m.graph.initializer[0]
        t.ClearField("raw_data")
        del t.dims[:]
        t.dims.extend(dims)
        if raw is not None:
            t.raw_data = raw
        return H.write(m, tmp_path / "m.onnx")
    return build


def _many_small_tensors_over_total(tmp_path):
    inits = [numpy_helper.from_array(np.zeros(256, np.float32), f"t{i}") for i in range(8)]  # 8 KiB in total
    nodes = [helper.make_node("Add", ["x" if i == 0 else f"a{i - 1}", f"t{i}"], [f"a{i}"]) for i in range(8)]
    return H.write(H.model(nodes, [H.vi("x", [256])], [H.vi("a7", [256])], inits), tmp_path / "m.onnx")


def _cycle(tmp_path):
    m = H.model([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
                [H.vi("x", [1])], [H.vi("a", [1])])
    return H.write(m, tmp_path / "m.onnx")


def _self_loop(tmp_path):
    m = H.model([helper.make_node("Relu", ["a"], ["a"])], [H.vi("x", [1])], [H.vi("a", [1])])
    return H.write(m, tmp_path / "m.onnx")


def _cycle_in_subgraph(tmp_path):
    then = helper.make_graph([helper.make_node("Add", ["x", "q"], ["p"]), helper.make_node("Relu", ["p"], ["q"])],
                             "then", [], [H.vi("q", [1])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["r"])], "else", [], [H.vi("r", [1])])
    m = H.model([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                [H.vi("c", [], TensorProto.BOOL), H.vi("x", [1])], [H.vi("y", [1])])
    return H.write(m, tmp_path / "m.onnx")


def _dup(kind):
    def build(tmp_path):
        m = H.tiny()
        if kind == "initializer":
            m.graph.initializer.append(m.graph.initializer[0])
        elif kind == "input":
            m.graph.input.append(m.graph.input[0])
        elif kind == "node_output":
            m.graph.node.insert(1, helper.make_node("Identity", ["c"], ["r"]))
        elif kind == "node_name":
            m.graph.node[1].name = m.graph.node[0].name
        elif kind == "output":
            m.graph.output.append(m.graph.output[0])
        return H.write(m, tmp_path / "m.onnx")
    return build


def _non_utf8(where):
    return lambda tmp_path: H.write(H.non_utf8(where), tmp_path / "m.onnx")


def _opset(edit):
    def build(tmp_path):
        m = H.tiny()
        edit(m)
        return H.write(m, tmp_path / "m.onnx")
    return build


def _set_ir(v):
    def edit(m):
        m.ir_version = v
    return edit


def _set_opset(v):
    def edit(m):
        m.opset_import[0].version = v
    return edit


def _no_opset(m):
    del m.opset_import[:]


def _conflicting_opset(m):
    m.opset_import.append(helper.make_opsetid("ai.onnx", 13))


def _future_ml_opset(m):
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 99))


def _long_input_name(m):
    name = "I" * 1_000_000  # laid out in the PDF this stalled reportlab for minutes, or crashed it (LayoutError)
    m.graph.node[0].input[0] = name
    m.graph.input[0].name = name


def _input_dims(dims):
    return lambda tmp_path: H.write(H.model([helper.make_node("Relu", ["x"], ["y"])], [H.vi("x", dims)],
                                            [H.vi("y", dims)]), tmp_path / "m.onnx")


def _function_recursive(tmp_path):
    ops = H.OPSET + [helper.make_opsetid("local", 1)]
    f = helper.make_function("local", "F", ["a"], ["b"], [helper.make_node("F", ["a"], ["b"], domain="local")], ops)
    m = H.model([helper.make_node("F", ["x"], ["y"], domain="local")], [H.vi("x", [1])], [H.vi("y", [1])],
                opset=ops, functions=[f])
    return H.write(m, tmp_path / "m.onnx")


def _sparse_index_out_of_range(tmp_path):
    vals = numpy_helper.from_array(np.ones(3, np.float32), "sp")
    idx = numpy_helper.from_array(np.array([0, 5, 10**12], np.int64), "sp_idx")
    graph = helper.make_graph([helper.make_node("Add", ["x", "sp"], ["y"])], "g", [H.vi("x", [10])], [H.vi("y", [10])],
                              sparse_initializer=[helper.make_sparse_tensor(vals, idx, [10])])
    return H.write(helper.make_model(graph, opset_imports=H.OPSET), tmp_path / "m.onnx")


def _string_tensor_without_data(tmp_path):
    t = TensorProto(name="s", data_type=TensorProto.STRING, dims=[10**9])
    m = H.model([helper.make_node("Identity", ["x"], ["y"])], [H.vi("x", [1])], [H.vi("y", [1])], [t])
    return H.write(m, tmp_path / "m.onnx")


def _huge_length_varint(tmp_path):
    """ir_version, then a graph field whose length claims 2^62 bytes."""
    return H.write(H.field(1, 9, True) + b"\x3a" + b"\xff" * 8 + b"\x3f" + b"\0" * 32, tmp_path / "m.onnx")


def _bytes(name, data):
    return lambda tmp_path: H.write(data, tmp_path / name)


FAILURES = [
    # external data and links (CVE-2022-25882, CVE-2024-27318: '..' hidden inside a path; links)
    ("external_nested_dotdot", lambda p: H.with_external(p, "sub/../../weights.bin"), [], 15, "'..' refused"),
    ("external_backslash_dotdot", lambda p: H.with_external(p, "..\\weights.bin"), [], 15, "'..' refused"),
    ("external_windows_drive", lambda p: H.with_external(p, "C:\\Windows\\win.ini"), [], 15, "absolute"),
    ("external_nul_byte", lambda p: H.with_external(p, "weights.bin\x00.txt"), [], 15, "NUL byte"),
    ("external_dir_symlink_out", _dir_symlink_out, [], 15, "outside the model's folder"),
    ("external_is_a_folder", lambda p: H.with_external(p, "."), [], 15, "is missing"),
    ("external_name_too_long", lambda p: H.with_external(p, "w" * 300), [], 15, "File name too long"),
    ("external_under_a_file", lambda p: H.with_external(p, "weights.bin/w"), [], 15, "Not a directory"),
    ("external_fifo", _fifo_external, [], 15, "is missing"),
    ("external_offset_not_int", lambda p: H.with_external(p, "weights.bin", offset="12abc"), [], 15, "not an integer"),
    ("external_offset_negative", lambda p: H.with_external(p, "weights.bin", offset=-8), [], 15, "negative"),
    ("external_offset_2_70", lambda p: H.with_external(p, "weights.bin", offset=2**70), [], 15, "shorter than"),
    ("external_length_lies", lambda p: H.with_external(p, "weights.bin", length=8), [], 15, "differs from the declared"),
    ("self_reference_forged", _self_reference_forged, [], 15, "shorter than"),
    ("model_is_a_fifo", _model_is_fifo, [], 10, "not a regular file"),
    ("model_links_to_dev_null", _model_links_to_dev_zero, [], 10, "not a regular file"),
    # absurd declared shapes and huge tensors
    ("dims_negative", _initializer_dims([-1, 8]), [], 13, "negative dimension"),
    ("dims_2_63", _initializer_dims([2**63 - 1]), [], 11, "over the limit"),
    ("dims_product_overflows_int64", _initializer_dims([2**40, 2**40]), [], 11, "over the limit"),
    ("dims_overflow_times_zero", _initializer_dims([2**32, 2**32, 0]), [], 13, "overflow"),
    ("dims_100000_of_one", _initializer_dims([1] * 100_000, raw=b"\0" * 4), [], 17, "onnxruntime could not load"),
    ("tensors_over_total_limit", _many_small_tensors_over_total, ["--max-tensor-bytes", "4096"], 11, "in total"),
    ("string_tensor_without_data", _string_tensor_without_data, [], 13, "one and only one value field"),
    ("sparse_index_out_of_range", _sparse_index_out_of_range, [], 13, "out of range"),
    # structure
    ("if_nested_1000", lambda p: H.write(H.nested_if_bytes(1000), p / "m.onnx"), [], 12, "nested deeper than"),
    ("if_nested_40", lambda p: H.write(H.nested_if_bytes(40), p / "m.onnx"), [], 12, "nested too deeply"),
    ("cycle", _cycle, [], 13, "topologically sorted"),
    ("self_loop", _self_loop, [], 13, "ONNX checker"),
    ("cycle_in_subgraph", _cycle_in_subgraph, [], 13, "ONNX checker"),
    ("function_calls_itself", _function_recursive, [], 13, "recursive"),
    ("function_fanout_2_29_nodes", lambda p: H.write(H.function_fanout(30), p / "m.onnx"), [], 11,
     "536,870,912 nodes once its local functions are expanded"),
    ("nodes_over_max_nodes", lambda p: H.write(H.function_fanout(4), p / "m.onnx"), ["--max-nodes", "7"], 11,
     "8 nodes once its local functions are expanded, over the limit of 7 (raise it with --max-nodes)"),
    ("duplicate_initializer", _dup("initializer"), [], 13, "not unique"),
    ("duplicate_input", _dup("input"), [], 13, "single static assignment"),
    ("duplicate_node_output", _dup("node_output"), [], 13, "single static assignment"),
    ("duplicate_node_name", _dup("node_name"), [], 17, "two nodes with same node name"),
    ("huge_length_varint", _huge_length_varint, [], 12, "not an ONNX model"),
    ("shape_inference_memory_bomb", lambda p: H.write(H.shape_inference_memory_bomb(), p / "m.onnx"), [], 11,
     "onnx shape inference needed more memory than allowed"),
    ("zip_file", _bytes("m.onnx", b"PK\x03\x04" + b"\0" * 200), [], 12, "not an ONNX model"),
    ("pytorch_pickle", _bytes("m.onnx", b"\x80\x02}q\x00(X\x04\x00\x00\x00data" + b"\0" * 64), [], 12, "not an ONNX model"),
    # names that are not UTF-8
    ("non_utf8_graph_name", _non_utf8("graph_name"), [], 12, "not valid UTF-8"),
    ("non_utf8_doc_string", _non_utf8("doc_string"), [], 12, "not valid UTF-8"),
    ("non_utf8_node_name", _non_utf8("node_name"), [], 12, "not valid UTF-8"),
    ("non_utf8_value_name", _non_utf8("value_name"), [], 12, "not valid UTF-8"),
    ("non_utf8_producer", _non_utf8("producer"), [], 12, "not valid UTF-8"),
    ("non_utf8_metadata_key", _non_utf8("metadata_key"), [], 12, "not valid UTF-8"),
    ("graph_name_of_a_megabyte", _opset(lambda m: setattr(m.graph, "name", "G" * 1_000_000)), [], 13,
     "names are limited to 4096 characters"),
    ("input_name_of_a_megabyte", _opset(_long_input_name), [], 13, "names are limited to 4096 characters"),
    # versions
    ("ir_version_from_the_future", _opset(_set_ir(99)), [], 13, "ir_version 99"),
    ("opset_from_the_future", _opset(_set_opset(99)), [], 14, "opset 99 of 'ai.onnx'"),
    ("ml_opset_from_the_future", _opset(_future_ml_opset), [], 14, "'ai.onnx.ml'"),
    ("opset_import_missing", _opset(_no_opset), [], 13, "opset_import"),
    ("opset_zero", _opset(_set_opset(0)), [], 13, "domain_version of 0"),
    ("opset_imported_twice", _opset(_conflicting_opset), [], 13, "twice"),
    ("opset_1_for_opset_17_ops", _opset(_set_opset(1)), [], 14, "onnxruntime cannot run"),
    # inputs
    ("input_negative_dim", _input_dims([1, -5]), [], 16, "declared as -5"),
    ("input_declared_huge", _input_dims([1, 1 << 20, 1 << 20]), [], 11, "--max-activation-bytes"),
    # run time: endless, giant allocations
    ("loop_10e15_iterations", lambda p: H.write(H.loop_forever(), p / "m.onnx"), ["--time-limit", "1"], 31,
     "time limit"),
    ("constant_of_shape_4_eib", lambda p: H.write(H.giant_from_constant("ConstantOfShape"), p / "m.onnx"), [], 11,
     "--max-activation-bytes"),
    ("expand_to_4_eib", lambda p: H.write(H.giant_from_constant("Expand"), p / "m.onnx"), [], 11,
     "--max-activation-bytes"),
    ("shape_from_input_shape_over_the_cap", lambda p: H.write(H.giant_from_input_shape(1 << 26), p / "m.onnx"),
     ["--max-activation-bytes", str(64 << 20)], 11, "--max-activation-bytes"),
    ("shape_from_input_value_over_the_cap", lambda p: H.write(H.giant_from_input_value(1 << 26), p / "m.onnx"),
     ["--max-activation-bytes", str(64 << 20)], 11, "asked for 268435456 bytes"),
]


@pytest.mark.parametrize("builder,extra,code,fragment", [c[1:] for c in FAILURES], ids=[c[0] for c in FAILURES])
def test_hostile_model_fails_cleanly(builder, extra, code, fragment, tmp_path, capfd):
    model = builder(tmp_path)
    rc, _, stderr, out, elapsed = assess(model, tmp_path, capfd, *extra)
    assert_clean_failure(rc, stderr, out, code, fragment, tmp_path)
    assert elapsed < 60, f"took {elapsed:.0f} s"


# --------------------------------------------------------------------------------------------
# Hostile but valid: a correct label


def test_deep_but_parsable_nesting_gives_a_label(tmp_path, capfd):
    model = H.write(H.nested_if_bytes(20), tmp_path / "m.onnx")
    rc, _, stderr, out, elapsed = assess(model, tmp_path, capfd)
    doc = assert_label(rc, stderr, out)
    assert doc["model"]["op_histogram"]["If"] == 20 and elapsed < 60


def test_markup_in_names_is_carried_literally_and_escaped_in_documents(tmp_path, capfd):
    m = H.markup_model()
    rc, _, stderr, out, _ = assess(H.write(m, tmp_path / "m.onnx"), tmp_path, capfd)
    doc = assert_label(rc, stderr, out)
    assert doc["model"]["graph_name"] == m.graph.name  # the JSON carries the text as it is
    assert doc["model"]["doc_string"] == m.doc_string
    assert doc["model"]["producer"].startswith(m.producer_name)
    html = (out / "report.html").read_text()
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    import pypdf

    text = "".join(page.extract_text() for page in pypdf.PdfReader(out / "label.pdf").pages)
    assert "<img src=x onerror=alert(1)>" in text  # reportlab drew the markup as text, not as markup


def test_non_utf8_file_name_gives_a_label(tmp_path, capfd):
    name = os.fsdecode(b"m\xff\xfe.onnx")
    model = H.write(H.big_weights_model(), tmp_path / name)
    rc, _, stderr, out, _ = assess(model, tmp_path, capfd)
    doc = assert_label(rc, stderr, out)
    assert doc["model"]["file_name"] == "m\ufffd\ufffd.onnx" and doc["model"]["parameters"] == 64 * 64
    assert doc["runtime"]["runs"] == 1


def test_model_symlink_leaving_its_folder_reads_its_own_tensors_safely(tmp_path, capfd):
    real = H.write(H.big_weights_model(), tmp_path / "elsewhere" / "real.onnx")
    link = H.symlink(real, tmp_path / "inbox" / "m.onnx")
    rc, _, stderr, out, _ = assess(link, tmp_path, capfd)
    doc = assert_label(rc, stderr, out)
    assert doc["model"]["parameters"] == 64 * 64 and doc["model"]["file_name"] == "m.onnx"


def test_duplicate_opset_entries_with_the_same_version_are_accepted(tmp_path, capfd):
    m = H.tiny()
    m.opset_import.append(helper.make_opsetid("", 17))
    rc, _, stderr, out, _ = assess(H.write(m, tmp_path / "m.onnx"), tmp_path, capfd)
    assert assert_label(rc, stderr, out)["model"]["opset"] == {"ai.onnx": 17}


def test_declared_but_unallocated_activations_keep_memory_small(tmp_path):
    """4 TiB per activation declared, the limit raised, nothing run (no runtime profile, no NNC): a label, and the peak
    RSS of the whole command stays that of the tool itself (nothing is allocated for activations)."""
    import subprocess
    import sys

    model = H.write(H.huge_declared_activations(), tmp_path / "m.onnx")
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "eeki_label", "assess", str(model), "--runs", "0", "-q",
           "--no-transfer",
           *DEVICE, "--max-activation-bytes", str(10**15), "--json", str(tmp_path / "label.json")]
    rc, maxrss_kib = map(int, subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split())
    assert rc == 0
    doc = json.loads((tmp_path / "label.json").read_text())
    assert doc["model"]["activation_peak_bytes"] == 2 * 4 * (1 << 40)
    assert maxrss_kib < 400 * 1024, f"peak RSS {maxrss_kib // 1024} MiB"



def test_compute_hidden_in_a_local_function_is_counted(tmp_path, capfd):
    """Wrapping the network in a model-local function must not hide its MACs (nor improve its class):
    the profile inlines local functions, as onnxruntime does."""
    docs = []
    for wrapped in (False, True):
        folder = tmp_path / str(wrapped)
        rc, _, stderr, out, _ = assess(H.write(H.conv_in_local_function(wrapped), folder / "m.onnx"), folder, capfd)
        docs.append(assert_label(rc, stderr, out))
    plain, wrapped = docs
    assert plain["model"]["macs"] == 64 * 3 * 3 * 3 * 64 * 64 and wrapped["model"]["macs"] == plain["model"]["macs"]
    assert wrapped["model"]["op_histogram"] == {"Conv": 1} and wrapped["model"]["unresolved_nodes"] == []
    assert wrapped["inference"]["energy_j"] == plain["inference"]["energy_j"]
    assert wrapped["label"]["index"] == plain["label"]["index"]


def test_function_fanout_under_the_node_limit_gives_a_label(tmp_path, capfd):
    rc, _, stderr, out, _ = assess(H.write(H.function_fanout(6), tmp_path / "m.onnx"), tmp_path, capfd)
    doc = assert_label(rc, stderr, out)
    assert doc["model"]["node_count"] == 32 and doc["model"]["op_histogram"] == {"Relu": 32}


def test_training_info_external_data_outside_the_folder_is_never_read(tmp_path):
    """ModelProto.training_info holds graphs onnxruntime does not run; their tensors may name external
    data anywhere. Nothing may open it: here it is a FIFO outside the folder, which would block."""
    import subprocess
    import sys

    fifo = tmp_path / "outside.fifo"
    os.mkfifo(fifo)
    m = H.tiny()
    t = TensorProto(name="secret", data_type=TensorProto.UINT8, dims=[100], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value=str(fifo))
    info = m.training_info.add()
    info.initialization.CopyFrom(helper.make_graph([helper.make_node("Identity", ["secret"], ["out"])], "init", [],
                                                   [H.vi("out", [100], TensorProto.UINT8)], [t]))
    model = H.write(m, tmp_path / "model" / "m.onnx")
    out = tmp_path / "out"
    try:
        r = subprocess.run([sys.executable, "-m", "eeki_label", "assess", str(model), "--runs", "2", *DEVICE, "-q",
                            "--out", str(out), "--bitstream", str(out / "m.nnc")],
                           capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("assess blocked: something opened the training graph's external data")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert json.loads((out / "label.json").read_text())["model"]["parameters"] == 260  # tiny CNN's own


@pytest.mark.parametrize("computed", [False, True], ids=["stored_trip_count", "trip_count_computed_at_run_time"])
def test_compute_repeated_in_a_loop_is_counted_per_iteration(computed, tmp_path, capfd):
    """A MatMul run 50 times in a Loop does 50 times the work of one: the trip count is stored, or
    computed from the input's shape at run time (then the probe asks onnxruntime for it)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("MatMul", ["h_in", "w"], ["h_out"])],
        "body", [H.vi("i", [], TensorProto.INT64), H.vi("c_in", [], TensorProto.BOOL), H.vi("h_in", [50, 64])],
        [H.vi("c_out", [], TensorProto.BOOL), H.vi("h_out", [50, 64])])
    w = numpy_helper.from_array(np.random.default_rng(0).random((64, 64), np.float32), "w")
    if computed:  # M = Shape(x)[0]: 50, known only once the model runs
        nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["M"], axis=0)]
        inits = [w, numpy_helper.from_array(np.array(0, np.int64), "zero")]
    else:
        nodes, inits = [], [w, numpy_helper.from_array(np.array(50, np.int64), "M")]
    nodes.append(helper.make_node("Loop", ["M", "", "x"], ["y"], body=body))
    m = H.model(nodes, [H.vi("x", [50, 64])], [H.vi("y", [50, 64])], inits)
    rc, _, stderr, out, _ = assess(H.write(m, tmp_path / "m.onnx"), tmp_path, capfd)
    doc = assert_label(rc, stderr, out)
    assert doc["model"]["macs"] == 50 * (50 * 64 * 64) and doc["model"]["loop_bodies"] == 0
    assert not any("lower bound" in n for n in doc["label"]["notes"])
