"""Exports of finished labels into the formats where people look for them (README, "Exports").

Pure functions: a label document (``Label`` or ``LabelSet``, signed or not) -> text. They never run a
model and never change the label, so a signed label still verifies after any export.
"""

from __future__ import annotations

from typing import Optional

from eeki_label.errors import UsageError

#: ``--format`` values and what they write.
FORMATS = {
    "cyclonedx": "CycloneDX 1.6 ML-BOM (JSON)",
    "spdx": "SPDX 3.0.1 JSON-LD with the AI profile's energy consumption",
    "model-card": "Hugging Face model card (README.md: YAML front matter + markdown)",
    "markdown": "the model card's markdown section alone (job summaries, READMEs)",
    "badge-json": "shields.io endpoint JSON",
    "badge-svg": "self-contained SVG badge",
}


def export_text(src, fmt: str, device_class: Optional[str] = None, spdx_unit: str = "kilowattHour") -> str:
    """The text of ``src`` (``common.ExportSource``) in format ``fmt`` (a key of ``FORMATS``)."""
    if fmt == "cyclonedx":
        from eeki_label.export.cyclonedx import cyclonedx_json

        return cyclonedx_json(src)
    if fmt == "spdx":
        from eeki_label.export.spdx import spdx_json

        return spdx_json(src, spdx_unit)
    if fmt == "model-card":
        from eeki_label.export.modelcard import model_card

        return model_card(src)
    if fmt == "markdown":
        from eeki_label.export.modelcard import model_card_section

        return model_card_section(src)
    if fmt == "badge-json":
        from eeki_label.export.badge import badge_json

        return badge_json(src, device_class)
    if fmt == "badge-svg":
        from eeki_label.export.badge import badge_svg

        return badge_svg(src, device_class)
    raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")


def parse_export_option(value: str) -> tuple[str, str]:
    """``FORMAT=PATH`` of ``assess --export``."""
    fmt, sep, path = value.partition("=")
    fmt = fmt.strip()
    if not sep or not path:
        raise UsageError(f"--export {value!r}: use FORMAT=PATH, FORMAT one of {', '.join(FORMATS)}")
    if fmt not in FORMATS:
        raise UsageError(f"--export {value!r}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt, path
