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
import dataclasses
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
    READING_COUNTER, TRACE_INTEGRATION, LiveMeter, MeterInfo, PowerTrace, integrate_power_j, load_trace,
    window_energy_j,
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


@dataclass(frozen=True)
class MeasurementRules:
    """The rule set's ``measurement`` section (rules/README.md): sampling minimum, resolution gate and
    clock alignment. Rule sets without the section get the values of eeki-rules 2.0.0, where it was
    introduced (:data:`FIRST_MEASUREMENT_RULES`)."""

    min_samples_per_scenario_run: int = 5
    max_relative_ci95_width: float = 0.5
    offset_search_s: float = 60.0
    offset_max_auto_s: float = 10.0
    offset_min_explained: float = 0.5
    source: str = "eeki-rules 2.0.0 measurement section"

    @classmethod
    def of(cls, rules) -> "MeasurementRules":
        raw = getattr(rules, "raw", None) or {}
        sec = raw.get("measurement")
        if not isinstance(sec, dict):
            return cls(source=f"eeki-rules {getattr(rules, 'version', '?')} has no measurement section: the values "
                              "of eeki-rules 2.0.0 apply")
        try:
            off = sec.get("clock_offset", {})
            return cls(int(sec["min_samples_per_scenario_run"]), float(sec["max_relative_ci95_width"]),
                       float(off["search_s"]), float(off["max_auto_s"]), float(off["min_explained"]),
                       f"eeki-rules {rules.version} measurement section")
        except (KeyError, TypeError, ValueError) as e:
            from eeki_label.errors import CatalogueError

            raise CatalogueError(f"rule set {getattr(rules, 'version', '?')}: measurement section is incomplete: {e}") from e


FIRST_MEASUREMENT_RULES = MeasurementRules()


def _stored_trace(trace: PowerTrace, first: float, last: float, margin: int = 3) -> PowerTrace:
    """The samples that cover [first, last] and ``margin`` more on each side: what a record keeps, and
    what its energies are integrated from (so a replay from the record gives the same joules)."""
    import numpy as np

    t = np.asarray(trace.times_unix_s)
    lo = max(int(np.searchsorted(t, first, side="right")) - 1 - margin, 0)
    hi = min(int(np.searchsorted(t, last, side="left")) + 1 + margin, len(t))
    return dataclasses.replace(trace, times_unix_s=trace.times_unix_s[lo:hi], power_w=trace.power_w[lo:hi])


def _offset_text(x: float) -> str:
    return f"{x:+.3f} s"


def align_trace(record: MeasurementRecord, trace: PowerTrace, settings: TraceSettings,
                rules: MeasurementRules = FIRST_MEASUREMENT_RULES) -> tuple[PowerTrace, float, str, list[str]]:
    """Apply the clock offset (logger clock minus tool clock): the given one (``--trace-offset-s``) or
    the one the power steps show (:mod:`eeki_label.energy.align`). Returns the shifted trace, the offset,
    how it was found, and notes. Refuses (:class:`MeasurementRecordError`, naming the offset) a detected
    offset larger than the rule set's ``max_auto_s`` or an ambiguous one."""
    from eeki_label.energy.align import scan_offset

    runs = [(r.phase, r.start_unix_s, r.end_unix_s) for r in record.runs]
    dt = trace.median_interval_s()
    notes: list[str] = []
    if settings.clock_offset_s is not None:
        off = float(settings.clock_offset_s)
        shifted = trace.shifted(-off)
        scan = scan_offset(shifted.times_unix_s, shifted.power_w, runs, min(rules.offset_search_s, 5.0), dt,
                           rules.offset_min_explained)
        if scan.status == "detected":
            notes.append(f"after the given clock offset {_offset_text(off)} the power steps still lie "
                         f"{_offset_text(scan.offset_s)} from the markers (logger clock minus tool clock)")
        return shifted, off, "given (--trace-offset-s)", notes
    scan = scan_offset(trace.times_unix_s, trace.power_w, runs, rules.offset_search_s, dt, rules.offset_min_explained)
    if scan.status == "ambiguous":
        raise MeasurementRecordError(
            f"trace {trace.file_name}: the power steps fit the run markers at two clock offsets, {_offset_text(scan.offset_s)} "
            f"and {_offset_text(scan.second_s or 0.0)} (logger clock minus tool clock): give the right one with "
            "--trace-offset-s")
    if scan.status == "detected":
        if abs(scan.offset_s) > rules.offset_max_auto_s:
            raise MeasurementRecordError(
                f"trace {trace.file_name}: the power steps line up with the run markers at a clock offset of "
                f"{_offset_text(scan.offset_s)} (logger clock minus tool clock), more than the "
                f"{rules.offset_max_auto_s:g} s corrected automatically: check that the trace belongs to this "
                f"record, then give --trace-offset-s {scan.offset_s:.3f}")
        notes.append(f"the logger clock was {_offset_text(scan.offset_s)} off the tool clock (found from the power "
                     f"steps to {scan.resolution_s:.2g} s); corrected")
        return trace.shifted(-scan.offset_s), scan.offset_s, f"detected from the power steps (+-{scan.resolution_s:.2g} s)", notes
    if scan.status == "aligned":
        return trace, 0.0, f"checked: the power steps lie at the markers (within {dt:.3g} s)", notes
    notes.append("the trace shows no distinct power steps between the phases, so its clock could not be checked "
                 "against the markers; offset 0 assumed (give --trace-offset-s if the logger's clock is off)")
    return trace, 0.0, "undetectable (no distinct power steps; 0 assumed)", notes


def attach_trace(record: MeasurementRecord, trace: PowerTrace, settings: TraceSettings | None = None,
                 rules: MeasurementRules = FIRST_MEASUREMENT_RULES) -> MeasurementRecord:
    """The record with the external meter's samples and every run's energy integrated from them
    (clock aligned first: :func:`align_trace`; integration step-exact: :func:`step_window_energy`)."""
    if record.meter.kind != "trace":
        raise MeasurementRecordError(f"the record was measured with {record.meter.kind}, not an external trace")
    if not record.runs:
        raise MeasurementRecordError("the record has no runs")
    settings = settings or record.trace_settings or TraceSettings()
    first = min(r.start_unix_s for r in record.runs)
    last = max(r.end_unix_s for r in record.runs)
    if trace.times_unix_s[-1] < first or trace.times_unix_s[0] > last:
        raise MeasurementRecordError(
            f"trace {trace.file_name} spans {_iso(trace.times_unix_s[0])} .. {_iso(trace.times_unix_s[-1])}, the runs "
            f"{_iso(first)} .. {_iso(last)}: they do not overlap (wrong file, or a clock offset: --trace-offset-s, "
            "logger clock minus tool clock)")
    aligned, offset, source, notes = align_trace(record, trace, settings, rules)
    if aligned.times_unix_s[0] > first or aligned.times_unix_s[-1] < last:
        raise MeasurementRecordError(
            f"trace {trace.file_name} spans {_iso(aligned.times_unix_s[0])} .. {_iso(aligned.times_unix_s[-1])} "
            f"(clock offset {_offset_text(offset)} applied), the runs {_iso(first)} .. {_iso(last)}: it does not cover "
            "them (an incomplete log, or a clock offset: --trace-offset-s, logger clock minus tool clock)")
    kept_trace = _stored_trace(aligned, first, last)
    domain = record.meter.domains[0]
    runs = [RecordRun.model_validate({**r.model_dump(),
                                      "energy_j": {domain: kept_trace.energy_j(r.start_unix_s, r.end_unix_s)}})
            for r in record.runs]
    kept = RecordTrace(format=trace.source_format, file_name=trace.file_name, sha256=trace.sha256,
                       series=trace.series, offset_s=kept_trace.offset_s,
                       samples=[[a, b] for a, b in zip(kept_trace.times_unix_s, kept_trace.power_w)],
                       sample_mode=kept_trace.sample_mode, integration=TRACE_INTEGRATION, clock_offset_s=offset,
                       clock_offset_source=source, median_interval_s=trace.median_interval_s())
    notes = [n for n in record.notes if not n.startswith("trace: ")] + [f"trace: {n}" for n in notes]
    return MeasurementRecord.model_validate({**record.model_dump(), "runs": [r.model_dump() for r in runs],
                                             "trace": kept.model_dump(), "notes": notes})


def record_trace(record: MeasurementRecord) -> PowerTrace | None:
    """The stored trace samples as a :class:`PowerTrace` (energies are integrated from these)."""
    tr = record.trace
    if tr is None:
        return None
    return PowerTrace(tuple(p[0] for p in tr.samples), tuple(p[1] for p in tr.samples), tr.format, tr.file_name,
                      tr.sha256, tr.series, tr.offset_s, tr.sample_mode or "instant")


def load_trace_for(record: MeasurementRecord, path, settings: TraceSettings | None = None) -> PowerTrace:
    """Read the trace of a record taken with ``--meter trace``; ``settings`` (from the command line)
    override the record's own."""
    s = settings or record.trace_settings or TraceSettings()
    return load_trace(path, s.format, s.field, s.precision, s.offset_s, s.sample_mode)


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
            if record.trace.integration == TRACE_INTEGRATION:
                again = {info.domains[0]: record_trace(record).energy_j(r.start_unix_s, r.end_unix_s)}
            elif record.trace.integration is None:  # eeki-label 0.2: linear interpolation
                t = [p[0] for p in record.trace.samples]
                w = [p[1] for p in record.trace.samples]
                again = {info.domains[0]: integrate_power_j(t, w, r.start_unix_s, r.end_unix_s)}
            else:
                raise MeasurementRecordError(
                    f"measurement record {name}: unknown trace integration {record.trace.integration!r}")
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
    quantisation_j: float = 0.0
    """Bound of the integration's remaining quantisation error of the mean, joules per inference."""
    ci95_j: tuple[float, float] = (0.0, 0.0)
    """The statistical interval widened by ``quantisation_j`` on both sides: the label's interval."""
    min_samples_per_run: int | None = None
    """Fewest meter samples inside a scenario run (power meters and traces); None for energy counters."""
    sample_interval_s: float | None = None
    unresolved: str | None = None
    """Why the rule set's resolution gate refuses a grade (None: resolved)."""
    rules_source: str = ""

    @property
    def energy_j(self) -> float:
        return self.net.mean_j


def _run_energy(r: RecordRun) -> float:
    return math.fsum(r.energy_j.values())


def analyse(record: MeasurementRecord, rules: MeasurementRules = FIRST_MEASUREMENT_RULES) -> MeasuredEnergy:
    """Net energy per inference and its interval from a record (see the module docstring).

    The interval is the Welch interval of the runs widened by the bound of the integration's remaining
    quantisation error (trace records). Refuses (:class:`MeasurementError`) a power meter or trace with
    fewer than the rule set's ``min_samples_per_scenario_run`` samples in a scenario run; reports in
    ``unresolved`` when the resolution gate withholds the grade."""
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
    notes = list(record.notes)
    bounds: dict[int, float] = {}
    min_samples = interval = None
    trace = record_trace(record) if info.kind == "trace" else None
    if trace is not None:
        windows = {r.seq: trace.window_energy(r.start_unix_s, r.end_unix_s) for r in record.runs}
        interval = record.trace.median_interval_s or trace.median_interval_s()
        if record.trace.integration == TRACE_INTEGRATION:
            bounds = {k: w.bound_j for k, w in windows.items()}
        else:
            notes.append("the trace was integrated by linear interpolation (a record of eeki-label 0.2); give the "
                         "trace again (--trace) for step-exact integration and its quantisation bound")
        min_samples = min(windows[r.seq].samples for r in scen)
    elif info.reading != READING_COUNTER:
        min_samples = min(len(r.samples[info.domains[0]]) for r in scen)
        interval = record.setup.sample_interval_s or None
    if min_samples is not None and min_samples < rules.min_samples_per_scenario_run:
        worst = min(scen, key=lambda r: (windows[r.seq].samples if trace is not None
                                         else len(r.samples[info.domains[0]])))
        rate = f"samples every {interval:.3g} s" if interval else "its sampling"
        raise MeasurementError(
            f"scenario run {worst.index} ({span(worst):.3g} s) holds {min_samples} meter sample(s) ({rate}); the rule "
            f"set asks for at least {rules.min_samples_per_scenario_run} per run: use longer runs (--run-seconds) or a "
            "faster meter")
    try:
        net = net_energy_per_inference([_run_energy(r) for r in scen], [span(r) for r in scen],
                                       [r.inferences for r in scen], [_run_energy(r) for r in base],
                                       [span(r) for r in base])
    except ValueError as e:
        raise MeasurementRecordError(str(e)) from e
    tau = math.fsum(span(r) / r.inferences for r in scen) / len(scen)
    quant = 0.0
    if bounds:
        quant = (math.fsum(bounds[r.seq] / r.inferences for r in scen) / len(scen)
                 + tau * math.fsum(bounds[r.seq] / span(r) for r in base) / len(base))
    lo, hi = net.ci95_j[0] - quant, net.ci95_j[1] + quant
    idle_w = mean_var([_run_energy(r) / span(r) for r in idle])[0] if idle else None
    scen_w = mean_var([_run_energy(r) / span(r) for r in scen])[0]
    unresolved = None
    if not net.mean_j > 0 or lo <= 0:
        unresolved = (f"the 95 % interval of the net energy per inference ({lo * 1e3:.4g} .. {hi * 1e3:.4g} mJ) "
                      f"includes zero: the meter does not resolve this model against the baseline "
                      f"({net.baseline_power_w:.4g} W); use more or longer runs or a finer meter")
    elif (hi - lo) > rules.max_relative_ci95_width * net.mean_j:
        unresolved = (f"the 95 % interval of the net energy per inference ({lo * 1e3:.4g} .. {hi * 1e3:.4g} mJ) is "
                      f"{(hi - lo) / net.mean_j:.0%} of the estimate, wider than the rule set's "
                      f"{rules.max_relative_ci95_width:.0%}; use more or longer runs or a finer meter")
    return MeasuredEnergy(
        net=net, interval_method=INTERVAL_METHOD, meter=info.kind, domains=info.domains,
        baseline_runs=len(base), idle_runs=len(idle), scenario_runs=len(scen),
        inferences_per_run=record.setup.inferences_per_run, idle_power_w=idle_w, scenario_power_w=scen_w,
        duration_s_per_inference=tau, notes=tuple(notes), quantisation_j=quant, ci95_j=(lo, hi),
        min_samples_per_run=min_samples, sample_interval_s=interval, unresolved=unresolved,
        rules_source=rules.source,
    )
