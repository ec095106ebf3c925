"""Device classes, loaded from a versioned device-data file ``data/energy/device-classes-<version>.json``
(or an auditor's own file, ``assess --device-data FILE``, e.g. one written by ``eeki-label calibrate``).

Each class names a reference system, its datasheet peak MAC rate and memory bandwidth, the precision
it runs at, and whole-system measurements of known networks on that system (BRIEF §7).

* **Device data 1.0.0** (formula ``roofline-additive-v1``): one measured anchor per class; the one
  free constant, joules per effective MAC, reproduces it. Other measured figures are cross-checks.
* **Device data 2.0.0** (formula ``roofline-weighted-v2``, :mod:`eeki_label.energy.fit`): several
  workloads of ONE reference system per class; ``k`` and the bytes weight ``w`` are fitted in log
  space, and every workload's leave-one-workload-out error is the class's stated held-out error.
  The fit is recomputed from the file's workloads at load, so the constants cannot drift from the data.

``eeki-label devices --calibration`` and ``docs/calibration.md`` print both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from eeki_label.catalogue import Catalogue, WorkProfile
from eeki_label.energy import fit as fitmod
from eeki_label.errors import CatalogueError
from eeki_label.resources import DataDocument, load_versioned, versions

DEVICE_PREFIX = "device-classes-"
DEVICE_FILE = "device-classes-1.0.0.json"
"""The 1.0.0 file (formerly ``device_classes.json``, the same bytes and sha256)."""


@dataclass(frozen=True)
class Anchor:
    """A measured energy per inference of a known network on a known system (a workload of a class)."""

    system: str
    model: str
    mode: str
    energy_j: float
    source: str
    work: WorkProfile
    benchmark: str = ""


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
    """1.0.0: the one fitted anchor. 2.0.0: the first workload (for orientation)."""
    cross_checks: tuple[Anchor, ...]
    j_per_effective_mac: float
    """Calibrated: joules per effective MAC (1.0.0: anchor energy / anchor effective MACs; 2.0.0: fitted)."""
    bytes_weight: float = 1.0
    """w of ``roofline-weighted-v2`` (1 in 1.0.0: the additive roofline)."""
    workloads: tuple[Anchor, ...] = ()
    """2.0.0: the measured workloads the class is fitted on (all of one reference system)."""
    bytes_weight_bounds: tuple[float, float] = (1.0, 1.0)
    bytes_weight_at_bound: bool = False
    held_out: fitmod.HeldOutSummary = field(default_factory=lambda: fitmod.HeldOutSummary(()))
    fit_note: str = ""

    @property
    def ridge_mac_per_byte(self) -> float:
        """Roofline ridge point: MACs the device does in the time it moves one byte."""
        return self.peak_macs_per_s / self.memory_bandwidth_bytes_per_s

    @property
    def calibration(self) -> str:
        """How the class's constant was obtained, in one line (the label's ``calibration_anchor``)."""
        if not self.workloads:
            return f"{self.anchor.model} on {self.anchor.system}: {self.anchor.energy_j * 1e3:g} mJ measured"
        names = ", ".join(w.benchmark or w.model for w in self.workloads)
        s = f"fitted on {len(self.workloads)} workload(s) of {self.reference_system} ({names})"
        h = self.held_out
        if h.rows:
            s += (f"; held-out error median {h.median_abs_error * 100:.0f} %, worst {h.worst_ratio:.2f}x "
                  f"({h.worst.name})")
        else:
            s += "; no held-out error (one workload)"
        return s


@dataclass(frozen=True)
class DeviceRegistry:
    version: str
    sha256: str
    classes: tuple[DeviceClass, ...]
    omitted: tuple[str, ...]
    file: str = DEVICE_FILE
    """The device-data file's name (shipped: ``device-classes-<version>.json``; own file: its name)."""
    formula: str = "roofline-additive-v1"
    shipped: bool = True

    def get(self, class_id: str) -> DeviceClass:
        for c in self.classes:
            if c.id == class_id:
                return c
        raise CatalogueError(
            f"unknown device class {class_id!r}; known: {', '.join(c.id for c in self.classes)} (or 'all')"
        )

    def with_shipped_fallback(self, catalogue: Catalogue | None) -> "DeviceRegistry":
        """This registry, and for an own file (``--device-data FILE``) also the newest shipped classes it
        lacks: the recycling section's training energy is priced on a datacenter class that an own file
        for one machine does not have. Inference labels use only the file's own classes."""
        if self.shipped:
            return self
        newest = load_devices(catalogue)
        own = {c.id for c in self.classes}
        return dataclasses.replace(self, classes=self.classes + tuple(c for c in newest.classes if c.id not in own))

    def select(self, ids: "list[str] | tuple[str, ...]") -> tuple[DeviceClass, ...]:
        if not ids or "all" in ids:
            return self.classes
        return tuple(self.get(i) for i in dict.fromkeys(ids))


def bytes_moved(work: WorkProfile, precision_bytes: int, batch_size: int) -> float:
    """Bytes an inference moves through memory: every activation written once, and the weights
    read once per batch (so divided by the batch size), all at the class's precision."""
    return precision_bytes * (work.activation_elements + work.parameters / batch_size)


def effective_macs(work: WorkProfile, ridge_mac_per_byte: float, precision_bytes: int, batch_size: int,
                   bytes_weight: float = 1.0) -> float:
    """MACs plus data movement expressed in MACs at the roofline ridge point (times the bytes weight)."""
    return work.macs + bytes_weight * ridge_mac_per_byte * bytes_moved(work, precision_bytes, batch_size)


def _work(entry: dict, catalogue: Catalogue | None) -> WorkProfile:
    if "profile" in entry:
        p = entry["profile"]
        return WorkProfile(int(p["macs"]), int(p["activation_elements"]), int(p["parameters"]))
    if catalogue is None:
        raise CatalogueError(f"workload {entry.get('model')!r} names a catalogue model but has no profile")
    return catalogue.model(entry["catalogue_model"]).work


def _anchor(entry: dict, catalogue: Catalogue | None, default_system: str) -> Anchor:
    return Anchor(
        system=entry.get("system", default_system), model=entry["model"], mode=entry.get("mode", ""),
        energy_j=float(entry["energy_j"]), source=_source_text(entry["source"]), work=_work(entry, catalogue),
        benchmark=entry.get("benchmark", ""),
    )


def _source_text(src) -> str:
    """A source is a sentence (1.0.0) or ``{repo, path, commit, ...}`` (2.0.0): one line either way."""
    if isinstance(src, str):
        return src
    parts = [src.get("title", "")]
    if "repo" in src:
        parts.append(f"{src['repo']}/{src.get('path', '')} @ {str(src.get('commit', ''))[:12]}")
    if "url" in src:
        parts.append(f"<{src['url']}>")
    if "derivation" in src:
        parts.append(src["derivation"])
    return "; ".join(p for p in parts if p)


def _is_file_argument(data: str) -> bool:
    return data.endswith(".json") or os.sep in data or "/" in data


def load_device_document(data: "str | None" = None) -> tuple[DataDocument, bool]:
    """The device-data document: a shipped version (default: the newest) or a file of one's own."""
    if data and _is_file_argument(data):
        path = Path(data)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise CatalogueError(f"device data file {path.name}: cannot be read ({e.strerror or e})") from e
        try:
            content = json.loads(raw)
        except ValueError as e:
            raise CatalogueError(f"device data file {path.name} is not valid JSON: {e}") from e
        if not isinstance(content, dict):
            raise CatalogueError(f"device data file {path.name}: not a device-data document")
        return DataDocument("energy", path.name, hashlib.sha256(raw).hexdigest(), content), False
    return load_versioned("energy", DEVICE_PREFIX, data, "device data"), True


def device_data_versions() -> list[str]:
    return versions("energy", DEVICE_PREFIX)


def _positive(value, what: str) -> float:
    v = float(value)
    if not v > 0:
        raise CatalogueError(f"{what} must be positive")
    return v


def _class_from_entry(e: dict, catalogue: Catalogue | None, fitted: bool) -> DeviceClass:
    limits = e.get("memory_limits") or {}
    precision_bytes = int(e["precision_bytes"])
    batch_entry = e.get("assumed_batch_size") or {"value": 1}
    batch = int(batch_entry["value"] if isinstance(batch_entry, dict) else batch_entry)
    peak = _positive(e["peak_macs_per_s"]["value"], f"device class {e['id']}: peak_macs_per_s")
    bw = _positive(e["memory_bandwidth_bytes_per_s"]["value"], f"device class {e['id']}: memory bandwidth")
    if precision_bytes <= 0 or batch <= 0:
        raise CatalogueError(f"device class {e['id']}: precision_bytes and the batch size must be positive")
    ridge = peak / bw
    common = dict(
        id=e["id"], name=e["name"], reference_system=e["reference_system"], batch_mode=e["batch_mode"],
        assumed_batch_size=batch, precision=e["precision"], precision_bytes=precision_bytes,
        peak_macs_per_s=peak, memory_bandwidth_bytes_per_s=bw,
        weights_max_bytes=int(limits["weights_max_bytes"]["value"]) if "weights_max_bytes" in limits else None,
        activations_max_bytes=(int(limits["activations_max_bytes"]["value"])
                               if "activations_max_bytes" in limits else None),
        cross_checks=tuple(_anchor(x, catalogue, x.get("system", "")) for x in e.get("cross_checks", [])),
    )
    if not fitted:
        anchor = _anchor(e["anchor"], catalogue, e["reference_system"])
        _positive(anchor.energy_j, f"device class {e['id']}: anchor energy")
        anchor_eff = effective_macs(anchor.work, ridge, precision_bytes, batch)
        return DeviceClass(**common, anchor=anchor, j_per_effective_mac=anchor.energy_j / anchor_eff)
    workloads = tuple(_anchor(w, catalogue, e["reference_system"]) for w in e["workloads"])
    if not workloads:
        raise CatalogueError(f"device class {e['id']}: no workloads")
    for w in workloads:
        _positive(w.energy_j, f"device class {e['id']}: workload {w.benchmark or w.model} energy")
    bounds = e["fit"]["bytes_weight_bounds"]
    w_min, w_max = float(bounds["min"]), float(bounds["max"])
    pts = points_of(workloads, precision_bytes, batch)
    try:
        f = fitmod.fit(pts, ridge, w_min, w_max)
    except ValueError as err:
        raise CatalogueError(f"device class {e['id']}: {err}") from err
    return DeviceClass(
        **common, anchor=workloads[0], j_per_effective_mac=f.k_j_per_effective_mac, bytes_weight=f.bytes_weight,
        workloads=workloads, bytes_weight_bounds=(w_min, w_max), bytes_weight_at_bound=f.bytes_weight_at_bound,
        held_out=fitmod.leave_one_out(pts, ridge, w_min, w_max), fit_note=str(e["fit"].get("note", "")),
    )


def points_of(workloads, precision_bytes: int, batch: int) -> list[fitmod.Point]:
    return [fitmod.Point(w.benchmark or w.model, float(w.work.macs), bytes_moved(w.work, precision_bytes, batch),
                         w.energy_j) for w in workloads]


def registry_from_document(doc: DataDocument, catalogue: Catalogue | None, shipped: bool) -> DeviceRegistry:
    c = doc.content
    fitted = "classes" in c and any("workloads" in e for e in c.get("classes", []))
    classes = []
    try:
        for e in c["classes"]:
            classes.append(_class_from_entry(e, catalogue, fitted))
        version = str(c["version"])
    except CatalogueError as e:
        raise CatalogueError(f"device data {doc.name}: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CatalogueError(f"device class file {doc.name} is damaged: {e!r}") from e
    if len({d.id for d in classes}) != len(classes):
        raise CatalogueError(f"device data {doc.name}: duplicate class ids")
    omitted = tuple(str(o.get("id", o)) if isinstance(o, dict) else str(o) for o in c.get("omitted", []))
    formula = fitmod.FORMULA_ID if fitted else "roofline-additive-v1"
    return DeviceRegistry(version, doc.sha256, tuple(classes), omitted, file=doc.name, formula=formula,
                          shipped=shipped)


def load_devices(catalogue: Catalogue | None = None, data: "str | None" = None) -> DeviceRegistry:
    """Device data ``data``: a shipped version (``"1.0.0"``), a file path, or None for the newest shipped."""
    doc, shipped = load_device_document(data)
    return registry_from_document(doc, catalogue, shipped)
