"""The meters one by one: RAPL from a recorded sysfs tree (wrap-around, permissions), NVML through a
fake pynvml, the two trace formats, and the t quantiles behind the interval. Expected values are
computed by hand in the comments."""

import math
import sys

import pytest

from eeki_label.energy import meters
from eeki_label.energy.meters import (
    MeterUnavailableError, NvmlMeter, RaplMeter, counter_energy_j, discover_rapl, integrate_power_j, load_trace,
    open_meter,
)
from eeki_label.energy.stats import t_quantile
from eeki_label.errors import MeasurementRecordError
from meter_fakes import FakeNvml, set_counter, write_rapl_tree


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


# ----------------------------------------------------------------------------------------------- RAPL


def rapl_tree(tmp_path):
    return write_rapl_tree(tmp_path / "powercap", {
        "intel-rapl:0": {"name": "package-0", "energy_uj": 900_000, "max_energy_range_uj": 1_000_000},
        "intel-rapl:0:0": {"name": "core", "energy_uj": 5, "max_energy_range_uj": 1_000_000},
        "intel-rapl:0:1": {"name": "dram", "energy_uj": 100, "max_energy_range_uj": 500_000},
        "intel-rapl:1": {"name": "psys", "energy_uj": 7, "max_energy_range_uj": 1_000_000},
    })


def test_rapl_discovers_package_and_dram_only(tmp_path):
    zones = discover_rapl(rapl_tree(tmp_path))
    assert [z.domain for z in zones] == ["package-0", "package-0/dram"]  # core is inside the package, psys holds it
    assert [z.max_energy_range_uj for z in zones] == [1_000_000, 500_000]


def test_rapl_window_with_wrap_around(tmp_path):
    root = rapl_tree(tmp_path)
    clock = Clock()
    meter = RaplMeter(root, clock=clock)
    meter.sample_interval_s = 0.5
    meter.start()  # package 900,000 uJ, dram 100 uJ
    clock.t += 1.0
    set_counter(root, "intel-rapl:0", 1_000)  # wrapped: 1,000,000 - 900,000 + 1,000 = 101,000 uJ
    set_counter(root, "intel-rapl:0:1", 400_100)  # +400,000 uJ
    meter.poll()
    clock.t += 1.0
    set_counter(root, "intel-rapl:0", 51_000)  # +50,000 uJ
    set_counter(root, "intel-rapl:0:1", 50_100)  # wrapped: 500,000 - 400,100 + 50,100 = 150,000 uJ
    raw = meter.stop()
    assert [t for t, _ in raw["package-0"]] == [1000.0, 1001.0, 1002.0]
    energy = {d: meters.window_energy_j(meter.info, d, raw[d]) for d in meter.info.domains}
    assert energy["package-0"] == pytest.approx(0.151)  # 101,000 + 50,000 uJ
    assert energy["package-0/dram"] == pytest.approx(0.55)  # 400,000 + 150,000 uJ


def test_counter_energy_by_hand():
    assert counter_energy_j([(0, 10), (1, 30), (2, 5)], "uJ", wrap_at=40) == pytest.approx(35e-6)  # 20 + (40-30+5)
    assert counter_energy_j([(0, 1000), (1, 6000)], "mJ") == pytest.approx(5.0)
    with pytest.raises(Exception, match="backwards"):
        counter_energy_j([(0, 10), (1, 5)], "mJ")


def test_rapl_absent_says_why_in_one_line(tmp_path):
    with pytest.raises(MeterUnavailableError) as e:
        RaplMeter(tmp_path / "nothing-here")
    assert "does not exist" in str(e.value) and "\n" not in str(e.value)


def test_rapl_root_only_since_5_10(tmp_path, monkeypatch):
    root = rapl_tree(tmp_path)
    real = meters._read_text

    def deny(path):
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(meters, "_read_text", deny)
    with pytest.raises(MeterUnavailableError, match="only by root since Linux 5.10"):
        RaplMeter(root)


def test_auto_names_every_reason_when_nothing_measures(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    monkeypatch.setattr(meters, "cuda_available", lambda: True)
    with pytest.raises(MeterUnavailableError) as e:
        open_meter("auto", tmp_path / "none")
    msg = str(e.value)
    assert "RAPL:" in msg and "nvidia-ml-py is not installed" in msg and "trace:" in msg
    with pytest.raises(MeterUnavailableError, match="--meter none"):
        open_meter("none")


# ----------------------------------------------------------------------------------------------- NVML


def test_nvml_total_energy_counter():
    fake = FakeNvml(counter=True, gpus=2)
    fake.energy_mj = 1_000
    clock = Clock()
    meter = NvmlMeter(fake, clock=clock)
    assert meter.info.reading == "energy_counter" and meter.info.unit == "mJ"
    assert meter.info.domains == ("gpu0", "gpu1") and meter.info.details["gpu0"] == "Fake GPU"
    meter.start()
    clock.t += 2.0
    fake.energy_mj = 6_000  # +5,000 mJ on each GPU
    raw = meter.stop()
    assert meters.window_energy_j(meter.info, "gpu0", raw["gpu0"]) == pytest.approx(5.0)
    meter.close()
    assert fake.calls == ["init", "shutdown"]


def test_nvml_power_sampling_before_volta():
    fake = FakeNvml(counter=False)
    clock = Clock(0.0)
    meter = NvmlMeter(fake, clock=clock, power_interval_s=0.5, threaded=False)
    assert meter.info.reading == "power" and meter.info.unit == "mW"
    fake.power_mw = 100_000  # 100 W
    meter.start()  # t=0, 100 W
    clock.t = 0.5
    meter.poll()  # 100 W
    fake.power_mw = 200_000
    clock.t = 1.0
    meter.poll()  # 200 W
    clock.t = 1.2
    meter.poll()  # too soon after the last sample: skipped
    clock.t = 2.0
    raw = meter.stop()  # 200 W
    assert len(raw["gpu0"]) == 4
    # trapezoids: 0.5 * 100 + 0.5 * (100 + 200) / 2 + 1.0 * 200 = 50 + 75 + 200 = 325 J
    assert meters.window_energy_j(meter.info, "gpu0", raw["gpu0"]) == pytest.approx(325.0)


def test_nvml_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(MeterUnavailableError, match=r"eeki-label\[nvml\]"):
        NvmlMeter()
    with pytest.raises(MeterUnavailableError, match="no NVIDIA driver"):
        NvmlMeter(FakeNvml(fail_init=True))


# ---------------------------------------------------------------------------------------------- traces


# 1 Hz power log: 10 W, then a step to 40 W between t0+3 and t0+4.
T0 = 1_700_000_000
TRACE = [(T0 + i, w) for i, w in enumerate([10, 10, 10, 40, 40, 40])]


def write_csv(path, header="timestamp,watts"):
    path.write_text(header + "\n" + "".join(f"{t},{w}\n" for t, w in TRACE))
    return path


def write_line_protocol(path):
    lines = [f"power,host=lab\\ bench,meter=gude w={w}i,power={float(w)},state=\"on\" {t * 10**9}" for t, w in TRACE]
    path.write_text("# telegraf\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["csv", "line-protocol"])
def test_trace_energies_by_hand(tmp_path, fmt):
    path = write_csv(tmp_path / "t.csv") if fmt == "csv" else write_line_protocol(tmp_path / "t.lp")
    trace = load_trace(path)
    assert trace.source_format == fmt
    assert trace.energy_j(T0, T0 + 2) == pytest.approx(20.0)  # 10 W x 2 s
    # [T0+2.5, T0+3.5]: CSV samples are means over the second before them (the 40 W at T0+3 covers
    # (T0+2, T0+3]), line-protocol samples are instants standing for +-0.5 s (T0+3 covers [T0+2.5, T0+3.5]):
    # either way 40 W throughout, 40 J (linear interpolation gave 36.25 J)
    assert trace.energy_j(T0 + 2.5, T0 + 3.5) == pytest.approx(40.0)
    assert trace.sample_mode == ("mean-preceding" if fmt == "csv" else "instant")
    with pytest.raises(MeasurementRecordError, match="do not cover"):
        trace.energy_j(T0 + 4, T0 + 6)


def test_csv_trace_variants(tmp_path):
    p = tmp_path / "semi.csv"
    p.write_text("time;power_w\n" + "".join(f"2023-11-14T22:13:{20 + i:02d}Z;{w}\n" for i, (_, w) in enumerate(TRACE)))
    trace = load_trace(p)
    assert trace.times_unix_s[0] == 1_700_000_000.0 and trace.energy_j(T0, T0 + 2) == pytest.approx(20.0)
    ms = tmp_path / "ms.csv"
    ms.write_text("".join(f"{t * 1000},{w}\n" for t, w in TRACE))  # no header, milliseconds
    assert load_trace(ms).times_unix_s[1] == T0 + 1
    naive = tmp_path / "naive.csv"
    naive.write_text("timestamp,watts\n2023-11-14T22:13:20,10\n2023-11-14T22:13:21,10\n")
    with pytest.raises(MeasurementRecordError, match="no UTC offset"):
        load_trace(naive)
    with pytest.raises(MeasurementRecordError, match="lacks a timestamp column"):
        load_trace(write_csv(tmp_path / "bad.csv", header="when,amps"))


def test_line_protocol_field_choice_and_series(tmp_path):
    lp = write_line_protocol(tmp_path / "t.lp")
    assert load_trace(lp, field_name="w").energy_j(T0, T0 + 2) == pytest.approx(20.0)
    assert "power" in load_trace(lp).series  # power_w and watts absent: 'power' is the first default present
    two = tmp_path / "two.lp"
    two.write_text("".join(f"power,outlet={o} power={w} {t * 10**9}\n" for t, w in TRACE for o in (1, 2)))
    with pytest.raises(MeasurementRecordError, match="2 series"):
        load_trace(two)
    s = tmp_path / "s.lp"
    s.write_text("".join(f"pdu watts={w} {t}\n" for t, w in TRACE))
    assert load_trace(s, precision="s").times_unix_s[0] == T0
    notime = tmp_path / "notime.lp"
    notime.write_text("pdu watts=10\n")
    with pytest.raises(MeasurementRecordError, match="timestamp is required"):
        load_trace(notime)


def test_trapezoid_boundaries():
    assert integrate_power_j([0, 1, 2], [0, 10, 10], 0.5, 1.5) == pytest.approx(0.5 * (5 + 10) / 2 + 0.5 * 10)


# ------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("df,expected", [(1, 12.7062047), (2, 4.3026527), (9, 2.2621572), (29, 2.0452296),
                                         (1000, 1.9623391), (math.inf, 1.9599640)])
def test_t_quantiles_match_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
