"""encode_model / decode_bitstream on small generated graphs: round trips, bit-exact tensors,
fidelity, delta coding, mismatched and corrupt bitstreams."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from nnc_models import save_and_load, small_cnn, wide_mlp
from onnx import numpy_helper

from eeki_label.errors import LimitExceededError, TransferError
from eeki_label.model_io import iter_stored_tensors, materialize
from eeki_label.transfer.container import unpack
from eeki_label.transfer.fidelity import FidelityBound, Reference, compare, run_model
from eeki_label.transfer.nnc import (
    _consumers,
    bitstream_info,
    decode_bitstream,
    encode_model,
    raw_reason,
    write_reconstruction,
)

CNN_SHAPES = {"x": (1, 3, 16, 16)}
MLP_SHAPES = {"x": (1, 64)}


def _tensors(model):
    return {r.key: numpy_helper.to_array(r.tensor) for r in iter_stored_tensors(model)}


def test_round_trip_runs_and_meets_the_bound(cnn):
    bound = FidelityBound(0.03)
    r = encode_model(cnn, CNN_SHAPES, bound, workers=1)
    assert r.fidelity.meets and r.fidelity.max_rel_error <= 0.03
    assert r.fidelity.min_top1_agreement == 1.0  # softmax output [1, 10] is classifier-like
    assert r.compressed_bytes == len(r.bitstream) < r.original_bytes
    assert r.nnc_ratio < 0.5
    modes = {c.key: c.mode for c in r.tensors}
    assert modes["initializer:w1"] == modes["initializer:w2"] == modes["constant:w3"] == "nnc"
    assert modes["#9.then_branch/constant:branch_bias"] == "nnc"  # subgraph tensor coded too
    assert modes["initializer:flat_shape"] == "raw" and modes["initializer:scales"] == "raw"
    assert modes["initializer:bn_var"] == "raw"  # divisor: sent exactly
    for c in r.tensors:
        assert (c.qp is not None) == (c.mode == "nnc")

    rec = decode_bitstream(r.bitstream, cnn)
    onnx.checker.check_model(rec)
    feeds = [{"x": np.random.default_rng(s).standard_normal((1, 3, 16, 16)).astype(np.float32)} for s in range(3)]
    names, ref = run_model(str(cnn.path), feeds)
    _, out = run_model(rec, feeds)
    assert compare(Reference.of(names, ref), out, bound).meets


def test_raw_tensors_come_back_bit_exactly_and_coded_ones_change(cnn):
    r = encode_model(cnn, CNN_SHAPES, FidelityBound(0.05), workers=1)
    before = _tensors(materialize(cnn))
    after = _tensors(decode_bitstream(r.bitstream, cnn))
    assert before.keys() == after.keys()
    for c in r.tensors:
        a, b = before[c.key], after[c.key]
        assert a.dtype == b.dtype and a.shape == b.shape
        if c.mode == "raw":
            assert a.tobytes() == b.tobytes(), c.key
        else:
            assert not np.array_equal(a, b), c.key  # really quantised
            # dependent quantisation: each of its two quantisers has a spacing of 2 x step
            assert np.max(np.abs(a - b)) <= 2 * c.step, c.key


def test_structural_inputs_are_raw_whatever_their_size(cnn):
    cons = _consumers(cnn.proto)
    refs = {r.key: r for r in iter_stored_tensors(cnn.proto)}
    assert raw_reason(refs["initializer:scales"], cons, min_elements=1).startswith("input 2 of Resize")
    assert raw_reason(refs["initializer:bn_var"], cons, min_elements=1).startswith("input 4 of BatchNormalization")
    assert raw_reason(refs["initializer:w1"], cons, min_elements=1) is None


def test_user_calibration_data_is_used(mlp):
    x = np.random.default_rng(5).standard_normal((6, 64)).astype(np.float32)
    r = encode_model(mlp, MLP_SHAPES, FidelityBound(0.03), calibration={"x": x}, workers=1)
    assert r.calibration == "calibration data" and r.calibration_samples == 6
    with pytest.raises(TransferError, match="lacks input"):
        encode_model(mlp, MLP_SHAPES, calibration={"y": x}, workers=1)


def test_default_calibration_is_synthetic_and_sized_by_the_input(cnn):
    r = encode_model(cnn, CNN_SHAPES, FidelityBound(0.03), workers=1)
    # 3x16x16 inputs: as many samples as hold SYNTHETIC_INPUT_ELEMENTS, at most 16
    assert r.calibration == "synthetic" and r.calibration_samples == 16 and r.fidelity.meets


def _same_tensors(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and ta[k].tobytes() == tb[k].tobytes(), k


def test_written_reconstruction_equals_the_decoded_model(cnn, tmp_path):
    r = encode_model(cnn, CNN_SHAPES, FidelityBound(0.03), workers=1)
    path = write_reconstruction(r.bitstream, cnn, tmp_path)
    written = onnx.load(str(path))  # the model file plus its external data file beside it
    onnx.checker.check_model(str(path))
    _same_tensors(written, decode_bitstream(r.bitstream, cnn))
    feeds = [{"x": np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)}]
    np.testing.assert_array_equal(run_model(str(path), feeds)[1][0][0],
                                  run_model(decode_bitstream(r.bitstream, cnn), feeds)[1][0][0])


def test_tighter_bound_costs_more_bytes(mlp):
    loose = encode_model(mlp, MLP_SHAPES, FidelityBound(0.05), workers=1)
    tight = encode_model(mlp, MLP_SHAPES, FidelityBound(0.005), workers=1)
    assert tight.fidelity.max_rel_error <= 0.005 < 0.05
    assert tight.nnc_bytes > loose.nnc_bytes


def test_single_qp_baseline_and_baselines(mlp):
    r = encode_model(mlp, MLP_SHAPES, FidelityBound(0.03), strategy="single-qp", workers=1)
    assert r.strategy == "single-qp" and r.qp.distinct <= 2 and r.fidelity.meets
    b = encode_model(mlp, MLP_SHAPES, FidelityBound(0.03), baselines=True, workers=1).baselines
    assert b.float32_bytes == 4 * sum(int(np.prod(t.shape)) for t in _tensors(materialize(mlp)).values())
    assert b.single_qp_nnc_bytes and b.single_qp_fidelity.max_rel_error <= 0.03
    if b.zstd19_bytes is not None:
        assert b.uint8_zstd19_bytes < b.zstd19_bytes <= b.float32_bytes * 1.01


def test_same_inputs_same_bitstream(mlp):
    a = encode_model(mlp, MLP_SHAPES, workers=1)
    b = encode_model(mlp, MLP_SHAPES, workers=1)
    assert a.bitstream == b.bitstream


def test_mismatched_model_is_refused(cnn, tmp_path):
    r = encode_model(cnn, CNN_SHAPES, workers=1)
    other = save_and_load(small_cnn(seed=1), tmp_path / "other.onnx")
    with pytest.raises(TransferError, match="belongs to the model with sha256"):
        decode_bitstream(r.bitstream, other)


def test_corrupt_bitstream_is_refused(cnn):
    blob = bytearray(encode_model(cnn, CNN_SHAPES, workers=1).bitstream)
    blob[len(blob) // 2] ^= 0x55
    with pytest.raises(TransferError, match="corrupt|checksum"):
        decode_bitstream(bytes(blob), cnn)
    with pytest.raises(TransferError, match="not an eeki-label NNC bitstream"):
        decode_bitstream(b"PK\x03\x04 not a bitstream at all", cnn)


def test_time_limit(mlp):
    with pytest.raises(LimitExceededError):
        encode_model(mlp, MLP_SHAPES, time_limit_s=1e-6, workers=1)


def _perturbed(model: onnx.ModelProto, keys, rel: float, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for r in iter_stored_tensors(out):
        if r.key in keys:
            a = numpy_helper.to_array(r.tensor)
            a = a + (rng.standard_normal(a.shape) * rel * a.std()).astype(np.float32)
            r.tensor.CopyFrom(numpy_helper.from_array(a.astype(np.float32), r.tensor.name))
    return out


def test_delta_coding_is_at_least_5x_smaller_and_rebuilds_the_new_model(tmp_path):
    base = wide_mlp(seed=3, width=256, layers=6)
    old = save_and_load(base, tmp_path / "old.onnx")
    new = save_and_load(_perturbed(base, {"initializer:w2", "initializer:b2"}, 1e-3), tmp_path / "new.onnx")
    bound = FidelityBound(0.03)
    full = encode_model(new, MLP_SHAPES, bound, workers=1)
    delta = encode_model(new, MLP_SHAPES, bound, previous=old, workers=1)
    assert delta.delta and delta.base_sha256 == old.sha256
    assert full.compressed_bytes >= 5 * delta.compressed_bytes, (full.compressed_bytes, delta.compressed_bytes)
    modes = {c.key: c.mode for c in delta.tensors}
    assert modes["initializer:w2"] == modes["initializer:b2"] == "delta"
    assert modes["initializer:w0"] == "same"
    assert bitstream_info(delta.bitstream)["base_sha256"] == old.sha256

    rec = decode_bitstream(delta.bitstream, old)  # old model + bitstream -> new model
    feeds = [{"x": np.random.default_rng(s).standard_normal((1, 64)).astype(np.float32)} for s in range(4)]
    names, y_new = run_model(str(new.path), feeds)
    _, y_old = run_model(str(old.path), feeds)
    _, y_rec = run_model(rec, feeds)
    # within the bound relative to the update's own effect, so far closer to the new model than the old is
    assert compare(Reference.of(names, y_new, y_old), y_rec, bound).meets
    err_rec = compare(Reference.of(names, y_new), y_rec, bound).max_rel_error
    err_old = compare(Reference.of(names, y_new), y_old, bound).max_rel_error
    assert err_rec < 0.1 * err_old

    with pytest.raises(TransferError, match="update against"):
        decode_bitstream(delta.bitstream, new)
    # written to a folder (the final check's way): the same tensors, unchanged ones included
    (tmp_path / "rec").mkdir()
    _same_tensors(onnx.load(str(write_reconstruction(delta.bitstream, old, tmp_path / "rec"))), rec)


def test_unchanged_model_delta_is_tiny(tmp_path, mlp):
    again = save_and_load(wide_mlp(), tmp_path / "same.onnx")
    d = encode_model(again, MLP_SHAPES, previous=mlp, workers=1)
    assert d.nnc_bytes < 200 and all(c.mode == "same" for c in d.tensors)
    assert {e.mode for e in unpack(d.bitstream).entries} == {"same"}


def test_the_search_quantising_in_worker_processes_gives_the_same_bitstream(mlp, monkeypatch):
    """The closed loop's quantisation of large tensors in forked workers (row chunks) is the same
    codec call per chunk as in one process: same QPs, same bitstream."""
    from eeki_label.transfer import _nncore

    monkeypatch.setattr(_nncore, "CHUNK_ELEMENTS", 4096)
    monkeypatch.setattr(_nncore, "PARALLEL_MIN_ELEMENTS", 1)
    pools = []
    real_pool = _nncore._pool_map

    def pool_map(fn, jobs, workers):
        out = real_pool(fn, jobs, workers)
        pools.append((fn.__name__, out is not None))
        return out

    monkeypatch.setattr(_nncore, "_pool_map", pool_map)
    bound = FidelityBound(0.05, 0.0)
    one = encode_model(mlp, MLP_SHAPES, bound, workers=1)
    assert not pools
    two = encode_model(mlp, MLP_SHAPES, bound, workers=2)
    assert ("_quantize_worker", True) in pools  # the workers ran
    assert max(len(_nncore.row_chunks(c.shape)) for c in one.tensors if c.mode == "nnc") > 2
    assert two.bitstream == one.bitstream and two.fidelity.meets
