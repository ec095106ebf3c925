"""assess with --previous/--base on a transfer-learned pair (one update figure, decode --previous), and
a codec failure that never costs the label."""

import json

import numpy as np
import onnxruntime as ort
import pytest

import eeki_label.transfer.nnc as nnc
from eeki_label.cli import main
from eeki_label.errors import LimitExceededError, TransferError
from nnc_models import save_and_load, small_cnn
from support import ROOT, shared_model
from test_delta_graphs import transfer_learned

CNN_ARGS = ["--input-shape", "x=1x3x16x16", "-d", "edge-gpu-batch1", "--runs", "0", "-q"]


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def labels_of(path):
    doc = json.loads(path.read_text())
    return doc["labels"] if "labels" in doc else [doc]


@pytest.mark.slow
def test_transfer_learned_pair_one_update_figure_and_decode_with_the_previous_model(tmp_path, capsys):
    import jsonschema

    base = shared_model("ppocr_mobile_v2_cls.onnx")
    derived = tmp_path / "derived.onnx"
    import onnx

    onnx.save(transfer_learned(base), str(derived))
    label, stream = tmp_path / "label.json", tmp_path / "update.nnc"
    code, _, err = run(["assess", derived, "--previous", base, "--base", base, "--input-shape", "x=1x3x48x192",
                        "-d", "edge-gpu-batch1", "--runs", "0", "-q", "--delta-bitstream", stream, "--json", label],
                       capsys)
    assert code == 0, err
    lab = labels_of(label)[0]
    jsonschema.validate(lab, json.loads((ROOT / "schemas" / "label.schema.json").read_text()))
    t, u = lab["transfer"], lab["recycling"]["update"]
    assert t["status"] == "complete" and t["delta"]["reference"] == "previous"
    d = t["delta"]
    assert d["compressed_bytes"] < 0.25 * t["compressed_bytes"], (d["compressed_bytes"], t["compressed_bytes"])
    assert d["graph_changed"] and not d["whole_model"] and d["tensors"]["removed"] == 2
    assert d["tensors"]["delta"] == 5 and d["tensors"]["nnc"] >= 1
    assert u["codec"] == "nnc" and u["coded_bytes"] == d["compressed_bytes"] and u["note"] is None
    assert u["coded_bytes"] < u["raw_bytes"]
    periodic = next(s for s in t["scenarios"] if s["id"] == "periodic-updates")
    assert periodic["nnc_delta_wh"] < periodic["nnc_wh"]
    assert stream.stat().st_size == d["compressed_bytes"]

    rebuilt = tmp_path / "rebuilt.onnx"
    code, _, err = run(["decode", stream, "--previous", base, "--out", rebuilt], capsys)
    assert code == 0, err
    x = np.random.default_rng(3).standard_normal((2, 3, 48, 192)).astype(np.float32)  # not a calibration input
    ref = ort.InferenceSession(str(derived)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(rebuilt)).run(None, {"x": x})[0]
    assert got.shape == ref.shape == (2, 3)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= t["fidelity"]["bound_max_rel_error"]
    # the update needs the previous model it was made against: its sha256 is checked
    code, _, err = run(["decode", stream, "--previous", derived, "--out", tmp_path / "r.onnx"], capsys)
    assert code == 30 and "update against" in err and err.count("\n") == 1


@pytest.fixture
def cnn_pair(tmp_path):
    old = save_and_load(small_cnn(seed=0), tmp_path / "old.onnx")
    new = save_and_load(small_cnn(seed=0, classes=4), tmp_path / "new.onnx")
    return new.path, old.path


def _failing(real, when):
    def encode(loaded, *args, **kwargs):
        previous = args[3] if len(args) > 3 else kwargs.get("previous")
        if when(previous):
            raise (LimitExceededError if previous is None else TransferError)("the codec gave up (test)")
        return real(loaded, *args, **kwargs)
    return encode


def test_a_delta_that_fails_leaves_the_label_and_says_why(cnn_pair, tmp_path, capsys, monkeypatch):
    new, old = cnn_pair
    monkeypatch.setattr(nnc, "encode_model", _failing(nnc.encode_model, lambda prev: prev is not None))
    label = tmp_path / "label.json"
    code, _, err = run(["assess", new, "--previous", old, "--base", old, *CNN_ARGS, "--json", label], capsys)
    assert code == 0, err
    lab = labels_of(label)[0]
    t = lab["transfer"]
    assert t["status"] == "delta-failed" and t["delta"] is None and t["compressed_bytes"] > 0
    assert t["failure"] == {"part": "delta", "error": "the codec gave up (test)", "error_type": "TransferError",
                            "exit_code": 30}
    u = lab["recycling"]["update"]
    assert u["codec"] == "raw" and u["coded_bytes"] is None and "the codec gave up" in u["note"]

    # an explicitly requested delta bitstream that cannot be written fails the command, after the label
    label.unlink()
    code, _, err = run(["assess", new, "--previous", old, *CNN_ARGS, "--json", label,
                        "--bitstream", tmp_path / "full.nnc", "--delta-bitstream", tmp_path / "delta.nnc"], capsys)
    assert code == 30 and err.count("\n") == 1 and "--delta-bitstream not written" in err
    assert labels_of(label)[0]["transfer"]["status"] == "delta-failed"
    assert (tmp_path / "full.nnc").is_file() and not (tmp_path / "delta.nnc").exists()


def test_a_model_nnc_cannot_code_keeps_its_label(cnn_pair, tmp_path, capsys, monkeypatch):
    new, old = cnn_pair
    monkeypatch.setattr(nnc, "encode_model", _failing(nnc.encode_model, lambda prev: True))
    out = tmp_path / "out"
    code, _, err = run(["assess", new, "--previous", old, *CNN_ARGS, "--out", out], capsys)
    assert code == 0, err
    t = labels_of(out / "label.json")[0]["transfer"]
    assert t["status"] == "failed" and t["failure"]["part"] == "whole-model"
    assert t["failure"]["error_type"] == "LimitExceededError" and t["failure"]["exit_code"] == 31
    assert "NNC could not code the model" in (out / "report.html").read_text()
    assert (out / "label.pdf").stat().st_size > 0

    code, stdout, err = run(["assess", new, "--input-shape", "x=1x3x16x16", "-d", "edge-gpu-batch1", "--runs", "0",
                             "--bitstream", tmp_path / "m.nnc", "--json", tmp_path / "l.json"], capsys)
    errors = [line for line in err.splitlines() if not line.startswith("eeki-label: ")]  # stage lines aside
    assert code == 30 and len(errors) == 1 and errors[0].startswith("error: --bitstream not written")
    assert labels_of(tmp_path / "l.json")[0]["transfer"]["status"] == "failed"
    assert "NNC could not code the model" in " ".join(stdout.split())
    # a label whose transfer failed cannot be repriced: a one-line error, no traceback
    code, _, err = run(["transfer", tmp_path / "l.json"], capsys)
    assert code == 30 and "failed NNC coding" in err and err.count("\n") == 1


def test_a_codec_defect_is_recorded_too(cnn_pair, monkeypatch):
    """Not only the tool's own errors: whatever the codec raises, the label keeps a transfer section."""
    from eeki_label.model_io import load_model
    from eeki_label.pipeline import load_context
    from eeki_label.transfer.stage import TransferOptions, assess_transfer

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(nnc, "encode_model", broken)
    ctx = load_context()
    new, old = cnn_pair
    out = assess_transfer(load_model(new), {"x": (1, 3, 16, 16)}, 0, ctx.rules.raw, ctx.rules.fidelity,
                          TransferOptions(), load_model(old))
    assert out.info.status == "failed" and out.bitstream is None and out.delta_bitstream is None
    assert out.info.failure.error_type == "IndexError" and out.info.failure.exit_code == 70
