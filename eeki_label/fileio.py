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


def _default_mode() -> int:
    """What ``open()`` would give a new file: 0o666 less the umask (mkstemp's files are 0o600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


class AtomicBatch:
    """Several output files, all or none: each is written to a temporary file in its destination
    folder; only when every one is complete are they renamed into place. A failure while writing
    removes the temporary files, so nothing is left behind (renames within a folder do not fail in
    practice once the data is written).

    ``with AtomicBatch() as batch: batch.add(path, data); batch.add_stream(path, writer)``: the
    files appear when the block ends without an exception."""

    def __init__(self) -> None:
        self._staged: list[tuple[str, Path, "int | None"]] = []

    def __enter__(self) -> "AtomicBatch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def add(self, path: "str | os.PathLike[str]", data: "bytes | str", mode: "int | None" = None) -> None:
        payload = data.encode("utf-8") if isinstance(data, str) else data
        self.add_stream(path, lambda f: f.write(payload), mode)

    def add_stream(self, path: "str | os.PathLike[str]", writer, mode: "int | None" = None) -> None:
        """``writer(binary_file)`` writes the content; its EekiError or OSError aborts the batch."""
        path = Path(path)
        folder = path.parent if str(path.parent) else Path(".")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
        self._staged.append((tmp, path, mode))
        try:
            with os.fdopen(fd, "wb") as f:
                writer(f)
            os.chmod(tmp, mode if mode is not None else _default_mode())
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
        except BaseException:
            self.abort()
            raise

    def commit(self) -> list[Path]:
        done = []
        try:
            for tmp, path, _ in self._staged:
                os.replace(tmp, path)
                done.append(path)
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
        self._staged = []
        return done

    def abort(self) -> None:
        for tmp, _, _ in self._staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self._staged = []


def open_regular(path: "str | os.PathLike[str]", error: type, what: str):
    """A binary file object for an input that must be a regular file; raises ``error`` (an EekiError
    class) otherwise. A FIFO, device or directory is refused before it is opened for reading (reading
    a FIFO with no writer would block forever, ``/dev/zero`` never ends); the open is non-blocking, so a
    FIFO swapped in after the check does not block either, and the opened file is checked again."""
    import stat

    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise error(f"cannot read {what} {path}: not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from e
    f = open(fd, "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise error(f"cannot read {what} {path}: not a regular file")
    return f


def read_regular_file(path: "str | os.PathLike[str]", max_bytes: int, error: type, what: str) -> bytes:
    """The bytes of an input file that must be a regular file (see ``open_regular``) of at most
    ``max_bytes``; raises ``error`` (an EekiError class) otherwise."""
    path = Path(path)
    with open_regular(path, error, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise error(f"{what} {path} is {size} bytes, larger than the {max_bytes} bytes accepted")
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise error(f"cannot read {what} {path}: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise error(f"{what} {path} is larger than the {max_bytes} bytes accepted")
    return data
