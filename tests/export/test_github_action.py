"""The GitHub Action: action.yml is a composite action whose inputs reach the shell only through
environment variables, and its assess step (scripts/github_action.sh) run here as the runner would:
outputs, job summary, artifacts folder, and the gate's exit code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from support import ROOT, save, classifier
from test_precommit_hook import heavy_cnn

BIN = Path(sys.executable).parent


def action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def test_action_is_composite_and_never_splices_inputs_into_scripts():
    doc = action()
    assert doc["runs"]["using"] == "composite"
    steps = doc["runs"]["steps"]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"  # the label is uploaded even when the gate fails
    for step in steps:
        if "run" in step:
            assert "${{" not in step["run"], step["name"]  # no expression injection into shell text
            assert step["shell"] == "bash"
    assessing = next(s for s in steps if s.get("id") == "assess")
    assert "scripts/github_action.sh" in assessing["run"]
    used = set(re.findall(r"inputs\.([a-z-]+)", (ROOT / "action.yml").read_text()))
    assert used == set(doc["inputs"]), "every input is used and every used input is declared"
    assert {"class", "label-id", "exit-code"} <= set(doc["outputs"])


def run_step(tmp_path: Path, model: Path, **env) -> tuple[int, dict, str, Path]:
    summary, outputs, out = tmp_path / "summary.md", tmp_path / "outputs.txt", tmp_path / "out"
    full = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MODEL": str(model),
            "OUT_DIR": str(out), "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs),
            "DEVICE_CLASSES": "edge-gpu-batch1", "TASK": "image-classification", "TRANSFER": "false",
            "EXTRA_ARGS": "--runs 0", **env}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "github_action.sh")], env=full, capture_output=True,
                          text=True, timeout=300)
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return proc.returncode, values, summary.read_text() if summary.exists() else "", out


def test_assess_step_writes_outputs_summary_and_artifacts(tmp_path):
    import json

    from eeki_label.model_io import sha256_file

    model = save(classifier(1000, (224, 224)), tmp_path / "small.onnx")
    rc, values, summary, out = run_step(tmp_path, model, FAIL_BELOW="C")
    assert rc == 0 and values["exit-code"] == "0" and values["class"] == "A"
    assert re.fullmatch(r"[0-9a-f]{16}", values["label-id"])
    for name in ("label.json", "label.pdf", "report.html", "bom.cdx.json", "badge.svg", "badge.json", "summary.md"):
        assert (out / name).is_file(), name
    assert "Energy-efficiency label (eeki-label)" in summary and "| edge-gpu-batch1 | **A** |" in summary
    assert values["label-id"] in summary
    doc = json.loads((out / "label.json").read_text())
    assert all(lab["model"]["sha256"] == sha256_file(model) for lab in (doc["labels"] if "labels" in doc else [doc]))


def test_gate_failure_is_reported_and_the_outputs_still_written(tmp_path):
    model = save(heavy_cnn(), tmp_path / "heavy.onnx")
    rc, values, summary, out = run_step(tmp_path, model, FAIL_BELOW="B")
    assert rc == 0  # the step itself succeeds so that the upload runs; the last step fails the job
    assert values["exit-code"] == "3" and values["class"] in "CDEFG"
    assert "**eeki-label exited with code 3**" in summary and "worse than B" in summary
    assert (out / "label.pdf").is_file()
    gate = next(s for s in action()["runs"]["steps"] if s.get("name") == "Class gate")
    failed = subprocess.run(["bash", "-c", gate["run"]], env={**os.environ, "RC": values["exit-code"]},
                            capture_output=True, text=True)
    assert failed.returncode == 1
    ok = subprocess.run(["bash", "-c", gate["run"]], env={**os.environ, "RC": "0"}, capture_output=True, text=True)
    assert ok.returncode == 0
