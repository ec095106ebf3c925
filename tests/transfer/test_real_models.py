"""The issue's acceptance figures on real trained networks (../shared/models).

Slow (a minute or two on two cores) but part of the default test run; a missing ../shared/models
fails them (the ``shared_models`` fixture), it does not skip them. The search is tuned on one set
of inputs and the decoded model is judged on another, disjoint set: with the user's calibration
images (rendered text, images.py; seeds 0-3) and with the default, synthetic calibration (no
calibration data: structured synthetic images), held out each time on rendered pages it never saw.
"""

from __future__ import annotations

import numpy as np
import pytest
from images import cls_batch, det_batch

from eeki_label.model_io import iter_stored_tensors, load_model, tensor_array
from eeki_label.transfer.fidelity import FidelityBound, Reference, compare, run_model
from eeki_label.transfer.nnc import decode_bitstream, encode_model

BOUND = FidelityBound(0.03)
DET_SHAPES = {"x": (1, 3, 640, 640)}


def _held_out(loaded, bitstream, x):
    rec = decode_bitstream(bitstream, loaded)
    feeds = [{"x": x[i:i + 1]} for i in range(len(x))]
    names, ref = run_model(str(loaded.path), feeds)
    _, out = run_model(rec, feeds)
    return compare(Reference.of(names, ref), out, BOUND)


def _zstd19_of_coded_floats(loaded, r) -> int:
    """zstd level 19 of the float32 bytes of exactly the tensors the NNC stream codes."""
    zstandard = pytest.importorskip("zstandard")
    coded = {c.key for c in r.tensors if c.mode == "nnc"}
    floats = b"".join(np.ascontiguousarray(tensor_array(loaded, t.tensor), dtype=np.float32).tobytes()
                      for t in iter_stored_tensors(loaded.proto) if t.key in coded)
    assert len(floats) == r.coded_float_bytes
    return len(zstandard.ZstdCompressor(level=19).compress(floats))


def _check_det_targets(det, r) -> None:
    assert r.fidelity.meets and r.fidelity.max_rel_error <= 0.03
    # at most 30 % of the float32 bytes: the NNC stream and the whole container
    assert r.nnc_bytes <= 0.30 * r.coded_float_bytes, r.nnc_ratio
    assert r.compressed_bytes <= 0.30 * r.original_bytes, r.ratio
    # at least 3x smaller than zstd-19 of the same floats
    zstd19 = _zstd19_of_coded_floats(det, r)
    assert zstd19 >= 3 * r.nnc_bytes, (zstd19, r.nnc_bytes)
    # the decoded model runs and stays within the bound on pages it was not tuned on
    held = _held_out(det, r.bitstream, det_batch(range(100, 106)))
    assert held.max_rel_error <= 0.03, held


@pytest.mark.slow
def test_ppocr_v4_det_meets_the_issue_targets(shared_models):
    det = load_model(shared_models / "ppocr_v4_det.onnx")
    r = encode_model(det, DET_SHAPES, BOUND, calibration={"x": det_batch(range(4))})
    assert r.calibration == "calibration data"
    _check_det_targets(det, r)


@pytest.mark.slow
def test_ppocr_v4_det_meets_the_issue_targets_with_the_default_calibration(shared_models):
    # no calibration data: the default synthetic inputs must lead to a meaningful result (with
    # standard-normal noise the detector's map was almost empty and the search ended at 43 %)
    det = load_model(shared_models / "ppocr_v4_det.onnx")
    r = encode_model(det, DET_SHAPES, BOUND)
    assert r.calibration == "synthetic"
    _check_det_targets(det, r)


@pytest.mark.slow
def test_ppocr_cls_within_bound_on_unseen_text_lines(shared_models):
    cls = load_model(shared_models / "ppocr_mobile_v2_cls.onnx")
    r = encode_model(cls, {"x": (1, 3, 48, 192)}, BOUND, calibration={"x": cls_batch(range(32))})
    assert r.fidelity.meets and r.fidelity.min_top1_agreement == 1.0
    assert r.compressed_bytes <= 0.30 * r.original_bytes
    held = _held_out(cls, r.bitstream, cls_batch(range(100, 164)))
    assert held.max_rel_error <= 0.03, held
    # one of the 64 unseen lines is a near tie (p = 0.55) and may flip
    assert held.min_top1_agreement >= 62 / 64, held


@pytest.mark.slow
def test_ppocr_cls_default_calibration_within_bound_on_unseen_text_lines(shared_models):
    cls = load_model(shared_models / "ppocr_mobile_v2_cls.onnx")
    r = encode_model(cls, {"x": (1, 3, 48, 192)}, BOUND)
    assert r.calibration == "synthetic" and r.fidelity.meets
    assert r.compressed_bytes <= 0.30 * r.original_bytes
    held = _held_out(cls, r.bitstream, cls_batch(range(100, 164)))
    assert held.max_rel_error <= 0.03, held
    assert held.min_top1_agreement >= 62 / 64, held
