"""The measurement record: what ``eeki-label measure --out FILE`` archives (JSON).

Everything needed to recompute the figures and to re-run the measurement: the model's sha256, the
input shapes and seed, the protocol (runs per phase, inferences per run, order), the meter and its
domains and units, the run markers (wall-clock start and end of every run) and the raw samples of
every run (or the external meter's trace). ``assess --measurements FILE`` recomputes every energy
from the raw samples and refuses a record whose stored energies do not match them.

Frozen pydantic models; ``schemas/measurement.schema.json`` is generated from :class:`MeasurementRecord`.
Units are in the names: ``_unix_s`` wall-clock UNIX seconds (UTC), ``_s`` seconds, ``_j`` joules,
``_w`` watts; raw sample values are in ``meter.unit``.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

RECORD_FORMAT = "eeki-measurement"
RECORD_FORMAT_VERSION = "1"

Phase = Literal["baseline", "idle", "scenario"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecordTool(_Frozen):
    name: str
    version: str
    onnxruntime_version: str
    python_version: str


class RecordModel(_Frozen):
    file_name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    file_bytes: int


class RecordHost(_Frozen):
    cpu: str
    logical_cpus: int
    machine: str
    platform: str = Field(description="Operating system and kernel (platform.platform()).")


class RecordSetup(_Frozen):
    """How the runs were made (BRIEF §5: baseline, idle, scenario; repeated; seeds fixed)."""

    input_shapes: dict[str, list[int]]
    seed: int = Field(description="Seed of the generated inputs (the same inputs in every inference).")
    threads: Optional[int] = Field(description="onnxruntime intra-op threads; null: onnxruntime's default.")
    execution_provider: str
    baseline_runs: int
    idle_runs: int
    scenario_runs: int
    run_seconds: float = Field(description="Target duration of each run, seconds.")
    inferences_per_run: int
    inferences_per_run_source: str = Field(description="'given' or how it was derived from the warm-up latency.")
    warmup_inferences: int
    warmup_latency_s: Optional[float] = Field(description="Median seconds per inference in the warm-up.")
    order: str = Field(description="The order of the phases and runs (every run also has its sequence number).")
    sample_interval_s: float = Field(description="How often the meter was polled inside a run, seconds.")
    clock: str


class RecordMeter(_Frozen):
    kind: Literal["rapl", "nvml", "trace"]
    description: str
    domains: list[str]
    reading: Literal["energy_counter", "power"]
    unit: str = Field(description="Unit of the raw sample values: uJ, mJ, mW or W.")
    counter_range: dict[str, float] = Field(description="Per counter domain, the value at which it wraps to 0.")
    details: dict[str, str]


class RecordRun(_Frozen):
    """One run: its markers, inferences, raw samples and the energy computed from them."""

    seq: int = Field(description="Position in the order the runs were made, from 0.")
    phase: Phase
    index: int = Field(description="Run number within its phase, from 0.")
    start_unix_s: float = Field(description="Marker: wall-clock start of the run.")
    end_unix_s: float = Field(description="Marker: wall-clock end of the run.")
    inferences: int
    samples: dict[str, list[tuple[float, float]]] = Field(
        description="Per domain, raw meter samples (time_unix_s, value in meter.unit); empty for a trace.")
    energy_j: Optional[dict[str, float]] = Field(
        description="Per domain, joules over the run; null until a trace is attached (meter 'trace').")


class RecordTrace(_Frozen):
    """The external meter's samples that cover the runs (time_unix_s after offset, watts)."""

    format: Literal["csv", "line-protocol"]
    file_name: str
    sha256: str = Field(description="sha256 of the trace file the samples were read from.")
    series: str
    offset_s: float = Field(description="Seconds added to the file's timestamps (minus clock_offset_s).")
    samples: list[tuple[float, float]]
    sample_mode: Optional[Literal["mean-preceding", "mean-following", "instant"]] = Field(
        default=None, description="What a sample stands for (eeki_label.energy.meters.SAMPLE_MODES); null: "
                                  "a record of eeki-label 0.2, integrated by linear interpolation.")
    integration: Optional[str] = Field(
        default=None, description="How run energies were integrated (step-exact-v1); null: linear interpolation.")
    clock_offset_s: Optional[float] = Field(
        default=None, description="Logger clock minus tool clock, seconds, subtracted from the file's timestamps.")
    clock_offset_source: Optional[str] = Field(
        default=None, description="How the offset was found: given (--trace-offset-s), detected from the power "
                                  "steps, aligned (steps already at the markers) or undetectable (no steps; 0 used).")
    median_interval_s: Optional[float] = Field(default=None, description="Median sample spacing of the trace, seconds.")


class TraceSettings(_Frozen):
    """How to read the trace when it is attached later (``assess --measurements R --trace T``)."""

    format: Literal["auto", "csv", "line-protocol"] = "auto"
    field: Optional[str] = None
    precision: Literal["s", "ms", "us", "ns"] = "ns"
    offset_s: float = Field(default=0.0, description="Seconds added to the timestamps (records of eeki-label 0.2).")
    clock_offset_s: Optional[float] = Field(
        default=None, description="Logger clock minus tool clock, seconds (--trace-offset-s); null: detect it.")
    sample_mode: Literal["auto", "mean-preceding", "mean-following", "instant"] = "auto"


class MeasurementRecord(_Frozen):
    """An archived energy measurement of one model on one machine."""

    format: Literal["eeki-measurement"]
    format_version: Literal["1"]
    created_at: str = Field(description="UTC time the measurement started, ISO 8601.")
    tool: RecordTool
    model: RecordModel
    host: RecordHost
    setup: RecordSetup
    meter: RecordMeter
    trace_settings: Optional[TraceSettings] = None
    runs: list[RecordRun]
    trace: Optional[RecordTrace] = None
    notes: list[str] = Field(default_factory=list)
