#!/usr/bin/env python3
"""Export small transformer test models (random weights from configs, no hub access) to ONNX.

    python scripts/export_transformers.py OUT_DIR [--check]

Run in a throwaway venv with torch and transformers (torch is not a dependency of eeki-label).
Decoders are exported with a KV cache the way optimum and onnxruntime-genai name it: inputs
``input_ids``, ``attention_mask`` [batch, past + new], ``position_ids``, ``past_key_values.<i>.key`` /
``.value`` [batch, kv_heads, past, head_dim]; outputs ``logits`` and ``present.<i>.key`` / ``.value``.
The legacy TorchScript exporter (opset 17) writes attention as plain MatMul/Softmax chains.
``--check`` compares onnxruntime with torch at a prefill (past 0) and a decode step (past 7).

Models (configs below, random weights, seed 0):
  gpt2_tiny.onnx   GPT-2 architecture: 2 layers, 4 heads, hidden 64, vocab 128
  llama_gqa.onnx   Llama architecture: 2 layers, 4 query heads, 2 kv heads (GQA), RoPE, SwiGLU 128, vocab 128
  bert_tiny.onnx   BERT encoder: 2 layers, 4 heads, hidden 64, intermediate 128, vocab 128 (no KV cache)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import (BertConfig, BertModel, DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM)

CONFIGS = {
    "gpt2_tiny": ("gpt2", dict(vocab_size=128, n_positions=64, n_embd=64, n_layer=2, n_head=4)),
    "llama_gqa": ("llama", dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
    "bert_tiny": ("bert", dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=128, max_position_embeddings=64)),
}


def build(kind: str, cfg: dict):
    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(**cfg, attn_implementation="eager")).eval()
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="eager")).eval()
    return BertModel(BertConfig(**cfg, attn_implementation="eager"), add_pooling_layer=False).eval()


class WithCache(torch.nn.Module):
    """Tensors in, tensors out: the cache as flat past/present tensors (what the ONNX signature shows)."""

    def __init__(self, model, layers: int):
        super().__init__()
        self.m, self.layers = model, layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     past_key_values=cache, use_cache=True)
        res = [out.logits]
        for layer in out.past_key_values.layers[: self.layers]:
            res += [layer.keys, layer.values]
        return tuple(res)


def dims(model) -> tuple[int, int, int]:
    c = model.config
    heads = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    return c.num_hidden_layers, kv, c.hidden_size // heads


def decoder_feeds(model, past: int, new: int, seed: int = 0):
    layers, kv, hd = dims(model)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, new), generator=g)
    mask = torch.ones(1, past + new, dtype=torch.int64)
    pos = torch.arange(past, past + new)[None]
    dtype = next(model.parameters()).dtype
    cache = [torch.randn(1, kv, past, hd, generator=g).to(dtype) for _ in range(2 * layers)]
    return (ids, mask, pos, *cache)


def export_decoder(name: str, model, out: Path, opset: int = 17, external: bool = False) -> Path:
    layers = model.config.num_hidden_layers
    names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    outs = ["logits"] + [n.replace("past_key_values", "present") for n in names]
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"},
           "logits": {0: "batch_size", 1: "sequence_length"}}
    dyn.update({n: {0: "batch_size", 2: "past_sequence_length"} for n in names})
    dyn.update({n: {0: "batch_size", 2: "total_sequence_length"} for n in outs[1:]})
    path = out / f"{name}.onnx"
    with torch.no_grad():
        torch.onnx.export(WithCache(model, layers), decoder_feeds(model, 3, 5), str(path),
                          input_names=["input_ids", "attention_mask", "position_ids", *names], output_names=outs,
                          dynamic_axes=dyn, opset_version=opset, dynamo=False, external_data=external)
    return path


def export_encoder(name: str, model, out: Path) -> Path:
    path = out / f"{name}.onnx"
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    with torch.no_grad():
        torch.onnx.export(Encoder(), args, str(path), input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch_size", 1: "sequence_length"} for n in names},
                          opset_version=17, dynamo=False)
    return path


def check_decoder(model, path: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    bad = False
    model.eval()
    for past, new in ((3, 5), (0, 6), (7, 1), (4, 4)):
        feeds = decoder_feeds(model, past, new, seed=1)
        with torch.no_grad():
            want = WithCache(model, model.config.num_hidden_layers)(*feeds)
        got = sess.run(None, {i.name: f.numpy() for i, f in zip(sess.get_inputs(), feeds)})
        err = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
        print(f"  {path.name}: past {past}, new {new}: max |onnxruntime - torch| = {err:.2e}")
        bad = bad or err > 1e-3
    if bad:
        raise SystemExit(f"{path.name}: onnxruntime differs from torch")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (kind, cfg) in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        model = build(kind, cfg)
        if kind == "bert":
            path = export_encoder(name, model, args.out)
        else:
            path = export_decoder(name, model, args.out)
            if args.check:
                check_decoder(model, path)
        print(f"{path}: {path.stat().st_size} bytes, {sum(p.numel() for p in model.parameters())} torch parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
