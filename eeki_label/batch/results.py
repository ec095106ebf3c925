"""``results.csv`` and ``results.jsonl``: one row per model and device class.

A model whose assessment failed has one row with an empty device class. Columns (the same in both
files; JSONL keeps numbers as numbers and missing values as null, the CSV leaves them empty):

path, sha256, options_hash, device_class, task, class, index, index_ci95_low, index_ci95_high,
energy_j (energy per unit of work the label is graded on: the task's evaluation input, or one query
of a decoder; the assessed inference otherwise), energy_unit, method, quality (declared),
quality_metric, reference_id, reference_energy_j, original_bytes, transfer_bytes (the NNC container),
status (``ok``: assessed in this run; ``skipped``: label of an earlier run of this batch with the same
model sha256 and options hash, reused; ``failed``), exit_code, reason (one line: why the model failed,
or why it is not graded), label_file, catalogue_version, rules_version, device_data_version, seconds.
"""

from __future__ import annotations

import csv
import io
import json

COLUMNS = ("path", "sha256", "options_hash", "device_class", "task", "class", "index", "index_ci95_low",
           "index_ci95_high", "energy_j", "energy_unit", "method", "quality", "quality_metric", "reference_id",
           "reference_energy_j", "original_bytes", "transfer_bytes", "status", "exit_code", "reason", "label_file",
           "catalogue_version", "rules_version", "device_data_version", "seconds")


def labels_of(doc) -> list[dict]:
    """The labels of a label file: a set ``{"labels": [...]}`` or a single label."""
    if isinstance(doc, dict) and isinstance(doc.get("labels"), list):
        return [x for x in doc["labels"] if isinstance(x, dict)]
    return [doc] if isinstance(doc, dict) else []


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _energy(label: dict) -> "tuple[float | None, str]":
    """The energy the label is graded on and its unit of work; for a label without a grade, the energy
    of the assessed inference (or query)."""
    task_unit = _get(label, "task", "unit")
    graded = _get(label, "label", "graded_energy_j")
    if graded is not None:
        return graded, task_unit or "inference"
    per_query = _get(label, "inference", "energy_per_query_j")
    if per_query is not None:
        return per_query, "query"
    unit = task_unit if _get(label, "label", "class") is not None and task_unit else None
    return _get(label, "inference", "energy_j"), unit or _get(label, "inference", "unit") or "inference"


def model_rows(record: dict, doc) -> list[dict]:
    """Rows of one model: ``record`` (path, sha256, options_hash, status, exit_code, reason, label_file,
    seconds) and its label file (None for a failed model)."""
    base = {k: record.get(k) for k in ("path", "sha256", "options_hash", "status", "exit_code", "label_file",
                                       "seconds")}
    labels = labels_of(doc) if doc is not None else []
    if not labels:
        return [{**{c: None for c in COLUMNS}, **base, "device_class": "", "reason": record.get("reason") or ""}]
    rows = []
    for lab in labels:
        energy, unit = _energy(lab)
        ci = _get(lab, "label", "index_ci95") or [None, None]
        reason = record.get("reason") or _get(lab, "label", "reason") or _get(lab, "inference", "fit_reason") or ""
        rows.append({
            **base,
            "device_class": _get(lab, "device_class", "id") or "",
            "task": _get(lab, "task", "id") or "",
            "class": _get(lab, "label", "class") or "",
            "index": _get(lab, "label", "index"),
            "index_ci95_low": ci[0] if len(ci) > 1 else None,
            "index_ci95_high": ci[1] if len(ci) > 1 else None,
            "energy_j": energy,
            "energy_unit": unit,
            "method": _get(lab, "inference", "method") or "",
            "quality": _get(lab, "task", "quality", "declared"),
            "quality_metric": _get(lab, "task", "quality", "metric") or "",
            "reference_id": _get(lab, "reference", "model_id") or "",
            "reference_energy_j": _get(lab, "reference", "energy_j"),
            "original_bytes": _get(lab, "transfer", "original_bytes") or _get(lab, "model", "file_bytes"),
            "transfer_bytes": _get(lab, "transfer", "compressed_bytes"),
            "reason": " ".join(str(reason).split()),
            "catalogue_version": _get(lab, "catalogue", "version") or "",
            "rules_version": _get(lab, "rules", "version") or "",
            "device_data_version": _get(lab, "device_data", "version") or "",
        })
    return rows


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps({c: r.get(c) for c in COLUMNS}, ensure_ascii=False) + "\n" for r in rows)


#: First characters that make a spreadsheet read a cell as a formula; such text cells get a leading
#: apostrophe in the CSV (model paths and reasons are untrusted text). JSONL keeps the text as it is.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return str(v)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in COLUMNS])
    return buf.getvalue()
