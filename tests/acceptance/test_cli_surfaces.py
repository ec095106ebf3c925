"""What a user sees of the CLI: progress on stderr (never stdout), one JSON shape, the gate's rules,
one-line usage errors, and help that lists the valid ids."""

from __future__ import annotations

import io
import json
import re

import pytest

from support import classifier, save
from eeki_label.cli import main
from eeki_label.cli_progress import StageProgress

STAGE_LINE = re.compile(r"^eeki-label: (?P<stage>[a-zA-Z ]+) (?P<s>\d+\.\d\d) s$")


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # a small ImageNet-like classifier (1,000 scores, dynamic height and width: graded at 224x224)
    return save(classifier(1000), tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def test_non_interactive_assess_prints_one_line_per_stage_on_stderr_only(tiny, capsys):
    code, out, err = run(["assess", tiny, "--runs", "2", "-d", "edge-gpu-batch1", "--task", "image-classification",
                          "--json", "-"], capsys)
    assert code == 0, err
    doc = json.loads(out)  # stdout holds the JSON and nothing else
    assert "labels" in doc
    lines = err.splitlines()
    stages = [STAGE_LINE.match(line).group("stage") for line in lines]  # every line is a stage line
    assert stages[:2] == ["load", "static profile"] and "runtime profile" in stages and stages[-1] == "NNC transfer"
    assert len(stages) == len(set(stages))  # one line per stage, the NNC steps folded into their stage


def test_quiet_silences_progress_and_summary(tiny, capsys):
    code, out, err = run(["assess", tiny, "--runs", "1", "--no-transfer", "-d", "edge-gpu-batch1", "-q"], capsys)
    assert code == 0 and out == "" and err == ""


def test_summary_goes_to_stdout_and_progress_to_stderr(tiny, tmp_path, capsys):
    code, out, err = run(["assess", tiny, "--runs", "1", "--no-transfer", "-d", "edge-gpu-batch1",
                          "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert "eeki-label:" not in out and "edge-gpu-batch1" in out
    assert all(STAGE_LINE.match(line) for line in err.splitlines())
    assert "render and write" in err


def test_stage_progress_folds_steps_and_skips_a_failed_stage():
    stream = io.StringIO()
    ticks = iter([0.0, 1.0, 1.5, 4.0])
    p = StageProgress(stream=stream, interactive=False, clock=lambda: next(ticks))
    p("load", 0, 1)
    p("NNC transfer", 0, 1)
    p("NNC transfer: sensitivity of tensor groups (3 tensors)", 2, 3)
    p.close(ok=False)
    assert stream.getvalue() == "eeki-label: load 1.00 s\n"  # the failing NNC stage gets no 'done' line


def test_interactive_progress_uses_rich_and_leaves_no_plain_lines():
    stream = io.StringIO()
    p = StageProgress(stream=stream, interactive=True)
    p("NNC transfer: sensitivity of tensor groups (3 tensors)", 1, 3)
    p.close()
    assert "eeki-label:" not in stream.getvalue()


# --------------------------------------------------------------------------------------------
# one JSON shape


def test_json_is_always_a_label_set_and_single_is_opt_in(tiny, tmp_path, capsys):
    code, out, err = run(["assess", tiny, "--runs", "0", "--no-transfer", "-d", "edge-gpu-batch1", "--json", "-"],
                         capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert "labels" in doc and "label" not in doc and doc["labels"][0]["device_class"]["id"] == "edge-gpu-batch1"
    code, out, err = run(["assess", tiny, "--runs", "0", "--no-transfer", "-d", "edge-gpu-batch1", "--json", "-",
                          "--json-shape", "single"], capsys)
    assert code == 0, err
    assert json.loads(out)["device_class"]["id"] == "edge-gpu-batch1"
    # --out writes the same shape as --json
    code, _, err = run(["assess", tiny, "--runs", "0", "--no-transfer", "-d", "edge-gpu-batch1", "-q",
                        "--out", tmp_path / "o"], capsys)
    assert code == 0 and "labels" in json.loads((tmp_path / "o" / "label.json").read_text())


@pytest.mark.parametrize("classes", [["-d", "edge-gpu-batch1", "-d", "microcontroller"], ["-d", "all"], []])
def test_single_shape_refuses_several_classes_before_assessing(tiny, classes, capsys):
    code, out, err = run(["assess", tiny, "--runs", "0", *classes, "--json-shape", "single"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: usage: --json-shape single needs exactly one --device-class")


# --------------------------------------------------------------------------------------------
# the gate


@pytest.fixture(scope="module")
def too_big_for_mcu(tmp_path_factory):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((1024, 4096), np.float32), "w")  # 16 MB of weights
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], initializer=[w])
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                tmp_path_factory.mktemp("big") / "big.onnx")


def test_gate_letters_are_case_insensitive(tiny, capsys):
    code, _, err = run(["assess", tiny, "--runs", "0", "--no-transfer", "-d", "edge-gpu-batch1",
                        "--task", "image-classification", "--fail-below", "g", "-q"], capsys)
    assert code == 0, err
    code, _, err = run(["assess", tiny, "--runs", "0", "--fail-below", "h", "-q"], capsys)
    assert code == 2 and err.startswith("error: usage: unknown class 'h'")


def test_an_ungraded_class_fails_the_gate_unless_allowed(too_big_for_mcu, capsys):
    base = ["assess", too_big_for_mcu, "--runs", "0", "--no-transfer", "--task", "image-classification",
            "-d", "microcontroller", "-d", "edge-gpu-batch1", "--fail-below", "G", "-q"]
    code, _, err = run(base, capsys)
    assert code == 3 and err.count("\n") == 1
    assert err.startswith("error: gate failed: required at least class G; not graded: microcontroller")
    code, _, err = run(base + ["--allow-ungraded", "microcontroller"], capsys)
    assert code == 0, err
    code, _, err = run(["assess", too_big_for_mcu, "--runs", "0", "--allow-ungraded", "microcontroller"], capsys)
    assert code == 2 and "--fail-below" in err


# --------------------------------------------------------------------------------------------
# usage errors


@pytest.mark.parametrize("args, fragment", [
    (["assess", "--bogus"], "No such option: --bogus"),
    (["assess"], "Missing argument"),
    (["assess", "m.onnx", "--runs", "many"], "--runs"),
    (["nosuch"], "No such command"),
])
def test_usage_errors_are_one_line_with_the_error_prefix(args, fragment, capsys):
    code, out, err = run(args, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: usage: ") and fragment in err, err


# --------------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("command", ["", "assess", "measure", "render", "keygen", "verify", "devices", "catalogue",
                                     "rules", "transfer", "decode"])
def test_help_has_no_python_types_or_braces(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run([*([command] if command else []), "--help"], capsys)
    assert code == 0
    assert not re.search(r"<(list|bool|str|path|int|float)[^>]*>|\{[A-Za-z_]+\}", out), out


def test_assess_help_groups_options_and_lists_valid_ids(capsys, monkeypatch):
    from eeki_label.catalogue import load_catalogue
    from eeki_label.energy.devices import load_devices

    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run(["assess", "--help"], capsys)
    assert code == 0
    for panel in ("What to assess", "Outputs", "Gate", "Transfer (NNC)", "Limits (untrusted models)"):
        assert panel in out
    cat = load_catalogue()
    flat = " ".join(out.split())
    for dc in load_devices(cat).classes:
        assert dc.id in flat
    for task in cat.tasks:
        assert task in flat


# --------------------------------------------------------------------------------------------
# the summary


def test_summary_explains_the_grade_in_wrapped_lines(too_big_for_mcu, tmp_path, capsys):
    code, out, err = run(["assess", too_big_for_mcu, "--runs", "0", "--no-transfer", "-d", "microcontroller",
                          "-d", "edge-gpu-batch1", "--task", "image-classification", "--out", tmp_path / "o",
                          "--sign-key", _key(tmp_path, capsys)], capsys)
    assert code == 0, err
    text = "\n".join(line for line in out.splitlines() if str(tmp_path) not in line)  # but the written paths
    assert max(len(line) for line in text.splitlines()) <= 120  # a not-graded row wraps, it does not widen
    for word in ("None", "True", "False"):
        assert not re.search(rf"\b{word}\b", out), word
    flat = " ".join(out.split())
    assert "index = the model's energy per inference / the reference's" in flat
    assert "Classes: A up to 0.7" in flat and "G above 16" in flat  # rules 1.0.0/2.0.0 bands
    assert "task image-classification, declared (--task)" in flat
    assert "not graded microcontroller: does not fit" in flat and " MB " in flat  # bytes humanised
    assert re.search(r"\d (µJ|mJ|J) ", flat) and re.search(r"\d (mWh|Wh|kWh) ", flat)
    assert "qualify on this device class" in flat or "qualifies on this device class" in flat
    assert "wrote (signed with key sha256:" in flat and f"{tmp_path / 'o' / 'label.pdf'}" in out  # confirmed


def _key(tmp_path, capsys) -> str:
    key = tmp_path / "k.pem"
    assert run(["keygen", "--out", key], capsys)[0] == 0
    return str(key)

