"""The measurement protocol (baseline, idle, scenario), its record, and the net energy per inference.

Method (BRIEF §5, green-software practice and the Blauer Engel for software, DE-UZ 215):

1. **baseline**: ``baseline_runs`` windows of ``run_seconds`` with the system as it is, no onnxruntime
   session (the model file has been read and checked, nothing else);
2. **idle**: the onnxruntime session is created and warmed up, then ``idle_runs`` windows of
   ``run_seconds`` without inference (what keeping the model loaded costs);
3. **scenario**: ``scenario_runs`` windows of ``inferences_per_run`` inferences each, on the same
   deterministic inputs (fixed seed); ``inferences_per_run`` is chosen from the warm-up latency so
   that a run lasts about ``run_seconds``, or given.

The order is blocked, baseline then idle then scenario (the baseline needs the session absent), and
recorded run by run with wall-clock markers. Python's garbage collector runs before every window.

Net energy per inference, per scenario run i: ``(E_i - P_baseline * t_i) / n_i`` (joules), with
``P_baseline`` the mean baseline power (watts) and ``t_i`` the run's duration (seconds): the baseline
energy over the scenario run's own duration. Reported: the mean over the runs with a 95 % Student t
interval (Welch-Satterthwaite, :mod:`eeki_label.energy.stats`). The idle power is reported, not
subtracted: the energy of an inference includes whatever a loaded session adds while it runs.
"""

from __future__ import annotations

import csv
import datetime as _dt
import gc
import hashlib
import io
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from pydantic import ValidationError

from eeki_label import __version__
from eeki_label.energy.meters import (
    LiveMeter, MeterInfo, PowerTrace, integrate_power_j, load_trace, window_energy_j,
)
from eeki_label.energy.record import (
    RECORD_FORMAT, RECORD_FORMAT_VERSION, MeasurementRecord, RecordHost, RecordMeter, RecordModel, RecordRun,
    RecordSetup, RecordTool, RecordTrace, TraceSettings,
)
from eeki_label.energy.stats import INTERVAL_METHOD, NetEnergy, mean_var, net_energy_per_inference
from eeki_label.errors import MeasurementError, MeasurementRecordError, UsageError

METHOD_ID = "baseline-idle-scenario-v1"
DEFAULT_BASELINE_RUNS = 10
DEFAULT_IDLE_RUNS = 10
DEFAULT_SCENARIO_RUNS = 30
DEFAULT_RUN_SECONDS = 1.0
DEFAULT_WARMUP_INFERENCES = 3
ORDER = "blocked: baseline runs (no session), then idle runs (session loaded), then scenario runs"
CLOCK = "wall clock, UNIX seconds (Python time.time), the meter samples and the run markers alike"


@dataclass(frozen=True)
class ProtocolConfig:
    """Repetitions and run length (defaults: BRIEF §5, 10 baseline, 10 idle, 30 scenario runs)."""

    baseline_runs: int = DEFAULT_BASELINE_RUNS
    idle_runs: int = DEFAULT_IDLE_RUNS
    scenario_runs: int = DEFAULT_SCENARIO_RUNS
    run_seconds: float = DEFAULT_RUN_SECONDS
    inferences_per_run: int | None = None
    """None: ``ceil(run_seconds / warm-up seconds per inference)``."""
    warmup_inferences: int = DEFAULT_WARMUP_INFERENCES
    seed: int = 0
    threads: int | None = None

    def check(self) -> None:
        if self.baseline_runs < 2 or self.scenario_runs < 2:
            raise UsageError("at least 2 baseline and 2 scenario runs are needed for a confidence interval")
        if self.idle_runs < 0:
            raise UsageError("--idle-runs cannot be negative")
        if not (self.run_seconds > 0 and math.isfinite(self.run_seconds)):
            raise UsageError("--run-seconds must be a positive number")
        if self.inferences_per_run is not None and self.inferences_per_run < 1:
            raise UsageError("--inferences-per-run must be at least 1")
        if self.warmup_inferences < 1:
            raise UsageError("at least one warm-up inference is needed")


class Workload(Protocol):
    """What the protocol runs: load a session, warm it up, infer, unload."""

    execution_provider: str

    def load(self) -> None: ...

    def warmup(self, n: int) -> float:
        """Run ``n`` inferences; median seconds per inference."""

    def infer(self) -> None: ...

    def unload(self) -> None: ...


class OnnxWorkload:
    """The model in an onnxruntime session on fixed inputs (``make_feeds`` with the seed)."""

    def __init__(self, loaded, shapes, seed: int = 0, threads: int | None = None, provider: str = "cpu") -> None:
        from eeki_label.profile.runtime import make_feeds

        self.loaded = loaded
        self.threads = threads
        self.feeds = make_feeds(loaded.proto, shapes, seed)
        self.execution_provider = "CUDAExecutionProvider" if provider == "cuda" else "CPUExecutionProvider"
        self.session = None

    def load(self) -> None:
        import onnxruntime as ort

        from eeki_label.errors import RuntimeProfileError

        so = ort.SessionOptions()
        so.log_severity_level = 4  # failures become one-line errors; onnxruntime's own log stays off stderr
        if self.threads:
            so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        providers = [self.execution_provider] + (["CPUExecutionProvider"]
                                                 if self.execution_provider != "CPUExecutionProvider" else [])
        try:
            self.session = ort.InferenceSession(str(self.loaded.path), sess_options=so, providers=providers)
        except Exception as e:
            raise RuntimeProfileError(f"onnxruntime could not load the model: {' '.join(str(e).split())[:300]}") from e
        self.execution_provider = self.session.get_providers()[0]  # what actually runs it, for the record

    def infer(self) -> None:
        from eeki_label.profile.runtime import _run

        _run(self.session, self.feeds)

    def warmup(self, n: int) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.infer()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def unload(self) -> None:
        self.session = None


@dataclass
class ProtocolResult:
    runs: list[RecordRun]
    inferences_per_run: int
    inferences_per_run_source: str
    warmup_latency_s: float | None
    started_unix_s: float
    notes: list[str] = field(default_factory=list)


Progress = Callable[[str, int, int], None]


def run_protocol(
    meter: LiveMeter, workload: Workload, config: ProtocolConfig, *, clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep, progress: Progress | None = None,
    on_run: Callable[[RecordRun], None] | None = None,
) -> ProtocolResult:
    """Run baseline, idle and scenario windows (module docstring) and return the runs with their
    markers, raw samples and energies (None for ``--meter trace``). ``clock``/``sleep`` are parameters
    so that tests drive a simulated machine."""
    config.check()
    step = progress or (lambda name, done, total: None)
    info = meter.info
    runs: list[RecordRun] = []
    started = clock()

    def window(phase: str, index: int, body: Callable[[], int]) -> None:
        gc.collect()
        meter.start()
        start = clock()
        n = body()
        end = clock()
        raw = meter.stop()
        energy = None
        if raw:
            energy = {d: window_energy_j(info, d, raw[d]) for d in info.domains}
        run = RecordRun(seq=len(runs), phase=phase, index=index, start_unix_s=start, end_unix_s=end, inferences=n,
                        samples={d: [list(s) for s in v] for d, v in raw.items()}, energy_j=energy)
        runs.append(run)
        if on_run:
            on_run(run)

    def pause() -> int:
        end = clock() + config.run_seconds
        while (left := end - clock()) > 0:
            sleep(min(left, 0.1))
            meter.poll()
        return 0

    for i in range(config.baseline_runs):
        step("measure: baseline", i + 1, config.baseline_runs)
        window("baseline", i, pause)

    workload.load()
    try:
        latency = workload.warmup(config.warmup_inferences)
        if config.inferences_per_run is not None:
            n_inf, source = config.inferences_per_run, "given"
        else:
            n_inf = max(1, math.ceil(config.run_seconds / latency - 1e-9)) if latency > 0 else 1
            source = f"ceil(run_seconds / warm-up median latency {latency:.6g} s)"
        for i in range(config.idle_runs):
            step("measure: idle", i + 1, config.idle_runs)
            window("idle", i, pause)

        def scenario() -> int:
            for _ in range(n_inf):
                workload.infer()
                meter.poll()
            return n_inf

        for i in range(config.scenario_runs):
            step("measure: scenario", i + 1, config.scenario_runs)
            window("scenario", i, scenario)
    finally:
        workload.unload()
    return ProtocolResult(runs, n_inf, source, latency, started)


# ---------------------------------------------------------------------------------------------------
# Records


def _iso(unix_s: float) -> str:
    return _dt.datetime.fromtimestamp(unix_s, _dt.timezone.utc).isoformat(timespec="milliseconds")


def build_record(loaded, shapes, config: ProtocolConfig, meter_info: MeterInfo, result: ProtocolResult,
                 execution_provider: str, trace_settings: TraceSettings | None = None,
                 sample_interval_s: float = 0.0) -> MeasurementRecord:
    import onnxruntime

    from eeki_label.profile.runtime import host_cpu_name

    return MeasurementRecord(
        format=RECORD_FORMAT, format_version=RECORD_FORMAT_VERSION, created_at=_iso(result.started_unix_s),
        tool=RecordTool(name="eeki-label", version=__version__, onnxruntime_version=onnxruntime.__version__,
                        python_version=platform.python_version()),
        model=RecordModel(file_name=loaded.name, sha256=loaded.sha256, file_bytes=loaded.file_bytes),
        host=RecordHost(cpu=host_cpu_name(), logical_cpus=os.cpu_count() or 1, machine=platform.machine(),
                        platform=platform.platform()),
        setup=RecordSetup(
            input_shapes={k: list(v) for k, v in shapes.items()}, seed=config.seed, threads=config.threads,
            execution_provider=execution_provider, baseline_runs=config.baseline_runs, idle_runs=config.idle_runs,
            scenario_runs=config.scenario_runs, run_seconds=config.run_seconds,
            inferences_per_run=result.inferences_per_run, inferences_per_run_source=result.inferences_per_run_source,
            warmup_inferences=config.warmup_inferences, warmup_latency_s=result.warmup_latency_s, order=ORDER,
            sample_interval_s=0.0 if meter_info.kind == "trace" else sample_interval_s, clock=CLOCK,
        ),
        meter=_record_meter(meter_info),
        trace_settings=trace_settings,
        runs=result.runs,
        notes=result.notes,
    )


def _record_meter(info: MeterInfo) -> RecordMeter:
    return RecordMeter(kind=info.kind, description=info.description, domains=list(info.domains), reading=info.reading,
                       unit=info.unit, counter_range=dict(info.counter_range), details=dict(info.details))


def meter_info_of(record: MeasurementRecord) -> MeterInfo:
    m = record.meter
    return MeterInfo(m.kind, m.description, tuple(m.domains), m.reading, m.unit, dict(m.counter_range), dict(m.details))


def dump_record(record: MeasurementRecord) -> str:
    return record.model_dump_json(indent=1) + "\n"


def markers_csv(record: MeasurementRecord) -> str:
    """The run markers, for aligning an external meter's log: one line per run (``seq`` 0, 1, ...),
    then one per phase (``seq`` empty, ``index`` ``all``: first run's start to last run's end), in
    wall-clock UNIX seconds and ISO 8601 UTC."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["seq", "phase", "index", "start_unix_s", "end_unix_s", "start_utc", "end_utc", "inferences"])
    rows = [(r.seq, r.phase, r.index, r.start_unix_s, r.end_unix_s, r.inferences) for r in record.runs]
    for phase in ("baseline", "idle", "scenario"):
        runs = [r for r in record.runs if r.phase == phase]
        if runs:
            rows.append(("", phase, "all", runs[0].start_unix_s, runs[-1].end_unix_s, sum(r.inferences for r in runs)))
    for seq, phase, index, start, end, n in rows:
        w.writerow([seq, phase, index, f"{start:.6f}", f"{end:.6f}", _iso(start), _iso(end), n])
    return buf.getvalue()


def attach_trace(record: MeasurementRecord, trace: PowerTrace) -> MeasurementRecord:
    """The record with the external meter's samples and every run's energy integrated from them."""
    if record.meter.kind != "trace":
        raise MeasurementRecordError(f"the record was measured with {record.meter.kind}, not an external trace")
    if not record.runs:
        raise MeasurementRecordError("the record has no runs")
    first = min(r.start_unix_s for r in record.runs)
    last = max(r.end_unix_s for r in record.runs)
    if trace.times_unix_s[0] > first or trace.times_unix_s[-1] < last:
        raise MeasurementRecordError(
            f"trace {trace.file_name} spans {_iso(trace.times_unix_s[0])} .. {_iso(trace.times_unix_s[-1])}, the runs "
            f"{_iso(first)} .. {_iso(last)}: it does not cover them (wrong file, or a clock offset: --trace-offset-s)")
    domain = record.meter.domains[0]
    runs = [r.model_copy(update={"energy_j": {domain: trace.energy_j(r.start_unix_s, r.end_unix_s)}})
            for r in record.runs]
    runs = [RecordRun.model_validate(r.model_dump()) for r in runs]
    samples = trace.window(first, last)
    kept = RecordTrace(format=trace.source_format, file_name=trace.file_name, sha256=trace.sha256,
                       series=trace.series, offset_s=trace.offset_s, samples=[list(s) for s in samples])
    notes = list(record.notes)
    step = trace.median_interval_s()
    shortest = min(r.end_unix_s - r.start_unix_s for r in record.runs)
    if step > shortest / 10:
        notes.append(f"the trace's median sample interval ({step:.3g} s) is coarse against the shortest run "
                     f"({shortest:.3g} s): longer runs (--run-seconds) integrate more precisely")
    return MeasurementRecord.model_validate({**record.model_dump(), "runs": [r.model_dump() for r in runs],
                                             "trace": kept.model_dump(), "notes": notes})


def load_trace_for(record: MeasurementRecord, path) -> PowerTrace:
    s = record.trace_settings or TraceSettings()
    return load_trace(path, s.format, s.field, s.precision, s.offset_s)


#: Largest measurement record accepted, bytes (a record of the default protocol is well under 1 MB).
MAX_RECORD_BYTES = 256 * 1024**2


def load_record(path) -> tuple[MeasurementRecord, str]:
    """Read and check an archived record; returns it and the sha256 of its bytes. Every stored energy
    is recomputed from the raw samples (or the stored trace samples) and must match."""
    from eeki_label.fileio import read_regular_file

    path = Path(path)
    raw = read_regular_file(path, MAX_RECORD_BYTES, MeasurementRecordError, "measurement record")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: arrays or objects nested absurdly deep
        raise MeasurementRecordError(f"measurement record {path.name} is not JSON: {str(e)[:200]}") from e
    if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
        raise MeasurementRecordError(f"{path.name} is not an eeki-label measurement record (format {RECORD_FORMAT!r})")
    if doc.get("format_version") != RECORD_FORMAT_VERSION:
        raise MeasurementRecordError(
            f"measurement record {path.name} has format version {doc.get('format_version')!r}; "
            f"this eeki-label reads {RECORD_FORMAT_VERSION!r}")
    try:
        record = MeasurementRecord.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise MeasurementRecordError(f"measurement record {path.name}: {where}: {err['msg']}") from e
    check_consistency(record, path.name)
    return record, hashlib.sha256(raw).hexdigest()


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def check_consistency(record: MeasurementRecord, name: str = "record") -> None:
    info = meter_info_of(record)
    seqs = [r.seq for r in record.runs]
    if seqs != list(range(len(record.runs))):
        raise MeasurementRecordError(f"measurement record {name}: runs are not in recorded order 0..{len(seqs) - 1}")
    counts = {p: sum(r.phase == p for r in record.runs) for p in ("baseline", "idle", "scenario")}
    s = record.setup
    if (counts["baseline"], counts["idle"], counts["scenario"]) != (s.baseline_runs, s.idle_runs, s.scenario_runs):
        raise MeasurementRecordError(f"measurement record {name}: the runs do not match setup's counts {counts}")
    for r in record.runs:
        if r.end_unix_s < r.start_unix_s:
            raise MeasurementRecordError(f"measurement record {name}: run {r.seq} ends before it starts")
        if r.phase == "scenario" and r.inferences < 1:
            raise MeasurementRecordError(f"measurement record {name}: scenario run {r.seq} has no inferences")
        if r.energy_j is None:
            continue
        if set(r.energy_j) != set(info.domains):
            raise MeasurementRecordError(f"measurement record {name}: run {r.seq} has other domains than the meter")
        if info.kind == "trace":
            if record.trace is None:
                raise MeasurementRecordError(f"measurement record {name}: energies without the trace they came from")
            t = [p[0] for p in record.trace.samples]
            w = [p[1] for p in record.trace.samples]
            again = {info.domains[0]: integrate_power_j(t, w, r.start_unix_s, r.end_unix_s)}
        else:
            again = {d: window_energy_j(info, d, [tuple(p) for p in r.samples.get(d, [])]) for d in info.domains}
        for d, e in r.energy_j.items():
            if not _close(e, again[d]):
                raise MeasurementRecordError(
                    f"measurement record {name}: run {r.seq} {d}: stored {e:.9g} J, its samples give {again[d]:.9g} J "
                    "(the record was altered or damaged)")


def check_record_matches(record: MeasurementRecord, loaded, shapes) -> None:
    """The record must be of this model file (sha256) at these input shapes."""
    if record.model.sha256 != loaded.sha256:
        raise MeasurementRecordError(
            f"the measurement record is of model sha256 {record.model.sha256[:16]}… ({record.model.file_name}), "
            f"not of this model ({loaded.sha256[:16]}…)")
    want = {k: list(v) for k, v in shapes.items()}
    if record.setup.input_shapes != want:
        got = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in record.setup.input_shapes.items())
        raise MeasurementRecordError(f"the measurement record was taken with input shapes {got}; give the same --input-shape")


# ---------------------------------------------------------------------------------------------------
# Analysis


@dataclass(frozen=True)
class MeasuredEnergy:
    """The figures a label takes from a record (joules per inference, watts, counts)."""

    net: NetEnergy
    interval_method: str
    meter: str
    domains: tuple[str, ...]
    baseline_runs: int
    idle_runs: int
    scenario_runs: int
    inferences_per_run: int
    idle_power_w: float | None
    scenario_power_w: float
    duration_s_per_inference: float
    notes: tuple[str, ...]

    @property
    def energy_j(self) -> float:
        return self.net.mean_j


def _run_energy(r: RecordRun) -> float:
    return math.fsum(r.energy_j.values())


def analyse(record: MeasurementRecord) -> MeasuredEnergy:
    """Net energy per inference and its interval from a record (see the module docstring)."""
    if any(r.energy_j is None for r in record.runs):
        raise MeasurementRecordError(
            "the record has no energies yet: it was taken with --meter trace; give the meter's log with --trace FILE")
    info = meter_info_of(record)
    base = [r for r in record.runs if r.phase == "baseline"]
    idle = [r for r in record.runs if r.phase == "idle"]
    scen = [r for r in record.runs if r.phase == "scenario"]

    def span(r: RecordRun) -> float:
        if info.kind == "trace":
            return r.end_unix_s - r.start_unix_s
        first = r.samples[info.domains[0]]
        return first[-1][0] - first[0][0]  # the window the energy was read over

    if any(span(r) <= 0 for r in base + idle + scen):
        raise MeasurementRecordError("a run of the record has zero duration")
    try:
        net = net_energy_per_inference([_run_energy(r) for r in scen], [span(r) for r in scen],
                                       [r.inferences for r in scen], [_run_energy(r) for r in base],
                                       [span(r) for r in base])
    except ValueError as e:
        raise MeasurementRecordError(str(e)) from e
    if not net.mean_j > 0:
        raise MeasurementError(
            f"net energy per inference is not positive ({net.mean_j * 1e3:.4g} mJ; baseline {net.baseline_power_w:.4g} W): "
            "the meter cannot resolve this model against the baseline; use longer runs (--run-seconds) or a finer meter")
    idle_w = mean_var([_run_energy(r) / span(r) for r in idle])[0] if idle else None
    scen_w = mean_var([_run_energy(r) / span(r) for r in scen])[0]
    notes = list(record.notes)
    if net.ci95_j[0] <= 0:
        notes.append("the 95 % interval of the net energy reaches zero: the model's energy is barely above the "
                     "baseline's scatter")
    return MeasuredEnergy(
        net=net, interval_method=INTERVAL_METHOD, meter=info.kind, domains=info.domains,
        baseline_runs=len(base), idle_runs=len(idle), scenario_runs=len(scen),
        inferences_per_run=record.setup.inferences_per_run, idle_power_w=idle_w, scenario_power_w=scen_w,
        duration_s_per_inference=math.fsum(span(r) / r.inferences for r in scen) / len(scen), notes=tuple(notes),
    )
