"""The transfer stage inside assess and the transfer / decode commands, end to end."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from eeki_label.cli import main
from eeki_label.transfer import scenarios as sc

EXAMPLE_ARGS = ["--input-shape", "x=1x3x48x192", "-d", "edge-gpu-batch1", "--runs", "1", "--json-shape", "single"]


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_label_carries_the_transfer_section_and_the_bitstream_rebuilds_the_model(cls_model, tmp_path, capsys):
    stream, label = tmp_path / "m.nnc", tmp_path / "label.json"
    code, _, err = run(["assess", cls_model, *EXAMPLE_ARGS, "--bitstream", stream, "--json", label, "-q"], capsys)
    assert code == 0, err
    t = json.loads(label.read_text())["transfer"]
    assert t["codec"] == "nnc" and t["standard"] == "ISO/IEC 15938-17"
    assert t["compressed_bytes"] == t["bitstream_bytes"] + t["graph_bytes"] < t["original_bytes"]
    assert t["fidelity"]["meets_bound"] and t["fidelity"]["max_rel_error"] <= t["fidelity"]["bound_max_rel_error"]
    assert {s["id"] for s in t["scenarios"]} == {"one-time", "periodic-updates", "federated-learning"}
    fed = next(s for s in t["scenarios"] if s["id"] == "federated-learning")
    assert (fed["transfers"], fed["encodes"], fed["decodes"]) == (500, 300, 500)  # rules: 5 clients x 50 rounds
    assert stream.stat().st_size == t["bitstream_bytes"]

    recon = tmp_path / "recon.onnx"
    code, _, err = run(["decode", stream, "--model", cls_model, "--out", recon], capsys)
    assert code == 0, err
    x = np.random.default_rng(7).standard_normal((1, 3, 48, 192)).astype(np.float32)  # not a calibration input
    ref = ort.InferenceSession(str(cls_model)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(recon)).run(None, {"x": x})[0]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= t["fidelity"]["bound_max_rel_error"]


def test_decode_refuses_another_model_and_a_damaged_stream(cls_model, det_model, tmp_path, capsys):
    stream = tmp_path / "m.nnc"
    assert run(["assess", cls_model, *EXAMPLE_ARGS, "--bitstream", stream, "-q"], capsys)[0] == 0
    code, _, err = run(["decode", stream, "--model", det_model, "--out", tmp_path / "r.onnx"], capsys)
    assert code == 30 and "belongs to the model" in err and err.count("\n") == 1
    damaged = tmp_path / "bad.nnc"
    damaged.write_bytes(stream.read_bytes()[:100])
    code, _, err = run(["decode", damaged, "--model", cls_model, "--out", tmp_path / "r.onnx"], capsys)
    assert code == 30 and err.count("\n") == 1
    assert not (tmp_path / "r.onnx").exists()


def test_transfer_command_reprices_a_label_without_recoding(cls_model, tmp_path, capsys):
    label = tmp_path / "label.json"
    assert run(["assess", cls_model, *EXAMPLE_ARGS, "--json", label, "-q"], capsys)[0] == 0
    code, out, err = run(["transfer", label, "--clients", "3", "--rounds", "7", "--link-up", "10", "--link-down", "20",
                          "--country", "FR", "--json", "-"], capsys)
    assert code == 0, err
    t = json.loads(out)
    before = json.loads(label.read_text())["transfer"]
    assert t["compressed_bytes"] == before["compressed_bytes"]  # same coding
    fed = next(s for s in t["scenarios"] if s["id"] == "federated-learning")
    assert (fed["transfers"], fed["encodes"], fed["decodes"]) == (2 * 3 * 7, (1 + 3) * 7, 2 * 3 * 7)
    assert t["link_up_bit_s"] == 10e6 and t["country"] == "FR"
    one = next(s for s in t["scenarios"] if s["id"] == "one-time")
    link, device = sc.Link(10e6, 20e6), sc.Device(t["transfer_power_w"], t["codec_power_w"])
    expected_wh = device.transfer_power_w * link.transfer_time_s(t["original_bytes"]) / 3600
    assert one["uncompressed_wh"] == pytest.approx(expected_wh, rel=1e-9)


def test_codec_energy_reproduces_the_study_for_resnet18():
    """ResNet18 (46.8 MB float32): 0.0466 Wh of NNC coding, 0.0129 Wh to send 6.86 MB: 0.0595 Wh (BRIEF section 3)."""
    params = sc.load_parameters()
    device, link = params.device(), params.link()
    enc_s, dec_s = params.device_codec_s(46.8e6, device)
    comp = sc.one_time(46.8e6, sc.Payload(6.86e6, enc_s, dec_s, "nnc"), link, device)
    assert comp.uncompressed.total_wh == pytest.approx(0.0878, rel=0.05)
    assert comp.nnc.codec_wh == pytest.approx(0.0466, rel=1e-5)
    assert comp.nnc.total_wh == pytest.approx(0.0595, rel=0.05)
    assert comp.saving(comp.nnc) == pytest.approx(0.33, abs=0.02)


def test_no_transfer_and_artefact_options_conflict(cls_model, tmp_path, capsys):
    code, _, err = run(["assess", cls_model, *EXAMPLE_ARGS, "--no-transfer", "--bitstream", tmp_path / "x"], capsys)
    assert code == 2 and "need the transfer stage" in err
