"""Energy meters: RAPL (``/sys/class/powercap``), NVIDIA NVML, and external power-meter traces.

One interface for the meters that read this machine while it runs (:class:`LiveMeter`), one class per
meter kind, and one for the traces an external meter logs (:class:`PowerTrace`). Units are in every
name: joules (``_j``), microjoules (``_uj``), millijoules (``_mj``), watts (``_w``), milliwatts
(``_mw``), seconds (``_s``); timestamps are wall-clock UNIX seconds (``_unix_s``, UTC), so that an
external meter's log can be aligned with the run markers the tool writes.

A live meter only *samples*: ``start()`` opens a window, ``poll()`` may add samples inside it (the
protocol calls it between inferences and during pauses; a meter that reads power runs a sampling
thread as well), ``stop()`` closes the window and returns the raw samples per domain. Energy is
computed from raw samples by the pure functions :func:`counter_energy_j` and
:func:`integrate_power_j`, the same way at measurement time and when an auditor replays an archived
record, so a record's figures can always be recomputed from what it stores.

The design follows ml-energy/zeus (one class per device kind, units stated everywhere); the code is
our own.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import functools
import hashlib
import io
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from eeki_label.errors import MeasurementError, MeasurementRecordError, MeterUnavailableError
from eeki_label.units import mj_to_j, mw_to_w, ns_to_s, uj_to_j

METER_KINDS = ("auto", "rapl", "nvml", "trace", "none")
POWERCAP_ROOT = Path("/sys/class/powercap")
"""Where Linux exposes RAPL; a parameter everywhere so that tests replay a recorded tree."""

READING_COUNTER = "energy_counter"
"""Raw values are a monotonically increasing energy counter (that may wrap around)."""
READING_POWER = "power"
"""Raw values are instantaneous (or short-average) power, integrated over time."""

RAPL_PERMISSION_HINT = (
    "is readable only by root since Linux 5.10 (CVE-2020-8694): run as root or grant read access to "
    "the energy_uj files (e.g. a udev rule or chmod o+r)"
)

Sample = tuple[float, float]
"""(time_unix_s, raw value in the meter's unit)."""


@dataclass(frozen=True)
class MeterInfo:
    """What a meter reads, for the measurement record (everything needed to recompute energies)."""

    kind: str
    """``rapl``, ``nvml`` or ``trace``."""
    description: str
    domains: tuple[str, ...]
    """Disjoint energy domains whose sum is the measured energy (e.g. ``package-0``, ``package-0/dram``)."""
    reading: str
    """:data:`READING_COUNTER` or :data:`READING_POWER` (per domain alike)."""
    unit: str
    """Unit of the raw values: ``uJ`` (RAPL), ``mJ`` (NVML counter), ``mW`` (NVML power), ``W`` (trace)."""
    counter_range: dict[str, float] = field(default_factory=dict)
    """Per counter domain: the value at which it wraps to 0 (RAPL ``max_energy_range_uj``), in ``unit``."""
    details: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# Pure energy functions (used live and on replay)


_TO_J = {"uJ": uj_to_j, "mJ": mj_to_j, "J": lambda v: v}
_TO_W = {"mW": mw_to_w, "W": lambda v: v}


def counter_energy_j(samples: Sequence[Sample], unit: str, wrap_at: float | None = None) -> float:
    """Joules between the first and last reading of an energy counter, in ``unit`` (``uJ``, ``mJ``, ``J``).

    A reading below its predecessor is a wrap-around: the counter passed ``wrap_at`` (RAPL's
    ``max_energy_range_uj``) and restarted at 0, so the step is ``wrap_at - previous + current``.
    Readings must be closer together than one full counter period (the protocol polls at least every
    second; a RAPL package counter takes minutes to wrap). Without ``wrap_at`` a decrease is an error
    (the counter was reset)."""
    if unit not in _TO_J:
        raise MeasurementRecordError(f"unknown counter unit {unit!r}")
    total = 0.0
    for (_, prev), (_, cur) in zip(samples, samples[1:]):
        step = cur - prev
        if step < 0:
            if wrap_at is None or wrap_at <= 0:
                raise MeasurementError(f"an energy counter went backwards ({prev:g} -> {cur:g} {unit}) and has no wrap range")
            step += wrap_at
        total += step
    return _TO_J[unit](total)


def integrate_power_j(times_s: Sequence[float], power_w: Sequence[float], start_s: float, end_s: float) -> float:
    """Joules over [start_s, end_s] by the trapezoidal rule on (time, watts) samples.

    The power at ``start_s`` and ``end_s`` is interpolated linearly between the neighbouring samples,
    so samples that straddle the boundaries contribute only their share. The samples must cover the
    interval (first sample at or before ``start_s``, last at or after ``end_s``)."""
    t = np.asarray(times_s, dtype=float)
    p = np.asarray(power_w, dtype=float)
    if end_s < start_s:
        raise MeasurementRecordError(f"interval ends before it starts ({start_s} > {end_s})")
    if len(t) < 2 or t[0] > start_s or t[-1] < end_s:
        span = f"{t[0]:.3f}..{t[-1]:.3f}" if len(t) else "nothing"
        raise MeasurementRecordError(f"the power samples ({span}) do not cover the interval {start_s:.3f}..{end_s:.3f}")
    inside = (t > start_s) & (t < end_s)
    tt = np.concatenate(([start_s], t[inside], [end_s]))
    pp = np.concatenate(([np.interp(start_s, t, p)], p[inside], [np.interp(end_s, t, p)]))
    return float(np.sum((tt[1:] - tt[:-1]) * (pp[1:] + pp[:-1]) / 2.0))


# ---------------------------------------------------------------------------------------------------
# Step-exact integration of an external meter's trace

SAMPLE_MODES = ("auto", "mean-preceding", "mean-following", "instant")
"""What one sample of a trace stands for. ``mean-preceding``: the mean power over the interval that ends
at its timestamp (power analysers average over their update period and stamp its end); ``mean-following``:
the mean over the interval that starts at its timestamp (loggers that stamp the start of the averaging
period); ``instant``: the power at its timestamp (a reading polled at that moment), standing for the
interval from the midpoint before to the midpoint after it. ``auto``: per format, :data:`DEFAULT_SAMPLE_MODE`."""

DEFAULT_SAMPLE_MODE = {"csv": "mean-preceding", "line-protocol": "instant"}
"""CSV logs of power analysers carry means over the update period stamped at its end; Telegraf (line
protocol) stamps each reading with the moment it was collected."""

TRACE_INTEGRATION = "step-exact-v1"
"""How run energies are integrated from a trace (:func:`step_window_energy`); records of eeki-label 0.2
and earlier (no ``integration`` field) used linear interpolation (:func:`integrate_power_j`)."""


def resolve_sample_mode(mode: str, source_format: str) -> str:
    if mode not in SAMPLE_MODES:
        raise MeasurementRecordError(f"unknown trace sample mode {mode!r}; use {', '.join(SAMPLE_MODES)}")
    return DEFAULT_SAMPLE_MODE.get(source_format, "mean-preceding") if mode == "auto" else mode


def sample_supports(t: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (UNIX seconds) of the interval each sample stands for. The first (``mean-preceding``)
    or last (``mean-following``) sample's interval has the median sample spacing."""
    if len(t) < 2:
        raise MeasurementRecordError("a trace needs at least two samples")
    med = float(np.median(np.diff(t)))
    if mode == "mean-preceding":
        return np.concatenate(([t[0] - med], t[:-1])), t.copy()
    if mode == "mean-following":
        return t.copy(), np.concatenate((t[1:], [t[-1] + med]))
    if mode == "instant":
        mid = (t[:-1] + t[1:]) / 2.0
        return np.concatenate(([t[0] - med / 2.0], mid)), np.concatenate((mid, [t[-1] + med / 2.0]))
    raise MeasurementRecordError(f"unknown trace sample mode {mode!r}; use {', '.join(SAMPLE_MODES[1:])}")


@dataclass(frozen=True)
class WindowEnergy:
    """One run window integrated from a trace."""

    energy_j: float
    bound_j: float
    """Bound of the remaining quantisation error (joules): per edge, the stretch whose samples mix the
    inside and the outside of the window times the spread of the power around the edge."""
    samples: int
    """Sample timestamps inside [start, end]."""
    clean: int
    """Samples whose neighbours are inside the window too (their interval lies inside it under every mode)."""


def step_window_energy(t: np.ndarray, p: np.ndarray, a: np.ndarray, b: np.ndarray, start_s: float,
                       end_s: float) -> WindowEnergy:
    """Joules over [start_s, end_s] from samples ``p`` (watts) at ``t`` standing for intervals [a, b].

    Each sample counts with the part of its interval inside the window (partial-interval weights). The
    protocol changes what the machine does at the run markers, so power is taken to step there: a
    sample near an edge (one whose neighbour lies outside the window) may mix the two sides, and its
    inside part is valued at the nearest *clean* sample (both neighbours inside). A step-shaped trace
    whose steps lie at the markers is then integrated exactly, whatever the sample mode. Where the
    step lies elsewhere inside that mixed stretch, the error is at most the stretch's length times the
    spread of the power around the edge: :attr:`WindowEnergy.bound_j`."""
    if end_s < start_s:
        raise MeasurementRecordError(f"interval ends before it starts ({start_s} > {end_s})")
    n = len(t)
    if n < 2 or a[0] > start_s or b[-1] < end_s:
        span = f"{a[0]:.3f}..{b[-1]:.3f}" if n else "nothing"
        raise MeasurementRecordError(f"the power samples ({span}) do not cover the interval {start_s:.3f}..{end_s:.3f}")
    lo = int(np.searchsorted(b, start_s, side="right"))
    hi = int(np.searchsorted(a, end_s, side="left"))
    k = np.arange(lo, hi)
    w = np.clip(np.minimum(b[k], end_s) - np.maximum(a[k], start_s), 0.0, None)
    inside = int(np.count_nonzero((t >= start_s) & (t <= end_s)))
    prev_in = (k >= 1) & (t[np.maximum(k - 1, 0)] >= start_s)
    next_in = (k <= n - 2) & (t[np.minimum(k + 1, n - 1)] <= end_s)
    clean = prev_in & next_in & (t[k] >= start_s) & (t[k] <= end_s)
    v = p[k].astype(float)
    bound = 0.0
    if clean.any():
        ci = k[clean]
        pos = np.clip(np.searchsorted(ci, k), 1, len(ci) - 1) if len(ci) > 1 else np.zeros(len(k), dtype=int)
        if len(ci) > 1:
            left, right = ci[pos - 1], ci[pos]
            nearest = np.where(np.abs(k - left) <= np.abs(right - k), left, right)
        else:
            nearest = np.full(len(k), ci[0])
        v = np.where(clean, p[k], p[nearest])
        first, last = int(ci[0]), int(ci[-1])
        lead = max(a[first] - start_s, 0.0)  # mixed stretch at the start edge
        tail = max(end_s - b[last], 0.0)
        spread_lo = p[max(lo - 1, 0):first + 1]
        spread_hi = p[last:min(hi + 1, n)]
        bound = lead * float(spread_lo.max() - spread_lo.min()) + tail * float(spread_hi.max() - spread_hi.min())
    else:  # no clean sample: plain partial weights; every part of the window may be mixed
        around = p[max(lo - 1, 0):min(hi + 1, n)]
        bound = (end_s - start_s) * float(around.max() - around.min())
    return WindowEnergy(float(np.dot(w, v)), float(bound), inside, int(np.count_nonzero(clean)))


def window_energy_j(info: MeterInfo, domain: str, samples: Sequence[Sample]) -> float:
    """Joules of one domain over one window, from the raw samples a live meter returned."""
    if len(samples) < 2:
        raise MeasurementRecordError(f"domain {domain}: a window needs at least two samples, got {len(samples)}")
    if info.reading == READING_COUNTER:
        return counter_energy_j(samples, info.unit, info.counter_range.get(domain))
    if info.reading == READING_POWER:
        if info.unit not in _TO_W:
            raise MeasurementRecordError(f"unknown power unit {info.unit!r}")
        conv = _TO_W[info.unit]
        times = [s[0] for s in samples]
        return integrate_power_j(times, [conv(s[1]) for s in samples], times[0], times[-1])
    raise MeasurementRecordError(f"unknown reading kind {info.reading!r}")


# ---------------------------------------------------------------------------------------------------
# The live-meter interface


class LiveMeter(ABC):
    """A meter read by this process while the protocol runs.

    Subclasses implement :meth:`read` (raw values per domain, in ``info.unit``) and set ``info``.
    ``sample_interval_s`` is how often :meth:`poll` takes a sample inside a window; power meters also
    sample from a background thread at that interval (``threaded``) so long inferences are covered."""

    info: MeterInfo
    sample_interval_s: float = 0.5
    threaded: bool = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._samples: dict[str, list[Sample]] | None = None
        self._last_poll_s = -math.inf
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

    @abstractmethod
    def read(self) -> dict[str, float]:
        """One raw reading per domain, in ``info.unit``."""

    def _take(self) -> None:
        t = self._clock()
        values = self.read()
        with self._lock:
            if self._samples is None:
                return
            for d in self.info.domains:
                kept = self._samples[d]
                if kept and kept[-1][0] == t:  # same instant: the later reading replaces the earlier
                    kept.pop()
                kept.append((t, float(values[d])))
            self._last_poll_s = t

    def start(self) -> None:
        """Open a measurement window with a first reading."""
        with self._lock:
            self._samples = {d: [] for d in self.info.domains}
        self._take()
        if self.threaded and self.sample_interval_s > 0:
            self._stop_event.clear()
            self._thread = threading.Thread(target=self._sample_loop, name="eeki-meter", daemon=True)
            self._thread.start()

    def poll(self) -> None:
        """Take a sample if ``sample_interval_s`` has passed since the last one (cheap otherwise)."""
        if self._samples is not None and self._clock() - self._last_poll_s >= self.sample_interval_s:
            self._take()

    def stop(self) -> dict[str, list[Sample]]:
        """Close the window with a last reading; the raw samples per domain, in time order."""
        if self._thread is not None:
            self._stop_event.set()
            self._thread.join()
            self._thread = None
        self._take()
        with self._lock:
            out, self._samples = self._samples or {}, None
        return {d: sorted(v) for d, v in out.items()}

    def _sample_loop(self) -> None:
        while not self._stop_event.wait(self.sample_interval_s):
            try:
                self._take()
            except Exception:  # the closing read in stop() reports a failing meter
                return

    def close(self) -> None:
        """Release the meter (NVML shutdown); idempotent."""


class MarkersOnly(LiveMeter):
    """``--meter trace``: nothing is read here; an external meter logs power and the run markers say
    when each run took place. Energies come from :class:`PowerTrace` afterwards."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.info = MeterInfo("trace", "external power meter trace, aligned to the run markers", ("wall",),
                              READING_POWER, "W")

    def read(self) -> dict[str, float]:
        return {}

    def start(self) -> None:
        pass

    def poll(self) -> None:
        pass

    def stop(self) -> dict[str, list[Sample]]:
        return {}


# ---------------------------------------------------------------------------------------------------
# RAPL through the Linux powercap interface


_ZONE_DIR = re.compile(r"^intel-rapl:\d+(:\d+)*$")


@dataclass(frozen=True)
class RaplZone:
    domain: str
    """``package-N`` for a package zone, ``package-N/dram`` (or ``dram-N`` at top level) for DRAM."""
    energy_file: Path
    max_energy_range_uj: float


def _read_text(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


def discover_rapl(root: "str | Path" = POWERCAP_ROOT) -> tuple[RaplZone, ...]:
    """The RAPL package and DRAM zones under a powercap root, or :class:`MeterUnavailableError` with
    one line saying why not. Core/uncore zones are parts of their package and ``psys`` includes the
    packages, so neither is counted (the domains must be disjoint to be summed). The MMIO control type
    (``intel-rapl-mmio``) repeats the package counter and is ignored."""
    root = Path(root)
    if not root.is_dir():
        raise MeterUnavailableError(f"RAPL: {root} does not exist (no powercap RAPL driver on this machine, "
                                    "or not visible in this container or VM)")
    zones: list[RaplZone] = []
    try:
        entries = sorted(p for p in root.iterdir() if _ZONE_DIR.match(p.name))
    except OSError as e:
        raise MeterUnavailableError(f"RAPL: cannot list {root}: {e.strerror or e}") from e
    names: dict[str, str] = {}
    for zone in entries:
        try:
            names[zone.name] = _read_text(zone / "name")
        except OSError:
            continue
    for zone in entries:
        name = names.get(zone.name)
        if name is None:
            continue
        parts = zone.name.split(":")
        if name.startswith("package"):
            domain = name
        elif name == "dram":
            parent = names.get(":".join(parts[:2])) if len(parts) > 2 else None
            domain = f"{parent}/dram" if parent else f"dram-{parts[1]}"
        else:
            continue  # core, uncore (inside a package), psys (contains the packages)
        energy = zone / "energy_uj"
        try:
            _read_text(energy)
            max_uj = float(_read_text(zone / "max_energy_range_uj"))
        except PermissionError as e:
            raise MeterUnavailableError(f"RAPL: {energy} {RAPL_PERMISSION_HINT}") from e
        except (OSError, ValueError) as e:
            raise MeterUnavailableError(f"RAPL: cannot read {energy}: {getattr(e, 'strerror', None) or e}") from e
        zones.append(RaplZone(domain, energy, max_uj))
    if not any(z.domain.startswith("package") for z in zones):
        raise MeterUnavailableError(f"RAPL: {root} has no readable package zone")
    return tuple(zones)


class RaplMeter(LiveMeter):
    """CPU package and DRAM energy from RAPL counters (``energy_uj``, microjoules).

    Each counter wraps at its ``max_energy_range_uj``; :func:`counter_energy_j` adds the range back
    on a wrap. The counters update about every millisecond with a resolution of some 15-60 uJ, so
    windows of a second and more are resolved to well under 0.1 %."""

    sample_interval_s = 1.0

    def __init__(self, root: "str | Path" = POWERCAP_ROOT, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.zones = discover_rapl(root)
        self.info = MeterInfo(
            kind="rapl",
            description="Intel/AMD RAPL energy counters via the Linux powercap interface (package and DRAM)",
            domains=tuple(z.domain for z in self.zones),
            reading=READING_COUNTER,
            unit="uJ",
            counter_range={z.domain: z.max_energy_range_uj for z in self.zones},
            details={z.domain: z.energy_file.parent.name for z in self.zones},
        )

    def read(self) -> dict[str, float]:
        out = {}
        for z in self.zones:
            try:
                out[z.domain] = float(_read_text(z.energy_file))
            except PermissionError as e:
                raise MeterUnavailableError(f"RAPL: {z.energy_file} {RAPL_PERMISSION_HINT}") from e
            except (OSError, ValueError) as e:
                raise MeasurementError(f"RAPL: reading {z.energy_file} failed: {e}") from e
        return out


# ---------------------------------------------------------------------------------------------------
# NVIDIA NVML (nvidia-ml-py, optional: pip install 'eeki-label[nvml]')


def _import_pynvml():
    try:
        import pynvml  # nvidia-ml-py
    except ImportError as e:
        raise MeterUnavailableError("NVML: nvidia-ml-py is not installed (pip install 'eeki-label[nvml]')") from e
    return pynvml


class NvmlMeter(LiveMeter):
    """GPU energy from NVML, one domain per GPU (``gpu0``, ``gpu1``...).

    On Volta and newer GPUs NVML keeps a total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``,
    millijoules since the driver loaded): windows are counter differences. Where that call is not
    supported, the board power (``nvmlDeviceGetPowerUsage``, milliwatts) is sampled every
    ``sample_interval_s`` from a background thread and integrated by the trapezoidal rule."""

    def __init__(self, nvml=None, clock: Callable[[], float] = time.time, power_interval_s: float = 0.05,
                 threaded: bool = True) -> None:
        super().__init__(clock)
        self.nvml = nvml if nvml is not None else _import_pynvml()
        n = self.nvml
        try:
            n.nvmlInit()
        except Exception as e:  # NVMLError: no driver, no GPU
            raise MeterUnavailableError(f"NVML: cannot initialise ({' '.join(str(e).split()) or type(e).__name__}): "
                                        "no NVIDIA driver or GPU") from e
        self._initialised = True
        try:
            count = int(n.nvmlDeviceGetCount())
            if count < 1:
                raise MeterUnavailableError("NVML: no NVIDIA GPU found")
            self.handles = [n.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            names = []
            for h in self.handles:
                name = n.nvmlDeviceGetName(h)
                names.append(name.decode() if isinstance(name, bytes) else str(name))
            counter = True
            try:
                for h in self.handles:
                    n.nvmlDeviceGetTotalEnergyConsumption(h)
            except Exception:  # NVMLError_NotSupported before Volta
                counter = False
            if not counter:
                for h in self.handles:
                    n.nvmlDeviceGetPowerUsage(h)
        except MeterUnavailableError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise MeterUnavailableError(f"NVML: cannot read the GPUs: {' '.join(str(e).split())}") from e
        self.counter = counter
        domains = tuple(f"gpu{i}" for i in range(count))
        details = {d: nm for d, nm in zip(domains, names)}
        details["method"] = ("nvmlDeviceGetTotalEnergyConsumption (mJ counter)" if counter
                             else "nvmlDeviceGetPowerUsage (mW) sampled and integrated")
        self.info = MeterInfo(
            kind="nvml",
            description="NVIDIA GPU energy via NVML" + (" total-energy counter" if counter else " power sampling"),
            domains=domains,
            reading=READING_COUNTER if counter else READING_POWER,
            unit="mJ" if counter else "mW",
            details=details,
        )
        if not counter:
            self.sample_interval_s = power_interval_s
            self.threaded = threaded

    def read(self) -> dict[str, float]:
        n = self.nvml
        fn = n.nvmlDeviceGetTotalEnergyConsumption if self.counter else n.nvmlDeviceGetPowerUsage
        try:
            return {d: float(fn(h)) for d, h in zip(self.info.domains, self.handles)}
        except Exception as e:
            raise MeasurementError(f"NVML: reading the GPU failed: {' '.join(str(e).split())}") from e

    def close(self) -> None:
        if getattr(self, "_initialised", False):
            self._initialised = False
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass


def cuda_available() -> bool:
    """Whether this onnxruntime can run models on an NVIDIA GPU (so that NVML measures the model)."""
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:
        return False


def open_meter(kind: str, powercap_root: "str | Path | None" = None, nvml=None) -> LiveMeter:
    """The live meter for ``--meter KIND``; :class:`MeterUnavailableError` (one line) when it cannot be
    used here. ``auto`` tries RAPL, then NVML (only where onnxruntime can run the model on the GPU, or
    NVML would measure a GPU the model does not use); its error names every reason. ``trace`` returns
    :class:`MarkersOnly`; ``none`` always fails (the caller decides whether an estimate may stand in)."""
    root = POWERCAP_ROOT if powercap_root is None else Path(powercap_root)
    if kind == "rapl":
        return RaplMeter(root)
    if kind == "nvml":
        if nvml is None and not cuda_available():
            raise MeterUnavailableError("NVML: this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu), so the "
                                        "model would not run on the GPU that NVML measures")
        return NvmlMeter(nvml)
    if kind == "trace":
        return MarkersOnly()
    if kind == "none":
        raise MeterUnavailableError("--meter none: nothing is measured")
    if kind != "auto":
        raise MeterUnavailableError(f"unknown meter {kind!r}; use one of {', '.join(METER_KINDS)}")
    reasons = []
    try:
        return RaplMeter(root)
    except MeterUnavailableError as e:
        reasons.append(str(e))
    if not cuda_available():
        reasons.append("NVML: this onnxruntime has no CUDAExecutionProvider, so the model would not run on a GPU")
    else:
        try:
            return NvmlMeter(nvml)
        except MeterUnavailableError as e:
            reasons.append(str(e))
    reasons.append("trace: no external meter trace given (--meter trace --trace FILE)")
    raise MeterUnavailableError("nothing can be measured on this machine: " + "; ".join(reasons))


# ---------------------------------------------------------------------------------------------------
# External meter traces: CSV (timestamp, watts) and InfluxDB/Telegraf line protocol


TRACE_FORMATS = ("auto", "csv", "line-protocol")
_POWER_FIELDS = ("power_w", "watts", "power", "w", "value")
_PRECISION_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class PowerTrace:
    """Power samples logged by an external meter: wall-clock UNIX seconds and watts, time-sorted."""

    times_unix_s: tuple[float, ...]
    power_w: tuple[float, ...]
    source_format: str
    """``csv`` or ``line-protocol``."""
    file_name: str
    sha256: str
    """Of the trace file's bytes, so a label can name exactly the trace it was built from."""
    series: str
    """Which column or line-protocol series/field gave the watts."""
    offset_s: float = 0.0
    """Added to the file's timestamps: minus the logger's clock offset (logger clock minus tool clock)."""
    sample_mode: str = "mean-preceding"
    """What a sample stands for (:data:`SAMPLE_MODES`): the mean power of the interval before or after its
    timestamp, or the power at that instant."""

    def energy_j(self, start_unix_s: float, end_unix_s: float) -> float:
        """Joules over [start, end], step-exact (:func:`step_window_energy`)."""
        return self.window_energy(start_unix_s, end_unix_s).energy_j

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        t = np.asarray(self.times_unix_s, dtype=float)
        a, b = sample_supports(t, self.sample_mode)
        return t, np.asarray(self.power_w, dtype=float), a, b

    def window_energy(self, start_unix_s: float, end_unix_s: float) -> "WindowEnergy":
        return step_window_energy(*self._arrays, start_unix_s, end_unix_s)

    def with_sample_mode(self, mode: str) -> "PowerTrace":
        return dataclasses.replace(self, sample_mode=resolve_sample_mode(mode, self.source_format))

    def shifted(self, seconds: float) -> "PowerTrace":
        """The trace with ``seconds`` added to every timestamp (and to ``offset_s``)."""
        return dataclasses.replace(self, times_unix_s=tuple(x + seconds for x in self.times_unix_s),
                                   offset_s=self.offset_s + seconds)

    def median_interval_s(self) -> float:
        t = np.asarray(self.times_unix_s)
        return float(np.median(np.diff(t))) if len(t) > 1 else math.inf

    def window(self, start_unix_s: float, end_unix_s: float) -> "list[Sample]":
        """The samples covering [start, end]: those inside plus one on each side (for archiving)."""
        t = np.asarray(self.times_unix_s)
        lo = max(int(np.searchsorted(t, start_unix_s, side="right")) - 1, 0)
        hi = min(int(np.searchsorted(t, end_unix_s, side="left")) + 1, len(t))
        return [(self.times_unix_s[i], self.power_w[i]) for i in range(lo, hi)]


def _timestamp_unix_s(text: str) -> float:
    """A CSV timestamp: UNIX epoch seconds (a number; ms/us/ns recognised by magnitude) or ISO 8601 with
    a UTC offset (``Z`` or ``+01:00``). A local time without offset is refused: its instant is ambiguous."""
    text = text.strip()
    try:
        v = float(text)
    except ValueError:
        try:
            d = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as e:
            raise MeasurementRecordError(f"timestamp {text!r} is neither UNIX seconds nor ISO 8601") from e
        if d.tzinfo is None:
            raise MeasurementRecordError(f"timestamp {text!r} has no UTC offset (add Z or +HH:MM)")
        return d.timestamp()
    for factor, limit in ((1e-9, 1e17), (1e-6, 1e14), (1e-3, 1e11)):
        if abs(v) >= limit:
            return v * factor
    return v


def _finish(times: list[float], watts: list[float], fmt: str, path: Path, raw: bytes, series: str,
            offset_s: float) -> PowerTrace:
    if len(times) < 2:
        raise MeasurementRecordError(f"trace {path.name}: fewer than two power samples")
    order = np.argsort(np.asarray(times), kind="stable")
    t = [times[i] + offset_s for i in order]
    w = [watts[i] for i in order]
    if any(b == a for a, b in zip(t, t[1:])):
        raise MeasurementRecordError(f"trace {path.name}: two samples share a timestamp")
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise MeasurementRecordError(f"trace {path.name}: a power value is negative or not a number")
    return PowerTrace(tuple(t), tuple(w), fmt, path.name, hashlib.sha256(raw).hexdigest(), series, offset_s)


def parse_csv_trace(path: Path, raw: bytes, column: str | None = None, offset_s: float = 0.0) -> PowerTrace:
    """CSV with a timestamp column and a watts column. With a header, the columns are ``timestamp``
    (or ``time``) and ``column`` or the first of power_w, watts, power, w, value; without one, the
    first two columns. Comma or semicolon separated; lines starting with ``#`` are comments."""
    text = raw.decode("utf-8-sig", errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise MeasurementRecordError(f"trace {path.name}: empty")
    delim = ";" if lines[0].count(";") > lines[0].count(",") else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delim))
    head = [c.strip().lower() for c in rows[0]]
    t_col, w_col, series = 0, 1, "columns 1-2"
    try:
        float(head[0])
        has_header = False
    except (ValueError, IndexError):
        has_header = not _looks_like_time(rows[0][0] if rows[0] else "")
    if has_header:
        rows = rows[1:]
        t_names = [i for i, h in enumerate(head) if h in ("timestamp", "time", "timestamp_unix_s", "time_s")]
        wanted = (column.lower(),) if column else _POWER_FIELDS
        w_names = [head.index(c) for c in wanted if c in head]
        if not t_names or not w_names:
            raise MeasurementRecordError(
                f"trace {path.name}: header {','.join(head)} lacks a timestamp column or a watts column "
                f"({column or ' / '.join(_POWER_FIELDS)})")
        t_col, w_col = t_names[0], w_names[0]
        series = f"column {head[w_col]}"
    times, watts = [], []
    for n, row in enumerate(rows, start=2 if has_header else 1):
        if len(row) <= max(t_col, w_col):
            raise MeasurementRecordError(f"trace {path.name}: row {n} has {len(row)} columns")
        try:
            times.append(_timestamp_unix_s(row[t_col]))
            watts.append(float(row[w_col]))
        except ValueError as e:
            raise MeasurementRecordError(f"trace {path.name}: row {n}: {e}") from e
        except MeasurementRecordError as e:
            raise MeasurementRecordError(f"trace {path.name}: row {n}: {e}") from e
    return _finish(times, watts, "csv", path, raw, series, offset_s)


def _looks_like_time(text: str) -> bool:
    try:
        _timestamp_unix_s(text)
        return True
    except MeasurementRecordError:
        return False


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside double quotes and not escaped by a backslash."""
    parts, cur, quoted, i = [], [], False, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _field_number(value: str) -> float | None:
    """A line-protocol field value as a number: float, ``12i`` integer, ``12u`` unsigned; None for
    strings and booleans."""
    if value.startswith('"'):
        return None
    if value[-1:] in ("i", "u"):
        value = value[:-1]
    try:
        return float(value)
    except ValueError:
        return None


def parse_line_protocol_trace(path: Path, raw: bytes, field_name: str | None = None, precision: str = "ns",
                              offset_s: float = 0.0) -> PowerTrace:
    """InfluxDB line protocol, as Telegraf writes it: ``measurement[,tag=v...] field=value[,...] timestamp``.

    The watts come from ``field_name`` (``FIELD`` or ``MEASUREMENT.FIELD``) or the first of power_w,
    watts, power, w, value that occurs. Every line that carries it must belong to one series
    (measurement and tags); several series are refused rather than summed. Timestamps are integers in
    ``precision`` (``ns`` by default, like InfluxDB and Telegraf)."""
    if precision not in _PRECISION_S:
        raise MeasurementRecordError(f"unknown timestamp precision {precision!r}; use s, ms, us or ns")
    want_meas, want_field = (field_name.split(".", 1) if field_name and "." in field_name
                             else (None, field_name))
    points: list[tuple[str, dict[str, float], float]] = []
    text = raw.decode("utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p for p in _split_unescaped(line, " ") if p != ""]
        if len(parts) != 3:
            raise MeasurementRecordError(
                f"trace {path.name}: line {n} is not 'measurement[,tags] fields timestamp' (a timestamp is required)")
        key, fields_text, ts_text = parts
        try:
            ts = int(ts_text)
        except ValueError as e:
            raise MeasurementRecordError(f"trace {path.name}: line {n}: timestamp {ts_text!r} is not an integer") from e
        fields: dict[str, float] = {}
        for item in _split_unescaped(fields_text, ","):
            k, sep, v = item.partition("=")
            if not sep:
                raise MeasurementRecordError(f"trace {path.name}: line {n}: field {item!r} has no value")
            num = _field_number(v)
            if num is not None:
                fields[_unescape(k)] = num
        points.append((key, fields, ts * _PRECISION_S[precision] if precision != "ns" else ns_to_s(ts)))
    if not points:
        raise MeasurementRecordError(f"trace {path.name}: empty")
    if want_field is None:
        present = {f for _, fs, _ in points for f in fs}
        want_field = next((f for f in _POWER_FIELDS if f in present), None)
        if want_field is None:
            raise MeasurementRecordError(
                f"trace {path.name}: no field named {' / '.join(_POWER_FIELDS)}; choose one with --trace-field")
    series: set[str] = set()
    times, watts = [], []
    for key, fields, ts in points:
        meas = _unescape(_split_unescaped(key, ",")[0])
        if want_field not in fields or (want_meas is not None and meas != want_meas):
            continue
        series.add(key)
        times.append(ts)
        watts.append(fields[want_field])
    if len(series) > 1:
        raise MeasurementRecordError(
            f"trace {path.name}: field {want_field!r} comes from {len(series)} series ({', '.join(sorted(series)[:3])}"
            "...): keep one meter's series in the file or name it with --trace-field MEASUREMENT.FIELD")
    label = f"{next(iter(series))} {want_field}" if series else want_field
    return _finish(times, watts, "line-protocol", path, raw, label, offset_s)


#: Largest meter trace accepted, bytes (an hour at 1 kHz in CSV is about 100 MB).
MAX_TRACE_BYTES = 256 * 1024**2


def load_trace(path: "str | Path", fmt: str = "auto", field_name: str | None = None, precision: str = "ns",
               offset_s: float = 0.0, sample_mode: str = "auto") -> PowerTrace:
    """Read an external meter's trace. ``fmt`` ``auto`` takes ``.csv`` (or a first line with a comma
    or semicolon and no '=') as CSV, anything else as line protocol. ``offset_s`` is added to the
    timestamps; ``sample_mode`` says what a sample stands for (:data:`SAMPLE_MODES`)."""
    trace = _load_trace(path, fmt, field_name, precision, offset_s)
    return trace.with_sample_mode(sample_mode)


def _load_trace(path: "str | Path", fmt: str, field_name: str | None, precision: str, offset_s: float) -> PowerTrace:
    from eeki_label.fileio import read_regular_file

    path = Path(path)
    raw = read_regular_file(path, MAX_TRACE_BYTES, MeasurementRecordError, "trace")
    if fmt not in TRACE_FORMATS:
        raise MeasurementRecordError(f"unknown trace format {fmt!r}; use {', '.join(TRACE_FORMATS)}")
    if fmt == "auto":
        first = next((ln for ln in raw.decode("utf-8", errors="replace").splitlines()
                      if ln.strip() and not ln.startswith("#")), "")
        fmt = "csv" if path.suffix.lower() == ".csv" or ("=" not in first and ("," in first or ";" in first)) \
            else "line-protocol"
    if fmt == "csv":
        return parse_csv_trace(path, raw, field_name, offset_s)
    return parse_line_protocol_trace(path, raw, field_name, precision, offset_s)
