"""Tasks: what a model does, its unit of work and evaluation input, and detection from I/O signatures.

Everything here is data from the reference catalogue (``reference_models/catalogue-<version>.json``,
``tasks`` and ``known_tasks``); no task has a branch of its own in code. A task is

* **declared** (``--task ID``), or
* **detected** from the model's signature: input and output names, ranks, fixed dimensions, dtypes, the
  producer and metadata properties. A catalogue task lists the signatures that identify it; each carries
  the evidence sentence written into the label (``task.detected_from``). ``known_tasks`` are tasks the tool
  recognises but has no references for (e.g. voice activity detection): they are named in the reason of
  a null class instead of being graded against another task.

Detection is conservative: a signature only matches when every constraint holds on the *declared*
graph (a symbolic dimension never satisfies a fixed size), and when signatures of two different tasks
match, nothing is detected (the reason names both).

The **evaluation input** fixes the size of one unit of work (an image at 224x224, a sequence of 128
tokens, 10 s of audio): dynamic dimensions take it, and a model assessed at another size is graded at the
task's input when its dimensions allow it, otherwise not graded (``shape_rule``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from onnx import ModelProto, ValueInfoProto

from eeki_label.errors import CatalogueError, UsageError

#: A task id: lower-case words joined by hyphens (a declared id outside the catalogue is legal: the label
#: is then not graded and says so).
TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

_DTYPES = {
    1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "float16", 11: "double", 12: "uint32", 13: "uint64", 16: "bfloat16",
}


@dataclass(frozen=True)
class TensorPattern:
    """Constraints on one graph input or output (all optional)."""

    name: "re.Pattern[str] | None" = None
    dtypes: tuple[str, ...] = ()
    rank: int | None = None
    dims: tuple[tuple[int, tuple[int, ...]], ...] = ()
    """(axis, allowed fixed sizes); a symbolic dimension matches no fixed size."""

    def matches(self, vi: ValueInfoProto) -> bool:
        if self.name is not None and not self.name.search(vi.name):
            return False
        if not vi.type.HasField("tensor_type"):
            return False
        tt = vi.type.tensor_type
        if self.dtypes and _DTYPES.get(tt.elem_type, f"type-{tt.elem_type}") not in self.dtypes:
            return False
        dims = list(tt.shape.dim) if tt.HasField("shape") else None
        if self.rank is not None and (dims is None or len(dims) != self.rank):
            return False
        for axis, allowed in self.dims:
            if dims is None or axis >= len(dims):
                return False
            d = dims[axis]
            if not (d.HasField("dim_value") and d.dim_value in allowed):
                return False
        return True


@dataclass(frozen=True)
class Signature:
    evidence: str
    inputs: tuple[TensorPattern, ...] = ()
    outputs: tuple[TensorPattern, ...] = ()
    max_inputs: int | None = None
    max_outputs: int | None = None
    producer: "re.Pattern[str] | None" = None
    metadata: tuple[tuple[str, "re.Pattern[str]"], ...] = ()

    def matches(self, model: ModelProto, inputs: list[ValueInfoProto]) -> bool:
        outputs = list(model.graph.output)
        if self.max_inputs is not None and len(inputs) > self.max_inputs:
            return False
        if self.max_outputs is not None and len(outputs) > self.max_outputs:
            return False
        if self.producer is not None and not self.producer.search(model.producer_name or ""):
            return False
        props = {p.key: p.value for p in model.metadata_props}
        if any(k not in props or not rx.search(props[k]) for k, rx in self.metadata):
            return False
        return _assign(self.inputs, inputs) and _assign(self.outputs, outputs)


def _assign(patterns: tuple[TensorPattern, ...], values: list[ValueInfoProto]) -> bool:
    """True when every pattern matches a distinct value (small sets: plain backtracking)."""
    def go(i: int, used: frozenset[int]) -> bool:
        if i == len(patterns):
            return True
        return any(go(i + 1, used | {j}) for j, v in enumerate(values) if j not in used and patterns[i].matches(v))
    return go(0, frozenset())


@dataclass(frozen=True)
class EvaluationInput:
    """The size of one unit of work for the model inputs that ``applies_to`` matches."""

    applies_to: TensorPattern
    dims: tuple[tuple[int, int], ...]
    """(axis, size) of the task's evaluation input."""
    rule: str
    """``exact``: the model must be graded at exactly these sizes; ``at-least``: at these sizes or larger."""


@dataclass(frozen=True)
class TaskDef:
    id: str
    name: str
    dataset: str
    metric: str
    higher_is_better: bool
    metric_range: tuple[float, float | None] = (0.0, None)
    """Legal values of a declared quality (``None``: no upper limit, e.g. a WER may exceed 100 %)."""
    unit: str = "inference"
    unit_description: str = "one inference at the assessed input shapes"
    evaluation: tuple[EvaluationInput, ...] = ()
    signatures: tuple[Signature, ...] = ()
    catalogued: bool = True
    why_not_catalogued: str | None = None
    status: str = "graded"
    """``graded``, or ``pending`` (listed, no references yet: labels are not graded)."""

    def check_quality(self, value: float, option: str = "--accuracy") -> None:
        lo, hi = self.metric_range
        if value != value or value < lo or (hi is not None and value > hi):
            upper = f"{hi:g}" if hi is not None else "no upper limit"
            raise UsageError(f"{option} {value:g} is outside the range of {self.metric} for task {self.id} "
                             f"({lo:g} .. {upper})")


@dataclass(frozen=True)
class Detection:
    task_id: str | None
    evidence: str | None
    catalogued: bool
    reason: str | None = None
    """Why nothing was detected, or why a detected task cannot be graded."""


# --- parsing the catalogue's task entries -------------------------------------------------------------

def _pattern(d: dict) -> TensorPattern:
    unknown = set(d) - {"name", "dtype", "rank", "dims"}
    if unknown:
        raise CatalogueError(f"tensor pattern has unknown keys {sorted(unknown)}")
    dims = tuple(sorted((int(k), tuple(int(x) for x in (v if isinstance(v, list) else [v])))
                        for k, v in (d.get("dims") or {}).items()))
    dtypes = d.get("dtype") or []
    return TensorPattern(
        name=re.compile(d["name"]) if d.get("name") else None,
        dtypes=tuple(dtypes if isinstance(dtypes, list) else [dtypes]), rank=d.get("rank"), dims=dims)


def _signature(d: dict) -> Signature:
    return Signature(
        evidence=str(d["evidence"]),
        inputs=tuple(_pattern(p) for p in d.get("inputs", [])),
        outputs=tuple(_pattern(p) for p in d.get("outputs", [])),
        max_inputs=d.get("max_inputs"), max_outputs=d.get("max_outputs"),
        producer=re.compile(d["producer"]) if d.get("producer") else None,
        metadata=tuple((k, re.compile(v)) for k, v in (d.get("metadata") or {}).items()),
    )


def parse_task(task_id: str, t: dict, catalogued: bool = True) -> TaskDef:
    """A task entry of the catalogue (1.0.0 entries lack units and signatures: defaults apply)."""
    rng = t.get("metric_range") or [0, None]
    evaluation = tuple(
        EvaluationInput(applies_to=_pattern(e.get("applies_to", {})),
                        dims=tuple(sorted((int(k), int(v)) for k, v in e["dims"].items())),
                        rule=e.get("rule", "exact"))
        for e in t.get("evaluation_input", [])
    )
    for e in evaluation:
        if e.rule not in ("exact", "at-least"):
            raise CatalogueError(f"task {task_id}: evaluation_input rule {e.rule!r} is neither 'exact' nor 'at-least'")
    return TaskDef(
        id=task_id, name=t["name"], dataset=t.get("dataset", "n/a"), metric=t.get("metric", "n/a"),
        higher_is_better=bool(t.get("higher_is_better", True)),
        metric_range=(float(rng[0]), None if rng[1] is None else float(rng[1])),
        unit=t.get("unit", "inference"),
        unit_description=t.get("unit_description", "one inference at the assessed input shapes"),
        evaluation=evaluation, signatures=tuple(_signature(s) for s in t.get("signatures", [])),
        catalogued=catalogued, why_not_catalogued=t.get("why_not_catalogued"), status=t.get("status", "graded"),
    )


# --- detection ----------------------------------------------------------------------------------------

#: Operators whose inputs after the first are parameters (weights, biases, scales).
_PARAMETER_SLOTS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
                    "LayerNormalization", "GroupNormalization", "PRelu", "Add", "Mul", "Gather", "LSTM", "GRU", "RNN"}


def data_inputs(model: ModelProto) -> list[ValueInfoProto]:
    """Real graph inputs that carry data: inputs used only as parameters of the operators above (weights
    declared as inputs, as architecture-only exports do) are left out."""
    from eeki_label.profile.shapes import graph_inputs

    uses: dict[str, list[bool]] = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            uses.setdefault(name, []).append(n.op_type in _PARAMETER_SLOTS and i >= 1
                                             and not (n.op_type == "Gather" and i == 1))
    return [vi for vi in graph_inputs(model) if not (uses.get(vi.name) and all(uses[vi.name]))]


def detect_task(model: ModelProto, tasks: "dict[str, TaskDef]", known: "dict[str, TaskDef]") -> Detection:
    """The task whose signature the model matches (catalogued or known), with the evidence; or none."""
    inputs = data_inputs(model)
    hits: dict[str, tuple[TaskDef, Signature]] = {}
    for t in list(tasks.values()) + list(known.values()):
        for s in t.signatures:
            if s.matches(model, inputs):
                hits.setdefault(t.id, (t, s))
                break
    if not hits:
        return Detection(None, None, False, "task not declared and not recognised from the model's inputs, outputs "
                                            "and metadata; declare it with --task")
    if len(hits) > 1:
        return Detection(None, None, False, "task not declared and the model's signature fits several tasks ("
                         + ", ".join(sorted(hits)) + "); declare it with --task")
    (task, sig), = hits.values()
    return Detection(task.id, sig.evidence, task.catalogued)


# --- evaluation input ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapePlan:
    """The task's evaluation sizes for the model's inputs."""

    defaults: dict[str, dict[int, int]] = field(default_factory=dict)
    """input name -> {axis: size} for dimensions the model leaves dynamic."""
    rules: dict[str, tuple[tuple[tuple[int, int], ...], str]] = field(default_factory=dict)
    """input name -> ((axis, size), ...), rule) for every input the task's evaluation input applies to."""


def shape_plan(task: TaskDef | None, model: ModelProto) -> ShapePlan:
    if task is None or not task.evaluation:
        return ShapePlan()
    defaults: dict[str, dict[int, int]] = {}
    rules: dict[str, tuple[tuple[tuple[int, int], ...], str]] = {}
    for vi in data_inputs(model):
        for e in task.evaluation:
            if e.applies_to.matches(vi):
                dims = list(vi.type.tensor_type.shape.dim) if vi.type.tensor_type.HasField("shape") else []
                defaults[vi.name] = {a: s for a, s in e.dims if a < len(dims) and not dims[a].HasField("dim_value")}
                rules[vi.name] = (e.dims, e.rule)
                break
    return ShapePlan(defaults, rules)


def dynamic_axes(model: ModelProto) -> dict[str, set[int]]:
    from eeki_label.profile.shapes import graph_inputs

    out: dict[str, set[int]] = {}
    for vi in graph_inputs(model):
        tt = vi.type.tensor_type
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        out[vi.name] = {i for i, d in enumerate(dims) if not (d.HasField("dim_value") and d.dim_value > 0)}
    return out


@dataclass(frozen=True)
class ShapeCheck:
    ok: bool
    graded_shapes: dict[str, tuple[int, ...]] | None
    """Shapes to grade at when they differ from the assessed ones (the model's dimensions allow it)."""
    reason: str | None


def check_shapes(plan: ShapePlan, shapes: dict[str, tuple[int, ...]], dynamic: dict[str, set[int]],
                 task: TaskDef) -> ShapeCheck:
    """Compare the assessed shapes with the task's evaluation input (rules/README.md, "Units of work")."""
    graded = dict(shapes)
    changed = False
    for name, (dims, rule) in plan.rules.items():
        shape = list(shapes[name])
        want = list(shape)
        bad = False
        for axis, size in dims:
            if axis >= len(shape):
                continue
            ok = shape[axis] == size if rule == "exact" else shape[axis] >= size
            if not ok:
                bad = True
                want[axis] = size
        if not bad:
            continue
        fmt = lambda s: "x".join(map(str, s))  # noqa: E731
        if all(axis in dynamic.get(name, set()) for axis, _ in dims if axis < len(shape) and shape[axis] != want[axis]):
            graded[name] = tuple(want)
            changed = True
            continue
        rel = "exactly" if rule == "exact" else "at least"
        return ShapeCheck(False, None,
                          f"input {name!r} is {fmt(shape)} and fixed in the model, but task {task.id} is graded at "
                          f"{rel} {fmt(want)} ({task.unit_description})")
    return ShapeCheck(True, graded if changed else None, None)


# --- declared or detected -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskResolution:
    """The task a label is about, how it is known, and (when it cannot be graded) why not."""

    id: str | None
    declared: bool
    detected_from: str | None
    task: TaskDef | None
    """The catalogue's entry (catalogued or known); None for an id the catalogue does not know."""
    reason: str | None
    """Why no grade is possible whatever the energy (no task, task not in the catalogue, pending); None
    when the task has references."""


def check_task_id(task_id: str) -> None:
    if not TASK_ID_RE.match(task_id):
        raise UsageError(f"--task {task_id!r}: a task id is lower-case letters, digits and hyphens "
                         "(eeki-label catalogue lists them)")


def resolve_task(catalogue, model: ModelProto, declared: str | None, rules_default: str | None = None) -> TaskResolution:
    """``--task`` wins; else a rule set's explicit default task (rules 1.0.0 had one); else detection."""
    listed = ", ".join(sorted(catalogue.tasks))
    if declared is None and rules_default:
        t = catalogue.find(rules_default)
        return TaskResolution(rules_default, False, f"default task of the rule set ({rules_default})", t,
                              None if t is not None and t.catalogued else f"task {rules_default} is not in the catalogue")
    if declared is not None:
        t = catalogue.find(declared)
        if t is None:
            return TaskResolution(declared, True, None, None,
                                  f"task {declared!r} is not in catalogue {catalogue.version} (it has: {listed})")
        return TaskResolution(declared, True, None, t, _not_gradable(t, catalogue.version))
    d = detect_task(model, catalogue.tasks, catalogue.known_tasks)
    if d.task_id is None:
        return TaskResolution(None, False, None, None, d.reason)
    t = catalogue.find(d.task_id)
    return TaskResolution(d.task_id, False, d.evidence, t, _not_gradable(t, catalogue.version))


def _not_gradable(t: TaskDef, version: str) -> str | None:
    if not t.catalogued:
        why = f": {t.why_not_catalogued}" if t.why_not_catalogued else ""
        return f"task {t.id} ({t.name}) has no references in catalogue {version}{why}"
    if t.status != "graded":
        return f"task {t.id} is {t.status} in catalogue {version}: no references yet"
    return None
