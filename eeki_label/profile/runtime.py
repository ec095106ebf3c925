"""Runtime profile: run the model with onnxruntime and time it.

Inputs are generated deterministically (fixed seed) with the right dtypes and the resolved shapes:
floats from a standard normal distribution, integers as ones (a valid token id, mask value and
length for the models we meet), booleans as true. Warm-up runs are discarded; the timed runs give
a latency distribution (milliseconds) with the median's distribution-free 95 % confidence interval.

The model runs in a child process (:mod:`eeki_label.profile.sandbox`): the time limit covers the
session's creation, the warm-up and the timed runs and holds even inside one slow operator, and
onnxruntime's working memory is capped at the activation limit.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto, ValueInfoProto

from eeki_label.errors import LimitExceededError, ModelTooLargeError, RuntimeProfileError, UnsupportedOperatorError
from eeki_label.model_io import DEFAULT_MAX_ACTIVATION_BYTES, LoadedModel, dtype_bytes, materialize, numel
from eeki_label.profile._ortchild import feeds_from_specs
from eeki_label.profile.sandbox import run_child
from eeki_label.profile.shapes import Shape, graph_inputs

DEFAULT_RUNS = 30
DEFAULT_WARMUP = 3
DEFAULT_SEED = 0
#: A model whose file and external data together are at least this large is written for the probe to a temporary folder with external data instead of
#: being sent to the child as one message: protobuf cannot serialise a message of 2 GiB or more.
PROBE_INLINE_MAX_BYTES = 2**31 - 2**24
#: Wall-clock limit of a shape probe (one run of the model), seconds, when the caller gives none.
DEFAULT_PROBE_TIME_LIMIT_S = 600.0


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


def feed_specs(model: ModelProto, shapes: dict[str, Shape],
               max_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES) -> list[tuple[str, int, tuple[int, ...]]]:
    """``(name, elem_type, shape)`` of every real graph input; raises :class:`ModelTooLargeError`
    before anything is allocated when one input, or all together, exceed ``max_bytes``."""
    specs = [(vi.name, vi.type.tensor_type.elem_type, tuple(shapes[vi.name])) for vi in graph_inputs(model)]
    check_input_bytes(specs, max_bytes)
    return specs


def check_input_bytes(specs, max_bytes: "int | None") -> None:
    if not max_bytes:
        return
    total = 0
    for name, elem, shape in specs:
        n = numel(shape) * dtype_bytes(elem)
        total += n
        if n > max_bytes or total > max_bytes:
            raise ModelTooLargeError(
                f"input {name!r} at shape {list(shape)} takes {n} bytes" + (f" ({total} bytes for all inputs so far)"
                                                                            if total != n else "")
                + f", over the activation limit of {max_bytes} bytes (raise it with --max-activation-bytes)")


def make_feeds(model: ModelProto, shapes: dict[str, Shape], seed: int = DEFAULT_SEED,
               max_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES) -> dict[str, np.ndarray]:
    """Deterministic inputs for every real graph input (see the module docstring); refused before
    allocation when larger than ``max_bytes`` (:func:`feed_specs`)."""
    return feeds_from_specs(feed_specs(model, shapes, max_bytes), seed)


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
    so.log_severity_level = 4  # errors reach the user as one line; onnxruntime's own log stays off stderr
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


def _model_source(loaded: LoadedModel) -> "tuple[str | None, bytes | None]":
    """(path, None) for onnxruntime to open the checked file itself (external data stays in its
    folder), or (None, self-contained bytes) when the path cannot be passed to it (not UTF-8)."""
    path = str(loaded.path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return None, materialize(loaded).SerializeToString()
    return path, None


def runtime_profile(
    loaded: LoadedModel,
    shapes: dict[str, Shape],
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    seed: int = DEFAULT_SEED,
    time_limit_s: float | None = None,
    progress=None,
    max_activation_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES,
) -> RuntimeProfile:
    """Warm up, then time ``runs`` inferences in a child process (:mod:`eeki_label.profile.sandbox`).
    ``progress(done, total)`` is called after each run. ``time_limit_s`` bounds the whole profile
    (session, warm-up, runs); onnxruntime's working memory is capped at ``max_activation_bytes``."""
    import onnxruntime as ort

    if runs < 1:
        raise RuntimeProfileError("--runs must be at least 1")
    specs = feed_specs(loaded.proto, shapes, max_activation_bytes)
    path, model_bytes = _model_source(loaded)
    request = {"task": "profile", "model_path": path, "inputs": specs, "seed": seed, "runs": runs,
               "warmup": warmup, "threads": threads}
    done = run_child(request, model_bytes, time_limit_s=time_limit_s, max_activation_bytes=max_activation_bytes,
                     weight_bytes=loaded.file_bytes + loaded.external_bytes,
                     progress=(lambda n: progress(n, runs)) if progress else None)
    raw = done.value.get("latencies_ms")
    if not isinstance(raw, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw):
        raise RuntimeProfileError("the onnxruntime child process answered malformed timings")
    samples = [float(x) for x in raw]
    if len(samples) != runs:
        raise RuntimeProfileError(f"the onnxruntime child process returned {len(samples)} timings, not {runs}")
    ordered = sorted(samples)
    lo, hi = median_ci95_ranks(len(ordered))
    p90_index = min(len(ordered) - 1, max(0, math.ceil(0.9 * len(ordered)) - 1))
    reported = done.value.get("intra_op_threads")
    threads_used = threads or (reported if isinstance(reported, int) and reported > 0 else 0) or (os.cpu_count() or 1)
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


def trial_run(loaded: LoadedModel, shapes: dict[str, Shape], *, time_limit_s: "float | None",
              max_activation_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES, what: str = "a trial run") -> float:
    """Run the model once in the sandbox, under the time limit and the memory cap, before a stage
    that runs it in this process (where neither can be enforced); returns the seconds it took."""
    specs = feed_specs(loaded.proto, shapes, max_activation_bytes)
    path, model_bytes = _model_source(loaded)
    request = {"task": "profile", "model_path": path, "inputs": specs, "seed": DEFAULT_SEED, "runs": 1, "warmup": 0}
    return run_child(request, model_bytes, time_limit_s=time_limit_s, max_activation_bytes=max_activation_bytes,
                     weight_bytes=loaded.file_bytes + loaded.external_bytes, what=what).elapsed_s


def _probe(loaded: LoadedModel, shapes: dict[str, Shape], names: list[str], time_limit_s, max_activation_bytes,
           what: str) -> dict:
    """One run of the model in the child process with main-graph tensors ``names`` added as outputs;
    the child's answer (``shapes`` of every output, ``values`` of the one-element integer ones)."""
    specs = feed_specs(loaded.proto, shapes, max_activation_bytes)
    model = materialize(loaded)
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend([ValueInfoProto(name=n) for n in names if n not in existing])
    request = {"task": "probe", "inputs": specs, "seed": DEFAULT_SEED}
    weight_bytes = loaded.file_bytes + loaded.external_bytes
    data = None
    if weight_bytes < PROBE_INLINE_MAX_BYTES:
        try:
            data = model.SerializeToString()
        except Exception:  # protobuf's EncodeError: over the message limit after all
            data = None
    if data is not None:
        del model
        return run_child(request, data, time_limit_s=time_limit_s, max_activation_bytes=max_activation_bytes,
                         weight_bytes=len(data), what=what).value
    # Over protobuf's 2 GiB message limit (large language models): the probe model goes to a private
    # temporary folder with its weights as external data, and the child opens it by path.
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory(prefix="eeki_probe_") as tmp:
        path = os.path.join(tmp, "probe.onnx")
        try:
            onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location="probe.weights", size_threshold=1024)
        except (OSError, ValueError) as e:
            raise RuntimeProfileError(f"{what}: the model could not be written for the probe ({e})") from e
        del model
        return run_child({**request, "model_path": path}, None, time_limit_s=time_limit_s,
                         max_activation_bytes=max_activation_bytes, weight_bytes=weight_bytes, what=what).value


def probe_shapes(loaded: LoadedModel, shapes: dict[str, Shape], names: list[str], *,
                 time_limit_s: "float | None" = DEFAULT_PROBE_TIME_LIMIT_S,
                 max_activation_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES) -> dict[str, Shape]:
    """Concrete shapes of intermediate tensors of the main graph, by running the model once with
    those tensors added as outputs. Used only when static shape inference leaves them unknown.
    Runs in a child process under the same time limit and memory cap as the runtime profile."""
    if not names:
        return {}
    found = _probe(loaded, shapes, names, time_limit_s, max_activation_bytes,
                   "the shape probe (one run for shapes static inference cannot settle)").get("shapes", {})
    wanted = set(names)
    try:
        return {n: tuple(int(d) for d in dims) for n, dims in found.items() if n in wanted}
    except (AttributeError, TypeError, ValueError) as e:
        raise RuntimeProfileError("the onnxruntime child process answered malformed shapes") from e


def probe_values(loaded: LoadedModel, shapes: dict[str, Shape], names: list[str], *,
                 time_limit_s: "float | None" = DEFAULT_PROBE_TIME_LIMIT_S,
                 max_activation_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES) -> dict[str, int]:
    """Values of one-element integer tensors of the main graph computed at run time (Loop trip
    counts), from one run with the generated inputs, as :func:`probe_shapes`. Names whose value is
    not a one-element integer are left out."""
    if not names:
        return {}
    found = _probe(loaded, shapes, names, time_limit_s, max_activation_bytes,
                   "the trip-count probe (one run for Loop trip counts computed at run time)").get("values", {})
    wanted = set(names)
    try:
        return {n: int(v) for n, v in found.items() if n in wanted}
    except (AttributeError, TypeError, ValueError) as e:
        raise RuntimeProfileError("the onnxruntime child process answered malformed values") from e
