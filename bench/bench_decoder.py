"""Benchmark: load + static profile of a 1.1 B-parameter Llama-shaped decoder with a KV cache.

The model is generated weightless: every weight is external data in one *sparse* file (no bytes
written, so it costs no disk and no time), in a temporary folder deleted afterwards. The graph is
what a torch export of a Llama decoder looks like: RMS norm as element-wise ops, q/k/v/o and SwiGLU
MatMuls with stored weights, grouped-query attention as plain MatMul/Softmax chains (5-D broadcast
over the kv-head groups), the cache concatenated to the new keys/values (inputs
``past_key_values.<i>.key/value``, outputs ``present.<i>.key/value``). Config (TinyLlama-1.1B's):
22 layers, hidden 2048, 32 query heads and 4 kv heads of 64, SwiGLU 5632, vocab 32000.

The measurement runs in a fresh Python subprocess (its ``ru_maxrss`` covers imports, load, and the
static profile; onnx shape inference runs in its own children, whose peak is reported beside it): one static profile at the prefill (``--prompt-tokens``, past 0), then the whole
decoder profile (prefill, first and last decode step, profile/decoder.py).

Targets (issue #12): static profile under 10 s; peak RSS under 1.5x the largest tensor + 200 MB.

    python bench/bench_decoder.py [--prompt-tokens 512] [--output-tokens 128] [--out bench/results/decoder.json]
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
TARGET_SECONDS = 10.0
TARGET_RSS_RATIO = 1.5
TARGET_RSS_EXTRA_BYTES = 200 * 1024**2
CONFIG = dict(layers=22, hidden=2048, heads=32, kv_heads=4, head=64, intermediate=5632, vocab=32000)

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from eeki_label.model_io import load_model
from eeki_label.profile import decoder
from eeki_label.profile.static import static_profile
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
loaded = load_model(sys.argv[1])
t2 = time.perf_counter()
sig = decoder.detect(loaded.proto)
n, m = int(sys.argv[2]), int(sys.argv[3])
prefill = static_profile(loaded, decoder.step_shapes(loaded.proto, sig, 0, n))
t3 = time.perf_counter()
dp = decoder.profile_decoder(loaded, sig, decoder.Lengths(n, m), lambda s: static_profile(loaded, s))
t4 = time.perf_counter()
unit = 1 if sys.platform == "darwin" else 1024
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit  # the shape-inference children
print(json.dumps({
    "import_s": t_import, "load_s": t2 - t1, "static_prefill_s": t3 - t2, "decoder_profile_s": t4 - t3,
    "peak_rss_bytes": rss, "children_peak_rss_bytes": children, "parameters": prefill.parameters, "weight_bytes": prefill.weight_bytes,
    "prefill_macs": dp.prefill.macs, "decode_macs_per_token": dp.decode_macs_per_token, "query_macs": dp.query_macs,
    "attention_macs_prefill": dp.prefill.attention_macs, "kv_cache_bytes_per_token": dp.kv_cache_bytes_per_token,
    "node_count": prefill.node_count, "unresolved_nodes": len(prefill.unresolved_nodes),
}))
"""


def build(path: Path, c: dict = CONFIG) -> int:
    """Write the decoder with its weights as external data in a sparse file; returns the largest tensor's bytes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d, h, kv, hd, inter, vocab = c["hidden"], c["heads"], c["kv_heads"], c["head"], c["intermediate"], c["vocab"]
    g = h // kv
    data_name = path.stem + ".weights"
    inits, offset, largest = [], 0, 0

    def weight(name, shape):
        nonlocal offset, largest
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
        n = int(np.prod(shape)) * 4
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(n))):
            t.external_data.add(key=k, value=v)
        offset += n
        largest = max(largest, n)
        inits.append(t)
        return name

    def const(name, values):
        inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    nodes = []

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out] if isinstance(out, str) else out, **attrs))
        return out

    const("shape_q", [0, 0, kv, g, hd])
    const("shape_kv", [0, 0, kv, hd])
    const("shape_out", [0, 0, d])
    const("axis2", [2])
    inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    inits.append(numpy_helper.from_array(np.array(1e-6, np.float32), "eps"))
    inits.append(numpy_helper.from_array(np.array(hd ** -0.5, np.float32), "scale"))

    def rms(x, name):
        sq = node("Pow", [x, "two"], f"{name}.sq")
        mean = node("ReduceMean", [sq], f"{name}.mean", axes=[-1], keepdims=1)
        inv = node("Reciprocal", [node("Sqrt", [node("Add", [mean, "eps"], f"{name}.eps")], f"{name}.sqrt")], f"{name}.inv")
        return node("Mul", [node("Mul", [x, inv], f"{name}.norm"), weight(f"{name}.weight", (d,))], f"{name}.out")

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", vocab])]
    x = node("Gather", [weight("embed", (vocab, d)), "input_ids"], "embedded")
    for i in range(c["layers"]):
        p = f"l{i}"
        n1 = rms(x, f"{p}.in_norm")
        q = node("MatMul", [n1, weight(f"{p}.q", (d, h * hd))], f"{p}.q.out")
        k = node("MatMul", [n1, weight(f"{p}.k", (d, kv * hd))], f"{p}.k.out")
        v = node("MatMul", [n1, weight(f"{p}.v", (d, kv * hd))], f"{p}.v.out")
        q5 = node("Transpose", [node("Reshape", [q, "shape_q"], f"{p}.q5")], f"{p}.q5t", perm=[0, 2, 3, 1, 4])
        k4 = node("Transpose", [node("Reshape", [k, "shape_kv"], f"{p}.k4")], f"{p}.k4t", perm=[0, 2, 1, 3])
        v4 = node("Transpose", [node("Reshape", [v, "shape_kv"], f"{p}.v4")], f"{p}.v4t", perm=[0, 2, 1, 3])
        for kind, new in (("key", k4), ("value", v4)):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT,
                                                        ["batch_size", kv, "past_sequence_length", hd]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT,
                                                         ["batch_size", kv, "total_sequence_length", hd]))
            node("Concat", [f"past_key_values.{i}.{kind}", new], f"present.{i}.{kind}", axis=2)
        kt = node("Transpose", [node("Unsqueeze", [f"present.{i}.key", "axis2"], f"{p}.k5")], f"{p}.k5t",
                  perm=[0, 1, 2, 4, 3])
        scores = node("Mul", [node("MatMul", [q5, kt], f"{p}.qk"), "scale"], f"{p}.scores")
        probs = node("Softmax", [scores], f"{p}.probs", axis=-1)
        ctx = node("MatMul", [probs, node("Unsqueeze", [f"present.{i}.value", "axis2"], f"{p}.v5")], f"{p}.av")
        merged = node("Reshape", [node("Transpose", [ctx], f"{p}.avt", perm=[0, 3, 1, 2, 4]), "shape_out"], f"{p}.merged")
        x = node("Add", [x, node("MatMul", [merged, weight(f"{p}.o", (h * hd, d))], f"{p}.o.out")], f"{p}.res1")
        n2 = rms(x, f"{p}.post_norm")
        gate = node("MatMul", [n2, weight(f"{p}.gate", (d, inter))], f"{p}.gate.out")
        up = node("MatMul", [n2, weight(f"{p}.up", (d, inter))], f"{p}.up.out")
        act = node("Mul", [node("Mul", [gate, node("Sigmoid", [gate], f"{p}.sig")], f"{p}.silu"), up], f"{p}.act")
        x = node("Add", [x, node("MatMul", [act, weight(f"{p}.down", (inter, d))], f"{p}.down.out")], f"{p}.res2")
    node("MatMul", [rms(x, "final_norm"), weight("lm_head", (d, vocab))], "logits")
    graph = helper.make_graph(nodes, "llama_1b_weightless", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_decoder")
    model.ir_version = 8
    with open(path.parent / data_name, "wb") as f:
        f.truncate(offset)  # sparse: the size is there, no bytes are written
    onnx.save(model, str(path))
    return largest


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decoder.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eeki_bench_") as tmp:
        model = Path(tmp) / "llama_1b.onnx"
        largest = build(model)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(args.prompt_tokens),
                               str(args.output_tokens)], capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark child failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        file_bytes = model.stat().st_size
    rss_target = TARGET_RSS_RATIO * largest + TARGET_RSS_EXTRA_BYTES
    r.update(model="generated Llama-shaped decoder (TinyLlama-1.1B config), weightless (sparse external data)",
             config=CONFIG, prompt_tokens=args.prompt_tokens, output_tokens=args.output_tokens,
             model_file_bytes=file_bytes, largest_tensor_bytes=largest, target_seconds=TARGET_SECONDS,
             target_peak_rss_bytes=rss_target, meets_time_target=r["static_prefill_s"] < TARGET_SECONDS,
             meets_rss_target=max(r["peak_rss_bytes"], r["children_peak_rss_bytes"]) < rss_target, python=platform.python_version(),
             machine=platform.machine(), cpus=os.cpu_count())
    print(f"parameters {r['parameters']:,} ({r['weight_bytes'] / 1e9:.2f} GB), {r['node_count']} nodes, "
          f"unresolved {r['unresolved_nodes']}")
    print(f"load {r['load_s']:.2f} s, static profile at prefill {r['static_prefill_s']:.2f} s (target < "
          f"{TARGET_SECONDS:g} s), whole decoder profile (3 static profiles) {r['decoder_profile_s']:.2f} s")
    print(f"peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB, of its largest shape-inference child "
          f"{r['children_peak_rss_bytes'] / 2**20:.0f} MiB (target each < 1.5 x largest tensor {largest / 2**20:.0f} MiB "
          f"+ 200 MiB = {rss_target / 2**20:.0f} MiB)")
    print(f"prefill {r['prefill_macs'] / 1e9:.1f} GMAC at {args.prompt_tokens} tokens, decode "
          f"{r['decode_macs_per_token'] / 1e9:.3f} GMAC per token, query {r['query_macs'] / 1e12:.3f} TMAC; KV cache "
          f"{r['kv_cache_bytes_per_token'] / 1024:.0f} KiB per token")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
