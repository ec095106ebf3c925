"""Tasks are declared or detected, never assumed (eeki_label/tasks.py, catalogue 2.0.0)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from support import ARCH, classifier, save, shared_model, tiny_cnn
from eeki_label.catalogue import load_catalogue
from eeki_label.cli import main
from eeki_label.errors import UsageError
from eeki_label.pipeline import AssessOptions, assess
from eeki_label.profile.inputs import fill_hints
from eeki_label.profile.runtime import make_feeds
from eeki_label.tasks import detect_task

FAST = dict(runs=0, device_classes=("edge-gpu-batch1",))


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def vad_like() -> onnx.ModelProto:
    """A Silero-VAD-like network: audio chunk, recurrent state, scalar sample rate ``sr`` choosing a branch
    (If on Equal(sr, 16000)); dims named 'batch' and 'sequence' as the real export declares them."""
    rng = np.random.default_rng(1)
    audio = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "sequence"])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 128])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])
    w16 = numpy_helper.from_array(rng.standard_normal((512, 1)).astype(np.float32), "w16")

    def branch(name: str, w: str):
        o = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node("MatMul", ["input", w], [f"{name}_y"])], name, [], [o])

    nodes = [
        helper.make_node("Constant", [], ["k16"], value=numpy_helper.from_array(np.array(16000, dtype=np.int64))),
        helper.make_node("Equal", ["sr", "k16"], ["is16"]),
        # the 8 kHz branch reads half the chunk, as the real export's 256-sample path does
        helper.make_node("If", ["is16"], ["y"], then_branch=branch("then", "w16"),
                         else_branch=helper.make_graph(
                             [helper.make_node("Slice", ["input", "s0", "s1", "ax"], ["half"]),
                              helper.make_node("MatMul", ["half", "w8x"], ["else_y"])], "else", [],
                             [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)])),
        helper.make_node("ReduceMean", ["state"], ["sm"], keepdims=0),
        helper.make_node("Add", ["y", "sm"], ["output"]),
    ]
    inits = [w16, numpy_helper.from_array(rng.standard_normal((256, 3)).astype(np.float32), "w8x"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "s0"),
             numpy_helper.from_array(np.array([256], dtype=np.int64), "s1"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "ax")]
    return helper.make_model(helper.make_graph(nodes, "vad", [audio, state, sr], [out], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_catalogue_tasks_have_units_signatures_and_references():
    cat = load_catalogue()
    assert len(cat.tasks) >= 9
    for t in cat.tasks.values():
        assert t.unit and t.unit_description, t.id
        assert t.signatures, f"{t.id} has no detection signature"
        refs = cat.for_task(t.id)
        if t.status == "graded":
            assert len(refs) >= 3, f"{t.id}: {len(refs)} references"
            assert all(r.quality_source for r in refs)
        else:
            assert not refs


def test_no_silent_default_task(tmp_path):
    """A model whose signature fits no task is not graded; every energy figure is still there."""
    lab = assess(save(tiny_cnn(), tmp_path / "m.onnx"), AssessOptions(
        input_shapes={"x": (1, 3, 16, 16)}, **FAST)).labels[0]
    assert lab.task.id is None and lab.task.declared is False
    assert lab.label.class_ is None and "declare it with --task" in lab.label.reason
    assert lab.inference.energy_j > 0 and lab.reference.task is None


def test_imagenet_classifier_is_detected_and_graded_against_its_task(tmp_path):
    lab = assess(ARCH / "resnet18.onnx", AssessOptions(**FAST)).labels[0]
    assert lab.task.id == "image-classification" and lab.task.declared is False
    assert "1000 or 1001 class scores" in lab.task.detected_from
    assert lab.label.class_ is not None and lab.reference.task == lab.task.id


def test_two_class_image_model_is_recognised_but_not_graded_as_imagenet(tmp_path):
    lab = assess(save(classifier(2), tmp_path / "m.onnx"), AssessOptions(
        input_shapes={"x": (1, 3, 48, 192)}, **FAST)).labels[0]
    assert lab.task.id == "binary-image-classification" and lab.task.catalogued is False
    assert lab.label.class_ is None and "no references" in lab.label.reason
    assert lab.reference.model_id is None


def test_shared_models_never_get_an_imagenet_grade():
    cat = load_catalogue()
    det = onnx.load(str(shared_model("ppocr_v4_det.onnx")), load_external_data=False)
    cls = onnx.load(str(shared_model("ppocr_mobile_v2_cls.onnx")), load_external_data=False)
    assert detect_task(det, cat.tasks, cat.known_tasks).task_id == "text-detection"
    assert detect_task(cls, cat.tasks, cat.known_tasks).task_id == "binary-image-classification"
    lab = assess(shared_model("ppocr_v4_det.onnx"), AssessOptions(**FAST)).labels[0]
    assert lab.task.id == "text-detection"
    assert lab.task.evaluation_input == {"x": [1, 3, 640, 640]} or lab.label.class_ is None
    assert lab.reference.task in (None, "text-detection")


def test_vad_like_model_assesses_with_no_flags(tmp_path):
    """Silero-VAD-like: the batch named in another input's leading dim, the chunk from the task, sr read
    from the model's own constant (16000, the branch a real caller of a 512-sample chunk takes)."""
    path = save(vad_like(), tmp_path / "vad.onnx")
    model = onnx.load(str(path))
    hints = fill_hints(model, {"input": (1, 512), "state": (2, 1, 128), "sr": ()})
    assert hints["sr"] == {"kind": "const", "value": 16000}
    feeds = make_feeds(model, {"input": (1, 512), "state": (2, 1, 128), "sr": ()})
    assert int(feeds["sr"]) == 16000
    lab = assess(path, AssessOptions(runs=2, device_classes=("edge-gpu-batch1",))).labels[0]
    assert lab.task.id == "voice-activity-detection" and lab.label.class_ is None
    assert {i.name: i.shape for i in lab.model.inputs} == {"input": [1, 512], "state": [2, 1, 128], "sr": []}
    assert lab.runtime is not None and lab.runtime.runs == 2


def test_token_ids_stay_inside_the_vocabulary(tmp_path):
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "T"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "T"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 4])
    emb = numpy_helper.from_array(np.ones((37, 4), dtype=np.float32), "emb")
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "ax"], ["mu"]), helper.make_node("Mul", ["e", "mu"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "t", [ids, mask], [y], [
        emb, numpy_helper.from_array(np.array([2], dtype=np.int64), "ax")]), opset_imports=[helper.make_opsetid("", 17)])
    feeds = make_feeds(m, {"input_ids": (1, 512), "attention_mask": (1, 512)})
    assert fill_hints(m, {})["input_ids"] == {"kind": "ids", "high": 37}
    assert feeds["input_ids"].min() >= 0 and feeds["input_ids"].max() < 37 and len(np.unique(feeds["input_ids"])) > 10
    assert (feeds["attention_mask"] == 1).all()


def test_assessed_below_the_evaluation_input_is_graded_at_it(tmp_path):
    """Dynamic dims assessed at 32x32 are graded at 224x224; a model fixed at 32x32 is not graded."""
    dyn = assess(save(classifier(1000), tmp_path / "d.onnx"), AssessOptions(
        input_shapes={"x": (1, 3, 32, 32)}, **FAST)).labels[0]
    assert dyn.task.evaluation_input == {"x": [1, 3, 224, 224]}
    assert dyn.label.graded_energy_j > dyn.inference.energy_j * 10  # 49x the pixels (weights are read once)
    assert dyn.label.index == pytest.approx(dyn.label.graded_energy_j / dyn.reference.energy_j)
    fixed = assess(save(classifier(1000, (32, 32)), tmp_path / "f.onnx"), AssessOptions(**FAST)).labels[0]
    assert fixed.label.class_ is None
    assert "1x3x32x32" in fixed.label.reason and "1x3x224x224" in fixed.label.reason


def test_declared_task_outside_the_catalogue_is_not_graded_and_fails_the_gate(tmp_path, capsys):
    m = save(classifier(1000), tmp_path / "m.onnx")
    code, out, err = run(["assess", m, "--task", "speech", "--runs", "0", "--no-transfer", "-d", "edge-gpu-batch1",
                          "--input-shape", "x=1x3x224x224", "--json", "-", "--fail-below", "G"], capsys)
    assert code == 3 and "gate failed" in err and "not graded: edge-gpu-batch1" in err
    doc = json.loads(out)
    lab = doc["labels"][0] if "labels" in doc else doc
    assert lab["task"] == {**lab["task"], "id": "speech", "declared": True, "detected_from": None}
    assert lab["label"]["class"] is None and "not in catalogue" in lab["label"]["reason"]
    code, _, err = run(["assess", m, "--task", "Speech!", "--runs", "0", "--no-transfer"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:")


@pytest.mark.parametrize("value", ["200", "-1", "nan"])
def test_declared_quality_is_range_checked(tmp_path, capsys, value):
    m = save(classifier(1000), tmp_path / "m.onnx")
    code, _, err = run(["assess", m, "--task", "image-classification", "--accuracy", value, "--runs", "0",
                        "--no-transfer"], capsys)
    assert code == 2 and "--accuracy" in err and err.count("\n") == 1


def test_declared_quality_is_a_recorded_claim_with_evidence(tmp_path):
    ev = tmp_path / "eval-report.txt"
    ev.write_text("top-1 71.2 on ImageNet val\n")
    lab = assess(save(classifier(1000), tmp_path / "m.onnx"), AssessOptions(
        task="image-classification", accuracy=71.2, accuracy_evidence=ev, issuer="ACME test lab", **FAST)).labels[0]
    q = lab.task.quality
    assert q.declared == 71.2 and q.declared_by == "ACME test lab" and q.evidence_file == "eval-report.txt"
    import hashlib
    assert q.evidence_sha256 == hashlib.sha256(ev.read_bytes()).hexdigest()
    assert any("a claim by ACME test lab" in n for n in lab.label.notes)
    assert lab.reference.quality >= 71.2 and lab.reference.task == "image-classification"


def test_inputs_npz_sets_shapes_and_feeds_the_runtime(tmp_path):
    m = save(classifier(1000), tmp_path / "m.onnx")
    good = tmp_path / "in.npz"
    np.savez(good, x=np.zeros((1, 3, 64, 80), dtype=np.float32))
    lab = assess(m, AssessOptions(inputs=good, runs=2, device_classes=("edge-gpu-batch1",))).labels[0]
    assert lab.model.inputs[0].shape == [1, 3, 64, 80] and lab.runtime.runs == 2
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.zeros((1, 3, 64, 80), dtype=np.float32))
    with pytest.raises(UsageError, match="not inputs of the model"):
        assess(m, AssessOptions(inputs=bad, **FAST))
    pickled = tmp_path / "p.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UsageError, match="--inputs p.npz: not an .npz of arrays"):
        assess(m, AssessOptions(inputs=pickled, **FAST))


def test_text_generation_references_match_this_decoder_profile():
    """The per-query references were profiled by profile/decoder.py (scripts/export_text_generation.py); the
    stored weightless GPT-2 117M export re-profiled per query gives the catalogue's phase figures."""
    from support import ROOT
    from eeki_label.transfer.stage import TransferOptions

    ref = load_catalogue("2.0.0").model("openai/gpt2-117m")
    lab = assess(ROOT / "tests" / "data" / "text_generation" / "gpt2_117m.onnx", AssessOptions(
        runs=0, device_classes=("edge-gpu-batch1",), transfer=TransferOptions(enabled=False))).labels[0]
    inf = lab.inference
    assert lab.task.id == "text-generation" and inf.unit == "query"
    assert (inf.prompt_tokens, inf.output_tokens) == (ref.query.prompt_tokens, ref.query.output_tokens)
    assert inf.prefill.macs == ref.query.prefill_macs
    assert inf.decode.macs_per_token == pytest.approx(ref.query.decode_macs_per_token, rel=1e-9)
    assert lab.model.macs == ref.work.macs
    assert lab.reference.task == "text-generation" and lab.label.class_ is not None


def test_text_generation_is_graded_only_at_the_references_lengths():
    from support import ROOT
    from eeki_label.transfer.stage import TransferOptions

    lab = assess(ROOT / "tests" / "data" / "text_generation" / "gpt2_117m.onnx", AssessOptions(
        runs=0, device_classes=("edge-gpu-batch1",), length_preset="short",
        transfer=TransferOptions(enabled=False))).labels[0]
    assert lab.label.class_ is None and "512 prompt / 128 output tokens" in lab.label.reason
    assert lab.inference.energy_per_query_j > 0
