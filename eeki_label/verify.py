"""``eeki-label verify``: what an auditor checks on a label, in order, each failure with its own error.

1. the document is a label (``LabelFileError``, 40);
2. it is signed (``UnsignedLabelError``, 41) and the signature matches its content
   (``SignatureInvalidError``, 42);
3. it is signed with the key the auditor trusts, when one is given (``UntrustedKeyError``, 43);
4. the rule set, reference catalogue and device data it names are installed here, with the same
   sha256 (``DataMismatchError``, 45);
5. the model is the labelled one: its sha256 matches (``ModelMismatchError``, 44). For a model with an
   embedded label the sha256 is that of the file without the label record (``eeki_label.embed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eeki_label.errors import CatalogueError, DataMismatchError, LabelFileError, ModelMismatchError, UntrustedKeyError
from eeki_label.fileio import open_regular, read_regular_file
from eeki_label.model_io import sha256_file
from eeki_label.signing import check_signature, fingerprint, load_public_key, parse_document

MAX_LABEL_FILE_BYTES = 64 * 1024 * 1024


def read_label_file(path: "str | Path") -> tuple[dict, object]:
    """Parse and validate a label file: (the parsed JSON, the ``Label``/``LabelSet``)."""
    path = Path(path)
    data = read_regular_file(path, MAX_LABEL_FILE_BYTES, LabelFileError, "label")
    obj = parse_document(data, path.name)
    return obj, validate_document(obj, path.name)


def validate_document(obj: dict, source: str):
    """The pydantic model of a parsed label document (a set when it has ``labels``)."""
    from pydantic import ValidationError

    from eeki_label.models import Label, LabelSet

    model = LabelSet if "labels" in obj else Label
    try:
        doc = model.model_validate(obj)
        if model is LabelSet and not doc.labels:
            raise LabelFileError(f"{source}: the label set is empty")
        return doc
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(document)"
        raise LabelFileError(
            f"{source}: not a valid eeki-label {model.__name__} ({e.error_count()} problem(s); first: {where}: "
            f"{first.get('msg')})") from e


def looks_like_json(path: Path) -> bool:
    with open_regular(path, LabelFileError, "label") as f:
        try:
            head = f.read(64)
        except OSError as e:
            raise LabelFileError(f"cannot read label {path}: {e.strerror or e}") from e
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


@dataclass(frozen=True)
class VerifyReport:
    source: str
    label_id: str
    key_fingerprint: str
    key_pinned: bool
    model_sha256: str
    model_checked: str | None
    """How the model was checked: ``file NAME``, ``embedded in NAME``, or None (not checked)."""
    data: tuple[str, ...]
    device_classes: tuple[str, ...]

    def summary(self) -> str:
        parts = [f"OK {self.source}: label {self.label_id}, signature valid (ed25519, key {self.key_fingerprint})"]
        parts.append("key matches --public-key" if self.key_pinned
                     else "key NOT pinned: pass --public-key ISSUER.pub to check who signed")
        parts.append(f"model sha256 {self.model_sha256[:16]}… matches ({self.model_checked})" if self.model_checked
                     else "model not checked: pass --model MODEL.onnx")
        parts.append("known data: " + ", ".join(self.data))
        return "; ".join(parts)


def verify(source: "str | Path", model: "str | Path | None" = None, public_key: "str | Path | None" = None
           ) -> VerifyReport:
    """Verify a label file, or a model file that carries an embedded label; raise on the first failure."""
    from eeki_label.embed import extract

    source = Path(source)
    model_sha = None
    model_checked = None
    if looks_like_json(source):
        obj, doc = read_label_file(source)
    else:
        embedded = extract(source)
        obj = parse_document(embedded.label_text, f"label embedded in {source.name}")
        doc = validate_document(obj, f"label embedded in {source.name}")
        model_sha, model_checked = embedded.original_sha256, f"embedded in {source.name}"

    check = check_signature(obj, source.name)
    pinned = False
    if public_key is not None:
        trusted = load_public_key(public_key)
        if trusted != check.public_key:
            raise UntrustedKeyError(
                f"{source.name} is signed with key {check.key_fingerprint}, not with the given key {fingerprint(trusted)}")
        pinned = True

    labels = list(doc.labels) if hasattr(doc, "labels") else [doc]
    data = check_data(labels)

    named = {lab.model.sha256 for lab in labels}
    if len(named) != 1:
        raise LabelFileError(f"{source.name}: the labels of the set name different models")
    named_sha = named.pop()
    if model is not None:
        model = Path(model)
        if not model.is_file():
            from eeki_label.errors import ModelFileError

            raise ModelFileError(f"{model}: not a file")
        file_sha = sha256_file(model)
        if file_sha != named_sha:
            raise ModelMismatchError(
                f"{model.name} has sha256 {file_sha[:16]}…, the label is for {named_sha[:16]}…: not the labelled model")
        model_checked = f"file {model.name}" + (f" and {model_checked}" if model_checked else "")
    if model_sha is not None and model_sha != named_sha:
        raise ModelMismatchError(
            f"{source.name} without its label has sha256 {model_sha[:16]}…, the embedded label is for "
            f"{named_sha[:16]}…: the model was changed after labelling")
    return VerifyReport(source=source.name, label_id=check.label_id, key_fingerprint=check.key_fingerprint,
                        key_pinned=pinned, model_sha256=named_sha, model_checked=model_checked, data=data,
                        device_classes=tuple(lab.device_class.id for lab in labels))


def check_data(labels) -> tuple[str, ...]:
    """The rule sets, catalogues and device data the labels name are installed, byte for byte."""
    from eeki_label.catalogue import load_catalogue
    from eeki_label.rules import load_rules

    seen: dict[str, str] = {}
    for lab in labels:
        r, c, d = lab.rules, lab.catalogue, lab.device_data
        try:
            rules = load_rules(r.version)
        except CatalogueError as e:
            raise DataMismatchError(f"the label names rule set {r.id} {r.version}, which this tool does not know") from e
        if (rules.id, rules.sha256) != (r.id, r.sha256):
            raise DataMismatchError(f"rule set {r.id} {r.version}: the installed file differs from the one that graded "
                                    f"the label (sha256 {rules.sha256[:16]}… here, {r.sha256[:16]}… in the label)")
        try:
            cat = load_catalogue(c.version)
        except CatalogueError as e:
            raise DataMismatchError(f"the label names catalogue {c.id} {c.version}, which this tool does not know") from e
        if (cat.id, cat.sha256) != (c.id, c.sha256):
            raise DataMismatchError(f"catalogue {c.id} {c.version}: the installed file differs from the label's "
                                    f"(sha256 {cat.sha256[:16]}… here, {c.sha256[:16]}… in the label)")
        seen[f"rules {r.id} {r.version}"] = ""
        seen[f"catalogue {c.id} {c.version}"] = ""
        seen[_check_device_data(d)] = ""
    return tuple(seen)



def _check_device_data(d) -> str:
    """A shipped device-data version must be installed byte for byte; an own file (``--device-data FILE``,
    e.g. from ``eeki-label calibrate``) is not installed, so the label's file name and sha256 are reported
    for the auditor to compare with the file they were given."""
    from eeki_label.energy.devices import DEVICE_FILE, DEVICE_PREFIX, load_device_document

    shipped_name = f"{DEVICE_PREFIX}{d.version}.json"
    shipped_like = d.file is not None and (d.file.startswith(DEVICE_PREFIX) or d.file in (DEVICE_FILE, "device_classes.json"))
    if d.file is not None and not shipped_like:
        return f"device data {d.file} (own file, sha256 {d.sha256[:16]}…: not installed here, compare it by hand)"
    if d.file is not None and d.file.startswith(DEVICE_PREFIX) and d.file != shipped_name:
        raise DataMismatchError(f"device data {d.version} named by the label with the file {d.file}: not the installed "
                                f"one ({shipped_name} would be)")
    try:
        dev, _ = load_device_document(d.version)
    except CatalogueError as e:
        raise DataMismatchError(f"device data {d.version}: {e}") from e
    if (str(dev.content.get("version")), dev.sha256) != (d.version, d.sha256):
        raise DataMismatchError(f"device data {d.version} (sha256 {d.sha256[:16]}…) named by the label is not the "
                                f"installed one ({dev.content.get('version')}, sha256 {dev.sha256[:16]}…)")
    return f"device data {d.version}"
