"""Synthetic ``results.jsonl`` rows for the leaderboard tests (the row contract of ``eeki-label batch``)."""

from __future__ import annotations

import hashlib

HOSTILE = "zoo/<script>document.title='pwned'</script>.onnx"
VERSIONS = {"catalogue_version": "2.0.0", "rules_version": "2.0.0", "device_data_version": "2.0.0"}


def row(path, dc, *, cls="", index=None, ci=(None, None), energy_j=None, quality=None, status="ok",
        task="image-classification", method="estimated", nnc=None, original=None, exit_code=0, reason="",
        unit="image", reference_id="torchvision/mobilenet_v3_small", reference_energy_j=None, **extra) -> dict:
    r = {
        "path": path, "sha256": hashlib.sha256(path.encode()).hexdigest(), "options_hash": "0" * 16, "device_class": dc,
        "task": task, "class": cls, "index": index, "index_ci95_low": ci[0], "index_ci95_high": ci[1],
        "energy_j": energy_j, "energy_unit": unit, "method": method, "quality": quality,
        "quality_metric": "top1_percent" if quality is not None else "", "reference_id": reference_id,
        "reference_energy_j": reference_energy_j, "original_bytes": original, "transfer_bytes": nnc,
        "status": status, "exit_code": exit_code, "reason": reason,
        "label_file": f"labels/{path}.json" if status != "failed" else "", **VERSIONS,
        "seconds": 3.2,
    }
    r.update(extra)
    return r


def synthetic_rows() -> list[dict]:
    """Five models on edge-gpu-batch1 (one without quality, one hostile path, one reused), the same
    models on single-board-cpu, and two failed models (one row each, empty device class)."""
    rows = []
    models = [  # path, class, index, energy on edge-gpu-batch1 (J/image), quality (top-1 %)
        ("zoo/mobilenet_a.onnx", "B", 1.1, 1.2e-3, 68.0),
        ("zoo/resnet_b.onnx", "E", 5.0, 5.5e-3, 70.5),
        ("zoo/effnet_c.onnx", "D", 3.3, 3.6e-3, 77.0),
        ("zoo/vgg_d.onnx", "G", 40.0, 4.4e-2, 71.0),
        ("zoo/no_quality.onnx", "C", 2.0, 2.2e-3, None),
        (HOSTILE, "A", 0.6, 6.6e-4, 60.0),
    ]
    for dc, scale in (("edge-gpu-batch1", 1.0), ("single-board-cpu", 30.0)):
        for i, (path, cls, index, e, q) in enumerate(models):
            rows.append(row(path, dc, cls=cls, index=index, ci=(index * 0.8, index * 1.25), energy_j=e * scale,
                            quality=q, nnc=int(2e6 * (i + 1)), original=int(9e6 * (i + 1)),
                            status="skipped" if path == "zoo/vgg_d.onnx" else "ok",
                            reference_energy_j=1.1e-3 * scale))
    rows.append(row("zoo/broken.onnx", "", task="", status="failed", exit_code=3, method="", unit="",
                    reason="model file is not valid ONNX: truncated protobuf <b>", reference_id=""))
    rows.append(row("zoo/huge.onnx", "", task="", status="failed", exit_code=4, method="", unit="",
                    reason="model weights exceed --max-weight-bytes", reference_id=""))
    return rows
