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
               max_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES) -> list[tuple]:
    """``(name, elem_type, shape, hint)`` of every real graph input (hint: profile/inputs.py); raises :class:`ModelTooLargeError`
    before anything is allocated when one input, or all together, exceed ``max_bytes``."""
    from eeki_label.profile.inputs import fill_hints

    hints = fill_hints(model, shapes)
    specs = [(vi.name, vi.type.tensor_type.elem_type, tuple(shapes[vi.name]), hints.get(vi.name))
             for vi in graph_inputs(model)]
    check_input_bytes(specs, max_bytes)
    return specs


def check_input_bytes(specs, max_bytes: "int | None") -> None:
    if not max_bytes:
        return
    total = 0
    for name, elem, shape, *_ in specs:
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
    given_inputs: "str | None" = None,
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
               "warmup": warmup, "threads": threads, "given_inputs": given_inputs}
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
              max_activation_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES, what: str = "a trial run",
              given_inputs: "str | None" = None) -> float:
    """Run the model once in the sandbox, under the time limit and the memory cap, before a stage
    that runs it in this process (where neither can be enforced); returns the seconds it took."""
    specs = feed_specs(loaded.proto, shapes, max_activation_bytes)
    path, model_bytes = _model_source(loaded)
    request = {"task": "profile", "model_path": path, "inputs": specs, "seed": DEFAULT_SEED, "runs": 1, "warmup": 0,
               "given_inputs": given_inputs}
    return run_child(request, model_bytes, time_limit_s=time_limit_s, max_activation_bytes=max_activation_bytes,
                     weight_bytes=loaded.file_bytes + loaded.external_bytes, what=what).elapsed_s


def _probe(loaded: LoadedModel, shapes: dict[str, Shape], names: list[str], time_limit_s, max_activation_bytes,
           what: str, inline: "dict[str, str] | None" = None, given_inputs: "str | None" = None) -> dict:
    """One run of the model in the child process with main-graph tensors ``names`` added as outputs;
    the child's answer (``shapes`` of every output, ``values`` of the one-element integer ones)."""
    specs = feed_specs(loaded.proto, shapes, max_activation_bytes)
    model = materialize(loaded)
    if inline:
        inline_branches(model, inline)
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend([ValueInfoProto(name=n) for n in names if n not in existing])
    request = {"task": "probe", "inputs": specs, "seed": DEFAULT_SEED, "given_inputs": given_inputs}
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


class ProbedShapes(dict):
    """``{name: shape}`` of a shape probe; ``dtypes`` holds ``{name: onnx elem_type}`` of the same values."""

    dtypes: dict
    values: dict
    """``{name: int}`` of the asked values that are one-element integers or booleans (1/0)."""

    def __init__(self, shapes, dtypes=None, values=None):
        super().__init__(shapes)
        self.dtypes = dict(dtypes or {})
        self.values = dict(values or {})


def probe_shapes(loaded: LoadedModel, shapes: dict[str, Shape], names: list[str], *,
                 time_limit_s: "float | None" = DEFAULT_PROBE_TIME_LIMIT_S,
                 max_activation_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES,
                 inline: "dict[str, str] | None" = None, given_inputs: "str | None" = None) -> ProbedShapes:
    """Concrete shapes (and element types, ``.dtypes``) of intermediate tensors of the main graph, by
    running the model once with those tensors added as outputs. Used only when static shape inference
    leaves them unknown. ``inline``: ``{first output of a main-graph If node: "then_branch" | "else_branch"}``,
    the branch the representative inputs take, put in place of the If for this run so that values
    inside it can be asked for (:func:`inline_branches`). Runs in a child process under the same time
    limit and memory cap as the runtime profile."""
    if not names:
        return ProbedShapes({})
    done = _probe(loaded, shapes, names, time_limit_s, max_activation_bytes,
                  "the shape probe (one run for shapes static inference cannot settle)", inline,
                  given_inputs)
    found, types, values = done.get("shapes", {}), done.get("dtypes", {}), done.get("values", {})
    wanted = set(names)
    try:
        return ProbedShapes({n: tuple(int(d) for d in dims) for n, dims in found.items() if n in wanted},
                            {n: int(t) for n, t in (types if isinstance(types, dict) else {}).items()
                             if n in wanted and int(t) > 0},
                            {n: int(v) for n, v in (values if isinstance(values, dict) else {}).items() if n in wanted})
    except (AttributeError, TypeError, ValueError) as e:
        raise RuntimeProfileError("the onnxruntime child process answered malformed shapes") from e


def _copy(node):
    from onnx import NodeProto

    copy = NodeProto()
    copy.CopyFrom(node)
    return copy


def inline_branches(model: ModelProto, inline: "dict[str, str]") -> None:
    """Replace, in place, each main-graph If node ``inline`` names by the nodes of its chosen branch
    (their outputs reach the If's outputs through Identity nodes; the branch's stored tensors join
    the main graph's). Only for a probe run whose inputs take exactly those branches."""
    from onnx import AttributeProto, helper

    graph = model.graph
    done: set[str] = set()
    while True:  # an If inside an inlined branch becomes a main-graph node: it is inlined in the next pass
        nodes = [_copy(n) for n in graph.node]
        out = []
        changed = False
        for node in nodes:
            key = node.output[0] if node.output else None
            branch = inline.get(key) if key not in done else None
            body = next((a.g for a in node.attribute if a.name == branch and a.type == AttributeProto.GRAPH), None) \
                if node.op_type == "If" and branch else None
            if body is None or len(body.output) != len(node.output):
                out.append(node)
                continue
            done.add(key)
            changed = True
            graph.initializer.extend(body.initializer)
            out.extend(_copy(n) for n in body.node)
            for inner, outer in zip(body.output, node.output):
                if outer:
                    out.append(helper.make_node("Identity", [inner.name], [outer]))
        del graph.node[:]
        graph.node.extend(out)
        if not changed:
            return


def probe_values(loaded: LoadedModel, shapes: dict[str, Shape], names: list[str], *,
                 time_limit_s: "float | None" = DEFAULT_PROBE_TIME_LIMIT_S,
                 max_activation_bytes: "int | None" = DEFAULT_MAX_ACTIVATION_BYTES, given_inputs: "str | None" = None) -> dict[str, int]:
    """Values of one-element integer or boolean tensors of the main graph computed at run time (Loop
    trip counts, If conditions: 1 true, 0 false), from one run with the generated inputs, as
    :func:`probe_shapes`. Names whose value is not such a one-element tensor are left out."""
    if not names:
        return {}
    found = _probe(loaded, shapes, names, time_limit_s, max_activation_bytes,
                   "the value probe (one run for Loop trip counts and If conditions computed at run time)",
                   given_inputs=given_inputs).get("values", {})
    wanted = set(names)
    try:
        return {n: int(v) for n, v in found.items() if n in wanted}
    except (AttributeError, TypeError, ValueError) as e:
        raise RuntimeProfileError("the onnxruntime child process answered malformed values") from e
