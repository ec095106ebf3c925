"""Cached decoders (profile/decoder.py) and encoders on small exports of transformers configs.

The models (tests/data/transformers, scripts/export_transformers.py, random weights) are:
  gpt2_tiny: GPT-2, L=2 layers, d=64 hidden, h=4 heads (head 16), MLP 4d=256, vocab V=128
  llama_gqa: Llama, L=2, d=64, h=4 query heads and 2 kv heads (head 16), SwiGLU 128, vocab 128
  bert_tiny: BERT encoder, L=2, d=64, h=4, intermediate 128

Analytic MACs per token (weight MatMuls/Gemms, one MAC per weight per token):
  GPT-2: per layer c_attn d*3d + c_proj d*d + fc d*4d + proj 4d*d = 12 d^2 = 49,152; two layers
         98,304; lm_head d*V = 8,192; together 106,496 per token.
  Llama: per layer q d*d + k d*(d/2) + v d*(d/2) + o d*d = 3 d^2 = 12,288, MLP 3*d*128 = 24,576;
         two layers 73,728; lm_head 8,192; together 81,920 per token.
  BERT:  per layer 4 d^2 + 2*d*128 = 32,768; two layers 65,536 per token.
Attention (QK^T + AV) over s_q queries and s_k keys: L * s_q * s_k * (h * 16) * 2 = L * s_q * s_k * 128
(GQA counts query heads: the same figure for Llama).
"""

from __future__ import annotations

from functools import partial

import pytest

from support import ROOT
from eeki_label.model_io import load_model
from eeki_label.profile import decoder
from eeki_label.profile.runtime import probe_shapes
from eeki_label.profile.static import static_profile, typed_graphs

DATA = ROOT / "tests" / "data" / "transformers"
N, M = 16, 8
PER_TOKEN = {"gpt2_tiny": 106_496, "llama_gqa": 81_920}


def attention(s_q, s_k, layers=2):
    return layers * s_q * s_k * 128


def profile_at(loaded):
    return lambda shapes: static_profile(loaded, shapes, typed=typed_graphs(loaded, shapes,
                                                                           partial(probe_shapes, loaded, shapes)))


@pytest.fixture(scope="module", params=sorted(PER_TOKEN))
def decoded(request):
    loaded = load_model(DATA / f"{request.param}.onnx")
    sig = decoder.detect(loaded.proto)
    return request.param, loaded, sig, decoder.profile_decoder(loaded, sig, decoder.Lengths(N, M), profile_at(loaded))


def test_signature_is_detected(decoded):
    _, _, sig, _ = decoded
    assert sig.past_inputs == tuple(f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value"))
    assert sig.present_outputs == tuple(f"present.{i}.{kv}" for i in range(2) for kv in ("key", "value"))


def test_encoder_has_no_cache_signature():
    assert decoder.detect(load_model(DATA / "bert_tiny.onnx").proto) is None


def test_prefill_and_decode_macs_match_the_analytic_count(decoded):
    name, _, _, dp = decoded
    per_token = PER_TOKEN[name]
    prefill = N * per_token + attention(N, N)
    # decode step t (t = 0..M-2): one query against N + t + 1 keys
    steps = [per_token + attention(1, N + t + 1) for t in range(M - 1)]
    assert abs(dp.prefill.macs / prefill - 1) <= 0.01 and dp.prefill.unresolved_nodes == ()
    assert abs(dp.decode_macs_per_token / (sum(steps) / len(steps)) - 1) <= 0.01
    assert abs(dp.query_macs / (prefill + sum(steps)) - 1) <= 0.01
    assert dp.prefill.attention_macs == attention(N, N)
    # causal: N*(N+1)/2 of N*N positions in the prefill
    assert dp.prefill.attention_macs_causal == 2 * N * (N + 1) // 2 * 128


def test_decode_figures_are_affine_in_the_context(decoded):
    """The mean of the first and last decode step is the mean over all steps: check a middle step."""
    _, loaded, sig, dp = decoded
    at = profile_at(loaded)
    mid = at(decoder.step_shapes(loaded.proto, sig, N + 3, 1))
    last = dp.decode_last
    assert 2 * mid.macs == at(decoder.step_shapes(loaded.proto, sig, N, 1)).macs + at(
        decoder.step_shapes(loaded.proto, sig, N + 6, 1)).macs == dp.decode_first.macs + last.macs
    assert mid.activation_elements * 2 == dp.decode_first.activation_elements + last.activation_elements


def test_kv_cache_bytes_per_token(decoded):
    name, _, _, dp = decoded
    kv_heads = 2 if name == "llama_gqa" else 4
    # 2 layers x (key + value) x kv heads x head 16, float32
    assert dp.kv_cache_bytes_per_token == 2 * 2 * kv_heads * 16 * 4


def test_bert_encoder_macs():
    loaded = load_model(DATA / "bert_tiny.onnx")
    shapes = {n: (1, 32) for n in ("input_ids", "attention_mask", "token_type_ids")}
    p = profile_at(loaded)(shapes)
    assert p.macs == 32 * 65_536 + attention(32, 32) and p.attention_macs == attention(32, 32)


def test_step_shapes_of_the_cache_and_mask():
    loaded = load_model(DATA / "llama_gqa.onnx")
    sig = decoder.detect(loaded.proto)
    s = decoder.step_shapes(loaded.proto, sig, 10, 1)
    assert s["input_ids"] == (1, 1) and s["attention_mask"] == (1, 11) and s["position_ids"] == (1, 1)
    assert s["past_key_values.0.key"] == (1, 2, 10, 16)


def test_lengths_from_the_rule_set():
    from eeki_label.errors import UsageError
    from eeki_label.rules import load_rules

    raw = load_rules("2.0.0").raw
    assert decoder.lengths_from_rules(raw, None, None, None) == decoder.Lengths(512, 128, "default")
    assert decoder.lengths_from_rules(raw, "short", None, 5) == decoder.Lengths(128, 5, "short")
    assert decoder.lengths_from_rules(raw, None, 7, 3) == decoder.Lengths(7, 3, None)
    with pytest.raises(UsageError):
        decoder.lengths_from_rules(raw, "huge", None, None)
    with pytest.raises(UsageError):
        decoder.lengths_from_rules(load_rules("1.0.0").raw, None, None, None)


def test_label_reports_per_query_and_per_token(tmp_path):
    from eeki_label.pipeline import AssessOptions, assess
    from eeki_label.transfer.stage import TransferOptions

    labels = assess(DATA / "llama_gqa.onnx", AssessOptions(
        runs=1, prompt_tokens=N, output_tokens=M, device_classes=("edge-gpu-batch1",), task="image-classification",
        transfer=TransferOptions(enabled=False))).labels
    lab = labels[0]
    inf = lab.inference
    assert inf.unit == "query" and inf.prompt_tokens == N and inf.output_tokens == M
    assert inf.prefill.macs == N * 81_920 + attention(N, N)
    assert inf.decode.steps == M - 1 and inf.decode.kv_cache_bytes_per_token == 512
    assert lab.model.macs == inf.prefill.macs + round((M - 1) * inf.decode.macs_per_token)
    assert inf.energy_j == inf.energy_per_query_j == pytest.approx(
        inf.prefill.energy_j + (M - 1) * inf.energy_per_output_token_j)
    assert lab.model.attention_macs == inf.prefill.attention_macs + round((M - 1) * inf.decode.attention_macs_per_token)
    assert lab.model.attention_macs_causal < lab.model.attention_macs
    assert f"{N} prompt tokens" in inf.boundary and inf.batch_size == 1
    assert lab.runtime.decode_steps_run == decoder.RUNTIME_DECODE_STEPS and lab.runtime.prefill_latency_ms > 0


def test_runtime_decode_feeds_the_cache_back(decoded):
    """A real prefill and decode steps in onnxruntime (sandboxed): the cache grows one position a step."""
    _, loaded, sig, _ = decoded
    run = decoder.runtime_decode(loaded, sig, decoder.Lengths(N, M), steps=3, time_limit_s=120)
    assert run.past_lengths == (N, N + 1, N + 2) and run.final_cache_length == N + 3
    assert len(run.step_ms) == 3 and run.prefill_ms > 0


def test_weightless_gpt2_117m_reference_keeps_its_cache_signature():
    """The stored weightless export of the catalogue reference (scripts/profile_text_generation.py --strip-to):
    weights are graph inputs of their shapes, the KV-cache signature and the shapes per step are intact."""
    loaded = load_model(ROOT / "tests" / "data" / "text_generation" / "gpt2_117m.onnx")
    sig = decoder.detect(loaded.proto)
    assert len(sig.past_inputs) == len(sig.present_outputs) == 24
    s = decoder.step_shapes(loaded.proto, sig, 512, 1)
    assert s["past_key_values.11.value"] == (1, 12, 512, 64) and s["attention_mask"] == (1, 513)


def test_probe_of_a_model_over_the_message_limit_goes_through_a_file(monkeypatch):
    """Models of 2 GiB and more (large language models) cannot be one protobuf message: the shape probe
    writes them with external data to a temporary folder (here forced with a limit of 0 bytes)."""
    from eeki_label.profile import runtime

    loaded = load_model(DATA / "llama_gqa.onnx")
    sig = decoder.detect(loaded.proto)
    shapes = decoder.step_shapes(loaded.proto, sig, 3, 2)
    monkeypatch.setattr(runtime, "PROBE_INLINE_MAX_BYTES", 0)
    found = runtime.probe_shapes(loaded, shapes, ["present.0.key", "logits"], time_limit_s=120)
    assert found == {"present.0.key": (1, 2, 5, 16), "logits": (1, 2, 128)}
