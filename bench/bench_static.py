"""Benchmark: load + static profile of a VGG16-sized (~550 MB) ONNX model, time and peak memory.

By default a VGG16-shaped model (13 convolutions, 3 fully connected layers, 138,357,544 random
float32 weights, ~553 MB) is generated in a temporary folder that is deleted afterwards; ``--model
PATH`` measures an existing file instead (e.g. a real torchvision export). The measurement runs in
a fresh Python subprocess so that its peak RSS (``ru_maxrss``) covers exactly: interpreter and
imports, :func:`eeki_label.model_io.load_model`, :func:`eeki_label.profile.static.static_profile`.

Targets: under 5 s for load + static profile, peak RSS under 1.5x the file size.

    python bench/bench_static.py [--model PATH] [--repeat N] [--out bench/results/static.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 5.0
TARGET_RSS_RATIO = 1.5

# (out_channels per conv) for VGG16's five blocks; "M" = 2x2 max pool.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from eeki_label.model_io import load_model
from eeki_label.profile.shapes import resolve_input_shapes
from eeki_label.profile.static import static_profile
t_import = time.perf_counter() - t0
rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1 = time.perf_counter()
loaded = load_model(sys.argv[1])
t2 = time.perf_counter()
shapes = resolve_input_shapes(loaded.proto, {})
prof = static_profile(loaded, shapes)
t3 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
print(json.dumps({
    "import_s": t_import, "load_s": t2 - t1, "static_s": t3 - t2, "total_s": t3 - t1,
    "peak_rss_bytes": rss * scale, "rss_after_import_bytes": rss_after_import * scale,
    "sha256": loaded.sha256, "parameters": prof.parameters, "macs": prof.macs,
    "node_count": prof.node_count, "unresolved_nodes": len(prof.unresolved_nodes),
}))
"""


def build_vgg16(path: Path, seed: int = 0) -> None:
    """Write a VGG16-shaped model (torchvision layout, opset 17) with random float32 weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weights(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        arr = rng.standard_normal(int(np.prod(shape)), dtype=np.float32).reshape(shape)
        arr *= np.float32(0.01)
        return numpy_helper.from_array(arr, name)

    nodes, inits = [], []
    x, c = "input", 3
    conv_i = pool_i = 0
    for v in _VGG16:
        if v == "M":
            out = f"pool{pool_i}"
            nodes.append(helper.make_node("MaxPool", [x], [out], kernel_shape=[2, 2], strides=[2, 2]))
            x, pool_i = out, pool_i + 1
            continue
        w, b = f"conv{conv_i}.weight", f"conv{conv_i}.bias"
        inits += [weights(w, (v, c, 3, 3)), weights(b, (v,))]
        nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{conv_i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{conv_i}"], [f"relu{conv_i}"]))
        x, c, conv_i = f"relu{conv_i}", v, conv_i + 1
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    x, width = "flat", 512 * 7 * 7
    for i, out_features in enumerate((4096, 4096, 1000)):
        w, b = f"fc{i}.weight", f"fc{i}.bias"
        inits += [weights(w, (out_features, width)), weights(b, (out_features,))]
        y = f"fc{i}" if i < 2 else "logits"
        nodes.append(helper.make_node("Gemm", [x, w, b], [y], transB=1))
        if i < 2:
            nodes.append(helper.make_node("Relu", [y], [f"fc{i}.relu"]))
            y = f"fc{i}.relu"
        x, width = y, out_features
    graph = helper.make_graph(
        nodes, "vgg16_random",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_static")
    model.ir_version = 8
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


def measure(model: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(model)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="measure this ONNX file instead of a generated VGG16-sized one")
    ap.add_argument("--repeat", type=int, default=3, help="fresh subprocesses to run (best time is reported)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "static.json")
    ap.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build_only:
        build_vgg16(args.build_only)
        return 0

    with tempfile.TemporaryDirectory(prefix="eeki_bench_") as tmp:
        if args.model:
            model, source = args.model.resolve(), f"given file {args.model.name}"
        else:
            model, source = Path(tmp) / "vgg16_random.onnx", "generated VGG16-shaped model, random float32 weights"
            t = time.perf_counter()
            # In its own process: Linux carries a parent's peak RSS into a child's ru_maxrss across
            # fork+exec, so the measuring parent must stay small.
            subprocess.run([sys.executable, __file__, "--build-only", str(model)], check=True)
            print(f"generated {model.name} ({model.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")
        size = model.stat().st_size
        runs = [measure(model) for _ in range(max(1, args.repeat))]

    best = min(runs, key=lambda r: r["total_s"])
    peak = max(r["peak_rss_bytes"] for r in runs)
    result = {
        "benchmark": "load_model + static_profile, fresh subprocess",
        "model": source,
        "file_bytes": size,
        "runs": runs,
        "total_s_best": best["total_s"],
        "load_s_best": best["load_s"],
        "static_s_best": best["static_s"],
        "peak_rss_bytes": peak,
        "peak_rss_ratio_to_file": peak / size,
        "targets": {"total_s": TARGET_SECONDS, "peak_rss_ratio": TARGET_RSS_RATIO},
        "meets_targets": best["total_s"] < TARGET_SECONDS and peak / size < TARGET_RSS_RATIO,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"model: {source}, {size / 1e6:.1f} MB")
    for i, r in enumerate(runs):
        print(f"  run {i + 1}: load {r['load_s']:.2f} s + static {r['static_s']:.2f} s = {r['total_s']:.2f} s, "
              f"peak RSS {r['peak_rss_bytes'] / 1e6:.0f} MB (after imports {r['rss_after_import_bytes'] / 1e6:.0f} MB)")
    print(f"best {result['total_s_best']:.2f} s (target < {TARGET_SECONDS} s), peak RSS {peak / 1e6:.0f} MB = "
          f"{result['peak_rss_ratio_to_file']:.2f}x file (target < {TARGET_RSS_RATIO}x): "
          f"{'meets' if result['meets_targets'] else 'MISSES'} targets")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
