"""Resource limits hold against models built to break them: the wall-clock limit stops even one slow
operator, onnxruntime's working memory is capped, a crash of onnxruntime is one line, inputs are
checked before they are allocated."""

from __future__ import annotations

import os
import signal
import time

import pytest

import hostile as H
from eeki_label.cli import main
from eeki_label.errors import ModelTooLargeError, RuntimeProfileError
from eeki_label.model_io import load_model
from eeki_label.profile import runtime, sandbox
from eeki_label.profile.shapes import resolve_input_shapes


def test_time_limit_stops_a_single_slow_kernel(tmp_path, capfd, monkeypatch):
    """One MatMul of 8192 x 8192 matrices (about half a minute here): onnxruntime's terminate flag
    is not looked at inside a kernel, so the parent kills the child at the limit plus the grace."""
    monkeypatch.setattr(sandbox, "GRACE_S", 0.5)
    monkeypatch.setattr(sandbox, "GRACE_SHARE", 0.0)
    model = H.write(H.slow_kernel(8192), tmp_path / "m.onnx")
    t0 = time.monotonic()
    rc = main(["assess", str(model), "--runs", "1", "--time-limit", "1", "-q", "-d", "edge-gpu-batch1",
               "--out", str(tmp_path / "out")])
    elapsed = time.monotonic() - t0
    _, err = capfd.readouterr()
    assert rc == 31 and err.count("\n") == 1 and "time limit of 1 s (--time-limit)" in err, err
    assert elapsed < 15, f"took {elapsed:.1f} s for a 1 s limit"
    assert not (tmp_path / "out").exists()


def test_a_crash_of_onnxruntime_is_one_clean_error(tmp_path, monkeypatch):
    """A child that dies of a signal (as onnxruntime does on some malformed models) ends as
    RuntimeProfileError, exit code 17, naming the signal."""
    started = []
    real_popen = sandbox.subprocess.Popen

    def popen(*args, **kwargs):
        child = real_popen(*args, **kwargs)
        started.append(child)
        return child

    monkeypatch.setattr(sandbox.subprocess, "Popen", popen)
    loaded = load_model(H.write(H.tiny(), tmp_path / "m.onnx"))
    shapes = resolve_input_shapes(loaded.proto)

    def progress(done, total):
        if done == 1:
            os.kill(started[-1].pid, signal.SIGSEGV)
            time.sleep(5)  # the child is gone long before

    with pytest.raises(RuntimeProfileError, match="crashed.*SIGSEGV") as info:
        runtime.runtime_profile(loaded, shapes, runs=50, warmup=0, progress=progress)
    assert info.value.exit_code == 17 and "\n" not in str(info.value)


def test_onnxruntime_working_memory_is_capped(tmp_path):
    """A 256 MiB tensor whose size only the run reveals (its shape is an input's value), against a
    64 MiB cap, then within a 1 GiB one."""
    loaded = load_model(H.write(H.giant_from_input_value(1 << 26), tmp_path / "m.onnx"))
    shapes = resolve_input_shapes(loaded.proto)
    with pytest.raises(ModelTooLargeError, match="ConstantOfShape node asked for 268435456 bytes"):
        runtime.runtime_profile(loaded, shapes, runs=1, warmup=0, max_activation_bytes=64 << 20)
    assert runtime.runtime_profile(loaded, shapes, runs=1, warmup=0, max_activation_bytes=1 << 30).runs == 1


def test_shape_probe_is_bounded_too(tmp_path):
    loaded = load_model(H.write(H.loop_forever(), tmp_path / "m.onnx"))
    shapes = resolve_input_shapes(loaded.proto)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        runtime.probe_shapes(loaded, shapes, ["y"], time_limit_s=1)
    assert info.value.exit_code == 31 and "shape probe" in str(info.value)
    assert time.monotonic() - t0 < 15


def test_inputs_are_checked_before_they_are_allocated():
    model = H.huge_declared_activations()
    shapes = {"x": (1, 1 << 20, 1 << 20)}
    with pytest.raises(ModelTooLargeError, match="input 'x' .* 4398046511104 bytes"):
        runtime.make_feeds(model, shapes)
    assert runtime.make_feeds(model, {"x": (1, 2, 2)})["x"].shape == (1, 2, 2)


def test_activation_limit_is_an_option(tmp_path, capfd):
    model = H.write(H.tiny(), tmp_path / "m.onnx")  # Relu: 8 KiB in + 8 KiB out
    rc = main(["assess", str(model), "--runs", "0", "-q", "-d", "edge-gpu-batch1", "--max-activation-bytes", "4096",
               "--json", str(tmp_path / "l.json")])
    _, err = capfd.readouterr()
    assert rc == 11 and "node 'relu' works on 16384 bytes" in err and err.count("\n") == 1, err
    assert not (tmp_path / "l.json").exists()
