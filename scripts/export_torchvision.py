#!/usr/bin/env python3
"""Export torchvision reference architectures to ONNX (random weights).

Run this in a THROWAWAY environment that has torch + torchvision + onnx;
torch is not a dependency of eeki-label.  Weights are random
(``weights=None``): only architecture and tensor shapes matter for the
energy-label profiler.

For every model two files are written:

* ``--out/NAME.onnx``       full export (batch 1, fixed input shape); static
  shape arithmetic (Shape -> Gather -> Div -> Slice ...) is folded into
  Constants unless ``--no-fold`` is given, so every tensor shape is static
* ``--arch-out/NAME.onnx``  architecture-only copy: large float weights are
  declared as graph inputs instead of initializers (see strip_weights.py),
  a few KB, suitable as a test fixture.

Usage:
    python scripts/export_torchvision.py --out OUTDIR --arch-out tests/data/arch [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import onnx
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strip_weights import check, fold_static_shapes, strip_model  # noqa: E402

OPSET = 17

CLASSIFIERS = [
    "mobilenet_v3_small",
    "squeezenet1_1",
    "shufflenet_v2_x1_0",
    "mobilenet_v2",
    "efficientnet_b0",
    "resnet18",
    "densenet121",
    "resnet50",
    "vgg16",
]
SEGMENTERS = [
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "fcn_resnet50",
    "deeplabv3_resnet50",
]
# Catalogue 2.0 classifiers: name -> input shape at which the torchvision weights were evaluated
# (the weights' transforms: crop_size; EfficientNetV2-S is evaluated at 384x384).
CLASSIFIERS_2 = {
    "mobilenet_v3_large": (1, 3, 224, 224),
    "regnet_y_400mf": (1, 3, 224, 224),
    "convnext_tiny": (1, 3, 224, 224),
    "efficientnet_v2_s": (1, 3, 384, 384),
    "vit_b_16": (1, 3, 224, 224),
}
# Catalogue 2.0 detectors: backbone + heads only (no transform, anchors, box decoding or NMS), at a
# fixed square input: SSD/SSDlite resize to their fixed size (300/320); RetinaNet/FCOS resize the
# shorter side to min_size=800, i.e. a square image is evaluated at 800x800.
DETECTORS = {
    "ssdlite320_mobilenet_v3_large": (1, 3, 320, 320),
    "ssd300_vgg16": (1, 3, 300, 300),
    "retinanet_resnet50_fpn_v2": (1, 3, 800, 800),
    "fcos_resnet50_fpn": (1, 3, 800, 800),
}
CLS_SHAPE = (1, 3, 224, 224)
SEG_SHAPE = (1, 3, 520, 520)


class OutOnly(torch.nn.Module):
    """Wrap a segmentation model so that forward returns only the "out" tensor."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


class DetectionHeads(torch.nn.Module):
    """Backbone (+FPN/extra layers) and heads of a torchvision one-stage detector.

    Returns the raw head tensors (box regression, class logits; FCOS also centerness) for a
    normalised image tensor. The data-dependent post-processing (GeneralizedRCNNTransform /
    resize, anchor generation, box decoding, score threshold, NMS) is left out, so that every
    tensor shape is static.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head

    def forward(self, x):
        features = self.backbone(x)
        if isinstance(features, torch.Tensor):
            features = [features]
        else:
            features = list(features.values())
        out = self.head(features)
        return tuple(out[k] for k in sorted(out))


def randomize_constants(model: torch.nn.Module) -> None:
    """Give every float parameter/buffer distinct values.

    With ``weights=None`` torchvision initialises BatchNorm to the identity and
    many biases to zero.  The exporter then folds BN into identical all-zero
    Conv biases and de-duplicates them into shared initializers plus
    ``Identity`` nodes, which a trained model would not have.  Random, distinct
    values keep the exported graph identical in structure to a trained one.
    """
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point() and t.numel() > 1 and bool((t == t.flatten()[0]).all()):
                t.add_(torch.randn(t.shape, generator=g) * 0.01)


ALL = CLASSIFIERS + SEGMENTERS + list(CLASSIFIERS_2) + list(DETECTORS)


def build(name: str):
    """Return (module, input_shape, trainable_param_count)."""
    if name in CLASSIFIERS:
        model = getattr(torchvision.models, name)(weights=None)
        shape = CLS_SHAPE
    elif name in CLASSIFIERS_2:
        model = getattr(torchvision.models, name)(weights=None)
        shape = CLASSIFIERS_2[name]
    elif name in DETECTORS:
        model = DetectionHeads(getattr(torchvision.models.detection, name)(
            weights=None, weights_backbone=None))
        shape = DETECTORS[name]
    elif name in SEGMENTERS:
        kwargs = dict(weights=None, weights_backbone=None)
        if name != "lraspp_mobilenet_v3_large":  # LRASPP has no aux head / aux_loss arg
            kwargs["aux_loss"] = False
        model = OutOnly(getattr(torchvision.models.segmentation, name)(**kwargs))
        shape = SEG_SHAPE
    else:
        raise SystemExit(f"unknown model {name!r}; known: {ALL}")
    model.eval()
    randomize_constants(model)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, shape, params


def export(model, shape, path):
    """Export with the TorchScript exporter (dynamo=False); fall back to dynamo."""
    x = torch.randn(*shape)
    with torch.no_grad():
        y = model(x)
    n_out = len(y) if isinstance(y, tuple) else 1
    outputs = ["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    common = dict(input_names=["input"], output_names=outputs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, opset_version=OPSET, dynamo=False,
                              do_constant_folding=True, **common)
        return "torchscript", OPSET
    except Exception as exc:  # exporter removed / unsupported op
        print(f"  TorchScript exporter failed ({exc!r}); trying dynamo", file=sys.stderr)
    prog = torch.onnx.export(model, (x,), dynamo=True, opset_version=max(OPSET, 18),
                             external_data=False, **common)
    prog.save(path, external_data=False)
    return "dynamo", onnx.load(path, load_external_data=False).opset_import[0].version


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for full ONNX exports")
    ap.add_argument("--arch-out", required=True, help="directory for architecture-only copies")
    ap.add_argument("--params-json", help="write {name: torch param count} here "
                    "(default: OUT/torch_params.json)")
    ap.add_argument("--no-fold", action="store_true",
                    help="keep the exporter's Shape/Gather/Div/... sub-graphs as they are")
    ap.add_argument("names", nargs="*", help="models to export (default: all)")
    args = ap.parse_args(argv)

    names = args.names or ALL
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.arch_out, exist_ok=True)
    torch.manual_seed(0)
    # nn.MultiheadAttention's inference fast path (aten::_native_multi_head_attention, used by
    # ViT in eval mode) has no TorchScript-ONNX symbolic; the slow path exports as MatMul/Softmax.
    torch.backends.mha.set_fastpath_enabled(False)
    print(f"torch {torch.__version__}  torchvision {torchvision.__version__}  onnx {onnx.__version__}")

    params_path = args.params_json or os.path.join(args.out, "torch_params.json")
    counts = {}
    if os.path.exists(params_path):
        with open(params_path) as f:
            counts = json.load(f)

    hdr = (f"{'model':30s} {'params':>12s} {'torch bytes':>12s} {'full bytes':>12s} "
           f"{'arch bytes':>10s} exporter  opset  s")
    print(hdr)
    for name in names:
        t0 = time.time()
        model, shape, params = build(name)
        full = os.path.join(args.out, f"{name}.onnx")
        with torch.no_grad():
            exporter, opset = export(model, shape, full)
        torch_bytes = os.path.getsize(full)  # as written by torch, before folding
        m = onnx.load(full)
        if not args.no_fold:
            m = fold_static_shapes(m)
            onnx.save(m, full)
        check(m)
        arch = strip_model(m)
        check(arch)
        arch_path = os.path.join(args.arch_out, f"{name}.onnx")
        onnx.save(arch, arch_path)
        counts[name] = params
        print(f"{name:30s} {params:12d} {torch_bytes:12d} {os.path.getsize(full):12d} "
              f"{os.path.getsize(arch_path):10d} {exporter:9s} {opset:5d} {time.time() - t0:5.1f}",
              flush=True)

    with open(params_path, "w") as f:
        json.dump(counts, f, indent=2, sort_keys=True)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
