"""The optional label sections (transfer, recycling) are read tolerantly and shown when present."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from eeki_label.models import Label
from eeki_label.render import pdf as pdf_mod
from eeki_label.render.common import recycling_text, tolerance_text, transfer_headline, transfer_text

from render_support import example_outputs  # noqa: F401  (fixture)


@pytest.mark.parametrize("section", [
    {"original_bytes": 46_800_000, "compressed_bytes": 6_860_000, "codec": "nnc", "qp": -38,
     "scenarios": [{"id": "one-time", "uncompressed_wh": 0.0878, "nnc_wh": 0.0595, "saving_share": 0.32}]},
    {"original_bytes": 46_800_000, "compressed_bytes": 6_860_000, "codec": "nnc", "qp": -38,
     "scenarios": {"one_time": {"uncompressed": {"total_wh": 0.0878, "co2_g": 9.9},
                                "nnc": {"total_wh": 0.0595, "co2_g": 7.0}}}},
])
def test_transfer_headline_reads_the_one_time_scenario(section):
    label = SimpleNamespace(transfer=section)
    h = transfer_headline(label)
    assert h["ratio"] == pytest.approx(6.86 / 46.8)
    assert h["one_time_plain_j"] == pytest.approx(0.0878 * 3600)
    assert h["one_time_nnc_j"] == pytest.approx(0.0595 * 3600)
    size, saving = transfer_text(label)
    assert size == "6.86 MB after NNC (14.7 % of 46.8 MB)"
    assert saving == "saves 0.02830 Wh per transfer (-32 %)"


def test_no_sections_no_figures():
    label = SimpleNamespace()
    assert transfer_text(label) is None and recycling_text(label) is None


def test_recycling_text_reports_the_training_savings():
    label = SimpleNamespace(recycling={"basis": "declared-base", "notes": [], "training": {"scenarios": [
        {"id": "scratch", "saving_wh": None, "saving_share": None},
        {"id": "transfer-learning", "saving_wh": 1234.5, "saving_share": 0.97},
    ]}})
    assert recycling_text(label) == "transfer-learning saves 1,234 Wh (97 %) of training from scratch (declared base)"


def test_tolerance_states_the_distance_to_both_class_bounds(example_outputs):
    lab = Label.model_validate(example_outputs["label"])
    text = tolerance_text(lab)
    assert text.startswith(f"index {lab.label.index:.3g} in class {lab.label.class_}")


def test_pdf_label_page_shows_transfer_figures_when_present(example_outputs, monkeypatch):
    monkeypatch.setattr(pdf_mod, "transfer_text", lambda lab: ("6.86 MB after NNC (14.7 % of 46.8 MB)",
                                                              "saves 0.0283 Wh per transfer (-32 %)"))
    data = pdf_mod.render_pdf(Label.model_validate(example_outputs["label"]))
    page1 = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert "6.86 MB after NNC (14.7 % of 46.8 MB)" in page1 and "saves 0.0283 Wh per transfer (-32 %)" in page1
