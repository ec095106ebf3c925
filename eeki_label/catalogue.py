"""The versioned reference catalogue (``reference_models/``) and reference selection.

The catalogue lists, per task, reference networks with their published quality and the profile
figures this tool's own static profiler measured on exported architectures
(``scripts/build_catalogue.py``), so candidate and references are measured the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eeki_label.errors import CatalogueError
from eeki_label.resources import load_versioned, versions
from eeki_label.tasks import TaskDef, parse_task

CATALOGUE_PREFIX = "catalogue-"


Task = TaskDef  # the catalogue's task entries (eeki_label/tasks.py)


@dataclass(frozen=True)
class WorkProfile:
    """What the energy estimator needs of a network: arithmetic and data movement per inference."""

    macs: int
    activation_elements: int
    parameters: int


@dataclass(frozen=True)
class ReferenceModel:
    id: str
    name: str
    task: str
    quality: float
    quality_source: str
    input_shape: tuple[int, ...]
    """The evaluation input of the (first) model input; ``input_shapes`` has all of them."""
    work: WorkProfile
    published_params: int | None
    published_macs: int | None
    scratch_epochs: int | None = None
    """Epochs of the published from-scratch training recipe (None when not published)."""
    scratch_epochs_source: str | None = None
    structure: tuple[str, ...] = ()
    """Weight-layer signature in graph order (``eeki_label.recycle.structure_signature`` tokens)."""
    quality_metric: str | None = None
    quality_dataset: str | None = None
    onnx_file: str | None = None
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """Every model input and the shape it was profiled at (catalogue 2.0.0 on)."""
    query: "QueryWork | None" = None
    """Per-query tasks (text generation): the phases of one query, priced phase by phase."""


@dataclass(frozen=True)
class QueryWork:
    """One query of a cached decoder: the prefill, then ``decode_steps`` steps (profile/decoder.py)."""

    prompt_tokens: int
    output_tokens: int
    prefill_macs: int
    prefill_activation_elements: int
    prefill_activation_peak_elements: int
    decode_steps: int
    decode_macs_per_token: float
    decode_activation_elements_per_token: float
    decode_activation_peak_elements: int
    kv_cache_elements_full_context: int

    def energy(self, parameters: int, dc, estimate):
        """The query's energy figure on ``dc``, by the same function as a candidate's (decoder.phase_energy)."""
        from eeki_label.profile.decoder import phase_energy

        decode = (self.decode_steps, self.decode_macs_per_token, self.decode_activation_elements_per_token,
                  self.decode_activation_peak_elements) if self.decode_steps else None
        return phase_energy(parameters, self.prefill_macs, self.prefill_activation_elements,
                            self.prefill_activation_peak_elements, decode, self.kv_cache_elements_full_context, dc,
                            estimate).query


def _query_work(m: dict) -> "QueryWork | None":
    prof = m["profile"]
    if "prefill" not in prof:
        return None
    pre, dec, lengths = prof["prefill"], prof.get("decode") or {}, m["input_lengths"]
    return QueryWork(
        prompt_tokens=int(lengths["prompt_tokens"]), output_tokens=int(lengths["output_tokens"]),
        prefill_macs=int(pre["macs"]), prefill_activation_elements=int(pre["activation_elements"]),
        prefill_activation_peak_elements=int(pre["activation_peak_elements"]),
        decode_steps=int(dec.get("steps", 0)), decode_macs_per_token=float(dec.get("macs_per_token", 0.0)),
        decode_activation_elements_per_token=float(dec.get("activation_elements_per_token", 0.0)),
        decode_activation_peak_elements=int(dec.get("activation_peak_elements", 0)),
        kv_cache_elements_full_context=int(dec.get("kv_cache_elements_full_context", 0)))


@dataclass(frozen=True)
class Catalogue:
    id: str
    version: str
    sha256: str
    file_name: str
    tasks: dict[str, Task]
    models: tuple[ReferenceModel, ...]
    known_tasks: dict[str, Task] = field(default_factory=dict)
    """Tasks the tool recognises but has no references for (graded never; named in the reason)."""

    def find(self, task_id: str) -> "Task | None":
        return self.tasks.get(task_id) or self.known_tasks.get(task_id)

    def task(self, task_id: str) -> Task:
        if task_id not in self.tasks:
            raise CatalogueError(
                f"unknown task {task_id!r}; catalogue {self.version} has: {', '.join(sorted(self.tasks))}"
            )
        return self.tasks[task_id]

    def for_task(self, task_id: str) -> list[ReferenceModel]:
        self.task(task_id)
        return [m for m in self.models if m.task == task_id]

    def model(self, model_id: str) -> ReferenceModel:
        for m in self.models:
            if m.id == model_id:
                return m
        raise CatalogueError(f"catalogue {self.version} has no model {model_id!r}")


def _first_shape(m: dict) -> tuple[int, ...]:
    if "input_shape" in m:
        return tuple(m["input_shape"])
    if "input_shapes" in m:
        return tuple(next(iter(m["input_shapes"].values())))
    lengths = m["input_lengths"]  # a decoder's query: the prompt
    return (int(lengths.get("batch", 1)), int(lengths["prompt_tokens"]))


def available_versions() -> list[str]:
    return versions("reference_models", CATALOGUE_PREFIX)


def load_catalogue(version: str | None = None) -> Catalogue:
    doc = load_versioned("reference_models", CATALOGUE_PREFIX, version, "catalogue")
    version = doc.name[len(CATALOGUE_PREFIX):-len(".json")]
    c = doc.content
    try:
        tasks = {tid: parse_task(tid, t) for tid, t in c["tasks"].items()}
        known = {tid: parse_task(tid, t, catalogued=False) for tid, t in (c.get("known_tasks") or {}).items()}
        models = tuple(
            ReferenceModel(
                id=m["id"], name=m["name"], task=m["task"], quality=float(m["quality"]["value"]),
                quality_source=m["quality"]["source"], input_shape=_first_shape(m),
                work=WorkProfile(
                    macs=int(m["profile"]["macs"]),
                    activation_elements=int(m["profile"]["activation_elements"]),
                    parameters=int(m["profile"]["parameters"]),
                ),
                published_params=m.get("published", {}).get("parameters"),
                published_macs=m.get("published", {}).get("macs"),
                scratch_epochs=(m.get("training") or {}).get("scratch_epochs"),
                scratch_epochs_source=(m.get("training") or {}).get("source"),
                structure=tuple((m.get("structure") or {}).get("layers", ())),
                quality_metric=m["quality"].get("metric"), quality_dataset=m["quality"].get("dataset"),
                onnx_file=m.get("onnx_file"),
                input_shapes=tuple((k, tuple(v)) for k, v in (m.get("input_shapes") or {}).items()),
                query=_query_work(m),
            )
            for m in c["models"]
        )
        if c["version"] != version:
            raise CatalogueError(f"catalogue file for {version} declares version {c['version']}")
        for m in models:
            if m.task not in tasks:
                raise CatalogueError(f"catalogue model {m.id} names unknown task {m.task}")
        for tid, t in tasks.items():
            if t.status == "graded" and not any(m.task == tid for m in models):
                raise CatalogueError(f"catalogue task {tid} is marked graded but has no reference")
        return Catalogue(c["id"], c["version"], doc.sha256, doc.name, tasks, models, known)
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogueError(f"reference catalogue {version} is damaged: {e!r}") from e
