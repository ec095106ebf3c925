"""A 20-model zoo for the batch tests: good models, broken ones and hostile ones, with a manifest.

Good: 12 ImageNet-like classifiers (``support.classifier``) of different widths, 8 with a declared
top-1 accuracy. Broken: garbage bytes, an empty file, a truncated protobuf, a graph without nodes.
Hostile: a symbolic link out of the zoo, a FIFO named ``*.onnx``, external data pointing out of the
model's folder, a manifest row whose path climbs out with ``..``.

``EXPECTED`` maps each path to the status and exit code a batch must record for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from support import classifier, save, tiny_cnn

GOOD = 12
ACCURACY = {0: 71.0, 1: 69.5, 2: 74.2, 3: 76.1, 4: 68.0, 5: 72.5, 6: 70.3, 7: 73.0}


def _wide_classifier(i: int) -> onnx.ModelProto:
    """A classifier with ``i % 4`` extra 16->16 convolutions: energies differ across the zoo."""
    m = classifier(1000, seed=i)
    g = m.graph
    rng = np.random.default_rng(100 + i)
    pool = next(n for n in g.node if n.op_type == "GlobalAveragePool")
    prev = "c"
    for k in range(i % 4):
        g.initializer.append(numpy_helper.from_array(
            (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32), f"extra{k}"))
        g.node.insert(1 + k, helper.make_node("Conv", [prev, f"extra{k}"], [f"c{k}"], pads=[1, 1, 1, 1]))
        prev = f"c{k}"
    pool.input[0] = prev
    return m


def build(root: Path) -> tuple[Path, dict[str, tuple[str, int]]]:
    """Write the zoo under ``root/zoo``; returns (manifest path, expected {path: (status, exit code)})."""
    zoo = root / "zoo"
    (zoo / "good").mkdir(parents=True)
    (zoo / "broken").mkdir()
    (zoo / "hostile" / "ext").mkdir(parents=True)
    rows, expected = [], {}
    for i in range(GOOD):
        rel = f"good/cls{i:02d}.onnx"
        save(_wide_classifier(i), zoo / rel)
        row = {"path": rel, "task": "image-classification"}
        if i in ACCURACY:
            row["accuracy"] = ACCURACY[i]
        rows.append(row)
        expected[rel] = ("ok", 0)

    (zoo / "broken" / "garbage.onnx").write_bytes(b"\x00\xffnot a model\x07" * 40)
    (zoo / "broken" / "empty.onnx").write_bytes(b"")
    raw = tiny_cnn().SerializeToString()
    (zoo / "broken" / "truncated.onnx").write_bytes(raw[: len(raw) // 2])
    nodeless = helper.make_model(helper.make_graph([], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]),
                                 opset_imports=[helper.make_opsetid("", 17)])
    (zoo / "broken" / "nodeless.onnx").write_bytes(nodeless.SerializeToString())
    expected.update({"broken/garbage.onnx": ("failed", 12), "broken/empty.onnx": ("failed", 12),
                     "broken/truncated.onnx": ("failed", 12), "broken/nodeless.onnx": ("failed", 13)})

    os.symlink("/etc/passwd", zoo / "hostile" / "passwd.onnx")
    os.mkfifo(zoo / "hostile" / "fifo.onnx")
    m = tiny_cnn()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../../../etc/passwd"), ("length", "864")):
        w.external_data.add(key=k, value=v)
    (zoo / "hostile" / "ext" / "escape.onnx").write_bytes(m.SerializeToString())
    (root / "outside.onnx").write_bytes(classifier(1000).SerializeToString())
    expected.update({"hostile/passwd.onnx": ("failed", 10), "hostile/fifo.onnx": ("failed", 10),
                     "hostile/ext/escape.onnx": ("failed", 15), "../outside.onnx": ("failed", 10)})
    for rel in ("broken/garbage.onnx", "broken/empty.onnx", "broken/truncated.onnx", "broken/nodeless.onnx",
                "hostile/passwd.onnx", "hostile/fifo.onnx", "hostile/ext/escape.onnx", "../outside.onnx"):
        rows.append({"path": rel, "task": "image-classification"})
    assert len(rows) == 20
    manifest = zoo / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, expected
