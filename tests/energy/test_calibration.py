"""Device data 2.0.0: the multi-workload fit recomputed from the data file, held-out errors, sources,
and the versioned device data (``--device-data VERSION|FILE``)."""

import json
import math

import numpy as np
import pytest

from support import ROOT
from eeki_label.energy import fit as fitmod
from eeki_label.energy.devices import device_data_versions, load_devices
from eeki_label.errors import CatalogueError

DATA = ROOT / "data" / "energy" / "device-classes-2.0.0.json"
RAW = json.loads(DATA.read_text())
REG = load_devices(None, "2.0.0")


def _by_hand(entry):
    """The fit of one class from the raw JSON, independently of eeki_label.energy.fit: a dense grid over w
    (k in closed form), then the leave-one-workload-out predictions the same way."""
    peak = entry["peak_macs_per_s"]["value"]
    ridge = peak / entry["memory_bandwidth_bytes_per_s"]["value"]
    b = entry["precision_bytes"]
    n = entry["assumed_batch_size"]["value"]
    macs = np.array([w["profile"]["macs"] for w in entry["workloads"]], float)
    moved = np.array([b * (w["profile"]["activation_elements"] + w["profile"]["parameters"] / n)
                      for w in entry["workloads"]], float)
    e = np.array([w["energy_j"] for w in entry["workloads"]], float)
    lo, hi = entry["fit"]["bytes_weight_bounds"]["min"], entry["fit"]["bytes_weight_bounds"]["max"]

    def solve(idx):
        if len(idx) < 2:
            w = 1.0
        else:
            grid = np.linspace(lo, hi, 160001)
            eff = macs[idx][None, :] + grid[:, None] * ridge * moved[idx][None, :]
            r = np.log(e[idx])[None, :] - np.log(eff)
            lk = r.mean(axis=1)
            sse = ((r - lk[:, None]) ** 2).sum(axis=1)
            w = float(grid[int(np.argmin(sse))])
        k = math.exp(float(np.mean(np.log(e[idx]) - np.log(macs[idx] + w * ridge * moved[idx]))))
        return k, w

    all_idx = list(range(len(e)))
    k, w = solve(all_idx)
    loo = []
    if len(e) >= 2:
        for i in all_idx:
            ki, wi = solve([j for j in all_idx if j != i])
            loo.append(ki * (macs[i] + wi * ridge * moved[i]) / e[i] - 1)
    return k, w, loo


@pytest.mark.parametrize("entry", RAW["classes"], ids=lambda e: e["id"])
def test_fit_recomputed_from_the_data_file(entry):
    k, w, loo = _by_hand(entry)
    dc = REG.get(entry["id"])
    assert dc.bytes_weight == pytest.approx(w, abs=2e-4)
    assert dc.j_per_effective_mac == pytest.approx(k, rel=1e-3)
    assert [r.error_rel for r in dc.held_out.rows] == pytest.approx(loo, abs=1e-3)
    stored = entry["fit"]["result"]  # what scripts/fit_devices.py wrote
    assert stored["k_j_per_effective_mac"] == pytest.approx(k, rel=1e-3)
    assert stored["bytes_weight"] == pytest.approx(w, abs=2e-4)
    assert [r["error_rel"] for r in stored["held_out"]] == pytest.approx(loo, abs=1e-3)
    if loo:
        a = sorted(abs(x) for x in loo)
        med = a[len(a) // 2] if len(a) % 2 else (a[len(a) // 2 - 1] + a[len(a) // 2]) / 2
        assert stored["held_out_median_abs_error"] == pytest.approx(med, abs=1e-4)
        assert stored["held_out_worst_ratio"] == pytest.approx(max(max(1 + x, 1 / (1 + x)) for x in loo), abs=1e-4)


def test_fit_results_in_the_file_are_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fit_devices", ROOT / "scripts" / "fit_devices.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    old, new = mod.refit(DATA)
    assert old == new, "run scripts/fit_devices.py"


def test_every_workload_keeps_its_source_and_profile():
    assert len(RAW["classes"]) >= 8
    for c in RAW["classes"]:
        systems = {w.get("system", c["reference_system"]) for w in c["workloads"]}
        assert systems == {c["reference_system"]}, c["id"]  # ONE reference system per class
        for w in c["workloads"]:
            src = w["source"]
            assert w["energy_j"] > 0 and w["profile"]["source"].strip()
            if isinstance(src, dict):
                assert src["repo"] and src["path"] and len(src["commit"]) == 40 and src["derivation"].strip()
            else:
                assert src.strip()
        assert c["fit"]["bytes_weight_bounds"]["rationale"].strip()
    for o in RAW["omitted"]:
        assert o["reason"].strip() and o["searched"]


def test_fitted_classes_state_their_held_out_error():
    for dc in REG.classes:
        if len(dc.workloads) >= 2:
            assert len(dc.held_out.rows) == len(dc.workloads)
            assert dc.held_out.worst_ratio >= 1 and dc.held_out.median_abs_error >= 0
            assert "held-out error median" in dc.calibration
        else:
            assert not dc.held_out.rows and "no held-out error" in dc.calibration


def test_fit_reproduces_two_points_exactly_and_respects_bounds():
    pts = [fitmod.Point("a", 1e6, 1e5, 2e-3), fitmod.Point("b", 1e6, 1e6, 5e-3)]
    f = fitmod.fit(pts, 1.0, 0.0, 8.0)
    for p in pts:
        assert fitmod.predict(f, p, 1.0) == pytest.approx(p.energy_j, rel=1e-6)
    assert f.bytes_weight == pytest.approx(2.0, rel=1e-6)
    capped = fitmod.fit(pts, 1.0, 0.0, 1.5)  # the exact solution needs w = 2
    assert capped.bytes_weight == pytest.approx(1.5) and capped.bytes_weight_at_bound
    one = fitmod.fit(pts[:1], 1.0, 0.0, 8.0)
    assert one.bytes_weight == fitmod.W_PRIOR
    assert not fitmod.leave_one_out(pts[:1], 1.0, 0.0, 8.0).rows
    with pytest.raises(ValueError):
        fitmod.fit([fitmod.Point("bad", 1e6, 0, 0.0)], 1.0, 0.0, 8.0)
    with pytest.raises(ValueError):
        fitmod.fit(pts, 1.0, 2.0, 8.0)  # bounds must contain the prior


def test_versions_are_selectable_and_1_0_0_is_unchanged():
    assert {"1.0.0", "2.0.0"} <= set(device_data_versions())
    from eeki_label.catalogue import load_catalogue

    v1 = load_devices(load_catalogue("1.0.0"), "1.0.0")
    assert v1.version == "1.0.0" and v1.file == "device-classes-1.0.0.json" and v1.formula == "roofline-additive-v1"
    # the same bytes as the former data/energy/device_classes.json, so labels made with it still verify
    assert v1.sha256 == "0f6f06bb000303463b99bc4de0d4c7b405e6982b103d1353f82e8acb310ba44f"
    assert load_devices().version == "2.0.0"
    with pytest.raises(CatalogueError, match="unknown device data version"):
        load_devices(None, "9.9.9")


def test_own_file_is_named_by_its_file_name_and_sha256(tmp_path):
    own = tmp_path / "my-devices.json"
    own.write_bytes(DATA.read_bytes())
    reg = load_devices(None, str(own))
    assert reg.file == "my-devices.json" and reg.sha256 == REG.sha256 and not reg.shipped
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "x", "classes": [{"id": "c"}]}')
    with pytest.raises(CatalogueError, match="damaged"):
        load_devices(None, str(bad))


def test_estimated_labels_carry_the_held_out_interval(tmp_path):
    from support import classifier, save
    from eeki_label.pipeline import AssessOptions, assess

    path = save(classifier(1000), tmp_path / "imagenet_like.onnx")
    opts = dict(device_classes=("edge-gpu-batched", "single-board-cpu"), runs=0, task="image-classification",
                issued_at="2026-01-01T00:00:00+00:00")
    from eeki_label.transfer.stage import TransferOptions

    labs = assess(path, AssessOptions(**opts, transfer=TransferOptions(enabled=False))).labels
    again = assess(path, AssessOptions(**opts, transfer=TransferOptions(enabled=False))).labels
    for lab, lab2 in zip(labs, again):
        assert lab.label.class_ == lab2.label.class_ and lab.label.index == lab2.label.index  # deterministic
        dc = REG.get(lab.device_class.id)
        f = dc.held_out.worst_ratio if dc.held_out.rows else 3.0  # rules 2.0.0: unvalidated_factor
        e = lab.inference.energy_j
        assert lab.inference.energy_j_ci95 == pytest.approx((e / f, e * f), rel=1e-9)
        i = lab.label.index
        assert lab.label.index_ci95 == pytest.approx((i / f, i * f), rel=1e-9)
        assert isinstance(lab.label.boundary_uncertain, bool)
        assert lab.label.boundary_uncertain == (len(lab.label.classes_in_interval) > 1)
        assert lab.device_data.file == "device-classes-2.0.0.json" and lab.device_data.sha256 == REG.sha256
    old = assess(path, AssessOptions(**opts, device_data="1.0.0", rules_version="1.0.0",
                                     transfer=TransferOptions(enabled=False))).labels
    for lab in old:  # device data 1.0.0 states no held-out error: no interval, as before
        assert lab.inference.energy_j_ci95 is None and lab.label.boundary_uncertain is None
        assert lab.device_data.version == "1.0.0" and lab.device_data.file == "device-classes-1.0.0.json"
        assert lab.inference.estimator == "roofline-additive-v1"


def test_verify_accepts_labels_made_with_device_data_1_0_0():
    from eeki_label.errors import DataMismatchError
    from eeki_label.models import DeviceDataInfo
    from eeki_label.verify import _check_device_data

    v1_sha = "0f6f06bb000303463b99bc4de0d4c7b405e6982b103d1353f82e8acb310ba44f"
    # a label of v0.2.0 names no file (the data was data/energy/device_classes.json)
    assert _check_device_data(DeviceDataInfo(version="1.0.0", sha256=v1_sha)) == "device data 1.0.0"
    assert _check_device_data(DeviceDataInfo(version="2.0.0", sha256=REG.sha256, file="device-classes-2.0.0.json"))
    with pytest.raises(DataMismatchError):
        _check_device_data(DeviceDataInfo(version="1.0.0", sha256="0" * 64))
    with pytest.raises(DataMismatchError):
        _check_device_data(DeviceDataInfo(version="7.0.0", sha256=v1_sha))


ARCH = ROOT / "tests" / "data" / "arch" / "mlperf"


@pytest.mark.parametrize("name,workload", [
    ("tiny-kws-dscnn", "tiny-kws"), ("tiny-vww-mobilenet", "tiny-vww"), ("tiny-ad-autoencoder", "tiny-ad"),
    ("retinanet", "retinanet"),
])
def test_workload_profiles_are_what_the_profiler_measures(name, workload):
    """The architecture-only copies (scripts/export_mlperf.py, then scripts/strip_weights.py) profile to the
    figures in the data file; the stripped weights are graph inputs, counted back into the parameters."""
    from eeki_label.model_io import load_model
    from eeki_label.profile.shapes import resolve_input_shapes
    from eeki_label.profile.static import static_profile

    loaded = load_model(ARCH / f"{name}.onnx")
    p = static_profile(loaded, resolve_input_shapes(loaded.proto))
    stripped = sum(int(np.prod([d.dim_value for d in i.type.tensor_type.shape.dim]))
                   for i in loaded.proto.graph.input[1:])
    want = next(w["profile"] for c in RAW["classes"] for w in c["workloads"] if w["benchmark"] == workload)
    assert p.macs == want["macs"]
    assert p.activation_elements == want["activation_elements"]
    assert p.parameters + stripped == want["parameters"]
