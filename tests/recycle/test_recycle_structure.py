"""Without --base: the candidate's weight-layer structure against the catalogue's architectures."""

import json

import onnx
import pytest

from eeki_label.catalogue import load_catalogue
from eeki_label.pipeline import AssessOptions, assess
from eeki_label.recycle import STRUCTURAL_MATCH_STATEMENT, match_structure, structure_signature
from recycle_models import ARCH, ROOT, cnn, save, weights

SOURCE = json.loads((ROOT / "scripts" / "catalogue_source.json").read_text())["models"]


@pytest.mark.parametrize("entry", SOURCE, ids=[m["id"] for m in SOURCE])
def test_every_catalogue_architecture_is_recognised_as_itself(entry):
    layers = structure_signature(onnx.load(str(ARCH / entry["onnx_file"])))  # weights are typed graph inputs
    fm = match_structure(layers, load_catalogue().models)
    assert fm.model_id == entry["id"]
    assert fm.coverage == 1.0 and fm.reference_coverage == 1.0


def with_new_head(arch_file: str, classes: int) -> onnx.ModelProto:
    """The architecture with its classifier (fc.weight / fc.bias, graph inputs) resized to ``classes``."""
    m = onnx.load(str(ARCH / arch_file))
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name == "fc.weight":
            dims[0].dim_value = classes
        elif vi.name == "fc.bias":
            dims[0].dim_value = classes
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = classes
    return m


def test_resnet18_with_a_two_class_head_is_a_resnet18_whose_head_differs(tmp_path):
    path = save(with_new_head("resnet18.onnx", 2), tmp_path / "r18_2class.onnx")
    lab = assess(path, AssessOptions(device_classes=("datacenter-gpu-batched",), runs=0)).labels[0]
    r = lab.recycling
    assert r.basis == "structural-match" and r.base is None and r.update is None
    s = r.structure
    assert s.model_id == "torchvision/resnet18" and s.recognised
    fc = 2 * 512
    backbone = 11_678_912 - 1000 * 512  # the catalogue's weight-layer parameters minus the 1000-class head
    assert s.coverage == pytest.approx(backbone / (backbone + fc))
    assert s.reference_coverage == pytest.approx(backbone / 11_678_912)
    assert s.differing_layers == ["/fc/Gemm"] and s.matched_layers == s.candidate_layers - 1
    assert s.statement == STRUCTURAL_MATCH_STATEMENT and "not proof" in s.statement
    t = r.training
    assert t.basis == "structural-match"
    assert t.macs_trained == fc and t.macs_frozen_backprop == 0
    assert t.macs_frozen_forward == lab.model.macs - fc
    assert t.scratch_epochs == 90 and "torchvision/resnet18" in t.scratch_epochs_source
    assert any("potential saving" in n and "not proof" in n for n in r.notes)


def test_scratch_epochs_come_from_the_matched_family():
    lab = assess(ARCH / "mobilenet_v2.onnx", AssessOptions(device_classes=("datacenter-gpu-batched",), runs=0))
    t = lab.labels[0].recycling.training
    assert t.scratch_epochs == 300 and "MobileNetV2" in t.scratch_epochs_source
    # the whole architecture matches: transfer learning is assumed to retrain the last weight layer only
    assert t.macs_trained == 1280 * 1000
    assert any("last weight layer" in n for n in lab.labels[0].recycling.notes)


def test_weights_declared_as_initializers_constants_or_inputs_give_one_signature():
    w = weights()
    tokens = {tuple(layer.token for layer in structure_signature(m))
              for m in (cnn(w), cnn(w, as_constants=True), cnn(w, weights_as_inputs=True))}
    assert tokens == {("Conv:8x3x3x3", "Conv:16x8x3x3", "Conv:16x16x3x3", "FC:10x16")}


def test_unrelated_small_model_is_not_credited(tmp_path):
    path = save(cnn(weights()), tmp_path / "cnn.onnx")
    r = assess(path, AssessOptions(device_classes=("edge-gpu-batch1",), runs=0)).labels[0].recycling
    assert r.training is None
    assert r.structure is None or not r.structure.recognised
    assert r.notes


def test_catalogue_records_structure_and_scratch_epochs_with_sources():
    cat = load_catalogue()
    for m in cat.models:
        assert m.structure or m.query is not None, m.id  # per-query references: profiled by phase, no structure
        # a published from-scratch recipe is recorded with its source; references without one use the rule set's
        assert m.scratch_epochs is None or m.scratch_epochs_source, m.id
    assert {m.id: m.scratch_epochs for m in cat.models if m.task == "image-classification"} == {
        "torchvision/mobilenet_v3_small": 600, "torchvision/squeezenet1_1": 100,
        "torchvision/shufflenet_v2_x1_0": None, "torchvision/mobilenet_v2": 300,
        "torchvision/efficientnet_b0": 450, "torchvision/resnet18": 90, "torchvision/densenet121": 90,
        "torchvision/resnet50": 90, "torchvision/vgg16": 90, "torchvision/mobilenet_v3_large": 600,
        "torchvision/regnet_y_400mf": None, "torchvision/convnext_tiny": None, "torchvision/efficientnet_v2_s": None,
        "torchvision/vit_b_16": None}
