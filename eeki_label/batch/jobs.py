"""What a batch assesses: the models of a folder or a manifest, each with its ``assess`` arguments.

INPUT is

* a folder: every ``*.onnx`` below it (recursively, in sorted order; folders that are symbolic
  links are not entered), all with the batch's common ``assess`` options;
* a manifest, ``.csv`` (header row) or ``.jsonl`` (one object per line), one model per row with the
  columns ``path`` (required), ``task``, ``accuracy``, ``input_shape`` (``NAME=1x3x224x224``; several
  separated by ``;`` in the CSV, a list or a ``{name: [dims]}`` object in JSONL), ``base`` and
  ``options`` (more ``assess`` options: a shell-quoted string, or a list of strings in JSONL).
  Relative paths (``path``, ``base``, file-valued ``options``) are relative to the manifest's folder.

A model path (or ``base``) that leaves INPUT's folder (``..``, an absolute path elsewhere, a symbolic
link pointing out) is not read: the model is recorded as failed (exit code 10). A malformed manifest
(unknown column, a row without ``path``, an option ``assess`` rejects) stops the batch before anything
runs (exit code 2), naming the row.

Every job carries its full ``assess`` argument list (file-valued options made absolute, so that a Ray
worker in another directory reads the same files) and an **options hash**: the sha256 of the parsed
options with file-valued options replaced by their file name and content sha256, the tool version
and the resolved data versions (``--threads`` excepted: resuming with other ``--workers`` reuses the
labels). A job is skipped on resume when a label for the same model sha256 and
options hash exists.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from eeki_label.errors import UsageError
from eeki_label.model_io import sha256_file

#: ``assess`` options that write outputs or change what is printed: the batch owns those.
OWNED_OPTIONS = ("out", "json_out", "pdf", "html", "embed", "quiet", "export", "mlflow", "bitstream",
                 "delta_bitstream")
#: ``assess`` options whose value is a file: made absolute for the child, hashed by content.
FILE_OPTIONS = ("accuracy_evidence", "inputs", "sign_key", "base", "measurements", "trace", "reference_record",
                "previous", "calibration_data", "device_data")
#: Options left out of the options hash, as they do not change the label: how many CPU threads run
#: the model is an execution resource (the batch sets it from --workers; the label records it), and
#: the NNC content cache gives the same label as a fresh coding.
NOT_HASHED = ("threads", "no_cache")
#: Manifest columns.
COLUMNS = ("path", "task", "accuracy", "input_shape", "base", "options")
#: Largest manifest accepted (bytes): a manifest is a list of paths, not data.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Job:
    """One model of the batch."""

    rel: str
    """The model's path as shown in results: relative to INPUT's folder, ``/``-separated."""
    path: Path | None
    """The model file (absolute), or None when it is refused before running (``error``)."""
    args: tuple[str, ...] = ()
    """``assess`` arguments after the model (everything but the outputs the batch owns)."""
    options_hash: str = ""
    error: "tuple[int, str] | None" = None
    """(exit code, one-line reason) of a model refused before running."""
    measures: bool = False
    """True when the run measures this host (``-d host``): such runs never overlap on one node."""
    gpus: float = 0.0
    """GPUs the run needs (measured with NVML)."""
    sha256: str = ""
    key: str = ""
    """File-name stem of the model's label and record in the output folder."""


# -- the assess command's own parser validates every argument -------------------------------------

def _assess_command():
    import typer

    from eeki_label.cli import app

    return typer.main.get_command(app).commands["assess"]


def parse_assess_args(args: list[str], where: str) -> dict:
    """Parse ``assess`` options with the command's own parser; a bad or batch-owned option is a UsageError."""
    import typer

    click_exception = typer.BadParameter.__mro__[2]  # click's, whether typer uses click or its own copy
    if "--help" in args or "--version" in args:
        raise UsageError(f"{where}: --help and --version are not assess options of a batch "
                         "(eeki-label assess --help lists them)")
    cmd = _assess_command()
    try:
        ctx = cmd.make_context("assess", ["MODEL.onnx", *args], resilient_parsing=False)
    except (typer.Exit, SystemExit):
        raise UsageError(f"{where}: --help and --version are not assess options of a batch") from None
    except click_exception as e:
        raise UsageError(f"{where}: {e.format_message()}") from None
    params = dict(ctx.params)
    params.pop("model", None)
    owned = [n for n in OWNED_OPTIONS if params.get(n) not in (None, False, (), [])]
    if owned:
        names = ", ".join(_option_name(cmd, n) for n in owned)
        raise UsageError(f"{where}: {names}: the batch writes the outputs itself (labels/, results.*, leaderboard.html)")
    return params


def _option_name(cmd, name: str) -> str:
    for p in cmd.params:
        if p.name == name:
            return p.opts[0]
    return name


def _file_option_flags() -> dict[str, str]:
    """Every spelling of a file-valued option -> its parameter name."""
    flags = {}
    for p in _assess_command().params:
        if p.name in FILE_OPTIONS:
            for o in p.opts:
                flags[o] = p.name
    return flags


def absolutise(args: list[str], folder: Path) -> list[str]:
    """``args`` with the values of file-valued options resolved against ``folder`` (shipped device-data
    versions such as ``2.0.0`` stay as they are)."""
    flags = _file_option_flags()
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        name, eq, value = tok.partition("=")
        if tok.startswith("--") and eq and name in flags:
            out.append(f"{name}={_abs(value, folder, flags[name])}")
        elif tok in flags and i + 1 < len(args):
            out += [tok, _abs(args[i + 1], folder, flags[tok])]
            i += 1
        else:
            out.append(tok)
        i += 1
    return out


def _abs(value: str, folder: Path, name: str) -> str:
    if name == "device_data" and not value.lower().endswith(".json"):
        return value  # a shipped version
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (folder / p).resolve())


# -- hashing ----------------------------------------------------------------------------------------

def options_hash(params: dict, pinned: dict) -> str:
    """sha256 of the parsed options (file options by name and content), tool version and data versions."""
    from eeki_label import __version__

    canon = {}
    for k, v in sorted(params.items()):
        if k in NOT_HASHED:
            continue
        if k in FILE_OPTIONS and v not in (None, (), []) and not (k == "device_data" and not str(v).lower().endswith(".json")):
            v = [_file_id(Path(x)) for x in v] if isinstance(v, (list, tuple)) else _file_id(Path(v))
        elif isinstance(v, (list, tuple)):
            v = [str(x) for x in v]
        elif isinstance(v, Path):
            v = str(v)
        canon[k] = v
    doc = {"tool": __version__, "pinned": pinned, "options": canon}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _file_id(p: Path) -> dict:
    try:
        return {"name": p.name, "sha256": sha256_file(p)}
    except OSError:
        return {"name": p.name, "sha256": None}


def key_for(rel: str) -> str:
    """A file-name stem unique to ``rel``: readable part plus 8 hex digits of its sha256."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "__"))
    if stem.lower().endswith(".onnx"):
        stem = stem[:-5]
    stem = stem.strip("._")[:80] or "model"
    return f"{stem}-{hashlib.sha256(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


# -- discovery --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """A manifest row (or a file found in a folder) before validation."""

    rel: str
    where: str
    args: tuple[str, ...] = ()
    base: str | None = None


def _inside(root: Path, candidate: Path) -> "Path | None":
    """The resolved path if ``candidate`` (relative to ``root``) stays inside ``root``, else None."""
    if candidate.is_absolute() or ".." in candidate.parts:
        p = candidate
    else:
        p = root / candidate
    try:
        real = p.resolve()
    except (OSError, RuntimeError):
        return None
    try:
        real.relative_to(root)
    except ValueError:
        return None
    return real


def scan_folder(root: Path) -> list[Entry]:
    """Every ``*.onnx`` below ``root`` (case-insensitive suffix), sorted; symlinked folders are not entered."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in files:
            if name.lower().endswith(".onnx"):
                found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return [Entry(rel, where=rel) for rel in sorted(found)]


def read_manifest(path: Path) -> list[Entry]:
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise UsageError(f"manifest {path.name} is {size} bytes; at most {MAX_MANIFEST_BYTES} are read")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"manifest {path.name} is not UTF-8 text") from None
    except OSError as e:
        raise UsageError(f"cannot read manifest {path.name}: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(text, path.name)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(text, path.name)
    else:
        raise UsageError(f"{path.name}: INPUT must be a folder, a .csv or a .jsonl manifest")
    if not rows:
        raise UsageError(f"manifest {path.name} lists no models")
    return [_entry(row, where) for where, row in rows]


def _csv_rows(text: str, name: str) -> list[tuple[str, dict]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    unknown = [h for h in header if h not in COLUMNS]
    if "path" not in header or unknown:
        what = f"unknown column(s) {', '.join(map(repr, unknown))}" if unknown else "no 'path' column"
        raise UsageError(f"manifest {name}: {what}; columns: {', '.join(COLUMNS)}")
    rows = []
    for n, raw in enumerate(reader, start=2):
        if None in raw:
            raise UsageError(f"manifest {name} line {n}: more fields than columns")
        row = {k.strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        if row.get("input_shape"):
            row["input_shape"] = [s.strip() for s in row["input_shape"].split(";") if s.strip()]
        rows.append((f"manifest {name} line {n}", {k: v for k, v in row.items() if v not in ("", [])}))
    return rows


def _jsonl_rows(text: str, name: str) -> list[tuple[str, dict]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"manifest {name} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{where}: not a JSON object")
        unknown = [k for k in row if k not in COLUMNS]
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; keys: {', '.join(COLUMNS)}")
        shapes = row.get("input_shape")
        if isinstance(shapes, dict):
            row["input_shape"] = [f"{k}={'x'.join(str(d) for d in v)}" if isinstance(v, list) else f"{k}={v}"
                                  for k, v in shapes.items()]
        elif isinstance(shapes, str):
            row["input_shape"] = [shapes]
        rows.append((where, {k: v for k, v in row.items() if v is not None}))
    return rows


def _entry(row: dict, where: str) -> Entry:
    path = row.get("path")
    if not isinstance(path, str) or not path:
        raise UsageError(f"{where}: 'path' is missing or not a string")
    args: list[str] = []
    if "task" in row:
        args += ["--task", str(row["task"])]
    if "accuracy" in row:
        args += ["--accuracy", str(row["accuracy"])]
    shapes = row.get("input_shape", [])
    if not isinstance(shapes, list) or not all(isinstance(s, str) for s in shapes):
        raise UsageError(f"{where}: 'input_shape' must be NAME=1x3x224x224 strings")
    for s in shapes:
        args += ["--input-shape", s]
    opts = row.get("options", [])
    if isinstance(opts, str):
        try:
            opts = shlex.split(opts)
        except ValueError as e:
            raise UsageError(f"{where}: 'options': {e}") from None
    if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
        raise UsageError(f"{where}: 'options' must be a string or a list of strings")
    base = row.get("base")
    if base is not None and not isinstance(base, str):
        raise UsageError(f"{where}: 'base' must be a path")
    return Entry(path.replace(os.sep, "/"), where, tuple(args + opts), base)


def build_jobs(entries: list[Entry], root: Path, common: list[str], pinned: dict, threads: "int | None") -> list[Job]:
    """Validate every entry's arguments and resolve its paths; refused paths become failed jobs."""
    jobs: list[Job] = []
    seen: set[str] = set()
    for e in entries:
        args = list(common) + list(e.args)
        if threads is not None and not any(a == "--threads" or a.startswith("--threads=") for a in args):
            args += ["--threads", str(threads)]
        for flag, value in (("--rules", pinned["rules"]), ("--catalogue", pinned["catalogue"]),
                            ("--device-data", pinned["device_data"])):
            if not any(a == flag or a.startswith(flag + "=") for a in args):
                args += [flag, value]
        rel = e.rel
        if rel in seen:
            raise UsageError(f"{e.where}: {rel} is listed twice")
        seen.add(rel)
        key = key_for(rel)
        model = _inside(root, Path(rel))
        if e.base is not None:
            base = _inside(root, Path(e.base))
            if base is None:
                jobs.append(Job(rel, None, key=key, error=(10, f"base {e.base}: outside the input folder, not read")))
                continue
            args += ["--base", str(base)]
        args = absolutise(args, root)
        params = parse_assess_args(args, e.where)
        if model is None:
            jobs.append(Job(rel, None, key=key, error=(10, "the path leaves the input folder (.., absolute, or a "
                                                           "symbolic link out of it); not read")))
            continue
        try:
            st = model.stat()
        except OSError as err:
            jobs.append(Job(rel, None, key=key, error=(10, f"cannot read the model: {err.strerror or err}")))
            continue
        if not stat.S_ISREG(st.st_mode):
            jobs.append(Job(rel, None, key=key, error=(10, "not a regular file")))
            continue
        devices = [str(d) for d in params.get("device_class") or ()]
        measures = "host" in devices and params.get("measurements") is None
        gpus = 1.0 if measures and params.get("meter") == "nvml" else 0.0
        jobs.append(Job(rel, model, tuple(args), options_hash(params, pinned), measures=measures, gpus=gpus, key=key))
    return jobs


def discover(input_path: Path) -> tuple[Path, list[Entry]]:
    """(root folder, entries) of a folder or a manifest."""
    try:
        st = input_path.stat()
    except OSError as e:
        raise UsageError(f"INPUT {input_path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        root = input_path.resolve()
        entries = scan_folder(root)
        if not entries:
            raise UsageError(f"INPUT {input_path}: no *.onnx file below it")
        return root, entries
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"INPUT {input_path}: neither a folder nor a manifest file")
    return input_path.resolve().parent, read_manifest(input_path)
