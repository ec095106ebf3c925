#!/usr/bin/env python3
"""Export torchvision's Kinetics-400 video classifiers (catalogue task video-classification).

Run in a THROWAWAY environment with torch + torchvision + onnx (as scripts/export_torchvision.py;
random weights, ``weights=None``): one clip of 16 RGB frames at 112x112 (torchvision's video reference
recipe: resize 128x171, centre crop 112, clip length 16), batch 1.

    python scripts/export_video.py --out OUTDIR --arch-out tests/data/arch
"""

from __future__ import annotations

import argparse
import os
import sys

import onnx
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_torchvision import export, randomize_constants  # noqa: E402
from strip_weights import check, fold_static_shapes, strip_model  # noqa: E402

MODELS = ["r3d_18", "mc3_18", "r2plus1d_18"]
CLIP_SHAPE = (1, 3, 16, 112, 112)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch-out", required=True)
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.arch_out, exist_ok=True)
    torch.manual_seed(0)
    for name in args.names or MODELS:
        model = getattr(torchvision.models.video, name)(weights=None).eval()
        randomize_constants(model)
        full = os.path.join(args.out, f"{name}.onnx")
        with torch.no_grad():
            exporter, opset = export(model, CLIP_SHAPE, full)
        m = fold_static_shapes(onnx.load(full))
        onnx.save(m, full)
        check(m)
        arch = strip_model(m)
        check(arch)
        onnx.save(arch, os.path.join(args.arch_out, f"{name}.onnx"))
        print(name, exporter, opset, os.path.getsize(full), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
