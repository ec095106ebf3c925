#!/usr/bin/env python3
"""Regenerate the reference catalogue's profile figures with eeki-label's own static profiler.

    python scripts/build_catalogue.py --exports DIR [--check]

DIR holds the ONNX exports named in scripts/catalogue_source.json (``onnx_file``), made with
scripts/export_torchvision.py in a throwaway venv (torch is not a dependency of eeki-label).
The source file carries what a person curates (ids, tasks, published quality with its source);
this script adds what the profiler measures (parameters, MACs, activation elements) and the
weight-layer structure signature (eeki_label.recycle.structure_signature), and writes
reference_models/catalogue-<version>.json. With ``--check`` it only compares and exits non-zero
when a figure would change. It also prints measured vs published MACs (the 3 % check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eeki_label import __version__
from eeki_label.model_io import load_model
from eeki_label.profile.shapes import resolve_input_shapes
from eeki_label.profile.static import static_profile
from eeki_label.recycle import structure_signature

ROOT = Path(__file__).resolve().parent.parent


def entry_shapes(m: dict) -> dict:
    """{input name: shape} of a source entry: ``input_shapes``, or ``input_shape`` for the first input."""
    if "input_shapes" in m:
        return {k: tuple(v) for k, v in m["input_shapes"].items()}
    return {None: tuple(m["input_shape"])}


def profile_entry(path: Path, shapes: dict) -> dict:
    loaded = load_model(path)
    if None in shapes:
        shapes = {loaded.proto.graph.input[0].name: shapes[None]}
    shapes = resolve_input_shapes(loaded.proto, shapes)
    p = static_profile(loaded, shapes)
    if p.unresolved_nodes:
        raise SystemExit(f"{path.name}: unresolved nodes {p.unresolved_nodes[:5]}")
    return {
        "parameters": p.parameters,
        "weight_bytes": p.weight_bytes,
        "macs": p.macs,
        "macs_depthwise": p.macs_depthwise,
        "activation_elements": p.activation_elements,
        "activation_peak_elements": p.activation_peak_elements,
    }


def structure_entry(path: Path) -> dict:
    """The weight-layer signature recycle.py compares candidates with (no-base structural match)."""
    layers = structure_signature(load_model(path).proto)
    return {"layers": [layer.token for layer in layers],
            "weight_parameters": sum(layer.parameters for layer in layers),
            "method": "eeki_label.recycle.structure_signature: Conv/ConvTranspose/Gemm/MatMul/RNN weight shapes, graph order"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exports", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=ROOT / "scripts" / "catalogue_source.json")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    source = json.loads(args.source.read_text())
    # catalogue 2.0.0 on: the header names a tasks file and a models file beside it
    if "tasks_file" in source:
        tasks = json.loads((args.source.parent / source.pop("tasks_file")).read_text())
        source.update(tasks)
    if "models_file" in source:
        source["models"] = json.loads((args.source.parent / source.pop("models_file")).read_text())
    for extra in source.pop("profiled_models_files", []):
        # references profiled per query by scripts/export_text_generation.py (profile/decoder.py): their
        # phase figures are taken as written there; tests/unit/test_decoder.py re-profiles the stored export
        source["models"] += json.loads((args.source.parent / extra).read_text())["models"]
    out = {k: v for k, v in source.items() if k != "models"}
    out["profiler"] = f"eeki-label {__version__} static profile, scripts/build_catalogue.py"
    out["models"] = []
    print(f"{'model':32s} {'GMAC measured':>14s} {'published':>10s} {'deviation':>10s}")
    worst = 0.0
    for m in source["models"]:
        entry = dict(m)
        if "prefill" in m.get("profile", {}):
            out["models"].append(entry)  # a per-query reference, profiled phase by phase (see above)
            continue
        prof = profile_entry(args.exports / m["onnx_file"], entry_shapes(m))
        entry["profile"] = prof
        entry["structure"] = structure_entry(args.exports / m["onnx_file"])
        pub = m.get("published", {}).get("macs")
        if pub:
            dev = prof["macs"] / pub - 1
            worst = max(worst, abs(dev))
            print(f"{m['id']:32s} {prof['macs'] / 1e9:14.4f} {pub / 1e9:10.4f} {dev * 100:+9.2f}%")
        out["models"].append(entry)
    print(f"largest deviation from published MACs: {worst * 100:.2f} %")
    target = ROOT / "reference_models" / f"catalogue-{source['version']}.json"
    text = json.dumps(out, indent=2) + "\n"
    if args.check:
        same = target.exists() and target.read_text() == text
        print("up to date" if same else f"{target.name} would change")
        return 0 if same else 1
    target.write_text(text)
    print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
