#!/usr/bin/env python3
"""Export the GPT-2 text-generation references at their published configs (random weights) with a KV cache.

    python scripts/export_text_generation.py OUT_DIR [--only gpt2-117m gpt2-345m ...]

Run in a throwaway venv with torch and transformers (no hub access is needed: the configs are those of
the GPT-2 paper, Radford et al. 2019, Table 2; weights are random, which changes no profile figure).
The signature is that of scripts/export_transformers.py (``past_key_values.<i>.key/value`` in,
``present.<i>.key/value`` out, opset 17, external data). Then, in eeki-label's venv:

    python scripts/profile_text_generation.py OUT_DIR   # figures -> scripts/catalogue_source_text_generation.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_transformers import export_decoder  # noqa: E402

#: id -> GPT2Config fields (GPT-2 paper, Table 2: layers and d_model; heads = d_model / 64 as released).
CONFIGS = {
    "gpt2-117m": dict(n_layer=12, n_embd=768, n_head=12),
    "gpt2-345m": dict(n_layer=24, n_embd=1024, n_head=16),
    "gpt2-762m": dict(n_layer=36, n_embd=1280, n_head=20),
    "gpt2-1542m": dict(n_layer=48, n_embd=1600, n_head=25),
}
COMMON = dict(vocab_size=50257, n_positions=1024)


def main() -> int:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--half", action="store_true", help="export float16 weights (half the memory; parameters, MACs "
                                                         "and activation elements are unchanged)")
    args = ap.parse_args()
    for name, cfg in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(**COMMON, **cfg, attn_implementation="eager")).eval()
        if args.half:
            model = model.half()
        path = export_decoder(name.replace("-", "_"), model, folder, external=True)
        (folder / "config.json").write_text(json.dumps({**COMMON, **cfg}, indent=2))
        print(f"{path}: {sum(p.numel() for p in model.parameters()):,} torch parameters")
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
