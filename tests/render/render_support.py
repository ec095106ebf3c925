"""Fixtures of the certificate tests (imported by the test modules): one real assessment of the bundled
example, rendered once, and a model whose texts are markup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import ROOT, save, tiny_cnn
from eeki_label.cli import main

EXAMPLE = ROOT / "examples" / "ppocr_mobile_v2_cls.onnx"
ISSUED_AT = "2025-03-01T12:00:00+00:00"
MARKUP_NAME = "<b>bold</b> & <font color='red'>red</font>"
MARKUP_PRODUCER = "<b>prod & co</b> <font size=40>"
MARKUP_DOC = "<font size=40>&amp; doc</font> </script><script>alert(1)</script>"


def run(args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="session")
def example_outputs(tmp_path_factory) -> dict:
    """``assess`` of examples/ppocr_mobile_v2_cls.onnx on one device class with --out DIR, plus its label."""
    out = tmp_path_factory.mktemp("example")
    # The renderers need a graded label with real NNC figures: the bundled example (a trained two-class
    # classifier, not graded by itself) is declared an image classifier here, as a user may declare it.
    code = run(["assess", EXAMPLE, "--input-shape", "x=1x3x48x192", "--runs", "1", "-d", "edge-gpu-batch1",
                "--task", "image-classification", "--json-shape", "single", "--issued-at", ISSUED_AT, "--issuer",
                "Test Lab", "--out", out, "-q"])
    assert code == 0
    return {"dir": out, "json": out / "label.json", "pdf": out / "label.pdf", "html": out / "report.html",
            "label": json.loads((out / "label.json").read_text())}


@pytest.fixture(scope="session")
def markup_model(tmp_path_factory) -> Path:
    """A tiny valid model whose graph name, producer and doc string are reportlab / HTML markup."""
    m = tiny_cnn()
    m.graph.name = MARKUP_NAME
    m.producer_name = MARKUP_PRODUCER
    m.doc_string = MARKUP_DOC
    return save(m, tmp_path_factory.mktemp("markup") / "a&b<i>.onnx")
