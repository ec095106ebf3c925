"""Decoders with a KV cache: prefill and decode, per query and per output token.

A model is a *cached decoder* when it has inputs named like the cache of optimum and
onnxruntime-genai exports (``past_key_values.<i>.key``, ``past_key.<i>``, ``past.<i>``...) and outputs
named ``present*``. One *query* is (docs/attention.md, "Decoders"):

* **prefill**: one run over the ``N`` prompt tokens with an empty cache (past length 0); its last
  logits give the first output token;
* **decode**: ``M - 1`` runs of one new token each at past lengths ``N, N+1, ..., N+M-2`` (the
  cache fed back), giving output tokens ``2..M``.

The static profile runs at the prefill shapes and at the first and last decode step. MACs and
activation elements of a step are affine in the past length (projections are constant, attention
and the cache copy grow linearly), so the mean over the decode steps is the mean of the first and
last step, exactly; ``tests/unit/test_decoder.py`` checks this against a middle step.

The cache a decode step *reads* (the ``past*`` inputs: graph inputs, not produced by any node, so
not in ``activation_elements``) is added to its memory traffic: ``past length x kv elements per
token``. The cache at full context is added to the working set of the device fit check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from onnx import ModelProto, ValueInfoProto

from eeki_label.errors import ShapeError, UsageError
from eeki_label.model_io import numel
from eeki_label.profile.shapes import Shape, graph_inputs

_PAST = re.compile(r"^past(_key_values|_key|_value|_values)?[._]", re.IGNORECASE)
_PRESENT = re.compile(r"^present", re.IGNORECASE)
_BATCH = re.compile(r"batch", re.IGNORECASE)
_TOTAL = re.compile(r"total|all|past_sequence_length\s*\+|kv_len|key_len", re.IGNORECASE)


@dataclass(frozen=True)
class DecoderSignature:
    """The KV-cache inputs and outputs that make a model a cached decoder."""

    past_inputs: tuple[str, ...]
    present_outputs: tuple[str, ...]


@dataclass(frozen=True)
class Lengths:
    """Token counts of one query."""

    prompt_tokens: int
    output_tokens: int
    preset: "str | None" = None
    """The rule set's preset these came from (``default``, ``short``, ``long``), None when given."""


def detect(model: ModelProto) -> "DecoderSignature | None":
    """The KV-cache signature of ``model``, or None when it has none (past inputs AND present outputs)."""
    past = tuple(vi.name for vi in graph_inputs(model) if _PAST.match(vi.name))
    present = tuple(o.name for o in model.graph.output if _PRESENT.match(o.name))
    return DecoderSignature(past, present) if past and present else None


def lengths_from_rules(raw_rules: dict, preset: "str | None", prompt_tokens: "int | None",
                       output_tokens: "int | None") -> Lengths:
    """The query lengths: given ones win, then the preset's, then the rule set's ``decoder`` defaults."""
    section = raw_rules.get("decoder")
    if not isinstance(section, dict):
        raise UsageError("the rule set has no 'decoder' section (rule sets from 2.0.0 on state the query lengths)")
    presets = section.get("presets", {})
    name = preset or section.get("default_preset", "default")
    if name not in presets:
        raise UsageError(f"--lengths {name!r}: the rule set's presets are {', '.join(sorted(presets))}")
    chosen = presets[name]
    n = prompt_tokens if prompt_tokens is not None else int(chosen["prompt_tokens"])
    m = output_tokens if output_tokens is not None else int(chosen["output_tokens"])
    if n < 1 or m < 1:
        raise UsageError("--prompt-tokens and --output-tokens must be at least 1")
    given = prompt_tokens is not None and output_tokens is not None
    return Lengths(n, m, None if given else name)


def _dims(vi: ValueInfoProto) -> list:
    tt = vi.type.tensor_type
    out: list = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or None)
    return out


def step_shapes(model: ModelProto, sig: DecoderSignature, past: int, new: int,
                overrides: "dict[str, Shape] | None" = None) -> dict[str, Shape]:
    """Input shapes of one run with ``past`` cached and ``new`` new tokens, batch 1.

    Cache inputs: the leading symbolic dimension (or one named like ``batch``) is the batch (1), the
    other symbolic one the past length. Other inputs: batch 1; a symbolic dimension named like
    ``total``/``all`` or of an ``attention_mask`` input is past + new, any other the new tokens.
    ``overrides`` (``--input-shape``) win for the inputs they name.
    """
    overrides = overrides or {}
    shapes: dict[str, Shape] = {}
    past_names = set(sig.past_inputs)
    for vi in graph_inputs(model):
        if vi.name in overrides:
            shapes[vi.name] = tuple(overrides[vi.name])
            continue
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            raise ShapeError(f"input {vi.name!r} declares no shape; give one with --input-shape {vi.name}=...")
        dims = _dims(vi)
        out: list[int] = []
        seen_past = False
        for i, d in enumerate(dims):
            if isinstance(d, int):
                out.append(d)
            elif (i == 0 or (isinstance(d, str) and _BATCH.search(d))) and not (vi.name in past_names and seen_past):
                out.append(1)
            elif vi.name in past_names:
                if seen_past:
                    raise ShapeError(f"cache input {vi.name!r} has more than one length dimension; give its shape "
                                     f"with --input-shape {vi.name}=...")
                out.append(past)
                seen_past = True
            elif "mask" in vi.name.lower() or (isinstance(d, str) and _TOTAL.search(d)):
                out.append(past + new)
            else:
                out.append(new)
        if vi.name in past_names and not seen_past:
            raise ShapeError(f"cache input {vi.name!r} has no symbolic length dimension; the decode steps cannot "
                             "grow it")
        shapes[vi.name] = tuple(out)
    return shapes


def kv_elements_per_token(shapes_at_1: dict[str, Shape], sig: DecoderSignature) -> int:
    """Cache elements one token adds, summed over every layer's keys and values (shapes at past 1)."""
    return sum(numel(shapes_at_1[n]) for n in sig.past_inputs)


@dataclass(frozen=True)
class DecoderProfile:
    """Static profiles of one query's phases and the per-query totals (MACs, elements)."""

    lengths: Lengths
    signature: DecoderSignature
    prefill: object
    """StaticProfile at the prompt (past 0, ``N`` new tokens)."""
    decode_first: "object | None"
    """StaticProfile of the first decode step (past ``N``), None when ``M == 1``."""
    decode_last: "object | None"
    """StaticProfile of the last decode step (past ``N + M - 2``)."""
    kv_cache_elements_per_token: int
    kv_cache_bytes_per_token: int
    """At the cache inputs' declared element type."""

    @property
    def decode_steps(self) -> int:
        return self.lengths.output_tokens - 1

    def _mean(self, attr: str) -> float:
        if self.decode_first is None:
            return 0.0
        return (getattr(self.decode_first, attr) + getattr(self.decode_last, attr)) / 2

    @property
    def decode_macs_per_token(self) -> float:
        """Mean MACs of one decode step (exact: MACs are affine in the past length)."""
        return self._mean("macs")

    @property
    def decode_activation_elements_per_token(self) -> float:
        """Mean elements a decode step writes plus the cache elements it reads (mean past length)."""
        if self.decode_first is None:
            return 0.0
        mean_past = self.lengths.prompt_tokens + (self.decode_steps - 1) / 2
        return self._mean("activation_elements") + mean_past * self.kv_cache_elements_per_token

    @property
    def kv_cache_elements_full(self) -> int:
        """The cache at full context (``N + M - 1`` positions: the last step's past plus its new token)."""
        return (self.lengths.prompt_tokens + self.lengths.output_tokens - 1) * self.kv_cache_elements_per_token

    @property
    def query_macs(self) -> int:
        """MACs of one query: prefill plus every decode step."""
        return self.prefill.macs + round(self.decode_steps * self.decode_macs_per_token)

    @property
    def query_activation_elements(self) -> int:
        return self.prefill.activation_elements + round(self.decode_steps * self.decode_activation_elements_per_token)

    def _sum(self, attr: str) -> int:
        return getattr(self.prefill, attr) + round(self.decode_steps * self._mean(attr))

    def query_static(self):
        """The prefill's StaticProfile with its per-inference figures replaced by per-query ones (what the label's
        ``model`` section reports: MACs, activations, attention, MACs by operator, summed over the query)."""
        by_op = dict(self.prefill.macs_by_op)
        if self.decode_first is not None:
            for op in set(self.decode_first.macs_by_op) | set(self.decode_last.macs_by_op):
                mean = (self.decode_first.macs_by_op.get(op, 0) + self.decode_last.macs_by_op.get(op, 0)) / 2
                by_op[op] = by_op.get(op, 0) + round(self.decode_steps * mean)
        phases = [p for p in (self.prefill, self.decode_first, self.decode_last) if p is not None]
        return replace(
            self.prefill,
            macs=self.query_macs,
            macs_depthwise=self._sum("macs_depthwise"),
            macs_by_op=dict(sorted(by_op.items())),
            activation_elements=self.query_activation_elements,
            activation_bytes=self._sum("activation_bytes"),
            activation_peak_bytes=max(p.activation_peak_bytes for p in phases),
            activation_peak_elements=max(p.activation_peak_elements for p in phases),
            attention_macs=self._sum("attention_macs"),
            attention_macs_causal=self._sum("attention_macs_causal"),
            unresolved_nodes=tuple(dict.fromkeys(n for p in phases for n in p.unresolved_nodes)),
        )


def profile_decoder(loaded, sig: DecoderSignature, lengths: Lengths, profile_at, overrides=None) -> DecoderProfile:
    """Static profiles of the phases. ``profile_at(shapes) -> StaticProfile`` runs the static stage at the given
    input shapes (the pipeline passes one with its probes)."""
    from eeki_label.model_io import dtype_bytes

    model = loaded.proto
    n, m = lengths.prompt_tokens, lengths.output_tokens
    prefill = profile_at(step_shapes(model, sig, 0, n, overrides))
    first = last = None
    if m > 1:
        first = profile_at(step_shapes(model, sig, n, 1, overrides))
        last = first if m == 2 else profile_at(step_shapes(model, sig, n + m - 2, 1, overrides))
    at1 = step_shapes(model, sig, 1, 1, overrides)
    elem_types = {vi.name: vi.type.tensor_type.elem_type for vi in graph_inputs(model)}
    per_token = kv_elements_per_token(at1, sig)
    per_token_bytes = sum(numel(at1[nm]) * dtype_bytes(elem_types[nm]) for nm in sig.past_inputs)
    return DecoderProfile(lengths, sig, prefill, first, last, per_token, per_token_bytes)


@dataclass(frozen=True)
class QueryEnergy:
    """Energy of one query on a device class (each phase from energy/estimate.py's model, unchanged)."""

    prefill: object
    """EnergyFigure of the prefill run."""
    decode_step: "object | None"
    """EnergyFigure of the mean decode step (one output token at the mean context)."""
    query: object
    """EnergyFigure of the whole query: prefill plus ``M - 1`` decode steps (energies, MACs, bytes, times summed)."""


def query_energy(dp: DecoderProfile, dc, estimate) -> QueryEnergy:
    """Per-phase estimates with ``estimate(work, dc, activation_peak_elements)`` (energy/estimate.py's
    ``estimate_inference``). The decode step carries the cache it reads in its traffic; the fit check
    of every phase counts the cache at full context in the working set."""
    if dp.decode_first is None:
        return phase_energy(dp.prefill.parameters, dp.prefill.macs, dp.prefill.activation_elements,
                            dp.prefill.activation_peak_elements, None, dp.kv_cache_elements_full, dc, estimate)
    return phase_energy(
        dp.prefill.parameters, dp.prefill.macs, dp.prefill.activation_elements, dp.prefill.activation_peak_elements,
        (dp.decode_steps, dp.decode_macs_per_token, dp.decode_activation_elements_per_token,
         max(dp.decode_first.activation_peak_elements, dp.decode_last.activation_peak_elements)),
        dp.kv_cache_elements_full, dc, estimate)


def phase_energy(parameters: int, prefill_macs: int, prefill_activation_elements: int, prefill_peak_elements: int,
                 decode: "tuple[int, float, float, int] | None", full_cache_elements: int, dc, estimate) -> QueryEnergy:
    """One query from its phases: the prefill, and ``decode = (steps, MACs per token, activation elements per
    token, peak elements of a step)``; the candidate's (:func:`query_energy`) and a catalogue reference's
    (its ``profile.prefill`` / ``profile.decode``) energy are computed by this one function."""
    from eeki_label.catalogue import WorkProfile

    params = parameters
    full_cache = full_cache_elements
    pre = estimate(WorkProfile(prefill_macs, prefill_activation_elements, params), dc, prefill_peak_elements + full_cache)
    if decode is None:
        return QueryEnergy(pre, None, pre)
    k, macs_per_token, act_per_token, step_peak = decode
    step = estimate(WorkProfile(round(macs_per_token), round(act_per_token), params), dc, step_peak + full_cache)
    if pre.energy_j is None or step.energy_j is None:
        bad = pre if pre.energy_j is None else step
        return QueryEnergy(pre, step, bad)
    total = replace(pre, energy_j=pre.energy_j + k * step.energy_j,
                    effective_macs=pre.effective_macs + k * step.effective_macs,
                    bytes_moved=pre.bytes_moved + k * step.bytes_moved,
                    time_s=pre.time_s + k * step.time_s)
    return QueryEnergy(pre, step, total)


@dataclass(frozen=True)
class DecodeRun:
    """A real prefill and decode steps in onnxruntime, the cache fed back (milliseconds, this host)."""

    prefill_ms: float
    step_ms: tuple[float, ...]
    past_lengths: tuple[int, ...]
    """Past length each decode step ran with (prompt tokens, then one more per step)."""
    final_cache_length: int

    @property
    def decode_ms_median(self) -> float:
        import statistics

        return statistics.median(self.step_ms)


#: Decode steps the runtime profile runs after the prefill (a check that the cache feeds back and a
#: latency sample; the energy figures come from the static profile of every step).
RUNTIME_DECODE_STEPS = 4


def runtime_decode(loaded, sig: DecoderSignature, lengths: Lengths, overrides=None, *, steps: int = RUNTIME_DECODE_STEPS,
                   time_limit_s=None, max_activation_bytes=None, seed: int = 0) -> DecodeRun:
    """Run the prefill and ``min(steps, output_tokens - 1)`` decode steps in the sandboxed child
    (profile/_ortchild.py, task ``decode``), feeding each ``present`` output back as the matching
    ``past`` input. Raises the runtime profile's errors (time limit, memory cap, onnxruntime failures)."""
    from eeki_label.errors import RuntimeProfileError
    from eeki_label.profile.runtime import _model_source, feed_specs
    from eeki_label.profile.sandbox import run_child

    model = loaded.proto
    n = lengths.prompt_tokens
    k = max(0, min(steps, lengths.output_tokens - 1))
    pairs = _cache_pairs(sig)
    specs = feed_specs(model, step_shapes(model, sig, 0, n, overrides), max_activation_bytes)
    step_specs = [feed_specs(model, step_shapes(model, sig, n + t, 1, overrides), max_activation_bytes)
                  for t in range(k)]
    past_vi = next(vi for vi in graph_inputs(model) if vi.name == pairs[0][0])
    # the cache's length axis: the dimension that differs between past lengths 0 and 1
    axis = next(i for i, (a, b) in enumerate(zip(step_shapes(model, sig, 0, 1, overrides)[past_vi.name],
                                                    step_shapes(model, sig, 1, 1, overrides)[past_vi.name])) if a != b)
    path, model_bytes = _model_source(loaded)
    request = {"task": "decode", "model_path": path, "inputs": specs, "steps": step_specs, "cache": pairs,
               "cache_axis": axis, "seed": seed}
    done = run_child(request, model_bytes, time_limit_s=time_limit_s, max_activation_bytes=max_activation_bytes,
                     weight_bytes=loaded.file_bytes + loaded.external_bytes, what="the decode run (prefill and decode "
                     "steps, the cache fed back)")
    v = done.value
    try:
        run = DecodeRun(float(v["prefill_ms"]), tuple(float(x) for x in v["step_ms"]),
                        tuple(int(x) for x in v["past_lengths"]), int(v["final_cache_length"]))
    except (KeyError, TypeError, ValueError) as e:
        raise RuntimeProfileError("the onnxruntime child process answered a malformed decode run") from e
    if len(run.step_ms) != k or run.final_cache_length != n + k:
        raise RuntimeProfileError(f"the decode run did not grow the cache as fed back: {n + k} positions expected "
                                  f"after {k} steps, the model's present outputs hold {run.final_cache_length}")
    return run


def _cache_pairs(sig: DecoderSignature) -> list[tuple[str, str]]:
    """(past input, present output) pairs: by name (``past_key_values.0.key`` -> ``present.0.key``,
    ``past_key_0`` -> ``present_key_0``), else in order."""
    presents = set(sig.present_outputs)
    pairs = []
    for i, past in enumerate(sig.past_inputs):
        candidates = [re.sub(r"^past_key_values", "present", past), re.sub(r"^past", "present", past)]
        match = next((c for c in candidates if c in presents), None)
        if match is None:
            if len(sig.past_inputs) != len(sig.present_outputs):
                raise ShapeError(f"cache input {past!r} has no matching present output")
            match = sig.present_outputs[i]
        pairs.append((past, match))
    return pairs
