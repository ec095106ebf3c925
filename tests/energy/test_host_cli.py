"""``--device-class host`` and ``measure`` end to end: the one-line refusal on a machine without a meter,
the explicit estimate fallback, the auditor workflow (measure -> record -> assess --measurements),
stability of the class on a replayed trace and on the estimate, and the boundary rule."""

import bisect
import json
import sys

import jsonschema
import pytest

from support import ROOT, classifier, save
from eeki_label.cli import main
from eeki_label.energy import meters
from eeki_label.energy.host import HostOptions
from eeki_label.energy.measure import ProtocolConfig, ProtocolResult, build_record, dump_record
from eeki_label.energy.meters import MarkersOnly
from eeki_label.energy.record import RecordRun
from eeki_label.model_io import load_model
from eeki_label.pipeline import AssessOptions, assess, load_context
from eeki_label.profile.shapes import resolve_input_shapes
from meter_fakes import write_rapl_tree

ISSUED = "2026-01-01T00:00:00+00:00"
SMALL = ["--baseline-runs", "2", "--idle-runs", "1", "--scenario-runs", "3", "--run-seconds", "0.05", "-q"]


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_meter(tmp_path, monkeypatch):
    """This machine as it is in the project's sessions: no readable RAPL, no NVML, no GPU."""
    monkeypatch.setattr(meters, "POWERCAP_ROOT", tmp_path / "no-powercap")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(meters, "cuda_available", lambda: False)


@pytest.fixture
def model(tmp_path):
    return save(classifier(1000, (224, 224)), tmp_path / "tiny.onnx")


def schema(name):
    return json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())


def test_host_without_a_meter_is_a_one_line_error(no_meter, model, tmp_path, capsys):
    out = tmp_path / "label.json"
    code, stdout, err = run(["assess", model, "-d", "host", "--runs", "0", "--json", out], capsys)
    assert code == 50
    assert err.count("\n") == 1 and err.startswith("error: cannot measure: nothing can be measured on this machine: RAPL:")
    assert "--allow-estimate" in err and not out.exists() and stdout == ""


def test_host_falls_back_to_the_estimate_only_when_allowed(no_meter, model, capsys):
    code, out, err = run(["assess", model, "-d", "host", "--runs", "0", "--allow-estimate", "--json", "-",
                          "--json-shape", "single"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["device_class"]["id"] == "single-board-cpu"  # the reference class, never labelled 'host'
    assert doc["inference"]["method"] == "estimated" and doc["inference"]["meter"] is None
    # an estimate: its interval is the class's held-out error (rules 2.0.0 estimate_uncertainty), not a measurement's
    assert "estimate_uncertainty" in doc["inference"]["interval_method"]
    assert doc["label"]["notes"][0].startswith("host requested but not measured: nothing can be measured")


def test_measure_refuses_before_loading_when_nothing_measures(no_meter, tmp_path, capsys):
    code, _, err = run(["measure", tmp_path / "missing.onnx", "-o", tmp_path / "r.json"], capsys)
    assert code == 50 and "RAPL" in err  # the meter is checked first: no model needed to learn that


def trace_from_markers(markers_csv, path, powers={"baseline": 20.0, "idle": 25.0, "scenario": 60.0}, rate_hz=1000.0,
                       net_j_per_inference=None, offset_s=0.0):
    """An external meter's CSV log at ``rate_hz``: constant power within each run (between runs, the
    power of the run before), the power at each sample's instant. With ``net_j_per_inference`` each
    scenario run draws the baseline plus that energy per inference over the run's own length (so the
    net energy is known exactly whatever the run lengths). ``offset_s``: logger clock minus tool clock."""
    rows = [ln.split(",") for ln in markers_csv.read_text().splitlines()[1:]]
    assert [r[1] for r in rows if r[2] == "all"] == ["baseline", "idle", "scenario"]  # phase lines
    rows = [r for r in rows if r[2] != "all"]
    starts = [float(r[3]) for r in rows]
    levels = [powers[r[1]] if r[1] != "scenario" or net_j_per_inference is None
              else powers["baseline"] + net_j_per_inference * int(r[7]) / (float(r[4]) - float(r[3])) for r in rows]
    t, lines = starts[0] - 1.0 + 0.37 / rate_hz, []
    while t < float(rows[-1][4]) + 1.0:
        i = bisect.bisect_right(starts, t) - 1
        after = t > float(rows[-1][4])  # the session is closed: back to the baseline
        lines.append(f"{t + offset_s:.6f},{powers['baseline'] if after else levels[max(i, 0)]}\n")
        t += 1.0 / rate_hz
    path.write_text("timestamp,watts\n" + "".join(lines))
    return path


def test_auditor_workflow_with_a_replayed_trace(model, tmp_path, capsys):
    rec = tmp_path / "rec.json"
    code, out, err = run(["measure", model, "--meter", "trace", "-o", rec] + SMALL, capsys)
    assert code == 0, err
    markers = tmp_path / "rec.json.markers.csv"
    assert markers.read_text().startswith("seq,phase,index,start_unix_s,end_unix_s")
    pending = json.loads(rec.read_text())
    jsonschema.validate(pending, schema("measurement"))
    assert [r["phase"] for r in pending["runs"]] == ["baseline"] * 2 + ["idle"] + ["scenario"] * 3
    assert all(r["energy_j"] is None for r in pending["runs"])
    trace = trace_from_markers(markers, tmp_path / "meter.csv", net_j_per_inference=0.01)

    docs = []
    for _ in range(2):  # a replayed trace gives the identical label, class included
        # the log is made from the markers, so the clocks agree; its per-run powers are too uneven for the
        # offset to be read from the phase steps (the machine's run lengths vary)
        code, out, err = run(["assess", model, "--measurements", rec, "--trace", trace, "--runs", "0",
                              "--issued-at", ISSUED, "--json", "-", "--no-transfer", "--trace-offset-s", "0",
                              "--json-shape", "single"], capsys)
        assert code == 0, err
        docs.append(json.loads(out))
    assert docs[0] == docs[1]
    doc = docs[0]
    jsonschema.validate(doc, schema("label"))
    inf = doc["inference"]
    assert doc["device_class"]["id"] == "host" and inf["method"] == "measured" and inf["meter"] == "trace"
    assert inf["domains"] == ["wall"] and inf["interval_method"] == "welch-t-95"
    assert inf["repetitions"] == {"baseline_runs": 2, "idle_runs": 1, "scenario_runs": 3,
                                  "inferences_per_run": pending["setup"]["inferences_per_run"]}
    # every scenario run draws 20 W + 10 mJ per inference over its length
    assert inf["energy_j"] == pytest.approx(0.01, rel=1e-4)  # timestamps in microseconds
    lo, hi = inf["energy_j_ci95"]
    assert lo <= inf["energy_j"] <= hi
    m = inf["measurement"]
    assert m["baseline_power_w"] == pytest.approx(20.0) and m["idle_power_w"] == pytest.approx(25.0)
    assert m["reference_class"] == "single-board-cpu" and m["trace_file"] == "meter.csv"
    assert doc["reference"]["energy_j"] == pytest.approx(
        doc["inference"]["energy_j"] / doc["label"]["index"])
    assert isinstance(doc["label"]["boundary_uncertain"], bool)
    assert any("not measured here" in n for n in doc["label"]["notes"])


def test_record_of_another_model_is_refused(model, tmp_path, capsys):
    rec = tmp_path / "rec.json"
    assert run(["measure", model, "--meter", "trace", "-o", rec] + SMALL, capsys)[0] == 0
    other = save(classifier(1000, (224, 224), seed=5), tmp_path / "other.onnx")
    code, _, err = run(["assess", other, "--measurements", rec, "--runs", "0", "-q"], capsys)
    assert code == 51 and "not of this model" in err and err.count("\n") == 1
    code, _, err = run(["assess", model, "--measurements", rec, "--runs", "0", "-q"], capsys)
    assert code == 51 and "--trace" in err  # taken with --meter trace, the log is still missing


def test_rapl_that_does_not_move_cannot_resolve_the_model(model, tmp_path, monkeypatch, capsys):
    root = write_rapl_tree(tmp_path / "powercap", {
        "intel-rapl:0": {"name": "package-0", "energy_uj": 5, "max_energy_range_uj": 1000}})
    monkeypatch.setattr(meters, "POWERCAP_ROOT", root)
    rec = tmp_path / "rec.json"
    code, out, err = run(["measure", model, "--meter", "rapl", "-o", rec] + SMALL[:-1], capsys)
    assert code == 0 and "includes zero" in err  # the raw samples are archived all the same
    out_json = tmp_path / "label.json"
    code, _, err = run(["assess", model, "--measurements", rec, "--runs", "0", "--no-transfer", "--json", out_json],
                       capsys)
    assert code == 53 and "includes zero" in err  # the resolution gate: written, not graded
    doc = json.loads(out_json.read_text())
    labs = doc["labels"] if "labels" in doc else [doc]
    assert labs[0]["label"]["class"] is None and labs[0]["label"]["gradable"] is False
    assert labs[0]["inference"]["measurement"]["resolved"] is False


def test_estimated_class_is_identical_on_repeat(cls_model, capsys):
    texts = []
    for _ in range(2):
        code, out, err = run(["assess", cls_model, "--input-shape", "x=1x3x48x192", "-d", "all", "--runs", "0",
                              "--issued-at", ISSUED, "--json", "-", "--no-transfer"], capsys)
        assert code == 0, err
        texts.append(out)
    assert texts[0] == texts[1]  # byte-identical, every class and index included
    for lab in json.loads(texts[0])["labels"]:  # estimates carry the held-out interval; the class is the point index's
        if lab["inference"]["energy_j"] is not None:
            lo, hi = lab["inference"]["energy_j_ci95"]
            assert lo < lab["inference"]["energy_j"] < hi
        if lab["label"]["index"] is not None:
            assert isinstance(lab["label"]["boundary_uncertain"], bool)
            assert "class " + lab["label"]["class"] + " of the point index is printed" in lab["label"]["boundary_rule"]


# ------------------------------------------------------------------------------------- boundary rule


def record_near_boundary(tmp_path, spread):
    """A record whose index is 0.69 (class A ends at 0.7) with a 95 % interval of about +-``spread``:
    4 scenario runs of 10 inferences, 1 s each, baseline exactly 10 W; power constant within runs."""
    loaded = load_model(save(classifier(1000, (224, 224)), tmp_path / "tiny.onnx"))
    shapes = resolve_input_shapes(loaded.proto, {})
    ctx = load_context()
    from eeki_label.energy.estimate import estimate_inference

    dc = ctx.devices.get("single-board-cpu")
    ref_e = min(estimate_inference(r.work, dc).energy_j for r in ctx.catalogue.for_task("image-classification"))
    # 4 runs alternating +-d: s = d * sqrt(4/3); half-width = t(0.975, 3) * s / 2 = 3.1824 * d / sqrt(3)
    d = spread * ref_e * 3 ** 0.5 / 3.182446305
    nets = [0.69 * ref_e + d, 0.69 * ref_e - d] * 2
    t, runs, trace = 1_700_000_000.0, [], []
    plan = [("baseline", 10.0, 0), ("baseline", 10.0, 0)] + [("scenario", 10.0 + 10 * n, 10) for n in nets]
    for i, (phase, watts, n) in enumerate(plan):
        runs.append(RecordRun(seq=i, phase=phase, index=sum(p[0] == phase for p in plan[:i]), start_unix_s=t,
                              end_unix_s=t + 1, inferences=n, samples={}, energy_j=None))
        trace += [(t + k / 20, watts) for k in range(30)]  # 20 Hz, power constant within the run and the gap after
        t += 1.5
    cfg = ProtocolConfig(baseline_runs=2, idle_runs=0, scenario_runs=4, inferences_per_run=10)
    rec = build_record(loaded, shapes, cfg, MarkersOnly().info, ProtocolResult(runs, 10, "given", None, runs[0].start_unix_s),
                       "CPUExecutionProvider")
    (tmp_path / "rec.json").write_text(dump_record(rec))
    (tmp_path / "meter.csv").write_text("timestamp,watts\n" + "".join(f"{a:.3f},{w}\n" for a, w in trace))
    return tmp_path / "tiny.onnx", HostOptions(measurements=str(tmp_path / "rec.json"), trace=str(tmp_path / "meter.csv"))


@pytest.mark.parametrize("spread,printed", [(0.05, "A"), (0.10, "B")])
def test_interval_straddling_a_boundary(tmp_path, spread, printed):
    path, host = record_near_boundary(tmp_path, spread)
    lab = assess(path, AssessOptions(device_classes=("host",), runs=0, issued_at=ISSUED, host=host)).labels[0]
    g = lab.label
    assert g.index == pytest.approx(0.69, rel=1e-6)
    assert g.index_ci95 == pytest.approx((0.69 - spread, 0.69 + spread), rel=1e-4)
    assert g.boundary_uncertain is True and g.classes_in_interval == ["A", "B"]
    # upper end 0.74 stays within A's bound 0.7 + 10 % = 0.77 -> A; 0.79 does not -> B
    assert g.class_ == printed
    assert "verification tolerance" in g.boundary_rule or "+ 10%" in g.boundary_rule
    assert any(n.startswith("boundary uncertain:") for n in g.notes)


def test_measurement_options_need_the_host_class(model, tmp_path, capsys):
    code, _, err = run(["assess", model, "-d", "edge-gpu-batch1", "--meter", "rapl", "--runs", "0"], capsys)
    assert code == 2 and "-d host" in err
