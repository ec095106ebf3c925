"""README badges of a label: a shields.io endpoint JSON and a self-contained SVG (no fonts, scripts or
links loaded; every text escaped).

One badge shows one device class (default: the document's first): ``energy label | A · 1.6 mJ ·
edge-gpu-batch1`` in the class's EU energy-label colour (``render.common.CLASS_COLOURS``). The label id
is in the SVG's ``<title>`` (shown on hover) and in the endpoint JSON's ``eeki_label_id`` member
(shields ignores members it does not know).
"""

from __future__ import annotations

import json
from typing import Optional
from xml.sax.saxutils import escape

from eeki_label.export.common import ExportSource
from eeki_label.render.common import CLASS_COLOURS, one_line, sig
from eeki_label.units import j_to_mj

LABEL_TEXT = "energy label"
NOT_GRADABLE_COLOUR = "#9f9f9f"
LABEL_COLOUR = "#555555"
#: Classes whose colour is light (C lime, D yellow, E amber): dark text on them, white on the others.
_DARK_TEXT = {"C", "D", "E"}


def badge_parts(src: ExportSource, device_class: Optional[str] = None) -> tuple[str, str, str, str]:
    """(label text, message, background colour #rrggbb, text colour) of the badge."""
    lab = src.label_for(device_class)
    letter = lab.label.class_
    dc = one_line(lab.device_class.id, 40)
    if letter is None:
        return LABEL_TEXT, f"not gradable · {dc}", NOT_GRADABLE_COLOUR, "#ffffff"
    energy = lab.inference.energy_j
    parts = [letter]
    if energy is not None:
        parts.append(f"{sig(j_to_mj(energy), 3)} mJ")
    parts.append(dc)
    text_colour = "#000000" if letter in _DARK_TEXT else "#ffffff"
    return LABEL_TEXT, " · ".join(parts), CLASS_COLOURS[letter], text_colour


def badge_json(src: ExportSource, device_class: Optional[str] = None) -> str:
    """shields.io endpoint JSON (``https://shields.io/badges/endpoint-badge``): schemaVersion 1."""
    label, message, colour, _ = badge_parts(src, device_class)
    doc = {"schemaVersion": 1, "label": label, "message": message, "color": colour.lstrip("#"),
           "labelColor": LABEL_COLOUR.lstrip("#"), "eeki_label_id": src.label_id}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# Approximate advance widths of Verdana at 11 px (the shields.io badge font), per character class.
_NARROW = set("iljI.,:;'!|()[] ")
_WIDE = set("mwMW@%")


def text_width(text: str) -> float:
    width = 0.0
    for ch in text:
        if ch in _NARROW:
            width += 3.9
        elif ch in _WIDE:
            width += 10.5
        elif ch.isupper() or ch.isdigit():
            width += 7.6
        else:
            width += 6.6
    return width


def badge_svg(src: ExportSource, device_class: Optional[str] = None) -> str:
    """A flat badge in the shields.io style, 20 px high."""
    label, message, colour, text_colour = badge_parts(src, device_class)
    pad = 6
    lw = round(text_width(label) + 2 * pad)
    mw = round(text_width(message) + 2 * pad)
    width = lw + mw
    title = f"{label}: {message} (eeki-label, label {src.label_id})"
    shadow = "#010101" if text_colour == "#ffffff" else "#ffffff"
    e = escape
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{e(title, {'"': '&quot;'})}">
<title>{e(title)}</title>
<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>
<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>
<g clip-path="url(#r)">
<rect width="{lw}" height="20" fill="{LABEL_COLOUR}"/>
<rect x="{lw}" width="{mw}" height="20" fill="{colour}"/>
<rect width="{width}" height="20" fill="url(#s)"/>
</g>
<g text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">
<text x="{lw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{e(label)}</text>
<text x="{lw / 2:.1f}" y="14" fill="#ffffff">{e(label)}</text>
<text x="{lw + mw / 2:.1f}" y="15" fill="{shadow}" fill-opacity=".3">{e(message)}</text>
<text x="{lw + mw / 2:.1f}" y="14" fill="{text_colour}">{e(message)}</text>
</g>
</svg>
"""
