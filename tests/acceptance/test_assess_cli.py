"""The CLI end to end: the real models, the gate, determinism, the JSON contract."""

import json

import jsonschema
import pytest

from support import ROOT, classifier, save, tiny_cnn
from eeki_label.cli import main

CONTRACT = [
    ("label", "class"), ("label", "index"), ("model", "sha256"), ("model", "parameters"), ("model", "weight_bytes"),
    ("model", "macs"), ("device_class", "id"), ("inference", "energy_j"), ("inference", "method"),
    ("reference", "model_id"), ("reference", "energy_j"), ("rules", "id"), ("rules", "version"),
    ("catalogue", "version"), ("tool", "version"), ("issued_at",),
]
SHARED_README_SHA = {
    "ppocr_mobile_v2_cls.onnx": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    "ppocr_v4_det.onnx": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
}


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def schema(name):
    return json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())


def test_shared_cls_model_gives_a_valid_label(cls_model, tmp_path, capsys):
    out_file = tmp_path / "label.json"
    code, out, err = run(["assess", cls_model, "--input-shape", "x=1x3x48x192", "--device-class", "edge-gpu-batch1",
                          "--json-shape", "single", "--runs", "5", "--json", out_file], capsys)
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    jsonschema.validate(doc, schema("label"))
    for path in CONTRACT:
        node = doc
        for key in path:
            assert key in node, f"missing {'.'.join(path)}"
            node = node[key]
    assert doc["model"]["parameters"] == 133_777  # ../shared/models/README.md
    assert doc["model"]["sha256"] == SHARED_README_SHA["ppocr_mobile_v2_cls.onnx"]
    # a two-class text-direction classifier: recognised, not graded against ImageNet (catalogue 2.0.0)
    assert doc["task"]["id"] == "binary-image-classification" and doc["task"]["declared"] is False
    assert doc["label"]["class"] is None and "no references" in doc["label"]["reason"]
    assert doc["inference"]["method"] == "estimated" and doc["inference"]["energy_j"] > 0
    assert doc["device_class"]["id"] == "edge-gpu-batch1"
    assert doc["runtime"]["runs"] == 5
    assert "edge-gpu-batch1" in out  # human summary on stdout


def test_det_model_parameters_match_shared_readme(det_model, capsys):
    code, out, err = run(["assess", det_model, "--input-shape", "x=1x3x640x640", "--runs", "1", "--json", "-",
                          "-d", "datacenter-gpu-batched", "--json-shape", "single"], capsys)
    assert code == 0, err
    doc = json.loads(out)  # --json - prints the document and nothing else
    assert doc["model"]["parameters"] == 1_171_841
    assert doc["model"]["sha256"] == SHARED_README_SHA["ppocr_v4_det.onnx"]


def test_all_device_classes_give_a_label_set(tmp_path, capsys):
    model = save(classifier(1000), tmp_path / "imagenet_like.onnx")
    code, out, err = run(["assess", model, "--runs", "1", "--json", "-"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    jsonschema.validate(doc, schema("labelset"))
    ids = [lab["device_class"]["id"] for lab in doc["labels"]]
    assert len(ids) >= 6 and "microcontroller" in ids
    for lab in doc["labels"]:  # each label complete on its own
        assert lab["model"]["sha256"] and lab["rules"]["version"] and lab["reference"]["model_id"]


def test_same_model_same_options_same_json(tmp_path, capsys):
    model = save(tiny_cnn(), tmp_path / "tiny.onnx")
    docs = []
    for _ in range(2):
        code, out, err = run(["assess", model, "--runs", "3", "--json", "-", "--issued-at", "2026-01-01T00:00:00+00:00",
                              "-d", "edge-gpu-batch1", "--json-shape", "single"], capsys)
        assert code == 0, err
        doc = json.loads(out)
        doc.pop("runtime")  # measured latencies differ from run to run, and so do the host's codec seconds:
        for key in ("encode_s", "decode_s"):
            doc["transfer"].pop(key)
        docs.append(doc)
    assert docs[0] == docs[1]


def test_declared_quality_changes_the_reference(tmp_path, capsys):
    model = save(classifier(1000), tmp_path / "imagenet_like.onnx")
    code, out, _ = run(["assess", model, "--runs", "0", "--json", "-", "-d", "edge-gpu-batch1",
                        "--task", "image-classification", "--accuracy", "76", "--json-shape", "single"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["reference"]["quality"] >= 76 and doc["label"]["quality_declared"] is True
    assert doc["task"]["declared"] is True and not any("not declared" in n for n in doc["label"]["notes"])


def test_gate_fails_with_its_own_exit_code(tmp_path, capsys):
    """VGG16-like arithmetic on a tiny input still loses against MobileNet-class references."""
    model = save(classifier(1000), tmp_path / "imagenet_like.onnx")
    code, _, _ = run(["assess", model, "--runs", "0", "-d", "edge-gpu-batch1", "--fail-below", "G", "-q"], capsys)
    assert code == 0
    tiny = save(tiny_cnn(), tmp_path / "tiny.onnx")  # no task recognised: not gradable, fails any gate
    code, _, err = run(["assess", tiny, "--runs", "0", "-d", "edge-gpu-batch1", "--fail-below", "G", "-q"], capsys)
    assert code == 3 and err.count("\n") == 1
    vgg = ROOT / "tests" / "data" / "arch" / "vgg16.onnx"
    code, _, err = run(["assess", vgg, "--runs", "0", "-d", "edge-gpu-batch1", "--fail-below", "C", "-q"], capsys)
    assert code == 3
    assert err.startswith("error: gate failed:") and err.count("\n") == 1


def test_small_model_fits_the_microcontroller(capsys):
    code, out, err = run(["assess", ROOT / "examples" / "ppocr_mobile_v2_cls.onnx", "--input-shape", "x=1x3x48x192",
                          "--runs", "0", "-d", "microcontroller", "--json", "-", "--json-shape", "single"], capsys)
    assert code == 0 and json.loads(out)["inference"]["fits"] is True


def test_microcontroller_too_small_for_resnet_sized_weights(tmp_path, capsys):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((1024, 4096), np.float32), "w")  # 4 M parameters > 2 MB flash at int8
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], initializer=[w])
    model = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")
    code, out, err = run(["assess", model, "--runs", "0", "-d", "microcontroller", "--json", "-", "--json-shape", "single",
                          "--task", "image-classification"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["inference"]["fits"] is False and doc["inference"]["energy_j"] is None
    assert doc["label"]["class"] is None and "does not fit" in doc["label"]["reason"]
    code, _, err = run(["assess", model, "--runs", "0", "-d", "microcontroller", "--fail-below", "G", "-q"], capsys)
    assert code == 3 and "not graded: microcontroller" in err


def test_help_and_listing_commands(capsys):
    assert run(["--help"], capsys)[0] == 0
    for cmd in (["devices"], ["devices", "--calibration"], ["catalogue"], ["rules"]):
        code, out, err = run(cmd, capsys)
        assert code == 0 and out.strip(), (cmd, err)
