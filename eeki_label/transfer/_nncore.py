"""Thin driver for the NNC reference codec (``nncodec.nnc_core``, ISO/IEC 15938-17).

Only ``nncodec.nnc_core`` and its compiled ``deepCABAC`` extension are used: numpy in, numpy out,
no torch. ``nncodec.nnc`` / ``nncodec.framework`` are never imported (they pull torch and friends).
The import is lazy so that ``eeki-label --help`` and the scenario arithmetic never pay for it.

What this module adds over calling ``nnc_core`` the way ``nncodec.nnc.compress`` does:

* **Quantisation is separate from entropy coding.** :func:`quantize` runs the codec's own quantiser
  (uniform or dependent quantisation, ``deepCABAC.quantLayer``) and :func:`dequantize` its exact
  reconstruction, so a search can evaluate a quantisation without entropy-coding it.
* **One tensor per call to the coder, spliced into one bitstream.** ``nnc_core.coder.encode`` deep-copies
  every parameter for every NNR unit it writes (quadratic in the tensor count) and is single-threaded.
  :func:`encode` codes each tensor on its own (optionally in worker processes) and splices the
  compressed data units behind one start unit, model parameter set and topology unit. The result is
  byte-identical to coding all tensors in one call (a test checks this) and decodes with the stock
  decoder.
* **No second decode while encoding.** ``nnc_core.coder.encode`` decodes every unit it writes again
  to collect block-row entry points, which the scan order used here (0) never has: that pass,
  as costly as the coding, is skipped (:func:`_without_entry_point_pass`; byte-identical output).
* **Quantisation of large tensors in parallel** (:func:`quantize` ``workers``): row chunks in forked
  worker processes, the same codec call per chunk as in one process.
* **No files, no prints, no SystemExit.** Nothing is written to the working directory; the codec's
  ``print`` output is swallowed; ``SystemExit``/``AssertionError`` and friends from the codec become
  :class:`~eeki_label.errors.TransferError`.

Units: sizes in bytes; ``qp`` is the NNC quantisation parameter at ``QP_DENSITY`` = 2, i.e. the step
size doubles every 4 QP (``step = (4 + qp % 4) * 2 ** (qp // 4 - 2)``).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from eeki_label.errors import TransferError

#: NNC ``qp_density``: 2 -> four QP values per octave of step size (the nncodec default).
QP_DENSITY = 2
#: CABAC unary binarisation length minus one. nncodec's default is 10; at the step sizes a fidelity
#: bound of a few per cent leads to, 3 gave 0.4 % smaller and 25 % faster streams on the PP-OCRv4
#: detector's weights (and 1 slightly smaller still). The value is signalled in every data unit.
CABAC_UNARY_LENGTH_MINUS1 = 3
#: Tensors with more elements than this are quantised and coded as several NNC tensors of whole rows
#: (first axis), so that the single-threaded coder can work on them in parallel. The chunks must be
#: quantised one by one, exactly as they are coded: levels cut out of a tensor quantised as a whole
#: do not survive the entropy coder (measured with nncodec 2.1.3), although their reconstruction
#: would be the same.
CHUNK_ELEMENTS = 1 << 19


def row_chunks(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Row ranges [start, stop) along the first axis in which a tensor is quantised and coded."""
    n = int(np.prod(shape)) if len(shape) else 1
    if len(shape) < 2 or n <= CHUNK_ELEMENTS or shape[0] < 2:
        return [(0, shape[0] if len(shape) else 1)]
    rows = max(1, CHUNK_ELEMENTS // max(1, n // shape[0]))
    return [(a, min(a + rows, shape[0])) for a in range(0, shape[0], rows)]
#: Smallest and largest QP we ask for (iae_v(8) signalling, int32 safety margins).
QP_MIN = -160
QP_MAX = 40
#: Element count above which :func:`encode` / :func:`decode` use worker processes (if workers > 1).
PARALLEL_MIN_ELEMENTS = 1_500_000


def _core():
    """Import ``nncodec.nnc_core`` lazily; a missing or broken install becomes a TransferError."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from nncodec.extensions import deepCABAC
            from nncodec.nnc_core import approximator, coder, hls, nnr_model
            from nncodec.nnc_core.coder import syntax_compiler
    except Exception as e:  # ImportError, or a broken compiled extension
        raise TransferError(
            f"the NNC codec (PyPI package nncodec, module nncodec.nnc_core) is not importable: {e}; "
            "install it with: pip install --no-deps nncodec==2.1.3"
        ) from e
    return approximator, coder, hls, nnr_model, syntax_compiler, deepCABAC


def available() -> bool:
    """True if the codec can be imported."""
    try:
        _core()
    except TransferError:
        return False
    return True


@contextlib.contextmanager
def _guard(what: str):
    """Swallow the codec's prints and turn its failures into a TransferError."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except TransferError:
        raise
    except SystemExit as e:  # nncodec reports bad input with SystemExit
        raise TransferError(f"NNC codec refused to {what}: {e.code}") from e
    except (AssertionError, ValueError, TypeError, KeyError, IndexError, RuntimeError, MemoryError,
            OverflowError, StopIteration, NotImplementedError) as e:
        raise TransferError(f"NNC codec failed to {what}: {type(e).__name__}: {e}") from e


def step_for_qp(qp: int) -> float:
    """Quantiser step size for ``qp`` at ``QP_DENSITY`` (the codec's own formula)."""
    k = 1 << QP_DENSITY
    mul = k + (int(qp) & (k - 1))
    shift = int(qp) >> QP_DENSITY
    return float(mul * 2.0 ** (shift - QP_DENSITY))


def qp_for_step(step: float) -> int:
    """The QP whose step is closest to ``step`` (in log scale); clamped to [QP_MIN, QP_MAX]."""
    if not np.isfinite(step) or step <= 0:
        return QP_MIN
    qp = int(round(4 * np.log2(step)))
    return int(min(max(qp, QP_MIN), QP_MAX))


# --------------------------------------------------------------------------------------------
# Quantisation (no entropy coding)


def _quantize_rows(arr: np.ndarray, a: int, b: int, qp: int, dq: bool) -> tuple[np.ndarray, int]:
    """Rows [a, b) of ``arr`` quantised in one codec call: (int32 levels, QP used)."""
    _, _, _, _, _, deepCABAC = _core()
    part = np.zeros(arr[a:b].shape, dtype=np.int32)
    enc = deepCABAC.Encoder()
    enc.initCtxModels(CABAC_UNARY_LENGTH_MINUS1, 0)
    used = int(enc.quantLayer(np.ascontiguousarray(arr[a:b]), part, 1 if dq else 0, QP_DENSITY, qp, 0,
                              CABAC_UNARY_LENGTH_MINUS1, 0, 1))
    return part, used


#: The tensor being quantised, visible to forked workers without pickling it (set only around a pool).
_FORK_ARRAY: "np.ndarray | None" = None


def _quantize_worker(args: tuple[tuple[tuple[int, int], ...], int, bool]) -> list[tuple[int, int, np.ndarray, int]]:
    ranges, qp, dq = args
    out = []
    with _guard("quantise a tensor"):
        for a, b in ranges:
            part, used = _quantize_rows(_FORK_ARRAY, a, b, qp, dq)
            lo, hi = (int(part.min()), int(part.max())) if part.size else (0, 0)
            small = np.int8 if -128 <= lo and hi <= 127 else (np.int16 if -32768 <= lo and hi <= 32767 else np.int32)
            out.append((a, b, part.astype(small, copy=False), used))  # narrower through the pipe
    return out


def quantize(values: np.ndarray, qp: int, dq: bool = True, workers: int = 1) -> tuple[np.ndarray, int]:
    """Quantise float32 ``values`` with the codec's quantiser at ``qp``.

    Returns ``(levels, qp_used)``: int32 quantisation levels of the same shape and the QP the codec
    actually used (it raises QP when levels would overflow int32; the largest over the row chunks,
    which are then re-quantised at that QP). ``dq`` selects dependent quantisation (two interleaved
    quantisers with a trellis search, the NNC default). Large tensors are quantised in the row
    chunks of :func:`row_chunks`, as :func:`encode` will code them; with ``workers`` > 1 and more
    than :data:`PARALLEL_MIN_ELEMENTS` elements the chunks are quantised in forked worker processes
    (each chunk is its own codec call either way: the levels are the same).
    """
    arr = np.ascontiguousarray(values, dtype=np.float32)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    chunks = row_chunks(arr.shape)
    levels = np.zeros(arr.shape, dtype=np.int32)
    qp = int(qp)
    parallel = workers > 1 and len(chunks) > 1 and arr.size >= PARALLEL_MIN_ELEMENTS
    with _guard("quantise a tensor"):
        for _ in range(2):
            used_max = qp
            parts = None
            if parallel:
                groups = [tuple(chunks[i::min(workers, len(chunks))]) for i in range(min(workers, len(chunks)))]
                global _FORK_ARRAY
                _FORK_ARRAY = arr
                try:
                    parts = _pool_map(_quantize_worker, [(g, qp, dq) for g in groups], workers)
                finally:
                    _FORK_ARRAY = None
            if parts is not None:
                for group in parts:
                    for a, b, part, used in group:
                        levels[a:b] = part
                        used_max = max(used_max, used)
            else:
                for a, b in chunks:
                    part, used = _quantize_rows(arr, a, b, qp, dq)
                    levels[a:b] = part
                    used_max = max(used_max, used)
            if used_max == qp:
                break
            qp = used_max  # a chunk needed a coarser QP: redo all chunks at it
    return levels, qp


def dequantize(levels: np.ndarray, qp: int) -> np.ndarray:
    """Exact decoder-side reconstruction (float32) of int32 ``levels`` coded at ``qp``."""
    _, _, _, _, _, deepCABAC = _core()
    lv = np.ascontiguousarray(levels, dtype=np.int32)
    out = np.zeros(lv.shape, dtype=np.float32)
    with _guard("dequantise a tensor"):
        deepCABAC.Decoder().dequantLayer(out, lv, QP_DENSITY, int(qp), 0)
    return out


# --------------------------------------------------------------------------------------------
# Entropy coding: one tensor per coder call, spliced into one bitstream


@dataclass(frozen=True)
class CodedTensor:
    """One tensor for :func:`encode`: its name inside the NNC bitstream, levels and QP."""

    name: str
    levels: np.ndarray
    qp: int
    dq: bool = True


#: Streams with more elements than this are coded without CABAC parameter optimisation (nncodec's
#: ``param_opt_flag``): measured on the PP-OCRv4 detector, it costs 0.8 % in size and halves the
#: entropy-coding time, which matters from ResNet18 size on.
PARAM_OPT_MAX_ELEMENTS = 4_000_000


def _enc_info(param_opt: bool = True) -> dict:
    return {
        "cabac_unary_length_minus1": CABAC_UNARY_LENGTH_MINUS1,
        "param_opt_flag": bool(param_opt),
        "partial_data_counter": 0,
        "general_profile_idc": 1,
        "mps_parent_signalling_enabled_flag": 0,
        "parent_node_id_present_flag": 0,
        "node_id_present_flag": 0,
    }


def _model_info(names_shapes: Sequence[tuple[str, tuple[int, ...]]], first_index: int) -> dict:
    _, _, _, nnr_model, _, _ = _core()
    info = {
        "parameter_type": {}, "parameter_dimensions": {}, "parameter_index": {}, "block_identifier": {},
        "original_size": 0,
        "topology_storage_format": nnr_model.TopologyStorageFormat.NNR_TPL_UNREC,
        "topology_compression_format": nnr_model.TopologyCompressionFormat.NNR_PT_RAW,
    }
    for i, (name, shape) in enumerate(names_shapes):
        info["parameter_type"][name] = "weight" if len(shape) > 1 else "unspecified"
        info["parameter_dimensions"][name] = tuple(shape)
        info["parameter_index"][name] = first_index + i
        info["original_size"] += int(np.prod(shape)) * 4
    return info


def _approx_data(items: Sequence[CodedTensor]) -> dict:
    data = {
        "approx_method": {}, "qp_density": np.int32(QP_DENSITY), "qp": {}, "dq_flag": {},
        "decomposition_rank": {}, "g_number_of_rows": {}, "scan_order": {}, "parameters": {},
        "compressed_parameter_types": {}, "codebooks": {}, "codebooks_egk": {}, "codebook_zero_offsets": {},
    }
    for it in items:
        lv = np.ascontiguousarray(it.levels, dtype=np.int32)
        data["parameters"][it.name] = lv
        data["approx_method"][it.name] = "uniform"
        data["qp"][it.name] = np.int32(it.qp)
        data["dq_flag"][it.name] = 1 if it.dq else 0
        if lv.ndim > 1:
            data["scan_order"][it.name] = np.int32(0)
    return data


def header_units() -> bytes:
    """Start unit + model parameter set + topology unit, exactly as ``nnc_core.coder.encode`` writes them."""
    _, _, hls, nnr_model, syntax_compiler, _ = _core()
    with _guard("write the bitstream header"):
        info = _enc_info()
        bs = hls.encode_nnr_unit_with_size_dummy(syntax_compiler.compile_start_unit(info["general_profile_idc"]))
        bs, _ = hls.update_nnr_unit_size(bs)
        mps = syntax_compiler.compile_mps({"qp_density": np.int32(QP_DENSITY)}, True, info["general_profile_idc"], 0, 0)
        u, _ = hls.update_nnr_unit_size(hls.encode_nnr_unit_with_size_dummy(mps))
        bs.extend(u)
        tpl = syntax_compiler.compile_tpl({
            "topology_storage_format": nnr_model.TopologyStorageFormat.NNR_TPL_UNREC,
            "topology_compression_format": nnr_model.TopologyCompressionFormat.NNR_PT_RAW,
        })
        u, _ = hls.update_nnr_unit_size(hls.encode_nnr_unit_with_size_dummy(tpl))
        bs.extend(u)
    return bytes(bs)


@contextlib.contextmanager
def _without_entry_point_pass():
    """``nnc_core.coder.encode`` decodes every data unit it has just written once more, only to
    collect the CABAC entry points of block-row scans (``baseline.decodeAndCreateEPs``). With
    ``scan_order`` 0, the only scan written here, that list is always empty, and the pass costs
    about as much as the entropy coding itself: skip it for those units (the bitstream is
    byte-identical, tests/transfer/test_nncore.py checks it against the stock coder). Units with
    another scan order still take the stock pass."""
    from nncodec.nnc_core.coder import baseline

    stock = baseline.decodeAndCreateEPs

    def entry_points(decoder, approx_data, approx_param_base, param, ndu, *rest):
        if int(ndu.get("scan_order", 0)) == 0:
            return np.zeros(0, dtype=np.uint64)
        return stock(decoder, approx_data, approx_param_base, param, ndu, *rest)

    baseline.decodeAndCreateEPs = entry_points
    try:
        yield
    finally:
        baseline.decodeAndCreateEPs = stock


def _encode_group(items: Sequence[CodedTensor], first_index: int, param_opt: bool = True) -> list[bytes]:
    """Code ``items`` one coder call each; returns each tensor's compressed data unit(s)."""
    _, coder, _, _, _, _ = _core()
    head = header_units()
    out = []
    for i, it in enumerate(items):
        info = _model_info([(it.name, tuple(it.levels.shape))], first_index + i)
        with _guard(f"encode tensor {it.name}"), _without_entry_point_pass():
            bs, _ = coder.encode(enc_info=_enc_info(param_opt), model_info=info, approx_data=_approx_data([it]))
        bs = bytes(bs)
        if not bs.startswith(head):
            raise TransferError("NNC coder wrote an unexpected bitstream header")
        out.append(bs[len(head):])
    return out


#: The pieces being coded, visible to forked workers without pickling them (set only around a pool).
_FORK_PIECES: list = []


def _encode_worker(args: tuple[int, int, bool]) -> list[bytes]:
    a, b, param_opt = args
    return _encode_group(_FORK_PIECES[a:b], a, param_opt)


def _split_work(sizes: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """Contiguous index ranges with roughly equal element counts."""
    total = sum(sizes)
    bounds, start, acc = [], 0, 0
    for i, n in enumerate(sizes):
        acc += n
        if acc >= total * (len(bounds) + 1) / parts and len(bounds) < parts - 1:
            bounds.append((start, i + 1))
            start = i + 1
    bounds.append((start, len(sizes)))
    return [b for b in bounds if b[0] < b[1]]


def _pool_map(fn, jobs: list, workers: int) -> list | None:
    """``fn`` over ``jobs`` in worker processes; None if no pool could run (the caller then works
    serially). A TransferError raised inside a worker is re-raised."""
    import multiprocessing
    import sys
    from concurrent.futures.process import BrokenProcessPool

    # fork: the children inherit the levels (``_FORK_PIECES``) without pickling and never re-import
    # ``__main__`` (an unguarded script would otherwise run again in each child). Children only run
    # the codec, not onnxruntime, so threads of the parent's runtime sessions are not touched.
    if not sys.platform.startswith("linux"):
        return None
    ctx = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            return list(pool.map(fn, jobs))
    except TransferError:
        raise
    except (BrokenProcessPool, RuntimeError, OSError):
        # e.g. an unguarded ``__main__`` that cannot be re-imported, or no fork server: go serial
        return None


def default_workers() -> int:
    """Worker processes for the coder: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _chunks(it: CodedTensor) -> list[CodedTensor]:
    ranges = row_chunks(tuple(it.levels.shape))
    if len(ranges) == 1:
        return [it]
    return [CodedTensor(f"{it.name}.{j}", np.ascontiguousarray(it.levels[a:b]), it.qp, it.dq)
            for j, (a, b) in enumerate(ranges)]


def encode(items: Sequence[CodedTensor], workers: int = 1) -> tuple[bytes, list[int]]:
    """One NNC bitstream holding ``items`` in order; also each item's coded size in bytes.

    Items larger than :data:`CHUNK_ELEMENTS` are coded as row chunks named ``<name>.<j>``
    (:func:`decode` joins them again). ``workers`` > 1 codes groups of chunks in parallel processes
    when they hold more than :data:`PARALLEL_MIN_ELEMENTS` elements (the codec is single-threaded).
    Item names must not contain ``.``.
    """
    items = list(items)
    if any("." in it.name for it in items):
        raise TransferError("NNC tensor names must not contain '.'")
    head = header_units()
    pieces: list[CodedTensor] = []
    owner: list[int] = []
    for k, it in enumerate(items):
        for c in _chunks(it):
            pieces.append(c)
            owner.append(k)
    sizes = [int(c.levels.size) for c in pieces]
    param_opt = sum(sizes) <= PARAM_OPT_MAX_ELEMENTS
    units = None
    if workers > 1 and sum(sizes) >= PARALLEL_MIN_ELEMENTS and len(pieces) > 1:
        ranges = _split_work(sizes, workers * 3)
        global _FORK_PIECES
        _FORK_PIECES = pieces  # forked workers read their pieces from here: no copies through pipes
        try:
            parts = _pool_map(_encode_worker, [(a, b, param_opt) for a, b in ranges], workers)
        finally:
            _FORK_PIECES = []
        if parts is not None:
            units = [u for part in parts for u in part]
    if units is None:
        units = _encode_group(pieces, 0, param_opt)
    per_item = [0] * len(items)
    for k, u in zip(owner, units):
        per_item[k] += len(u)
    return head + b"".join(units), per_item


# --------------------------------------------------------------------------------------------
# Decoding


def split_units(bitstream: bytes) -> list[bytes]:
    """Split an NNC bitstream into its NNR units (each starts with its own ``nnr_unit_size``)."""
    units, pos = [], 0
    n = len(bitstream)
    while pos < n:
        if pos + 2 > n:
            raise TransferError("NNC bitstream is truncated (incomplete NNR unit size)")
        if bitstream[pos] & 0x80:
            if pos + 4 > n:
                raise TransferError("NNC bitstream is truncated (incomplete NNR unit size)")
            size = int.from_bytes(bitstream[pos:pos + 4], "big") & 0x7FFFFFFF
        else:
            size = int.from_bytes(bitstream[pos:pos + 2], "big") & 0x7FFF
        if size < 2 or pos + size > n:
            raise TransferError("NNC bitstream is truncated or corrupt (NNR unit size out of range)")
        units.append(bytes(bitstream[pos:pos + size]))
        pos += size
    return units


def _decode_levels(bitstream: bytes) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Decode to (levels, qps) without reconstruction."""
    _, coder, _, _, _, _ = _core()
    info = {
        "parameter_type": {}, "parameter_dimensions": {}, "parameter_index": {}, "block_identifier": {},
        "topology_storage_format": None, "topology_compression_format": None,
        "performance_maps": {"mps": {}, "lps": {}},
        "performance_map_flags": {k: {} for k in (
            "mps_sparsification_flag", "lps_sparsification_flag", "mps_pruning_flag", "lps_pruning_flag",
            "mps_unification_flag", "lps_unification_flag", "mps_decomposition_performance_map_flag",
            "lps_decomposition_performance_map_flag")},
    }
    with _guard("decode the bitstream"):
        data = coder.decode(bytearray(bitstream), info, hls_stats={})
    levels = {k: v for k, v in data["parameters"].items()}
    qps = {k: int(data["qp"][k]) for k in levels if k in data.get("qp", {})}
    for k, v in levels.items():
        if data["approx_method"].get(k) != "uniform":
            raise TransferError(f"NNC bitstream tensor {k!r} uses an approximation method we do not reconstruct")
    return levels, qps


def _decode_worker(bitstream: bytes) -> dict[str, np.ndarray]:
    levels, qps = _decode_levels(bitstream)
    out = {}
    for k in list(levels):  # dequantise one tensor at a time, dropping its levels at once
        out[k] = dequantize(levels.pop(k), qps[k])
    return out


def _join_chunks(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    chunked: dict[str, dict[int, np.ndarray]] = {}
    for name, arr in parts.items():
        base, dot, idx = name.partition(".")
        if not dot:
            out[name] = arr
            continue
        try:
            chunked.setdefault(base, {})[int(idx)] = arr
        except ValueError as e:
            raise TransferError(f"NNC bitstream has a malformed tensor name {name!r}") from e
    for base in list(chunked):
        pieces = chunked.pop(base)
        if base in out or sorted(pieces) != list(range(len(pieces))):
            raise TransferError(f"NNC bitstream has inconsistent chunks for tensor {base!r}")
        out[base] = np.concatenate([pieces.pop(j) for j in range(len(pieces))], axis=0)
    return out


def decode(bitstream: bytes, workers: int = 1, total_elements: int | None = None) -> dict[str, np.ndarray]:
    """Decode an NNC bitstream to float32 tensors by name (the codec's exact reconstruction).

    With ``workers`` > 1 and a large stream, groups of data units are decoded in parallel (each group
    is itself a valid NNC bitstream: the shared header plus some data units).
    """
    units = split_units(bitstream)
    if len(units) < 3:
        raise TransferError("NNC bitstream has no start unit, parameter set and topology unit")
    head, data_units = b"".join(units[:3]), units[3:]
    big = total_elements is None or total_elements >= PARALLEL_MIN_ELEMENTS
    if workers > 1 and big and len(data_units) > 1:
        ranges = _split_work([len(u) for u in data_units], workers)
        parts = _pool_map(_decode_worker, [head + b"".join(data_units[a:b]) for a, b in ranges], workers)
        if parts is not None:
            out: dict[str, np.ndarray] = {}
            for d in parts:
                out.update(d)
            return _join_chunks(out)
    return _join_chunks(_decode_worker(bytes(bitstream)))


#: :func:`iter_decode` decodes groups of about this many compressed bytes at a time.
STREAM_GROUP_BYTES = 1 << 20


def iter_decode(bitstream: bytes, workers: int = 1, total_elements: int | None = None):
    """Like :func:`decode`, but yields ``(name, float32 array)`` one tensor at a time, in stream
    order, decoding groups of about :data:`STREAM_GROUP_BYTES` compressed bytes (in worker processes
    when ``workers`` > 1 and the stream is large). Memory: the tensors of the groups in flight, not
    the whole model."""
    units = split_units(bitstream)
    if len(units) < 3:
        raise TransferError("NNC bitstream has no start unit, parameter set and topology unit")
    head, data_units = b"".join(units[:3]), units[3:]
    groups, start, acc = [], 0, 0
    for i, u in enumerate(data_units):
        acc += len(u)
        if acc >= STREAM_GROUP_BYTES or i == len(data_units) - 1:
            groups.append((start, i + 1))
            start, acc = i + 1, 0
    big = total_elements is None or total_elements >= PARALLEL_MIN_ELEMENTS
    jobs = (head + b"".join(data_units[a:b]) for a, b in groups)
    results = None
    if workers > 1 and big and len(groups) > 1:
        results = _pool_imap(_decode_worker, list(jobs), workers)
    if results is None:
        results = (_decode_worker(job) for job in jobs)
    pending: dict[str, np.ndarray] = {}  # chunks of a tensor whose last chunk has not come yet
    pending_base = None
    for part in results:
        for name in list(part):
            arr = part.pop(name)
            base, dot, idx = name.partition(".")
            if pending and base != pending_base:
                yield from _join_chunks(pending).items()
                pending = {}
            if dot:
                pending[name], pending_base = arr, base
            else:
                yield name, arr
    if pending:
        yield from _join_chunks(pending).items()


def _pool_imap(fn, jobs: list, workers: int):
    """Results of ``fn`` over ``jobs`` in order, from forked worker processes, as they come (an
    iterator), or None when no pool can run here (see :func:`_pool_map`)."""
    import multiprocessing
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        pool = multiprocessing.get_context("fork").Pool(min(workers, len(jobs)))
    except (RuntimeError, OSError):
        return None

    def gen():
        try:
            yield from pool.imap(fn, jobs)
        finally:
            pool.terminate()
            pool.join()

    return gen()
