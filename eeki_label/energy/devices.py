"""Device classes, loaded from ``data/energy/device_classes.json`` and calibrated on measured anchors.

Each class names a reference system, its datasheet peak MAC rate and memory bandwidth, the
precision it runs at, and one measured anchor (whole-system energy per inference of a known
network, BRIEF §7). The class's one free constant, joules per effective MAC, is fitted so that the
estimator reproduces the anchor; the other measured figures of the file are cross-checks, printed in
``docs/calibration.md`` (``eeki-label devices --calibration``) with their deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

from eeki_label.catalogue import Catalogue, WorkProfile
from eeki_label.errors import CatalogueError
from eeki_label.resources import load_json

DEVICE_FILE = "device_classes.json"


@dataclass(frozen=True)
class Anchor:
    """A measured energy per inference of a known network on a known system."""

    system: str
    model: str
    mode: str
    energy_j: float
    source: str
    work: WorkProfile


@dataclass(frozen=True)
class DeviceClass:
    id: str
    name: str
    reference_system: str
    batch_mode: str
    assumed_batch_size: int
    precision: str
    precision_bytes: int
    peak_macs_per_s: float
    memory_bandwidth_bytes_per_s: float
    weights_max_bytes: int | None
    activations_max_bytes: int | None
    anchor: Anchor
    cross_checks: tuple[Anchor, ...]
    j_per_effective_mac: float
    """Calibrated: anchor energy / anchor effective MACs (J per MAC)."""

    @property
    def ridge_mac_per_byte(self) -> float:
        """Roofline ridge point: MACs the device does in the time it moves one byte."""
        return self.peak_macs_per_s / self.memory_bandwidth_bytes_per_s


@dataclass(frozen=True)
class DeviceRegistry:
    version: str
    sha256: str
    classes: tuple[DeviceClass, ...]
    omitted: tuple[str, ...]

    def get(self, class_id: str) -> DeviceClass:
        for c in self.classes:
            if c.id == class_id:
                return c
        raise CatalogueError(
            f"unknown device class {class_id!r}; known: {', '.join(c.id for c in self.classes)} (or 'all')"
        )

    def select(self, ids: "list[str] | tuple[str, ...]") -> tuple[DeviceClass, ...]:
        if not ids or "all" in ids:
            return self.classes
        return tuple(self.get(i) for i in dict.fromkeys(ids))


def bytes_moved(work: WorkProfile, precision_bytes: int, batch_size: int) -> float:
    """Bytes an inference moves through memory: every activation written once, and the weights
    read once per batch (so divided by the batch size), all at the class's precision."""
    return precision_bytes * (work.activation_elements + work.parameters / batch_size)


def effective_macs(work: WorkProfile, ridge_mac_per_byte: float, precision_bytes: int, batch_size: int) -> float:
    """MACs plus data movement expressed in MACs at the roofline ridge point."""
    return work.macs + ridge_mac_per_byte * bytes_moved(work, precision_bytes, batch_size)


def _work(entry: dict, catalogue: Catalogue) -> WorkProfile:
    if "catalogue_model" in entry:
        return catalogue.model(entry["catalogue_model"]).work
    p = entry["profile"]
    return WorkProfile(int(p["macs"]), int(p["activation_elements"]), int(p["parameters"]))


def _anchor(entry: dict, catalogue: Catalogue, default_system: str) -> Anchor:
    return Anchor(
        system=entry.get("system", default_system), model=entry["model"], mode=entry.get("mode", ""),
        energy_j=float(entry["energy_j"]), source=entry["source"], work=_work(entry, catalogue),
    )


def load_devices(catalogue: Catalogue) -> DeviceRegistry:
    doc = load_json("energy", DEVICE_FILE)
    c = doc.content
    classes = []
    try:
        for e in c["classes"]:
            limits = e.get("memory_limits") or {}
            anchor = _anchor(e["anchor"], catalogue, e["reference_system"])
            precision_bytes = int(e["precision_bytes"])
            batch_entry = e.get("assumed_batch_size") or {"value": 1}
            batch = int(batch_entry["value"] if isinstance(batch_entry, dict) else batch_entry)
            peak = float(e["peak_macs_per_s"]["value"])
            bw = float(e["memory_bandwidth_bytes_per_s"]["value"])
            if peak <= 0 or bw <= 0 or anchor.energy_j <= 0:
                raise CatalogueError(f"device class {e['id']}: rates and anchor energy must be positive")
            anchor_eff = effective_macs(anchor.work, peak / bw, precision_bytes, batch)
            classes.append(DeviceClass(
                id=e["id"], name=e["name"], reference_system=e["reference_system"], batch_mode=e["batch_mode"],
                assumed_batch_size=batch, precision=e["precision"], precision_bytes=precision_bytes,
                peak_macs_per_s=peak, memory_bandwidth_bytes_per_s=bw,
                weights_max_bytes=int(limits["weights_max_bytes"]["value"]) if "weights_max_bytes" in limits else None,
                activations_max_bytes=(int(limits["activations_max_bytes"]["value"])
                                       if "activations_max_bytes" in limits else None),
                anchor=anchor,
                cross_checks=tuple(_anchor(x, catalogue, x.get("system", "")) for x in e.get("cross_checks", [])),
                j_per_effective_mac=anchor.energy_j / anchor_eff,
            ))
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogueError(f"device class file is damaged: {e!r}") from e
    omitted = tuple(str(o.get("id", o)) if isinstance(o, dict) else str(o) for o in c.get("omitted", []))
    return DeviceRegistry(c["version"], doc.sha256, tuple(classes), omitted)
