"""Generate schemas/*.schema.json from the pydantic models (``python -m eeki_label.schema_gen``).

A test compares the committed files with :func:`schemas` so the contract never drifts silently.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eeki_label.models import Label, LabelSet

SCHEMA_ID_BASE = "https://eeki-label.invalid/schemas/"


def schemas() -> dict[str, str]:
    out = {}
    from eeki_label.energy.record import MeasurementRecord

    for name, model in (("label", Label), ("labelset", LabelSet), ("measurement", MeasurementRecord)):
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$id": f"{SCHEMA_ID_BASE}{name}.schema.json", **schema}
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main() -> int:
    folder = Path(__file__).resolve().parent.parent / "schemas"
    for name, text in schemas().items():
        (folder / name).write_text(text)
        print(f"wrote schemas/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
