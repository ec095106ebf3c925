"""Labels embedded in the model file: an ONNX ``metadata_props`` entry ``eeki_label``.

**How it is embedded.** A protobuf message may be followed by more fields of the same message; a
parser merges them, and a repeated field (``ModelProto.metadata_props``, field 14) is appended to.
``assess --embed OUT`` therefore writes the original model file *byte for byte* and appends one
field: ``metadata_props`` = {key ``"eeki_label"``, value = the signed label JSON}. Every ONNX reader
sees the original model with one more metadata entry.

**Which sha256 is checked.** That of the embedded file with this trailing record removed, which is
exactly the original file, so it equals the label's ``model.sha256``. The record must be the
file's last top-level field and encoded canonically (tag 0x72, length, key field, value field; what
protobuf itself writes); a file re-saved after embedding (fields reordered or re-encoded) has lost
its original bytes and is refused rather than guessed at.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from eeki_label.errors import LabelFileError, ModelFileError, ModelMismatchError, UsageError

METADATA_KEY = "eeki_label"
_METADATA_FIELD = 14  # ModelProto.metadata_props
_CHUNK = 1 << 20


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _length_delimited(key: int, payload: bytes) -> bytes:
    return _varint(key) + _varint(len(payload)) + payload


def record(label_json: str) -> bytes:
    """The bytes appended to the model: ``ModelProto{metadata_props: [{key, value}]}`` serialised."""
    entry = _length_delimited(0x0A, METADATA_KEY.encode()) + _length_delimited(0x12, label_json.encode("utf-8"))
    return _length_delimited((_METADATA_FIELD << 3) | 2, entry)


@dataclass(frozen=True)
class _Field:
    number: int
    start: int
    end: int
    payload: "tuple[int, int] | None"  # (start, end) of a length-delimited payload


def _top_level_fields(buf, size: int) -> list[_Field]:
    """Walk the top-level fields of a protobuf message without parsing nested ones (the graph,
    which holds the weights, is skipped by its length)."""
    fields, pos = [], 0
    while pos < size:
        start = pos
        key, pos = _read_varint(buf, pos, size)
        number, wire = key >> 3, key & 7
        payload = None
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _, pos = _read_varint(buf, pos, size)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _read_varint(buf, pos, size)
            payload = (pos, pos + length)
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > size:
            raise ValueError("truncated field")
        fields.append(_Field(number, start, pos, payload))
    return fields


def _entry(buf, start: int, end: int) -> tuple[bytes | None, bytes | None]:
    data = bytes(buf[start:end])
    key = value = None
    for f in _top_level_fields(data, len(data)):
        if f.payload is None:
            continue
        if f.number == 1:
            key = data[f.payload[0]:f.payload[1]]
        elif f.number == 2:
            value = data[f.payload[0]:f.payload[1]]
    return key, value


def _label_records(buf, size: int, source: str, error=ModelFileError) -> list[tuple[_Field, bytes, bool]]:
    """(field, value, is_last) of every ``eeki_label`` metadata entry."""
    try:
        fields = _top_level_fields(buf, size)
        found = []
        for i, f in enumerate(fields):
            if f.number == _METADATA_FIELD and f.payload is not None:
                key, value = _entry(buf, *f.payload)
                if key == METADATA_KEY.encode():
                    found.append((f, value or b"", i == len(fields) - 1))
        return found
    except ValueError as e:
        raise error(f"{source}: neither a label JSON file nor a readable ONNX model ({e})") from e


@dataclass(frozen=True)
class Embedded:
    label_text: str
    """The embedded label JSON."""
    original_sha256: str
    """sha256 of the file without the trailing label record: the original model file."""
    original_bytes: int


class _FileBytes:
    """Indexing and slicing (``buf[i]``, ``buf[a:b]`` within the file) through reads, not ``mmap``:
    a file cut short while mapped kills the process with SIGBUS; here it is a one-line error."""

    def __init__(self, f, size: int, name: str) -> None:
        from eeki_label.model_io import WindowReader

        self._reader = WindowReader(f, size, name)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._reader.read(key.start, key.stop)
        return self._reader.read(key, key + 1)[0]


def _open_file(path: Path, source: str, error=ModelFileError):
    """(file, its bytes as ``_FileBytes``, size) of a regular, non-empty file."""
    from eeki_label.fileio import open_regular

    f = open_regular(path, error, "model")
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        f.close()
        raise error(f"{source}: empty file")
    return f, _FileBytes(f, size, source), size


def _sha256(buf, end: int) -> str:
    h = hashlib.sha256()
    for pos in range(0, end, _CHUNK):
        h.update(buf[pos:min(end, pos + _CHUNK)])
    return h.hexdigest()


def extract(path: "str | os.PathLike[str]") -> Embedded:
    """The label embedded in a model file and the sha256 of the model without it."""
    path = Path(path)
    f, buf, size = _open_file(path, path.name, LabelFileError)
    try:
        found = _label_records(buf, size, path.name, LabelFileError)
        if not found:
            raise LabelFileError(f"{path.name}: no embedded eeki-label label (metadata_props key {METADATA_KEY!r})")
        if len(found) > 1:
            raise LabelFileError(f"{path.name}: {len(found)} embedded eeki-label labels; expected one")
        field, value, is_last = found[0]
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise LabelFileError(f"{path.name}: the embedded label is not UTF-8") from e
        if not is_last or bytes(buf[field.start:field.end]) != record(text):
            raise ModelMismatchError(
                f"{path.name}: the embedded label is not the file's trailing record: the file was re-saved or "
                "changed after embedding, so its original bytes (and sha256) cannot be recovered")
        return Embedded(label_text=text, original_sha256=_sha256(buf, field.start), original_bytes=field.start)
    finally:
        f.close()


def write_embedded(model_path: "str | os.PathLike[str]", label_json: str, expected_sha256: str, out) -> None:
    """Write the model file followed by the label record to the binary stream ``out``.

    Refuses a model that already carries an embedded label (embed into the original instead), and
    a model whose bytes are no longer those that were assessed."""
    model_path = Path(model_path)
    f, buf, size = _open_file(model_path, model_path.name)
    try:
        if _label_records(buf, size, model_path.name):
            raise UsageError(f"{model_path.name} already carries an embedded label; embed into the original model")
        h = hashlib.sha256()
        for pos in range(0, size, _CHUNK):
            chunk = buf[pos:min(size, pos + _CHUNK)]
            h.update(chunk)
            out.write(chunk)
        if h.hexdigest() != expected_sha256:
            raise ModelMismatchError(f"{model_path.name} changed after it was assessed; not embedding")
        out.write(record(label_json))
    finally:
        f.close()
