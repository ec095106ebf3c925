"""The nncodec driver: quantisation, spliced encoding, decoding, failure mapping."""

from __future__ import annotations

import numpy as np
import pytest

from eeki_label.errors import TransferError
from eeki_label.transfer import _nncore as nc


def _tensors(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "t0": (rng.standard_normal((32, 16, 3, 3)) * 0.05).astype(np.float32),
        "t1": (rng.standard_normal(32) * 0.1).astype(np.float32),
        "t2": (rng.standard_normal((64, 128)) * 0.02).astype(np.float32),
    }


def test_step_and_qp_are_inverse():
    for qp in (-80, -38, -5, 0, 7):
        assert nc.qp_for_step(nc.step_for_qp(qp)) == qp
    assert nc.step_for_qp(0) == 1.0
    assert nc.step_for_qp(-4) == 0.5  # four QP per octave


def test_quantize_dequantize_error_follows_step():
    x = _tensors()["t2"]
    errs = []
    for qp in (-50, -40, -30):
        lv, used = nc.quantize(x, qp)
        assert used == qp and lv.dtype == np.int32 and lv.shape == x.shape
        rec = nc.dequantize(lv, used)
        errs.append(float(np.sqrt(np.mean((rec - x) ** 2))))
        assert errs[-1] < nc.step_for_qp(qp)
    assert errs[0] < errs[1] < errs[2]


def test_spliced_encode_equals_one_coder_call_and_decodes_exactly():
    from nncodec.nnc_core import coder

    items = [nc.CodedTensor(k, *nc.quantize(v, -36)) for k, v in _tensors().items()]
    bs, sizes = nc.encode(items)
    assert len(bs) == len(nc.header_units()) + sum(sizes)
    # the same tensors through one nnc_core.coder.encode call, as nncodec.nnc.compress would do
    info = nc._model_info([(it.name, it.levels.shape) for it in items], 0)
    ref, _ = coder.encode(enc_info=nc._enc_info(), model_info=info, approx_data=nc._approx_data(items))
    assert bytes(ref) == bs
    out = nc.decode(bs)
    for it in items:
        np.testing.assert_array_equal(out[it.name], nc.dequantize(it.levels, it.qp))


def test_parallel_encode_and_decode_match_serial(monkeypatch):
    monkeypatch.setattr(nc, "PARALLEL_MIN_ELEMENTS", 1)
    items = [nc.CodedTensor(k, *nc.quantize(v, -30)) for k, v in _tensors(1).items()]
    serial, _ = nc.encode(items, workers=1)
    parallel, _ = nc.encode(items, workers=2)
    assert parallel == serial
    a, b = nc.decode(serial, workers=1), nc.decode(serial, workers=2, total_elements=10**9)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("workers", [1, 2])
def test_streamed_decode_matches_decode(monkeypatch, workers):
    # small chunks and groups: tensors split over several units, and units over several groups
    monkeypatch.setattr(nc, "CHUNK_ELEMENTS", 2000)
    monkeypatch.setattr(nc, "STREAM_GROUP_BYTES", 3000)
    monkeypatch.setattr(nc, "PARALLEL_MIN_ELEMENTS", 1)
    items = [nc.CodedTensor(k, *nc.quantize(v, -34)) for k, v in _tensors(2).items()]
    bs, _ = nc.encode(items, workers=1)
    whole = nc.decode(bs)
    streamed = list(nc.iter_decode(bs, workers=workers))
    assert [k for k, _ in streamed] == [it.name for it in items]  # stream order
    assert sorted(whole) == [it.name for it in items]
    for k, v in streamed:
        np.testing.assert_array_equal(v, whole[k])


def test_realiser_levels_equal_the_quantisers():
    from eeki_label.transfer.search import Candidate, _Realiser, compact_levels

    t = _tensors(3)
    cands = [Candidate(k, (lambda v=v: v)) for k, v in t.items()]
    realise = _Realiser(cands)
    qps = {"t0": -40, "t1": -52, "t2": -30}
    used, recon = realise(qps)
    for k, v in t.items():
        lv, u = nc.quantize(v, qps[k])
        np.testing.assert_array_equal(recon[k], nc.dequantize(lv, u).reshape(v.shape))
    levels, used2 = realise.quantise(qps, final=True)
    assert used2 == used and not realise.state
    for k, v in t.items():
        lv, _ = nc.quantize(v, qps[k])
        assert levels[k].dtype.itemsize <= 2  # compact
        np.testing.assert_array_equal(levels[k], lv)
    assert compact_levels(np.array([0, 40000], np.int32)).dtype == np.int32
    assert compact_levels(np.array([-128, 127], np.int32)).dtype == np.int8


def test_truncated_or_garbage_stream_is_a_transfer_error():
    items = [nc.CodedTensor("t0", *nc.quantize(_tensors()["t0"], -30))]
    bs, _ = nc.encode(items)
    with pytest.raises(TransferError):
        nc.decode(bs[:-7])
    with pytest.raises(TransferError):
        nc.split_units(b"\x80")
    with pytest.raises(TransferError):
        nc.decode(bs[: len(nc.header_units())] [:5])


def test_codec_systemexit_becomes_transfer_error():
    with pytest.raises(TransferError, match="refused"):
        with nc._guard("do something"):
            raise SystemExit("bad input")


@pytest.mark.parametrize("qp", [-34, 30])
def test_parallel_quantize_matches_serial(monkeypatch, qp):
    """Row chunks quantised in worker processes give the same levels and QP as one process (also when
    a chunk makes the codec raise the QP, at qp 30 with large values: every chunk is redone)."""
    monkeypatch.setattr(nc, "CHUNK_ELEMENTS", 2000)
    monkeypatch.setattr(nc, "PARALLEL_MIN_ELEMENTS", 1)
    rng = np.random.default_rng(5)
    x = (rng.laplace(size=(64, 100)) * (1e9 if qp > 0 else 0.05)).astype(np.float32)
    x[-1] *= 1e3 if qp > 0 else 1  # one chunk with larger values than the others
    assert len(nc.row_chunks(x.shape)) > 2
    serial = nc.quantize(x, qp, workers=1)
    parallel = nc.quantize(x, qp, workers=2)
    assert parallel[1] == serial[1]
    np.testing.assert_array_equal(parallel[0], serial[0])


@pytest.mark.parametrize("param_opt", [True, False])
def test_skipping_the_coders_entry_point_pass_keeps_the_bitstream(param_opt):
    """The stock coder decodes each unit again for block-row entry points; with scan order 0 there are
    none, and the units written without that pass are byte-identical to the stock coder's."""
    from nncodec.nnc_core import coder
    from nncodec.nnc_core.coder import baseline

    stock = baseline.decodeAndCreateEPs
    for it in [nc.CodedTensor(k, *nc.quantize(v, -38)) for k, v in _tensors(3).items()]:
        info = nc._model_info([(it.name, tuple(it.levels.shape))], 0)
        ref, _ = coder.encode(enc_info=nc._enc_info(param_opt), model_info=info, approx_data=nc._approx_data([it]))
        (unit,) = nc._encode_group([it], 0, param_opt)
        assert bytes(ref) == nc.header_units() + unit
    assert baseline.decodeAndCreateEPs is stock  # restored
