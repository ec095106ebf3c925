"""Hostile inputs to every sub-command that reads a model or a label besides ``assess MODEL``:
``verify``, ``render``, ``assess --base``, ``assess --measurements``, ``--sign-key``, ``--public-key``,
and models that carry an embedded label. Same guarantees: one line on stderr, the documented exit
code, no traceback, no output file, no hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import hostile as H
from eeki_label.cli import main
from eeki_label.embed import record

DEVICE = ["-d", "edge-gpu-batch1", "--json-shape", "single"]  # these tests read one label


def cli(capfd, *args):
    rc = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return rc, out, err


def assert_one_line(rc, err, code, fragment):
    assert rc == code, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert "Traceback" not in err and "internal error" not in err, err
    assert fragment in err, err


def cli_with_timeout(args, timeout_s=3.0):
    """The CLI in a fresh process, killed after ``timeout_s`` (for inputs that could block)."""
    try:
        r = subprocess.run([sys.executable, "-m", "eeki_label", *map(str, args)], capture_output=True, text=True,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"eeki-label {' '.join(map(str, args))} still running after {timeout_s} s (blocked)")
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def label_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("label")
    model = H.write(H.tiny(), d / "m.onnx")
    assert main(["assess", str(model), "--runs", "0", *DEVICE, "-q", "--json", str(d / "label.json")]) == 0
    return d / "label.json"


# --------------------------------------------------------------------------------------------
# verify and render on hostile label files


def _label_variant(label_file, tmp_path, edit):
    doc = json.loads(label_file.read_text())
    edit(doc)
    path = tmp_path / "label.json"
    path.write_text(json.dumps(doc))
    return path


LABEL_FILES = [
    ("garbage", lambda p: p.write_bytes(b"\x00\x01\x02garbage" * 10), "neither a label JSON file nor"),
    ("empty", lambda p: p.write_bytes(b""), "empty file"),
    ("not_an_object", lambda p: p.write_text("[1, 2, 3]"), "neither a label JSON file nor"),
    ("nan", lambda p: p.write_text('{"a": NaN}'), "NaN is not a JSON number"),
    ("duplicate_member", lambda p: p.write_text('{"a": 1, "a": 2}'), "appears twice"),
    ("int_of_5000_digits", lambda p: p.write_text('{"a": ' + "9" * 5000 + "}"), "not JSON"),
    ("not_utf8", lambda p: p.write_bytes(b'{"a": "\xff\xfe"}'), "not UTF-8"),
    ("json_but_not_a_label", lambda p: p.write_text('{"label": {"class": "A"}}'), "not a valid eeki-label"),
    ("larger_than_64_mib", lambda p: open(p, "wb").truncate(65 << 20), "neither a label JSON file nor"),
]


@pytest.mark.parametrize("command", ["verify", "render"])
@pytest.mark.parametrize("write,fragment", [c[1:] for c in LABEL_FILES], ids=[c[0] for c in LABEL_FILES])
def test_hostile_label_file(command, write, fragment, tmp_path, capfd):
    path = tmp_path / "label.json"
    write(path)
    out = tmp_path / "out"
    extra = ["--html", out / "r.html", "--pdf", out / "r.pdf"] if command == "render" else []
    rc, _, err = cli(capfd, command, path, *extra)
    assert_one_line(rc, err, 40, fragment)
    assert not out.exists() or not any(out.iterdir())


def test_label_path_is_a_folder(tmp_path, capfd):
    rc, _, err = cli(capfd, "verify", tmp_path)
    assert_one_line(rc, err, 40, "cannot read")


@pytest.mark.parametrize("command", ["verify", "render"])
def test_deeply_nested_label_json(command, tmp_path, capfd):
    path = tmp_path / "deep.json"
    path.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    extra = ["--html", tmp_path / "r.html"] if command == "render" else []
    rc, _, err = cli(capfd, command, path, *extra)
    assert_one_line(rc, err, 40, "not JSON")


@pytest.fixture(scope="module")
def signed_label_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("signed")
    assert main(["keygen", "--out", str(d / "issuer.key")]) == 0
    model = H.write(H.tiny(), d / "m.onnx")
    assert main(["assess", str(model), "--runs", "0", *DEVICE, "-q", "--sign-key", str(d / "issuer.key"),
                 "--json", str(d / "label.json")]) == 0
    return d / "label.json"


@pytest.mark.parametrize("args", [["verify", "{fifo}"], ["render", "{fifo}", "--html", "{tmp}/r.html"],
                                  ["verify", "{signed}", "--public-key", "{fifo}"],
                                  ["assess", "{model}", "--runs", "0", "-q", "--sign-key", "{fifo}"]],
                         ids=["verify", "render", "public_key", "sign_key"])
def test_fifo_inputs_do_not_block(args, signed_label_file, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    model = H.write(H.tiny(), tmp_path / "m.onnx")
    args = [a.format(fifo=fifo, tmp=tmp_path, signed=signed_label_file, model=model) for a in args]
    rc, _, err = cli_with_timeout(args)
    assert rc in (40, 46) and err.count("\n") == 1 and "not a regular file" in err, err
    assert not (tmp_path / "r.html").exists()


def test_label_with_a_lone_surrogate(label_file, tmp_path, capfd):
    path = tmp_path / "label.json"
    path.write_text(label_file.read_text().replace('"issuer": null', '"issuer": "\\ud800"'))
    assert '"\\ud800"' in path.read_text()
    rc, _, err = cli(capfd, "render", path, "--html", tmp_path / "r.html")
    assert_one_line(rc, err, 40, "")


def test_label_with_a_huge_string_renders_quickly(label_file, tmp_path):
    path = tmp_path / "label.json"
    doc = json.loads(label_file.read_text())
    doc["issuer"] = "x" * 50_000
    path.write_text(json.dumps(doc))
    rc, _, err = cli_with_timeout(["render", path, "--pdf", tmp_path / "r.pdf"], timeout_s=8)
    assert rc in (0, 40) and err.count("\n") <= 1, err


def test_model_with_many_inputs_renders(tmp_path, capfd):
    from onnx import helper

    k = 2000
    m = H.model([helper.make_node("Sum", [f"in{i}" for i in range(k)], ["y"])], [H.vi(f"in{i}", [1]) for i in range(k)],
                [H.vi("y", [1])])
    out = tmp_path / "out"
    rc, _, err = cli(capfd, "assess", H.write(m, tmp_path / "m.onnx"), "--runs", "0", *DEVICE, "-q", "--out", out)
    assert rc == 0, err


def test_non_utf8_issuer_argument_is_a_usage_error(tmp_path, capfd):
    """A non-UTF-8 argument reaches Python as lone surrogates (surrogateescape); no output can hold it."""
    model = H.write(H.tiny(), tmp_path / "m.onnx")
    rc, _, err = cli(capfd, "assess", model, "--runs", "0", *DEVICE, "-q", "--issuer", "lab\udcfe",
                     "--json", tmp_path / "label.json", "--pdf", tmp_path / "c.pdf")
    assert_one_line(rc, err, 2, "--issuer: not valid UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("option,target", [("--json", "m.onnx"), ("--pdf", "m.onnx"), ("--bitstream", "m.onnx"),
                                           ("--html", "base.onnx"), ("--json", "link.onnx")],
                         ids=["json_model", "pdf_model", "bitstream_model", "html_base", "json_hard_link_to_model"])
def test_outputs_never_overwrite_an_input(option, target, tmp_path, capfd):
    model = H.write(H.tiny(), tmp_path / "m.onnx")
    H.write(H.tiny(), tmp_path / "base.onnx")
    os.link(model, tmp_path / "link.onnx")
    before = model.read_bytes()
    rc, _, err = cli(capfd, "assess", model, "--runs", "0", *DEVICE, "-q", "--base", tmp_path / "base.onnx", option,
                     tmp_path / target)
    assert_one_line(rc, err, 2, "refusing to overwrite an input")
    assert model.read_bytes() == before and (tmp_path / "base.onnx").read_bytes() == before


def test_render_and_decode_never_overwrite_their_input(label_file, tmp_path, capfd):
    label = tmp_path / "label.json"
    label.write_bytes(label_file.read_bytes())
    rc, _, err = cli(capfd, "render", label, "--pdf", label)
    assert_one_line(rc, err, 2, "refusing to overwrite an input")
    model = H.write(H.tiny(), tmp_path / "m.onnx")
    rc, _, err = cli(capfd, "decode", tmp_path / "b.nnc", "--model", model, "--out", model)
    assert_one_line(rc, err, 2, "refusing to overwrite an input")
    assert label.read_bytes() == label_file.read_bytes() and model.read_bytes() == H.tiny().SerializeToString()


# --------------------------------------------------------------------------------------------
# embedded labels


def test_embedded_label_record_with_an_absurd_length(tmp_path, capfd):
    """The model's bytes followed by a metadata_props field whose length claims 2^62 bytes."""
    data = H.tiny().SerializeToString() + b"\x72" + b"\xff" * 8 + b"\x3f" + b"\0" * 16
    rc, _, err = cli(capfd, "verify", H.write(data, tmp_path / "m.onnx"))
    assert_one_line(rc, err, 40, "")


def test_model_file_cut_short_while_its_embedded_label_is_read(tmp_path):
    """The embedded-label reader reads, it does not map: under ``mmap`` a file truncated while mapped
    kills the process with SIGBUS; here it is a one-line error."""
    from eeki_label.embed import _open_file
    from eeki_label.errors import ModelFileError

    path = H.write(H.tiny().SerializeToString() + record("{}"), tmp_path / "m.onnx")
    f, buf, size = _open_file(path, "m.onnx")
    with f:
        os.truncate(path, 10)
        with pytest.raises(ModelFileError, match="changed while it was being loaded"):
            buf[size - 5:size]


def test_embedded_label_that_is_not_json(tmp_path, capfd):
    data = H.tiny().SerializeToString() + record("{not json")
    rc, _, err = cli(capfd, "verify", H.write(data, tmp_path / "m.onnx"))
    assert_one_line(rc, err, 40, "not JSON")


def test_model_with_a_hostile_embedded_label_still_assesses(tmp_path, capfd):
    """assess reads the model, not the label: a junk embedded record is just metadata."""
    data = H.tiny().SerializeToString() + record("{" * 10_000)
    rc, _, err = cli(capfd, "assess", H.write(data, tmp_path / "m.onnx"), "--runs", "0", *DEVICE, "-q",
                     "--json", tmp_path / "label.json")
    assert rc == 0, err


# --------------------------------------------------------------------------------------------
# --base: the declared base is loaded with the model's checks; errors keep their exit codes


BASES = [
    ("truncated", lambda p: H.write(H.tiny().SerializeToString()[:200], p / "base" / "b.onnx"), 12, "not an ONNX model"),
    ("external_dotdot", lambda p: H.with_external(p, "../weights.bin", folder="base"), 15, "'..' refused"),
    ("fifo", lambda p: (os.mkfifo(p / "b.onnx"), p / "b.onnx")[1], 10, "not a regular file"),
    ("non_utf8_name", lambda p: H.write(H.non_utf8("node_name"), p / "base" / "b.onnx"), 12, "not valid UTF-8"),
    ("nested_if_1000", lambda p: H.write(H.nested_if_bytes(1000), p / "base" / "b.onnx"), 12, "nested"),
]


@pytest.mark.parametrize("build,code,fragment", [c[1:] for c in BASES], ids=[c[0] for c in BASES])
def test_hostile_base_model(build, code, fragment, tmp_path, capfd):
    base = build(tmp_path)
    model = H.write(H.tiny(), tmp_path / "m.onnx")
    out = tmp_path / "out"
    rc, _, err = cli(capfd, "assess", model, "--base", base, "--runs", "0", *DEVICE, "-q", "--out", out)
    assert_one_line(rc, err, code, fragment)
    assert "base model (--base)" in err
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------------------------
# --measurements: archived measurement records


RECORDS = [
    ("not_json", lambda p: p.write_text("not json"), "not JSON"),
    ("deeply_nested", lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "not JSON"),
    ("fifo", lambda p: os.mkfifo(p), "not a regular file"),
    ("larger_than_256_mib", lambda p: open(p, "wb").truncate((256 << 20) + 1), "larger than"),
    ("wrong_format", lambda p: p.write_text('{"format": "something-else"}'), "not an eeki-label measurement record"),
]


@pytest.mark.parametrize("write,fragment", [c[1:] for c in RECORDS], ids=[c[0] for c in RECORDS])
def test_hostile_measurement_record(write, fragment, tmp_path, capfd):
    rec = tmp_path / "record.json"
    write(rec)
    model = H.write(H.tiny(), tmp_path / "m.onnx")
    out = tmp_path / "out"
    rc, _, err = cli(capfd, "assess", model, "--measurements", rec, "--runs", "0", "-q", "--out", out)
    assert_one_line(rc, err, 51, fragment)
    assert not out.exists() or not any(out.iterdir())


def test_meter_trace_that_is_a_fifo_is_refused(tmp_path):
    from eeki_label.energy.meters import load_trace
    from eeki_label.errors import MeasurementRecordError

    os.mkfifo(tmp_path / "trace.csv")
    with pytest.raises(MeasurementRecordError, match="not a regular file"):
        load_trace(tmp_path / "trace.csv")


# --------------------------------------------------------------------------------------------
# NNC: decode (an untrusted bitstream), transfer (a model or a label), assess --previous


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A model and its NNC bitstream."""
    d = tmp_path_factory.mktemp("nnc")
    model = H.write(H.big_weights_model(), d / "m.onnx")
    assert main(["assess", str(model), "--runs", "0", *DEVICE, "-q", "--bitstream", str(d / "m.nnc"),
                 "--json", str(d / "label.json")]) == 0
    return model, d / "m.nnc"


def _container(coded, header=None, raw=None, payload=None):
    """A container with the fixed part, and the header, NNC payload or raw section replaced."""
    import hashlib
    import zlib

    from eeki_label.transfer import container as C

    blob = coded[1].read_bytes()
    c = C.unpack(blob)
    raw_z = zlib.compress(c.raw, 9) if raw is None else raw
    nnc = c.nnc if payload is None else payload
    if header is None:
        fields = {"model_sha256": c.model_sha256, "base_sha256": c.base_sha256, "keys_sha256": c.keys_sha256,
                  "tensor_count": c.tensor_count, "payload_sha256": hashlib.sha256(nnc + raw_z).hexdigest(),
                  "nnc_bytes": len(nnc), "raw_bytes": len(raw_z), "graph_bytes": 0, "graph_inflated_bytes": 0,
                  "graph_sha256": None, "removed": [],
                  "tensors": [[e.index, e.mode, e.offset, e.length, e.base] for e in c.entries]}
        header = zlib.compress(json.dumps(fields).encode(), 9)
    return C._FIXED.pack(C.MAGIC, C.CONTAINER_VERSION, len(header)) + header + nnc + raw_z


BITSTREAMS = [
    ("garbage", lambda c: b"\x00garbage" * 100, "not an eeki-label NNC bitstream"),
    ("truncated", lambda c: c[1].read_bytes()[:200], "truncated"),
    ("payload_bytes_flipped", lambda c: _container(c, payload=bytes(b ^ 0x5A for b in C_nnc(c))), "corrupt"),
    ("header_not_json", lambda c: _container(c, header=__import__("zlib").compress(b"{nope")), "header is corrupt"),
]


def C_nnc(c):
    from eeki_label.transfer import container as C

    return C.unpack(c[1].read_bytes()).nnc


@pytest.mark.parametrize("build,fragment", [b[1:] for b in BITSTREAMS], ids=[b[0] for b in BITSTREAMS])
def test_hostile_bitstream(build, fragment, coded, tmp_path, capfd):
    bits = H.write(build(coded), tmp_path / "x.nnc")
    rc, _, err = cli(capfd, "decode", bits, "--model", coded[0], "--out", tmp_path / "out" / "rec.onnx")
    assert_one_line(rc, err, 30, fragment)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bitstream_that_is_a_fifo(coded, tmp_path, capfd):
    os.mkfifo(tmp_path / "x.nnc")
    rc, _, err = cli(capfd, "decode", tmp_path / "x.nnc", "--model", coded[0], "--out", tmp_path / "rec.onnx")
    assert_one_line(rc, err, 10, "not a regular file")


def _npz_bomb(path, inflated_bytes):
    """An .npz whose one member deflates ``inflated_bytes`` of zeros to about a thousandth of that."""
    import zipfile

    import numpy as np

    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (inflated_bytes // 4,)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        block = bytes(1 << 20)
        for _ in range(inflated_bytes >> 20):
            member.write(block)


def test_calibration_decompression_bomb_is_refused_before_inflating(tmp_path):
    import tracemalloc

    from eeki_label.errors import UsageError
    from eeki_label.transfer.stage import load_calibration

    path = tmp_path / "cal.npz"
    _npz_bomb(path, 64 << 20)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(UsageError, match="declare 67,108,9.. bytes, over the limit of 16,777,216"):
            load_calibration(path, max_bytes=16 << 20)
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()


CALIBRATION = [
    ("fifo", lambda p: os.mkfifo(p), "not a regular file"),
    ("not_npz", lambda p: p.write_bytes(b"\x93NUMPY garbage"), "not an .npz of arrays"),
    ("pickled_object_array", lambda p: __import__("numpy").savez(p.with_suffix(""), x=__import__("numpy").array(
        [{"a": 1}], dtype=object)), "not an .npz of arrays"),
    ("larger_than_the_limit", lambda p: open(p, "wb").truncate((2 << 30) + 1), "over the limit"),
]


@pytest.mark.parametrize("write,fragment", [c[1:] for c in CALIBRATION], ids=[c[0] for c in CALIBRATION])
def test_hostile_calibration_data(write, fragment, tmp_path):
    path = tmp_path / "cal.npz"
    write(path)
    model = H.write(H.tiny(), tmp_path / "m.onnx")
    rc, _, err = cli_with_timeout(["assess", model, "--runs", "0", *DEVICE, "-q", "--calibration-data", path,
                                   "--out", tmp_path / "out"], timeout_s=60)
    assert rc == 2 and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_previous_version_that_is_hostile(tmp_path, capfd):
    model = H.write(H.big_weights_model(), tmp_path / "m.onnx")
    prev = H.write(H.nested_if_bytes(1000), tmp_path / "prev.onnx")
    rc, _, err = cli(capfd, "assess", model, "--previous", prev, "--runs", "0", *DEVICE, "-q",
                     "--out", tmp_path / "out")
    assert_one_line(rc, err, 12, "nested")
    assert not (tmp_path / "out").exists()


def test_assess_without_runtime_profile_still_bounds_the_nnc_stage(tmp_path, capfd):
    """--runs 0: the NNC stage would run the model in this process; a sandboxed trial run under
    --time-limit comes first."""
    import numpy as np
    from onnx import helper, numpy_helper

    m = H.loop_forever()
    m.graph.initializer.append(numpy_helper.from_array(np.ones((64, 64), np.float32), "W"))
    m.graph.node.append(helper.make_node("MatMul", ["x2", "W"], ["z"]))
    m.graph.input.append(H.vi("x2", [1, 64]))
    m.graph.output.append(H.vi("z", [1, 64]))
    rc, _, err = cli(capfd, "assess", H.write(m, tmp_path / "m.onnx"), "--runs", "0", "--time-limit", "1", *DEVICE,
                     "-q", "--out", tmp_path / "out")
    assert_one_line(rc, err, 31, "trial run before the NNC transfer stage")


def test_transfer_command_on_an_endless_model(tmp_path):
    import numpy as np
    from onnx import helper, numpy_helper

    m = H.loop_forever()
    m.graph.initializer.append(numpy_helper.from_array(np.ones((64, 64), np.float32), "W"))
    m.graph.node.append(helper.make_node("MatMul", ["x2", "W"], ["z"]))
    m.graph.input.append(H.vi("x2", [1, 64]))
    m.graph.output.append(H.vi("z", [1, 64]))
    rc, _, err = cli_with_timeout(["transfer", H.write(m, tmp_path / "m.onnx"), "--time-limit", "2"], timeout_s=12)
    assert rc == 31 and err.count("\n") == 1, err


def test_bitstream_header_nested_deeply(coded, tmp_path, capfd):
    import zlib

    bits = H.write(_container(coded, header=zlib.compress(b"[" * 200_000 + b"]" * 200_000, 9)), tmp_path / "x.nnc")
    rc, _, err = cli(capfd, "decode", bits, "--model", coded[0], "--out", tmp_path / "rec.onnx")
    assert_one_line(rc, err, 30, "corrupt")


def test_bitstream_decompression_bomb_is_refused_without_inflating(coded):
    import tracemalloc
    import zlib

    from eeki_label.errors import TransferError
    from eeki_label.transfer import container as C

    bomb = _container(coded, header=zlib.compress(b" " * (256 << 20), 9))  # 250 kB that inflate to 256 MiB
    tracemalloc.start()
    try:
        with pytest.raises(TransferError):
            C.unpack(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"inflated {peak >> 20} MiB"  # (tracemalloc also counts other threads' allocations)
