"""The JSON label: frozen pydantic models, the single source of truth for ``schemas/``.

Paths that users and auditors parse are a contract (README, "The label JSON"):
``label.class``, ``label.index``, ``model.sha256``, ``model.parameters``, ``model.weight_bytes``,
``model.macs``, ``device_class.id``, ``inference.energy_j``, ``inference.method``,
``reference.model_id``, ``reference.energy_j``, ``rules.id``, ``rules.version``,
``catalogue.version``, ``tool.version``, ``issued_at``.
Energies are joules per inference unless a name says otherwise.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

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


class IfBranchInfo(_Frozen):
    node: str = Field(description="The If node's name (else its first output).")
    taken: Optional[Literal["then_branch", "else_branch"]] = Field(
        description="The branch the representative inputs take (counted); null: condition unknown, both counted.")
    macs_taken: Optional[int] = Field(description="MACs of the counted branch's own nodes (null: some unknown).")
    macs_other: Optional[int] = Field(description="MACs of the other branch's own nodes (null: some unknown).")


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
    macs_coverage: Optional[float] = Field(
        default=None, description="Share of compute-bearing nodes (Conv, Gemm, MatMul, RNN, attention... and their "
                                  "quantised forms) whose MACs per inference are known (0..1).")
    unmodelled_ops: dict[str, int] = Field(
        default_factory=dict, description="Operator -> compute-bearing nodes whose MACs are not known (no rule, "
                                          "unknown shapes or run count): MACs are a lower bound where non-empty.")
    profiled_graph: Optional[str] = Field(
        default=None, description="Which graph the figures describe: the runtime view of the export (no-op, "
                                  "constant-folded and fused nodes move no bytes of their own).")
    if_branches: list["IfBranchInfo"] = Field(
        default_factory=list, description="If nodes of the main graph: the branch counted and the other's MACs.")
    graph_name: Optional[str] = Field(default=None, description="The graph's name as the model states it (untrusted text).")
    doc_string: Optional[str] = Field(
        default=None, description="The model's doc_string (else the graph's), first 1,000 characters (untrusted text).")
    attention_macs: Optional[int] = Field(
        default=None, description="Of `macs`, attention: QK^T and AV at the full s_q x s_k rectangle plus projections "
                                  "inside attention kernels (docs/attention.md).")
    attention_macs_causal: Optional[int] = Field(
        default=None, description="`attention_macs` with a causal mask's skipped positions left out; given for cached "
                                  "decoders and kernels that declare a causal mask, else null.")


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
    prefill_latency_ms: Optional[float] = Field(
        default=None, description="Cached decoders: one real prefill run in onnxruntime (milliseconds).")
    decode_latency_ms_median: Optional[float] = Field(
        default=None, description="Cached decoders: median of the real decode steps run after it, the cache fed back.")
    decode_steps_run: Optional[int] = Field(default=None, description="Cached decoders: decode steps run.")


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
    domains: Optional[list[str]] = Field(
        default=None, description="Measured: the meter's energy domains summed (e.g. package-0, package-0/dram, gpu0).")
    repetitions: Optional["Repetitions"] = Field(default=None, description="Measured: runs per phase.")
    energy_j_ci95: Optional[tuple[float, float]] = Field(
        default=None, description="95 % interval of energy_j, joules per inference. Measured: confidence interval of "
                                  "the measurement. Estimated: from the device class's held-out error (rule set "
                                  "section estimate_uncertainty); null when the data states none.")
    interval_method: Optional[str] = Field(default=None, description="How energy_j_ci95 was computed, in words.")
    measurement: Optional["MeasurementInfo"] = Field(
        default=None, description="Measured: baseline/idle/scenario figures and the record it came from.")
    unit: str = Field(default="inference", description="What `energy_j` is per: `inference`, `query` (a cached "
                                                        "decoder: prefill plus decode steps), `image`, ...")
    prompt_tokens: Optional[int] = Field(default=None, description="Decoders: prompt tokens N of one query.")
    output_tokens: Optional[int] = Field(default=None, description="Decoders: output tokens M of one query.")
    length_preset: Optional[str] = Field(default=None, description="Decoders: the rule set's preset the lengths "
                                                                   "came from (null: given on the command line).")
    batch_size: Optional[int] = Field(default=None, description="Decoders: batch size of the estimate (the device "
                                                                "class's assumed batch; weights are read once per batch).")
    boundary: Optional[str] = Field(default=None, description="Decoders: what the per-query figures include.")
    prefill: Optional["PrefillInfo"] = None
    decode: Optional["DecodeInfo"] = None
    energy_per_query_j: Optional[float] = Field(default=None, description="Decoders: joules per query (= energy_j).")
    energy_wh_per_1000_queries: Optional[float] = None
    energy_per_output_token_j: Optional[float] = Field(
        default=None, description="Decoders: joules of one decode step at the mean context (steady-state decode; "
                                  "the prefill is in energy_per_query_j only).")


class PrefillInfo(_Frozen):
    """The prefill run of a cached decoder: the prompt with an empty cache."""

    tokens: int
    macs: int
    attention_macs: int
    activation_elements: int
    energy_j: Optional[float]
    bytes_moved: Optional[float] = None
    time_s_estimate: Optional[float] = None


class DecodeInfo(_Frozen):
    """The decode steps of a cached decoder: one new token each, the cache fed back."""

    steps: int = Field(description="output_tokens - 1 (the prefill gives the first output token).")
    context_first: int = Field(description="Past length of the first step (= prompt tokens).")
    context_last: int = Field(description="Past length of the last step.")
    macs_per_token: float = Field(description="Mean MACs of one decode step (affine in the context: exact).")
    attention_macs_per_token: float
    activation_elements_per_token: float = Field(
        description="Mean elements a step writes plus the cache elements it reads.")
    kv_cache_bytes_per_token: int = Field(description="Cache bytes one token adds (all layers, keys and values).")
    kv_cache_bytes_full_context: int = Field(description="Cache bytes at prompt + output - 1 positions.")
    energy_j_per_token: Optional[float]
    bytes_moved_per_token: Optional[float] = None
    time_s_estimate_per_token: Optional[float] = None


class Repetitions(_Frozen):
    """Runs of the measurement protocol (BRIEF §5: baseline, idle, scenario)."""

    baseline_runs: int
    idle_runs: int
    scenario_runs: int
    inferences_per_run: int = Field(description="Inferences in each scenario run.")


class MeasurementInfo(_Frozen):
    """How a measured energy was obtained (eeki_label/energy/measure.py); powers in watts."""

    method: str = Field(description="Protocol id; net energy per inference = (E_scenario - P_baseline x t) / n.")
    interval: str = Field(description="The confidence interval's method, in words.")
    baseline_power_w: float
    baseline_power_w_std: float
    idle_power_w: Optional[float] = Field(description="Session loaded, no inference; reported, not subtracted.")
    scenario_power_w: float
    degrees_of_freedom: float
    record_sha256: Optional[str] = Field(description="sha256 of the archived measurement record (--measurements).")
    record_created_at: str
    execution_provider: str
    input_seed: int
    order: str
    reference_class: str = Field(description="The device class whose estimated reference energy grades the host.")
    trace_file: Optional[str] = None
    trace_sha256: Optional[str] = None
    statistical_ci95_j: Optional[tuple[float, float]] = Field(
        default=None, description="The runs' 95 % Welch interval before the quantisation bound is added (joules).")
    quantisation_j: Optional[float] = Field(
        default=None, description="Bound of the trace integration's remaining quantisation error, joules per "
                                  "inference; inference.energy_j_ci95 is the statistical interval widened by it.")
    sample_interval_s: Optional[float] = Field(default=None, description="Median spacing of the meter's samples.")
    min_samples_per_run: Optional[int] = Field(
        default=None, description="Fewest meter samples in a scenario run (power meters and traces).")
    sample_mode: Optional[str] = Field(
        default=None, description="What a trace sample stands for: mean-preceding, mean-following or instant.")
    trace_integration: Optional[str] = Field(default=None, description="How run energies were integrated from the trace.")
    clock_offset_s: Optional[float] = Field(
        default=None, description="Logger clock minus tool clock, seconds, removed from the trace's timestamps.")
    clock_offset_source: Optional[str] = Field(default=None, description="How the clock offset was found.")
    resolved: Optional[bool] = Field(
        default=None, description="Whether the measurement passed the rule set's resolution gate (false: class null).")
    resolution_rule: Optional[str] = Field(default=None, description="Where the gate's values came from.")
    reference_basis: Optional[str] = Field(
        default=None, description="What the reference energy is: measured here, or estimated on another class.")
    reference_measured: Optional[bool] = Field(
        default=None, description="True when the reference was measured on this machine with the same protocol.")


class QualityInfo(_Frozen):
    metric: str
    declared: Optional[float] = Field(description="The candidate's quality as declared with --accuracy.")
    declared_by: Optional[str] = Field(
        default=None, description="Who declares the quality: the issuer (--issuer), or 'not stated'; null when "
                                  "no quality is declared. A declared quality is a claim, not a measurement.")
    evidence_sha256: Optional[str] = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 of --accuracy-evidence FILE (signed with the label).")
    evidence_file: Optional[str] = Field(default=None, description="File name of --accuracy-evidence (no path).")


class ReferenceInfo(_Frozen):
    model_id: Optional[str]
    name: Optional[str]
    task: Optional[str] = Field(description="The reference's task; equals task.id on a graded label.")
    quality: Optional[float]
    energy_j: Optional[float]
    macs: Optional[int]
    parameters: Optional[int]
    selection: str = Field(description="How the reference was chosen, in words.")
    candidates_considered: int


class TaskInfo(_Frozen):
    id: Optional[str] = Field(description="The task (catalogue id, or the declared id); null when unknown.")
    declared: bool = Field(description="True for --task; false when detected (or unknown).")
    detected_from: Optional[str] = Field(
        default=None, description="The evidence the task was detected from; null when declared or unknown.")
    catalogued: bool = Field(default=True, description="The catalogue has references of this task.")
    unit: str = Field(default="inference", description="The unit of work energies are given per (image, "
                                                      "sequence, audio clip, query...).")
    unit_description: Optional[str] = Field(default=None, description="The unit in words, with its size.")
    evaluation_input: Optional[dict[str, list[int]]] = Field(
        default=None, description="Input shapes the grade was computed at (the task's evaluation input), by input "
                                  "name; null when not graded.")
    quality: QualityInfo


class LabelGrade(_Frozen):
    class_: Optional[ClassLetter] = Field(alias="class", description="A (best) .. G; null when not gradable.")
    index: Optional[float] = Field(description="Candidate energy / reference energy.")
    thresholds: dict[str, Optional[float]] = Field(description="Upper index bound of each class (G open).")
    gradable: bool
    reason: Optional[str] = None
    quality_declared: bool
    notes: list[str]
    index_ci95: Optional[tuple[float, float]] = Field(
        default=None, description="95 % interval of the index. Measured: energy interval / reference energy. "
                                  "Estimated: index divided and multiplied by the class's held-out error factor.")
    boundary_uncertain: Optional[bool] = Field(
        default=None, description="The index interval spans a class boundary; null when the label has no interval.")
    classes_in_interval: Optional[list[ClassLetter]] = Field(
        default=None, description="The classes the index interval reaches.")
    boundary_rule: Optional[str] = Field(
        default=None, description="Which class is printed, and why (rule set section stability for measured "
                                  "labels, estimate_uncertainty for estimated ones).")
    graded_energy_j: Optional[float] = Field(
        default=None, description="Energy per unit at the task's evaluation input, when the model was assessed at "
                                  "another input (the index uses it); null otherwise.")


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
    file: Optional[str] = Field(
        default=None, description="Name of the device-data file (device-classes-<version>.json when shipped, or an "
                                  "own file given with --device-data, e.g. written by eeki-label calibrate).")


class ToolInfo(_Frozen):
    name: str
    version: str
    onnx_version: str
    onnxruntime_version: str
    python_version: str


class TensorClassInfo(_Frozen):
    """Candidate tensors of one class (frozen, fine-tuned or new) against the declared base."""

    tensors: int
    parameters: int = Field(description="Elements of these tensors.")
    share: float = Field(description="Of the candidate's stored parameters (0..1).")
    layers: list[str] = Field(description="Nodes consuming these tensors (node name, or op#index), graph order.")


class ChangedTensorInfo(_Frozen):
    name: str = Field(description="The tensor's value name in the candidate.")
    status: Literal["fine-tuned", "new"]
    shape: list[int]
    parameters: int
    relative_change: Optional[float] = Field(
        default=None, description="||w - w_base||_2 / ||w_base||_2 (fine-tuned float tensors; null otherwise).")
    base_name: Optional[str] = Field(default=None, description="The base tensor it was paired with.")
    matched_by: Optional[Literal["name", "content", "structure"]] = None
    replaces: Optional[str] = Field(default=None, description="Base tensor of the same name but another shape.")
    layers: list[str]


class BaseMatchInfo(_Frozen):
    """The declared base (assess --base) and how the candidate's stored tensors relate to it."""

    file_name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    parameters: int = Field(description="Elements of every tensor the base stores.")
    frozen: TensorClassInfo = Field(description="Bit-identical to a base tensor.")
    fine_tuned: TensorClassInfo = Field(description="Same role and shape as a base tensor, changed values.")
    new: TensorClassInfo = Field(description="No base tensor of the same role and shape.")
    matched_by_name: int
    matched_by_content: int
    matched_by_structure: int
    removed_tensors: int = Field(description="Base tensors without a counterpart in the candidate.")
    removed_parameters: int
    changed_tensors: list[ChangedTensorInfo]


class StructuralMatchInfo(_Frozen):
    """The closest catalogue architecture by layer types and weight shapes: not proof of reuse."""

    model_id: Optional[str] = Field(description="Catalogue model id of the closest family; null if none compared.")
    name: Optional[str]
    coverage: float = Field(description="Share of the candidate's weight-layer parameters in matching layers (0..1).")
    reference_coverage: float = Field(description="Share of the family's weight-layer parameters matched (0..1).")
    matched_layers: int
    candidate_layers: int
    reference_layers: int
    differing_layers: list[str] = Field(description="Candidate weight layers without a counterpart (node names).")
    recognised: bool = Field(description="coverage >= the rule set's training.min_structural_coverage.")
    statement: str


class TrainingScenarioInfo(_Frozen):
    id: Literal["scratch", "recycling", "transfer-learning"]
    epochs: int
    passes_per_sample: float = Field(description="Forward-pass equivalents per training sample over all epochs.")
    energy_wh: float
    co2_g: Optional[float]
    cost_eur: Optional[float]
    saving_wh: Optional[float] = Field(description="Against training from scratch; null for scratch itself.")
    saving_co2_g: Optional[float]
    saving_eur: Optional[float]
    saving_share: Optional[float] = Field(description="saving / scratch energy (0..1).")


class TrainingEnergyInfo(_Frozen):
    """Estimated training energy (eeki_label.recycle; rule set section ``training``)."""

    basis: Literal["declared-base", "structural-match"]
    method: Literal["estimated"] = "estimated"
    device_class: str
    train_samples: int
    fine_tune_epochs: int
    scratch_epochs: int
    scratch_epochs_source: str
    features_cached: bool
    forward_energy_per_sample_j: float
    macs_trained: int = Field(description="Forward MACs of nodes that consume fine-tuned or new tensors.")
    macs_frozen_backprop: int = Field(description="Forward MACs of frozen nodes downstream of trained ones.")
    macs_frozen_forward: int = Field(description="Forward MACs of frozen nodes upstream of every trained node.")
    transfer_multiplier: float = Field(description="Forward-pass equivalents per sample and epoch, transfer learning.")
    grid_g_per_kwh: Optional[float]
    grid_source: Optional[str]
    price_eur_per_kwh: Optional[float]
    price_source: Optional[str]
    formula: str
    scenarios: list[TrainingScenarioInfo]


class UpdateInfo(_Frozen):
    """The update to ship when the base is already on the device (only the changed tensors)."""

    changed_tensors: int
    changed_parameters: int
    raw_bytes: int = Field(description="Fine-tuned and new tensors at their stored sizes.")
    codec: Literal["nnc", "raw"]
    coded_bytes: Optional[int] = Field(description="NNC delta container bytes; null when not coded.")
    full_model_weight_bytes: int
    note: Optional[str] = None


class RecyclingInfo(_Frozen):
    basis: Literal["declared-base", "structural-match"]
    base: Optional[BaseMatchInfo]
    structure: Optional[StructuralMatchInfo]
    training: Optional[TrainingEnergyInfo]
    update: Optional[UpdateInfo]
    notes: list[str]


class TransferFidelityInfo(_Frozen):
    """How closely the NNC-reconstructed model reproduces the original on the calibration inputs."""

    meets_bound: bool
    max_rel_error: float = Field(description="Largest pooled relative L2 output error (dimensionless).")
    min_top1_agreement: Optional[float] = Field(description="Lowest top-1 agreement of classifier-like outputs.")
    bound_max_rel_error: float
    bound_min_top1_agreement: float
    calibration: str = Field(description="'calibration data' (--calibration-data) or 'synthetic'.")
    samples: int


class TransferScenarioInfo(_Frozen):
    """Energy of one distribution scenario without and with NNC (Wh for the whole scenario)."""

    id: Literal["one-time", "periodic-updates", "federated-learning"]
    description: str
    transfers: int
    encodes: int
    decodes: int
    uncompressed_wh: float
    nnc_wh: float
    nnc_saving_share: float = Field(description="1 - nnc_wh / uncompressed_wh (negative: NNC costs more).")
    nnc_delta_wh: Optional[float] = Field(default=None, description="With delta coding of later transfers.")
    nnc_delta_saving_share: Optional[float] = None
    uncompressed_co2_g: float
    nnc_co2_g: float
    uncompressed_cost_eur: Optional[float]
    nnc_cost_eur: Optional[float]


class TransferDeltaTensorsInfo(_Frozen):
    """How the delta container sends each tensor of the new model (counts of stored tensors)."""

    same: int = Field(description="Unchanged tensors of the previous model: no bytes.")
    delta: int = Field(description="Same role and shape, changed values: the NNC-coded difference.")
    nnc: int = Field(description="New or reshaped tensors: NNC-coded whole.")
    raw: int = Field(description="Sent bit-exactly (small, structural or non-float tensors).")
    removed: int = Field(description="Tensors of the previous model the new one no longer has.")
    matched_by_name: int = 0
    matched_by_content: int = 0
    matched_by_structure: int = 0


class TransferDeltaInfo(_Frozen):
    """Differential coding against a previous version (--previous) or the declared base (--base)."""

    previous_sha256: str
    compressed_bytes: int = Field(description="The whole delta container: tensors, mapping and the new graph.")
    ratio_vs_full_nnc: float = Field(description="Delta bitstream bytes / full-model NNC bytes.")
    encode_s: float
    decode_s: float
    coded_float32_bytes: int
    fidelity_meets_bound: bool
    reference: Literal["previous", "base"] = Field(
        default="previous", description="What the delta is made against: --previous, or the declared --base.")
    ratio_vs_full_transfer: Optional[float] = Field(
        default=None, description="compressed_bytes / transfer.compressed_bytes (the full NNC transfer with its graph).")
    graph_changed: Optional[bool] = Field(
        default=None, description="The new model's graph differs from the previous one (the container carries the diff).")
    graph_section_bytes: Optional[int] = Field(default=None, description="Bytes of the graph diff in the container.")
    whole_model: Optional[bool] = Field(
        default=None, description="The delta is the whole model coded (nothing in common with the previous model, "
                                  "or the coded difference came out larger): see whole_model_reason.")
    whole_model_reason: Optional[str] = None
    fidelity_relative_to: Optional[str] = Field(
        default=None, description="'update effect' (||y - y_new|| / ||y_new - y_previous||) or 'reference outputs' "
                                  "(the new model's outputs, when the previous model's are not comparable).")
    max_rel_error: Optional[float] = None
    tensors: Optional[TransferDeltaTensorsInfo] = None


class TransferFailureInfo(_Frozen):
    """What failed in the NNC stage, and why (the label is written all the same)."""

    part: Literal["whole-model", "delta"]
    error: str = Field(description="The one-line diagnosis.")
    error_type: str = Field(description="The error class, e.g. TransferError, LimitExceededError.")
    exit_code: int = Field(description="The exit code this error would have had on its own.")


class TransferInfo(_Frozen):
    """What shipping the model costs and what NNC (ISO/IEC 15938-17) saves (BRIEF section 3)."""

    codec: Literal["nnc"] = "nnc"
    standard: str = "ISO/IEC 15938-17"
    implementation: str = Field(description="The encoder/decoder used, e.g. 'nncodec 2.1.3 (Fraunhofer HHI)'.")
    original_bytes: int = Field(description="Bytes of an uncompressed transfer: the model file and its external data.")
    compressed_bytes: int = Field(description="Bytes of an NNC transfer: the bitstream container plus the graph.")
    ratio: float = Field(description="compressed_bytes / original_bytes.")
    bitstream_bytes: int = Field(description="The NNC container alone (tensors).")
    graph_bytes: int = Field(description="The model without its tensor payloads, sent alongside the bitstream.")
    nnc_ratio: float = Field(description="NNC bitstream / float32 bytes of the tensors it codes.")
    bitstream_sha256: str
    qp: dict[str, Optional[float]] = Field(description="min, median, max of the per-tensor QPs.")
    fidelity: TransferFidelityInfo
    encode_s: float = Field(description="Seconds this host took to encode (QP search included); measured, varies.")
    decode_s: float = Field(description="Seconds this host took to decode; measured, varies.")
    coded_float32_bytes: int = Field(description="float32 bytes of the tensors the NNC stream codes.")
    device_encode_s: float = Field(description="Encode seconds on the transfer device, from the study's codec energy.")
    device_decode_s: float = Field(description="Decode seconds on the transfer device, from the study's codec energy.")
    link_up_bit_s: float
    link_down_bit_s: float
    transfer_power_w: float
    codec_power_w: float
    country: str
    grid_g_co2_per_kwh: float
    price_eur_per_kwh: Optional[float]
    parameters_sha256: str = Field(description="sha256 of data/energy/transfer.json (sources of every figure).")
    scenarios: list[TransferScenarioInfo]
    delta: Optional[TransferDeltaInfo] = None
    notes: list[str]
    status: Literal["complete", "delta-failed"] = Field(
        default="complete", description="'delta-failed': the full-model figures stand, the delta could not be coded.")
    failure: Optional[TransferFailureInfo] = Field(default=None, description="Why the delta is null (status delta-failed).")


class TransferFailedInfo(_Frozen):
    """The transfer section when NNC could not code the model: what failed and why, no coded figures."""

    status: Literal["failed"] = "failed"
    codec: Literal["nnc"] = "nnc"
    standard: str = "ISO/IEC 15938-17"
    implementation: str
    original_bytes: int = Field(description="Bytes of an uncompressed transfer: the model file and its external data.")
    failure: TransferFailureInfo
    notes: list[str]


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
    recycling: Optional["RecyclingInfo"] = Field(
        default=None, description="Reuse of a pretrained base and the training energy it avoids (BRIEF section 4).")
    transfer: Optional[Union[TransferInfo, TransferFailedInfo]] = Field(
        default=None, description="NNC bitstream and distribution energy (BRIEF section 3); null when not assessed; "
                                  "status 'failed' when NNC could not code the model.")
    rules: RulesInfo
    catalogue: CatalogueInfo
    device_data: DeviceDataInfo
    tool: ToolInfo
    issued_at: str = Field(description="UTC time of issue, ISO 8601.")
    issuer: Optional[str] = Field(default=None, description="Who issued the label (assess --issuer); null: not stated.")
    signature: Optional["Signature"] = Field(
        default=None, description="Ed25519 signature of this document (docs/signing.md); null when unsigned.")


class LabelSet(_Frozen):
    """The document written by ``assess``: one complete label per assessed device class."""

    schema_version: str = SCHEMA_VERSION
    labels: list[Label]
    signature: Optional["Signature"] = Field(
        default=None, description="Ed25519 signature of the whole set (docs/signing.md); null when unsigned.")


class Signature(_Frozen):
    """A detached-style signature stored in the document it signs (``docs/signing.md``).

    ``value`` signs the canonical serialisation of the document without its top-level ``signature``
    member: RFC 8785 JSON Canonicalization Scheme (sorted keys, no whitespace, UTF-8)."""

    algorithm: Literal["ed25519"]
    canonicalization: Literal["jcs-rfc8785-without-signature"] = "jcs-rfc8785-without-signature"
    public_key: str = Field(description="The raw 32-byte Ed25519 public key, base64 (RFC 4648, padded).")
    key_fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256 of the raw public key.")
    value: str = Field(description="The 64-byte Ed25519 signature, base64.")


InferenceEnergy.model_rebuild()
Label.model_rebuild()
LabelSet.model_rebuild()


def dump_json(doc: BaseModel) -> str:
    """Canonical JSON of a label document: aliases (``class``), sorted keys kept as declared."""
    return doc.model_dump_json(by_alias=True, indent=2) + "\n"
