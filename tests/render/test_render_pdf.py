"""The PDF certificate: the facts of a real assessment, untrusted text rendered literally, determinism."""

from __future__ import annotations

import io
import re

import pytest
from pypdf import PdfReader

from eeki_label.models import Label, LabelSet
from eeki_label.render.common import human_energy, per_1000_text, sig
from eeki_label.render.pdf import render_pdf

from render_support import (  # noqa: F401  (fixtures)
    EXAMPLE, ISSUED_AT, MARKUP_DOC, MARKUP_NAME, MARKUP_PRODUCER, example_outputs, markup_model, run,
)


def pages_text(data: bytes) -> list[str]:
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]


def test_page_one_shows_class_sha256_device_rules_and_headline_numbers(example_outputs):
    lab = example_outputs["label"]
    pages = pages_text(example_outputs["pdf"].read_bytes())
    page1, rest = pages[0], "\n".join(pages[1:])
    energy_j = lab["inference"]["energy_j"]
    assert lab["model"]["sha256"] in page1
    assert lab["device_class"]["name"] in page1 and lab["device_class"]["id"] in page1
    assert f"{lab['rules']['id']} {lab['rules']['version']}" in page1
    assert f"{lab['catalogue']['id']} {lab['catalogue']['version']}" in page1
    assert human_energy(energy_j).split()[0] in page1 and "energy per inference" in page1
    assert per_1000_text(Label.model_validate(lab)).split()[0] in page1 and "per 1,000 inferences" in page1
    assert f"index {sig(lab['label']['index'], 3)}" in page1
    assert "CLASS" in page1 and lab["label"]["class"] in page1.split("CLASS", 1)[1]
    assert ISSUED_AT in page1 and "Test Lab" in page1 and "ESTIMATED" in page1
    assert "UNSIGNED" in page1
    # the details pages state the graded class next to the index
    assert f"{sig(lab['label']['index'], 4)}, class {lab['label']['class']}" in rest
    assert "Tolerances and how to re-test" in rest and "eeki-label verify label.json" in rest


def test_pdf_metadata_come_from_the_label_not_the_clock(example_outputs):
    reader = PdfReader(io.BytesIO(example_outputs["pdf"].read_bytes()))
    assert reader.metadata.creation_date.isoformat().startswith("2025-03-01T12:00:00")
    assert example_outputs["label"]["model"]["sha256"] in reader.metadata.subject


def test_same_label_gives_identical_pdf_bytes(example_outputs, tmp_path):
    doc = Label.model_validate(example_outputs["label"])
    first = render_pdf(doc)
    assert render_pdf(doc) == first
    # re-rendering the written JSON gives the bytes assess wrote
    assert first == example_outputs["pdf"].read_bytes()
    assert run(["render", example_outputs["json"], "--pdf", tmp_path / "again.pdf"]) == 0
    assert (tmp_path / "again.pdf").read_bytes() == first


def test_a_label_set_has_one_label_page_per_device_class(tmp_path):
    out = tmp_path / "set.json"
    assert run(["assess", EXAMPLE, "--input-shape", "x=1x3x48x192", "--runs", "0", "--issued-at", ISSUED_AT,
                "--json", out, "--pdf", tmp_path / "set.pdf", "-q"]) == 0
    doc = LabelSet.model_validate_json(out.read_text())
    pages = pages_text((tmp_path / "set.pdf").read_bytes())
    assert len(doc.labels) > 1
    for i, lab in enumerate(doc.labels):
        assert lab.device_class.id in pages[i] and f"device class {i + 1} of {len(doc.labels)}" in pages[i]
    details = "\n".join(pages[len(doc.labels):])
    assert all(lab.device_class.id in details for lab in doc.labels)
    assert "No runtime profile" in details


def test_model_text_with_markup_renders_literally(markup_model, tmp_path):
    pdf = tmp_path / "m.pdf"
    assert run(["assess", markup_model, "--runs", "0", "-d", "edge-gpu-batch1", "--issued-at", ISSUED_AT,
                "--pdf", pdf, "--json", tmp_path / "m.json", "-q"]) == 0
    text = "\n".join(pages_text(pdf.read_bytes()))
    flat = " ".join(text.split())
    for literal in (MARKUP_NAME, MARKUP_PRODUCER.strip(), " ".join(MARKUP_DOC.split()), markup_model.name):
        assert literal in flat, literal


def test_a_failed_render_leaves_no_file(example_outputs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = run(["render", example_outputs["json"], "--pdf", tmp_path / "ok.pdf", "--html", blocker / "r.html"])
    assert code == 21
    assert not (tmp_path / "ok.pdf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("content, code", [("{not json", 40), ('{"labels": []}', 0), ('{"label": 1}', 40), ("", 40)])
def test_render_rejects_a_bad_label_file(tmp_path, capsys, content, code):
    path = tmp_path / "l.json"
    path.write_text(content)
    got = run(["render", path, "--pdf", tmp_path / "o.pdf"])
    err = capsys.readouterr().err
    if code == 0:  # an empty set is a valid document but there is nothing to certify
        assert got == 40 and "empty" in err
    else:
        assert got == code and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "o.pdf").exists()


@pytest.mark.parametrize("text", ["short", "W" * 400, "il." * 300, "a b " * 2000])
@pytest.mark.parametrize("width", [0.0, 3.0, 40.0, 300.0])
def test_fit_gives_the_longest_prefix_that_fits(text, width):
    from reportlab.pdfbase.pdfmetrics import stringWidth

    from eeki_label.render.pdf import _fit

    out = _fit(text, "Helvetica", 8.5, width)
    if stringWidth(text, "Helvetica", 8.5) <= width:
        assert out == text
        return
    assert out.endswith("…") and text.startswith(out[:-1])
    kept = len(out) - 1
    assert kept == 0 or stringWidth(out, "Helvetica", 8.5) <= width
    assert stringWidth(text[:kept + 1] + "…", "Helvetica", 8.5) > width  # one more character would not fit


def test_long_label_text_is_shortened_and_says_so_in_the_pdf():
    from eeki_label.render.pdf import PDF_TEXT_CHARS, _first, esc

    shown = esc("<" * 50_000)
    assert shown.startswith("&lt;" * PDF_TEXT_CHARS) and "&lt;" * (PDF_TEXT_CHARS + 1) not in shown
    assert "50,000 characters in all; the label JSON has the full text" in shown
    assert esc("x" * 60, limit=None) == "x" * 60
    assert _first([str(i) for i in range(20)], 3) == "0; 1; 2; … and 17 more (the label JSON lists all)"
    assert _first(["a", "b"], 3) == "a; b"


# --------------------------------------------------------------------------------------------
# Nothing cut, nothing in Python's words: a long-named model, a not-graded class, a label set

LONG_NAME = ("paddleocr_text_direction_classifier_mobile_v2_0_finetuned_on_customer_invoices_and_receipts_"
             "2026_11_release_candidate_3.onnx")
PYTHONISMS = [r"\bNone\b", r"\bTrue\b", r"\bFalse\b", r"\[", r"\d…", r"…\d"]


def assert_plain_words(pages: list[str]) -> None:
    import re

    for n, text in enumerate(pages, 1):
        for pattern in PYTHONISMS:
            m = re.search(pattern, text)
            assert m is None, f"page {n}: {pattern!r} in ...{text[max(0, m.start() - 80):m.end() + 40]}..."


@pytest.fixture(scope="module")
def long_named_set(tmp_path_factory):
    import shutil

    d = tmp_path_factory.mktemp("long")
    model = d / LONG_NAME
    shutil.copy(EXAMPLE, model)
    out = d / "set.pdf"
    assert run(["assess", model, "--input-shape", "x=1x3x48x192", "--runs", "0", "--no-transfer",
                "-d", "edge-gpu-batch1", "-d", "microcontroller", "--issued-at", ISSUED_AT, "-q",
                "--task", "image-classification",
                "--issuer", "Independent Test Laboratory for Energy Efficient Artificial Intelligence Systems GmbH, "
                            "Department of Certification", "--pdf", out]) == 0
    return pages_text(out.read_bytes())


def test_long_names_wrap_instead_of_being_cut(long_named_set):
    page1 = long_named_set[0]
    assert LONG_NAME in "".join(page1.split())  # wrapped across lines, every character there
    assert "Department of Certification" in " ".join(page1.split())
    assert_plain_words(long_named_set)


def test_a_label_set_pdf_speaks_plain_words_with_task_and_reference_quality(long_named_set):
    assert len([p for p in long_named_set if "ENERGY LABEL FOR AI MODELS" in p]) == 2  # one label page per class
    for page1 in long_named_set[:2]:
        flat = " ".join(page1.split())
        assert "TASK image-classification, declared (--task)" in flat and "reference quality" in flat
        assert re.search(r"\d (µJ|mJ|J|mWh|Wh|kWh)\b", flat)
    details = " ".join(" ".join(long_named_set[2:]).split())
    assert "Classes by index: A up to 0.7" in details and "index = the model's energy per inference" in details


def test_a_not_graded_class_says_why_in_full(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from support import save

    w = numpy_helper.from_array(np.zeros((1024, 4096), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], initializer=[w])
    model = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")
    assert run(["assess", model, "--runs", "0", "--no-transfer", "-d", "microcontroller", "-q",
                "--task", "image-classification", "--pdf", tmp_path / "n.pdf"]) == 0
    pages = pages_text((tmp_path / "n.pdf").read_bytes())
    flat = " ".join(pages[0].split())
    assert "NOT GRADED" in flat and "Why: does not fit: weights need 4.19 MB at int8, the device has" in flat
    assert_plain_words(pages)


def test_the_example_certificate_speaks_plain_words(example_outputs):
    assert_plain_words(pages_text(example_outputs["pdf"].read_bytes()))
