"""``eeki-label calibrate`` on replayed RAPL measurements: the device-class file it writes, and labels that
``assess --device-data FILE`` makes with it (they name the file and its sha256)."""

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from support import save
from eeki_label.cli import main
from eeki_label.energy.devices import load_devices
from eeki_label.energy.measure import ProtocolConfig, analyse, build_record, dump_record, run_protocol
from eeki_label.energy.meters import RaplMeter
from eeki_label.model_io import load_model
from eeki_label.profile.shapes import resolve_input_shapes
from meter_fakes import SimMachine, SimWorkload

PEAK, BW = 1e11, 2e10  # the stated "datasheet" of the simulated machine


def conv_net(channels: int, hw: int) -> onnx.ModelProto:
    """Conv(3->channels, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(channels->4) on a hw x hw input."""
    rng = np.random.default_rng(channels)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((4, channels)).astype(np.float32), "fc"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1)]
    g = helper.make_graph(nodes, f"net{channels}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def replayed_record(tmp_path, name, model, infer_s):
    """Measure ``model`` on the simulated machine through its recorded RAPL tree (package + DRAM counters):
    net energy per inference = (46 W - 11 W) x infer_s, as in tests/energy/test_protocol.py."""
    path = save(model, tmp_path / f"{name}.onnx")
    loaded = load_model(path)
    shapes = resolve_input_shapes(loaded.proto, {})
    sim = SimMachine(tmp_path / f"powercap-{name}", infer_s=infer_s)
    meter = RaplMeter(sim.root, clock=sim.clock)
    meter.sample_interval_s = 0.1
    cfg = ProtocolConfig(baseline_runs=2, idle_runs=0, scenario_runs=3, run_seconds=0.3)
    result = run_protocol(meter, SimWorkload(sim), cfg, clock=sim.clock, sleep=sim.sleep)
    rec = build_record(loaded, shapes, cfg, meter.info, result, "CPUExecutionProvider", sample_interval_s=0.1)
    (tmp_path / f"{name}.record.json").write_text(dump_record(rec))
    assert analyse(rec).energy_j == pytest.approx(35.0 * infer_s, rel=1e-4)
    return path, tmp_path / f"{name}.record.json"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("measured")
    nets = [("small", conv_net(4, 16), 0.01), ("mid", conv_net(8, 32), 0.03), ("large", conv_net(16, 48), 0.15)]
    return [replayed_record(tmp, n, m, s) for n, m, s in nets]


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def calibrate_args(measured, out):
    args = ["calibrate", *[m for m, _ in measured], "--out", out, "--peak-macs-per-s", PEAK,
            "--memory-bytes-per-s", BW, "--datasheet-source", "simulated machine of tests/energy/meter_fakes.py",
            "--class-id", "lab-box", "--precision-bytes", "4"]
    for _, r in measured:
        args += ["--measurements", r]
    return args


def test_calibrate_writes_a_device_class_file_that_assess_uses(measured, tmp_path, capsys):
    own = tmp_path / "my-box.json"
    code, out, err = run(calibrate_args(measured, own), capsys)
    assert code == 0, err
    assert "held-out error" in out and "--device-data" in out
    doc = json.loads(own.read_text())
    entry = doc["classes"][0]
    assert entry["id"] == "lab-box" and len(entry["workloads"]) == 3
    assert [w["energy_j"] for w in entry["workloads"]] == pytest.approx([0.35, 1.05, 5.25], rel=1e-4)
    for w in entry["workloads"]:
        assert w["source"]["record_sha256"] and "rapl" in w["source"]["meter"].lower()
        assert w["profile"]["macs"] > 0
    reg = load_devices(None, str(own))
    dc = reg.get("lab-box")
    assert reg.file == "my-box.json" and not reg.shipped
    assert len(dc.held_out.rows) == 3 and entry["fit"]["result"]["held_out_worst_ratio"] == pytest.approx(
        dc.held_out.worst_ratio, abs=1e-4)

    code, out, err = run(["assess", measured[1][0], "--device-data", own, "-d", "lab-box", "--runs", "0",
                          "--no-transfer", "--task", "image-classification", "--json", "-", "-q"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    lab = (doc["labels"] if "labels" in doc else [doc])[0]
    assert lab["device_data"]["file"] == "my-box.json"
    assert lab["device_data"]["sha256"] == hashlib.sha256(own.read_bytes()).hexdigest()
    assert lab["device_class"]["id"] == "lab-box"
    # the estimate on the own class is the fit's prediction for a model it was fitted on
    from eeki_label.energy.estimate import estimate_inference

    assert lab["inference"]["energy_j"] == pytest.approx(estimate_inference(dc.workloads[1].work, dc).energy_j, rel=1e-9)
    assert lab["inference"]["energy_j"] == pytest.approx(1.05, rel=dc.held_out.worst_ratio)
    lo, hi = lab["inference"]["energy_j_ci95"]
    assert lo < lab["inference"]["energy_j"] < hi

    from eeki_label.models import Label
    from eeki_label.verify import check_data

    seen = check_data([Label.model_validate(lab)])
    assert any("my-box.json" in s and "own file" in s for s in seen)


def test_calibrate_refuses_incomplete_input(measured, tmp_path, capsys):
    own = tmp_path / "x.json"
    args = calibrate_args(measured, own)
    i = args.index("--datasheet-source")
    code, _, err = run(args[:i] + ["--datasheet-source", " "] + args[i + 2:], capsys)
    assert code == 2 and "datasheet-source" in err and not own.exists()
    code, _, err = run(calibrate_args(measured, own)[:-2], capsys)  # one record missing
    assert code == 2 and "one record per model" in err and not own.exists()
    wrong = calibrate_args(measured, own)
    wrong[-1], wrong[-3] = wrong[-3], wrong[-1]  # records swapped: they belong to other model files
    code, _, err = run(wrong, capsys)
    assert code != 0 and "sha256" in err and not own.exists()
