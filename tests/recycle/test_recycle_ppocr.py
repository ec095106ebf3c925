"""A real trained model (weights in Constant nodes) with its final layer replaced and one block
perturbed, matched against it with --base; and the CLI around --base."""

import json

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from eeki_label.cli import main
from eeki_label.model_io import load_model
from eeki_label.recycle import FINE_TUNED, FROZEN, NEW, match_tensors
from recycle_models import ROOT, cnn, save, weights

BLOCK = ("conv12_expand_weights", "conv12_depthwise_weights", "conv12_se_1_weights", "conv12_se_2_weights",
         "conv12_linear_weights")
HEAD = ("fc_0.w_0", "fc_0.b_0")  # MatMul weight [200, 2] and bias [2]


def derive(src, classes: int = 3, perturb=BLOCK, rename: bool = False, seed: int = 0) -> onnx.ModelProto:
    """``src`` with a new ``classes``-way head and the tensors ``perturb`` changed by about 2 %."""
    m = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for node in m.graph.node:
        if node.op_type != "Constant":
            continue
        t = node.attribute[0].t
        out = node.output[0]
        if out in perturb:
            a = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(
                (a + 0.02 * np.abs(a).mean() * rng.standard_normal(a.shape)).astype(a.dtype), t.name))
        elif out == "fc_0.w_0":
            t.CopyFrom(numpy_helper.from_array((0.05 * rng.standard_normal((200, classes))).astype(np.float32), t.name))
        elif out == "fc_0.b_0":
            t.CopyFrom(numpy_helper.from_array(np.zeros(classes, np.float32), t.name))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = classes
    if rename:  # every weight gets an anonymous name: only content and structure can match it
        mapping = {n.output[0]: f"w{i}" for i, n in enumerate(m.graph.node) if n.op_type == "Constant"}
        for node in m.graph.node:
            node.input[:] = [mapping.get(x, x) for x in node.input]
            node.output[:] = [mapping.get(x, x) for x in node.output]
    return m


@pytest.mark.parametrize("rename", [False, True], ids=["same-names", "renamed"])
def test_derived_ppocr_classifier_is_matched_tensor_by_tensor(cls_model, tmp_path, rename):
    cand = load_model(save(derive(cls_model, rename=rename), tmp_path / "derived.onnx"))
    base = load_model(cls_model)
    m = match_tensors(cand, base)
    by_base = {s.base.name: s.status for s in m.statuses if s.base is not None}
    assert {k for k, v in by_base.items() if v == FINE_TUNED} == set(BLOCK)
    assert all(v == FROZEN for k, v in by_base.items() if k not in BLOCK)
    assert len(m.of(FROZEN)) == 308 - len(BLOCK) - len(HEAD)  # the model stores 308 Constant tensors
    new = m.of(NEW)
    assert [s.tensor.shape for s in sorted(new, key=lambda s: s.tensor.position)] == [(200, 3), (3,)]
    assert {b.name for b in m.removed} == set(HEAD)
    assert m.parameters(NEW) == 200 * 3 + 3
    assert all(0.005 < s.relative_change < 0.05 for s in m.of(FINE_TUNED))
    assert {s.matched_by for s in m.statuses if s.base is not None} == ({"content", "structure"} if rename else {"name"})


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_label_with_base_has_the_recycling_section(cls_model, tmp_path, capsys):
    derived = save(derive(cls_model), tmp_path / "derived.onnx")
    out_file = tmp_path / "label.json"
    code, out, err = run(["assess", derived, "--base", cls_model, "--input-shape", "x=1x3x48x192", "--runs", "0",
                          "-d", "edge-gpu-batch1", "--train-samples", "10000", "--epochs", "5",
                          "--update-codec", "raw", "--json", out_file, "--json-shape", "single"], capsys)
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    jsonschema.validate(doc, json.loads((ROOT / "schemas" / "label.schema.json").read_text()))
    r = doc["recycling"]
    assert r["basis"] == "declared-base"
    assert r["base"]["sha256"] == load_model(cls_model).sha256
    assert r["base"]["fine_tuned"]["tensors"] == len(BLOCK) and r["base"]["new"]["tensors"] == 2
    assert r["base"]["new"]["layers"] == ["MatMul@0", "Add@43"]
    t = r["training"]
    assert t["train_samples"] == 10000 and t["fine_tune_epochs"] == 5
    assert t["macs_trained"] > 0 and t["macs_frozen_forward"] > 0
    assert r["update"]["codec"] == "raw" and r["update"]["changed_tensors"] == len(BLOCK) + 2
    assert "recycling base ppocr_mobile_v2_cls.onnx" in " ".join(out.split())  # the summary's recycling line


def test_update_against_the_base_uses_the_nnc_seam(cls_model, tmp_path, capsys):
    tuned = save(derive(cls_model, classes=2, perturb=BLOCK), tmp_path / "tuned.onnx")
    base = load_model(cls_model)
    raw_bytes = sum(int(np.prod(d.attribute[0].t.dims)) * 4 for d in base.proto.graph.node
                    if d.op_type == "Constant" and d.output[0] in BLOCK + HEAD)
    code, out, err = run(["assess", tuned, "--base", cls_model, "--input-shape", "x=1x3x48x192", "--runs", "0",
                          "-d", "edge-gpu-batch1", "--json", "-", "--json-shape", "single"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    lab = doc["labels"][0] if "labels" in doc else doc
    u = lab["recycling"]["update"]
    assert u["raw_bytes"] == raw_bytes  # block + re-initialised 2-class head (same shape: fine-tuned)
    # one update figure: the transfer stage's delta against the declared base
    d = lab["transfer"]["delta"]
    assert d["reference"] == "base" and d["previous_sha256"] == base.sha256
    assert u["codec"] == "nnc" and u["coded_bytes"] == d["compressed_bytes"] and u["note"] is None
    assert 0 < u["coded_bytes"] < u["raw_bytes"]


@pytest.mark.parametrize("make, code, text", [
    (lambda d: d / "missing.onnx", 10, "no such file"),
    (lambda d: (d / "garbage.onnx").write_bytes(b"\x07garbage") and d / "garbage.onnx", 12, "not an ONNX model"),
    (lambda d: d, 10, "not a regular file"),
])
def test_bad_base_is_a_one_line_error_with_the_model_exit_code(make, code, text, tmp_path, capsys):
    cand = save(cnn(weights()), tmp_path / "cand.onnx")
    got, out, err = run(["assess", cand, "--base", make(tmp_path), "--runs", "0"], capsys)
    assert got == code
    assert err.count("\n") == 1 and "base model (--base)" in err and text in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("args, code", [
    (["--training-device-class", "no-such-class"], 20),
    (["--update-codec", "zip"], 2),
    (["--train-samples", "0"], 2),
    (["--epochs", "0"], 2),
])
def test_bad_training_options(args, code, tmp_path, capsys):
    cand = save(cnn(weights()), tmp_path / "cand.onnx")
    got, _, err = run(["assess", cand, "--runs", "0", *args], capsys)
    assert got == code, err
