"""The child process that runs an untrusted model in onnxruntime (``python -m eeki_label.profile._ortchild``).

Started by :mod:`eeki_label.profile.sandbox`, never imported by the CLI process for running. A model
is code for onnxruntime: an operator may run for hours inside one kernel (the ``terminate`` run
option is looked at only between kernels), allocate without bound, or crash the process. Here that
costs only this child: the parent kills it at its deadline and turns a crash into a one-line error.

Protocol: stdin carries one JSON line (the request) followed by ``model_bytes`` bytes of a serialised
model when the request has no ``model_path``. stdout carries JSON lines only: ``{"progress": n}``
after each timed run, then exactly one ``{"ok": {...}}`` or ``{"error": {"kind": ..., "message": ...}}``.
JSON, not pickle, so that a child subverted by a hostile model cannot run code in the parent.

Imports only numpy, onnxruntime and (for input dtypes) ``onnx.helper``, or for shape inference
(task ``infer``) only onnx: it starts in well under a second.
"""

from __future__ import annotations

import json
import sys
import threading
import time

#: Request keys: task ("profile" | "probe"), model_path (str | None), model_bytes (int), inputs
#: ([[name, elem_type, shape], ...]), seed, runs, warmup, threads, time_limit_s (float | None),
#: arena_bytes (int | None: onnxruntime's CPU working memory cap), data_limit_bytes (int | None:
#: RLIMIT_DATA of this process, a backstop for memory taken outside the arena).


def feeds_from_specs(specs, seed: int, given: "str | None" = None):
    """Deterministic inputs from ``[(name, elem_type, shape[, hint]), ...]`` (hints: profile/inputs.py;
    without one: floats from a standard normal distribution, booleans true, every other type ones).
    ``given``: an ``.npz`` of checked arrays (``--inputs``) that replaces the generated values."""
    import numpy as np
    from onnx import helper

    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        name, elem, shape = spec[0], spec[1], tuple(spec[2])
        hint = spec[3] if len(spec) > 3 else None
        feeds[name] = generate_input(hint, shape, helper.tensor_dtype_to_np_dtype(elem), rng)
    if given:
        with np.load(given, allow_pickle=False) as z:
            for name in list(feeds):
                if name in z.files:
                    feeds[name] = z[name].astype(feeds[name].dtype)
    return feeds


def generate_input(hint, shape, dtype, rng):
    """One input array following ``hint`` (used in the sandboxed child and in this process alike)."""
    import numpy as np

    kind = (hint or {}).get("kind", "normal")
    dtype = np.dtype(dtype)
    if kind == "ids":
        return rng.integers(0, max(1, int(hint["high"])), size=shape).astype(dtype)
    if kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    if kind == "positions":
        if not shape:
            return np.zeros(shape, dtype=dtype)
        return np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype)
    if kind == "const":
        return np.full(shape, hint["value"], dtype=dtype)
    if kind == "audio":
        n = shape[-1]
        t = np.arange(n) / 16000.0
        sig = sum(0.05 * np.sin(2 * np.pi * f * t + p) for f, p in ((180.0, 0.0), (420.0, 1.0), (950.0, 2.0)))
        sig = sig + 0.01 * rng.standard_normal(n)
        return np.broadcast_to(sig, shape).astype(dtype)
    if kind == "ones" or not np.issubdtype(dtype, np.floating) and dtype != np.dtype(bool):
        return np.ones(shape, dtype=dtype) if dtype != np.dtype(bool) else np.ones(shape, dtype=bool)
    if dtype == np.dtype(bool):
        return np.ones(shape, dtype=bool)
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype)




def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _limit_data(limit: "int | None") -> None:
    if not limit:
        return
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, hard if hard != resource.RLIM_INFINITY else limit))
    except (ImportError, ValueError, OSError):  # no such limit on this platform: the arena cap still holds
        pass


def _classify(message: str) -> str:
    low = message.lower()
    if "terminate" in low:
        return "time"
    if "available memory of" in low or "bad_alloc" in low or "bad allocation" in low or "failed to allocate" in low:
        return "memory"
    if "not_implemented" in low or "could not find an implementation" in low:
        return "unsupported"
    return "runtime"


def _session(ort, request, source):
    so = ort.SessionOptions()
    so.log_severity_level = 4  # stderr is the parent's one-line error; onnxruntime's own logs stay out of it
    if request.get("threads"):
        so.intra_op_num_threads = int(request["threads"])
    so.inter_op_num_threads = 1
    arena = request.get("arena_bytes")
    if arena:
        mem = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(mem, ort.OrtArenaCfg({"max_mem": int(arena), "arena_extend_strategy": 1}))
        so.add_session_config_entry("session.use_env_allocators", "1")
    return ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"])


def inline_and_infer(model):
    """The model with its local functions inlined (profile what runs: onnxruntime replaces every
    call by the function's body) and onnx shape inference (with data propagation) applied."""
    import onnx

    if len(model.functions):
        import onnx.inliner

        model = onnx.inliner.inline_local_functions(model)
    return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)


def _infer(request, model_bytes: bytes) -> int:
    """onnx shape inference (with data propagation) of a weightless skeleton model whose model-local
    functions are inlined first, as onnxruntime does (the loader's node limit bounds the expansion).
    Its C++ code has allocated without bound on absurd declared shapes (tens of GB for a 1-D value
    declared 2^31 long) and has crashed on malformed models, so it runs here. Answers the inferred
    model, base64."""
    import base64

    try:
        import onnx

        model = onnx.ModelProto()
        model.ParseFromString(model_bytes)
        del model_bytes
        inferred = inline_and_infer(model)
        data = inferred.SerializeToString()
    except MemoryError as e:
        _emit({"error": {"kind": "memory", "stage": "infer", "message": f"out of memory ({e})"}})
        return 1
    except Exception as e:  # InferenceError, RuntimeError...: contradictions in the model
        message = " ".join(str(e).split())
        kind = "memory" if "bad_alloc" in message else "infer"
        _emit({"error": {"kind": kind, "stage": "infer", "message": message[:600]}})
        return 1
    _emit({"ok": {"model_b64": base64.b64encode(data).decode("ascii")}})
    return 0


def _decode(np, session, feeds, names, request, run_options) -> dict:
    """Task ``decode`` (cached decoders, profile/decoder.py): one prefill with ``inputs``, then one step per
    entry of ``steps`` (input specs at that step's shapes) with every ``past`` input fed the ``present`` output
    of the run before (``cache``: [[past, present], ...]); position inputs count on from the past length.
    The prefill runs twice (the first warms up). Answers the latency of each timed run (milliseconds) and the cache length seen at each step."""
    cache = [(str(a), str(b)) for a, b in request["cache"]]
    session.run(None, feeds, run_options)  # warm-up: the timed prefill is the second
    t0 = time.perf_counter()
    out = dict(zip(names, session.run(None, feeds, run_options)))
    prefill_ms = (time.perf_counter() - t0) * 1e3
    step_ms, lengths = [], []
    for i, specs in enumerate(request["steps"]):
        step = feeds_from_specs([s for s in specs if s[0] not in {p for p, _ in cache}], int(request.get("seed", 0)) + i)
        for past, present in cache:
            step[past] = out[present]
        past_len = int(np.shape(out[cache[0][1]])[int(request["cache_axis"])])
        for name, value in step.items():
            if "position" in name.lower() and np.issubdtype(value.dtype, np.integer):
                step[name] = (np.arange(value.shape[-1]) + past_len).astype(value.dtype).reshape(value.shape)
        t0 = time.perf_counter()
        out = dict(zip(names, session.run(None, step, run_options)))
        step_ms.append((time.perf_counter() - t0) * 1e3)
        lengths.append(past_len)
        _emit({"progress": i + 1})
    return {"prefill_ms": prefill_ms, "step_ms": step_ms, "past_lengths": lengths,
            "final_cache_length": int(np.shape(out[cache[0][1]])[int(request["cache_axis"])])}


def main() -> int:
    header = sys.stdin.buffer.readline()
    request = json.loads(header)
    model_bytes = None
    if request.get("model_path") is None:
        model_bytes = sys.stdin.buffer.read(int(request["model_bytes"]))
    _limit_data(request.get("data_limit_bytes"))
    if request["task"] == "infer":
        return _infer(request, model_bytes)
    stage = "load"
    try:
        import numpy as np
        import onnxruntime as ort

        run_options = ort.RunOptions()
        run_options.log_severity_level = 4
        limit = request.get("time_limit_s")
        if limit:
            timer = threading.Timer(float(limit), lambda: setattr(run_options, "terminate", True))
            timer.daemon = True
            timer.start()
        session = _session(ort, request, request.get("model_path") or model_bytes)
        del model_bytes
        stage = "run"
        feeds = feeds_from_specs(request["inputs"], int(request.get("seed", 0)), request.get("given_inputs"))
        names = [o.name for o in session.get_outputs()]
        if request["task"] == "probe":
            values = session.run(None, feeds, run_options)
            from onnx import helper

            def elem(v):
                try:
                    return int(helper.np_dtype_to_tensor_dtype(v.dtype))
                except (KeyError, TypeError, ValueError):
                    return 0

            _emit({"ok": {"shapes": {n: [int(d) for d in np.shape(v)] for n, v in zip(names, values)},
                          "dtypes": {n: elem(v) for n, v in zip(names, values) if isinstance(v, np.ndarray)},
                          "values": {n: int(v.reshape(-1)[0]) for n, v in zip(names, values)
                                     if isinstance(v, np.ndarray) and v.size == 1
                                     and (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_)}}})
            return 0
        if request["task"] == "decode":
            _emit({"ok": _decode(np, session, feeds, names, request, run_options)})
            return 0
        for _ in range(int(request.get("warmup", 0))):
            session.run(None, feeds, run_options)
        samples = []
        for i in range(int(request["runs"])):
            t0 = time.perf_counter()
            session.run(None, feeds, run_options)
            samples.append((time.perf_counter() - t0) * 1e3)
            _emit({"progress": i + 1})
        threads = int(session.get_session_options().intra_op_num_threads)
        _emit({"ok": {"latencies_ms": samples, "intra_op_threads": threads, "onnxruntime_version": ort.__version__}})
        return 0
    except MemoryError as e:
        _emit({"error": {"kind": "memory", "stage": stage, "message": f"out of memory ({e})"}})
    except Exception as e:
        message = " ".join(str(e).split())
        _emit({"error": {"kind": _classify(message), "stage": stage, "message": message[:600]}})
    return 1


if __name__ == "__main__":
    sys.exit(main())
