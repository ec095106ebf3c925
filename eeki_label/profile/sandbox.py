"""Run onnxruntime on an untrusted model in a child process, under a deadline and a memory cap.

Why a process: onnxruntime looks at the ``terminate`` run option only between kernels, so one slow
operator (a huge MatMul or Conv, a model that computes its own giant shapes) runs on past any time
limit; an allocation outside its arena is not capped; and a malformed model may crash it (see the
segfaults in onnxruntime's issue tracker). In a child (:mod:`eeki_label.profile._ortchild`) each of
these ends as one clear error here:

* the child sets ``terminate`` at the time limit; if a kernel keeps it running, the parent kills it
  ``grace`` seconds later: :class:`LimitExceededError` (exit code 31);
* onnxruntime's CPU working memory is an arena capped at ``max_activation_bytes``; a model that needs
  more fails its allocation: :class:`ModelTooLargeError` (11). The child's data segment is limited
  too (``RLIMIT_DATA``: the weights several times over plus twice the cap), a backstop for memory
  taken outside the arena;
* a crash (a signal) is :class:`RuntimeProfileError` (17), as is any other onnxruntime failure
  (:class:`UnsupportedOperatorError`, 14, for an operator it has no kernel for).

The child answers in JSON lines only (never pickle), so a subverted child cannot run code here.
Start-up costs about half a second (numpy, onnxruntime and onnx are imported in the child).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from eeki_label.errors import (
    LimitExceededError,
    ModelTooLargeError,
    RuntimeProfileError,
    ShapeError,
    UnsupportedOperatorError,
)

#: Seconds the parent waits past the time limit (the child's own ``terminate`` comes first) before
#: it kills the child, plus this share of the limit.
GRACE_S = 5.0
GRACE_SHARE = 0.1
#: Memory the child needs besides the weights and the activations (interpreter, numpy,
#: onnxruntime's code and thread stacks), for the RLIMIT_DATA backstop.
_BASE_DATA_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ChildResult:
    value: dict
    """The child's ``ok`` object."""
    elapsed_s: float


def run_child(
    request: dict,
    model_bytes: "bytes | None" = None,
    *,
    time_limit_s: "float | None",
    max_activation_bytes: "int | None",
    weight_bytes: int = 0,
    what: str = "the runtime profile",
    option: str = "--time-limit",
    progress=None,
    data_limit_bytes: "int | None" = None,
    max_line: int = 1 << 22,
) -> ChildResult:
    """Run one request (see :mod:`eeki_label.profile._ortchild`) in a fresh child; raise an EekiError
    subclass on any failure. ``weight_bytes`` (model file plus external data) sizes the memory backstop."""
    request = dict(request)
    request["time_limit_s"] = time_limit_s
    request["arena_bytes"] = max_activation_bytes
    if data_limit_bytes:
        request["data_limit_bytes"] = int(data_limit_bytes)
    elif max_activation_bytes:
        request["data_limit_bytes"] = 4 * int(weight_bytes) + 2 * int(max_activation_bytes) + _BASE_DATA_BYTES
    if model_bytes is not None:
        request["model_path"] = None
        request["model_bytes"] = len(model_bytes)
    header = (json.dumps(request) + "\n").encode("utf-8")

    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.monotonic()
    deadline = None if not time_limit_s else t0 + time_limit_s + GRACE_S + GRACE_SHARE * time_limit_s
    with tempfile.TemporaryFile() as err:
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "eeki_label.profile._ortchild"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, env=env, close_fds=True)
        except OSError as e:
            raise RuntimeProfileError(f"cannot start the onnxruntime child process: {e.strerror or e}") from e
        lines: "queue.Queue[bytes | None]" = queue.Queue()
        feeder = threading.Thread(target=_feed, args=(child, header, model_bytes), daemon=True)
        reader = threading.Thread(target=_read, args=(child, lines, max_line), daemon=True)
        feeder.start()
        reader.start()
        result = error = None
        killed = False
        budget = int(request.get("runs") or 0) + 16  # progress lines, one result, some slack
        try:
            while True:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    line = lines.get(timeout=timeout)
                except queue.Empty:
                    _kill(child)
                    killed = True
                    break
                if line is None:
                    break
                budget -= 1
                if budget < 0:
                    raise RuntimeProfileError("the onnxruntime child process sent more messages than it may")
                msg = _decode(line)
                if "progress" in msg and progress is not None:
                    progress(_int(msg["progress"]))
                elif isinstance(msg.get("ok"), dict):
                    result = msg["ok"]
                elif isinstance(msg.get("error"), dict):
                    error = msg["error"]
            try:
                code = child.wait(timeout=30)
            except subprocess.TimeoutExpired:  # its output is closed but it does not end
                _kill(child)
                code = child.returncode
        except BaseException:
            _kill(child)
            raise
        finally:
            _kill(child)
            feeder.join(timeout=5)
            reader.join(timeout=5)
        elapsed = time.monotonic() - t0
        if killed:
            raise LimitExceededError(
                f"{what} exceeded its time limit of {time_limit_s:g} s ({option}); onnxruntime was stopped "
                f"after {elapsed:.0f} s")
        if error is not None:
            raise _error(error, what, time_limit_s, option, max_activation_bytes)
        if result is None or code != 0:
            err.seek(max(0, os.fstat(err.fileno()).st_size - 4000))
            last = [ln for ln in err.read().decode("utf-8", "replace").splitlines() if ln.strip()][-1:]
            tail = " ".join(last[0].split())[-300:] if last else ""  # the last line (an exception's, not a traceback)
            raise _crash(code, tail, what, max_activation_bytes)
        return ChildResult(result, elapsed)


def _feed(child, header: bytes, model_bytes: "bytes | None") -> None:
    try:
        child.stdin.write(header)
        if model_bytes is not None:
            child.stdin.write(model_bytes)
        child.stdin.close()
    except (OSError, ValueError):  # the child died before reading everything: its exit tells why
        pass


def _read(child, lines: "queue.Queue[bytes | None]", max_line: int = 1 << 22) -> None:
    try:
        while True:
            line = child.stdout.readline(max_line)
            if not line:
                break
            lines.put(line)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def _decode(line: bytes) -> dict:
    try:
        msg = json.loads(line)
    except ValueError as e:
        raise RuntimeProfileError("the onnxruntime child process answered something that is not JSON") from e
    if not isinstance(msg, dict):
        raise RuntimeProfileError("the onnxruntime child process answered something that is not a JSON object")
    return msg


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuntimeProfileError("the onnxruntime child process answered a malformed message")
    return value


def _kill(child) -> None:
    if child.poll() is None:
        try:
            child.kill()
        except OSError:
            pass
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _error(error: dict, what: str, time_limit_s, option: str, max_activation_bytes):
    kind = str(error.get("kind"))
    full = str(error.get("message", ""))
    message = full[:300]
    if error.get("stage") == "infer":
        if kind == "memory":
            return ModelTooLargeError(f"{what} needed more memory than allowed (declared shapes or shape data far "
                                      f"beyond what a model needs?): {message}")
        return ShapeError(f"shape inference failed at the given input shapes: {message}")
    if kind == "time":
        return LimitExceededError(f"{what} exceeded its time limit of {time_limit_s:g} s ({option})")
    if kind == "memory":
        cap = f" of {max_activation_bytes} bytes (raise it with --max-activation-bytes)" if max_activation_bytes else ""
        asked = re.search(r"requested bytes of (\d+)", full)
        node = re.search(r"running (\S+) node", full)
        detail = (f"{node.group(1) + ' node' if node else 'an operator'} asked for {asked.group(1)} bytes" if asked
                  else message)
        return ModelTooLargeError(f"{what}: onnxruntime needed more working memory than the limit{cap}; {detail}")
    if kind == "unsupported":
        return UnsupportedOperatorError(f"onnxruntime cannot run this model: {message}")
    if error.get("stage") == "load":
        return RuntimeProfileError(f"onnxruntime could not load the model: {message}")
    named = re.search(r"input(?: name)?[:=]?\s*'?\"?([\w./:-]+)", full)
    hint = (f"; the inputs were generated{' (input ' + repr(named.group(1)) + ')' if named else ''}: if the model "
            "needs particular values, pass real ones with --inputs FILE.npz")
    return RuntimeProfileError(f"onnxruntime failed to run the model: {message}{hint}")


def _crash(code: "int | None", tail: str, what: str, max_activation_bytes):
    if "bad_alloc" in tail or "MemoryError" in tail:
        limit = f" (limit {max_activation_bytes} bytes of working memory, --max-activation-bytes)" \
            if max_activation_bytes else ""
        return ModelTooLargeError(f"{what}: out of memory{limit}")
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == getattr(signal, "SIGKILL", 9):  # the kernel's OOM killer, typically
            return ModelTooLargeError(f"{what} was killed ({name}), most likely out of memory; lower "
                                      "--max-activation-bytes or free memory")
        return RuntimeProfileError(f"{what} crashed ({name}){': ' + tail if tail else ''}")
    return RuntimeProfileError(f"{what} ended without a result (exit code {code})"
                               f"{': ' + tail if tail else ''}")
