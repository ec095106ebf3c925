"""Content cache of the transfer stage: re-assessing an unchanged model does not code it again.

An entry holds what the NNC coding of one model produced: the label's transfer section (priced
again on a hit with the current scenario options, :func:`eeki_label.transfer.stage.reprice`, so
other links, grids or scenario counts still hit) and the NNC container(s). It is keyed
(:func:`entry_key`) by everything that changes the coding:

* the model (file sha256 and the sha256 of every external data file it reads), the previous/base
  model the delta is made against (same) and how the stage names it;
* the resolved input shapes, the fidelity bound, the calibration arrays (their content: names,
  dtypes, shapes and bytes; None for the synthetic ones) and the stored tensor bytes;
* the code and libraries that do the coding: eeki-label's version and a digest of the transfer
  package's sources and the loader, nncodec's, onnxruntime's and numpy's versions, and this
  module's :data:`FORMAT`.

Location: ``$EEKI_LABEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/eeki-label``, else
``~/.cache/eeki-label`` (entries under ``transfer/``); ``EEKI_LABEL_CACHE_DIR=off`` (or
``assess --no-cache``, :attr:`TransferOptions.cache`) turns it off.

An entry is one file, written to a temporary name and renamed into place (atomic: a reader sees
the whole entry or none). It is never trusted blindly: on a hit its header must name the same key,
every blob must have the sha256 the header states, the transfer section must parse and name the
full bitstream's sha256, each container must belong to this model (and the delta to the previous
one), and the decoded reconstruction is checked against the fidelity bound on the calibration
inputs again (:func:`eeki_label.transfer.nnc.verify_bitstream`; a decode and two inference passes,
a fraction of the coding). Anything that fails makes the entry a miss: the model is coded again
and the entry replaced. Failed codings are not stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Entry format (part of the key: a new format never reads an old entry).
FORMAT = 1
MAGIC = b"EEKI-TC1"
OFF = "off"
#: The sources whose code decides the coding (their digest is part of the key).
_SOURCES = ("transfer", "model_io.py", "models.py")


def cache_dir() -> Path | None:
    """The cache folder, or None when the cache is off (``EEKI_LABEL_CACHE_DIR=off``)."""
    env = os.environ.get("EEKI_LABEL_CACHE_DIR")
    if env is not None and env.strip():
        if env.strip().lower() == OFF:
            return None
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "eeki-label"


_CODE_DIGEST: str | None = None


def code_digest() -> str:
    """sha256 over the transfer package's sources, the loader and the label models (path + bytes)."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        files: list[Path] = []
        for name in _SOURCES:
            p = root / name
            files += sorted(p.glob("*.py")) if p.is_dir() else [p]
        for p in files:
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(p.read_bytes() if p.is_file() else b"")
            h.update(b"\0")
        _CODE_DIGEST = h.hexdigest()
    return _CODE_DIGEST


def _versions() -> dict:
    from importlib import metadata

    import numpy

    from eeki_label import __version__

    out = {"eeki_label": __version__, "numpy": numpy.__version__, "code": code_digest(), "format": FORMAT}
    for dist in ("nncodec", "onnxruntime", "onnx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def model_identity(loaded) -> dict:
    """The model file's sha256 and the sha256 of each external data file other than itself."""
    from eeki_label.model_io import iter_all_tensors, sha256_file

    files = {}
    for t in iter_all_tensors(loaded.proto):
        for e in t.external_data:
            if e.key == "location" and e.value not in files:
                files[e.value] = None
    ext = {}
    own = os.path.realpath(loaded.path)
    for loc in sorted(files):
        p = os.path.realpath(os.path.join(loaded.folder, loc))
        if p == own:
            continue
        try:
            ext[loc] = sha256_file(Path(p))
        except OSError:
            ext[loc] = None
    return {"sha256": loaded.sha256, "external": ext}


def arrays_digest(arrays) -> str | None:
    """sha256 over named arrays (names, dtypes, shapes, bytes); None for None."""
    if arrays is None:
        return None
    import numpy as np

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode() + b"\0")
        h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


def entry_key(loaded, shapes, stored_bytes: int, bound, calibration, previous, reference: str) -> str:
    """The entry's key: sha256 of the canonical JSON of everything that changes the coding."""
    doc = {
        "model": model_identity(loaded),
        "previous": model_identity(previous) if previous is not None else None,
        "reference": reference if previous is not None else None,
        "shapes": {k: [int(d) for d in v] for k, v in sorted(shapes.items())},
        "stored_bytes": int(stored_bytes),
        "bound": [repr(float(bound.max_rel_error)), repr(float(bound.min_top1_agreement)),
                  bool(bound.rel_error_on_classifiers)],
        "calibration": arrays_digest(calibration),
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    info_json: str
    """The transfer section as stored (JSON of :class:`eeki_label.models.TransferInfo`)."""
    bitstream: bytes
    delta_bitstream: bytes | None


def _path(folder: Path, key: str) -> Path:
    return folder / "transfer" / f"{key}.entry"


def store(folder: Path, key: str, entry: Entry) -> Path | None:
    """Write ``entry`` atomically (temporary file + rename); None when the folder is not writable
    (the cache is a convenience: a failure to store never fails the stage)."""
    blobs = [entry.info_json.encode("utf-8"), entry.bitstream,
             entry.delta_bitstream if entry.delta_bitstream is not None else b""]
    header = json.dumps({"format": FORMAT, "key": key, "has_delta": entry.delta_bitstream is not None,
                         "blobs": [[len(b), hashlib.sha256(b).hexdigest()] for b in blobs]}).encode()
    path = _path(folder, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + struct.pack(">I", len(header)) + header)
                for b in blobs:
                    f.write(b)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        return None
    return path


#: Largest entry read back (a larger file is not ours).
MAX_ENTRY_BYTES = 8 * 1024**3


def load(folder: Path, key: str) -> Entry | None:
    """The entry stored under ``key`` when it is intact (magic, header, key and every blob's sha256),
    else None."""
    path = _path(folder, key)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_ENTRY_BYTES or f.read(len(MAGIC)) != MAGIC:
                return None
            (n,) = struct.unpack(">I", f.read(4))
            if n > 1 << 20:
                return None
            header = json.loads(f.read(n).decode("utf-8"))
            if header.get("format") != FORMAT or header.get("key") != key:
                return None
            blobs = []
            for length, digest in header["blobs"]:
                b = f.read(int(length))
                if len(b) != int(length) or hashlib.sha256(b).hexdigest() != digest:
                    return None
                blobs.append(b)
            if f.read(1) or len(blobs) != 3:
                return None
    except (OSError, ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
        return None
    info, full, delta = blobs
    return Entry(info.decode("utf-8"), full, delta if header.get("has_delta") else None)


def discard(folder: Path, key: str) -> None:
    """Remove an entry that failed its checks (it is coded again and replaced)."""
    try:
        os.unlink(_path(folder, key))
    except OSError:
        pass
