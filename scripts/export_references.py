#!/usr/bin/env python3
"""Export the non-torchvision reference architectures of catalogue 2.0 to ONNX (random weights).

Run this in a THROWAWAY environment that has torch + transformers + onnx; none of them is a
dependency of eeki-label. Every model is built from its configuration (layer sizes written below,
each with its source); no checkpoint is downloaded: only architecture and tensor shapes matter for
the energy-label profiler.

* keyword spotting: DS-CNN S/M/L of Zhang et al. 2017, "Hello Edge: Keyword Spotting on
  Microcontrollers" (arXiv:1711.07128), layer sizes from the authors' training commands
  (ARM-software/ML-KWS-for-MCU, train_commands.txt, "--model_size_info"), input 1x1x49x10 MFCC
  (40 ms window, 20 ms stride over 1 s, 10 coefficients), TensorFlow 'SAME' padding reproduced.
* text classification: BERT (google-research/bert configurations: L layers, H hidden, A heads,
  4H intermediate, vocabulary 30522) with a 2-class head, inputs input_ids / attention_mask
  [1, 128] int64, output logits [1, 2].
* sentence embedding: the sentence-transformers models' encoders (BERT/MiniLM, MPNet) at 128
  tokens, inputs input_ids / attention_mask [1, 128] int64, output last_hidden_state (the mean
  pooling of sentence-transformers is NOT included: it is a masked average, ~0.01 % of the MACs).
* speech recognition: wav2vec 2.0 CTC models (Wav2Vec2ForCTC) on 10 s of 16 kHz audio,
  input_values [1, 160000] float, output logits [1, 499, 32].

For every model two files are written, as scripts/export_torchvision.py does: the full export in
--out, and an architecture-only copy (float weights declared as graph inputs, strip_weights.py) in
--arch-out.

Usage:
    python scripts/export_references.py --out OUTDIR --arch-out tests/data/arch [NAME ...]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import onnx
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_torchvision import randomize_constants  # noqa: E402
from strip_weights import check, fold_static_shapes, strip_model  # noqa: E402

OPSET = 17
SEQ = 128
AUDIO_SAMPLES = 160000  # 10 s at 16 kHz


# ---------------------------------------------------------------- keyword spotting (DS-CNN)

# model_size_info of ARM-software/ML-KWS-for-MCU train_commands.txt ("#DS-CNN Models"):
# [n_layers, then per layer: channels, kernel_t, kernel_f, stride_t, stride_f]
DS_CNN = {
    "ds_cnn_s": [5, 64, 10, 4, 2, 2, 64, 3, 3, 1, 1, 64, 3, 3, 1, 1, 64, 3, 3, 1, 1, 64, 3, 3, 1, 1],
    "ds_cnn_m": [5, 172, 10, 4, 2, 1, 172, 3, 3, 2, 2, 172, 3, 3, 1, 1, 172, 3, 3, 1, 1, 172, 3, 3, 1, 1],
    "ds_cnn_l": [6, 276, 10, 4, 2, 1, 276, 3, 3, 2, 2, 276, 3, 3, 1, 1, 276, 3, 3, 1, 1,
                 276, 3, 3, 1, 1, 276, 3, 3, 1, 1],
}
KWS_SHAPE = (1, 1, 49, 10)  # 49 MFCC frames x 10 coefficients
KWS_CLASSES = 12  # 10 keywords + silence + unknown


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class DSCNN(torch.nn.Module):
    """DS-CNN of ML-KWS-for-MCU models.py create_ds_cnn_model: a standard conv (BN, ReLU), then
    depthwise-separable blocks (depthwise conv, BN, ReLU, pointwise conv, BN, ReLU), global average
    pooling and a fully connected layer to the 12 classes."""

    def __init__(self, info: list[int], t: int = KWS_SHAPE[2], f: int = KWS_SHAPE[3]):
        super().__init__()
        n = info[0]
        layers = [info[1 + 5 * i: 6 + 5 * i] for i in range(n)]
        mods: list[torch.nn.Module] = []
        in_ch = 1
        for i, (ch, kt, kf, st, sf) in enumerate(layers):
            pt, pf = _same_pad(t, kt, st), _same_pad(f, kf, sf)
            mods.append(torch.nn.ZeroPad2d((pf[0], pf[1], pt[0], pt[1])))
            if i == 0:
                mods += [torch.nn.Conv2d(in_ch, ch, (kt, kf), (st, sf)), torch.nn.BatchNorm2d(ch),
                         torch.nn.ReLU()]
            else:
                mods += [torch.nn.Conv2d(in_ch, in_ch, (kt, kf), (st, sf), groups=in_ch),
                         torch.nn.BatchNorm2d(in_ch), torch.nn.ReLU(),
                         torch.nn.Conv2d(in_ch, ch, 1), torch.nn.BatchNorm2d(ch), torch.nn.ReLU()]
            in_ch = ch
            t, f = math.ceil(t / st), math.ceil(f / sf)
        self.features = torch.nn.Sequential(*mods)
        self.pool = torch.nn.AvgPool2d((t, f))
        self.fc = torch.nn.Linear(in_ch, KWS_CLASSES)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# ---------------------------------------------------------------- transformers


# google-research/bert README ("BERT Miniatures": L/H/A; BERT-Base: L=12, H=768, A=12)
BERT_CLS = {
    "bert_tiny_sst2": (2, 128, 2),
    "bert_mini_sst2": (4, 256, 4),
    "bert_small_sst2": (4, 512, 8),
    "bert_base_sst2": (12, 768, 12),
}
# sentence-transformers models' config.json values (base models: nreimers/MiniLM-L3-H384-uncased,
# nreimers/MiniLM-L6-H384-uncased, microsoft/MiniLM-L12-H384-uncased: BERT with 12 heads,
# intermediate 1536; microsoft/mpnet-base: MPNet 12/768/12, intermediate 3072, vocabulary 30527,
# 514 positions, 32 relative-attention buckets)
ST_BERT = {
    "paraphrase_minilm_l3_v2": 3,
    "all_minilm_l6_v2": 6,
    "all_minilm_l12_v2": 12,
}
ST_MPNET = ["all_mpnet_base_v2"]
# wav2vec 2.0: Wav2Vec2Config defaults are the BASE model (12 layers, 768, 12 heads, 3072,
# group-norm feature extractor, post-LN); LARGE (LV-60k) uses 24 layers, 1024, 16 heads, 4096,
# layer-norm feature extractor with conv bias and pre-LN ("stable layer norm"): the values of the
# facebook/wav2vec2-large-960h-lv60(-self) configuration. CTC vocabulary: 32 characters.
WAV2VEC2 = {
    "wav2vec2_base_960h": {},
    "wav2vec2_large_960h_lv60": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                     intermediate_size=4096, feat_extract_norm="layer",
                                     conv_bias=True, do_stable_layer_norm=True),
}


class TextCls(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class TextEnc(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class CTC(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_values):
        return self.model(input_values=input_values).logits


def _text_inputs(vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (1, SEQ), generator=g, dtype=torch.int64)
    return (ids, torch.ones(1, SEQ, dtype=torch.int64)), ["input_ids", "attention_mask"]


def build(name: str):
    """Return (module, example inputs, input names, output names)."""
    import transformers as tf

    if name in DS_CNN:
        return DSCNN(DS_CNN[name]), (torch.randn(*KWS_SHAPE),), ["input"], ["logits"]
    if name in BERT_CLS:
        layers, hidden, heads = BERT_CLS[name]
        cfg = tf.BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                            intermediate_size=4 * hidden, num_labels=2, attn_implementation="eager")
        args, names = _text_inputs(cfg.vocab_size)
        return TextCls(tf.BertForSequenceClassification(cfg)), args, names, ["logits"]
    if name in ST_BERT:
        cfg = tf.BertConfig(num_hidden_layers=ST_BERT[name], hidden_size=384, num_attention_heads=12,
                            intermediate_size=1536, attn_implementation="eager")
        args, names = _text_inputs(cfg.vocab_size)
        return TextEnc(tf.BertModel(cfg, add_pooling_layer=False)), args, names, ["last_hidden_state"]
    if name in ST_MPNET:
        cfg = tf.MPNetConfig(vocab_size=30527, attn_implementation="eager")
        args, names = _text_inputs(cfg.vocab_size)
        return TextEnc(tf.MPNetModel(cfg, add_pooling_layer=False)), args, names, ["last_hidden_state"]
    if name in WAV2VEC2:
        cfg = tf.Wav2Vec2Config(vocab_size=32, attn_implementation="eager", **WAV2VEC2[name])
        return (CTC(tf.Wav2Vec2ForCTC(cfg)), (torch.randn(1, AUDIO_SAMPLES),), ["input_values"],
                ["logits"])
    raise SystemExit(f"unknown model {name!r}; known: {ALL}")


ALL = list(DS_CNN) + list(BERT_CLS) + list(ST_BERT) + ST_MPNET + list(WAV2VEC2)


def export(model, args, in_names, out_names, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, path, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True, input_names=in_names, output_names=out_names)


_FREEZE_MAX_ELEMENTS = 4096


def freeze_static_tensors(path: str, inputs) -> onnx.ModelProto:
    """Replace small non-float tensors that do not depend on input VALUES by Constant nodes.

    The TorchScript exporter writes shape-derived integer computations that
    strip_weights.fold_static_shapes does not evaluate (ConstantOfShape, Where, Expand, ...: e.g.
    ZeroPad2d's pads, BERT's buffered token_type_ids expanded to the batch size). A tensor is
    value-independent when every path from it back to a graph input passes a Shape/Size node; such
    tensors are computed once with onnxruntime at the fixed export shapes and stored as constants
    (the dead producers are dropped afterwards by fold_static_shapes), so that shape inference
    resolves every tensor shape without a runtime probe."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    m = onnx.load(path)
    graph_inputs = {i.name for i in m.graph.input} - {i.name for i in m.graph.initializer}
    dependent = set(graph_inputs)
    inferred = onnx.shape_inference.infer_shapes(strip_model(m), data_prop=True)
    types = {v.name: v.type.tensor_type for v in inferred.graph.value_info}
    candidates = []
    for n in m.graph.node:
        if n.op_type in ("Shape", "Size"):
            continue
        if any(i in dependent for i in n.input if i):
            dependent.update(n.output)
            continue
        if n.op_type == "Constant":
            continue
        for o in n.output:
            t = types.get(o)
            if t is None or t.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
                continue
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            if None in dims or int(np.prod(dims)) > _FREEZE_MAX_ELEMENTS:
                continue
            candidates.append(o)
    if not candidates:
        return m
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in candidates)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    values = dict(zip(candidates, sess.run(candidates, feeds)))
    nodes = []
    for n in m.graph.node:
        if len(n.output) == 1 and n.output[0] in values:
            nodes.append(onnx.helper.make_node(
                "Constant", [], [n.output[0]], name=n.name,
                value=numpy_helper.from_array(np.asarray(values[n.output[0]]), n.output[0])))
        else:
            nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for full ONNX exports")
    ap.add_argument("--arch-out", required=True, help="directory for architecture-only copies")
    ap.add_argument("names", nargs="*", help="models to export (default: all)")
    args = ap.parse_args(argv)
    names = args.names or ALL
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.arch_out, exist_ok=True)
    torch.manual_seed(0)
    import transformers
    print(f"torch {torch.__version__}  transformers {transformers.__version__}  onnx {onnx.__version__}")
    print(f"{'model':30s} {'params':>12s} {'full bytes':>12s} {'arch bytes':>10s}  s")
    for name in names:
        t0 = time.time()
        model, inputs, in_names, out_names = build(name)
        model.eval()
        randomize_constants(model)
        params = sum(p.numel() for p in model.parameters())
        full = os.path.join(args.out, f"{name}.onnx")
        with torch.no_grad():
            export(model, inputs, in_names, out_names, full)
        m = fold_static_shapes(freeze_static_tensors(full, inputs))
        onnx.save(m, full)
        check(m)
        arch = strip_model(m)
        check(arch)
        arch_path = os.path.join(args.arch_out, f"{name}.onnx")
        onnx.save(arch, arch_path)
        print(f"{name:30s} {params:12d} {os.path.getsize(full):12d} {os.path.getsize(arch_path):10d} "
              f"{time.time() - t0:5.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
