"""Fixtures of the export tests: real labels of the bundled example, one signed set of two device
classes and one unsigned label, made once per session with the CLI (``--no-transfer --runs 0``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import ROOT
from eeki_label.cli import main

EXAMPLE = ROOT / "examples" / "ppocr_mobile_v2_cls.onnx"
ISSUED_AT = "2025-03-01T12:00:00+00:00"
SPDX_SCHEMA = Path(__file__).resolve().parent / "data" / "spdx-json-schema-3.0.1.json"
BASE_ARGS = ["--input-shape", "x=1x3x48x192", "--no-transfer", "--runs", "0", "--task", "image-classification",
             "--issued-at", ISSUED_AT, "-q"]


def run(args) -> int:
    return main([str(a) for a in args])


def labels_of(doc: dict) -> list:
    return doc["labels"] if "labels" in doc else [doc]


@pytest.fixture(scope="session")
def key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("key") / "issuer.key"
    assert run(["keygen", "--out", path]) == 0
    return path


@pytest.fixture(scope="session")
def signed_set(tmp_path_factory, key) -> Path:
    """A signed label set: edge-gpu-batch1 and single-board-cpu, issuer with markup in its name."""
    out = tmp_path_factory.mktemp("signed") / "label.json"
    assert run(["assess", EXAMPLE, *BASE_ARGS, "-d", "edge-gpu-batch1", "-d", "single-board-cpu",
                "--issuer", "Lab <b>|*x*|</b>", "--sign-key", key, "--json", out]) == 0
    assert json.loads(out.read_text())["signature"] is not None
    return out


@pytest.fixture(scope="session")
def unsigned_label(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unsigned") / "label.json"
    assert run(["assess", EXAMPLE, *BASE_ARGS, "-d", "edge-gpu-batch1", "--json", out]) == 0
    return out
