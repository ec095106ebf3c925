"""Benchmark: integration error of a measured label vs the meter's sample rate and the run length.

A simulated external meter (``eeki_label/energy/simulate.py``: 50 W baseline, 55 W idle with the
session loaded, 80 W while inferring, 0.5 W Gaussian noise, 10 baseline / 10 idle / 30 scenario runs
with +-2 % jitter in run length, a random sample phase) logs every protocol; the net energy per
inference is known exactly. For each sample rate, run length and sample mode (``mean-preceding``:
the meter averages over its update period; ``instant``: a polled reading), several seeds are
integrated with the step-exact method and with the linear interpolation of eeki-label 0.2
(:func:`eeki_label.energy.meters.integrate_power_j`), and a run with the logger clock 2 s ahead is
aligned. Printed per row: the mean and worst error of the estimate, the interval's half-width, how
often the known answer lies inside the interval, and what the label would say (graded, not resolved,
or refused for too few samples).

    python bench/bench_measured.py [--seeds N] [--gap-s S] [--out bench/results/measured.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

from eeki_label.energy.measure import MeasurementRules, analyse, attach_trace
from eeki_label.energy.meters import PowerTrace, integrate_power_j
from eeki_label.energy.simulate import StepMachine, known_net_energy_j, protocol_runs, sample_meter, synthetic_record
from eeki_label.energy.stats import net_energy_per_inference
from eeki_label.errors import MeasurementError, MeasurementRecordError
from eeki_label.rules import load_rules

ROOT = Path(__file__).resolve().parents[1]
RATES_HZ = (1, 5, 20, 100, 1000)
RUN_SECONDS = (0.5, 1.0, 5.0)


def linear_estimate(runs, t, p) -> float:
    """Net energy per inference by linear interpolation (eeki-label 0.2)."""
    def e(r):
        return integrate_power_j(t, p, r.start_unix_s, r.end_unix_s)
    base = [r for r in runs if r.phase == "baseline"]
    scen = [r for r in runs if r.phase == "scenario"]
    return net_energy_per_inference([e(r) for r in scen], [r.end_unix_s - r.start_unix_s for r in scen],
                                    [r.inferences for r in scen], [e(r) for r in base],
                                    [r.end_unix_s - r.start_unix_s for r in base]).mean_j


def one(rate_hz, run_s, mode, seed, offset_s, rules, gap_s=0.003):
    machine = StepMachine(gap_s=gap_s)
    runs = protocol_runs(run_s=run_s, inferences_per_run=10, machine=machine, jitter_s=0.02 * run_s, seed=seed)
    known = known_net_energy_j(runs, machine)
    t, p = sample_meter(runs, machine, rate_hz=rate_hz, mode=mode, clock_offset_s=offset_s, seed=seed)
    trace = PowerTrace(tuple(t), tuple(p), "csv", "sim.csv", "0" * 64, "power_w", 0.0, "mean-preceding")
    out = {"known_j": known, "linear_error": linear_estimate(runs, t - offset_s, p) / known - 1}
    try:
        m = analyse(attach_trace(synthetic_record(runs, run_s), trace, rules=rules), rules)
    except MeasurementError as e:  # the sampling minimum
        return {**out, "status": "refused (too few samples)", "why": str(e)}
    except MeasurementRecordError as e:  # clock alignment
        return {**out, "status": "refused (clock)", "why": str(e)}
    lo, hi = m.ci95_j
    return {**out, "status": "not resolved" if m.unresolved else "graded", "error": m.energy_j / known - 1,
            "half_width": (hi - lo) / 2 / known, "quantisation": m.quantisation_j / known, "inside": lo <= known <= hi}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--gap-s", type=float, default=0.003,
                    help="Pause between runs, drawing idle power between scenario runs (default 3 ms, as measure).")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "measured.json")
    args = ap.parse_args()
    rules = MeasurementRules.of(load_rules("2.0.0"))
    rows = []
    t0 = time.perf_counter()
    print("| rate | run | sample mode | offset | status | error mean (worst) | linear 0.2 error | CI half-width "
          "| of which quantisation | known inside |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate in RATES_HZ:
        for run_s in RUN_SECONDS:
            for mode in ("mean-preceding", "instant"):
                for offset in ((0.0, 2.0) if mode == "instant" else (0.0,)):
                    res = [one(rate, run_s, mode, seed, offset, rules, args.gap_s) for seed in range(args.seeds)]
                    ok = [r for r in res if "error" in r]
                    status = [f"{k} {sum(r['status'] == k for r in res)}/{len(res)}"
                              for k in sorted({r["status"] for r in res})]
                    row = {"rate_hz": rate, "run_s": run_s, "mode": mode, "clock_offset_s": offset,
                           "status": status, "seeds": args.seeds,
                           "linear_error_mean": float(np.mean([r["linear_error"] for r in res]))}
                    if ok:
                        errs = [r["error"] for r in ok]
                        row.update(error_mean=float(np.mean(errs)), error_worst=float(max(errs, key=abs)),
                                   half_width_mean=float(np.mean([r["half_width"] for r in ok])),
                                   quantisation_mean=float(np.mean([r["quantisation"] for r in ok])),
                                   inside=sum(r["inside"] for r in ok))
                    rows.append(row)
                    pct = (lambda x: f"{100 * x:+.2f} %")
                    if ok:
                        cells = (f"{pct(row['error_mean'])} ({pct(row['error_worst'])})", pct(row["linear_error_mean"]),
                                 f"{100 * row['half_width_mean']:.2f} %", f"{100 * row['quantisation_mean']:.2f} %",
                                 f"{row['inside']}/{len(ok)}")
                    else:
                        cells = ("-", pct(row["linear_error_mean"]), "-", "-", "-")
                    print(f"| {rate} Hz | {run_s:g} s | {mode} | {offset:g} s | {', '.join(status)} | " + " | ".join(cells)
                          + " |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "measured-integration", "machine": {"baseline_w": 50, "idle_w": 55, "scenario_w": 80,
                                                          "noise_w": 0.5, "runs": "10/10/30", "jitter": "2 %",
                                                          "gap_s": args.gap_s},
        "python": platform.python_version(), "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
    }, indent=1) + "\n")
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
