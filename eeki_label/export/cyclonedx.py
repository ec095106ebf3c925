"""CycloneDX 1.6 ML-BOM of a label: one ``machine-learning-model`` component (the model, by sha256) whose
model card carries the inference energy of each device class in
``considerations.environmentalConsiderations.energyConsumptions[]``.

Units: CycloneDX measures energy in kWh (``energyMeasure``) and CO2 in tCO2eq. One inference of a small
model is ~1e-10 kWh, so each entry's ``activityEnergyCost`` is the energy of ``src.inferences``
inferences (default 1,000, the label's ``energy_wh_per_1000`` convention); the entry's properties state
the joules per inference and the volume. ``energyProviders`` is required and lists who supplied the
energy; a label estimates a device class, not a site, so the list is empty (no provider is known).
The NNC distribution figures (``transfer``), when present, become a ``deployment`` entry of the one-time
scenario with its CO2 equivalent. Everything else (grade, index, device class, rules, catalogue, the
label id and signature) is in properties named ``eeki-label:...``.
"""

from __future__ import annotations

import json

from eeki_label.export.common import (
    PROPERTY_PREFIX, ExportSource, decimal_text, document_properties, inference_figure, label_properties,
    round_sig, transfer_properties, utc_timestamp,
)
from eeki_label.units import wh_to_j

SPEC_VERSION = "1.6"


def _props(pairs) -> list[dict]:
    return [{"name": name, "value": str(value)} for name, value in pairs]


def _energy(kwh: float) -> dict:
    return {"value": round_sig(kwh, 9), "unit": "kWh"}


def cyclonedx_bom(src: ExportSource) -> dict:
    """The BOM as a JSON object (``cyclonedx_json`` serialises it)."""
    from eeki_label import __version__

    first = src.first
    model_ref = f"model-sha256-{first.model.sha256[:16]}"
    consumptions = []
    for lab in src.labels:
        fig = inference_figure(lab, src.inferences)
        if fig is None:
            continue  # the model does not fit the device class: no energy to report
        consumptions.append({
            "activity": "inference",
            "energyProviders": [],
            "activityEnergyCost": _energy(fig.volume_kwh),
            "properties": _props([
                (f"{PROPERTY_PREFIX}:device_class", lab.device_class.id),
                (f"{PROPERTY_PREFIX}:inferences", src.inferences),
                (f"{PROPERTY_PREFIX}:energy_j_per_inference", repr(fig.energy_j)),
                (f"{PROPERTY_PREFIX}:method", lab.inference.method),
                (f"{PROPERTY_PREFIX}:class", lab.label.class_ or "not gradable"),
                (f"{PROPERTY_PREFIX}:index", repr(lab.label.index) if lab.label.index is not None else "n/a"),
            ]),
        })
    t = first.transfer
    if t is not None:
        one = next((s for s in t.scenarios if s.id == "one-time"), None)
        if one is not None:
            from eeki_label.units import j_to_kwh

            consumptions.append({
                "activity": "deployment",
                "energyProviders": [],
                "activityEnergyCost": _energy(j_to_kwh(wh_to_j(one.nnc_wh))),
                "co2CostEquivalent": {"value": round_sig(one.nnc_co2_g / 1e6, 9), "unit": "tCO2eq"},
                "properties": _props([
                    (f"{PROPERTY_PREFIX}:scenario", f"one-time: {one.description}"),
                    (f"{PROPERTY_PREFIX}:codec", f"NNC ({t.standard})"),
                    (f"{PROPERTY_PREFIX}:uncompressed_kwh", decimal_text(one.uncompressed_wh / 1000, 9)),
                    (f"{PROPERTY_PREFIX}:nnc_saving_share", repr(one.nnc_saving_share)),
                    (f"{PROPERTY_PREFIX}:grid", f"{t.country} {t.grid_g_co2_per_kwh} g CO2/kWh"),
                ]),
            })
    component_props = document_properties(src)
    for lab in src.labels:
        component_props += label_properties(lab, src.inferences)
    component_props += transfer_properties(first)
    component = {
        "type": "machine-learning-model",
        "bom-ref": model_ref,
        "name": first.model.file_name,
        "description": f"ONNX model graded {_grades(src)} by eeki-label (label {src.label_id})",
        "hashes": [{"alg": "SHA-256", "content": first.model.sha256}],
        "modelCard": {
            "bom-ref": f"{model_ref}-card",
            "modelParameters": {
                "task": first.task.id,
                "modelArchitecture": first.model.graph_name or first.model.file_name,
            },
            "considerations": {
                "environmentalConsiderations": {
                    "energyConsumptions": consumptions,
                    "properties": _props(document_properties(src)[:5]),
                },
            },
            "properties": _props([(f"{PROPERTY_PREFIX}:label_id", src.label_id)]),
        },
        "properties": _props(component_props),
    }
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{src.serial_uuid}",
        "version": 1,
        "metadata": {
            "timestamp": utc_timestamp(first.issued_at),
            "tools": {"components": [{"type": "application", "name": "eeki-label", "version": __version__}]},
            "properties": _props([(f"{PROPERTY_PREFIX}:label_id", src.label_id),
                                  (f"{PROPERTY_PREFIX}:label_document_sha256", src.document_sha256)]),
        },
        "components": [component],
    }


def _grades(src: ExportSource) -> str:
    return ", ".join(f"{lab.label.class_ or '-'} on {lab.device_class.id}" for lab in src.labels)


def cyclonedx_json(src: ExportSource) -> str:
    return json.dumps(cyclonedx_bom(src), indent=2, ensure_ascii=False) + "\n"
