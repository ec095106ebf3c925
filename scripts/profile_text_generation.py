#!/usr/bin/env python3
"""Profile the text-generation references exported by scripts/export_text_generation.py, per query.

    python scripts/profile_text_generation.py EXPORTS_DIR [--strip-to tests/data/text_generation]

For each ``EXPORTS_DIR/<id>/<id with _>.onnx`` this runs eeki-label's decoder profile
(eeki_label/profile/decoder.py) at the rule set's default lengths and writes the figures into
scripts/catalogue_source_text_generation.json (the curated fields of each entry are kept: id, name,
config, quality with its source). ``--strip-to`` also stores a weightless copy (scripts/strip_weights.py:
float weights become graph inputs of the same shape; MACs and activations are unchanged, parameters
and weight bytes are then those of the JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
SOURCE = ROOT / "scripts" / "catalogue_source_text_generation.json"
#: onnxruntime working memory allowed to the shape probes (the default 4 GiB is too little for GPT-2 762M and up)
PROBE_MEMORY_BYTES = 12 * 1024**3


def profile(path: Path, prompt: int, output: int) -> dict:
    from eeki_label.model_io import load_model
    from eeki_label.profile import decoder
    from eeki_label.profile.runtime import probe_shapes
    from eeki_label.profile.static import static_profile, typed_graphs

    loaded = load_model(path)
    sig = decoder.detect(loaded.proto)
    if sig is None:
        raise SystemExit(f"{path.name}: no KV-cache signature")

    def at(shapes):
        probe = partial(probe_shapes, loaded, shapes, max_activation_bytes=PROBE_MEMORY_BYTES)
        return static_profile(loaded, shapes, typed=typed_graphs(loaded, shapes, probe))

    dp = decoder.profile_decoder(loaded, sig, decoder.Lengths(prompt, output), at)
    q = dp.query_static()
    if q.unresolved_nodes:
        raise SystemExit(f"{path.name}: unresolved nodes {q.unresolved_nodes[:5]}")
    from onnx import TensorProto

    from eeki_label.model_io import iter_stored_tensors, numel

    half = sum(numel(r.tensor.dims) for r in iter_stored_tensors(loaded.proto) if r.tensor.data_type == TensorProto.FLOAT16)
    extra = {}
    if half:  # exported in float16 to fit the export machine's memory (--half): the float32 model's bytes beside
        extra = {"export_precision": "float16", "weight_bytes_as_exported": q.weight_bytes,
                 "note": "exported in float16 (scripts/export_text_generation.py --half) to fit the export machine's "
                         "memory; weight_bytes is that of the float32 model (float16 elements x 4 bytes); parameters, "
                         "MACs and activation elements do not depend on the precision"}
    return {
        **extra,
        "parameters": q.parameters, "weight_bytes": q.weight_bytes + 2 * half, "macs": q.macs,
        "activation_elements": q.activation_elements, "activation_peak_elements": q.activation_peak_elements,
        "attention_macs": q.attention_macs, "attention_macs_causal": q.attention_macs_causal,
        "prefill": {"tokens": prompt, "macs": dp.prefill.macs, "activation_elements": dp.prefill.activation_elements,
                    "activation_peak_elements": dp.prefill.activation_peak_elements},
        "decode": {"steps": dp.decode_steps, "macs_per_token": dp.decode_macs_per_token,
                   "activation_elements_per_token": dp.decode_activation_elements_per_token,
                   "activation_peak_elements": max(dp.decode_first.activation_peak_elements,
                                                   dp.decode_last.activation_peak_elements),
                   "kv_cache_bytes_per_token": dp.kv_cache_bytes_per_token,
                   "kv_cache_elements_full_context": dp.kv_cache_elements_full},
        "profiler": "eeki-label profile/decoder.py (static profile at the prefill and the first and last decode step)",
    }


def main() -> int:
    from eeki_label.rules import load_rules

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("exports", type=Path)
    ap.add_argument("--strip-to", type=Path)
    ap.add_argument("--only", nargs="*", help="ids to profile (default: every entry with an export)")
    args = ap.parse_args()
    source = json.loads(SOURCE.read_text())
    preset = load_rules().raw["decoder"]["presets"]["default"]
    n, m = int(preset["prompt_tokens"]), int(preset["output_tokens"])
    for entry in source["models"]:
        path = args.exports / entry["id"].split("/")[-1] / entry["onnx_file"]
        if args.only and entry["id"] not in args.only:
            continue
        if not path.is_file():
            print(f"{entry['id']}: no export at {path}, figures left as they are")
            continue
        entry["input_lengths"] = {"prompt_tokens": n, "output_tokens": m, "batch": 1}
        entry["profile"] = profile(path, n, m)
        p = entry["profile"]
        print(f"{entry['id']}: {p['parameters']:,} parameters, {p['macs'] / 1e9:.1f} GMAC per query "
              f"(prefill {p['prefill']['macs'] / 1e9:.1f}, decode {p['decode']['macs_per_token'] / 1e6:.1f} M per token)")
        if args.strip_to:
            import onnx
            from strip_weights import strip_model

            args.strip_to.mkdir(parents=True, exist_ok=True)
            stripped = strip_model(onnx.load(str(path)))
            onnx.save(stripped, str(args.strip_to / entry["onnx_file"]))
            print(f"  weightless copy: {(args.strip_to / entry['onnx_file']).stat().st_size:,} bytes")
    SOURCE.write_text(json.dumps(source, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
