"""SPDX 3.0.1 (JSON-LD) document of a label: an ``ai_AIPackage`` for the model (verified by its sha256)
with ``ai_energyConsumption.ai_inferenceEnergyConsumption`` = one ``ai_EnergyConsumptionDescription``
per device class.

Units: SPDX 3.0.1 offers ``kilowattHour``, ``megajoule`` or ``other``; the quantity is an xsd:decimal,
written as a plain decimal string (no exponent). Like the CycloneDX export, the quantity is the energy
of ``src.inferences`` inferences (default 1,000). An ``ai_EnergyConsumptionDescription`` has no field
naming the device class, so the package's ``extension`` (SPDX's ``extension_CdxPropertiesExtension``)
carries, for each device class, the per-inference joules, the converted quantity, the grade and index,
and the document's identity (label id, canonical sha256, signature); ``ai_metric`` repeats grade and
index as dictionary entries.

Not claimed: conformance with the AI *profile* (``profileConformance``), which requires supplier,
download location, package version and release time that a label does not know.
"""

from __future__ import annotations

import json

from eeki_label.export.common import (
    ExportSource, decimal_text, document_properties, inference_figure, label_properties, transfer_properties,
    utc_timestamp,
)

SPEC_VERSION = "3.0.1"
CONTEXT = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
UNITS = ("kilowattHour", "megajoule")


def spdx_document(src: ExportSource, unit: str = "kilowattHour") -> dict:
    """The SPDX 3.0.1 JSON-LD document as a JSON object."""
    from eeki_label import __version__

    if unit not in UNITS:
        raise ValueError(f"unit {unit!r}: use one of {UNITS}")
    first = src.first
    base = f"urn:eeki-label:{src.document_sha256[:32]}"
    creation = "_:creationinfo"
    agent_id, tool_id, pkg_id, doc_id = (f"{base}:issuer", f"{base}:tool", f"{base}:model", f"{base}:document")
    descriptions = []
    metrics = []
    for lab in src.labels:
        fig = inference_figure(lab, src.inferences)
        if fig is not None:
            qty = fig.volume_kwh if unit == "kilowattHour" else fig.volume_mj
            descriptions.append({"type": "ai_EnergyConsumptionDescription",
                                 "ai_energyQuantity": decimal_text(qty, 9), "ai_energyUnit": unit})
        metrics.append({"type": "DictionaryEntry", "key": f"eeki-label class {lab.device_class.id}",
                        "value": lab.label.class_ or "not gradable"})
        if lab.label.index is not None:
            metrics.append({"type": "DictionaryEntry", "key": f"eeki-label index {lab.device_class.id}",
                            "value": repr(lab.label.index)})
    props = document_properties(src)
    for lab in src.labels:
        props += label_properties(lab, src.inferences)
        fig = inference_figure(lab, src.inferences)
        if fig is not None:
            qty = fig.volume_kwh if unit == "kilowattHour" else fig.volume_mj
            props.append((f"eeki-label:{lab.device_class.id}:spdx_energy_quantity",
                          f"{decimal_text(qty, 9)} {unit} per {src.inferences} inferences"))
    props += transfer_properties(first)
    package = {
        "type": "ai_AIPackage",
        "spdxId": pkg_id,
        "creationInfo": creation,
        "name": first.model.file_name,
        "summary": f"ONNX model, eeki-label {_grades(src)} (label {src.label_id})",
        "verifiedUsing": [{"type": "Hash", "algorithm": "sha256", "hashValue": first.model.sha256}],
        "software_primaryPurpose": "model",
        "ai_informationAboutApplication": f"task: {first.task.id}",
        "ai_energyConsumption": {"type": "ai_EnergyConsumption", "ai_inferenceEnergyConsumption": descriptions},
        "ai_metric": metrics,
        "extension": [{
            "type": "extension_CdxPropertiesExtension",
            "extension_cdxProperty": [{"type": "extension_CdxPropertyEntry", "extension_cdxPropName": name,
                                       "extension_cdxPropValue": str(value)} for name, value in props],
        }],
        "comment": (f"Energies are for {src.inferences} inferences ({unit}); joules per inference, device class, "
                    f"grade and the label's identity are in the extension properties. Label id {src.label_id}: "
                    "check the label itself with 'eeki-label verify'."),
    }
    if not descriptions:
        del package["ai_energyConsumption"]
    return {
        "@context": CONTEXT,
        "@graph": [
            {"type": "CreationInfo", "@id": creation, "specVersion": SPEC_VERSION,
             "created": utc_timestamp(first.issued_at), "createdBy": [agent_id], "createdUsing": [tool_id]},
            {"type": "Agent", "spdxId": agent_id, "creationInfo": creation,
             "name": first.issuer or "not stated (the label names no issuer)"},
            {"type": "Tool", "spdxId": tool_id, "creationInfo": creation, "name": f"eeki-label {__version__}"},
            package,
            {"type": "SpdxDocument", "spdxId": doc_id, "creationInfo": creation,
             "name": f"eeki-label {first.model.file_name}", "rootElement": [pkg_id],
             "element": [agent_id, tool_id, pkg_id]},
        ],
    }


def _grades(src: ExportSource) -> str:
    return ", ".join(f"class {lab.label.class_ or '-'} on {lab.device_class.id}" for lab in src.labels)


def spdx_json(src: ExportSource, unit: str = "kilowattHour") -> str:
    return json.dumps(spdx_document(src, unit), indent=2, ensure_ascii=False) + "\n"
