"""The curated reference entries of catalogue 2.0 (scripts/catalogue_models-2.0.0.json): every entry is
complete, every number has a source, and every architecture is stored as a weightless export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "scripts" / "catalogue_models-2.0.0.json"
ARCH = ROOT / "tests" / "data" / "arch"
V1 = ROOT / "scripts" / "catalogue_source.json"

ENTRIES = json.loads(SOURCE.read_text())


def test_ids_unique_and_v1_entries_kept():
    ids = [e["id"] for e in ENTRIES]
    assert len(ids) == len(set(ids))
    v1 = {m["id"]: m for m in json.loads(V1.read_text())["models"]}
    by_id = {e["id"]: e for e in ENTRIES}
    for mid, m in v1.items():
        e = dict(by_id[mid])
        q = dict(e["quality"])
        q.pop("metric")
        q.pop("dataset")
        e["quality"] = q
        assert e == m, mid


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_entry_complete(entry):
    for key in ("id", "name", "task", "weights", "quality", "onnx_file", "export"):
        assert entry.get(key), key
    q = entry["quality"]
    assert isinstance(q["value"], (int, float)) and 0 <= q["value"] <= 100
    assert q["source"] and q["metric"] and q["dataset"]
    if "published" in entry:
        pub = entry["published"]
        assert pub["source"]
        assert any(isinstance(v, int) and v > 0 for k, v in pub.items() if k != "source")
    if "training" in entry:
        assert entry["training"]["source"]
    assert ("input_shape" in entry) != ("input_shapes" in entry)
    shapes = [entry["input_shape"]] if "input_shape" in entry else list(entry["input_shapes"].values())
    assert all(all(isinstance(d, int) and d > 0 for d in s) for s in shapes)
    if "input_dtypes" in entry:
        assert set(entry["input_dtypes"]) == set(entry["input_shapes"])
    assert (ARCH / entry["onnx_file"]).is_file(), entry["onnx_file"]


def test_each_task_has_three_references():
    tasks: dict[str, int] = {}
    for e in ENTRIES:
        tasks[e["task"]] = tasks.get(e["task"], 0) + 1
    assert all(n >= 3 for n in tasks.values()), tasks
