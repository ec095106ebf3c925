#!/usr/bin/env python3
"""Export the MLPerf benchmark architectures whose published energies calibrate the device classes.

Run in a THROWAWAY environment with torch, torchvision, transformers and onnx (torch is not a
dependency of eeki-label). Weights are random: only the architecture and tensor shapes matter for
the static profile (MACs, activation elements, parameters) that ``scripts/fit_devices.py`` uses.

Architectures (MLPerf reference implementations, batch 1, the benchmark's input shape):

* ``retinanet``  MLPerf Inference "retinanet": RetinaNet with a ResNeXt50-32x4d FPN backbone,
  800x800 input, 264 OpenImages classes, 9 anchors; backbone + FPN + heads (the box decoding and
  NMS after the heads are not exported: they are not MAC work and run partly on the host).
* ``bert-large-384``  MLPerf Inference "bert-99": BERT-large (24 layers, hidden 1024, 16 heads,
  intermediate 4096) with a SQuAD span head, sequence length 384.
* ``tiny-kws-dscnn``  MLPerf Tiny keyword spotting: DS-CNN (S), 49x10x1 MFCC input, 64 channels,
  a 10x4 stride-2 convolution then 4 depthwise-separable blocks, 12 classes.
* ``tiny-vww-mobilenet``  MLPerf Tiny visual wake words: MobileNetV1 width 0.25, 96x96x3, 2 classes.
* ``tiny-ad-autoencoder``  MLPerf Tiny anomaly detection: dense autoencoder 640-128-128-128-128-8-
  128-128-128-128-640 with batch norm and ReLU.

MLPerf Tiny "ic" (ResNet-8) is profiled in tests/energy/test_estimate.py already (device data 1.0.0).

Usage:
    python scripts/export_mlperf.py --out OUTDIR [NAME ...]
then ``python scripts/strip_weights.py OUTDIR/NAME.onnx tests/data/arch/mlperf/NAME.onnx`` for the
architecture-only copies that tests/energy/test_calibration.py re-profiles (the Tiny models and RetinaNet;
BERT-large's profile needs a profiler that resolves its attention MatMuls' shapes, as main's at d8ac877
does), and profile each file with ``eeki-label assess OUTDIR/NAME.onnx --json`` (model.macs,
model.activation_elements, model.parameters); scripts/fit_devices.py reads those figures from the
device-data file.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import torch
from torch import nn

OPSET = 17


def retinanet():
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = resnet_fpn_backbone(
                backbone_name="resnext50_32x4d", weights=None, trainable_layers=5,
                returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
            self.head = RetinaNetHead(256, 9, 264)

        def forward(self, x):
            feats = list(self.backbone(x).values())
            out = self.head(feats)
            return out["cls_logits"], out["bbox_regression"]

    return Net(), (torch.randn(1, 3, 800, 800),)


def bert_large():
    from transformers import BertConfig, BertForQuestionAnswering

    cfg = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                     vocab_size=30522, max_position_embeddings=512)
    cfg._attn_implementation = "eager"
    model = BertForQuestionAnswering(cfg)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, ids, mask, seg):
            o = self.m(input_ids=ids, attention_mask=mask, token_type_ids=seg)
            return o.start_logits, o.end_logits

    n = 384
    return Net(), (torch.ones(1, n, dtype=torch.long), torch.ones(1, n, dtype=torch.long),
                   torch.zeros(1, n, dtype=torch.long))


def kws_dscnn():
    def dsblock(c):
        return [nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.ReLU(),
                nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU()]

    layers = [nn.Conv2d(1, 64, (10, 4), stride=2, padding=(5, 1)), nn.BatchNorm2d(64), nn.ReLU()]
    for _ in range(4):
        layers += dsblock(64)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 12)]
    return nn.Sequential(*layers), (torch.randn(1, 1, 49, 10),)


def vww_mobilenet():
    a = 0.25
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    c_in = int(32 * a)
    layers = [nn.Conv2d(3, c_in, 3, stride=2, padding=1), nn.BatchNorm2d(c_in), nn.ReLU()]
    for c, s in cfg:
        c_out = int(c * a)
        layers += [nn.Conv2d(c_in, c_in, 3, stride=s, padding=1, groups=c_in), nn.BatchNorm2d(c_in), nn.ReLU(),
                   nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 2)]
    return nn.Sequential(*layers), (torch.randn(1, 3, 96, 96),)


def ad_autoencoder():
    dims = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]
    layers = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
    layers += [nn.Linear(128, 640)]
    return nn.Sequential(*layers), (torch.randn(1, 640),)


BUILDERS = {
    "retinanet": retinanet,
    "bert-large-384": bert_large,
    "tiny-kws-dscnn": kws_dscnn,
    "tiny-vww-mobilenet": vww_mobilenet,
    "tiny-ad-autoencoder": ad_autoencoder,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    for name in args.names or list(BUILDERS):
        model, inputs = BUILDERS[name]()
        model.eval()
        params = sum(p.numel() for p in model.parameters())
        path = os.path.join(args.out, f"{name}.onnx")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, inputs, path, opset_version=OPSET, dynamo=False, do_constant_folding=True)
        print(f"{name:22s} torch parameters {params:12d}  -> {path} ({os.path.getsize(path)} bytes)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
