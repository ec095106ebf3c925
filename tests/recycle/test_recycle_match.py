"""Tensor matching against a declared base: every tensor classified frozen / fine-tuned / new."""

import numpy as np
import pytest

from eeki_label.model_io import load_model
from eeki_label.recycle import FINE_TUNED, FROZEN, NEW, match_tensors
from recycle_models import cnn, fine_tune, new_head, save, weights

BACKBONE = ("conv1.w", "conv1.b", "conv2.w", "conv2.b", "conv3.w", "conv3.b")


def classes(match) -> dict[str, str]:
    return {s.tensor.name: s.status for s in match.statuses}


def load_pair(tmp_path, cand_model, base_model):
    return load_model(save(cand_model, tmp_path / "cand.onnx")), load_model(save(base_model, tmp_path / "base.onnx"))


def test_new_two_class_head_on_a_frozen_backbone(tmp_path):
    w = weights()
    cand, base = load_pair(tmp_path, cnn(new_head(w, classes=2)), cnn(w))
    m = match_tensors(cand, base)
    assert classes(m) == {**{k: FROZEN for k in BACKBONE}, "fc.w": NEW, "fc.b": NEW}
    frozen_params = sum(w[k].size for k in BACKBONE)
    assert m.parameters(FROZEN) == frozen_params
    assert m.parameters(NEW) == 2 * 16 + 2
    assert m.share(NEW) == pytest.approx(34 / (frozen_params + 34))
    assert m.layers(FROZEN) == ("conv1", "conv2", "conv3") and m.layers(NEW) == ("fc",)
    # the old 10-class head is gone: same names, other shapes
    assert {b.name for b in m.removed} == {"fc.w", "fc.b"}
    assert {s.tensor.name: s.replaces for s in m.of(NEW)} == {"fc.w": "fc.w", "fc.b": "fc.b"}
    assert m.trained_nodes() == {"fc"}


def test_fine_tuned_last_block_reports_the_relative_change(tmp_path):
    w = weights()
    tuned = fine_tune(new_head(w, classes=2), keys=("conv3.w", "conv3.b"))
    cand, base = load_pair(tmp_path, cnn(tuned), cnn(w))
    m = match_tensors(cand, base)
    assert classes(m) == {"conv1.w": FROZEN, "conv1.b": FROZEN, "conv2.w": FROZEN, "conv2.b": FROZEN,
                          "conv3.w": FINE_TUNED, "conv3.b": FINE_TUNED, "fc.w": NEW, "fc.b": NEW}
    by_name = {s.tensor.name: s for s in m.statuses}
    for k in ("conv3.w", "conv3.b"):
        new, old = tuned[k].astype(np.float64), w[k].astype(np.float64)
        expected = np.sqrt(((new - old) ** 2).sum()) / np.sqrt((old ** 2).sum())
        assert by_name[k].relative_change == pytest.approx(expected, rel=1e-12)
        assert by_name[k].matched_by == "name" and by_name[k].base.name == k
    assert m.layers(FINE_TUNED) == ("conv3",)
    assert m.trained_nodes() == {"conv3", "fc"}


def test_renamed_tensors_match_by_content_and_by_structure(tmp_path):
    w = weights()
    tuned = fine_tune(w, keys=("conv2.w",))
    renamed = {k: f"param_{i}" for i, k in enumerate(w)}
    cand, base = load_pair(tmp_path, cnn(tuned, names=renamed), cnn(w))
    m = match_tensors(cand, base)
    by_base = {s.base.name: (s.status, s.matched_by) for s in m.statuses}
    assert by_base["conv2.w"] == (FINE_TUNED, "structure")
    assert all(by_base[k] == (FROZEN, "content") for k in w if k != "conv2.w")
    assert not m.of(NEW) and not m.removed
    assert not m.all_keys_match()  # renamed: the NNC delta coder cannot pair them


def test_weights_in_constant_nodes_are_matched_like_initializers(tmp_path):
    w = weights()
    cand, base = load_pair(tmp_path, cnn(fine_tune(new_head(w)), as_constants=True), cnn(w, as_constants=True))
    m = match_tensors(cand, base)
    assert classes(m) == {"conv1.w": FROZEN, "conv1.b": FROZEN, "conv2.w": FROZEN, "conv2.b": FROZEN,
                          "conv3.w": FINE_TUNED, "conv3.b": FINE_TUNED, "fc.w": NEW, "fc.b": NEW}
    assert m.all_keys_match()


def test_identical_model_is_all_frozen(tmp_path):
    w = weights()
    cand, base = load_pair(tmp_path, cnn(w), cnn(w))
    m = match_tensors(cand, base)
    assert {s.status for s in m.statuses} == {FROZEN} and m.share(FROZEN) == 1.0
    assert m.trained_nodes() == frozenset()
