"""Runtime profile: run the model with onnxruntime and time it.

Inputs are generated deterministically (fixed seed) with the right dtypes and the resolved shapes:
floats from a standard normal distribution, integers as ones (a valid token id, mask value and
length for the models we meet), booleans as true. Warm-up runs are discarded; the timed runs give
a latency distribution (milliseconds) with the median's distribution-free 95 % confidence interval.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto, TensorProto, ValueInfoProto, helper

from eeki_label.errors import LimitExceededError, RuntimeProfileError, UnsupportedOperatorError
from eeki_label.model_io import LoadedModel, materialize
from eeki_label.profile.shapes import Shape, graph_inputs

DEFAULT_RUNS = 30
DEFAULT_WARMUP = 3
DEFAULT_SEED = 0


@dataclass(frozen=True)
class RuntimeProfile:
    """Latency of one inference on this host, in milliseconds, and the conditions it was taken in."""

    runs: int
    warmup_runs: int
    latency_ms_median: float
    latency_ms_p90: float
    latency_ms_mean: float
    latency_ms_min: float
    latency_ms_ci95_low: float
    """Lower end of the distribution-free 95 % confidence interval of the median."""
    latency_ms_ci95_high: float
    latencies_ms: tuple[float, ...]
    intra_op_threads: int
    onnxruntime_version: str
    execution_provider: str
    host_cpu: str
    host_logical_cpus: int
    host_machine: str
    seed: int


def make_feeds(model: ModelProto, shapes: dict[str, Shape], seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Deterministic inputs for every real graph input (see the module docstring)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for vi in graph_inputs(model):
        elem = vi.type.tensor_type.elem_type
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        shape = shapes[vi.name]
        if elem in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
            feeds[vi.name] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif elem == TensorProto.BOOL:
            feeds[vi.name] = np.ones(shape, dtype=bool)
        else:
            feeds[vi.name] = np.ones(shape, dtype=dtype)
    return feeds


def host_cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _session(model_source: "str | bytes", threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model_source, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        msg = " ".join(str(e).split())
        if "NOT_IMPLEMENTED" in msg or "Could not find an implementation" in msg:
            raise UnsupportedOperatorError(f"onnxruntime cannot run this model: {msg[:300]}") from e
        raise RuntimeProfileError(f"onnxruntime could not load the model: {msg[:300]}") from e


def open_session(loaded: LoadedModel, threads: int | None = None):
    """An onnxruntime CPU session on the checked model file (external data stays in its folder)."""
    return _session(str(loaded.path), threads)


def _run(session, feeds, run_options=None):
    try:
        return session.run(None, feeds, run_options)
    except Exception as e:
        msg = " ".join(str(e).split())
        if "terminate" in msg.lower() or "exiting due to terminate" in msg.lower():
            raise LimitExceededError("the runtime profile exceeded its time limit (--time-limit)") from e
        raise RuntimeProfileError(f"onnxruntime failed to run the model: {msg[:300]}") from e


def median_ci95_ranks(n: int) -> tuple[int, int]:
    """0-based order-statistic ranks (lo, hi) bounding the median with >= 95 % confidence
    (binomial, distribution-free). For n < 6 no such interval exists: returns (0, n-1)."""
    if n < 6:
        return 0, n - 1
    cdf = 0.0
    lo = 0
    for k in range(n + 1):
        p = math.comb(n, k) / 2**n
        if cdf + p > 0.025:
            lo = k
            break
        cdf += p
    lo = max(lo - 1, 0)
    return lo, n - 1 - lo


def runtime_profile(
    loaded: LoadedModel,
    shapes: dict[str, Shape],
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    seed: int = DEFAULT_SEED,
    time_limit_s: float | None = None,
    progress=None,
) -> RuntimeProfile:
    """Warm up, then time ``runs`` inferences. ``progress(done, total)`` is called after each run."""
    import onnxruntime as ort

    if runs < 1:
        raise RuntimeProfileError("--runs must be at least 1")
    session = open_session(loaded, threads)
    feeds = make_feeds(loaded.proto, shapes, seed)
    run_options = ort.RunOptions()
    timer = None
    if time_limit_s:
        timer = threading.Timer(time_limit_s, lambda: setattr(run_options, "terminate", True))
        timer.daemon = True
        timer.start()
    try:
        for _ in range(warmup):
            _run(session, feeds, run_options)
        samples: list[float] = []
        for i in range(runs):
            t0 = time.perf_counter()
            _run(session, feeds, run_options)
            samples.append((time.perf_counter() - t0) * 1e3)
            if progress:
                progress(i + 1, runs)
    finally:
        if timer:
            timer.cancel()
    ordered = sorted(samples)
    lo, hi = median_ci95_ranks(len(ordered))
    p90_index = min(len(ordered) - 1, max(0, math.ceil(0.9 * len(ordered)) - 1))
    threads_used = threads or int(session.get_session_options().intra_op_num_threads) or (os.cpu_count() or 1)
    return RuntimeProfile(
        runs=runs,
        warmup_runs=warmup,
        latency_ms_median=statistics.median(ordered),
        latency_ms_p90=ordered[p90_index],
        latency_ms_mean=statistics.fmean(ordered),
        latency_ms_min=ordered[0],
        latency_ms_ci95_low=ordered[lo],
        latency_ms_ci95_high=ordered[hi],
        latencies_ms=tuple(samples),
        intra_op_threads=threads_used,
        onnxruntime_version=ort.__version__,
        execution_provider="CPUExecutionProvider",
        host_cpu=host_cpu_name(),
        host_logical_cpus=os.cpu_count() or 1,
        host_machine=platform.machine(),
        seed=seed,
    )


def probe_shapes(loaded: LoadedModel, shapes: dict[str, Shape], names: list[str]) -> dict[str, Shape]:
    """Concrete shapes of intermediate tensors of the main graph, by running the model once with
    those tensors added as outputs. Used only when static shape inference leaves them unknown."""
    if not names:
        return {}
    model = materialize(loaded)
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend([ValueInfoProto(name=n) for n in names if n not in existing])
    session = _session(model.SerializeToString(), None)
    out_names = [o.name for o in session.get_outputs()]
    values = _run(session, make_feeds(loaded.proto, shapes))
    wanted = set(names)
    return {n: tuple(int(d) for d in np.shape(v)) for n, v in zip(out_names, values) if n in wanted}
