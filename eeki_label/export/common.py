"""What every export shares: the exported document's identity (label id, canonical sha256, signature),
the inference volume convention, and the properties every format carries. Pure functions, no I/O.

An export never changes the label: it reads the finished document (signed or not) and writes another
format that *references* it. The reference is the label id (first 16 hex digits of the sha256 of the
document's RFC 8785 canonical bytes without ``signature``, ``docs/signing.md``), the full sha256 of
those bytes, the model's sha256, and, when the document is signed, the signature's algorithm, key
fingerprint and value, so that a reader of the export can fetch the label and check that it is the one
referenced (``eeki-label verify``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Optional

from eeki_label import __version__
from eeki_label.errors import UsageError
from eeki_label.units import j_to_kwh, j_to_mj

#: Inferences per reported figure when a format's energy unit is kWh or MJ. The label's own convention
#: (``inference.energy_wh_per_1000``): 1,000 inferences. Every export states the per-inference figure
#: and this volume next to the converted quantity; ``--inferences`` changes it.
DEFAULT_INFERENCES = 1000
#: Prefix of property names (CycloneDX properties, SPDX CdxPropertiesExtension entries).
PROPERTY_PREFIX = "eeki-label"
#: Namespace of the deterministic ids of exported documents (uuid5 of the label's canonical sha256).
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:eeki-label:export")


@dataclass(frozen=True)
class ExportSource:
    """A finished label document and its identity, the input of every exporter."""

    labels: tuple  # eeki_label.models.Label, in document order
    label_id: str
    document_sha256: str
    signature: Optional[object]  # eeki_label.models.Signature or None
    is_set: bool
    inferences: int = DEFAULT_INFERENCES

    @property
    def first(self):
        return self.labels[0]

    @property
    def model(self):
        return self.labels[0].model

    def label_for(self, device_class: Optional[str]):
        """The label of ``device_class`` (default: the document's first)."""
        if device_class is None:
            return self.first
        for lab in self.labels:
            if lab.device_class.id == device_class:
                return lab
        known = ", ".join(lab.device_class.id for lab in self.labels)
        raise UsageError(f"--device-class {device_class!r}: the label has {known}")

    @property
    def serial_uuid(self) -> str:
        """A stable UUID of this label document (the same label always exports to the same id)."""
        return str(uuid.uuid5(_UUID_NAMESPACE, self.document_sha256))


def export_source(document: dict, doc, inferences: int = DEFAULT_INFERENCES) -> ExportSource:
    """``document``: the parsed JSON as written (what the signature covers); ``doc``: its ``Label`` or
    ``LabelSet``. The signature is not checked here (the CLI checks it before exporting)."""
    from eeki_label.signing import canonical_bytes

    if inferences < 1:
        raise UsageError("--inferences must be at least 1")
    digest = hashlib.sha256(canonical_bytes(document)).hexdigest()
    labels = tuple(doc.labels) if hasattr(doc, "labels") else (doc,)
    shas = {lab.model.sha256 for lab in labels}
    if len(shas) != 1:
        raise UsageError("the labels of the set name different models; export one label at a time")
    return ExportSource(labels=labels, label_id=digest[:16], document_sha256=digest,
                        signature=getattr(doc, "signature", None), is_set=hasattr(doc, "labels"),
                        inferences=inferences)


def source_of(doc, inferences: int = DEFAULT_INFERENCES) -> ExportSource:
    """The export source of an in-memory ``Label``/``LabelSet`` (as ``assess`` writes it)."""
    import json

    from eeki_label.models import dump_json

    return export_source(json.loads(dump_json(doc)), doc, inferences)


# --------------------------------------------------------------------------------------------
# Numbers and times


def decimal_text(x: float, digits: int = 6) -> str:
    """``x`` rounded to ``digits`` significant digits, in plain decimal notation (no exponent): the
    lexical form of xsd:decimal (SPDX) and readable in YAML/markdown."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    d = Decimal(repr(float(x)))
    exponent = d.adjusted() - digits + 1
    text = format(d.quantize(Decimal(1).scaleb(exponent)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def round_sig(x: float, digits: int = 6) -> float:
    return float(decimal_text(x, digits))


def utc_timestamp(iso: str) -> str:
    """An ISO 8601 time as ``YYYY-MM-DDThh:mm:ssZ`` (UTC, seconds): SPDX's DateTime, valid everywhere."""
    t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# Figures and properties shared by the formats


@dataclass(frozen=True)
class InferenceFigure:
    """One device class's inference energy, per inference and for the stated volume."""

    device_class: str
    energy_j: float
    inferences: int

    @property
    def volume_j(self) -> float:
        return self.energy_j * self.inferences

    @property
    def volume_kwh(self) -> float:
        return j_to_kwh(self.volume_j)

    @property
    def volume_mj(self) -> float:
        """Megajoules for the volume."""
        return self.volume_j / 1e6

    @property
    def energy_mj_per_inference(self) -> float:
        """Millijoules per inference."""
        return j_to_mj(self.energy_j)


def inference_figure(label, inferences: int) -> Optional[InferenceFigure]:
    e = label.inference.energy_j
    return None if e is None else InferenceFigure(label.device_class.id, e, inferences)


def document_properties(src: ExportSource) -> list[tuple[str, str]]:
    """Name/value pairs that identify the label document and the data that graded it."""
    p = PROPERTY_PREFIX
    first = src.first
    props = [
        (f"{p}:label_id", src.label_id),
        (f"{p}:label_document_sha256", src.document_sha256),
        (f"{p}:label_canonicalization", "jcs-rfc8785-without-signature"),
        (f"{p}:label_document", "label set" if src.is_set else "label"),
        (f"{p}:model_sha256", first.model.sha256),
        (f"{p}:model_file_name", first.model.file_name),
        (f"{p}:issued_at", first.issued_at),
        (f"{p}:issuer", first.issuer or "not stated"),
        (f"{p}:tool", f"{first.tool.name} {first.tool.version}"),
        (f"{p}:exported_by", f"eeki-label {__version__}"),
        (f"{p}:rules", f"{first.rules.id} {first.rules.version}"),
        (f"{p}:rules_sha256", first.rules.sha256),
        (f"{p}:catalogue", f"{first.catalogue.id} {first.catalogue.version}"),
        (f"{p}:catalogue_sha256", first.catalogue.sha256),
        (f"{p}:device_data_version", first.device_data.version),
        (f"{p}:task", first.task.id),
        (f"{p}:inference_volume_assumption",
         f"{src.inferences} inferences per reported kWh/MJ quantity; per-inference figures are in joules"),
    ]
    sig = src.signature
    if sig is not None:
        props += [(f"{p}:signature_algorithm", sig.algorithm), (f"{p}:signature_key_fingerprint", sig.key_fingerprint),
                  (f"{p}:signature_public_key", sig.public_key), (f"{p}:signature_value", sig.value)]
    else:
        props.append((f"{p}:signature", "unsigned"))
    return props


def label_properties(label, inferences: int) -> list[tuple[str, str]]:
    """Name/value pairs of one device class's label (grade, energy per inference, reference)."""
    dc = label.device_class.id
    p = f"{PROPERTY_PREFIX}:{dc}"
    g, inf, ref = label.label, label.inference, label.reference
    props = [
        (f"{p}:device_class", f"{dc} ({label.device_class.name}; {label.device_class.reference_system})"),
        (f"{p}:class", g.class_ or "not gradable"),
        (f"{p}:index", repr(g.index) if g.index is not None else "n/a"),
        (f"{p}:method", inf.method),
        (f"{p}:estimator", inf.estimator),
        (f"{p}:energy_j_per_inference", repr(inf.energy_j) if inf.energy_j is not None else "n/a (does not fit)"),
    ]
    if inf.energy_j is not None:
        fig = InferenceFigure(dc, inf.energy_j, inferences)
        props += [(f"{p}:energy_kwh_per_{inferences}_inferences", decimal_text(fig.volume_kwh, 9)),
                  (f"{p}:energy_mj_per_{inferences}_inferences", decimal_text(fig.volume_mj, 9))]
    if inf.energy_j_ci95 is not None:
        props.append((f"{p}:energy_j_ci95", f"{inf.energy_j_ci95[0]!r}..{inf.energy_j_ci95[1]!r}"))
    if not g.gradable and g.reason:
        props.append((f"{p}:not_gradable_reason", g.reason))
    props += [
        (f"{p}:reference_model", ref.model_id or "none"),
        (f"{p}:reference_energy_j_per_inference", repr(ref.energy_j) if ref.energy_j is not None else "n/a"),
        (f"{p}:thresholds", ", ".join(f"{k}<={v}" for k, v in g.thresholds.items() if v is not None)),
    ]
    return props


def transfer_properties(label) -> list[tuple[str, str]]:
    """Name/value pairs of the NNC transfer section, when the label has one."""
    t = label.transfer
    if t is None:
        return []
    p = f"{PROPERTY_PREFIX}:transfer"
    props = [(f"{p}:codec", f"{t.standard} ({t.implementation})"), (f"{p}:original_bytes", str(t.original_bytes)),
             (f"{p}:compressed_bytes", str(t.compressed_bytes)), (f"{p}:ratio", repr(t.ratio)),
             (f"{p}:bitstream_sha256", t.bitstream_sha256), (f"{p}:fidelity_meets_bound", str(t.fidelity.meets_bound).lower()),
             (f"{p}:grid", f"{t.country} {t.grid_g_co2_per_kwh} g CO2/kWh")]
    for s in t.scenarios:
        props += [(f"{p}:{s.id}:uncompressed_wh", repr(s.uncompressed_wh)), (f"{p}:{s.id}:nnc_wh", repr(s.nnc_wh)),
                  (f"{p}:{s.id}:nnc_saving_share", repr(s.nnc_saving_share))]
    return props
