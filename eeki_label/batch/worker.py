"""Run one model's assessment in its own process: ``python -m eeki_label assess MODEL ... --json FILE``.

The same function runs under both engines (a thread of the local pool, a Ray task). The child is
exactly the ``assess`` command, so it has the same limits, the same sandboxed runtime profile, the
same exit codes and writes the same label bytes as an ``assess`` run with the same options. The
child's label is read back into memory and returned (a Ray worker may run on another node; the
driver alone writes the output folder).

Isolation and cleanup: the child starts a new session (its own process group, which its sandboxed
grandchildren inherit) and asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``),
so a cancelled Ray task or a killed batch leaves no orphan behind; a timeout or a cancel kills the
whole group. Runs that measure this host (``-d host``) hold an exclusive per-node lock for their
whole duration: RAPL and NVML see the whole CPU package or GPU, so two measurements on one node
must never overlap. Estimation and NNC coding run without it.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from eeki_label.errors import InternalError, Interrupted, LimitExceededError

#: Exit code recorded for a model killed because it ran past ``--model-timeout`` (README: 31).
TIMEOUT_EXIT = LimitExceededError.exit_code
#: Exit code recorded for a child that died of a signal or whose label could not be read (70).
CRASH_EXIT = InternalError.exit_code
#: stderr kept per child (the one-line error is its last line).
STDERR_KEEP = 64 * 1024


@dataclass(frozen=True)
class Spec:
    """What a worker needs: plain data, so that it pickles to a Ray worker."""

    key: str
    model: str
    args: tuple[str, ...]
    timeout_s: float | None
    measures: bool = False
    cpus: "tuple[int, ...] | None" = None
    """CPUs the child is pinned to (the local engine gives each worker its own)."""


@dataclass(frozen=True)
class Outcome:
    key: str
    exit_code: int
    reason: str
    label: bytes | None
    """The label set the child wrote (None when it wrote none)."""
    seconds: float
    node: str = ""


def meter_lock_path() -> Path:
    """The per-node lock of measuring runs (one file per host and user)."""
    return Path(tempfile.gettempdir()) / f"eeki-label-meter-{os.getuid()}.lock"


try:  # loaded once here: the child may only call into it between fork and exec
    _LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:
    _LIBC = None


def _child_setup(cpus: "tuple[int, ...] | None"):
    def setup() -> None:  # runs in the child between fork and exec
        if _LIBC is not None:
            _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if cpus:
            os.sched_setaffinity(0, cpus)
    return setup


class Running:
    """The live children of this process, so that a cancel can kill them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.cancelled = False

    def add(self, p: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(p)
            if self.cancelled:
                _kill_group(p)

    def discard(self, p: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(p)

    def kill_all(self) -> None:
        with self._lock:
            self.cancelled = True
            for p in list(self._procs):
                _kill_group(p)


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


RUNNING = Running()


def _last_line(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    line = (errors or lines or [""])[-1]
    if line.startswith("error: "):
        line = line[len("error: "):]
    return " ".join(line.split())[:500]


def run(spec: Spec, running: Running = RUNNING) -> Outcome:
    """Assess one model in a child process; never raises for anything the model or the child does."""
    import socket

    started = time.perf_counter()
    node = socket.gethostname()
    with tempfile.TemporaryDirectory(prefix="eeki-batch-") as tmp:
        out = Path(tmp) / "label.json"
        argv = [sys.executable, "-m", "eeki_label", "assess", spec.model, *spec.args, "--json", str(out), "--quiet"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        lock_fd = None
        try:
            if spec.measures:
                lock_fd = os.open(meter_lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(lock_fd, fcntl.LOCK_EX)  # released when the fd closes
            with open(Path(tmp) / "stderr", "w+b") as err:
                try:
                    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         env=env, cwd=tmp, start_new_session=True, preexec_fn=_child_setup(spec.cpus))
                except OSError as e:
                    return Outcome(spec.key, CRASH_EXIT, f"cannot start assess: {e.strerror or e}", None,
                                   time.perf_counter() - started, node)
                running.add(p)
                try:
                    try:
                        code = p.wait(timeout=spec.timeout_s)
                        timed_out = False
                    except subprocess.TimeoutExpired:
                        _kill_group(p)
                        p.wait()
                        code, timed_out = TIMEOUT_EXIT, True
                finally:
                    _kill_group(p)  # grandchildren that outlived the child
                    running.discard(p)
                err.seek(max(0, err.seek(0, os.SEEK_END) - STDERR_KEEP))
                stderr = err.read()
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
        seconds = time.perf_counter() - started
        label = out.read_bytes() if out.is_file() and not timed_out else None
        if timed_out:
            return Outcome(spec.key, TIMEOUT_EXIT, f"ran past --model-timeout {spec.timeout_s:g} s; killed",
                           None, seconds, node)
        if code < 0:
            reason = "cancelled" if running.cancelled else f"assess was killed by signal {-code}"
            return Outcome(spec.key, Interrupted.exit_code if running.cancelled else CRASH_EXIT, reason, None, seconds, node)
        reason = _last_line(stderr) if code != 0 else ""
        return Outcome(spec.key, code, reason, label, seconds, node)
