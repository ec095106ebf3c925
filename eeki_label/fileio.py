"""Atomic output: write to a temporary file in the destination folder, rename on success, so a
failure never leaves a partial or stale output file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from eeki_label.errors import OutputError


def write_atomic(path: "str | os.PathLike[str]", data: "bytes | str") -> Path:
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    return path
