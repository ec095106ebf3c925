"""The only place unit conversions live.

Energies are joules (J) inside the tool; watt-hours (Wh) and kilowatt-hours (kWh) only at the
edges. Data sizes are bytes; link rates are bits per second.
"""

from __future__ import annotations

J_PER_WH = 3600.0
J_PER_KWH = 3.6e6
BITS_PER_BYTE = 8
BYTES_PER_MB = 1e6  # decimal megabyte, as the study reports model sizes (46.8 MB = 46.8e6 bytes)
BYTES_PER_GB = 1e9


def j_to_wh(energy_j: float) -> float:
    return energy_j / J_PER_WH


def wh_to_j(energy_wh: float) -> float:
    return energy_wh * J_PER_WH


def j_to_kwh(energy_j: float) -> float:
    return energy_j / J_PER_KWH


def kwh_to_j(energy_kwh: float) -> float:
    return energy_kwh * J_PER_KWH


def j_to_mj(energy_j: float) -> float:
    """Joules to millijoules."""
    return energy_j * 1e3


def uj_to_j(energy_uj: float) -> float:
    """Microjoules (RAPL ``energy_uj`` counters) to joules."""
    return energy_uj * 1e-6


def mj_to_j(energy_mj: float) -> float:
    """Millijoules (NVML total-energy counter) to joules."""
    return energy_mj * 1e-3


def mw_to_w(power_mw: float) -> float:
    """Milliwatts (NVML power usage) to watts."""
    return power_mw * 1e-3


def ns_to_s(time_ns: float) -> float:
    """Nanoseconds (line-protocol timestamps) to seconds."""
    return time_ns * 1e-9


def mbit_s_to_bit_s(rate_mbit_s: float) -> float:
    return rate_mbit_s * 1e6


def transfer_time_s(size_bytes: float, rate_bit_s: float) -> float:
    """Seconds to move ``size_bytes`` over a link of ``rate_bit_s`` bits per second."""
    return size_bytes * BITS_PER_BYTE / rate_bit_s


def mb(size_bytes: float) -> float:
    """Bytes to decimal megabytes."""
    return size_bytes / BYTES_PER_MB


def co2_g(energy_j: float, intensity_g_per_kwh: float) -> float:
    """Grams of CO2 for ``energy_j`` at a grid intensity in g CO2 per kWh."""
    return j_to_kwh(energy_j) * intensity_g_per_kwh


def cost_eur(energy_j: float, price_eur_per_kwh: float) -> float:
    return j_to_kwh(energy_j) * price_eur_per_kwh


def human_bytes(size_bytes: float) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size_bytes >= factor:
            return f"{size_bytes / factor:.2f} {unit}"
    return f"{int(size_bytes)} B"
