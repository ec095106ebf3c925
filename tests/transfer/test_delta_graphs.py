"""Updates across different graphs: a replaced head and a fine-tuned block on a real trained model,
added and removed layers, nothing in common; the graph patch and the container that carries it."""

import json
import struct
import zlib

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from eeki_label.errors import TransferError
from eeki_label.model_io import iter_stored_tensors, load_model, tensor_array
from eeki_label.transfer import graphdiff
from eeki_label.transfer.container import MAGIC, Container, Entry, pack, unpack
from eeki_label.transfer.fidelity import FidelityBound, Reference, compare, run_model
from eeki_label.transfer.nnc import decode_bitstream, encode_model
from nnc_models import save_and_load, small_cnn, wide_mlp
from support import shared_model

CLS_SHAPES = {"x": (1, 3, 48, 192)}
MLP_SHAPES = {"x": (1, 64)}
BLOCK = ("conv12_expand_weights", "conv12_depthwise_weights", "conv12_se_1_weights", "conv12_se_2_weights",
         "conv12_linear_weights")
HEAD = ("fc_0.w_0", "fc_0.b_0")


def transfer_learned(src, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """The trained classifier with a new ``classes``-way head (new shapes) and one block fine-tuned
    (about 2 % of each tensor's mean magnitude): the common transfer-learning case."""
    m = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for node in m.graph.node:
        if node.op_type != "Constant":
            continue
        t, out = node.attribute[0].t, node.output[0]
        if out in BLOCK:
            a = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(
                (a + 0.02 * np.abs(a).mean() * rng.standard_normal(a.shape)).astype(a.dtype), t.name))
        elif out == "fc_0.w_0":
            t.CopyFrom(numpy_helper.from_array((0.05 * rng.standard_normal((200, classes))).astype(np.float32), t.name))
        elif out == "fc_0.b_0":
            t.CopyFrom(numpy_helper.from_array(np.zeros(classes, np.float32), t.name))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = classes
    return m


def _outputs_close(model_a, model_b, shapes, bound: FidelityBound, seeds=(11, 12)) -> float:
    """Relative output error of ``model_b`` against ``model_a`` on inputs no search saw."""
    (name, shape), = shapes.items()
    feeds = [{name: np.random.default_rng(s).standard_normal(shape).astype(np.float32)} for s in seeds]
    names, ref = run_model(model_a, feeds)
    _, got = run_model(model_b, feeds)
    return compare(Reference.of(names, ref), got, bound).max_rel_error


def test_replaced_head_and_fine_tuned_block_code_as_a_small_update(tmp_path):
    base_path = shared_model("ppocr_mobile_v2_cls.onnx")
    old = load_model(base_path)
    new = save_and_load(transfer_learned(base_path), tmp_path / "derived.onnx")
    bound = FidelityBound(0.03)
    full = encode_model(new, CLS_SHAPES, bound, calibration_samples=4, workers=1)
    delta = encode_model(new, CLS_SHAPES, bound, previous=old, calibration_samples=4, workers=1, whole=full)
    assert delta.delta and delta.base_sha256 == old.sha256
    assert delta.compressed_bytes < 0.25 * full.compressed_bytes, (delta.compressed_bytes, full.compressed_bytes)
    modes = {c.key.split(":", 1)[1]: c.mode for c in delta.tensors}
    assert {k: modes[k] for k in BLOCK} == dict.fromkeys(BLOCK, "delta")
    assert modes["fc_0.w_0"] == "nnc"  # [200, 3]: reshaped, coded whole
    assert sum(m == "same" for m in modes.values()) == 308 - len(BLOCK) - len(HEAD)
    u = delta.update
    assert u.graph_changed and not u.whole_model and set(u.removed) == {f"constant:{k}" for k in HEAD}
    assert 0 < u.graph_section_bytes < 1000
    # 1000 -> 3 classes: the previous outputs are not comparable; the bound holds on the new model's outputs
    assert delta.fidelity.relative_to == "reference outputs" and delta.fidelity.meets

    rec = decode_bitstream(delta.bitstream, old)  # the previous model + the update -> the new model
    assert graphdiff.digest(_stripped(rec)) == graphdiff.digest(graphdiff.skeleton(new))  # structure: bit-exact
    assert _outputs_close(str(new.path), rec, CLS_SHAPES, bound) <= bound.max_rel_error
    with pytest.raises(TransferError, match="update against"):
        decode_bitstream(delta.bitstream, new)


def _stripped(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for ref in iter_stored_tensors(out):
        graphdiff.clear_payload(ref.tensor)
    return out


def _mlp_with_layers_swapped(base: onnx.ModelProto) -> onnx.ModelProto:
    """``base`` (wide_mlp, 4 hidden layers) without hidden layer 2 and with a new layer before the
    output; layer 0 fine-tuned."""
    rng = np.random.default_rng(5)
    m = onnx.ModelProto()
    m.CopyFrom(base)
    g = m.graph
    keep = [n for n in g.node if not any(x in ("w2", "b2", "m2", "a2") for x in list(n.input) + list(n.output))]
    for n in keep:
        n.input[:] = ["h1" if x == "h2" else x for x in n.input]
    out = next(n for n in keep if "w_out" in n.input)
    out.input[0] = "h9"
    extra = [helper.make_node("MatMul", ["h3", "w9"], ["m9"]), helper.make_node("Add", ["m9", "b9"], ["a9"]),
             helper.make_node("Relu", ["a9"], ["h9"])]
    del g.node[:]
    g.node.extend(keep[:-1] + extra + keep[-1:])
    inits = [t for t in g.initializer if t.name not in ("w2", "b2")]
    for t in inits:
        if t.name == "w0":
            a = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array((a + 0.01 * a.std() * rng.standard_normal(a.shape)).astype(np.float32), "w0"))
    inits += [numpy_helper.from_array((rng.standard_normal((256, 256)) / 16).astype(np.float32), "w9"),
              numpy_helper.from_array((0.05 * rng.standard_normal(256)).astype(np.float32), "b9")]
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.checker.check_model(m)
    return m


def test_added_and_removed_layers(tmp_path):
    base = wide_mlp(seed=3)
    old = save_and_load(base, tmp_path / "old.onnx")
    new = save_and_load(_mlp_with_layers_swapped(base), tmp_path / "new.onnx")
    bound = FidelityBound(0.03)
    delta = encode_model(new, MLP_SHAPES, bound, previous=old, workers=1)
    modes = {c.key: c.mode for c in delta.tensors}
    assert modes["initializer:w0"] == "delta"
    assert all(modes[f"initializer:{k}"] == "same" for k in ("b0", "w1", "b1", "w3", "b3", "w_out"))
    # w9 takes w2's place in the structure, but it is no update of w2: coded whole
    assert modes["initializer:w9"] == "nnc" and modes["initializer:b9"] == "nnc"
    assert delta.update.graph_changed
    assert {c.reason for c in delta.tensors if c.key == "initializer:w9"} != {"sensitivity"}
    rec = decode_bitstream(delta.bitstream, old)
    assert graphdiff.digest(_stripped(rec)) == graphdiff.digest(graphdiff.skeleton(new))
    assert [n.op_type for n in rec.graph.node] == [n.op_type for n in new.proto.graph.node]
    assert _outputs_close(str(new.path), rec, MLP_SHAPES, bound) <= bound.max_rel_error
    for key in ("initializer:w1", "initializer:w_out"):  # unchanged tensors come back bit-exactly
        a = next(r.tensor for r in iter_stored_tensors(rec) if r.key == key)
        b = next(r.tensor for r in iter_stored_tensors(new.proto) if r.key == key)
        assert numpy_helper.to_array(a).tobytes() == tensor_array(new, b).tobytes()


def test_nothing_in_common_is_the_whole_model_and_says_so(tmp_path):
    old = save_and_load(small_cnn(), tmp_path / "cnn.onnx")
    new = save_and_load(wide_mlp(seed=1), tmp_path / "mlp.onnx")
    full = encode_model(new, MLP_SHAPES, workers=1)
    delta = encode_model(new, MLP_SHAPES, previous=old, workers=1, whole=full)
    assert delta.update.whole_model and delta.update.graph_changed
    assert {c.mode for c in delta.tensors} == {c.mode for c in full.tensors}
    assert full.compressed_bytes < delta.compressed_bytes < full.compressed_bytes + 2000  # + the graph
    assert len(delta.update.removed) == len(list(iter_stored_tensors(old.proto)))
    rec = decode_bitstream(delta.bitstream, old)
    same = decode_bitstream(full.bitstream, new)
    for a, b in zip(iter_stored_tensors(rec), iter_stored_tensors(same)):
        assert a.key == b.key and numpy_helper.to_array(a.tensor).tobytes() == numpy_helper.to_array(b.tensor).tobytes()


# --------------------------------------------------------------------------------------------
# The graph patch and the container (no codec)


def test_graph_patch_round_trips_and_is_small(tmp_path):
    base_path = shared_model("ppocr_mobile_v2_cls.onnx")
    old = graphdiff.skeleton(load_model(base_path))
    new = graphdiff.skeleton(save_and_load(transfer_learned(base_path), tmp_path / "d.onnx"))
    patch = graphdiff.make_patch(old, new)
    assert graphdiff.digest(graphdiff.apply_patch(old, patch)) == graphdiff.digest(new)
    assert len(zlib.compress(patch, 9)) < len(zlib.compress(graphdiff.serialise(new), 9)) / 10
    assert graphdiff.digest(graphdiff.apply_patch(old, graphdiff.make_patch(old, old))) == graphdiff.digest(old)


def _patch(head: dict, body: bytes = b"") -> bytes:
    h = json.dumps(head).encode()
    return struct.pack("<I", len(h)) + h + body


@pytest.mark.parametrize("patch", [
    b"", b"\xff\xff\xff\xff", _patch({"v": 2, "shell": 0, "fields": {}}),
    _patch({"v": 1, "shell": 5, "fields": {}}),  # shell longer than the patch
    _patch({"v": 1, "shell": 0, "fields": {"graph.node": [["c", 0, 10 ** 9]]}}),  # beyond the previous graph
    _patch({"v": 1, "shell": 0, "fields": {"graph.node": [["c", 5, 6], ["c", 0, 6]]}}),  # backwards: amplification
    _patch({"v": 1, "shell": 0, "fields": {"graph.node": [["n", [3]]]}}),  # element beyond the patch
    _patch({"v": 1, "shell": 0, "fields": {"graph.node": [["x"]]}}),
    _patch({"v": 1, "shell": 0, "fields": {"graph.evil": []}}),
    _patch({"v": 1, "shell": 0, "fields": {}}, b"trailing"),
    _patch({"v": 1, "shell": 0, "fields": {"graph.node": [["n", [2]]]}}, b"\xff\xff"),  # not a NodeProto
], ids=["empty", "huge-header", "version", "shell", "copy-range", "copy-backwards", "new-beyond", "op", "field",
        "trailing", "bad-node"])
def test_malformed_graph_patch_is_a_transfer_error(patch):
    old = small_cnn()
    with pytest.raises(TransferError, match="graph section is corrupt"):
        graphdiff.apply_patch(old, patch)


def test_container_v2_round_trips_and_its_graph_section_cannot_inflate_beyond_its_declaration():
    c = Container("a" * 64, "b" * 64, "c" * 64, 2, (Entry(0, "same", base=3), Entry(1, "raw", 0, 3)), b"", b"xyz",
                  b"patch" * 100, "d" * 64, ("initializer:gone",))
    blob = pack(c)
    back = unpack(blob)
    assert back == c
    # a graph section declared small that inflates to more is refused without inflating it
    header = json.loads(zlib.decompress(blob[14:14 + struct.unpack_from("<I", blob, 10)[0]]))
    header["graph_inflated_bytes"] = 10
    import hashlib

    hz = zlib.compress(json.dumps(header).encode())
    payload = blob[14 + struct.unpack_from("<I", blob, 10)[0]:]
    bomb = MAGIC + struct.pack("<HI", 2, len(hz)) + hz + payload
    assert hashlib.sha256(payload).hexdigest() == header["payload_sha256"]
    with pytest.raises(TransferError, match="inflates beyond"):
        unpack(bomb)


def test_version_1_containers_are_still_read():
    import hashlib

    raw_z = zlib.compress(b"xyz")
    header = {"model_sha256": "a" * 64, "base_sha256": "b" * 64, "keys_sha256": "c" * 64, "tensor_count": 2,
              "payload_sha256": hashlib.sha256(raw_z).hexdigest(), "nnc_bytes": 0, "raw_bytes": len(raw_z),
              "tensors": [[0, "same", 0, 0], [1, "raw", 0, 3]]}
    hz = zlib.compress(json.dumps(header).encode())
    c = unpack(MAGIC + struct.pack("<HI", 1, len(hz)) + hz + raw_z)
    assert c.entries[0].base == 0 and c.entries[1].base == -1 and c.graph is None and c.raw == b"xyz"


def _v2(entries, model_sha, base_sha, keys_sha, count, raw=b"", graph=None, graph_sha=None) -> bytes:
    return pack(Container(model_sha, base_sha, keys_sha, count, tuple(entries), b"", raw, graph, graph_sha, ()))


def test_hostile_update_containers_are_refused(tmp_path):
    """Crafted version-2 updates: a pairing across shapes, a graph section that rebuilds another graph,
    a tensor of the new graph the container does not cover."""
    from eeki_label.transfer.container import keys_digest

    old = save_and_load(wide_mlp(seed=3), tmp_path / "old.onnx")
    keys = [r.key for r in iter_stored_tensors(old.proto)]
    n = len(keys)
    w0, b0 = keys.index("initializer:w0"), keys.index("initializer:b0")
    same = [Entry(i, "same", base=i) for i in range(n)]
    crossed = [Entry(w0, "same", base=b0) if e.index == w0 else e for e in same]
    with pytest.raises(TransferError, match="another type or shape"):
        decode_bitstream(_v2(crossed, "0" * 64, old.sha256, keys_digest(keys), n), old)
    with pytest.raises(TransferError, match="outside that model"):
        decode_bitstream(_v2([Entry(0, "same", base=n + 5)] + same[1:], "0" * 64, old.sha256, keys_digest(keys), n),
                         old)
    skel = graphdiff.skeleton(old)
    patch = graphdiff.make_patch(skel, skel)
    with pytest.raises(TransferError, match="does not rebuild the graph it declares"):
        decode_bitstream(_v2(same, "0" * 64, old.sha256, keys_digest(keys), n, graph=patch, graph_sha="f" * 64), old)
    with pytest.raises(TransferError, match="every tensor"):
        decode_bitstream(_v2(same[:-1], "0" * 64, old.sha256, keys_digest(keys), n, graph=patch,
                             graph_sha=graphdiff.digest(skel)), old)
    # all "same" through the graph section: the previous model back, bit-exactly
    rec = decode_bitstream(_v2(same, "0" * 64, old.sha256, keys_digest(keys), n, graph=patch,
                               graph_sha=graphdiff.digest(skel)), old)
    for a, b in zip(iter_stored_tensors(rec), iter_stored_tensors(old.proto)):
        assert numpy_helper.to_array(a.tensor).tobytes() == tensor_array(old, b.tensor).tobytes()


def test_a_name_taken_by_another_layer_still_finds_the_unchanged_values(tmp_path):
    """Two layers of the same shape swap their names (an export that numbers tensors differently):
    the name pass pairs each with the other's values, but both are unchanged copies of previous tensors."""
    base = wide_mlp(seed=3)
    swapped = onnx.ModelProto()
    swapped.CopyFrom(base)
    inits = {t.name: t for t in swapped.graph.initializer}
    w1, w2 = onnx.TensorProto(), onnx.TensorProto()
    w1.CopyFrom(inits["w1"])
    w2.CopyFrom(inits["w2"])
    inits["w1"].CopyFrom(w2)
    inits["w1"].name = "w1"
    inits["w2"].CopyFrom(w1)
    inits["w2"].name = "w2"
    old = save_and_load(base, tmp_path / "old.onnx")
    new = save_and_load(swapped, tmp_path / "new.onnx")
    from eeki_label.transfer.nnc import plan_update

    plan = plan_update(new, old)
    keys = [r.key for r in iter_stored_tensors(new.proto)]
    prev_keys = [r.key for r in iter_stored_tensors(old.proto)]
    p1, p2 = plan.pairs[keys.index("initializer:w1")], plan.pairs[keys.index("initializer:w2")]
    assert (prev_keys[p1[0]], p1[1]) == ("initializer:w2", "frozen")
    assert (prev_keys[p2[0]], p2[1]) == ("initializer:w1", "frozen")
    delta = encode_model(new, MLP_SHAPES, previous=old, workers=1)
    assert {c.mode for c in delta.tensors} == {"same"} and not delta.update.graph_changed
    rec = decode_bitstream(delta.bitstream, old)
    for a, b in zip(iter_stored_tensors(rec), iter_stored_tensors(new.proto)):
        assert numpy_helper.to_array(a.tensor).tobytes() == tensor_array(new, b.tensor).tobytes()


def test_an_update_never_costs_more_than_the_whole_model(tmp_path):
    """A coarse full-model coding (search margin 1) and a fine delta (margin 0.05) of a heavily changed
    model: the difference comes out larger, so the whole-model coding is sent, and said so."""
    from eeki_label.transfer.nnc import LARGER_THAN_WHOLE

    base = wide_mlp(seed=3)
    prev = onnx.ModelProto()
    prev.CopyFrom(base)
    rng = np.random.default_rng(0)
    for t in prev.graph.initializer:
        a = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array((a + 0.5 * a.std() * rng.standard_normal(a.shape)).astype(np.float32), t.name))
    new, old = save_and_load(base, tmp_path / "new.onnx"), save_and_load(prev, tmp_path / "old.onnx")
    full = encode_model(new, MLP_SHAPES, workers=1, margin=1.0)
    delta = encode_model(new, MLP_SHAPES, previous=old, workers=1, whole=full, margin=0.05)
    assert delta.update.whole_model and delta.update.whole_reason == LARGER_THAN_WHOLE
    assert full.compressed_bytes <= delta.compressed_bytes < full.compressed_bytes + 200  # no graph change
    rec, same = decode_bitstream(delta.bitstream, old), decode_bitstream(full.bitstream, new)
    for a, b in zip(iter_stored_tensors(rec), iter_stored_tensors(same)):
        assert numpy_helper.to_array(a.tensor).tobytes() == numpy_helper.to_array(b.tensor).tobytes()
