"""The pre-commit hook of .pre-commit-hooks.yaml, run by the real ``pre-commit`` in a temporary git
repository: a commit adding a model worse than the configured class is blocked, a good one passes.

No network: the hook is configured as a ``repo: local`` hook with the definition (entry, files, args,
...) taken from .pre-commit-hooks.yaml, ``language: system`` and the entry pointing at this
environment's ``eeki-label`` (``language: python`` would make pre-commit pip-install the tool)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from support import ROOT, save, classifier

BIN = Path(sys.executable).parent


def heavy_cnn(channels: int = 128, layers: int = 3) -> onnx.ModelProto:
    """A classifier at 224x224 with full-resolution 3x3 convolutions: ~15 GMAC, far worse than the
    catalogue's image-classification references (class G on edge-gpu-batch1)."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "x", 3
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((channels, cin, 3, 3)) * 0.05).astype(np.float32),
                                             f"w{i}"))
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, cin = f"r{i}", channels
    inits.append(numpy_helper.from_array(rng.standard_normal((1000, channels)).astype(np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "heavy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PRE_COMMIT_HOME": str(repo.parent / "pre-commit-home"),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=check,
                          timeout=300)


def test_the_hook_blocks_a_model_worse_than_the_configured_class(tmp_path):
    if shutil.which("git") is None:
        pytest.fail("git is missing")
    hook = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())[0]
    assert hook["id"] == "eeki-label" and hook["entry"].startswith("eeki-label ")
    local = {**hook, "language": "system", "entry": str(BIN / "eeki-label") + hook["entry"][len("eeki-label"):],
             "args": ["--fail-below", "B", "-d", "edge-gpu-batch1", "--task", "image-classification"]}
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]}))
    git(repo, "add", ".pre-commit-config.yaml")
    git(repo, "commit", "-q", "-m", "config")  # no hook installed yet
    installed = subprocess.run([str(BIN / "pre-commit"), "install"], cwd=repo, capture_output=True, text=True,
                               env={**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")})
    assert installed.returncode == 0, installed.stderr

    save(heavy_cnn(), repo / "heavy.onnx")
    (repo / "notes.txt").write_text("not a model\n")
    git(repo, "add", "heavy.onnx", "notes.txt")
    blocked = git(repo, "commit", "-m", "add a heavy model", check=False)
    assert blocked.returncode != 0
    out = blocked.stdout + blocked.stderr
    assert "eeki-label energy-efficiency gate" in out and "Failed" in out
    assert re.search(r"heavy\.onnx: edge-gpu-batch1=[C-G]\b", out) and "worse than class B" in out
    assert git(repo, "rev-list", "--count", "HEAD").stdout.strip() == "1"  # nothing committed

    git(repo, "rm", "-q", "--cached", "heavy.onnx")
    (repo / "heavy.onnx").unlink()
    save(classifier(1000, (224, 224)), repo / "small.onnx")
    git(repo, "add", "small.onnx")
    passed = git(repo, "commit", "-m", "add a small model", check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    out = passed.stdout + passed.stderr
    assert "eeki-label energy-efficiency gate" in out and "Passed" in out  # it ran (not "no files to check")
    assert git(repo, "rev-list", "--count", "HEAD").stdout.strip() == "2"


def test_gate_cli_grades_every_model_and_fails_on_any(tmp_path, capsys):
    from eeki_label.cli import main

    heavy, small = save(heavy_cnn(), tmp_path / "heavy.onnx"), save(classifier(1000, (224, 224)), tmp_path / "small.onnx")
    args = ["--fail-below", "B", "-d", "edge-gpu-batch1", "--task", "image-classification"]
    assert main(["gate", str(small), *args]) == 0
    assert main(["gate", str(heavy), str(small), *args]) == 3
    out = capsys.readouterr()
    assert "FAIL" in out.out and "heavy.onnx" in out.err
    assert main(["gate", str(small), "--fail-below", "Z"]) == 2
