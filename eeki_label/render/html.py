"""The interactive HTML report: ``render_html(doc) -> str``, no I/O besides reading package data.

One self-contained file (no network, no CDN): the label, and the what-if widgets of the EEKI study's
demonstrator (BRIEF §3): location (grid carbon intensity), number of inferences in millions,
electricity price 0-0.5 EUR/kWh, and for a label with NNC transfer figures the number of devices,
updates or federated rounds and the link speeds. Inline JavaScript recomputes energy, CO2, cost and
the car-km equivalent as inputs change and plots energy over inference volume or rounds (inline SVG).

The figures for locations, prices, links and the car equivalence come from ``data/energy/transfer.json``
(every figure with its source; the page lists them). The template is autoescaped; the label JSON is
embedded in a ``<script type="application/json">`` block with ``<``, ``>``, ``&``, U+2028 and U+2029
written as JSON ``\\u`` escapes, so no text from a model can close the script element.
"""

from __future__ import annotations

from importlib import resources

from markupsafe import Markup

from eeki_label import __version__
from eeki_label.errors import CatalogueError
from eeki_label.render.common import (
    CLASS_COLOURS, CLASSES, flatten, human_energy, label_document, label_id_of, labels_of, mj, one_line, task_text,
    per_1000_text, qr_payload, recycling_text, section, sig, signature_of, tolerance_text, transfer_inputs,
    transfer_text, wh_per_1000,
)

ENERGY_FILE = "transfer.json"
TEMPLATE = "report.html.j2"

#: Display names of the location ids in data/energy/transfer.json (names only, no figures).
LOCATION_NAMES = {
    "WORLD": "World average", "DE": "Germany", "DE-ES-study": "Germany-Spain link (EEKI study example)",
    "AT": "Austria", "AU": "Australia", "BE": "Belgium", "BR": "Brazil", "CZ": "Czechia", "DK": "Denmark",
    "ES": "Spain", "FI": "Finland", "FR": "France", "GB": "United Kingdom", "GR": "Greece", "HU": "Hungary",
    "IE": "Ireland", "IN": "India", "IT": "Italy", "NL": "Netherlands", "NO": "Norway", "PL": "Poland",
    "SE": "Sweden", "US": "United States", "CN": "China", "JP": "Japan", "CA": "Canada", "CH": "Switzerland",
}


def script_json(text: str) -> Markup:
    """JSON text that is safe inside ``<script type="application/json">``: the characters that could end
    the element or confuse an HTML/JS parser are written as ``\\u`` escapes (only strings hold them)."""
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return Markup(text)


def energy_parameters() -> dict:
    """Locations, prices, links, device power and the car equivalence, with sources and the file's
    version and sha256, from ``data/energy/transfer.json``."""
    from eeki_label.resources import load_json

    doc = load_json("energy", ENERGY_FILE)
    c = doc.content
    try:
        locations = [
            {"id": k, "name": LOCATION_NAMES.get(k, k), "g_per_kwh": float(v["value"]), "year": v.get("year"),
             "source": v.get("source", "")}
            for k, v in c["grid_g_per_kwh"].items()
        ]
        prices = [{"id": k, "eur_per_kwh": float(v["value"]), "source": v.get("source", "")}
                  for k, v in c["price_eur_per_kwh"].items()]
        links = [{"id": k, "name": v.get("name", k), "up_mbit_s": float(v["up_mbit_s"]["value"]),
                  "down_mbit_s": float(v["down_mbit_s"]["value"]), "source": v["up_mbit_s"].get("source", "")}
                 for k, v in c["links"].items()]
        device = c["devices"][c["default_device"]]
        return {
            "file": f"data/energy/{ENERGY_FILE}", "version": str(c["version"]), "sha256": doc.sha256,
            "locations": locations, "default_location": c.get("default_country", locations[0]["id"]),
            "prices": prices, "default_price": c.get("default_price", prices[0]["id"]),
            "links": links, "default_link": c.get("default_link", links[0]["id"]),
            "device": {"id": c["default_device"], "name": device.get("name", c["default_device"]),
                       "transfer_power_w": float(device["transfer_power_w"]["value"]),
                       "codec_power_w": float(device["codec_power_w"]["value"]),
                       "source": device["transfer_power_w"].get("source", "")},
            "car_g_per_km": float(c["car_g_per_km"]["value"]), "car_source": c["car_g_per_km"].get("source", ""),
        }
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CatalogueError(f"data file energy/{ENERGY_FILE} is damaged: {e!r}") from e


def _split(text: str) -> "tuple[str, str]":
    value, _, unit = text.partition(" ")
    return value, unit


def _label_view(lab) -> dict:
    g = lab.label
    return {
        "device_class": lab.device_class.id, "device_name": one_line(lab.device_class.name),
        "class": g.class_, "index": g.index, "gradable": g.gradable, "reason": g.reason,
        "energy_j": lab.inference.energy_j, "method": lab.inference.method,
        "reference_id": lab.reference.model_id, "reference_name": lab.reference.name,
        "reference_energy_j": lab.reference.energy_j,
        "mj": mj(lab.inference.energy_j), "wh_1000": wh_per_1000(lab), "ref_mj": mj(lab.reference.energy_j),
        "energy_value": _split(human_energy(lab.inference.energy_j))[0],
        "energy_unit": _split(human_energy(lab.inference.energy_j))[1],
        "per_1000_value": _split(per_1000_text(lab))[0], "per_1000_unit": _split(per_1000_text(lab))[1],
        "index_text": sig(g.index, 3), "margin": tolerance_text(lab),
        "transfer": transfer_inputs(lab), "label_id": label_id_of(lab),
    }


def report_context(doc) -> dict:
    import json

    from eeki_label.models import dump_json

    labels = labels_of(doc)
    first = labels[0]
    signature = signature_of(doc)
    views = [_label_view(lab) for lab in labels]
    params = energy_parameters()
    priced = next((v["transfer"] for v in views if v["transfer"]), None)
    if priced is not None:  # the location the label's transfer figures were priced with
        ids = [loc["id"] for loc in params["locations"]]
        same_g = [loc["id"] for loc in params["locations"] if loc["g_per_kwh"] == priced["grid_g_per_kwh"]]
        params = {**params, "default_location": priced["country"] if priced["country"] in ids
                  else (same_g[0] if same_g else params["default_location"])}
    data = {"labels": views, "energy": params, "thresholds": first.label.thresholds, "classes": list(CLASSES),
            "colours": CLASS_COLOURS}
    return {
        "doc": doc, "labels": labels, "first": first, "views": views, "signature": signature,
        "energy": params, "classes": CLASSES, "colours": CLASS_COLOURS,
        "thresholds": first.label.thresholds, "has_transfer": any(v["transfer"] for v in views),
        "transfer_lines": [transfer_text(lab) for lab in labels],
        "recycling_lines": [recycling_text(lab) for lab in labels],
        "transfer_rows": flatten(section(first, "transfer")) if section(first, "transfer") else None,
        "recycling_rows": flatten(section(first, "recycling")) if section(first, "recycling") else None,
        "notes": sorted({n for lab in labels for n in lab.label.notes}),
        "document_label_id": label_id_of(doc) if hasattr(doc, "labels") else views[0]["label_id"],
        "qr_payloads": [qr_payload(lab, signature) for lab in labels],
        "version": __version__, "one_line": one_line, "sig": sig, "task_text": task_text,
        "data_json": script_json(json.dumps(data, ensure_ascii=False, sort_keys=True)),
        "label_json": script_json(dump_json(doc)),
        "document": label_document(doc),
    }


def _template():
    from jinja2 import Environment, StrictUndefined

    text = resources.files("eeki_label.render.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(text)


def render_html(doc) -> str:
    """The report of a ``Label`` or ``LabelSet`` as one self-contained HTML document."""
    return _template().render(**report_context(doc))
