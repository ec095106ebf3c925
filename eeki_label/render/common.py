"""What the PDF and HTML renderers share: number formats, label ids, the QR payload, and tolerant
readers of the optional ``transfer`` / ``recycling`` sections (pure functions, no I/O)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

from eeki_label.units import j_to_mj, j_to_wh, mb, wh_to_j

CLASSES = ("A", "B", "C", "D", "E", "F", "G")
#: sRGB approximations of the EU energy label's class colours (Reg. (EU) 2017/1369 delegated acts:
#: A dark green ... G red; CMYK 100/0/100/0, 70/0/100/0, 30/0/100/0, 0/0/100/0, 0/30/100/0,
#: 0/70/100/0, 0/100/100/0).
CLASS_COLOURS = {
    "A": "#00a651", "B": "#50b848", "C": "#bed630", "D": "#fff200", "E": "#fdb913", "F": "#f37021", "G": "#ed1c24",
}
QR_PREFIX = "EEKI1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def labels_of(doc) -> list:
    """The labels of a document: a ``LabelSet``'s labels, or ``[label]``."""
    return list(doc.labels) if hasattr(doc, "labels") else [doc]


def one_line(text: Any, limit: int | None = None) -> str:
    """Untrusted text on one line: control characters become spaces; optionally shortened with ``…``."""
    s = _CONTROL.sub(" ", "" if text is None else str(text)).strip()
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return s


def sig(x: "float | None", digits: int = 4) -> str:
    """A number with ``digits`` significant digits, plain decimals from 1e-4 to 1e6, else scientific."""
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    e = math.floor(math.log10(abs(x)))
    if -4 <= e < 6:
        decimals = max(0, digits - 1 - e)
        return f"{x:,.{decimals}f}"
    return f"{x:.{digits - 1}e}"


def mj(energy_j: "float | None") -> str:
    return "n/a" if energy_j is None else sig(j_to_mj(energy_j))


def wh(energy_j: "float | None") -> str:
    return "n/a" if energy_j is None else sig(j_to_wh(energy_j))


def wh_per_1000(label) -> str:
    e = label.inference.energy_j
    return "n/a" if e is None else sig(j_to_wh(e * 1000))


def label_document(doc) -> dict:
    """The parsed JSON of a label or set, as written (what signatures and ids are computed on)."""
    from eeki_label.models import dump_json

    return json.loads(dump_json(doc))


def label_id_of(label) -> str:
    from eeki_label.signing import label_id

    return label_id(label_document(label))


def signature_of(doc):
    return getattr(doc, "signature", None)


def qr_payload(label, signature) -> str:
    """Compact verification payload: label id, model sha256, class, device class, rules, key.

    ``EEKI1;id=<16 hex>;sha256=<model sha256>;class=<A..G or ->;dc=<device class>;rules=<id>/<version>;
    key=<signing key sha256 hex, or unsigned>``."""
    key = signature.key_fingerprint.split(":", 1)[1] if signature is not None else "unsigned"
    return ";".join([
        QR_PREFIX, f"id={label_id_of(label)}", f"sha256={label.model.sha256}", f"class={label.label.class_ or '-'}",
        f"dc={label.device_class.id}", f"rules={label.rules.id}/{label.rules.version}", f"key={key}",
    ])


def model_title(label) -> str:
    m = label.model
    return one_line(m.file_name, 80)


# --------------------------------------------------------------------------------------------
# Optional sections written by other stages: read them tolerantly, render them when present.


def section(label, name: str) -> "dict | None":
    """The optional section ``name`` (``transfer``, ``recycling``) as plain JSON data, or None."""
    value = getattr(label, name, None)
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    return value if isinstance(value, dict) else {"value": value}


def _key_words(path: str) -> str:
    """``scenarios[1].nnc_delta_wh`` -> ``scenarios 2 › nnc delta (Wh)`` (units in words, 1-based)."""
    path = re.sub(r"\[(\d+)\]", lambda m: f" {int(m.group(1)) + 1}", path)
    parts = []
    for part in path.split("."):
        for suffix, unit in (("_bytes", "bytes"), ("_wh", "Wh"), ("_j", "J"), ("_s", "s"), ("_g", "g"),
                             ("_eur", "EUR"), ("_w", "W"), ("_bit_s", "bit/s"), ("_per_kwh", "per kWh")):
            if part.endswith(suffix) and len(part) > len(suffix):
                part = f"{part[: -len(suffix)]} ({unit})"
                break
        parts.append(part.replace("_", " "))
    return " › ".join(parts)


def flatten(data: Any, prefix: str = "", limit: int = 80) -> list[tuple[str, str]]:
    """``[(path in words, value in words)]`` of nested data, for a generic table: list positions from
    1, units from the names, ``n/a``/``yes``/``no`` for null and booleans (never Python's words)."""
    rows: list[tuple[str, str]] = []

    def walk(value, path):
        if len(rows) >= limit:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        else:
            if isinstance(value, bool):
                text = yes_no(value)
            elif isinstance(value, float):
                text = sig(value)
            elif isinstance(value, int) and path.endswith("_bytes"):
                text = f"{human_size(value)} ({value:,})" if value >= 1000 else f"{value:,}"
            elif isinstance(value, list):
                text = ", ".join(sig(v) if isinstance(v, float) else str(v) for v in value) or "none"
            else:
                text = "n/a" if value is None else str(value)
            rows.append((_key_words(path), one_line(text, 300)))

    walk(data, prefix)
    return rows


def transfer_headline(label) -> "dict | None":
    """Size after NNC and the one-time transfer energies from the label's ``transfer`` section:
    ``{original_bytes, compressed_bytes, ratio, one_time_plain_j, one_time_nnc_j, codec, qp}``, or None
    (also when NNC could not code the model: :func:`transfer_text` says so)."""
    t = label.transfer
    if t is None or t.status == "failed":
        return None
    one = next((x for x in t.scenarios if x.id == "one-time"), None)
    return {"original_bytes": t.original_bytes, "compressed_bytes": t.compressed_bytes, "ratio": t.ratio,
            "one_time_plain_j": wh_to_j(one.uncompressed_wh) if one else None,
            "one_time_nnc_j": wh_to_j(one.nnc_wh) if one else None, "codec": t.codec, "qp": t.qp}


def transfer_text(label) -> "tuple[str, str] | None":
    """(size line, saving line) for the label page, or None without a transfer section."""
    h = transfer_headline(label)
    if h is None:
        t = label.transfer
        if t is not None and t.status == "failed":
            return "NNC could not code the model", one_line(f"{t.failure.error_type}: {t.failure.error}", 120)
        return None
    if h["compressed_bytes"] is not None and h["original_bytes"]:
        size = (f"{sig(mb(h['compressed_bytes']), 3)} MB after NNC "
                f"({h['ratio'] * 100:.1f} % of {sig(mb(h['original_bytes']), 3)} MB)")
    else:
        size = "size after NNC: n/a"
    if h["one_time_plain_j"] and h["one_time_nnc_j"] is not None:
        saved = h["one_time_plain_j"] - h["one_time_nnc_j"]
        share = abs(saved) / h["one_time_plain_j"] * 100
        saving = (f"saves {human_wh(j_to_wh(saved))} per transfer ({share:.0f} % less)" if saved >= 0
                  else f"costs {human_wh(j_to_wh(-saved))} more per transfer ({share:.0f} % more)")
    else:
        saving = "saving per transfer: see the transfer section"
    return size, saving


def recycling_text(label) -> "str | None":
    """One line on the training energy that reuse saves, or None without a recycling section."""
    r = label.recycling
    if r is None:
        return None
    if r.training is not None:
        parts = [f"{x.id} saves {sig(x.saving_wh, 3)} Wh" + (f" ({x.saving_share * 100:.0f} %)" if x.saving_share is not None else "")
                 for x in r.training.scenarios if x.id != "scratch" and x.saving_wh is not None]
        if parts:
            basis = "potential, structural match" if r.basis == "structural-match" else "declared base"
            return "; ".join(parts) + f" of training from scratch ({basis})"
    return one_line(r.notes[0]) if r.notes else "recycling assessed: no training saving is credited"


def class_bounds(label) -> "tuple[float | None, float | None]":
    """(lower, upper] index bounds of the label's class under its rule set (None: open)."""
    letter = label.label.class_
    if letter is None:
        return None, None
    bounds = label.label.thresholds
    i = CLASSES.index(letter)
    lower = bounds.get(CLASSES[i - 1]) if i > 0 else None
    return lower, bounds.get(letter)


def tolerance_text(label) -> str:
    """How far the index may move before the class changes (the label's own margin)."""
    idx = label.label.index
    if idx is None or label.label.class_ is None:
        return "not graded: no class margin"
    lower, upper = class_bounds(label)
    up = f"+{sig((upper / idx - 1) * 100, 3)} % to the next class ({upper:g})" if upper else "no worse class"
    down = f"-{sig((1 - lower / idx) * 100, 3)} % to the better class ({lower:g})" if lower else "no better class"
    text = f"index {sig(idx, 3)} in class {label.label.class_}: {up}; {down}"
    ci = label.label.index_ci95
    if ci is not None:
        how = "the class's held-out error" if label.inference.method == "estimated" else "the measurement"
        spans = f", classes {'-'.join(label.label.classes_in_interval)}" if label.label.boundary_uncertain else ""
        text += f" (95 % interval of the index {sig(ci[0], 3)} to {sig(ci[1], 3)}, from {how}{spans})"
    return text


def transfer_inputs(label) -> "dict | None":
    """What the HTML what-if needs from the ``transfer`` section, so that its defaults reproduce the
    label's own scenario figures: model bytes before and after NNC, the codec seconds on the transfer
    device (the study's codec energy at the device's codec power, not this host's measured times),
    the link, powers and grid the label was priced with, and every scenario with the counts that
    define it (devices, updates, clients, rounds, derived from its transfer/encode counts; see
    ``transfer/scenarios.py``). None without a transfer section."""
    t = label.transfer
    if t is None or t.status == "failed":
        return None
    scenarios = {}
    for x in t.scenarios:
        row = {"transfers": x.transfers, "encodes": x.encodes, "decodes": x.decodes,
               "uncompressed_wh": x.uncompressed_wh, "nnc_wh": x.nnc_wh, "nnc_saving_share": x.nnc_saving_share,
               "uncompressed_co2_g": x.uncompressed_co2_g, "nnc_co2_g": x.nnc_co2_g, "description": x.description}
        if x.id == "one-time":
            row.update(devices=x.transfers, rounds=1)
        elif x.id == "periodic-updates":
            row.update(devices=x.transfers // max(1, x.encodes), rounds=x.encodes)
        else:  # federated: transfers 2KR, encodes (1+K)R
            rounds = x.encodes - x.transfers // 2
            row.update(devices=x.transfers // (2 * rounds) if rounds > 0 else 1, rounds=max(1, rounds))
        scenarios[x.id] = row
    return {"original_bytes": t.original_bytes, "compressed_bytes": t.compressed_bytes,
            "device_encode_s": t.device_encode_s, "device_decode_s": t.device_decode_s,
            "host_encode_s": t.encode_s, "host_decode_s": t.decode_s,
            "transfer_power_w": t.transfer_power_w, "codec_power_w": t.codec_power_w,
            "link_up_mbit_s": t.link_up_bit_s / 1e6, "link_down_mbit_s": t.link_down_bit_s / 1e6,
            "country": t.country, "grid_g_per_kwh": t.grid_g_co2_per_kwh, "price_eur_per_kwh": t.price_eur_per_kwh,
            "scenarios": scenarios, "qp": t.qp, "codec": t.codec}


# --------------------------------------------------------------------------------------------
# Human-readable quantities (raw values stay in the JSON; these are for people)

_BYTES_IN_TEXT = re.compile(r"\b(\d{4,})(?: bytes\b|(?=$|[;,)]))")  # "N bytes", or "has N" (energy/estimate.py)


def human_size(size_bytes: "float | None") -> str:
    """Bytes in B, kB, MB or GB (decimal, 3 significant digits)."""
    if size_bytes is None:
        return "n/a"
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(size_bytes) >= factor:
            return f"{sig(size_bytes / factor, 3)} {unit}"
    return f"{int(size_bytes)} B"


def humanise_bytes_in(text: str) -> str:
    """``needs 102793728 bytes`` -> ``needs 103 MB`` in free text written by the stages (a bare number of
    4+ digits at the end of a clause is the device's memory in bytes: ``the device has 804864``)."""
    return _BYTES_IN_TEXT.sub(lambda m: human_size(int(m.group(1))), text)


def human_energy(energy_j: "float | None") -> str:
    """Energy with the unit its magnitude asks for: µJ, mJ, J, Wh, kWh, MWh (3 significant digits)."""
    if energy_j is None:
        return "n/a"
    e = abs(energy_j)
    if e == 0:
        return "0 J"
    if e < 1e-3:
        return f"{sig(energy_j * 1e6, 3)} µJ"
    if e < 1:
        return f"{sig(j_to_mj(energy_j), 3)} mJ"
    if e < 3600:
        return f"{sig(energy_j, 3)} J"
    return human_wh(j_to_wh(energy_j))


def human_wh(energy_wh: "float | None") -> str:
    """Watt-hours in mWh, Wh, kWh or MWh by magnitude (3 significant digits)."""
    if energy_wh is None:
        return "n/a"
    e = abs(energy_wh)
    if e == 0:
        return "0 Wh"
    for unit, factor in (("MWh", 1e6), ("kWh", 1e3), ("Wh", 1.0)):
        if e >= factor:
            return f"{sig(energy_wh / factor, 3)} {unit}"
    return f"{sig(energy_wh * 1e3, 3)} mWh"


def per_1000_text(label) -> str:
    """Energy of 1,000 inferences, unit by magnitude (mWh, Wh, kWh)."""
    e = label.inference.energy_j
    return "n/a" if e is None else human_wh(j_to_wh(e * 1000))


def human_count(n: "float | None", unit: str = "") -> str:
    """12,345 -> 12.3 thousand; 16,315,376 -> 16.3 million (for MACs and parameters in prose)."""
    if n is None:
        return "n/a"
    for word, factor in (("billion", 1e9), ("million", 1e6)):
        if abs(n) >= factor:
            return f"{sig(n / factor, 3)} {word}{' ' + unit if unit else ''}"
    return f"{int(n):,}{' ' + unit if unit else ''}"


def task_text(label) -> str:
    """The task and how it was established: declared, detected (with the evidence), or the default."""
    t = label.task
    detected = getattr(t, "detected_from", None)
    if t.id is None:
        return "unknown: not declared, and not recognised from the model's signature (declare it with --task)"
    if t.declared:
        how = "declared (--task)"
    elif detected:
        how = f"detected from {one_line(detected, 160)}"
    else:
        how = "not declared: the rule set's default task (declare it with --task)"
    return f"{t.id}, {how}"


def quality_text(label) -> str:
    """The candidate's declared quality, or that it is not declared."""
    q = label.task.quality
    return f"{q.declared:g} ({q.metric})" if q.declared is not None else f"not declared ({q.metric})"


def reference_text(label) -> str:
    """The reference, its quality, and why it is the reference on this device class."""
    r = label.reference
    if r.model_id is None:
        return f"none: {humanise_bytes_in(r.selection)}"
    quality = f", quality {r.quality:g} {label.task.quality.metric}" if r.quality is not None else ""
    n = r.candidates_considered
    fits = f"; {n} of the task's catalogue references {'qualify' if n != 1 else 'qualifies'} on this device class"
    return f"{r.name or r.model_id} ({r.model_id}{quality}): {r.selection}{fits}"


def bands_text(thresholds: dict) -> str:
    """``A up to 0.7, B 0.7 to 1.25, ..., G above 16`` from a rule set's upper bounds."""
    parts, prev = [], None
    for letter in CLASSES:
        bound = thresholds.get(letter)
        if bound is None:
            parts.append(f"{letter} above {prev:g}" if prev is not None else f"{letter} any")
        elif prev is None:
            parts.append(f"{letter} up to {bound:g}")
        else:
            parts.append(f"{letter} {prev:g} to {bound:g}")
        if bound is not None:
            prev = bound
    return ", ".join(parts)


INDEX_DEFINITION = ("index = the model's energy per inference / the reference's energy per inference on the same "
                    "device class (both estimated the same way); lower is better")


def yes_no(value: "bool | None") -> str:
    return "n/a" if value is None else ("yes" if value else "no")
