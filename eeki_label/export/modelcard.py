"""Hugging Face model card (README.md with YAML front matter) of a label, and its markdown section.

Front matter (parsed by ``huggingface_hub.ModelCard``):

* ``tags: [eeki-label, energy-label-A]``;
* ``eeki_label:`` a block with the label id, canonical sha256, model sha256, signature reference,
  rules/catalogue versions, the volume convention, and one entry per device class (class, index,
  joules per inference, kWh for the volume, method, reference model);
* ``model-index``: one result per device class whose metrics are the energy index (lower is better),
  the class letter and the energy per inference (mJ). A model-index result needs a dataset; the grade is
  relative to the reference catalogue, so the "dataset" is named as that catalogue.

``co2_eq_emissions`` is not written: in model cards it describes *training* emissions, which a label does
not measure. The markdown section (``model_card_section``) is also what the GitHub Action writes as its
job summary. Untrusted text (file names, issuer) is escaped for markdown and HTML.
"""

from __future__ import annotations

import json
import re

from eeki_label.export.common import ExportSource, decimal_text, inference_figure
from eeki_label.render.common import one_line, sig
from eeki_label.units import j_to_mj

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


# --------------------------------------------------------------------------------------------
# A small YAML emitter: block mappings and sequences; every string is a JSON (= YAML double-quoted)
# scalar, so no value can change the structure whatever text it holds.


def _scalar(value) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=True)


def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) and key.lower() not in ("null", "true", "false", "yes", "no", "on", "off") \
        else json.dumps(key, ensure_ascii=True)


def to_yaml(value, indent: int = 0) -> str:
    """Block YAML of JSON-like data (dicts, lists, scalars)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{_key(k)}:")
                lines.append(to_yaml(v, indent + 2))
            else:
                lines.append(f"{pad}{_key(k)}: {_scalar(v) if not isinstance(v, (dict, list)) else ('{}' if isinstance(v, dict) else '[]')}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- " + body[indent + 2:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def card_data(src: ExportSource) -> dict:
    """The front matter as JSON-like data."""
    first = src.first
    sig_ = src.signature
    classes = []
    results = []
    for lab in src.labels:
        fig = inference_figure(lab, src.inferences)
        entry = {
            "device_class": lab.device_class.id,
            "class": lab.label.class_,
            "index": lab.label.index,
            "gradable": lab.label.gradable,
            "method": lab.inference.method,
            "energy_j_per_inference": lab.inference.energy_j,
            f"energy_kwh_per_{src.inferences}_inferences": float(decimal_text(fig.volume_kwh, 9)) if fig else None,
            "reference_model": lab.reference.model_id,
            "reference_energy_j_per_inference": lab.reference.energy_j,
        }
        classes.append(entry)
        if lab.label.gradable and lab.label.index is not None:
            metrics = [
                {"type": "eeki-label-energy-index", "value": lab.label.index,
                 "name": f"Energy index on {lab.device_class.id} (energy / reference energy, lower is better)"},
                {"type": "eeki-label-class", "value": lab.label.class_,
                 "name": f"Energy-efficiency class on {lab.device_class.id} (A best .. G)"},
            ]
            if lab.inference.energy_j is not None:
                metrics.append({"type": "energy-per-inference-mj", "value": j_to_mj(lab.inference.energy_j),
                                "name": f"Energy per inference on {lab.device_class.id}, mJ ({lab.inference.method})"})
            results.append({
                "task": {"type": lab.task.id},
                "dataset": {"type": "eeki-label-reference-catalogue",
                            "name": f"eeki-label reference catalogue {lab.catalogue.version} ({lab.device_class.id})"},
                "metrics": metrics,
            })
    block = {
        "label_id": src.label_id,
        "label_document_sha256": src.document_sha256,
        "model_sha256": first.model.sha256,
        "signature": ({"algorithm": sig_.algorithm, "key_fingerprint": sig_.key_fingerprint, "value": sig_.value}
                      if sig_ is not None else None),
        "issued_at": first.issued_at,
        "issuer": first.issuer,
        "rules": f"{first.rules.id} {first.rules.version}",
        "catalogue": f"{first.catalogue.id} {first.catalogue.version}",
        "device_data": first.device_data.version,
        "task": first.task.id,
        "inferences_per_kwh_figure": src.inferences,
        "labels": classes,
    }
    letters = sorted({lab.label.class_ for lab in src.labels if lab.label.class_})
    data = {"tags": ["eeki-label"] + [f"energy-label-{c}" for c in letters], "eeki_label": block}
    if results:
        data["model-index"] = [{"name": _model_name(first), "results": results}]
    return data


def _model_name(label) -> str:
    name = one_line(label.model.file_name, 120)
    return name[:-5] if name.lower().endswith(".onnx") else name


def md_escape(text) -> str:
    """Untrusted text for markdown (GitHub, Hugging Face): HTML and markdown punctuation escaped."""
    s = one_line(text, 200)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|~])", r"\\\1", s)


def model_card_section(src: ExportSource, heading: str = "##") -> str:
    """The markdown section: a table per device class, the label's identity, how to check it."""
    first = src.first
    out = [f"{heading} Energy-efficiency label (eeki-label)", ""]
    out.append(f"Model `{first.model.sha256}` ({md_escape(first.model.file_name)}), task "
               f"{md_escape(first.task.id)}, graded with rules {md_escape(first.rules.version)} against reference "
               f"catalogue {md_escape(first.catalogue.version)}.")
    out.append("")
    out.append(f"| device class | class | index | mJ per inference | kWh per {src.inferences:,} inferences | method | reference |")
    out.append("|---|---|---|---|---|---|---|")
    for lab in src.labels:
        fig = inference_figure(lab, src.inferences)
        out.append("| " + " | ".join([
            md_escape(lab.device_class.id), f"**{lab.label.class_}**" if lab.label.class_ else "not gradable",
            sig(lab.label.index, 3), sig(j_to_mj(lab.inference.energy_j)) if lab.inference.energy_j is not None else "n/a",
            decimal_text(fig.volume_kwh, 4) if fig else "n/a", md_escape(lab.inference.method),
            md_escape(lab.reference.model_id or "none"),
        ]) + " |")
    out.append("")
    ident = f"Label id `{src.label_id}`"
    if src.signature is not None:
        ident += f", signed (Ed25519, key `{src.signature.key_fingerprint}`)"
    else:
        ident += ", unsigned"
    issuer = f"; issued by {md_escape(first.issuer)}" if first.issuer else ""
    out.append(f"{ident}{issuer}, {md_escape(first.issued_at)}. Lower index is better (energy / reference energy); "
               "check the label with `eeki-label verify LABEL.json --model MODEL.onnx`.")
    return "\n".join(out) + "\n"


def model_card(src: ExportSource) -> str:
    """A complete model card: YAML front matter and the markdown section."""
    return "---\n" + to_yaml(card_data(src)) + "\n---\n\n" + model_card_section(src)
