#!/usr/bin/env python3
"""Benchmark of NNC updates across different graphs: whole-model container vs delta container.

Pairs (previous -> new):

* ``cls-head3``: PP-OCR direction classifier (../shared/models) with its 2-class head replaced by a
  3-class head (new shapes) and one block fine-tuned (about 2 % of each tensor's mean magnitude);
* ``cls-head2``: the same with a re-initialised head of the same shape (the graph is unchanged);
* ``mlp-layers``: a dense net with one hidden layer removed, one added, the first fine-tuned;
* ``unrelated``: a CNN replaced by an unrelated dense net (nothing in common: the delta is the
  whole model plus its graph);
* ``resnet18-head2`` (not with ``--quick``): a ResNet18-shaped graph (bench_nnc.py's generator,
  or ``$EEKI_RESNET18``) whose 1000-class head becomes a 2-class head and whose last block is
  fine-tuned: the issue's transfer-learning case.

For each: bytes of the full container (plus the graph a full transfer also sends), bytes of the
delta container and its parts, tensor modes, and the fidelity reached. Prints a table and writes
bench/results/delta.json.

Usage: python bench/bench_delta.py [--quick] [--samples N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "transfer"), str(ROOT / "bench")]
SHARED = ROOT.parent / "shared" / "models"
RESULTS = ROOT / "bench" / "results"


def _resnet_pair(d: Path) -> tuple[Path, Path, dict]:
    import os

    import onnx
    from onnx import numpy_helper

    from bench_nnc import resnet18_like

    env = os.environ.get("EEKI_RESNET18")
    old = Path(env) if env and Path(env).is_file() else resnet18_like(d / "resnet18_like.onnx")
    m = onnx.load(str(old))
    rng = np.random.default_rng(1)
    inits = {t.name: t for t in m.graph.initializer}
    for name, t in inits.items():
        if name.startswith("l3.1."):
            a = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array((a + 0.02 * np.abs(a).mean() * rng.standard_normal(a.shape))
                                               .astype(np.float32), name))
    inits["fc.w"].CopyFrom(numpy_helper.from_array((0.03 * rng.standard_normal((2, 512))).astype(np.float32), "fc.w"))
    inits["fc.b"].CopyFrom(numpy_helper.from_array(np.zeros(2, np.float32), "fc.b"))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 2
    new = d / "resnet18_head2.onnx"
    onnx.save(m, str(new))
    return old, new, {"input": (1, 3, 224, 224)}


def pairs(d: Path, quick: bool):
    import onnx

    from nnc_models import small_cnn, wide_mlp
    from test_delta_graphs import _mlp_with_layers_swapped, transfer_learned

    cls = SHARED / "ppocr_mobile_v2_cls.onnx"
    if not cls.is_file():
        raise SystemExit(f"{cls} is missing (see ../shared/models/README.md)")
    for classes in (3, 2):
        new = d / f"cls_head{classes}.onnx"
        onnx.save(transfer_learned(cls, classes=classes), str(new))
        yield f"cls-head{classes}", cls, new, {"x": (1, 3, 48, 192)}
    old, new = d / "mlp.onnx", d / "mlp_layers.onnx"
    onnx.save(wide_mlp(seed=3), str(old))
    onnx.save(_mlp_with_layers_swapped(wide_mlp(seed=3)), str(new))
    yield "mlp-layers", old, new, {"x": (1, 64)}
    old, new = d / "cnn.onnx", d / "unrelated.onnx"
    onnx.save(small_cnn(), str(old))
    onnx.save(wide_mlp(seed=1), str(new))
    yield "unrelated", old, new, {"x": (1, 64)}
    if not quick:
        old, new, shapes = _resnet_pair(d)
        yield "resnet18-head2", old, new, shapes


def measure(name, old_path, new_path, shapes, samples) -> dict:
    from eeki_label.model_io import iter_stored_tensors, load_model, tensor_nbytes
    from eeki_label.transfer.container import section_sizes
    from eeki_label.transfer.nnc import encode_model

    old, new = load_model(old_path), load_model(new_path)
    graph_bytes = new.file_bytes + new.external_bytes - sum(tensor_nbytes(r.tensor) for r in iter_stored_tensors(new.proto))
    t = time.perf_counter()
    full = encode_model(new, shapes, calibration_samples=samples)
    full_s = time.perf_counter() - t
    t = time.perf_counter()
    delta = encode_model(new, shapes, previous=old, calibration_samples=samples, whole=full)
    delta_s = time.perf_counter() - t
    modes = {}
    for c in delta.tensors:
        modes[c.mode] = modes.get(c.mode, 0) + 1
    u = delta.update
    return {
        "pair": name, "previous": Path(old_path).name, "new": Path(new_path).name,
        "float32_bytes": full.original_bytes, "full_container_bytes": full.compressed_bytes,
        "full_transfer_bytes": full.compressed_bytes + max(graph_bytes, 0),
        "delta_bytes": delta.compressed_bytes, "delta_sections": section_sizes(delta.bitstream),
        "delta_vs_full_container": delta.compressed_bytes / full.compressed_bytes,
        "delta_vs_full_transfer": delta.compressed_bytes / (full.compressed_bytes + max(graph_bytes, 0)),
        "modes": modes, "removed": len(u.removed), "graph_changed": u.graph_changed, "whole_model": u.whole_model,
        "delta_fidelity": {"relative_to": delta.fidelity.relative_to, "max_rel_error": delta.fidelity.max_rel_error,
                           "meets": delta.fidelity.meets},
        "full_encode_s": round(full_s, 2), "delta_encode_s": round(delta_s, 2), "calibration_samples": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the ResNet18-size pair")
    ap.add_argument("--samples", type=int, default=4, help="synthetic calibration samples (default 4)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="eeki-delta-") as d:
        for name, old, new, shapes in pairs(Path(d), args.quick):
            rows.append(measure(name, old, new, shapes, args.samples))
            r = rows[-1]
            print(f"{r['pair']:16s} full {r['full_container_bytes']:>10,} B (+graph {r['full_transfer_bytes']:>10,} B)"
                  f"  delta {r['delta_bytes']:>10,} B  = {r['delta_vs_full_transfer']:.3f} of the full transfer"
                  f"  modes {r['modes']} removed {r['removed']}  fidelity {r['delta_fidelity']['relative_to']} "
                  f"{r['delta_fidelity']['max_rel_error']:.4f}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "delta.json").write_text(json.dumps({"pairs": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS / 'delta.json'}")


if __name__ == "__main__":
    main()
