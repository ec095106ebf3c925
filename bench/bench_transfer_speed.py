#!/usr/bin/env python3
"""How much the NNC transfer stage costs, side by side in one run (issue #16 targets).

Prints a table and writes bench/results/transfer_speed.json. Every figure comes from a fresh child
process (wall clock; ``ru_maxrss`` of that child for peak memory):

* **PP-OCRv4 detector** (../shared/models/ppocr_v4_det.onnx, 640x640 by default): ``eeki-label assess
  MODEL --json X`` with the transfer stage (an empty content cache: the coding runs) against the same
  with ``--no-transfer``. Target: ratio <= 4.
* **Content cache**: the same default ``assess`` again on the filled cache (a hit: the stored
  bitstream is checked and its decoded model re-checked against the bound), against the miss; the
  two transfer sections (``--issued-at`` fixed) must be byte-identical (the runtime profile's
  measured latencies differ between any two runs).
* **VGG16-sized model** (138.4 M parameters, 553 MB float32; a VGG16-shaped graph built here with
  realistically distributed random weights like bench_nnc.py's resnet18_like): the whole transfer
  stage (``assess_transfer``: QP search, entropy coding, decoding, the final onnxruntime check)
  against one single-QP nncodec encode of the same weights (the codec's quantiser and entropy coder
  through eeki_label.transfer._nncore, the same worker processes, rank >= 2 tensors at the stage's
  median QP, rank-1 at nncodec's default -75; also with the stock coder's entry-point pass, for
  reference). Target: ratio <= 1.5. Peak RSS of the stage's child
  over the float32 weight bytes: target <= 4. And the stage on a filled cache (hit) against the miss.

Usage: python bench/bench_transfer_speed.py [--skip-vgg] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "models"
RESULTS = ROOT / "bench" / "results"
ISSUED_AT = "2026-01-01T00:00:00+00:00"


def vgg16_like(path: Path, seed: int = 0, classes: int = 1000) -> Path:
    """A VGG16-shaped ONNX graph (13 conv + 3 fully connected layers, 138.4 M parameters) with
    realistic random weights: Laplace-distributed, He-scaled, per-channel scales as after batch-norm
    folding for the convolutions."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    x, cin, hw = "input", 3, 224
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    for k, v in enumerate(cfg):
        if v == "M":
            nodes.append(helper.make_node("MaxPool", [x], [f"p{k}"], kernel_shape=[2, 2], strides=[2, 2]))
            x, hw = f"p{k}", hw // 2
            continue
        name = f"conv{k}"
        w = rng.laplace(size=(v, cin, 3, 3)) * np.sqrt(1.0 / (cin * 9))
        w *= rng.lognormal(0.0, 0.6, size=(v, 1, 1, 1))
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}.w"))
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(v)).astype(np.float32), f"{name}.b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"]))
        x, cin = f"{name}.r", v
    nodes.append(helper.make_node("Flatten", [x], ["flat"]))
    dims = [cin * hw * hw, 4096, 4096, classes]
    prev = "flat"
    for i in range(3):
        w = (rng.laplace(size=(dims[i + 1], dims[i])) * np.sqrt(1.0 / dims[i])).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"fc{i}.w"))
        inits.append(numpy_helper.from_array((0.01 * rng.standard_normal(dims[i + 1])).astype(np.float32), f"fc{i}.b"))
        out = "output" if i == 2 else f"fc{i}.y"
        nodes.append(helper.make_node("Gemm", [prev, f"fc{i}.w", f"fc{i}.b"], [out], transB=1))
        if i < 2:
            nodes.append(helper.make_node("Relu", [out], [f"fc{i}.r"]))
            prev = f"fc{i}.r"
    graph = helper.make_graph(
        nodes, "vgg16_like", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------------------------
# Child-process measurements (python bench_transfer_speed.py --child KIND ARGS... prints one JSON line)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children (the codec's workers):
    steadier than wall clock on a shared machine."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def child_stage(model_path: str) -> dict:
    """The whole transfer stage as ``assess`` runs it (the content cache as the environment says)."""
    from eeki_label.model_io import iter_stored_tensors, load_model, tensor_nbytes
    from eeki_label.pipeline import load_context
    from eeki_label.profile.shapes import resolve_input_shapes
    from eeki_label.transfer.stage import TransferOptions, assess_transfer

    ctx = load_context()
    base_rss = _peak_rss_mb()
    loaded = load_model(model_path)
    shapes = resolve_input_shapes(loaded.proto, {})
    stored = sum(tensor_nbytes(r.tensor) for r in iter_stored_tensors(loaded.proto))
    steps: list = []
    c0 = _cpu_s()
    t0 = time.perf_counter()

    def progress(name, done, total):
        steps.append([round(time.perf_counter() - t0, 2), name, done, total])

    out = assess_transfer(loaded, shapes, stored, ctx.rules.raw, ctx.rules.fidelity, TransferOptions(),
                          progress=progress)
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - c0
    info = out.info
    return {"wall_s": wall, "cpu_s": cpu, "status": info.status, "compressed_bytes": info.compressed_bytes,
            "bitstream_sha256": info.bitstream_sha256, "encode_s": info.encode_s, "decode_s": info.decode_s,
            "qp": info.qp, "max_rel_error": info.fidelity.max_rel_error, "meets_bound": info.fidelity.meets_bound,
            "coded_float32_bytes": info.coded_float32_bytes, "stored_bytes": stored,
            "peak_rss_mb": _peak_rss_mb(), "interpreter_rss_mb": base_rss, "steps": _phases(steps, wall)}


def _phases(steps: list, wall: float) -> list:
    """Seconds per phase from the progress callbacks (a phase lasts until the next one starts)."""
    phases: list = [["before the first progress step", 0.0, None]]
    for t, name, _, _ in steps:
        key = name.split(" (")[0]
        if phases and phases[-1][0] == key:
            continue
        if phases:
            phases[-1][2] = round(t - phases[-1][1], 2)
        phases.append([key, t, None])
    if phases:
        phases[-1][2] = round(wall - phases[-1][1], 2)
    return [{"phase": k, "start_s": s, "seconds": d} for k, s, d in phases]


def child_single_qp(model_path: str, qp: str, workers: str, coder: str = "driver") -> dict:
    """One single-QP encode of every float tensor the stage codes: quantise + entropy-code.
    ``coder`` ``stock``: with nnc_core.coder.encode's own entry-point pass, which the driver skips
    (a second decode of every unit, see _nncore._without_entry_point_pass)."""
    import contextlib

    from bench_nnc import quantise_float_tensors
    from eeki_label.model_io import load_model
    from eeki_label.transfer import _nncore as nc
    from eeki_label.transfer.search import NNCODEC_NONWEIGHT_QP

    if coder == "stock":
        nc._without_entry_point_pass = contextlib.nullcontext

    workers_n = int(workers)
    m = load_model(model_path)
    c0 = _cpu_s()
    t = time.perf_counter()
    items, float_bytes = quantise_float_tensors(
        m, lambda a: int(qp) if a.ndim >= 2 else NNCODEC_NONWEIGHT_QP, workers=workers_n)
    t_q = time.perf_counter() - t
    t = time.perf_counter()
    stream, _ = nc.encode(items, workers_n)
    t_e = time.perf_counter() - t
    return {"coder": coder, "quantise_s": t_q, "entropy_coding_s": t_e, "wall_s": t_q + t_e, "cpu_s": _cpu_s() - c0, "nnc_bytes": len(stream),
            "float_bytes": float_bytes, "qp": int(qp), "workers": workers_n, "peak_rss_mb": _peak_rss_mb()}


def child_make_vgg(path: str) -> dict:
    vgg16_like(Path(path))
    return {"path": path}


def run_child(args: list[str], env: dict | None = None) -> dict:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1:], "child_wall_s": time.perf_counter() - t}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["child_wall_s"] = time.perf_counter() - t
    return out


def run_cli(args: list[str], env: dict) -> dict:
    exe = Path(sys.executable).with_name("eeki-label")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "eeki_label.cli"]
    t = time.perf_counter()
    p = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - t
    return {"wall_s": wall, "exit_code": p.returncode, "peak_rss_mb": round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "error": p.stderr.strip().splitlines()[-1:] if p.returncode else None}


# --------------------------------------------------------------------------------------------


def bench_ppocr(work: Path) -> dict:
    model = SHARED / "ppocr_v4_det.onnx"
    if not model.is_file():
        return {"skipped": f"{model.name} not found in ../shared/models"}
    cache = work / "cache-ppocr"
    common = [model, "--issued-at", ISSUED_AT]
    miss = run_cli(["assess", *common, "--json", work / "miss.json"], {"EEKI_LABEL_CACHE_DIR": str(cache)})
    hit = run_cli(["assess", *common, "--json", work / "hit.json"], {"EEKI_LABEL_CACHE_DIR": str(cache)})
    plain = run_cli(["assess", *common, "--no-transfer", "--json", work / "plain.json"],
                    {"EEKI_LABEL_CACHE_DIR": "off"})
    # the runtime profile's measured latencies differ from run to run: the transfer sections (and
    # everything else with --runs 0, tests/transfer/test_cache.py) are byte-identical
    label = json.loads((work / "miss.json").read_text()) if (work / "miss.json").is_file() else {}
    label_hit = json.loads((work / "hit.json").read_text()) if (work / "hit.json").is_file() else {}
    t = (label.get("labels") or [label])[0].get("transfer") or {}
    t_hit = (label_hit.get("labels") or [label_hit])[0].get("transfer") or {}
    same = json.dumps(t) == json.dumps(t_hit) if t and t_hit else None
    return {
        "model": model.name, "default_assess_s": miss["wall_s"], "no_transfer_assess_s": plain["wall_s"],
        "ratio": miss["wall_s"] / plain["wall_s"], "target_ratio_max": 4.0,
        "transfer_encode_s": t.get("encode_s"), "transfer_decode_s": t.get("decode_s"),
        "cache_hit_assess_s": hit["wall_s"], "cache_hit_vs_miss": hit["wall_s"] / miss["wall_s"],
        "cache_hit_transfer_section_identical": same,
        "errors": [r["error"] for r in (miss, hit, plain) if r.get("error")],
    }


def bench_vgg(work: Path, workers: int) -> dict:
    path = work / "vgg16_like.onnx"
    made = run_child(["make-vgg", str(path)])
    if "error" in made:
        return {"error": made["error"]}
    cache = work / "cache-vgg"
    stage = run_child(["stage", str(path)], {"EEKI_LABEL_CACHE_DIR": str(cache)})
    if "error" in stage:
        return {"error": stage["error"]}
    qp = int(round(stage["qp"]["median"]))
    single = run_child(["single-qp", str(path), str(qp), str(workers)])
    stock = run_child(["single-qp", str(path), str(qp), str(workers), "stock"])
    hit = run_child(["stage", str(path)], {"EEKI_LABEL_CACHE_DIR": str(cache)})
    weights = stage["stored_bytes"]
    return {
        "model": "vgg16_like (generated VGG16 shape, 138.4 M parameters)", "weight_bytes": weights,
        "stage_s": stage["wall_s"], "single_qp_encode_s": single.get("wall_s"),
        "ratio": stage["wall_s"] / single["wall_s"] if single.get("wall_s") else None, "target_ratio_max": 1.5,
        "cpu_ratio": stage["cpu_s"] / single["cpu_s"] if single.get("cpu_s") else None,
        "ratio_vs_stock_coder": stage["wall_s"] / stock["wall_s"] if stock.get("wall_s") else None,
        "stage": stage, "single_qp": single, "single_qp_stock_coder": stock,
        "peak_rss_over_weights": stage["peak_rss_mb"] * 2**20 / weights, "target_peak_rss_over_weights_max": 4.0,
        "cache_hit_stage_s": hit.get("wall_s"),
        "cache_hit_vs_miss": hit["wall_s"] / stage["wall_s"] if hit.get("wall_s") else None,
        "cache_hit_same_bitstream": hit.get("bitstream_sha256") == stage["bitstream_sha256"],
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, args = sys.argv[2], sys.argv[3:]
        fn = {"stage": child_stage, "single-qp": child_single_qp, "make-vgg": child_make_vgg}[kind]
        print(json.dumps(fn(*args)))
        return
    from eeki_label.transfer import _nncore

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-vgg", action="store_true", help="only the PP-OCRv4 detector and its cache")
    ap.add_argument("--workers", type=int, default=_nncore.default_workers())
    a = ap.parse_args()
    results = {"cpus": os.cpu_count(), "workers": a.workers, "load_avg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="eeki-bench-speed-") as d:
        work = Path(d)
        results["ppocr_v4_det"] = bench_ppocr(work)
        if not a.skip_vgg:
            results["vgg16_like"] = bench_vgg(work, a.workers)
    results["load_avg_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transfer_speed.json").write_text(json.dumps(results, indent=2) + "\n")

    p = results["ppocr_v4_det"]
    print("transfer stage speed (wall clock, fresh child processes; targets from issue #16)")
    if "skipped" in p:
        print(f"  PP-OCRv4 det: skipped ({p['skipped']})")
    else:
        print(f"  PP-OCRv4 det assess:   {p['default_assess_s']:7.1f} s  vs --no-transfer {p['no_transfer_assess_s']:6.1f} s"
              f"  ratio {p['ratio']:.2f} (target <= 4)")
        print(f"  PP-OCRv4 det cache:    hit {p['cache_hit_assess_s']:7.1f} s  vs miss {p['default_assess_s']:6.1f} s"
              f"  ({p['cache_hit_vs_miss']:.2f}x; transfer sections identical: {p['cache_hit_transfer_section_identical']})")
    v = results.get("vgg16_like")
    if v and "error" not in v:
        print(f"  VGG16-sized stage:     {v['stage_s']:7.1f} s  vs single-QP encode {v['single_qp_encode_s']:6.1f} s"
              f"  ratio {v['ratio']:.2f} (target <= 1.5; CPU seconds {v['stage']['cpu_s']:.0f} vs "
              f"{v['single_qp']['cpu_s']:.0f}: {v['cpu_ratio']:.2f})")
        st = v["single_qp_stock_coder"]
        if st.get("wall_s"):
            print(f"    (vs the stock nnc_core coder, with its second decode of every unit: {st['wall_s']:.1f} s, "
                  f"ratio {v['ratio_vs_stock_coder']:.2f})")
        for ph in v["stage"]["steps"]:
            print(f"      {ph['seconds']:7.1f} s  {ph['phase']}")
        print(f"  VGG16-sized peak RSS:  {v['stage']['peak_rss_mb']:7.0f} MB = {v['peak_rss_over_weights']:.2f}x the "
              f"weights (target <= 4)")
        print(f"  VGG16-sized cache:     hit {v['cache_hit_stage_s']:7.1f} s  vs miss {v['stage_s']:6.1f} s"
              f"  ({v['cache_hit_vs_miss']:.2f}x; same bitstream: {v['cache_hit_same_bitstream']})")
    elif v:
        print(f"  VGG16-sized: failed: {v['error']}")
    print(f"  written: {(RESULTS / 'transfer_speed.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
