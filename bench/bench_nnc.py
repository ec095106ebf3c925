#!/usr/bin/env python3
"""Benchmark of the NNC transfer codec: speed, memory, size and fidelity.

Prints a table and writes bench/results/nnc.json. Every measurement runs in a fresh child process so
that peak RSS (``ru_maxrss``) belongs to that measurement alone.

* **ResNet18 size** (11.7 M parameters, 46.7 MB float32): the ONNX file ``$EEKI_RESNET18`` names
  (e.g. a torchvision export made with scripts/export_torchvision.py), else a ResNet18-shaped graph
  built here with onnx.helper and realistically distributed random weights (He-scaled, per-channel
  scales as after batch-norm folding, heavy tails). Measured: the codec alone (quantise + entropy-code at
  fixed QPs, decode) and the whole ``encode_model`` (QP search on synthetic inputs, coding, decoding,
  onnxruntime check). Targets: encode < 20 s, decode < 5 s, peak RSS < 4x the weights.
* **PP-OCRv4 detector and PP-OCR direction classifier** (../shared/models): ``encode_model`` with
  calibration images and with the default synthetic calibration (no calibration data), held-out
  fidelity, and the baselines (float32, zstd-19, 8-bit + zstd-19, single-QP NNC). Rendered text
  images always; real photographs too when scikit-image's data folder is found
  (``$EEKI_SKIMAGE_DATA``, e.g. ``skimage/data`` unpacked from ``pip download --no-deps
  scikit-image``, or an installed scikit-image): as calibration data, and as a second held-out set
  of the default-calibration runs.

Usage: python bench/bench_nnc.py [--quick] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "transfer"))  # images.py: rendered calibration images
SHARED = ROOT.parent / "shared" / "models"
RESULTS = ROOT / "bench" / "results"


# --------------------------------------------------------------------------------------------
# Models


def resnet18_like(path: Path, seed: int = 0) -> Path:
    """A ResNet18-shaped ONNX graph (BN folded: conv + bias) with realistic random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(x, cin, cout, k, stride, name, relu=True):
        w = rng.laplace(size=(cout, cin, k, k)) * np.sqrt(1.0 / (cin * k * k))
        w *= rng.lognormal(0.0, 0.6, size=(cout, 1, 1, 1))  # per-channel scales (folded batch norm)
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}.w"))
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(cout)).astype(np.float32), f"{name}.b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], strides=[stride, stride],
                                      pads=[k // 2] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"]))
            return f"{name}.r"
        return f"{name}.y"

    x = conv("input", 3, 64, 7, 2, "stem")
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if (stage > 0 and block == 0) else 1
            name = f"l{stage}.{block}"
            y = conv(x, cin, cout, 3, stride, f"{name}.c1")
            y = conv(y, cout, cout, 3, 1, f"{name}.c2", relu=False)
            skip = conv(x, cin, cout, 1, stride, f"{name}.down", relu=False) if (stride != 1 or cin != cout) else x
            nodes.append(helper.make_node("Add", [y, skip], [f"{name}.sum"]))
            nodes.append(helper.make_node("Relu", [f"{name}.sum"], [f"{name}.out"]))
            x, cin = f"{name}.out", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array((rng.standard_normal((1000, 512)) * 0.03).astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array((0.01 * rng.standard_normal(1000)).astype(np.float32), "fc.b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["output"], transB=1))
    graph = helper.make_graph(nodes, "resnet18_like", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def resnet18_path(workdir: Path) -> tuple[Path, str]:
    env = os.environ.get("EEKI_RESNET18")
    if env and Path(env).is_file():
        return Path(env), f"{Path(env).name} (from $EEKI_RESNET18)"
    # generated in a child: ru_maxrss survives fork + exec, so a big parent would inflate every
    # later child's peak-RSS figure
    path = workdir / "resnet18_like.onnx"
    res = run_child(["make-resnet18", str(path)])
    if "error" in res:
        raise SystemExit(f"could not generate the ResNet18-shaped model: {res['error']}")
    return path, "resnet18_like.onnx (generated ResNet18 shape)"


def skimage_data() -> Path | None:
    env = os.environ.get("EEKI_SKIMAGE_DATA")
    cands = [Path(env)] if env else []
    try:
        import skimage  # noqa: F401

        cands.append(Path(skimage.__file__).parent / "data")
    except ImportError:
        pass
    for c in cands:
        if (c / "astronaut.png").is_file():
            return c
    return None


# --------------------------------------------------------------------------------------------
# Child-process measurements


def _peak_rss_mb() -> dict:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(me, 1), "peak_rss_children_mb": round(kids, 1)}


def quantise_float_tensors(m, qp_of, workers: int = 1) -> tuple[list, int]:
    """Quantise every float32 tensor of at least 16 elements of the loaded model ``m`` at ``qp_of(array)``
    (one array in memory at a time): the coded tensors and their float32 bytes."""
    from eeki_label.model_io import iter_stored_tensors, tensor_array
    from eeki_label.transfer import _nncore as nc

    items, float_bytes = [], 0
    for i, r in enumerate(iter_stored_tensors(m.proto)):
        a = tensor_array(m, r.tensor)
        if a.dtype != np.float32 or a.size < 16:
            continue
        float_bytes += a.nbytes
        lv, qp = nc.quantize(a, qp_of(a), workers=workers)
        items.append(nc.CodedTensor(f"t{i}", lv, qp))
        del a
    return items, float_bytes


def child_codec_encode(model_path: str, workers: int, out_path: str) -> dict:
    """Quantise + entropy-code every float tensor at QP = (QP of its RMS) - 24; write the stream."""
    from eeki_label.model_io import load_model
    from eeki_label.transfer import _nncore as nc

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = load_model(model_path)
    t = time.perf_counter()
    items, float_bytes = quantise_float_tensors(
        m, lambda a: nc.qp_for_step(float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))) - 24)
    t_q = time.perf_counter() - t
    t = time.perf_counter()
    stream, _ = nc.encode(items, workers)
    t_e = time.perf_counter() - t
    Path(out_path).write_bytes(stream)
    return {"float32_bytes": float_bytes, "tensors": len(items), "nnc_bytes": len(stream),
            "ratio": len(stream) / float_bytes, "quantise_s": t_q, "entropy_code_s": t_e,
            "encode_s": t_q + t_e, "encode_mb_s": float_bytes / 1e6 / (t_q + t_e),
            "rss_after_imports_mb": round(base_rss, 1), **_peak_rss_mb()}


def child_codec_decode(stream_path: str, workers: int) -> dict:
    from eeki_label.transfer import _nncore as nc

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stream = Path(stream_path).read_bytes()
    t = time.perf_counter()
    out = nc.decode(stream, workers)
    t_d = time.perf_counter() - t
    float_bytes = sum(a.nbytes for a in out.values())
    return {"decode_s": t_d, "decode_mb_s": float_bytes / 1e6 / t_d, "rss_after_imports_mb": round(base_rss, 1),
            **_peak_rss_mb()}


def child_codec(model_path: str, workers: int) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        stream = str(Path(d) / "stream.nnc")
        enc = run_child(["codec-encode", model_path, str(workers), stream])
        dec = run_child(["codec-decode", stream, str(workers)]) if "error" not in enc else {"error": "no stream"}
    if "error" in enc or "error" in dec:
        return {"error": enc.get("error") or dec.get("error")}
    return {**{k: v for k, v in enc.items() if not k.startswith("peak") and k != "rss_after_imports_mb"},
            "decode_s": dec["decode_s"], "decode_mb_s": dec["decode_mb_s"],
            "encode_peak_rss_mb": enc["peak_rss_mb"], "encode_peak_rss_children_mb": enc["peak_rss_children_mb"],
            "decode_peak_rss_mb": dec["peak_rss_mb"], "rss_after_imports_mb": enc["rss_after_imports_mb"]}


#: Photographs held out from the default-calibration runs (all of them unseen by the search).
HELD_OUT_PHOTOS = ("rocket.jpg", "motorcycle_left.png", "text.png", "hubble_deep_field.jpg", "logo.png",
                   "retina.jpg", "astronaut.png", "coffee.png", "chelsea.png", "page.png")


def _photos(names, h: int, w: int, norm):
    from PIL import Image

    data = skimage_data()
    return norm([np.asarray(Image.open(data / n).convert("RGB").resize((w, h), Image.BILINEAR)) for n in names])


def _held_out(m, rec, feeds, bound) -> dict:
    from eeki_label.transfer.fidelity import Reference, compare, run_model

    names, ref = run_model(str(m.path), feeds)
    _, out = run_model(rec, feeds)
    f = compare(Reference.of(names, ref), out, bound)
    return {"max_rel_error": f.max_rel_error, "min_top1_agreement": f.min_top1_agreement, "meets": f.meets,
            "samples": f.samples}


def _fid(f) -> dict | None:
    if f is None:
        return None
    return {"max_rel_error": f.max_rel_error, "min_top1_agreement": f.min_top1_agreement, "meets": f.meets}


def child_encode_model(model_path: str, which: str, workers: int, baselines: bool) -> dict:
    """``encode_model`` on a model with calibration inputs; held-out fidelity of the decoded model."""
    import images

    import onnxruntime  # noqa: F401 (counted in rss_after_imports_mb, as in the codec figures)

    from eeki_label.model_io import load_model
    from eeki_label.transfer import _nncore
    from eeki_label.transfer.fidelity import FidelityBound
    from eeki_label.transfer.nnc import decode_bitstream, encode_model

    _nncore._core()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    bound = FidelityBound(0.03)
    m = load_model(model_path)
    cal = None
    held: dict = {}  # name -> held-out inputs; the first is reported as fidelity_held_out
    photos = skimage_data() is not None
    if which == "resnet18":
        shapes = {m.proto.graph.input[0].name: (1, 3, 224, 224)}
    elif which.startswith("det"):
        shapes = {"x": (1, 3, 640, 640)}
        if which == "det-text":
            cal, held["text_pages"] = images.det_batch(range(4)), images.det_batch(range(100, 106))
        elif which == "det-photo":
            cal = _photos(("astronaut.png", "coffee.png", "chelsea.png", "page.png"), 640, 640, images.det_input)
            held["photos"] = _photos(("rocket.jpg", "motorcycle_left.png", "text.png", "hubble_deep_field.jpg",
                                      "logo.png", "retina.jpg"), 640, 640, images.det_input)
        else:  # det-default: synthetic calibration, judged on pages and photos
            held["text_pages"] = images.det_batch(range(100, 106))
            if photos:
                held["photos"] = _photos(HELD_OUT_PHOTOS, 640, 640, images.det_input)
    else:  # cls, cls-default
        shapes = {"x": (1, 3, 48, 192)}
        if which == "cls":
            cal = images.cls_batch(range(32))
        held["text_lines"] = images.cls_batch(range(100, 164))
        if which == "cls-default" and photos:
            held["photos"] = _photos(HELD_OUT_PHOTOS, 48, 192, images.cls_input)
    t = time.perf_counter()
    r = encode_model(m, shapes, bound, calibration=None if cal is None else {"x": cal}, workers=workers,
                     baselines=baselines)
    wall = time.perf_counter() - t
    out = {
        "original_bytes": r.original_bytes, "coded_float_bytes": r.coded_float_bytes,
        "compressed_bytes": r.compressed_bytes, "nnc_bytes": r.nnc_bytes, "raw_section_bytes": r.raw_section_bytes,
        "header_bytes": r.header_bytes, "ratio": r.ratio, "nnc_ratio": r.nnc_ratio,
        "qp": {"min": r.qp.min, "median": r.qp.median, "max": r.qp.max, "distinct": r.qp.distinct},
        "fidelity_calibration": _fid(r.fidelity), "calibration": r.calibration,
        "calibration_samples": r.calibration_samples, "search_iterations": r.search_iterations,
        "sensitivity_runs": r.sensitivity_runs, "encode_s": r.encode_s, "search_s": r.search_s,
        "entropy_coding_s": r.entropy_coding_s, "decode_s": r.decode_s, "wall_s": wall,
        "float32_mb": r.coded_float_bytes / 1e6,
    }
    if held:
        rec = decode_bitstream(r.bitstream, m)
        out["fidelity_held_out_sets"] = {name: _held_out(m, rec, [{"x": x[i:i + 1]} for i in range(len(x))], bound)
                                         for name, x in held.items()}
        out["fidelity_held_out"] = next(iter(out["fidelity_held_out_sets"].values()))
    if r.baselines is not None:
        b = r.baselines
        out["baselines"] = {
            "float32_bytes": b.float32_bytes, "zstd19_bytes": b.zstd19_bytes,
            "uint8_zstd19_bytes": b.uint8_zstd19_bytes, "uint8_fidelity": _fid(b.uint8_fidelity),
            "single_qp": b.single_qp, "single_qp_nnc_bytes": b.single_qp_nnc_bytes,
            "single_qp_fidelity": _fid(b.single_qp_fidelity),
            "zstd19_over_nnc": (b.zstd19_bytes / r.nnc_bytes) if b.zstd19_bytes else None,
            "single_qp_over_ours": b.single_qp_nnc_bytes / r.nnc_bytes if b.single_qp_nnc_bytes else None,
        }
    out.update(_peak_rss_mb())
    out["rss_after_imports_mb"] = round(base_rss, 1)
    return out


def run_child(args: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="skip the baselines (zstd-19, single-QP search)")
    ap.add_argument("--workers", type=int, default=0, help="coder processes (default: usable CPUs)")
    a = ap.parse_args(argv)
    if a.child:
        kind, model, *rest = a.child
        workers = int(rest[0]) if rest else 1
        if kind == "make-resnet18":
            resnet18_like(Path(model))
            res = {"path": model}
        elif kind == "codec-encode":
            res = child_codec_encode(model, workers, rest[1])
        elif kind == "codec-decode":
            res = child_codec_decode(model, workers)
        else:
            res = child_encode_model(model, kind, workers, baselines=(rest[1:2] == ["baselines"]))
        print(json.dumps(res))
        return 0

    from eeki_label.transfer import _nncore

    workers = a.workers or _nncore.default_workers()
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "work"
    work.mkdir(exist_ok=True)
    r18, r18_desc = resnet18_path(work)
    bl = [] if a.quick else ["baselines"]
    results = {
        "host": {"cpus_usable": workers, "python": sys.version.split()[0], "platform": sys.platform},
        "workers": workers,
        "resnet18": {"model": r18_desc,
                     "codec": child_codec(str(r18), workers),
                     "encode_model": run_child(["resnet18", str(r18), str(workers)])},
    }
    det, cls = SHARED / "ppocr_v4_det.onnx", SHARED / "ppocr_mobile_v2_cls.onnx"
    if det.is_file():
        results["ppocr_v4_det"] = {"text_pages": run_child(["det-text", str(det), str(workers), *bl])}
        if skimage_data() is not None:
            results["ppocr_v4_det"]["photos"] = run_child(["det-photo", str(det), str(workers), *bl])
        results["ppocr_v4_det"]["default"] = run_child(["det-default", str(det), str(workers), *bl])
    if cls.is_file():
        results["ppocr_mobile_v2_cls"] = {"text_lines": run_child(["cls", str(cls), str(workers), *bl]),
                                          "default": run_child(["cls-default", str(cls), str(workers), *bl])}
    (RESULTS / "nnc.json").write_text(json.dumps(results, indent=2))
    _print(results)
    return 0


def _print(results: dict) -> None:
    r = results["resnet18"]
    c, e = r["codec"], r["encode_model"]
    print(f"ResNet18-size model: {r['model']}  ({results['workers']} workers)")
    if "error" not in c:
        mb = c["float32_bytes"] / 1e6
        print(f"  codec     : {mb:.1f} MB float32 -> {c['nnc_bytes'] / 1e6:.2f} MB ({100 * c['ratio']:.1f} %), "
              f"encode {c['encode_s']:.1f} s ({c['encode_mb_s']:.1f} MB/s), decode {c['decode_s']:.1f} s "
              f"({c['decode_mb_s']:.1f} MB/s); peak RSS encode {c['encode_peak_rss_mb']:.0f} MB "
              f"({c['encode_peak_rss_mb'] / mb:.1f}x the weights; after imports {c['rss_after_imports_mb']:.0f} MB), "
              f"decode {c['decode_peak_rss_mb']:.0f} MB ({c['decode_peak_rss_mb'] / mb:.1f}x)")
    else:
        print("  codec     : ERROR", c["error"])
    if "error" not in e:
        mb = e["float32_mb"]
        print(f"  encode_model: {100 * e['nnc_ratio']:.1f} % of float32, encode {e['encode_s']:.1f} s "
              f"(search {e['search_s']:.1f} s, entropy coding {e['entropy_coding_s']:.1f} s), decode {e['decode_s']:.1f} s, "
              f"peak RSS {e['peak_rss_mb']:.0f} MB ({e['peak_rss_mb'] / mb:.1f}x the weights; after imports "
              f"{e['rss_after_imports_mb']:.0f} MB; coder processes {e['peak_rss_children_mb']:.0f} MB)")
    else:
        print("  encode_model: ERROR", e["error"])
    for model, runs in results.items():
        if not model.startswith("ppocr"):
            continue
        for name, x in runs.items():
            if "error" in x:
                print(f"{model} [{name}]: ERROR {x['error']}")
                continue
            line = (f"{model} [{name}]: NNC {x['nnc_bytes']:,} B = {100 * x['nnc_ratio']:.1f} % of float32 "
                    f"(container {100 * x['ratio']:.1f} %), QP {x['qp']['min']}..{x['qp']['max']}, "
                    f"calibration err {x['fidelity_calibration']['max_rel_error']:.4f}")
            for set_name, h in x.get("fidelity_held_out_sets", {}).items():
                line += f", held-out {set_name} err {h['max_rel_error']:.4f}"
                if h["min_top1_agreement"] is not None:
                    line += f" top-1 {h['min_top1_agreement']:.3f}"
            line += f", encode {x['encode_s']:.1f} s, decode {x['decode_s']:.2f} s"
            print(line)
            b = x.get("baselines")
            if b:
                print(f"    baselines: float32 {b['float32_bytes']:,}  zstd-19 {b['zstd19_bytes']:,} "
                      f"({b['zstd19_over_nnc']:.2f}x ours)  8-bit+zstd {b['uint8_zstd19_bytes']:,} "
                      f"(err {b['uint8_fidelity']['max_rel_error']:.3f})  single-QP {b['single_qp']}: "
                      f"{b['single_qp_nnc_bytes']:,} ({b['single_qp_over_ours']:.3f}x ours, err "
                      f"{b['single_qp_fidelity']['max_rel_error']:.4f})")


if __name__ == "__main__":
    sys.exit(main())
