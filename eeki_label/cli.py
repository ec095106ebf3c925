"""Typer adapter: options -> pipeline -> renderers -> files; errors -> exit codes.

Kept thin and light: heavy modules (onnx, onnxruntime, numpy, pydantic) are imported inside the
commands so that ``eeki-label --help`` answers at once.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from eeki_label import __version__
from eeki_label.errors import EekiError, GateFailed, InternalError, UsageError

app = typer.Typer(
    name="eeki-label",
    help="A-G energy-efficiency labels for ONNX models, per device class, against a versioned reference catalogue.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"eeki-label {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """A-G energy-efficiency labels for ONNX models."""


def _guarded(command):
    """Map errors to one line on stderr and their documented exit code (README, "Exit codes")."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except EekiError as e:
            sys.stderr.write(e.diagnostics() + "\n")
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            raise typer.Exit(130) from None
        except Exception as e:  # a bug, not bad input: one line, the traceback only on request
            if os.environ.get("EEKI_DEBUG"):
                raise
            err = InternalError(f"{type(e).__name__}: {e} (set EEKI_DEBUG=1 for the traceback; please report it)")
            sys.stderr.write(err.diagnostics() + "\n")
            raise typer.Exit(err.exit_code) from None

    return wrapper


class _Progress:
    """One status line on stderr while a step takes seconds; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.last = ""

    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        text = f"{name} {done}/{total}" if total > 1 else f"{name}..."
        sys.stderr.write("\r" + text.ljust(max(len(self.last), len(text))))
        sys.stderr.flush()
        self.last = text

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\r" + " " * len(self.last) + "\r")
            sys.stderr.flush()


@app.command()
@_guarded
def assess(
    model: Path = typer.Argument(..., help="The ONNX model file.", show_default=False),
    device_class: List[str] = typer.Option(
        [], "--device-class", "-d", help="Device class id (repeatable), or 'all' (default: the rule set's default)."),
    task: Optional[str] = typer.Option(None, help="Task id from the catalogue (default: the rule set's default)."),
    accuracy: Optional[float] = typer.Option(None, help="Declared quality in the task's metric (e.g. top-1 %)."),
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224 for inputs with unknown dims (repeatable)."),
    out: Optional[Path] = typer.Option(None, help="Folder to write label.json into."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the label JSON to PATH, or '-' for stdout."),
    fail_below: Optional[str] = typer.Option(None, help="Exit with code 3 if a label is worse than this class (A..G)."),
    runs: int = typer.Option(30, min=0, help="Timed onnxruntime runs (0 skips the runtime profile)."),
    threads: Optional[int] = typer.Option(None, min=1, help="onnxruntime intra-op threads (default: onnxruntime's)."),
    seed: int = typer.Option(0, help="Seed of the generated inputs."),
    rules: Optional[str] = typer.Option(None, help="Rule set version (default: newest installed)."),
    catalogue: Optional[str] = typer.Option(None, help="Reference catalogue version (default: newest installed)."),
    max_file_bytes: int = typer.Option(2 * 1024**3, min=1, help="Largest model file accepted, bytes."),
    max_tensor_bytes: int = typer.Option(8 * 1024**3, min=1, help="Largest total declared tensor size accepted, bytes."),
    time_limit: float = typer.Option(600.0, min=0.001, help="Wall-clock limit of the runtime profile, seconds."),
    issued_at: Optional[str] = typer.Option(None, help="Fix the issue time (ISO 8601) for reproducible documents."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary, no progress."),
) -> None:
    """Profile MODEL, estimate its energy per inference per device class, and grade it A..G."""
    from eeki_label.model_io import LoadLimits
    from eeki_label.models import dump_json
    from eeki_label.pipeline import AssessOptions
    from eeki_label.pipeline import assess as run_assess
    from eeki_label.profile.shapes import parse_shape_options
    from eeki_label.render.text import summary
    from eeki_label.rules import class_rank, worse_than

    if fail_below is not None:
        class_rank(fail_below)
    if issued_at is not None:
        _check_iso(issued_at)
    options = AssessOptions(
        device_classes=tuple(device_class), task=task, accuracy=accuracy,
        input_shapes=parse_shape_options(input_shape), runs=runs, threads=threads, seed=seed,
        rules_version=rules, catalogue_version=catalogue,
        limits=LoadLimits(max_file_bytes=max_file_bytes, max_tensor_bytes=max_tensor_bytes),
        runtime_time_limit_s=time_limit, issued_at=issued_at,
    )
    progress = _Progress(not quiet)
    try:
        labels = run_assess(model, options, progress)
    finally:
        progress.close()
    doc = labels.labels[0] if len(labels.labels) == 1 else labels
    text = dump_json(doc)

    from eeki_label.fileio import write_atomic

    if out is not None:
        write_atomic(out / "label.json", text)
    if json_out == "-":
        sys.stdout.write(text)
    elif json_out:
        write_atomic(json_out, text)
    if not quiet and json_out != "-":
        typer.echo(summary(labels))

    if fail_below is not None:
        gradable = [lab for lab in labels.labels if lab.label.gradable]
        failing = [lab for lab in gradable if worse_than(lab.label.class_, fail_below)]
        if not gradable:
            raise GateFailed(f"no assessed device class could be graded; required at least class {fail_below.upper()}")
        if failing:
            worst = ", ".join(f"{lab.device_class.id}={lab.label.class_}" for lab in failing)
            raise GateFailed(f"class worse than {fail_below.upper()}: {worst}")


def _check_iso(text: str) -> None:
    import datetime as dt

    try:
        dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise UsageError(f"--issued-at {text!r} is not an ISO 8601 date-time") from e


@app.command()
@_guarded
def devices(
    calibration: bool = typer.Option(False, "--calibration", help="Print the calibration table (Markdown)."),
) -> None:
    """List the device classes and their calibration."""
    from eeki_label.pipeline import load_context
    from eeki_label.render.text import calibration_table, devices_table

    ctx = load_context()
    typer.echo(calibration_table(ctx) if calibration else devices_table(ctx))


@app.command("catalogue")
@_guarded
def catalogue_cmd(
    version: Optional[str] = typer.Option(None, help="Catalogue version (default: newest installed)."),
) -> None:
    """List the reference catalogue: tasks and reference models."""
    from eeki_label.catalogue import load_catalogue
    from eeki_label.render.text import catalogue_table

    typer.echo(catalogue_table(load_catalogue(version)))


@app.command("rules")
@_guarded
def rules_cmd() -> None:
    """List the installed rule sets and the newest one's class thresholds."""
    from eeki_label.render.text import rules_table
    from eeki_label.rules import available_versions, load_rules

    typer.echo(rules_table([load_rules(v) for v in available_versions()]))


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 usage, others: README "Exit codes")."""
    try:
        app(args=argv, prog_name="eeki-label")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
