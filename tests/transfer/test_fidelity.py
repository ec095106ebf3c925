"""Fidelity metrics, the bound, calibration inputs, the weight-feeding runner."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eeki_label.errors import TransferError
from eeki_label.model_io import iter_stored_tensors, tensor_array
from eeki_label.transfer.fidelity import (
    FidelityBound,
    Reference,
    WeightFeedRunner,
    calibration_feeds,
    compare,
    output_kind,
    run_model,
)


def test_bound_validation():
    with pytest.raises(ValueError):
        FidelityBound(0.0)
    with pytest.raises(ValueError):
        FidelityBound(0.03, min_top1_agreement=1.5)


def test_output_kinds():
    assert output_kind(np.zeros((4, 10), np.float32)) == "classifier"
    assert output_kind(np.zeros((1, 1, 64, 64), np.float32)) == "dense"
    assert output_kind(np.zeros((4,), np.int64)) == "exact"


def test_relative_error_is_pooled_over_samples():
    ref = [[np.array([[3.0, 4.0]])], [np.array([[0.0, 10.0]])]]
    out = [[np.array([[3.0, 4.0]]) + 0.5], [np.array([[0.0, 10.0]])]]
    f = compare(Reference.of(["y"], ref), out, FidelityBound(0.1))
    expected = math.sqrt(0.5 / (25 + 100))
    assert f.outputs[0].rel_error == pytest.approx(expected)
    assert f.outputs[0].max_sample_rel_error == pytest.approx(math.sqrt(0.5 / 25))
    assert f.outputs[0].top1_agreement == 1.0 and f.meets


def test_top1_and_exact_agreement():
    ref = [[np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), np.array([1, 0], np.int64)]]
    out = [[np.array([[0.6, 0.4], [0.8, 0.2]], np.float32), np.array([1, 1], np.int64)]]
    f = compare(Reference.of(["p", "idx"], ref), out, FidelityBound(5.0, min_top1_agreement=0.5))
    assert f.outputs[0].top1_agreement == 0.5 and f.outputs[1].top1_agreement == 0.5
    assert f.meets
    strict = compare(Reference.of(["p", "idx"], ref), out, FidelityBound(5.0, min_top1_agreement=1.0))
    assert not strict.meets


def test_classifier_without_relative_error_rule():
    ref = [[np.array([[0.1, 0.9]], np.float32)]]
    out = [[np.array([[0.3, 0.7]], np.float32)]]
    assert not compare(Reference.of(["p"], ref), out, FidelityBound(0.03)).meets
    assert compare(Reference.of(["p"], ref), out, FidelityBound(0.03, rel_error_on_classifiers=False)).meets


def test_delta_reference_measures_against_the_update():
    new = [[np.array([1.0, 2.0, 3.0])]]
    old = [[np.array([1.0, 2.0, 3.1])]]
    rec = [[np.array([1.0, 2.0, 3.01])]]
    f = compare(Reference.of(["y"], new, old), rec, FidelityBound(0.2))
    assert f.relative_to == "update effect"
    assert f.outputs[0].rel_error == pytest.approx(0.1)


def test_nan_output_fails():
    f = compare(Reference.of(["y"], [[np.ones(3)]]), [[np.array([1.0, np.nan, 1.0])]], FidelityBound(0.5))
    assert not f.meets and f.outputs[0].rel_error == math.inf


def test_calibration_feeds_layouts(mlp):
    shapes = {"x": (1, 64)}
    x = np.zeros((5, 64), np.float64)
    feeds, src = calibration_feeds(mlp.proto, shapes, {"x": x})
    assert src == "calibration data" and len(feeds) == 5 and feeds[0]["x"].shape == (1, 64)
    assert feeds[0]["x"].dtype == np.float32
    feeds, _ = calibration_feeds(mlp.proto, shapes, {"x": np.zeros((3, 1, 64))})
    assert len(feeds) == 3
    feeds, src = calibration_feeds(mlp.proto, shapes, None, samples=2)
    assert src == "synthetic" and len(feeds) == 2 and not np.array_equal(feeds[0]["x"], feeds[1]["x"])
    with pytest.raises(TransferError):
        calibration_feeds(mlp.proto, shapes, {"x": np.zeros((2, 65))})


def test_weight_feed_runner_matches_the_model(cnn):
    keys = ["initializer:w1", "constant:w3", "#9.then_branch/constant:branch_bias"]
    runner = WeightFeedRunner(cnn, keys)
    refs = {r.key: r for r in iter_stored_tensors(cnn.proto)}
    exact = {k: tensor_array(cnn, refs[k].tensor) for k in keys}
    runner.set_defaults(exact)
    feeds = [{"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}]
    _, ref = run_model(str(cnn.path), feeds)
    np.testing.assert_allclose(runner.run({}, feeds)[0][0], ref[0][0], rtol=1e-5, atol=1e-6)
    changed = runner.run({"constant:w3": exact["constant:w3"] * 0}, feeds)[0][0]
    assert not np.allclose(changed, ref[0][0])


def test_a_model_that_fails_to_run_is_one_error_and_onnxruntime_logs_nothing(capfd):
    """onnxruntime logs a failing node at ERROR severity on stderr besides raising: that log must be
    off, or the user sees its multi-line report next to the tool's one-line error."""
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([7, 5], np.int64), "s")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7, 5])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(TransferError, match="does not run in onnxruntime"):
        run_model(model, [{"x": np.zeros((1, 4), np.float32)}])
    assert capfd.readouterr().err == ""
