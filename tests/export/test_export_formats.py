"""Exports of real labels validated with each format's own tooling: CycloneDX 1.6 with
cyclonedx-python-lib's strict JSON validator, SPDX 3.0.1 with SPDX's published JSON schema and the SPDX
Python bindings, the model card with huggingface_hub (offline); the label still verifies afterwards."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest

from eeki_label.export import FORMATS, export_text
from eeki_label.export.common import DEFAULT_INFERENCES, decimal_text, export_source
from eeki_label.export.modelcard import md_escape, to_yaml
from eeki_label.units import j_to_kwh
from eeki_label.verify import read_label_file, verify

from export_support import (  # noqa: F401  (fixtures)
    EXAMPLE, SPDX_SCHEMA, key, labels_of, run, signed_set, unsigned_label,
)


def source(path, inferences=DEFAULT_INFERENCES):
    obj, doc = read_label_file(path)
    return export_source(obj, doc, inferences)


def cdx_errors(text: str):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)


def spdx_schema_errors(doc: dict) -> list:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SPDX_SCHEMA.read_text()))
    return [e.message for e in validator.iter_errors(doc)]


# ------------------------------------------------------------------------------------------ CycloneDX


@pytest.mark.parametrize("fixture", ["signed_set", "unsigned_label"])
def test_cyclonedx_validates_strictly_and_carries_the_figures(fixture, request):
    path = request.getfixturevalue(fixture)
    src = source(path)
    text = export_text(src, "cyclonedx")
    assert cdx_errors(text) is None
    bom = json.loads(text)
    assert bom["specVersion"] == "1.6"
    comp = bom["components"][0]
    assert comp["type"] == "machine-learning-model"
    assert comp["hashes"] == [{"alg": "SHA-256", "content": src.model.sha256}]
    entries = comp["modelCard"]["considerations"]["environmentalConsiderations"]["energyConsumptions"]
    labels = labels_of(json.loads(path.read_text()))
    assert [e["activity"] for e in entries] == ["inference"] * len(labels)
    for entry, lab in zip(entries, labels):
        props = {p["name"]: p["value"] for p in entry["properties"]}
        assert props["eeki-label:device_class"] == lab["device_class"]["id"]
        assert float(props["eeki-label:energy_j_per_inference"]) == lab["inference"]["energy_j"]
        assert props["eeki-label:inferences"] == "1000"
        assert entry["activityEnergyCost"]["unit"] == "kWh"
        assert entry["activityEnergyCost"]["value"] == pytest.approx(j_to_kwh(lab["inference"]["energy_j"] * 1000),
                                                                     rel=1e-8)
    props = {p["name"]: p["value"] for p in comp["properties"]}
    assert props["eeki-label:label_id"] == src.label_id
    assert props["eeki-label:rules"].endswith(labels[0]["rules"]["version"])
    assert props["eeki-label:catalogue"].endswith(labels[0]["catalogue"]["version"])
    for lab in labels:
        assert props[f"eeki-label:{lab['device_class']['id']}:class"] == lab["label"]["class"]
    doc = json.loads(path.read_text())
    if doc.get("signature"):
        assert props["eeki-label:signature_value"] == doc["signature"]["value"]
        assert props["eeki-label:signature_key_fingerprint"] == doc["signature"]["key_fingerprint"]
    else:
        assert props["eeki-label:signature"] == "unsigned"


def test_the_cyclonedx_validator_catches_a_broken_export(signed_set):
    """The check above can fail: a unit CycloneDX does not know is rejected."""
    bom = json.loads(export_text(source(signed_set), "cyclonedx"))
    entry = bom["components"][0]["modelCard"]["considerations"]["environmentalConsiderations"]["energyConsumptions"][0]
    entry["activityEnergyCost"]["unit"] = "J"
    assert cdx_errors(json.dumps(bom)) is not None


def test_volume_assumption_changes_the_quantity_not_the_per_inference_figure(unsigned_label):
    a = json.loads(export_text(source(unsigned_label, 1000), "cyclonedx"))
    b = json.loads(export_text(source(unsigned_label, 1_000_000), "cyclonedx"))
    ea = a["components"][0]["modelCard"]["considerations"]["environmentalConsiderations"]["energyConsumptions"][0]
    eb = b["components"][0]["modelCard"]["considerations"]["environmentalConsiderations"]["energyConsumptions"][0]
    assert eb["activityEnergyCost"]["value"] == pytest.approx(ea["activityEnergyCost"]["value"] * 1000, rel=1e-7)
    pa = {p["name"]: p["value"] for p in ea["properties"]}
    pb = {p["name"]: p["value"] for p in eb["properties"]}
    assert pa["eeki-label:energy_j_per_inference"] == pb["eeki-label:energy_j_per_inference"]
    assert pb["eeki-label:inferences"] == "1000000"
    assert a["serialNumber"] == json.loads(export_text(source(unsigned_label), "cyclonedx"))["serialNumber"]


# ------------------------------------------------------------------------------------------ SPDX


@pytest.mark.parametrize("unit", ["kilowattHour", "megajoule"])
def test_spdx_validates_against_the_published_schema_and_the_spdx_bindings(signed_set, unit):
    from spdx_python_model import v3_0_1 as spdx

    src = source(signed_set)
    text = export_text(src, "spdx", spdx_unit=unit)
    doc = json.loads(text)
    assert spdx_schema_errors(doc) == []
    objects = spdx.SHACLObjectSet()
    spdx.JSONLDDeserializer().read(io.StringIO(text), objects)
    pkg = next(o for o in objects.foreach() if isinstance(o, spdx.ai_AIPackage))
    assert pkg.verifiedUsing[0].hashValue == src.model.sha256
    descs = pkg.ai_energyConsumption.ai_inferenceEnergyConsumption
    labels = labels_of(json.loads(signed_set.read_text()))
    assert len(descs) == len(labels)
    factor = 1 / 3.6e6 if unit == "kilowattHour" else 1e-6
    expected = sorted(lab["inference"]["energy_j"] * 1000 * factor for lab in labels)
    assert sorted(float(d.ai_energyQuantity) for d in descs) == pytest.approx(expected, rel=1e-8)
    assert all(d.ai_energyUnit.endswith(f"/EnergyUnitType/{unit}") for d in descs)
    props = {e.extension_cdxPropName: e.extension_cdxPropValue for e in pkg.extension[0].extension_cdxProperty}
    assert props["eeki-label:label_id"] == src.label_id
    assert props["eeki-label:signature_value"] == json.loads(signed_set.read_text())["signature"]["value"]
    for lab in labels:
        assert props[f"eeki-label:{lab['device_class']['id']}:class"] == lab["label"]["class"]


def test_the_spdx_schema_catches_a_broken_export(unsigned_label):
    doc = json.loads(export_text(source(unsigned_label), "spdx"))
    pkg = next(e for e in doc["@graph"] if e["type"] == "ai_AIPackage")
    pkg["ai_energyConsumption"]["ai_inferenceEnergyConsumption"][0]["ai_energyUnit"] = "joule"
    assert spdx_schema_errors(doc)
    pkg["ai_energyConsumption"]["ai_inferenceEnergyConsumption"][0].update(
        ai_energyUnit="kilowattHour", ai_energyQuantity="4.4e-07")  # xsd:decimal has no exponent
    assert spdx_schema_errors(doc)


# ------------------------------------------------------------------------------------------ model card


def test_model_card_parses_with_huggingface_hub(signed_set, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import ModelCard, ModelCardData

    src = source(signed_set)
    text = export_text(src, "model-card")
    card = ModelCard(text)
    data = card.data.to_dict()
    labels = labels_of(json.loads(signed_set.read_text()))
    block = data["eeki_label"]
    assert block["label_id"] == src.label_id and block["model_sha256"] == src.model.sha256
    assert block["signature"]["value"] == json.loads(signed_set.read_text())["signature"]["value"]
    assert [e["class"] for e in block["labels"]] == [lab["label"]["class"] for lab in labels]
    assert [e["energy_j_per_inference"] for e in block["labels"]] == [lab["inference"]["energy_j"] for lab in labels]
    assert "eeki-label" in card.data.tags
    results = card.data.eval_results
    index_rows = [r for r in results if r.metric_type == "eeki-label-energy-index"]
    assert [r.metric_value for r in index_rows] == [lab["label"]["index"] for lab in labels]
    assert all(r.task_type == "image-classification" for r in results)
    # the card's data round-trips through ModelCardData and back to the same front matter
    assert ModelCardData(**data).to_dict()["eeki_label"] == block
    # markup in the issuer is escaped in the markdown section, never passed through
    assert "<b>" not in card.text and "&lt;b&gt;" in card.text
    assert "Energy-efficiency label" in card.text


def test_yaml_emitter_round_trips_hostile_strings():
    import yaml

    data = {"a": "x: y\n- z # not a comment", "b": ["---", "null", "'q' \"dq\" \\ \u2028 é"],
            "yes": True, "n": None, "f": 1.5e-10, "nested": {"k": [{"x": 1}, {"y": "}{"}]}, "empty": []}
    assert yaml.safe_load(to_yaml(data)) == data


def test_markdown_escape():
    assert md_escape("a|b*c_[d](e)<script>&") == "a\\|b\\*c\\_\\[d\\](e)&lt;script&gt;&amp;"
    assert "\n" not in md_escape("line\nbreak")


def test_decimal_text_has_no_exponent():
    assert decimal_text(4.448457343e-07, 6) == "0.000000444846"
    assert decimal_text(1234567.0, 3) == "1230000"
    assert decimal_text(0.5) == "0.5"
    assert decimal_text(0.0) == "0"


# ------------------------------------------------------------------------------------------ badges


def test_badge_json_is_a_shields_endpoint(signed_set):
    src = source(signed_set)
    doc = json.loads(export_text(src, "badge-json"))
    first = labels_of(json.loads(signed_set.read_text()))[0]
    assert doc["schemaVersion"] == 1 and doc["label"] == "energy label"
    assert doc["message"].startswith(first["label"]["class"] + " · ")
    assert first["device_class"]["id"] in doc["message"]
    assert doc["eeki_label_id"] == src.label_id
    other = json.loads(export_text(src, "badge-json", device_class="single-board-cpu"))
    assert "single-board-cpu" in other["message"]


def test_badge_svg_is_well_formed_and_escaped(signed_set):
    text = export_text(source(signed_set), "badge-svg")
    root = ET.fromstring(text)
    assert root.tag.endswith("svg") and root.get("height") == "20"
    assert "href" not in text and "<script" not in text and "url(http" not in text
    # a crafted label's texts cannot become markup
    from eeki_label.export.common import source_of
    from eeki_label.models import LabelSet

    _, doc = read_label_file(signed_set)
    lab = doc.labels[0]
    hostile = lab.model_copy(update={"device_class": lab.device_class.model_copy(
        update={"id": '"><script>alert(1)</script><a href="x'})})
    text = export_text(source_of(LabelSet(labels=[hostile])), "badge-svg")
    root = ET.fromstring(text)
    assert "<script" not in text and not [e for e in root.iter() if e.tag.endswith(("script", "a"))]


# ------------------------------------------------------------------------------------------ CLI


def test_cli_export_every_format_keeps_the_signature_valid(signed_set, key, tmp_path):
    before = signed_set.read_bytes()
    for fmt in FORMATS:
        out = tmp_path / f"out.{fmt}"
        assert run(["export", signed_set, "--format", fmt, "--out", out, "--validate"]) == 0, fmt
        assert out.stat().st_size > 0
    assert signed_set.read_bytes() == before
    report = verify(signed_set, EXAMPLE, key.with_name(key.name + ".pub"))
    assert report.label_id == source(signed_set).label_id
    assert cdx_errors((tmp_path / "out.cyclonedx").read_text()) is None
    assert spdx_schema_errors(json.loads((tmp_path / "out.spdx").read_text())) == []


def test_cli_export_refuses_a_tampered_signed_label(signed_set, tmp_path, capsys):
    doc = json.loads(signed_set.read_text())
    doc["labels"][0]["label"]["class"] = "A" if doc["labels"][0]["label"]["class"] != "A" else "B"
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(doc))
    assert run(["export", bad, "--format", "cyclonedx", "--out", tmp_path / "x.json"]) == 42
    assert not (tmp_path / "x.json").exists()


def test_cli_export_usage_errors(unsigned_label, tmp_path):
    assert run(["export", unsigned_label, "--format", "pdf", "--out", tmp_path / "x"]) == 2
    assert run(["export", unsigned_label, "--format", "badge-svg", "-d", "no-such-class", "--out", tmp_path / "x"]) == 2
    assert run(["export", unsigned_label, "--format", "spdx", "--spdx-unit", "joule", "--out", tmp_path / "x"]) == 2
    assert run(["export", unsigned_label, "--format", "spdx", "--out", unsigned_label]) == 2  # refuses the input
    assert run(["export", tmp_path / "missing.json", "--format", "spdx", "--out", tmp_path / "x"]) == 40


def test_assess_export_writes_the_same_text_as_export(tmp_path):
    from export_support import BASE_ARGS

    label = tmp_path / "label.json"
    cdx, card = tmp_path / "bom.cdx.json", tmp_path / "README.md"
    assert run(["assess", EXAMPLE, *BASE_ARGS, "-d", "edge-gpu-batch1", "--json", label,
                "--export", f"cyclonedx={cdx}", "--export", f"model-card={card}"]) == 0
    assert cdx_errors(cdx.read_text()) is None
    assert run(["export", label, "--format", "cyclonedx", "--out", tmp_path / "again.json"]) == 0
    assert (tmp_path / "again.json").read_text() == cdx.read_text()
    assert run(["export", label, "--format", "model-card", "--out", tmp_path / "again.md"]) == 0
    assert (tmp_path / "again.md").read_text() == card.read_text()


def test_assess_export_option_errors(tmp_path):
    from export_support import BASE_ARGS

    assert run(["assess", EXAMPLE, *BASE_ARGS, "--export", "nope=x"]) == 2
    assert run(["assess", EXAMPLE, *BASE_ARGS, "--export", "cyclonedx"]) == 2
    assert run(["assess", EXAMPLE, *BASE_ARGS, "--export", f"spdx={tmp_path / 'a'}",
                "--export", f"cyclonedx={tmp_path / 'a'}"]) == 2


def test_exports_of_a_label_with_transfer_figures_and_of_an_embedded_label(tmp_path):
    """The NNC section becomes a CycloneDX ``deployment`` entry with its CO2; a model carrying its label
    (``assess --embed``) exports like the label file."""
    from support import save, classifier

    model = save(classifier(1000, (224, 224)), tmp_path / "tiny.onnx")
    label, embedded = tmp_path / "label.json", tmp_path / "tiny.labelled.onnx"
    assert run(["assess", model, "--runs", "0", "-d", "edge-gpu-batch1", "--task", "image-classification",
                "--json", label, "--embed", embedded, "-q"]) == 0
    lab = labels_of(json.loads(label.read_text()))[0]
    assert lab["transfer"] is not None
    text = export_text(source(label), "cyclonedx")
    assert cdx_errors(text) is None
    entries = json.loads(text)["components"][0]["modelCard"]["considerations"]["environmentalConsiderations"][
        "energyConsumptions"]
    deploy = next(e for e in entries if e["activity"] == "deployment")
    one = next(s for s in lab["transfer"]["scenarios"] if s["id"] == "one-time")
    assert deploy["activityEnergyCost"]["value"] == pytest.approx(one["nnc_wh"] / 1000, rel=1e-8)
    assert deploy["co2CostEquivalent"] == {"value": pytest.approx(one["nnc_co2_g"] / 1e6, rel=1e-8), "unit": "tCO2eq"}
    assert spdx_schema_errors(json.loads(export_text(source(label), "spdx"))) == []
    for fmt in ("cyclonedx", "model-card"):
        a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        assert run(["export", label, "-f", fmt, "-o", a]) == 0
        assert run(["export", embedded, "-f", fmt, "-o", b]) == 0
        assert a.read_text() == b.read_text()


def test_cli_export_to_stdout(unsigned_label, capsys):
    assert run(["export", unsigned_label, "--format", "badge-json", "--out", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schemaVersion"] == 1 and doc["eeki_label_id"] == source(unsigned_label).label_id
