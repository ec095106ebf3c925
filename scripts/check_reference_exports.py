#!/usr/bin/env python3
"""Profile reference exports with eeki-label's own static profiler; compare with published MACs.

    python scripts/check_reference_exports.py --exports DIR [--source FILE] [ID ...]

Reads the model entries of ``--source`` (default scripts/catalogue_models-2.0.0.json: a JSON list of
entries, or an object with a "models" list), loads ``DIR/<onnx_file>`` for each, resolves its input
shape(s) (``input_shape`` for the first graph input, or ``input_shapes`` {name: dims}), runs the
static profile and prints parameters, MACs, the published MACs and the deviation. Exits non-zero
when a profile has unresolved nodes or fails. DIR may be the full exports or tests/data/arch (the
architecture-only copies: MACs are identical, parameters are not counted there because the weights
are graph inputs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eeki_label.model_io import load_model
from eeki_label.profile.shapes import resolve_input_shapes
from eeki_label.profile.static import static_profile

ROOT = Path(__file__).resolve().parent.parent


def entry_shapes(loaded, entry: dict) -> dict:
    if "input_shapes" in entry:
        overrides = {k: tuple(v) for k, v in entry["input_shapes"].items()}
    else:
        overrides = {loaded.proto.graph.input[0].name: tuple(entry["input_shape"])}
    return resolve_input_shapes(loaded.proto, overrides)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exports", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=ROOT / "scripts" / "catalogue_models-2.0.0.json")
    ap.add_argument("ids", nargs="*", help="only these model ids (default: all)")
    args = ap.parse_args()
    doc = json.loads(args.source.read_text())
    models = doc["models"] if isinstance(doc, dict) else doc
    failed = 0
    print(f"{'model':44s} {'task':22s} {'params':>12s} {'GMAC':>10s} {'published':>10s} {'dev':>8s} {'s':>5s}")
    for m in models:
        if args.ids and m["id"] not in args.ids:
            continue
        path = args.exports / m["onnx_file"]
        t0 = time.perf_counter()
        try:
            loaded = load_model(path)
            p = static_profile(loaded, entry_shapes(loaded, m))
        except Exception as exc:  # report and go on with the next model
            print(f"{m['id']:44s} FAILED: {type(exc).__name__}: {exc}")
            failed += 1
            continue
        pub = (m.get("published") or {}).get("macs")
        dev = f"{(p.macs / pub - 1) * 100:+7.2f}%" if pub else "       -"
        pubs = f"{pub / 1e9:10.4f}" if pub else "         -"
        print(f"{m['id']:44s} {m['task']:22s} {p.parameters:12d} {p.macs / 1e9:10.4f} {pubs} {dev} "
              f"{time.perf_counter() - t0:5.1f}", flush=True)
        if p.unresolved_nodes:
            print(f"    unresolved nodes: {list(p.unresolved_nodes)[:5]}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
