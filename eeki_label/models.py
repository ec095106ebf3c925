"""The JSON label: frozen pydantic models, the single source of truth for ``schemas/``.

Paths that users and auditors parse are a contract (README, "The label JSON"):
``label.class``, ``label.index``, ``model.sha256``, ``model.parameters``, ``model.weight_bytes``,
``model.macs``, ``device_class.id``, ``inference.energy_j``, ``inference.method``,
``reference.model_id``, ``reference.energy_j``, ``rules.id``, ``rules.version``,
``catalogue.version``, ``tool.version``, ``issued_at``.
Energies are joules per inference unless a name says otherwise.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"

EnergyMethod = Literal["estimated", "measured"]
ClassLetter = Literal["A", "B", "C", "D", "E", "F", "G"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TensorSpec(_Frozen):
    name: str
    shape: list[int]
    dtype: str


class ModelInfo(_Frozen):
    """The assessed model, from the static profile."""

    file_name: str = Field(description="File name only; the path is not recorded (it may be private).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    file_bytes: int
    external_data_bytes: int
    producer: str
    ir_version: int
    opset: dict[str, int]
    parameters: int = Field(description="Elements of every stored tensor (initializers, Constant nodes, subgraphs).")
    float_parameters: int
    weight_bytes: int = Field(description="Bytes of every stored tensor as stored.")
    macs: int = Field(description="Multiply-accumulates of one inference at `inputs` (batch 1 unless given).")
    macs_depthwise: int
    macs_by_op: dict[str, int]
    activation_bytes: int = Field(description="Sum of the sizes of all tensors nodes produce in one inference.")
    activation_peak_bytes: int
    node_count: int
    op_histogram: dict[str, int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    loop_bodies: int
    unresolved_nodes: list[str]


class RuntimeInfo(_Frozen):
    """Latency measured with onnxruntime on the assessing host (milliseconds)."""

    runs: int
    warmup_runs: int
    latency_ms_median: float
    latency_ms_p90: float
    latency_ms_mean: float
    latency_ms_ci95: tuple[float, float] = Field(description="Distribution-free 95 % CI of the median.")
    intra_op_threads: int
    onnxruntime_version: str
    execution_provider: str
    host_cpu: str
    host_logical_cpus: int
    host_machine: str
    input_seed: int


class DeviceClassInfo(_Frozen):
    id: str
    name: str
    reference_system: str
    batch_mode: str
    precision: str


class InferenceEnergy(_Frozen):
    """Energy of one inference on the device class."""

    energy_j: Optional[float] = Field(description="Joules per inference; null when the model does not fit.")
    energy_wh_per_1000: Optional[float]
    method: EnergyMethod
    estimator: str = Field(description="Formula id of the estimate (docs/energy-model.md).")
    fits: bool
    fit_reason: Optional[str] = None
    effective_macs: Optional[float] = Field(default=None, description="MACs + ridge x bytes moved.")
    bytes_moved: Optional[float] = None
    time_s_estimate: Optional[float] = None
    calibration_anchor: str
    meter: Optional[str] = None


class QualityInfo(_Frozen):
    metric: str
    declared: Optional[float] = Field(description="The candidate's quality as declared with --accuracy.")


class ReferenceInfo(_Frozen):
    model_id: Optional[str]
    name: Optional[str]
    task: str
    quality: Optional[float]
    energy_j: Optional[float]
    macs: Optional[int]
    parameters: Optional[int]
    selection: str = Field(description="How the reference was chosen, in words.")
    candidates_considered: int


class TaskInfo(_Frozen):
    id: str
    declared: bool
    quality: QualityInfo


class LabelGrade(_Frozen):
    class_: Optional[ClassLetter] = Field(alias="class", description="A (best) .. G; null when not gradable.")
    index: Optional[float] = Field(description="Candidate energy / reference energy.")
    thresholds: dict[str, Optional[float]] = Field(description="Upper index bound of each class (G open).")
    gradable: bool
    reason: Optional[str] = None
    quality_declared: bool
    notes: list[str]


class RulesInfo(_Frozen):
    id: str
    version: str
    sha256: str


class CatalogueInfo(_Frozen):
    id: str
    version: str
    sha256: str


class DeviceDataInfo(_Frozen):
    version: str
    sha256: str


class ToolInfo(_Frozen):
    name: str
    version: str
    onnx_version: str
    onnxruntime_version: str
    python_version: str


class Label(_Frozen):
    """One label: one model on one device class. Complete on its own."""

    schema_version: str = SCHEMA_VERSION
    label: LabelGrade
    model: ModelInfo
    device_class: DeviceClassInfo
    inference: InferenceEnergy
    task: TaskInfo
    reference: ReferenceInfo
    runtime: Optional[RuntimeInfo]
    rules: RulesInfo
    catalogue: CatalogueInfo
    device_data: DeviceDataInfo
    tool: ToolInfo
    issued_at: str = Field(description="UTC time of issue, ISO 8601.")


class LabelSet(_Frozen):
    """The document written by ``assess``: one complete label per assessed device class."""

    schema_version: str = SCHEMA_VERSION
    labels: list[Label]


def dump_json(doc: BaseModel) -> str:
    """Canonical JSON of a label document: aliases (``class``), sorted keys kept as declared."""
    return doc.model_dump_json(by_alias=True, indent=2) + "\n"
