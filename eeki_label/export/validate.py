"""``export --validate``: check an export with the format's maintained tooling before it is written.

* cyclonedx: cyclonedx-python-lib's strict JSON validator for CycloneDX 1.6 (extra ``[sbom]``);
* spdx: the SPDX 3.0.1 Python bindings (spdx-python-model, generated from the SPDX model by shacl2code)
  read the JSON-LD back with type checks (extra ``[sbom]``); the tests also check the document against
  SPDX's published JSON schema;
* model-card: huggingface_hub parses the card and its model-index offline (extra ``[hub]``);
* badge-svg: well-formed XML (standard library); badge-json: the shields.io endpoint members.

A rejected export is a bug in eeki-label (``InternalError``); a missing optional package is a usage error.
"""

from __future__ import annotations

import io
import json

from eeki_label.errors import InternalError, UsageError


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UsageError(f"--validate needs {module}: pip install 'eeki-label[{extra}]'") from e


def validate_export(fmt: str, text: str) -> None:
    if fmt == "cyclonedx":
        _need("cyclonedx", "sbom")
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator

        try:
            error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
        except Exception as e:  # the validator's optional dependencies (jsonschema) are missing
            raise UsageError(f"--validate: cyclonedx-python-lib cannot validate JSON ({type(e).__name__}: {e}); "
                             "pip install 'eeki-label[sbom]'") from e
        if error is not None:
            raise InternalError(f"the CycloneDX export does not validate against CycloneDX 1.6: {error}")
    elif fmt == "spdx":
        _need("spdx_python_model", "sbom")
        from spdx_python_model import v3_0_1 as spdx

        objects = spdx.SHACLObjectSet()
        try:
            spdx.JSONLDDeserializer().read(io.StringIO(text), objects)
        except Exception as e:
            raise InternalError(f"the SPDX export is not valid SPDX 3.0.1: {type(e).__name__}: {e}") from e
        if not any(isinstance(o, spdx.ai_AIPackage) for o in objects.foreach()):
            raise InternalError("the SPDX export has no ai_AIPackage")
    elif fmt == "model-card":
        _need("huggingface_hub", "hub")
        from huggingface_hub import ModelCard

        try:
            card = ModelCard(text)
        except Exception as e:
            raise InternalError(f"the model card does not parse: {type(e).__name__}: {e}") from e
        if "eeki_label" not in card.data.to_dict():
            raise InternalError("the model card's metadata has no eeki_label block")
    elif fmt == "badge-svg":
        import xml.etree.ElementTree as ET

        try:
            ET.fromstring(text)
        except ET.ParseError as e:
            raise InternalError(f"the SVG badge is not well-formed XML: {e}") from e
    elif fmt == "badge-json":
        doc = json.loads(text)
        if doc.get("schemaVersion") != 1 or not all(isinstance(doc.get(k), str) for k in ("label", "message", "color")):
            raise InternalError("the badge JSON lacks shields.io endpoint members")
