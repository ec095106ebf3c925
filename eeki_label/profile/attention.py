"""Multiply-accumulates of attention: fused kernels and plain MatMul/Softmax chains.

Conventions (docs/attention.md has the derivations):

* Scores and weighted sum: ``QK^T`` costs ``b * h * s_q * s_k * d_k`` MACs and ``AV`` costs
  ``b * h * s_q * s_k * d_v``, where ``h`` is the number of *query* heads (grouped-query attention
  shares each key/value head among ``h / h_kv`` query heads but still computes one score row per
  query head), ``s_q`` the query positions of this call and ``s_k`` the key positions attended to
  (past plus new).
* Causal masks: the full ``s_q * s_k`` rectangle is counted (what dense kernels compute);
  beside it the *causal* figure keeps only the positions a causal mask leaves, with the queries
  taken as the last ``s_q`` of the ``s_k`` positions: ``s_q * (s_k - s_q) + s_q * (s_q + 1) / 2``.
* Projections inside a kernel (com.microsoft ``Attention`` and ``PackedAttention`` take the QKV
  weight as an input) count as a MatMul: tokens x input hidden x (q + k + v hidden).
* Softmax, scaling, masking, rotary embedding and layer normalisation are element-wise: no MACs,
  as everywhere in this profile (``RotaryEmbedding``, ``SkipLayerNormalization`` and their
  relatives are listed in ``ZERO_MAC_OPS`` so that they are known, not forgotten).
* Plain chains (torch exports of GPT-2, Llama, BERT): the ``QK^T`` and ``AV`` products are MatMuls
  whose two inputs are activations of rank >= 3 (no stored tensor); they are counted by the MatMul
  rule already and are reported here as attention.
* Where a length is known only at run time (``PackedAttention``'s per-sequence lengths, the
  shared-buffer cache of ``DecoderMaskedMultiHeadAttention``), the padded or maximum length is
  counted and the count says it is an upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx import AttributeProto, NodeProto

Shape = tuple[int, ...]

#: com.microsoft attention kernels this module counts.
MS_KERNELS = frozenset({
    "Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention", "PackedMultiHeadAttention",
    "DecoderMaskedMultiHeadAttention",
})
#: Operators whose arithmetic is element-wise: no MACs by this profile's convention (stated so that a
#: reader sees them considered, not missed).
ZERO_MAC_OPS = frozenset({
    "RotaryEmbedding", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization",
    "LayerNormalization", "RMSNormalization", "EmbedLayerNormalization", "BiasGelu", "FastGelu", "Gelu",
})
_MS_DOMAINS = ("com.microsoft",)
_ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class AttentionCount:
    """MACs of one attention node (one call)."""

    macs: int
    """Everything the node multiply-accumulates: projections inside it plus ``QK^T`` and ``AV``."""
    score_macs: int
    """``QK^T`` plus ``AV`` over the full ``s_q x s_k`` rectangle."""
    causal_score_macs: int
    """The same with a causal mask's skipped positions left out."""
    causal: bool
    """The node declares a causal mask (``unidirectional``, ``is_causal``; GroupQueryAttention always)."""
    upper_bound: bool = False
    """A length known only at run time was counted at its padded or maximum value."""


def is_kernel(node: NodeProto) -> bool:
    """Whether ``node`` is an attention kernel counted here (com.microsoft ones, ONNX ``Attention``)."""
    if node.domain in _MS_DOMAINS:
        return node.op_type in MS_KERNELS
    return node.domain in _ONNX_DOMAINS and node.op_type == "Attention"


def _int(node: NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name and (a.type == AttributeProto.INT or a.HasField("i")):
            return int(a.i)
    return default


def _ints(node: NodeProto, name: str) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return [int(v) for v in a.ints]
    return []


def _shape(types, names, i: int) -> "Shape | None":
    name = names[i] if len(names) > i else ""
    entry = types.get(name) if name else None
    return entry[0] if entry else None


def causal_positions(s_q: int, s_k: int) -> int:
    """Score positions a causal mask keeps when the ``s_q`` queries are the last of ``s_k`` positions."""
    s_q = min(s_q, s_k)
    return s_q * (s_k - s_q) + s_q * (s_q + 1) // 2


def scores(b: int, h: int, s_q: int, s_k: int, d_k: int, d_v: int, causal: bool, extra: int = 0,
           upper_bound: bool = False) -> AttentionCount:
    """The count of ``QK^T`` (``b*h*s_q*s_k*d_k``) plus ``AV`` (``b*h*s_q*s_k*d_v``) and ``extra`` MACs."""
    full = b * h * s_q * s_k * (d_k + d_v)
    kept = b * h * causal_positions(s_q, s_k) * (d_k + d_v)
    return AttentionCount(full + extra, full, kept, causal, upper_bound)


def kernel_count(node: NodeProto, types) -> "AttentionCount | None":
    """MACs of an attention kernel at the resolved shapes; None when a shape it needs is unknown."""
    op = node.op_type
    if node.domain in _ONNX_DOMAINS and op == "Attention":
        return _onnx_attention(node, types)
    return {
        "Attention": _ms_attention, "PackedAttention": _ms_packed_attention,
        "MultiHeadAttention": _ms_mha, "DecoderMaskedMultiHeadAttention": _ms_mha,
        "PackedMultiHeadAttention": _ms_packed_mha, "GroupQueryAttention": _ms_gqa,
    }[op](node, types)


def _onnx_attention(node, types):
    """ONNX ``Attention`` (opset 23): Q [B, q_heads, S, H] or [B, S, q_heads*H], K/V likewise with kv heads,
    optional past_key [B, kv_heads, P, H]; present = past + new keys."""
    q, k, v = (_shape(types, node.input, i) for i in range(3))
    past = _shape(types, node.input, 4)
    if q is None or k is None or v is None:
        return None
    causal = bool(_int(node, "is_causal", 0))
    if len(q) == 4:
        b, h, s_q, d_k = q
        s_new, d_v = k[2], v[-1]
    else:
        h = _int(node, "q_num_heads", 0)
        kv_h = _int(node, "kv_num_heads", 0)
        if h <= 0 or kv_h <= 0 or len(k) != 3:
            return None
        b, s_q = q[0], q[1]
        d_k, s_new, d_v = q[2] // h, k[1], v[2] // kv_h
    p = past[2] if past is not None and len(past) == 4 else 0
    return scores(b, h, s_q, p + s_new, d_k, d_v, causal)


def _ms_attention(node, types):
    """com.microsoft ``Attention``: input [B, S, D_in], weights [D_in, Dq + Dk + Dv] (the QKV projection),
    optional past [2, B, heads, P, H]."""
    x, w = _shape(types, node.input, 0), _shape(types, node.input, 1)
    past = _shape(types, node.input, 4)
    h = _int(node, "num_heads", 0)
    if x is None or w is None or len(x) != 3 or len(w) != 2 or h <= 0:
        return None
    b, s, d_in = x
    sizes = _ints(node, "qkv_hidden_sizes") or [w[1] // 3] * 3
    if len(sizes) != 3:
        return None
    p = past[3] if past is not None and len(past) == 5 else 0
    return scores(b, h, s, p + s, sizes[0] // h, sizes[2] // h, bool(_int(node, "unidirectional", 0)),
                  extra=b * s * d_in * w[1])


def _ms_packed_attention(node, types):
    """com.microsoft ``PackedAttention``: input [tokens, D_in], weights [D_in, Dq+Dk+Dv], token_offset [B, S]
    (padded shape: the per-sequence lengths are data, so scores count the padded S: an upper bound)."""
    x, w, offs = _shape(types, node.input, 0), _shape(types, node.input, 1), _shape(types, node.input, 3)
    h = _int(node, "num_heads", 0)
    if x is None or w is None or offs is None or len(x) != 2 or len(w) != 2 or len(offs) != 2 or h <= 0:
        return None
    tokens, d_in = x
    sizes = _ints(node, "qkv_hidden_sizes") or [w[1] // 3] * 3
    if len(sizes) != 3:
        return None
    b, s = offs
    return scores(b, h, s, s, sizes[0] // h, sizes[2] // h, False, extra=tokens * d_in * w[1], upper_bound=True)


def _ms_mha(node, types):
    """com.microsoft ``MultiHeadAttention`` (and ``DecoderMaskedMultiHeadAttention``): query [B, S, D] or packed
    QKV [B, S, heads, 3, H]; key [B, L, D], [B, heads, L, H] (cross attention, already projected) or packed KV
    [B, L, heads, 2, H]; optional past_key [B, heads, P, H] (index 6 for MHA, 5 for DMMHA). A present_key output
    of known shape [B, heads, T, H] gives the total length directly."""
    h = _int(node, "num_heads", 0)
    q = _shape(types, node.input, 0)
    out = _shape(types, node.output, 0)
    if q is None or out is None or h <= 0:
        return None
    masked = node.op_type == "DecoderMaskedMultiHeadAttention"
    b, s_q = q[0], q[1]
    d_k = q[2] // h if len(q) == 3 else q[-1]
    d_v = out[-1] // h
    present = _shape(types, node.output, 1)
    upper = False
    if present is not None and len(present) == 4:
        s_k = present[2]
        upper = masked and bool(_int(node, "past_present_share_buffer", 0))
    else:
        k = _shape(types, node.input, 1)
        past = _shape(types, node.input, 5 if masked else 6)
        if k is None:
            s_new = s_q if len(q) == 5 else None  # packed QKV: keys are the query positions
        elif len(k) == 4:
            s_new = k[2]  # [B, heads, L, H]: projected cross-attention keys (no past appended)
            past = None
        elif len(k) in (3, 5):
            s_new = k[1]
        else:
            s_new = None
        if s_new is None:
            return None
        p = past[2] if past is not None and len(past) == 4 else 0
        if masked and p and bool(_int(node, "past_present_share_buffer", 0)):
            s_new, upper = 0, True  # past is the whole buffer (maximum length): an upper bound
        s_k = p + s_new
    return scores(b, h, s_q, s_k, d_k, d_v, bool(_int(node, "unidirectional", 0)), upper_bound=upper)


def _ms_packed_mha(node, types):
    """com.microsoft ``PackedMultiHeadAttention``: query [tokens, D] or packed [tokens, heads, 3, H],
    token_offset [B, S] (input 4): scores count the padded S (an upper bound)."""
    h = _int(node, "num_heads", 0)
    q, out, offs = _shape(types, node.input, 0), _shape(types, node.output, 0), _shape(types, node.input, 4)
    if q is None or out is None or offs is None or len(offs) != 2 or h <= 0:
        return None
    d_k = q[1] // h if len(q) == 2 else q[-1]
    b, s = offs
    return scores(b, h, s, s, d_k, out[-1] // h, False, upper_bound=True)


def _ms_gqa(node, types):
    """com.microsoft ``GroupQueryAttention``: query [B, S, heads*H] (or packed [B, S, (heads + 2*kv_heads)*H]
    when key is absent), past_key [B, kv_heads, P, H]; always causal. present_key [B, kv_heads, T, H] gives the
    total length when known, else P + S."""
    h, kv_h = _int(node, "num_heads", 0), _int(node, "kv_num_heads", 0)
    q = _shape(types, node.input, 0)
    if q is None or len(q) != 3 or h <= 0 or kv_h <= 0:
        return None
    b, s_q, width = q
    key = node.input[1] if len(node.input) > 1 else ""
    d = width // h if key else width // (h + 2 * kv_h)
    present = _shape(types, node.output, 1)
    past = _shape(types, node.input, 3)
    if present is not None and len(present) == 4:
        s_k = present[2]
    else:
        s_k = (past[2] if past is not None and len(past) == 4 else 0) + s_q
    return scores(b, h, s_q, s_k, d, d, True)


def matmul_count(node: NodeProto, types, stored: "set[str]", weighted_sum: bool) -> "AttentionCount | None":
    """A plain-chain attention product: a MatMul of two activations of rank >= 3 (neither a stored tensor),
    ``[..., s_q, d] x [..., d, s_k]`` (scores) or, when ``weighted_sum`` (its first input comes from a
    Softmax), ``[..., s_q, s_k] x [..., s_k, d_v]``. Its MACs are those of the MatMul rule; the causal figure
    takes the product's rows as the last ``s_q`` of ``s_k`` positions."""
    if node.op_type != "MatMul" or node.domain not in _ONNX_DOMAINS or len(node.input) < 2:
        return None
    if node.input[0] in stored or node.input[1] in stored:
        return None
    a, bm, y = _shape(types, node.input, 0), _shape(types, node.input, 1), _shape(types, node.output, 0)
    if a is None or bm is None or y is None or len(a) < 3 or len(bm) < 3 or len(y) < 2:
        return None
    rows, inner, cols = y[-2], a[-1], y[-1]
    batch = 1
    for d in y[:-2]:
        batch *= d
    total = batch * rows * cols * inner
    s_k, other = (inner, cols) if weighted_sum else (cols, inner)
    kept = batch * causal_positions(rows, s_k) * other if s_k >= rows else total
    return AttentionCount(total, total, kept, False)


#: Operators a Softmax output passes through on its way to the weighted-sum MatMul in torch exports.
_PASS_THROUGH = frozenset({"Cast", "Dropout", "Identity", "Where", "Mul", "Reshape", "Transpose"})


def graph_attention(nodes, types, stored: "set[str]") -> "dict[int, AttentionCount]":
    """Attention counts of a graph's nodes by index: kernels (:func:`kernel_count`) and plain-chain MatMuls
    (:func:`matmul_count`). Nodes whose shapes are unknown are left out (the MAC count lists them as
    unresolved)."""
    producer = {o: n for n in nodes for o in n.output if o}

    def from_softmax(name: str, hops: int = 4) -> bool:
        n = producer.get(name)
        while n is not None and hops > 0:
            if n.op_type == "Softmax":
                return True
            if n.op_type not in _PASS_THROUGH or not n.input:
                return False
            n, hops = producer.get(n.input[0]), hops - 1
        return False

    out: dict[int, AttentionCount] = {}
    for i, node in enumerate(nodes):
        if is_kernel(node):
            c = kernel_count(node, types)
        elif node.op_type == "MatMul":
            c = matmul_count(node, types, stored, from_softmax(node.input[0]) if node.input else False)
        else:
            c = None
        if c is not None:
            out[i] = c
    return out
