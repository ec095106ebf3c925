"""The optional label sections (transfer, recycling) are shown when present."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from eeki_label.models import Label, TransferFidelityInfo, TransferInfo, TransferScenarioInfo
from eeki_label.render import pdf as pdf_mod
from eeki_label.render.common import recycling_text, tolerance_text, transfer_headline, transfer_text

from render_support import example_outputs  # noqa: F401  (fixture)


def study_transfer() -> TransferInfo:
    """A transfer section with the EEKI study's ResNet18 figures (BRIEF section 3)."""
    one = TransferScenarioInfo(
        id="one-time", description="one trained model sent to 1 device(s)", transfers=1, encodes=1, decodes=1,
        uncompressed_wh=0.0878, nnc_wh=0.0595, nnc_saving_share=1 - 0.0595 / 0.0878, uncompressed_co2_g=33.4,
        nnc_co2_g=22.7, uncompressed_cost_eur=None, nnc_cost_eur=None)
    return TransferInfo(
        implementation="nncodec", original_bytes=46_800_000, compressed_bytes=6_860_000, ratio=6.86 / 46.8,
        bitstream_bytes=6_800_000, graph_bytes=60_000, nnc_ratio=0.146, bitstream_sha256="0" * 64,
        qp={"min": -38, "median": -38, "max": -38},
        fidelity=TransferFidelityInfo(meets_bound=True, max_rel_error=0.01, min_top1_agreement=1.0,
                                      bound_max_rel_error=0.03, bound_min_top1_agreement=0.99,
                                      calibration="synthetic", samples=4),
        encode_s=10.0, decode_s=1.8, coded_float32_bytes=46_800_000, device_encode_s=8.5, device_decode_s=3.3,
        link_up_bit_s=22.51e6, link_down_bit_s=66.42e6, transfer_power_w=14.2,
        codec_power_w=14.2, country="DE", grid_g_co2_per_kwh=381, price_eur_per_kwh=None, parameters_sha256="0" * 64,
        scenarios=[one], notes=[])


def test_transfer_headline_reads_the_one_time_scenario():
    label = SimpleNamespace(transfer=study_transfer())
    h = transfer_headline(label)
    assert h["ratio"] == pytest.approx(6.86 / 46.8)
    assert h["one_time_plain_j"] == pytest.approx(0.0878 * 3600)
    assert h["one_time_nnc_j"] == pytest.approx(0.0595 * 3600)
    size, saving = transfer_text(label)
    assert size == "6.86 MB after NNC (14.7 % of 46.8 MB)"
    assert saving == "saves 28.3 mWh per transfer (32 % less)"


def test_no_sections_no_figures():
    label = SimpleNamespace(transfer=None, recycling=None)
    assert transfer_text(label) is None and recycling_text(label) is None


def test_recycling_text_reports_the_training_savings():
    scen = [SimpleNamespace(id="scratch", saving_wh=None, saving_share=None),
            SimpleNamespace(id="transfer-learning", saving_wh=1234.5, saving_share=0.97)]
    label = SimpleNamespace(recycling=SimpleNamespace(basis="declared-base", notes=[],
                                                      training=SimpleNamespace(scenarios=scen)))
    assert recycling_text(label) == "transfer-learning saves 1,234 Wh (97 %) of training from scratch (declared base)"


def test_tolerance_states_the_distance_to_both_class_bounds(example_outputs):
    lab = Label.model_validate(example_outputs["label"])
    text = tolerance_text(lab)
    assert text.startswith(f"index {lab.label.index:.3g} in class {lab.label.class_}")


def test_pdf_label_page_shows_transfer_figures_when_present(example_outputs):
    label = Label.model_validate(example_outputs["label"]).model_copy(update={"transfer": study_transfer()})
    page1 = PdfReader(io.BytesIO(pdf_mod.render_pdf(label))).pages[0].extract_text()
    assert "6.86 MB after NNC (14.7 % of 46.8 MB)" in page1 and "saves 28.3 mWh per transfer (32 % less)" in page1


def test_transfer_table_speaks_words_not_python_literals():
    import re

    from eeki_label.render.text import transfer_table

    info = study_transfer().model_copy(update={"fidelity": study_transfer().fidelity.model_copy(
        update={"min_top1_agreement": None})})
    text = transfer_table(info)
    assert not re.search(r"\b(None|True|False)\b", text), text
    assert "46.8 MB" in text and "meets the bound: yes" in text and "price not set" in text
    assert "n/a (no classifier-like output)" in text
