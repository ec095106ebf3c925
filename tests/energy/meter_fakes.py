"""Test doubles for measured energy: a recorded RAPL sysfs tree, a fake pynvml module, and a simulated
machine (fake clock, known power per phase) that drives them, so net energies are known by hand."""

from __future__ import annotations

from pathlib import Path


def write_rapl_tree(root: Path, zones: dict[str, dict]) -> Path:
    """A powercap tree like Linux's: ``zones`` maps a zone directory (``intel-rapl:0``, ``intel-rapl:0:1``)
    to ``{"name": ..., "energy_uj": int, "max_energy_range_uj": int}``. Subzones appear both at top level
    and inside their parent, as in sysfs."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "intel-rapl").mkdir(exist_ok=True)  # the control type itself: no counters
    for zone, f in zones.items():
        d = root / zone
        d.mkdir(exist_ok=True)
        for key, value in f.items():
            (d / key).write_text(f"{value}\n")
    return root


def set_counter(root: Path, zone: str, value_uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{int(value_uj)}\n")


class SimMachine:
    """A machine with a fake clock whose powers are known: package ``pkg_base_w`` (+ ``pkg_loaded_w``
    with a session loaded, + ``pkg_busy_w`` while inferring), DRAM ``dram_base_w`` (+ ``dram_busy_w``),
    GPU ``gpu_base_w`` / ``gpu_loaded_w`` / ``gpu_busy_w``. Time advances only by ``sleep`` and
    inference (``infer_s`` each). Energies are written to a RAPL tree (counters wrap at their range)
    and exposed to a fake NVML."""

    def __init__(self, rapl_root: Path | None = None, pkg_range_uj: int = 20_000_000, dram_range_uj: int = 5_000_000,
                 infer_s: float = 0.01) -> None:
        self.t = 1_700_000_000.0
        self.loaded = False
        self.busy = False
        self.infer_s = infer_s
        self.pkg_base_w, self.pkg_loaded_w, self.pkg_busy_w = 10.0, 2.0, 30.0
        self.dram_base_w, self.dram_busy_w = 1.0, 3.0
        self.gpu_base_w, self.gpu_loaded_w, self.gpu_busy_w = 15.0, 5.0, 30.0
        self.energy_j = {"pkg": 0.0, "dram": 0.0, "gpu": 0.0}
        self.ranges = {"pkg": pkg_range_uj, "dram": dram_range_uj}
        self.wraps = {"pkg": 0, "dram": 0}
        self.root = rapl_root
        if rapl_root is not None:
            write_rapl_tree(rapl_root, {
                "intel-rapl:0": {"name": "package-0", "energy_uj": 0, "max_energy_range_uj": pkg_range_uj},
                "intel-rapl:0:0": {"name": "core", "energy_uj": 0, "max_energy_range_uj": pkg_range_uj},
                "intel-rapl:0:1": {"name": "dram", "energy_uj": 0, "max_energy_range_uj": dram_range_uj},
            })

    def power_w(self) -> dict[str, float]:
        return {
            "pkg": self.pkg_base_w + (self.pkg_loaded_w if self.loaded else 0) + (self.pkg_busy_w if self.busy else 0),
            "dram": self.dram_base_w + (self.dram_busy_w if self.busy else 0),
            "gpu": self.gpu_base_w + (self.gpu_loaded_w if self.loaded else 0) + (self.gpu_busy_w if self.busy else 0),
        }

    def advance(self, dt: float, busy: bool) -> None:
        self.busy = busy
        for k, p in self.power_w().items():
            self.energy_j[k] += p * dt
        self.t += dt
        if self.root is not None:
            for key, zone in (("pkg", "intel-rapl:0"), ("dram", "intel-rapl:0:1")):
                uj = round(self.energy_j[key] * 1e6)
                self.wraps[key] = uj // self.ranges[key]
                set_counter(self.root, zone, uj % self.ranges[key])

    # clock / sleep for run_protocol
    def clock(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.advance(dt, busy=False)


class SimWorkload:
    """The workload of :class:`SimMachine`: loading sets ``loaded``, each inference takes ``infer_s``."""

    execution_provider = "CPUExecutionProvider"

    def __init__(self, sim: SimMachine) -> None:
        self.sim = sim

    def load(self) -> None:
        self.sim.loaded = True

    def warmup(self, n: int) -> float:
        for _ in range(n):
            self.infer()
        return self.sim.infer_s

    def infer(self) -> None:
        self.sim.advance(self.sim.infer_s, busy=True)

    def unload(self) -> None:
        self.sim.loaded = False


class FakeNvml:
    """Just the pynvml calls NvmlMeter makes. ``counter``: Volta+ total-energy counter (mJ); otherwise
    that call raises NVMLError (not supported) and power (mW) is read instead."""

    class NVMLError(Exception):
        pass

    def __init__(self, sim: SimMachine | None = None, counter: bool = True, gpus: int = 1, fail_init: bool = False):
        self.sim = sim
        self.counter = counter
        self.gpus = gpus
        self.fail_init = fail_init
        self.power_mw = 100_000.0
        self.energy_mj = 0.0
        self.calls: list[str] = []

    def nvmlInit(self):
        self.calls.append("init")
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self):
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.counter:
            raise self.NVMLError("Not Supported")
        return int(round(self.sim.energy_j["gpu"] * 1e3)) if self.sim else self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h):
        return self.sim.power_w()["gpu"] * 1e3 if self.sim else self.power_mw
