"""A simulated external power meter whose answer is known, for tests, the benchmark
(``bench/bench_measured.py``) and anyone checking ``measure --meter trace`` / ``assess --trace``.

The machine draws step-shaped power: ``baseline_w`` outside the model's session, ``idle_w`` while the
session is loaded and idle, ``scenario_w`` while it infers; between two scenario runs (the protocol's
garbage collection) it idles. The meter samples at ``rate_hz`` either the power at the instant
(``instant``) or the mean power over the interval ending at the timestamp (``mean-preceding``), adds
Gaussian noise, and stamps with a clock that is ``clock_offset_s`` ahead of the tool's (logger clock
minus tool clock). The net energy per inference is then known exactly:
``mean_i((scenario_w - baseline_w) * t_i / n_i)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eeki_label.energy.record import RecordRun

T0_UNIX_S = 1_700_000_000.0


@dataclass(frozen=True)
class StepMachine:
    baseline_w: float = 50.0
    idle_w: float = 55.0
    scenario_w: float = 80.0
    load_s: float = 2.0
    """Session load and warm-up between the baseline and the idle runs (drawing ``scenario_w``)."""
    gap_s: float = 0.003
    """Between two runs (garbage collection, meter start)."""


def protocol_runs(baseline_runs: int = 10, idle_runs: int = 10, scenario_runs: int = 30, run_s: float = 1.0,
                  inferences_per_run: int = 10, machine: StepMachine = StepMachine(), t0: float = T0_UNIX_S,
                  jitter_s: float = 0.0, seed: int = 0) -> list[RecordRun]:
    """Run markers as ``measure`` writes them (scenario runs last ``run_s`` +- ``jitter_s``)."""
    rng = np.random.default_rng(seed)
    runs: list[RecordRun] = []
    t = t0
    plan = [("baseline", 0)] * baseline_runs + [("idle", 0)] * idle_runs + [("scenario", inferences_per_run)] * scenario_runs
    for i, (phase, n) in enumerate(plan):
        if i and plan[i - 1][0] == "baseline" and phase != "baseline":
            t += machine.load_s
        length = run_s + (float(rng.uniform(-jitter_s, jitter_s)) if phase == "scenario" and jitter_s else 0.0)
        runs.append(RecordRun(seq=i, phase=phase, index=sum(p[0] == phase for p in plan[:i]), start_unix_s=t,
                              end_unix_s=t + length, inferences=n, samples={}, energy_j=None))
        t += length + machine.gap_s
    return runs


def _segments(runs: list[RecordRun], m: StepMachine, margin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints (tool clock) and the power from each breakpoint to the next."""
    level = {"baseline": m.baseline_w, "idle": m.idle_w, "scenario": m.scenario_w}
    edges = [runs[0].start_unix_s - margin_s]
    watts = [m.baseline_w]
    for i, r in enumerate(runs):
        edges.append(r.start_unix_s)
        watts.append(level[r.phase])
        nxt = runs[i + 1] if i + 1 < len(runs) else None
        edges.append(r.end_unix_s)
        if nxt is None:
            watts.append(m.baseline_w)  # session unloaded
        elif r.phase == "baseline" and nxt.phase != "baseline":
            watts.append(m.scenario_w)  # loading and warming up the session
        elif r.phase == "baseline":
            watts.append(m.baseline_w)
        else:
            watts.append(m.idle_w)
    edges.append(runs[-1].end_unix_s + margin_s)
    return np.asarray(edges), np.asarray(watts + [m.baseline_w])


def sample_meter(runs: list[RecordRun], machine: StepMachine = StepMachine(), rate_hz: float = 20.0,
                 noise_w: float = 0.5, mode: str = "mean-preceding", clock_offset_s: float = 0.0, seed: int = 0,
                 margin_s: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps in the logger's clock, watts) of the simulated meter, covering the runs with
    ``margin_s`` on both sides. The sample grid starts at a random phase."""
    rng = np.random.default_rng(seed)
    edges, watts = _segments(runs, machine, margin_s)
    dt = 1.0 / rate_hz
    t = np.arange(edges[0] + dt + float(rng.uniform(0, dt)), edges[-1], dt)
    if mode == "instant":
        p = watts[np.searchsorted(edges, t, side="right") - 1]
    elif mode == "mean-preceding":
        cum = np.concatenate(([0.0], np.cumsum(np.diff(edges) * watts[:-1])))
        energy = np.interp(t, edges, cum)
        before = np.interp(t - dt, edges, cum)
        p = (energy - before) / dt
    else:
        raise ValueError(f"unknown mode {mode!r}")
    p = p + rng.normal(0.0, noise_w, len(t)) if noise_w else p
    return t + clock_offset_s, np.clip(p, 0.0, None)


def known_net_energy_j(runs: list[RecordRun], machine: StepMachine = StepMachine()) -> float:
    scen = [r for r in runs if r.phase == "scenario"]
    return float(np.mean([(machine.scenario_w - machine.baseline_w) * (r.end_unix_s - r.start_unix_s) / r.inferences
                          for r in scen]))


def write_csv(path: "str | Path", times: np.ndarray, watts: np.ndarray) -> Path:
    path = Path(path)
    path.write_text("timestamp,power_w\n" + "".join(f"{a:.6f},{w:.4f}\n" for a, w in zip(times, watts)))
    return path


def synthetic_record(runs: list[RecordRun], run_s: float = 1.0):
    """A pending ``--meter trace`` record of the runs, for a model that is not there (sha256 of nothing)."""
    from eeki_label.energy.measure import CLOCK, ORDER
    from eeki_label.energy.meters import MarkersOnly
    from eeki_label.energy.record import MeasurementRecord

    info = MarkersOnly().info
    count = {p: sum(r.phase == p for r in runs) for p in ("baseline", "idle", "scenario")}
    n = max(r.inferences for r in runs)
    return MeasurementRecord.model_validate({
        "format": "eeki-measurement", "format_version": "1", "created_at": "2023-11-14T22:13:20.000+00:00",
        "tool": {"name": "eeki-label", "version": "simulated", "onnxruntime_version": "-", "python_version": "-"},
        "model": {"file_name": "simulated", "sha256": hashlib.sha256(b"").hexdigest(), "file_bytes": 0},
        "host": {"cpu": "simulated", "logical_cpus": 1, "machine": "-", "platform": "-"},
        "setup": {"input_shapes": {}, "seed": 0, "threads": None, "execution_provider": "CPUExecutionProvider",
                  "baseline_runs": count["baseline"], "idle_runs": count["idle"], "scenario_runs": count["scenario"],
                  "run_seconds": run_s, "inferences_per_run": n, "inferences_per_run_source": "given",
                  "warmup_inferences": 1, "warmup_latency_s": None, "order": ORDER, "sample_interval_s": 0.0,
                  "clock": CLOCK},
        "meter": {"kind": info.kind, "description": info.description, "domains": list(info.domains),
                  "reading": info.reading, "unit": info.unit, "counter_range": {}, "details": {}},
        "runs": [r.model_dump() for r in runs],
    })
