"""Training energy: MACs attributed through consuming nodes, savings equal to the formula by hand."""

import json
from functools import partial

import pytest

from eeki_label.model_io import load_model
from eeki_label.pipeline import AssessOptions, assess
from eeki_label.profile.runtime import probe_shapes
from eeki_label.profile.shapes import resolve_input_shapes
from eeki_label.profile.static import static_profile
from eeki_label.recycle import MacSplit, RecyclingOptions, TrainingParams, node_work, split_macs, training_estimate
from recycle_models import CONV_MACS, ROOT, cnn, fine_tune, head_macs, new_head, save, weights

N, EPOCHS, SCRATCH = 1000, 10, 90
TRAIN_CLASS = "datacenter-gpu-batched"


def grid():
    doc = json.loads((ROOT / "data" / "energy" / "transfer.json").read_text())
    return (doc["grid_g_per_kwh"][doc["default_country"]]["value"],
            doc["price_eur_per_kwh"][doc["default_price"]]["value"])


def recycling(tmp_path, cand_w, base_w, **opts):
    base = save(cnn(base_w), tmp_path / "base.onnx")
    cand = save(cnn(cand_w), tmp_path / "cand.onnx")
    ro = RecyclingOptions(train_samples=N, fine_tune_epochs=EPOCHS, scratch_epochs=SCRATCH, update_codec="raw", **opts)
    label = assess(cand, AssessOptions(device_classes=(TRAIN_CLASS,), runs=0, base=base, recycling=ro)).labels[0]
    return label, label.recycling.training


def check_scenarios(label, t, transfer_passes):
    """Every figure against the formula: E = E_fwd x N x passes, saving = E_scratch - E."""
    e_fwd = label.inference.energy_j  # the same estimator on the same class: one forward pass of one sample
    assert t.forward_energy_per_sample_j == pytest.approx(e_fwd, rel=1e-12)
    g, price = grid()
    wh = {"scratch": 3 * SCRATCH * e_fwd * N / 3600, "recycling": 3 * EPOCHS * e_fwd * N / 3600,
          "transfer-learning": transfer_passes * e_fwd * N / 3600}
    got = {s.id: s for s in t.scenarios}
    for sid, expected in wh.items():
        s = got[sid]
        assert s.energy_wh == pytest.approx(expected, rel=1e-9)
        assert s.co2_g == pytest.approx(expected / 1000 * g, rel=1e-9)
        assert s.cost_eur == pytest.approx(expected / 1000 * price, rel=1e-9)
        if sid == "scratch":
            assert s.saving_wh is None
        else:
            assert s.saving_wh == pytest.approx(wh["scratch"] - expected, rel=1e-9)
            assert s.saving_co2_g == pytest.approx((wh["scratch"] - expected) / 1000 * g, rel=1e-9)
            assert s.saving_eur == pytest.approx((wh["scratch"] - expected) / 1000 * price, rel=1e-9)
            assert s.saving_share == pytest.approx(1 - expected / wh["scratch"], rel=1e-9)


def test_new_head_frozen_backbone_savings_by_hand(tmp_path):
    w = weights()
    label, t = recycling(tmp_path, new_head(w, classes=2), w)
    backbone, head = sum(CONV_MACS.values()), head_macs(2)
    assert (t.macs_trained, t.macs_frozen_backprop, t.macs_frozen_forward) == (head, 0, backbone)
    f_t = head / (head + backbone)
    check_scenarios(label, t, EPOCHS * (3 * f_t + 1 * (1 - f_t)))
    assert t.device_class == TRAIN_CLASS and t.basis == "declared-base" and not t.features_cached


def test_fine_tuned_last_block_and_new_head_savings_by_hand(tmp_path):
    w = weights()
    label, t = recycling(tmp_path, fine_tune(new_head(w, classes=2)), w)
    trained = CONV_MACS["conv3"] + head_macs(2)
    frozen = CONV_MACS["conv1"] + CONV_MACS["conv2"]
    assert (t.macs_trained, t.macs_frozen_backprop, t.macs_frozen_forward) == (trained, 0, frozen)
    total = trained + frozen
    check_scenarios(label, t, EPOCHS * (3 * trained / total + frozen / total))


def test_frozen_layers_after_a_trained_one_pass_gradients_back(tmp_path):
    w = weights()
    label, t = recycling(tmp_path, fine_tune(w, keys=("conv1.w",)), w)
    after = CONV_MACS["conv2"] + CONV_MACS["conv3"] + head_macs(10)
    assert (t.macs_trained, t.macs_frozen_backprop, t.macs_frozen_forward) == (CONV_MACS["conv1"], after, 0)
    total = CONV_MACS["conv1"] + after
    check_scenarios(label, t, EPOCHS * (3 * CONV_MACS["conv1"] / total + 2 * after / total))


def test_cached_features_run_the_frozen_part_once(tmp_path):
    w = weights()
    label, t = recycling(tmp_path, new_head(w, classes=2), w, features_cached=True)
    backbone, head = sum(CONV_MACS.values()), head_macs(2)
    f_t = head / (head + backbone)
    assert t.features_cached
    check_scenarios(label, t, EPOCHS * 3 * f_t + (1 - f_t))


def test_candidate_equal_to_its_base_trains_nothing(tmp_path):
    w = weights()
    label, t = recycling(tmp_path, w, w)
    assert {s.id: s.energy_wh for s in t.scenarios}["transfer-learning"] == 0.0
    assert label.recycling.update.changed_tensors == 0 and label.recycling.update.raw_bytes == 0


def test_defaults_come_from_the_rule_set(tmp_path):
    rules = json.loads((ROOT / "rules" / "eeki-rules-1.0.0.json").read_text())["training"]
    w = weights()
    base = save(cnn(w), tmp_path / "base.onnx")
    cand = save(cnn(new_head(w)), tmp_path / "cand.onnx")
    t = assess(cand, AssessOptions(device_classes=("edge-gpu-batch1",), runs=0, base=base,
                                   recycling=RecyclingOptions(update_codec="raw"))).labels[0].recycling.training
    assert t.device_class == rules["default_device_class"]
    assert t.train_samples == rules["train_samples"] and t.fine_tune_epochs == rules["fine_tune_epochs"]
    assert t.scratch_epochs == rules["scratch_epochs_fallback"]  # a tiny CNN matches no catalogue family
    assert t.features_cached is rules["features_cached"]


def test_pure_estimate_matches_the_formula():
    p = TrainingParams("x", train_samples=7, fine_tune_epochs=4, scratch_epochs=20, scratch_epochs_source="test",
                       features_cached=False)
    split = MacSplit(trained=10, frozen_backprop=30, frozen_forward=60, unresolved_nodes=0)
    est = training_estimate(2.0, split, p)
    e = {s.id: s.energy_j for s in est.scenarios}
    assert e["scratch"] == 2.0 * 7 * 3 * 20
    assert e["recycling"] == 2.0 * 7 * 3 * 4
    assert e["transfer-learning"] == pytest.approx(2.0 * 7 * 4 * (3 * 0.1 + 2 * 0.3 + 1 * 0.6))
    assert est.scenarios[2].saving_j == pytest.approx(e["scratch"] - e["transfer-learning"])


def test_per_node_macs_add_up_to_the_static_profile(cls_model):
    loaded = load_model(cls_model)
    shapes = resolve_input_shapes(loaded.proto, {"x": (1, 3, 48, 192)})
    probe = partial(probe_shapes, loaded, shapes)
    nodes = node_work(loaded, shapes, probe)
    assert sum(n.macs for n in nodes) == static_profile(loaded, shapes, probe=probe).macs
    assert all(n.resolved for n in nodes)
    assert split_macs(nodes, frozenset()).frozen_forward == sum(n.macs for n in nodes)


def test_per_node_macs_add_up_to_the_static_profile_with_a_loop(tmp_path):
    """A MatMul in a Loop of 10 iterations: its per-node MACs are per inference, as the static profile's."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def vi(name, shape, dtype=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, dtype, shape)

    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("MatMul", ["h_in", "w"], ["h_out"])],
        "body", [vi("i", [], TensorProto.INT64), vi("c_in", [], TensorProto.BOOL), vi("h_in", [2, 8])],
        [vi("c_out", [], TensorProto.BOOL), vi("h_out", [2, 8])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["h"], body=body), helper.make_node("MatMul", ["h", "w"], ["y"])],
        "g", [vi("x", [2, 8])], [vi("y", [2, 8])],
        initializer=[numpy_helper.from_array(np.ones((8, 8), np.float32), "w"),
                     numpy_helper.from_array(np.array(10, np.int64), "M")])
    path = tmp_path / "loop.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    loaded = load_model(path)
    shapes = resolve_input_shapes(loaded.proto, {})
    probe = partial(probe_shapes, loaded, shapes)  # the Loop's output shape is known at run time only
    static = static_profile(loaded, shapes, probe=probe)
    nodes = node_work(loaded, shapes, probe, subgraph_runs=dict(static.subgraph_runs))
    assert static.macs == 11 * 2 * 8 * 8 and sum(n.macs for n in nodes) == static.macs
