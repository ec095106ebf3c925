"""The CLI on a cached decoder: per-query JSON contract, the lengths options, bad lengths."""

import json

import jsonschema

from support import ROOT
from eeki_label.cli import main

LLAMA = ROOT / "tests" / "data" / "transformers" / "llama_gqa.onnx"


def test_decoder_label_json_contract(tmp_path, capsys):
    out_file = tmp_path / "label.json"
    code = main(["assess", str(LLAMA), "--prompt-tokens", "12", "--output-tokens", "5", "--runs", "1",
                 "--no-transfer", "--device-class", "edge-gpu-batch1", "--task", "image-classification",
                 "--json", str(out_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    name = ("labelset" if "labels" in doc else "label") + ".schema.json"
    jsonschema.validate(doc, json.loads((ROOT / "schemas" / name).read_text()))
    labs = doc["labels"] if "labels" in doc else [doc]
    inf, model = labs[0]["inference"], labs[0]["model"]
    assert inf["unit"] == "query" and inf["prompt_tokens"] == 12 and inf["output_tokens"] == 5
    # Llama test model: 81,920 weight MACs per token, attention 2 layers x s_q x s_k x 128 (tests/unit/test_decoder.py)
    assert inf["prefill"]["macs"] == 12 * 81_920 + 2 * 12 * 12 * 128
    assert inf["decode"]["macs_per_token"] == 81_920 + 2 * 128 * (13 + 16) / 2
    assert model["macs"] == inf["prefill"]["macs"] + 4 * inf["decode"]["macs_per_token"]
    assert inf["energy_per_query_j"] > inf["energy_per_output_token_j"] > 0 and model["attention_macs"] > 0
    assert "per query: 12 prompt + 5 output tokens" in out


def test_bad_length_preset_is_a_usage_error(capsys):
    code = main(["assess", str(LLAMA), "--lengths", "huge", "--runs", "0", "--no-transfer"])
    _, err = capsys.readouterr()
    assert code != 0 and "presets" in err and "Traceback" not in err
