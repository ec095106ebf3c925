"""Energy of shipping a model: one-time distribution, periodic updates, federated learning, deltas.

Pure functions over frozen dataclasses; no I/O except :func:`load_parameters` (the shipped data
file ``data/energy/transfer.json``, every figure with its source).

The model (the EEKI study's, BRIEF section 3):

* one **transfer** moves ``payload_bytes`` up from the sender and down to the receiver:
  ``time_s = payload_bytes * 8 / up_bit_s + payload_bytes * 8 / down_bit_s``, and costs
  ``transfer_power_w * time_s`` joules;
* **codec** energy is ``codec_power_w * (encodes * encode_s + decodes * decode_s)`` joules;
* optional **network** energy is ``network_kwh_per_gb * payload_bytes / 1e9`` kWh per transfer;
* energies are joules inside; :class:`TransferEnergy` converts to Wh, g CO2 (grid intensity in
  g/kWh) and EUR (price in EUR/kWh) through :mod:`eeki_label.units`.

Counting rules (operations per scenario):

=====================  ==================  ================  ===============
scenario               transfers           encodes           decodes
=====================  ==================  ================  ===============
one-time, M devices    M                   1                 M
N updates, M devices   N * M               N                 N * M
federated, K x R       2 K R               (1 + K) R         2 K R
=====================  ==================  ================  ===============

Federated learning: each round the server sends the global model to K clients (K transfers, one
encode, K decodes) and each client sends its model back (K transfers, K encodes, K decodes at the
server). With delta coding the first download of round 1 carries the full model (the clients have
nothing yet); every later transfer, and every upload, carries a delta against the model the
receiver already holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from eeki_label import units
from eeki_label.errors import CatalogueError, UsageError


@dataclass(frozen=True)
class Link:
    """A network path; rates in bits per second."""

    up_bit_s: float
    down_bit_s: float
    name: str = "custom"

    def __post_init__(self) -> None:
        if not (self.up_bit_s > 0 and self.down_bit_s > 0):
            raise UsageError(f"link rates must be positive (up {self.up_bit_s} bit/s, down {self.down_bit_s} bit/s)")

    def transfer_time_s(self, payload_bytes: float) -> float:
        """Seconds to send ``payload_bytes`` up from the sender plus down to the receiver."""
        return units.transfer_time_s(payload_bytes, self.up_bit_s) + units.transfer_time_s(payload_bytes, self.down_bit_s)


@dataclass(frozen=True)
class Device:
    """Power drawn by the communicating devices: while transferring and while running the codec (W)."""

    transfer_power_w: float
    codec_power_w: float
    name: str = "custom"


@dataclass(frozen=True)
class Payload:
    """What one transfer carries and what coding it costs: bytes, and seconds per encode/decode.

    Uncompressed transfer: ``Payload(original_bytes)`` (no codec time).
    """

    payload_bytes: float
    encode_s: float = 0.0
    decode_s: float = 0.0
    label: str = "uncompressed"


@dataclass(frozen=True)
class Grid:
    """Where the energy is drawn: carbon intensity (g CO2/kWh) and price (EUR/kWh), with their origin."""

    g_co2_per_kwh: float
    price_eur_per_kwh: float | None = None
    country: str = "custom"


@dataclass(frozen=True)
class Counts:
    """How many transfers, encodes and decodes a scenario performs, split by payload kind."""

    full_transfers: int = 0
    delta_transfers: int = 0
    full_encodes: int = 0
    delta_encodes: int = 0
    full_decodes: int = 0
    delta_decodes: int = 0

    @property
    def transfers(self) -> int:
        return self.full_transfers + self.delta_transfers

    @property
    def encodes(self) -> int:
        return self.full_encodes + self.delta_encodes

    @property
    def decodes(self) -> int:
        return self.full_decodes + self.delta_decodes


@dataclass(frozen=True)
class TransferEnergy:
    """Energy of a scenario for one payload policy. Joules inside; Wh, g CO2 and EUR as properties."""

    label: str
    counts: Counts
    bytes_total: float
    """Bytes moved over all transfers."""
    transfer_time_s: float
    codec_time_s: float
    transfer_j: float
    codec_j: float
    network_j: float
    grid: Grid | None = None

    @property
    def total_j(self) -> float:
        return self.transfer_j + self.codec_j + self.network_j

    @property
    def total_wh(self) -> float:
        return units.j_to_wh(self.total_j)

    @property
    def transfer_wh(self) -> float:
        return units.j_to_wh(self.transfer_j)

    @property
    def codec_wh(self) -> float:
        return units.j_to_wh(self.codec_j)

    @property
    def network_wh(self) -> float:
        return units.j_to_wh(self.network_j)

    @property
    def co2_g(self) -> float | None:
        return units.co2_g(self.total_j, self.grid.g_co2_per_kwh) if self.grid else None

    @property
    def cost_eur(self) -> float | None:
        if self.grid is None or self.grid.price_eur_per_kwh is None:
            return None
        return units.cost_eur(self.total_j, self.grid.price_eur_per_kwh)


@dataclass(frozen=True)
class Comparison:
    """A scenario with and without NNC (and with NNC delta coding, when a delta payload is given)."""

    scenario: str
    uncompressed: TransferEnergy
    nnc: TransferEnergy | None
    nnc_delta: TransferEnergy | None

    def saving(self, variant: TransferEnergy | None) -> float | None:
        """Fraction of the uncompressed energy saved by ``variant`` (negative: it costs more)."""
        if variant is None or self.uncompressed.total_j == 0:
            return None
        return 1.0 - variant.total_j / self.uncompressed.total_j


# --------------------------------------------------------------------------------------------
# Counting


def one_time_counts(devices: int = 1) -> Counts:
    """One trained model to ``devices`` receivers: one encode, one transfer and decode per receiver."""
    _positive(devices=devices)
    return Counts(full_transfers=devices, full_encodes=1, full_decodes=devices)


def periodic_counts(updates: int, devices: int = 1, delta: bool = False) -> Counts:
    """``updates`` new versions, each sent to ``devices`` receivers (delta: each an update against the
    version the receivers hold, which they must have received intact)."""
    _positive(updates=updates, devices=devices)
    if delta:
        return Counts(delta_transfers=updates * devices, delta_encodes=updates, delta_decodes=updates * devices)
    return Counts(full_transfers=updates * devices, full_encodes=updates, full_decodes=updates * devices)


def federated_counts(clients: int, rounds: int, delta: bool = False) -> Counts:
    """Federated learning, ``clients`` x ``rounds`` (see the module docstring for the rules)."""
    _positive(clients=clients, rounds=rounds)
    k, r = clients, rounds
    if not delta:
        return Counts(full_transfers=2 * k * r, full_encodes=(1 + k) * r, full_decodes=2 * k * r)
    # round 1's download is the full model; everything else is a delta
    return Counts(full_transfers=k, delta_transfers=2 * k * r - k,
                  full_encodes=1, delta_encodes=(1 + k) * r - 1,
                  full_decodes=k, delta_decodes=2 * k * r - k)


def _positive(**kw: int) -> None:
    for name, v in kw.items():
        if int(v) != v or v < 1:
            raise UsageError(f"{name} must be a positive integer, got {v}")


# --------------------------------------------------------------------------------------------
# Energy


def energy(counts: Counts, full: Payload, link: Link, device: Device, delta: Payload | None = None,
           network_kwh_per_gb: float | None = None, grid: Grid | None = None, label: str | None = None) -> TransferEnergy:
    """Energy of ``counts`` operations with ``full`` (and ``delta``) payloads (see the module docstring)."""
    if (counts.delta_transfers or counts.delta_encodes or counts.delta_decodes) and delta is None:
        raise UsageError("these counts include delta transfers but no delta payload was given")
    d = delta if delta is not None else Payload(0.0)
    bytes_total = counts.full_transfers * full.payload_bytes + counts.delta_transfers * d.payload_bytes
    t_transfer = counts.full_transfers * link.transfer_time_s(full.payload_bytes) \
        + counts.delta_transfers * link.transfer_time_s(d.payload_bytes)
    t_codec = counts.full_encodes * full.encode_s + counts.full_decodes * full.decode_s \
        + counts.delta_encodes * d.encode_s + counts.delta_decodes * d.decode_s
    net_j = units.kwh_to_j(network_kwh_per_gb * bytes_total / units.BYTES_PER_GB) if network_kwh_per_gb else 0.0
    return TransferEnergy(
        label=label or (full.label if delta is None else f"{full.label}+{d.label}"),
        counts=counts, bytes_total=bytes_total, transfer_time_s=t_transfer, codec_time_s=t_codec,
        transfer_j=device.transfer_power_w * t_transfer, codec_j=device.codec_power_w * t_codec,
        network_j=net_j, grid=grid)


def compare(scenario: str, counts_full: Counts, counts_delta: Counts | None, original_bytes: float,
            nnc: Payload | None, nnc_delta: Payload | None, link: Link, device: Device,
            network_kwh_per_gb: float | None = None, grid: Grid | None = None) -> Comparison:
    """The scenario uncompressed, with NNC, and with NNC delta coding (when ``nnc_delta`` is given)."""
    raw = energy(counts_full, Payload(original_bytes), link, device, None, network_kwh_per_gb, grid, "uncompressed")
    coded = energy(counts_full, nnc, link, device, None, network_kwh_per_gb, grid, "nnc") if nnc else None
    coded_delta = None
    if nnc is not None and nnc_delta is not None and counts_delta is not None:
        coded_delta = energy(counts_delta, nnc, link, device, nnc_delta, network_kwh_per_gb, grid, "nnc-delta")
    return Comparison(scenario, raw, coded, coded_delta)


def one_time(original_bytes: float, nnc: Payload | None, link: Link, device: Device, devices: int = 1,
             network_kwh_per_gb: float | None = None, grid: Grid | None = None) -> Comparison:
    """One-time distribution of a trained model to ``devices`` receivers."""
    return compare("one-time", one_time_counts(devices), None, original_bytes, nnc, None, link, device,
                   network_kwh_per_gb, grid)


def periodic_updates(original_bytes: float, nnc: Payload | None, link: Link, device: Device, updates: int,
                     devices: int = 1, nnc_delta: Payload | None = None,
                     network_kwh_per_gb: float | None = None, grid: Grid | None = None) -> Comparison:
    """``updates`` new versions to ``devices`` receivers; with ``nnc_delta`` also as delta updates."""
    return compare("periodic-updates", periodic_counts(updates, devices),
                   periodic_counts(updates, devices, delta=True), original_bytes, nnc, nnc_delta, link, device,
                   network_kwh_per_gb, grid)


def federated(original_bytes: float, nnc: Payload | None, link: Link, device: Device, clients: int, rounds: int,
              nnc_delta: Payload | None = None, network_kwh_per_gb: float | None = None,
              grid: Grid | None = None) -> Comparison:
    """Federated learning with ``clients`` clients and ``rounds`` rounds (training energy excluded)."""
    return compare("federated-learning", federated_counts(clients, rounds),
                   federated_counts(clients, rounds, delta=True), original_bytes, nnc, nnc_delta, link, device,
                   network_kwh_per_gb, grid)


# --------------------------------------------------------------------------------------------
# Parameters from the data file


@dataclass(frozen=True)
class Parameters:
    """The shipped parameter file, parsed. ``sha256`` identifies the exact file used."""

    links: Mapping[str, Link]
    devices: Mapping[str, Device]
    network_kwh_per_gb: Mapping[str, float]
    grid_g_per_kwh: Mapping[str, float]
    price_eur_per_kwh: Mapping[str, float]
    default_link: str
    default_device: str
    default_country: str
    default_price: str
    car_g_per_km: float
    study_reference: Mapping[str, object]
    version: str
    sha256: str
    codec_wh_per_float32_mb: float | None = None
    """Device energy of one encode plus one decode per MB of float32 weights coded (the study's figure)."""
    codec_encode_share: float | None = None
    """Share of that energy spent encoding (0..1)."""

    def device_codec_s(self, coded_float32_bytes: float, device: "Device") -> tuple[float, float]:
        """(encode, decode) seconds on the transfer device for ``coded_float32_bytes``, from the data
        file's codec energy at the device's codec power. Raises when the data file lacks the figures."""
        if self.codec_wh_per_float32_mb is None or self.codec_encode_share is None:
            raise CatalogueError("data/energy/transfer.json has no codec_energy section")
        total_s = units.wh_to_j(self.codec_wh_per_float32_mb * units.mb(coded_float32_bytes)) / device.codec_power_w
        return total_s * self.codec_encode_share, total_s * (1 - self.codec_encode_share)

    def link(self, name: str | None = None) -> Link:
        key = name or self.default_link
        if key not in self.links:
            raise CatalogueError(f"unknown link {key!r}; known: {sorted(self.links)}")
        return self.links[key]

    def device(self, name: str | None = None) -> Device:
        key = name or self.default_device
        if key not in self.devices:
            raise CatalogueError(f"unknown transfer device {key!r}; known: {sorted(self.devices)}")
        return self.devices[key]

    def grid(self, country: str | None = None, price: str | float | None = None) -> Grid:
        """Grid for a country code (``WORLD`` fallback for unknown codes, flagged in ``country``)."""
        code = (country or self.default_country).upper()
        if code in self.grid_g_per_kwh:
            g, label = self.grid_g_per_kwh[code], code
        else:
            g, label = self.grid_g_per_kwh["WORLD"], f"{code} (unknown: world average used)"
        if isinstance(price, (int, float)):
            p = float(price)
        else:
            pkey = price or self.default_price
            if pkey not in self.price_eur_per_kwh:
                raise CatalogueError(f"unknown electricity price {pkey!r}; known: {sorted(self.price_eur_per_kwh)}")
            p = self.price_eur_per_kwh[pkey]
        return Grid(g, p, label)


def _value(entry, what: str) -> float:
    try:
        return float(entry["value"])
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogueError(f"data/energy/transfer.json: {what} has no numeric 'value'") from e


def parse_parameters(doc: Mapping, sha256: str = "") -> Parameters:
    """Parse the content of ``transfer.json`` (every figure must carry a ``source``)."""
    try:
        links = {k: Link(units.mbit_s_to_bit_s(_value(v["up_mbit_s"], f"links.{k}.up")),
                         units.mbit_s_to_bit_s(_value(v["down_mbit_s"], f"links.{k}.down")), k)
                 for k, v in doc["links"].items()}
        devices = {k: Device(_value(v["transfer_power_w"], f"devices.{k}.transfer_power_w"),
                             _value(v["codec_power_w"], f"devices.{k}.codec_power_w"), k)
                   for k, v in doc["devices"].items()}
        net = {k: _value(v, f"network_kwh_per_gb.{k}") for k, v in doc["network_kwh_per_gb"].items()}
        grid = {k.upper(): _value(v, f"grid_g_per_kwh.{k}") for k, v in doc["grid_g_per_kwh"].items()}
        price = {k: _value(v, f"price_eur_per_kwh.{k}") for k, v in doc["price_eur_per_kwh"].items()}
        for section in ("network_kwh_per_gb", "grid_g_per_kwh", "price_eur_per_kwh"):
            for k, v in doc[section].items():
                if not str(v.get("source", "")).strip():
                    raise CatalogueError(f"data/energy/transfer.json: {section}.{k} has no source")
        if "WORLD" not in grid:
            raise CatalogueError("data/energy/transfer.json: grid_g_per_kwh lacks the WORLD fallback")
        return Parameters(links, devices, net, grid, price, doc["default_link"], doc["default_device"],
                          doc["default_country"], doc["default_price"], _value(doc["car_g_per_km"], "car_g_per_km"),
                          dict(doc.get("study_reference", {})), str(doc.get("version", "")), sha256,
                          *_codec_energy(doc.get("codec_energy")))
    except (KeyError, TypeError, AttributeError) as e:
        raise CatalogueError(f"data/energy/transfer.json is damaged: {type(e).__name__}: {e}") from e


def _codec_energy(entry) -> tuple[float | None, float | None]:
    if not entry:
        return None, None
    share = _value(entry["encode_share"], "codec_energy.encode_share")
    if not 0 < share < 1:
        raise CatalogueError("data/energy/transfer.json: codec_energy.encode_share must be in (0, 1)")
    return _value(entry["encode_plus_decode_wh_per_float32_mb"], "codec_energy.encode_plus_decode_wh_per_float32_mb"), share


def load_parameters() -> Parameters:
    """The shipped ``data/energy/transfer.json``."""
    from eeki_label.resources import load_json

    doc = load_json("energy", "transfer.json")
    return parse_parameters(doc.content, doc.sha256)


def car_km(co2_g: float, car_g_per_km: float) -> float:
    """Kilometres a mid-size petrol car drives for ``co2_g`` grams of CO2."""
    return co2_g / car_g_per_km
