#!/usr/bin/env python3
"""Benchmark: full `eeki-label assess` of a MobileNetV2-sized model (14 MB float32, 30 runs).

Prints the figures and writes bench/results/assess.json. Target (issue 2): under 15 s.
Uses the MobileNetV2 torchvision export when given (--model), otherwise builds a
MobileNetV2-shaped graph (inverted residual blocks, 3.5 M float32 weights) with onnx.helper.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 15.0

# MobileNetV2 (Sandler et al. 2018, table 2): expansion t, channels c, repeats n, stride s
MNV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2_like(seed: int = 0):
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x, cin, cout, k, stride, group, name, relu=True):
        w = numpy_helper.from_array((rng.standard_normal((cout, cin // group, k, k)) * 0.05).astype(np.float32), f"{name}.w")
        b = numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b")
        inits.extend([w, b])
        nodes.append(helper.make_node("Conv", [x, w.name, b.name], [f"{name}.y"], strides=[stride] * 2,
                                      pads=[k // 2] * 4, group=group, name=name))
        if not relu:
            return f"{name}.y"
        nodes.append(helper.make_node("Clip", [f"{name}.y", "zero", "six"], [f"{name}.r"], name=f"{name}.relu6"))
        return f"{name}.r"

    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"), numpy_helper.from_array(np.array(6, np.float32), "six")]
    x, cin = conv("x", 3, 32, 3, 2, 1, "stem"), 32
    i = 0
    for t, c, n, s in MNV2:
        for r in range(n):
            stride = s if r == 0 else 1
            h = conv(x, cin, cin * t, 1, 1, 1, f"b{i}.expand") if t != 1 else x
            h = conv(h, cin * t, cin * t, 3, stride, cin * t, f"b{i}.dw")
            h = conv(h, cin * t, c, 1, 1, 1, f"b{i}.project", relu=False)
            if stride == 1 and cin == c:
                nodes.append(helper.make_node("Add", [h, x], [f"b{i}.add"]))
                h = f"b{i}.add"
            x, cin, i = h, c, i + 1
    x = conv(x, cin, 1280, 1, 1, 1, "head")
    fc = numpy_helper.from_array((rng.standard_normal((1000, 1280)) * 0.01).astype(np.float32), "fc.w")
    fcb = numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b")
    inits += [fc, fcb]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "mobilenet_v2_like",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an ONNX file to use instead of the generated one")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = Path(tmp) / "mobilenet_v2_like.onnx"
            model.write_bytes(mobilenet_v2_like().SerializeToString())
        size = model.stat().st_size
        cmd = [sys.executable, "-m", "eeki_label", "assess", str(model), "--runs", str(args.runs),
               "--json", str(Path(tmp) / "label.json"), "-q"]
        stage_times = {}
        for name, extra in (("without_transfer_s", ["--no-transfer"]),):
            t0 = time.perf_counter()
            subprocess.run(cmd + extra, capture_output=True, check=True)
            stage_times[name] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        label = json.loads((Path(tmp) / "label.json").read_text())
    help_s = []
    for _ in range(5):  # `eeki-label --help` must answer in under a second (no heavy imports at start-up)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "eeki_label", "--help"], capture_output=True, check=True)
        help_s.append(time.perf_counter() - t0)
    first = label["labels"][0]
    result = {
        "benchmark": "assess, all device classes, NNC transfer included, end to end in a fresh process",
        "model": model.name, "file_bytes": size, "parameters": first["model"]["parameters"],
        "macs": first["model"]["macs"], "runs": args.runs, "assess_s": round(elapsed, 3),
        "latency_ms_median": first["runtime"]["latency_ms_median"], "target_s": TARGET_S,
        "meets_target": elapsed < TARGET_S, "help_s_median": round(sorted(help_s)[2], 3),
        "stages_s": stage_times, "host_cpu": first["runtime"]["host_cpu"],
        "logical_cpus": first["runtime"]["host_logical_cpus"], "python": platform.python_version(),
    }
    out = ROOT / "bench" / "results" / "assess.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result.items():
        print(f"{k:20s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
