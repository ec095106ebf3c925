"""The baseline/idle/scenario protocol on a simulated machine (fake clock, known powers), the record it
archives, and the net energy per inference with its interval, each against a hand computation."""

import json
import math

import pytest

from eeki_label.energy.measure import (
    MeasurementRecord, ProtocolConfig, analyse, attach_trace, build_record, check_record_matches, dump_record,
    load_record, markers_csv, run_protocol,
)
from eeki_label.energy.meters import MarkersOnly, NvmlMeter, RaplMeter, load_trace
from eeki_label.energy.stats import t_quantile
from eeki_label.errors import MeasurementError, MeasurementRecordError, UsageError
from eeki_label.model_io import load_model
from eeki_label.profile.shapes import resolve_input_shapes
from support import save, tiny_cnn
from meter_fakes import FakeNvml, SimMachine, SimWorkload


@pytest.fixture
def tiny(tmp_path):
    loaded = load_model(save(tiny_cnn(batch=1), tmp_path / "tiny.onnx"))
    return loaded, resolve_input_shapes(loaded.proto, {})


def record_of(meter, sim, cfg, tiny, sample_interval_s=0.0):
    result = run_protocol(meter, SimWorkload(sim), cfg, clock=sim.clock, sleep=sim.sleep)
    loaded, shapes = tiny
    return build_record(loaded, shapes, cfg, meter.info, result, "CPUExecutionProvider",
                        sample_interval_s=sample_interval_s)


def test_rapl_protocol_reproduces_the_net_energy(tmp_path, tiny):
    sim = SimMachine(tmp_path / "powercap")
    meter = RaplMeter(sim.root, clock=sim.clock)
    meter.sample_interval_s = 0.1  # the package counter (20 J range) wraps every ~0.45 s in the scenario
    cfg = ProtocolConfig(baseline_runs=3, idle_runs=2, scenario_runs=4, run_seconds=0.5)
    rec = record_of(meter, sim, cfg, tiny, 0.1)
    assert sim.wraps["pkg"] >= 3 and sim.wraps["dram"] >= 1
    assert [r.phase for r in rec.runs] == ["baseline"] * 3 + ["idle"] * 2 + ["scenario"] * 4
    assert [r.seq for r in rec.runs] == list(range(9))
    assert rec.setup.inferences_per_run == 50  # ceil(0.5 s / 0.01 s)
    m = analyse(rec)
    # baseline: package 10 W + DRAM 1 W = 11 W; scenario: (10 + 2 + 30) + (1 + 3) = 46 W for 0.01 s per inference
    # net per inference = (46 W - 11 W) x 0.01 s = 0.35 J (the loaded session's 2 W is part of it)
    assert m.energy_j == pytest.approx(0.35, rel=1e-5)
    assert m.net.baseline_power_w == pytest.approx(11.0, rel=1e-5)
    assert m.idle_power_w == pytest.approx(13.0, rel=1e-5)  # 10 + 2 + 1
    assert m.scenario_power_w == pytest.approx(46.0, rel=1e-5)
    lo, hi = m.net.ci95_j
    assert lo <= m.energy_j <= hi and hi - lo < 1e-4
    assert m.domains == ("package-0", "package-0/dram") and m.meter == "rapl"


def test_nvml_counter_protocol(tiny):
    sim = SimMachine()
    meter = NvmlMeter(FakeNvml(sim, counter=True), clock=sim.clock)
    rec = record_of(meter, sim, ProtocolConfig(baseline_runs=2, idle_runs=2, scenario_runs=3, run_seconds=0.2), tiny)
    m = analyse(rec)
    # GPU 15 W at baseline; 15 + 5 + 30 = 50 W while inferring: (50 - 15) x 0.01 s = 0.35 J per inference
    assert m.energy_j == pytest.approx(0.35, rel=1e-3)  # the counter has 1 mJ resolution
    assert rec.meter.unit == "mJ" and rec.meter.details["method"].startswith("nvmlDeviceGetTotalEnergyConsumption")


def test_nvml_power_sampling_protocol(tiny):
    sim = SimMachine()
    meter = NvmlMeter(FakeNvml(sim, counter=False), clock=sim.clock, power_interval_s=0.0, threaded=False)
    # no idle runs: every scenario window then opens right after an inference (warm-up or the run before),
    # so the sampled power is 50 W throughout and the trapezoids are exact
    rec = record_of(meter, sim, ProtocolConfig(baseline_runs=2, idle_runs=0, scenario_runs=3, run_seconds=0.2), tiny)
    m = analyse(rec)
    assert m.energy_j == pytest.approx(0.35, rel=1e-5)  # (50 W - 15 W) x 0.01 s; float UNIX times: ~1e-7 s
    assert rec.meter.reading == "power" and len(rec.runs[-1].samples["gpu0"]) == 21  # start + 20 inferences


# ------------------------------------------------------------------------------ records and traces by hand

T0 = 1_700_000_000.0
# baseline [T0, T0+1] at 10 W and [T0+1, T0+2] at 12 W; idle [T0+2, T0+2.5] at 20 W;
# scenario [T0+2.5, T0+3.5] and [T0+3.5, T0+4.5] at 40 W, 10 inferences each; 10 W after.
# Samples every 0.1 s, half-way between markers (at T0 + 0.05 + 0.1 k), from T0 - 0.95 to T0 + 5.45.
LEVELS = [(T0, 10.0), (T0 + 1, 12.0), (T0 + 2, 20.0), (T0 + 2.5, 40.0), (T0 + 4.5, 10.0)]
TRACE = [(T0 + 0.05 + 0.1 * k, next((w for a, w in reversed(LEVELS) if T0 + 0.05 + 0.1 * k >= a), 10.0))
         for k in range(-10, 55)]
RUNS = [("baseline", T0, T0 + 1, 0), ("baseline", T0 + 1, T0 + 2, 0), ("idle", T0 + 2, T0 + 2.5, 0),
        ("scenario", T0 + 2.5, T0 + 3.5, 10), ("scenario", T0 + 3.5, T0 + 4.5, 10)]


def pending_record(tiny) -> MeasurementRecord:
    """A record as 'measure --meter trace' leaves it: markers, no energies."""
    from eeki_label.energy.measure import ProtocolResult
    from eeki_label.energy.record import RecordRun

    runs = [RecordRun(seq=i, phase=p, index=sum(q[0] == p for q in RUNS[:i]), start_unix_s=a, end_unix_s=b,
                      inferences=n, samples={}, energy_j=None) for i, (p, a, b, n) in enumerate(RUNS)]
    loaded, shapes = tiny
    cfg = ProtocolConfig(baseline_runs=2, idle_runs=1, scenario_runs=2, run_seconds=1.0, inferences_per_run=10)
    return build_record(loaded, shapes, cfg, MarkersOnly().info, ProtocolResult(runs, 10, "given", None, T0),
                        "CPUExecutionProvider")


def write_trace(tmp_path, fmt):
    if fmt == "csv":
        p = tmp_path / "meter.csv"
        p.write_text("timestamp,watts\n" + "".join(f"{t:.2f},{w}\n" for t, w in TRACE))
    else:
        p = tmp_path / "meter.lp"
        p.write_text("".join(f"socket,id=lab power={w} {round(t * 1e9)}\n" for t, w in TRACE))
    return p


@pytest.mark.parametrize("fmt", ["csv", "line-protocol"])
def test_trace_net_energy_by_hand(tmp_path, tiny, fmt):
    rec = attach_trace(pending_record(tiny), load_trace(write_trace(tmp_path, fmt)))
    assert rec.trace.sample_mode == ("mean-preceding" if fmt == "csv" else "instant")
    assert rec.trace.clock_offset_s == 0.0 and rec.trace.clock_offset_source.startswith("checked")
    e = [sum(r.energy_j.values()) for r in rec.runs]
    # step-exact: samples that mix two runs are valued at the nearest clean sample, so each run's energy
    # is its level times its length
    assert e == pytest.approx([10.0, 12.0, 10.0, 40.0, 40.0])
    m = analyse(rec)
    assert m.idle_power_w == pytest.approx(20.0)
    # P_baseline = 11 W; net = (40 - 11) / 10 = 2.9 J in both runs: no scatter; se^2 = (0.1 s)^2 x var(10, 12) / 2
    assert m.net.per_run_j == pytest.approx((2.9, 2.9)) and m.energy_j == pytest.approx(2.9)
    half = t_quantile(0.975, 1.0) * math.sqrt(0.01 * 2 / 2)
    assert m.net.dof == pytest.approx(1.0)
    assert m.net.ci95_j == pytest.approx((2.9 - half, 2.9 + half))
    if fmt == "csv":  # mean-preceding: a sample at s stands for (s - 0.1, s]
        # quantisation bound, per edge: the mixed stretch (start: 0.05 s, end: 0.15 s) x the power's spread there.
        # scenario 0: 0.05 x (40 - 20) = 1 J; scenario 1: 0.15 x (40 - 10) = 4.5 J -> mean(1, 4.5) / 10 = 0.275 J;
        # baseline 0: 0.15 x 2 = 0.3 J; baseline 1: 0.05 x 2 + 0.15 x 8 = 1.3 J -> 0.1 s x mean(0.3, 1.3) W = 0.08 J
        assert m.quantisation_j == pytest.approx(0.355)
        assert m.ci95_j == pytest.approx((2.9 - half - 0.355, 2.9 + half + 0.355))
    assert m.min_samples_per_run == 10 and m.sample_interval_s == pytest.approx(0.1)


def test_record_round_trip_and_tamper_check(tmp_path, tiny):
    rec = attach_trace(pending_record(tiny), load_trace(write_trace(tmp_path, "csv")))
    path = tmp_path / "rec.json"
    path.write_text(dump_record(rec))
    again, sha = load_record(path)
    assert again == rec and len(sha) == 64
    assert analyse(again).energy_j == analyse(rec).energy_j
    doc = json.loads(path.read_text())
    doc["runs"][3]["energy_j"]["wall"] = 30.0
    path.write_text(json.dumps(doc))
    with pytest.raises(MeasurementRecordError, match="run 3 wall: stored 30 J"):
        load_record(path)
    path.write_text('{"format": "something-else"}')
    with pytest.raises(MeasurementRecordError, match="not an eeki-label measurement record"):
        load_record(path)
    doc["runs"][3]["energy_j"] = "x"
    path.write_text(json.dumps(doc))
    with pytest.raises(MeasurementRecordError, match=r"runs\.3\.energy_j"):
        load_record(path)


def test_record_belongs_to_its_model(tmp_path, tiny):
    rec = pending_record(tiny)
    other = load_model(save(tiny_cnn(batch=1, seed=3), tmp_path / "other.onnx"))
    with pytest.raises(MeasurementRecordError, match="not of this model"):
        check_record_matches(rec, other, tiny[1])
    with pytest.raises(MeasurementRecordError, match="input shapes"):
        check_record_matches(rec, tiny[0], {"x": (2, 3, 16, 16)})
    check_record_matches(rec, *tiny)


def test_pending_record_needs_the_trace(tmp_path, tiny):
    rec = pending_record(tiny)
    with pytest.raises(MeasurementRecordError, match="--trace"):
        analyse(rec)
    short = tmp_path / "short.csv"
    short.write_text("timestamp,watts\n" + "".join(f"{t},{w}\n" for t, w in TRACE[:30]))
    with pytest.raises(MeasurementRecordError, match="does not cover"):
        attach_trace(rec, load_trace(short))
    assert markers_csv(rec).splitlines()[0] == "seq,phase,index,start_unix_s,end_unix_s,start_utc,end_utc,inferences"
    assert markers_csv(rec).splitlines()[4].startswith("3,scenario,0,1700000002.500000,")


def test_no_net_energy_is_not_resolved(tmp_path, tiny):
    sim = SimMachine(tmp_path / "powercap")
    sim.dram_busy_w = sim.pkg_loaded_w = 0.0
    sim.pkg_busy_w = -0.5  # the scenario reads below the baseline: noise larger than the model's energy
    rec = record_of(RaplMeter(sim.root, clock=sim.clock), sim, ProtocolConfig(2, 0, 2, run_seconds=0.2), tiny)
    m = analyse(rec)  # the figures stand; the resolution gate withholds the grade
    assert m.energy_j < 0 and "includes zero" in m.unresolved


def test_protocol_config_checks():
    with pytest.raises(UsageError):
        ProtocolConfig(baseline_runs=1).check()
    with pytest.raises(UsageError):
        ProtocolConfig(run_seconds=0).check()
    assert (ProtocolConfig().baseline_runs, ProtocolConfig().idle_runs, ProtocolConfig().scenario_runs) == (10, 10, 30)
