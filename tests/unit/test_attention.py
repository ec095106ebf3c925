"""Attention MACs (profile/attention.py): fused kernels with analytic counts, low-precision weight bytes.

Convention (docs/attention.md): QK^T costs b*h*s_q*s_k*d_k and AV b*h*s_q*s_k*d_v MACs, h the query
heads; the full s_q x s_k rectangle is counted, the causal figure keeps s_q*(s_k-s_q) + s_q*(s_q+1)/2
positions per head.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from support import save
from eeki_label.model_io import load_model
from eeki_label.profile.attention import causal_positions
from eeki_label.profile.static import static_profile


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def profile(nodes, inputs, outputs, inits, tmp_path, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])
    loaded = load_model(save(m, tmp_path / "m.onnx"))
    return static_profile(loaded, {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in inputs})


def test_causal_positions():
    assert causal_positions(4, 4) == 10  # 1+2+3+4
    assert causal_positions(1, 9) == 9  # one new token sees the whole past
    assert causal_positions(3, 9) == 3 * 6 + 6


def test_multi_head_attention(tmp_path):
    # b=1, heads=2, s_q=s_k=5, d=8: 1*2*5*5*(8+8) = 800
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=2)
    p = profile([node], [vi("q", [1, 5, 16]), vi("k", [1, 5, 16]), vi("v", [1, 5, 16])], [vi("y", [1, 5, 16])], [],
                tmp_path)
    assert p.macs == 800 and p.attention_macs == 800 and p.uncounted_ops == ()
    assert not p.attention_causal_declared


def test_multi_head_attention_with_past(tmp_path):
    # past 6 + new 3 = 9 keys: 1*2*3*9*16 = 864
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "", "", "pk", "pv"], ["y", "present_k", "present_v"],
                            domain="com.microsoft", num_heads=2)
    p = profile([node], [vi("q", [1, 3, 16]), vi("k", [1, 3, 16]), vi("v", [1, 3, 16]), vi("pk", [1, 2, 6, 8]),
                         vi("pv", [1, 2, 6, 8])],
                [vi("y", [1, 3, 16]), vi("present_k", [1, 2, 9, 8]), vi("present_v", [1, 2, 9, 8])], [], tmp_path)
    assert p.macs == 864


def test_group_query_attention_counts_query_heads_and_is_causal(tmp_path):
    # 4 query heads share 2 kv heads, d=8, past 6 + new 3: 1*4*3*9*(8+8) = 1728; causal 4*(3*6+6)*16 = 1536
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "seqlens", "total"],
                            ["y", "present_k", "present_v"], domain="com.microsoft", num_heads=4, kv_num_heads=2)
    inputs = [vi("q", [1, 3, 32]), vi("k", [1, 3, 16]), vi("v", [1, 3, 16]), vi("pk", [1, 2, 6, 8]),
              vi("pv", [1, 2, 6, 8]), vi("seqlens", [1], TensorProto.INT32), vi("total", [1], TensorProto.INT32)]
    p = profile([node], inputs, [vi("y", [1, 3, 32]), vi("present_k", [1, 2, 9, 8]), vi("present_v", [1, 2, 9, 8])],
                [], tmp_path)
    assert p.macs == 1728 and p.attention_macs_causal == 1536 and p.attention_causal_declared


def test_contrib_attention_counts_its_qkv_projection(tmp_path):
    # input [1, 5, 16] x weights [16, 48]: 5*16*48 = 3840; scores 1*2*5*5*(8+8) = 800
    w = numpy_helper.from_array(np.zeros((16, 48), np.float32), "w")
    b = numpy_helper.from_array(np.zeros((48,), np.float32), "b")
    node = helper.make_node("Attention", ["x", "w", "b"], ["y"], domain="com.microsoft", num_heads=2, unidirectional=1)
    p = profile([node], [vi("x", [1, 5, 16])], [vi("y", [1, 5, 16])], [w, b], tmp_path)
    assert p.macs == 3840 + 800 and p.attention_causal_declared
    assert p.attention_macs_causal == 3840 + 2 * 15 * 16


def test_onnx_attention_opset_23(tmp_path):
    # Q [1, 4 heads, 5, 8], K/V [1, 2 kv heads, 7, 8]: 1*4*5*7*(8+8) = 2240
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=0)
    p = profile([node], [vi("q", [1, 4, 5, 8]), vi("k", [1, 2, 7, 8]), vi("v", [1, 2, 7, 8])],
                [vi("y", [1, 4, 5, 8])], [], tmp_path, opset=23)
    assert p.macs == 2240 and p.uncounted_ops == ()


def test_rotary_and_skip_layer_norm_are_element_wise(tmp_path):
    cos = numpy_helper.from_array(np.ones((16, 4), np.float32), "cos")
    sin = numpy_helper.from_array(np.zeros((16, 4), np.float32), "sin")
    gamma = numpy_helper.from_array(np.ones((16,), np.float32), "gamma")
    rope = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["r"], domain="com.microsoft", num_heads=2)
    sln = helper.make_node("SkipLayerNormalization", ["r", "x", "gamma"], ["y"], domain="com.microsoft")
    p = profile([rope, sln], [vi("x", [1, 5, 16]), vi("pos", [1, 5], TensorProto.INT64)], [vi("y", [1, 5, 16])],
                [cos, sin, gamma], tmp_path)
    assert p.macs == 0 and p.uncounted_ops == () and p.attention_macs == 0


def test_plain_matmul_chain_is_attention(tmp_path):
    # scores [1,2,5,8] x [1,2,8,5] = 2*5*5*8 = 400; softmax; weighted sum [1,2,5,5] x [1,2,5,8] = 400
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    p = profile(nodes, [vi("q", [1, 2, 5, 8]), vi("kt", [1, 2, 8, 5]), vi("v", [1, 2, 5, 8])], [vi("y", [1, 2, 5, 8])],
                [], tmp_path)
    assert p.macs == 800 and p.attention_macs == 800
    assert p.attention_macs_causal == 2 * 15 * 8 * 2  # 15 of 25 positions, twice


def test_weight_matmul_is_not_attention(tmp_path):
    w = numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")
    p = profile([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 5, 8])], [vi("y", [1, 5, 4])], [w],
                tmp_path)
    assert p.macs == 5 * 8 * 4 and p.attention_macs == 0


def test_matmul_nbits_bytes_count_scales_and_zero_points(tmp_path):
    """4-bit weights: B packed [N, K/32, 16] uint8 (2 weights a byte), scales [N*K/32] fp16, zero points
    [N * ceil(K/32 / 2)] uint8 (two 4-bit zero points a byte): bytes as stored, MACs = M*N*K."""
    k, n, m = 128, 64, 3
    blocks = k // 32
    b = numpy_helper.from_array(np.zeros((n, blocks, 16), np.uint8), "b")
    scales = numpy_helper.from_array(np.ones((n * blocks,), np.float16), "scales")
    zp = numpy_helper.from_array(np.zeros((n * ((blocks + 1) // 2),), np.uint8), "zp")
    node = helper.make_node("MatMulNBits", ["a", "b", "scales", "zp"], ["y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=32)
    p = profile([node], [vi("a", [m, k], TensorProto.FLOAT16)], [vi("y", [m, n], TensorProto.FLOAT16)],
                [b, scales, zp], tmp_path)
    assert p.weight_bytes == n * k // 2 + n * blocks * 2 + n * blocks // 2
    assert p.macs == m * n * k > 0


def test_fp16_bf16_and_int8_initializer_bytes(tmp_path):
    w16 = numpy_helper.from_array(np.zeros((8, 4), np.float16), "w16")
    wbf = helper.make_tensor("wbf", TensorProto.BFLOAT16, [4, 4], np.zeros(16, np.uint16).tobytes(), raw=True)
    w8 = numpy_helper.from_array(np.zeros((4, 4), np.int8), "w8")
    nodes = [helper.make_node("MatMul", ["x", "w16"], ["h"]), helper.make_node("Cast", ["h"], ["hb"], to=TensorProto.BFLOAT16),
             helper.make_node("MatMul", ["hb", "wbf"], ["y"]), helper.make_node("Cast", ["w8"], ["w8f"], to=TensorProto.FLOAT),
             ]
    p = profile(nodes, [vi("x", [1, 8], TensorProto.FLOAT16)], [vi("y", [1, 4], TensorProto.BFLOAT16), vi("w8f", [4, 4])],
                [w16, wbf, w8], tmp_path)
    assert p.weight_bytes == 32 * 2 + 16 * 2 + 16 * 1 and p.parameters == 64
    assert p.float_parameters == 48 and p.macs == 8 * 4 + 4 * 4
