"""Typer adapter: options -> pipeline -> renderers -> files; errors -> exit codes.

Kept thin and light: heavy modules (onnx, onnxruntime, numpy, pydantic) are imported inside the
commands so that ``eeki-label --help`` answers at once.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from eeki_label import __version__
from eeki_label.errors import EekiError, GateFailed, InternalError, TransferError, UnresolvedMeasurementError, UsageError
from eeki_label.limits import (
    DEFAULT_MAX_ACTIVATION_BYTES, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_NODES, DEFAULT_MAX_TENSOR_BYTES,
)

def _plain_help(params) -> None:
    """Help as the README writes it: a metavar for every value (the option's name, as argparse does,
    unless the option names its own; never ``<list[str]>``), no value type for on/off flags and
    arguments (typer >= 0.20 shows ``<bool>``, ``<path>``)."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.display_type_rich = lambda ctx: None  # instance attribute: this parameter only
        elif param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None
            if param.metavar is None:
                param.metavar = param.name.upper()
        elif param.metavar is None:
            longest = max(param.opts, key=len).lstrip("-")
            param.metavar = longest.upper().replace("-", "_")


class _PlainHelp:
    """Plain metavars in help, the help option's included (a mixin for typer's command and group)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _plain_help(self.params)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            _plain_help([option])
        return option


class _Command(_PlainHelp, typer.core.TyperCommand):
    """A command whose help shows plain metavars and ``MODEL`` (not ``{MODEL}``) in the usage line."""

    def collect_usage_pieces(self, ctx) -> list:
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]


class _Group(_PlainHelp, typer.core.TyperGroup):
    pass


app = typer.Typer(
    name="eeki-label",
    cls=_Group,
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


def _help_ids() -> "tuple[str, str, str]":
    """Device class ids, their default and task ids for the help texts, read from the installed data
    (cheap JSON reads); a damaged data file must not break --help, so it then says so."""
    try:
        from eeki_label.catalogue import load_catalogue
        from eeki_label.energy.devices import load_devices
        from eeki_label.rules import load_rules

        cat = load_catalogue()
        devices = ", ".join(d.id for d in load_devices(cat).classes)
        tasks = ", ".join(cat.tasks)
        default = ", ".join(load_rules().default_device_classes)
        return devices, tasks, "all classes" if default == "all" else default
    except Exception:  # noqa: BLE001 (help must answer; the command itself reports the damage)
        return "see 'eeki-label devices'", "see 'eeki-label catalogue'", "the rule set's"


_DEVICE_IDS, _TASK_IDS, _DEFAULT_CLASSES = _help_ids()
P_WHAT, P_OUT, P_GATE, P_RUN, P_DATA = "What to assess", "Outputs", "Gate", "Runtime profile", "Data versions"
P_LIMITS, P_RECYCLE, P_HOST = "Limits (untrusted models)", "Recycling and training", "Host measurement (-d host)"
P_TRANSFER = "Transfer (NNC)"


@app.command(cls=_Command)
@_guarded
def assess(
    model: Path = typer.Argument(..., metavar="MODEL", help="The ONNX model file.", show_default=False),
    # -- what is assessed
    device_class: List[str] = typer.Option(
        [], "--device-class", "-d", metavar="ID", rich_help_panel=P_WHAT,
        help=f"Device class (repeatable), or 'all'. Default: {_DEFAULT_CLASSES}. Ids: {_DEVICE_IDS}; 'host' = this "
             "machine, measured."),
    task: Optional[str] = typer.Option(
        None, metavar="TASK", rich_help_panel=P_WHAT,
        help=f"Task id from the catalogue: {_TASK_IDS}. Default: detected from the model's signature; when neither "
             "gives a task with references, the label is not graded."),
    accuracy: Optional[float] = typer.Option(
        None, metavar="Q", rich_help_panel=P_WHAT,
        help="Declared quality in the task's metric (e.g. top-1 %), range-checked; a claim by the issuer."),
    accuracy_evidence: Optional[Path] = typer.Option(
        None, "--accuracy-evidence", metavar="FILE", rich_help_panel=P_WHAT,
        help="A file backing --accuracy (any format): its sha256 is recorded in the (signed) label."),
    inputs: Optional[Path] = typer.Option(
        None, "--inputs", metavar="FILE.npz", rich_help_panel=P_WHAT,
        help="Real inputs keyed by input name (no pickles) for the runtime profile, probes and fidelity check; "
             "their shapes are the assessed shapes."),
    input_shape: List[str] = typer.Option([], "--input-shape", metavar="NAME=1x3x224x224", rich_help_panel=P_WHAT,
                                          help="Shape of an input with unknown dims (repeatable)."),
    prompt_tokens: Optional[int] = typer.Option(
        None, "--prompt-tokens", min=1, metavar="N", rich_help_panel=P_WHAT,
        help="Decoders with a KV cache: prompt tokens of one query (default: the rule set's preset)."),
    output_tokens: Optional[int] = typer.Option(
        None, "--output-tokens", min=1, metavar="M", rich_help_panel=P_WHAT,
        help="Decoders with a KV cache: output tokens of one query (default: the rule set's preset)."),
    lengths: Optional[str] = typer.Option(
        None, "--lengths", metavar="PRESET", rich_help_panel=P_WHAT,
        help="Decoders: the rule set's length preset (default, short, long)."),
    # -- outputs
    out: Optional[Path] = typer.Option(
        None, "--out-dir", "--out", metavar="DIR", rich_help_panel=P_OUT,
        help="Folder to write label.json, label.pdf and report.html into ('--out' is the older name)."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="FILE|-", rich_help_panel=P_OUT,
                                           help="Write the label JSON to FILE, or '-' for stdout (nothing else)."),
    json_shape: str = typer.Option(
        "set", "--json-shape", metavar="set|single", rich_help_panel=P_OUT,
        help="'set': always {\"labels\": [...]}; 'single': the one label itself (needs exactly one -d ID). Applies "
             "to --json, --out-dir, --embed and the signature."),
    pdf: Optional[Path] = typer.Option(None, "--pdf", metavar="FILE", rich_help_panel=P_OUT,
                                       help="Write the PDF certificate to FILE."),
    html: Optional[Path] = typer.Option(None, "--html", metavar="FILE", rich_help_panel=P_OUT,
                                        help="Write the interactive HTML report to FILE."),
    sign_key: Optional[Path] = typer.Option(None, "--sign-key", metavar="KEY", rich_help_panel=P_OUT,
                                            help="Sign the label with this Ed25519 private key (eeki-label keygen)."),
    embed: Optional[Path] = typer.Option(
        None, "--embed", metavar="FILE", rich_help_panel=P_OUT,
        help="Write a copy of the model with the label in its metadata_props ('eeki_label') to FILE."),
    issuer: Optional[str] = typer.Option(None, "--issuer", metavar="TEXT", rich_help_panel=P_OUT,
                                         help="Who issues the label (recorded and printed)."),
    issued_at: Optional[str] = typer.Option(None, metavar="ISO8601", rich_help_panel=P_OUT,
                                            help="Fix the issue time for reproducible documents."),
    quiet: bool = typer.Option(False, "--quiet", "-q", rich_help_panel=P_OUT,
                               help="No summary and no progress (errors are still printed)."),
    # -- gate
    fail_below: Optional[str] = typer.Option(
        None, metavar="CLASS", rich_help_panel=P_GATE,
        help="Exit with code 3 if a label is worse than CLASS (A..G, either case), or if a device class could not "
             "be graded (unless --allow-ungraded names it)."),
    allow_ungraded: List[str] = typer.Option(
        [], "--allow-ungraded", metavar="ID", rich_help_panel=P_GATE,
        help="With --fail-below: a device class whose label may be not graded (repeatable)."),
    # -- runtime profile
    runs: int = typer.Option(30, min=0, metavar="N", rich_help_panel=P_RUN,
                             help="Timed onnxruntime runs (0 skips the runtime profile)."),
    threads: Optional[int] = typer.Option(None, min=1, metavar="N", rich_help_panel=P_RUN,
                                          help="onnxruntime intra-op threads (default: onnxruntime's)."),
    seed: int = typer.Option(0, metavar="N", rich_help_panel=P_RUN, help="Seed of the generated inputs."),
    time_limit: float = typer.Option(
        600.0, min=0.001, metavar="SECONDS", rich_help_panel=P_RUN,
        help="Wall-clock limit of the runtime profile (and of a shape probe)."),
    # -- data versions
    rules: Optional[str] = typer.Option(None, metavar="VERSION", rich_help_panel=P_DATA,
                                        help="Rule set version (default: newest installed)."),
    catalogue: Optional[str] = typer.Option(None, metavar="VERSION", rich_help_panel=P_DATA,
                                            help="Reference catalogue version (default: newest installed)."),
    device_data: Optional[str] = typer.Option(
        None, "--device-data", metavar="VERSION|FILE", rich_help_panel=P_DATA,
        help="Device data: a shipped version (e.g. 1.0.0; default: newest) or a JSON file of one's own "
             "(eeki-label calibrate); the label names the file and its sha256."),
    # -- limits
    max_file_bytes: int = typer.Option(DEFAULT_MAX_FILE_BYTES, min=1, metavar="BYTES", rich_help_panel=P_LIMITS,
                                       help="Largest model file accepted."),
    max_tensor_bytes: int = typer.Option(DEFAULT_MAX_TENSOR_BYTES, min=1, metavar="BYTES", rich_help_panel=P_LIMITS,
                                         help="Largest total declared tensor size accepted."),
    max_nodes: int = typer.Option(
        DEFAULT_MAX_NODES, min=1, metavar="N", rich_help_panel=P_LIMITS,
        help="Most nodes accepted once local functions are expanded (subgraphs included)."),
    max_activation_bytes: int = typer.Option(
        DEFAULT_MAX_ACTIVATION_BYTES, min=1, metavar="BYTES", rich_help_panel=P_LIMITS,
        help="Largest activation working set (checked before running) and onnxruntime working memory."),
    # -- recycling
    base: Optional[Path] = typer.Option(
        None, metavar="BASE.onnx", rich_help_panel=P_RECYCLE,
        help="Declared pretrained base model: classify tensors as frozen / fine-tuned / new against it."),
    train_samples: Optional[int] = typer.Option(
        None, min=1, metavar="N", rich_help_panel=P_RECYCLE,
        help="Training samples for the training-energy figures (default: the rule set's)."),
    epochs: Optional[int] = typer.Option(
        None, min=1, metavar="N", rich_help_panel=P_RECYCLE,
        help="Epochs of recycling and transfer learning (default: the rule set's)."),
    scratch_epochs: Optional[int] = typer.Option(
        None, min=1, metavar="N", rich_help_panel=P_RECYCLE,
        help="Epochs of training from scratch (default: the matched catalogue family's, else the rule set's)."),
    training_device_class: Optional[str] = typer.Option(
        None, metavar="ID", rich_help_panel=P_RECYCLE,
        help="Device class of the training-energy figures (default: the rule set's)."),
    features_cached: Optional[bool] = typer.Option(
        None, "--features-cached/--no-features-cached", rich_help_panel=P_RECYCLE,
        help="Frozen features computed once and reused across epochs (default: the rule set's)."),
    update_codec: str = typer.Option(
        "auto", metavar="auto|raw", rich_help_panel=P_RECYCLE,
        help="Size of the update against --base: 'auto' (NNC delta when possible) or 'raw'."),
    # -- host
    meter: str = typer.Option(
        "auto", metavar="auto|rapl|nvml|trace|none", rich_help_panel=P_HOST,
        help="Meter for --device-class host (trace: with --trace)."),
    allow_estimate: bool = typer.Option(
        False, "--allow-estimate", rich_help_panel=P_HOST,
        help="If host cannot be measured, give the estimate on the reference class instead."),
    measurements: Optional[Path] = typer.Option(
        None, metavar="RECORD.json", rich_help_panel=P_HOST,
        help="Build the host label from a record written by 'eeki-label measure' (implies -d host)."),
    trace: Optional[Path] = typer.Option(
        None, metavar="LOG", rich_help_panel=P_HOST,
        help="External power-meter log (CSV or line protocol) for --meter trace or a record taken with it."),
    reference_class: Optional[str] = typer.Option(
        None, metavar="ID", rich_help_panel=P_HOST,
        help="Device class whose estimated reference energy grades host (default: single-board-cpu; GPU runs: "
             "datacenter-gpu-batch1)."),
    trace_offset_s: Optional[float] = typer.Option(
        None, metavar="SECONDS", rich_help_panel=P_HOST,
        help="Clock offset of the meter's logger: logger clock minus tool clock (default: as recorded, else "
             "detected from the power steps)."),
    trace_sample_mode: Optional[str] = typer.Option(
        None, metavar="MODE", rich_help_panel=P_HOST,
        help="What a trace sample stands for: mean-preceding, mean-following, instant or auto (default: as "
             "recorded)."),
    reference_record: List[str] = typer.Option(
        [], "--reference-record", metavar="ID=RECORD", rich_help_panel=P_HOST,
        help="A catalogue reference measured on this machine with 'measure' (repeatable); -d host then grades "
             "like with like."),
    # -- transfer
    transfer: bool = typer.Option(
        True, "--transfer/--no-transfer", rich_help_panel=P_TRANSFER,
        help="Code the weights with NNC (ISO/IEC 15938-17) and price distribution."),
    bitstream: Optional[Path] = typer.Option(
        None, metavar="FILE", rich_help_panel=P_TRANSFER,
        help="Write the NNC bitstream to FILE ('eeki-label decode' rebuilds the model)."),
    previous: Optional[Path] = typer.Option(
        None, metavar="OLD.onnx", rich_help_panel=P_TRANSFER,
        help="Previous version of the model: also code the difference (delta)."),
    delta_bitstream: Optional[Path] = typer.Option(
        None, metavar="FILE", rich_help_panel=P_TRANSFER, help="With --previous: write the delta bitstream to FILE."),
    calibration_data: Optional[Path] = typer.Option(
        None, metavar="FILE.npz", rich_help_panel=P_TRANSFER,
        help="Real inputs (keyed by input name) for the NNC fidelity check (default: --inputs, else synthetic)."),
    clients: Optional[int] = typer.Option(None, min=1, metavar="K", rich_help_panel=P_TRANSFER,
                                          help="Federated-learning clients (default: the rule set's)."),
    rounds: Optional[int] = typer.Option(None, min=1, metavar="R", rich_help_panel=P_TRANSFER,
                                         help="Federated-learning rounds (default: the rule set's)."),
    updates: Optional[int] = typer.Option(None, min=1, metavar="N", rich_help_panel=P_TRANSFER,
                                          help="Periodic updates (default: the rule set's)."),
    country: Optional[str] = typer.Option(
        None, metavar="CC", rich_help_panel=P_TRANSFER,
        help="Grid carbon intensity of this country code (data/energy/transfer.json)."),
    no_cache: bool = typer.Option(
        False, "--no-cache", rich_help_panel=P_TRANSFER,
        help="Code the weights again even if the content cache holds this model's coding "
             "(cache: $EEKI_LABEL_CACHE_DIR, 'off' disables it; else ~/.cache/eeki-label)."),
    # -- exports
    export: List[str] = typer.Option(
        [], "--export", metavar="FORMAT=PATH", rich_help_panel=P_OUT,
        help="Also write the label as FORMAT=PATH (repeatable; formats: 'eeki-label export --help')."),
    mlflow: bool = typer.Option(
        False, "--mlflow", rich_help_panel=P_OUT,
        help="Log grade, index, energies and transfer figures and the label/PDF into the active MLflow run "
             "(pip install 'eeki-label[mlflow]')."),
) -> None:
    """Profile MODEL, estimate its energy per inference per device class, and grade it A..G."""
    from eeki_label.model_io import LoadLimits
    from eeki_label.models import dump_json
    from eeki_label.pipeline import AssessOptions
    from eeki_label.pipeline import run_assessment
    from eeki_label.transfer.stage import TransferOptions
    from eeki_label.profile.shapes import parse_shape_options
    from eeki_label.recycle import RecyclingOptions
    from eeki_label.render.text import summary
    from eeki_label.rules import class_rank

    if fail_below is not None:
        class_rank(fail_below)
    if allow_ungraded and fail_below is None:
        raise UsageError("--allow-ungraded applies to the gate: add --fail-below CLASS")
    if json_shape not in ("set", "single"):
        raise UsageError(f"--json-shape {json_shape!r}: use 'set' or 'single'")
    if json_shape == "single" and not (len(device_class) == 1 and device_class[0] != "all") \
            and not (not device_class and measurements):
        raise UsageError("--json-shape single needs exactly one --device-class ID (several classes make a label set)")
    if issued_at is not None:
        _check_iso(issued_at)
    if issuer is not None:
        _check_utf8("--issuer", issuer)
    if update_codec not in ("auto", "raw"):
        raise UsageError(f"--update-codec {update_codec!r}: use 'auto' or 'raw'")
    options = AssessOptions(
        device_classes=tuple(device_class), task=task, accuracy=accuracy, accuracy_evidence=accuracy_evidence,
        inputs=inputs,
        input_shapes=parse_shape_options(input_shape), runs=runs, threads=threads, seed=seed,
        rules_version=rules, catalogue_version=catalogue, device_data=device_data,
        prompt_tokens=prompt_tokens, output_tokens=output_tokens, length_preset=lengths,
        limits=LoadLimits(max_file_bytes=max_file_bytes, max_tensor_bytes=max_tensor_bytes, max_nodes=max_nodes,
                          max_activation_bytes=max_activation_bytes),
        runtime_time_limit_s=time_limit, issued_at=issued_at, issuer=issuer,
        base=base, recycling=RecyclingOptions(
            train_samples=train_samples, fine_tune_epochs=epochs, scratch_epochs=scratch_epochs,
            training_device_class=training_device_class, features_cached=features_cached, update_codec=update_codec),
        host=_host_options(meter, allow_estimate, measurements, trace, reference_class, device_classes=device_class,
                           clock_offset_s=trace_offset_s, sample_mode=trace_sample_mode,
                           reference_records=_reference_records(reference_record)),
        transfer=TransferOptions(enabled=transfer, previous=previous, calibration_data=calibration_data,
                                 clients=clients, rounds=rounds, updates=updates, country=country,
                                 cache=not no_cache),
    )
    if not transfer and (bitstream or previous or delta_bitstream or calibration_data):
        raise UsageError("--bitstream, --previous, --delta-bitstream and --calibration-data need the transfer stage "
                         "(drop --no-transfer)")
    if delta_bitstream and not previous:
        raise UsageError("--delta-bitstream needs --previous")
    exports = _export_options(export)
    if mlflow:
        from eeki_label.export.mlflow_run import require_mlflow

        require_mlflow()
    signing_key = _certificate_preflight(model, sign_key, embed)
    _refuse_overwriting_inputs(
        {"--json": Path(json_out) if json_out and json_out != "-" else None, "--pdf": pdf, "--html": html,
         "--embed": embed, "--bitstream": bitstream, "--delta-bitstream": delta_bitstream,
         **{f"--export {fmt}": Path(path) for fmt, path in exports},
         **({f"--out ({name})": out / name for name in ("label.json", "label.pdf", "report.html")} if out else {})},
        {"the model": model, "--base": base, "--previous": previous, "--measurements": measurements, "--trace": trace,
         "--calibration-data": calibration_data, "--sign-key": sign_key, "--inputs": inputs,
         "--accuracy-evidence": accuracy_evidence})
    from eeki_label.cli_progress import StageProgress

    progress = StageProgress(not quiet)
    ok = False
    try:
        assessment = run_assessment(model, options, progress)
        ok = True
    finally:
        progress.close(ok)
    labels = assessment.labels
    extra, unwritten = {}, []
    if assessment.transfer is not None:  # a bitstream NNC could not make is reported after the label is written
        for option, path, data in (("--bitstream", bitstream, assessment.transfer.bitstream),
                                   ("--delta-bitstream", delta_bitstream, assessment.transfer.delta_bitstream)):
            if path is not None and data is not None:
                extra[path] = data
            elif path is not None:
                unwritten.append(option)
    if json_shape == "single" and len(labels.labels) != 1:
        raise UsageError(f"--json-shape single: {len(labels.labels)} labels were made; use the default 'set'")
    doc = labels.labels[0] if json_shape == "single" else labels
    if signing_key is not None:
        from eeki_label.signing import sign_document

        doc = sign_document(doc, signing_key)
    text = dump_json(doc)
    if exports:
        from eeki_label.export import export_text
        from eeki_label.export.common import source_of

        src = source_of(doc)
        for fmt, path in exports:
            extra[Path(path)] = export_text(src, fmt)
    t_write = time.perf_counter()
    _write_outputs(doc, text, out=out, json_out=json_out, pdf=pdf, html=html, embed=embed, model=model, extra=extra)
    if out or pdf or html or embed or extra or (json_out and json_out != "-"):
        progress.stage_done("render and write", time.perf_counter() - t_write)
    if mlflow:
        from eeki_label.export.mlflow_run import log_to_mlflow

        log_to_mlflow(doc)
    if json_out == "-":
        sys.stdout.write(text)
    if not quiet and json_out != "-":
        typer.echo(summary(labels))
        written = _written(out=out, json_out=json_out, pdf=pdf, html=html, embed=embed, extra=extra)
        if written:
            how = f"signed with key {doc.signature.key_fingerprint}" if signing_key is not None else "unsigned"
            typer.echo(f"wrote ({how}):\n  " + written.replace(", ", "\n  "))

    from eeki_label.energy.host import unresolved_reason

    unresolved = unresolved_reason(labels.labels)
    if unresolved:  # the label is written (class null, with the reason); the exit code says it is not graded
        raise UnresolvedMeasurementError(unresolved)
    if fail_below is not None:
        _gate(labels.labels, fail_below, allow_ungraded)
    if unwritten:
        f = assessment.transfer.failure
        raise TransferError(f"{' and '.join(unwritten)} not written: NNC {f.part if f else 'coding'} failed "
                            f"({f.error if f else 'no bitstream'}); the label records it")


def _export_options(values: List[str]) -> list:
    from eeki_label.export import parse_export_option

    exports = [parse_export_option(v) for v in values]
    paths = [os.path.abspath(p) for _, p in exports]
    if len(set(paths)) != len(paths):
        raise UsageError("--export: two formats name the same PATH")
    return exports


def _reference_records(items) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        ref_id, sep, path = item.partition("=")
        if not sep or not ref_id or not path:
            raise UsageError(f"--reference-record {item!r}: use ID=RECORD (a catalogue reference id and a record)")
        out.append((ref_id, path))
    return tuple(out)



def _gate(labels, fail_below: str, allow_ungraded) -> None:
    """The pre-release gate (README, "Gate"): every label graded and none worse than ``fail_below``;
    a device class named by ``--allow-ungraded`` may be not graded (its label then passes)."""
    from eeki_label.rules import worse_than

    required = fail_below.upper()
    allowed = set(allow_ungraded)
    ungraded = [lab for lab in labels if not lab.label.gradable and lab.device_class.id not in allowed]
    failing = [lab for lab in labels if lab.label.gradable and worse_than(lab.label.class_, required)]
    problems = []
    if failing:
        problems.append(f"class worse than {required}: "
                        + ", ".join(f"{lab.device_class.id}={lab.label.class_}" for lab in failing))
    if ungraded:
        problems.append("not graded: " + ", ".join(lab.device_class.id for lab in ungraded)
                        + " (--allow-ungraded ID accepts that)")
    if not any(lab.label.gradable for lab in labels) and not problems:
        problems.append("no device class could be graded")
    if problems:
        raise GateFailed(f"required at least class {required}; " + "; ".join(problems))


def _written(*, out=None, json_out=None, pdf=None, html=None, embed=None, extra=None) -> str:
    """The files an assess or render wrote, for the confirmation line."""
    names = [str(out / n) for n in ("label.json", "label.pdf", "report.html")] if out is not None else []
    names += [str(p) for p in (json_out if json_out != "-" else None, pdf, html, embed) if p]
    names += [str(p) for p in (extra or {})]
    return ", ".join(names)


def _host_options(meter, allow_estimate, measurements, trace, reference_class, device_classes=(), **more):
    from eeki_label.energy.host import HOST_CLASS_ID, HostOptions

    if device_classes and HOST_CLASS_ID not in device_classes and (measurements or trace or meter != "auto"):
        raise UsageError("--measurements, --trace and --meter apply to --device-class host; add -d host")
    return HostOptions(meter=meter, allow_estimate=allow_estimate,
                       measurements=str(measurements) if measurements else None, trace=str(trace) if trace else None,
                       reference_class=reference_class, **more)


@app.command(cls=_Command)
@_guarded
def measure(
    model: Path = typer.Argument(..., help="The ONNX model file.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="The measurement record to write (JSON).", show_default=False),
    meter: str = typer.Option("auto", help="auto, rapl, nvml, or trace (an external meter; markers are written)."),
    markers: Optional[Path] = typer.Option(None, help="Run markers CSV for aligning a meter's log (default: OUT.markers.csv)."),
    trace: Optional[Path] = typer.Option(None, help="The external meter's log, read after the runs (--meter trace)."),
    trace_format: str = typer.Option("auto", help="Trace format: auto, csv, line-protocol."),
    trace_field: Optional[str] = typer.Option(None, help="Watts column (CSV) or FIELD / MEASUREMENT.FIELD (line protocol)."),
    trace_precision: str = typer.Option("ns", help="Line-protocol timestamp precision: s, ms, us, ns."),
    trace_offset_s: Optional[float] = typer.Option(
        None, help="Clock offset of the meter's logger: logger clock minus tool clock, seconds (default: detected "
                   "from the power steps)."),
    trace_sample_mode: str = typer.Option(
        "auto", help="What a trace sample stands for: mean-preceding (CSV default), mean-following, instant "
                     "(line-protocol default) or auto."),
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224 for inputs with unknown dims (repeatable)."),
    baseline_runs: int = typer.Option(10, min=2, help="Baseline runs: the system without the model."),
    idle_runs: int = typer.Option(10, min=0, help="Idle runs: session loaded, no inference."),
    scenario_runs: int = typer.Option(30, min=2, help="Scenario runs: batches of inferences."),
    run_seconds: float = typer.Option(1.0, min=0.001, help="Target duration of each run, seconds."),
    inferences_per_run: Optional[int] = typer.Option(
        None, min=1, help="Inferences per scenario run (default: from the warm-up latency and --run-seconds)."),
    threads: Optional[int] = typer.Option(None, min=1, help="onnxruntime intra-op threads (default: onnxruntime's)."),
    seed: int = typer.Option(0, help="Seed of the generated inputs."),
    max_file_bytes: int = typer.Option(DEFAULT_MAX_FILE_BYTES, min=1, help="Largest model file accepted, bytes."),
    max_tensor_bytes: int = typer.Option(DEFAULT_MAX_TENSOR_BYTES, min=1, help="Largest total declared tensor size accepted, bytes."),
    max_nodes: int = typer.Option(
        DEFAULT_MAX_NODES, min=1, help="Most nodes accepted once local functions are expanded (subgraphs included)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary, no progress."),
) -> None:
    """Measure MODEL's energy on this machine (baseline, idle, scenario) and archive the raw samples."""
    from eeki_label.energy.host import HostOptions, complete_record, measure_record
    from eeki_label.energy.measure import ProtocolConfig, analyse, dump_record, markers_csv
    from eeki_label.energy.meters import open_meter
    from eeki_label.energy.record import TraceSettings
    from eeki_label.fileio import write_atomic
    from eeki_label.model_io import LoadLimits, load_model
    from eeki_label.profile.shapes import parse_shape_options, resolve_input_shapes

    if meter not in ("auto", "rapl", "nvml", "trace"):
        raise UsageError(f"--meter {meter!r}: use auto, rapl, nvml or trace")
    _refuse_overwriting_inputs({"--out": out, "--markers": markers}, {"the model": model, "--trace": trace})
    if trace is not None and meter != "trace":
        raise UsageError("--trace needs --meter trace")
    try:
        settings = TraceSettings(format=trace_format, field=trace_field, precision=trace_precision,
                                 clock_offset_s=trace_offset_s, sample_mode=trace_sample_mode)
    except ValueError as e:
        raise UsageError(f"trace option: {' '.join(str(e).split())[:200]}") from e
    options = HostOptions(meter=meter, trace=str(trace) if trace else None, trace_settings=settings,
                          protocol=ProtocolConfig(baseline_runs, idle_runs, scenario_runs, run_seconds,
                                                  inferences_per_run, seed=seed, threads=threads))
    options.protocol.check()
    if meter != "trace":
        open_meter(meter).close()  # fail before loading anything when nothing can be measured
    loaded = load_model(model, LoadLimits(max_file_bytes=max_file_bytes, max_tensor_bytes=max_tensor_bytes,
                                          max_nodes=max_nodes))
    shapes = resolve_input_shapes(loaded.proto, parse_shape_options(input_shape))
    from eeki_label.profile.runtime import DEFAULT_PROBE_TIME_LIMIT_S, trial_run

    # the protocol runs the model in this process: first show, sandboxed, that it ends within the limits
    trial_run(loaded, shapes, time_limit_s=DEFAULT_PROBE_TIME_LIMIT_S, what="the trial run before the measurement")
    from eeki_label.cli_progress import StageProgress

    progress = StageProgress(not quiet)
    ok = False
    try:
        record = measure_record(loaded, shapes, options, progress)
        ok = True
    finally:
        progress.close(ok)
    # nothing lost: the runs and their markers are on disk before the trace is read
    write_atomic(markers or out.with_name(out.name + ".markers.csv"), markers_csv(record))
    write_atomic(out, dump_record(record))
    if trace is not None:
        from eeki_label.energy.measure import MeasurementRules
        from eeki_label.errors import EekiError
        from eeki_label.rules import load_rules

        try:
            record = complete_record(record, options, MeasurementRules.of(load_rules()))
        except EekiError as e:
            e.args = (f"{e.args[0]}; the {len(record.runs)} runs are saved in {out}: attach the log later with "
                      f"eeki-label assess MODEL --measurements {out} --trace LOG",)
            raise
        write_atomic(out, dump_record(record))
    if quiet:
        return
    if any(r.energy_j is None for r in record.runs):
        typer.echo(f"{len(record.runs)} runs recorded with markers; energies follow from the meter's log: "
                   f"eeki-label assess MODEL --measurements {out} --trace LOG")
        return
    from eeki_label.errors import MeasurementError

    try:
        m = analyse(record)
    except MeasurementError as e:  # the raw samples are archived; assess --measurements reports it as an error
        sys.stderr.write(f"warning: net energy not resolvable: {e}\n")
        return
    if m.unresolved:
        sys.stderr.write(f"warning: {m.unresolved}\n")
    lo, hi = m.ci95_j
    idle = f", idle {m.idle_power_w:.4g} W" if m.idle_power_w is not None else ""
    typer.echo(f"{record.meter.kind} ({', '.join(m.domains)}): net {m.energy_j * 1e3:.4g} mJ per inference "
               f"(95 % CI {lo * 1e3:.4g}..{hi * 1e3:.4g} mJ, {m.interval_method}); baseline "
               f"{m.net.baseline_power_w:.4g} W{idle}, scenario {m.scenario_power_w:.4g} W; "
               f"{m.scenario_runs} x {m.inferences_per_run} inferences")


def _certificate_preflight(model: Path, sign_key: Optional[Path], embed: Optional[Path]):
    """Fail before the expensive stages: load the signing key; refuse --embed onto the model itself."""
    key = None
    if sign_key is not None:
        from eeki_label.signing import load_private_key

        key = load_private_key(sign_key)
    if embed is not None and embed.resolve() == model.resolve():
        raise UsageError("--embed must name a new file, not the assessed model")
    return key


def _refuse_overwriting_inputs(outputs: dict, inputs: dict) -> None:
    """An output path naming one of the inputs (the model, --base, a key...) is refused before anything
    runs: the outputs are renamed into place at the end and would replace it."""
    existing = {}
    for what, path in inputs.items():
        try:
            existing[what] = os.stat(path) if path is not None else None
        except OSError:
            pass
    for option, path in outputs.items():
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            continue
        for what, other in existing.items():
            if st is not None and other is not None and (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino):
                raise UsageError(f"{option} {path} is {what}: refusing to overwrite an input")


def _write_outputs(doc, text: str, *, out=None, json_out=None, pdf=None, html=None, embed=None, model=None,
                   extra=None) -> None:
    """Render everything in memory, then write all files or none (``fileio.AtomicBatch``)."""
    from eeki_label.fileio import AtomicBatch

    want_pdf, want_html = pdf is not None or out is not None, html is not None or out is not None
    pdf_bytes = html_text = None
    if want_pdf:
        from eeki_label.render.pdf import render_pdf

        pdf_bytes = render_pdf(doc)
    if want_html:
        from eeki_label.render.html import render_html

        html_text = render_html(doc)
    with AtomicBatch() as batch:
        if out is not None:
            batch.add(out / "label.json", text)
            batch.add(out / "label.pdf", pdf_bytes)
            batch.add(out / "report.html", html_text)
        if json_out and json_out != "-":
            batch.add(json_out, text)
        if pdf is not None:
            batch.add(pdf, pdf_bytes)
        if html is not None:
            batch.add(html, html_text)
        for path, data in (extra or {}).items():
            batch.add(path, data)
        if embed is not None:
            from eeki_label.embed import write_embedded

            first = doc.labels[0] if hasattr(doc, "labels") else doc
            if first.model.external_data_bytes and embed.resolve().parent != model.resolve().parent:
                raise UsageError("the model has external data files: --embed must write into the model's folder")
            batch.add_stream(embed, lambda f: write_embedded(model, text, first.model.sha256, f))


@app.command(cls=_Command, name="render")
@_guarded
def render_cmd(
    label: Path = typer.Argument(..., help="A label JSON file (or a model with an embedded label).", show_default=False),
    pdf: Optional[Path] = typer.Option(None, "--pdf", help="Write the PDF certificate to PATH."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write the interactive HTML report to PATH."),
) -> None:
    """Re-render an existing label as a PDF certificate and/or an HTML report."""
    from eeki_label.models import dump_json
    from eeki_label.signing import check_signature, parse_document
    from eeki_label.verify import looks_like_json, read_label_file, validate_document

    if pdf is None and html is None:
        raise UsageError("nothing to render: give --pdf PATH and/or --html PATH")
    _refuse_overwriting_inputs({"--pdf": pdf, "--html": html}, {"the label": label})
    if looks_like_json(label):
        obj, doc = read_label_file(label)
    else:
        from eeki_label.embed import extract

        obj = parse_document(extract(label).label_text, f"label embedded in {label.name}")
        doc = validate_document(obj, f"label embedded in {label.name}")
    if obj.get("signature") is not None:
        check_signature(obj, label.name)  # never print a certificate that claims a signature it does not carry
    _write_outputs(doc, dump_json(doc), pdf=pdf, html=html)
    typer.echo("wrote:\n  " + _written(pdf=pdf, html=html).replace(", ", "\n  "))


@app.command("export", cls=_Command)
@_guarded
def export_cmd(
    label: Path = typer.Argument(..., help="A label JSON file (label or label set), or a model with an embedded label.",
                                 show_default=False),
    fmt: str = typer.Option(..., "--format", "-f", help="cyclonedx, spdx, model-card, markdown, badge-json or badge-svg.",
                            show_default=False),
    out: str = typer.Option(..., "--out", "-o", help="File to write, or '-' for stdout.", show_default=False),
    device_class: Optional[str] = typer.Option(None, "--device-class", "-d", help="Badges: the device class shown "
                                                                                   "(default: the label's first)."),
    inferences: int = typer.Option(1000, min=1, help="Inferences per kWh/MJ quantity in CycloneDX, SPDX and the card "
                                                     "(the per-inference joules are stated beside it)."),
    spdx_unit: str = typer.Option("kilowattHour", help="SPDX energy unit: kilowattHour or megajoule."),
    validate: bool = typer.Option(False, "--validate", help="Check the export with the format's own validator first "
                                                            "(extras [sbom] or [hub])."),
) -> None:
    """Write a finished label as a CycloneDX/SPDX AI-BOM, a Hugging Face model card or a badge; the label itself is
    not changed (a signed label still verifies), the export references its id, model sha256 and signature."""
    from eeki_label.export import FORMATS, export_text
    from eeki_label.export.common import export_source
    from eeki_label.signing import check_signature, parse_document
    from eeki_label.verify import looks_like_json, read_label_file, validate_document

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if spdx_unit not in ("kilowattHour", "megajoule"):
        raise UsageError(f"--spdx-unit {spdx_unit!r}: use kilowattHour or megajoule")
    if out != "-":
        _refuse_overwriting_inputs({"--out": Path(out)}, {"the label": label})
    if looks_like_json(label):
        obj, doc = read_label_file(label)
    else:
        from eeki_label.embed import extract

        obj = parse_document(extract(label).label_text, f"label embedded in {label.name}")
        doc = validate_document(obj, f"label embedded in {label.name}")
    if obj.get("signature") is not None:
        check_signature(obj, label.name)  # never reference a signature that does not hold
    text = export_text(export_source(obj, doc, inferences), fmt, device_class=device_class, spdx_unit=spdx_unit)
    if validate:
        from eeki_label.export.validate import validate_export

        validate_export(fmt, text)
    if out == "-":
        sys.stdout.write(text)
        return
    from eeki_label.fileio import write_atomic

    write_atomic(out, text)


@app.command("gate", cls=_Command)
@_guarded
def gate_cmd(
    models: List[Path] = typer.Argument(..., help="ONNX models (a pre-commit hook passes the changed ones).",
                                        show_default=False),
    fail_below: str = typer.Option(..., help="Required class (A..G): a model worse than it fails the gate.",
                                   show_default=False),
    device_class: List[str] = typer.Option(
        [], "--device-class", "-d", help="Device class id (repeatable), or 'all' (default: the rule set's default)."),
    task: Optional[str] = typer.Option(None, help="Task id from the catalogue (needed for a grade)."),
    accuracy: Optional[float] = typer.Option(None, help="Declared quality in the task's metric."),
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224 for inputs with unknown dims."),
    rules: Optional[str] = typer.Option(None, help="Rule set version (default: newest installed)."),
    catalogue: Optional[str] = typer.Option(None, help="Reference catalogue version (default: newest installed)."),
) -> None:
    """Grade several models (estimate only: no runtime profile, no NNC coding) and fail (exit 3) if one is
    worse than --fail-below or cannot be graded; one line per model. Used by the pre-commit hook."""
    from eeki_label.pipeline import AssessOptions, run_assessment
    from eeki_label.profile.shapes import parse_shape_options
    from eeki_label.rules import class_rank, worse_than
    from eeki_label.transfer.stage import TransferOptions

    class_rank(fail_below)
    options = AssessOptions(device_classes=tuple(device_class), task=task, accuracy=accuracy,
                            input_shapes=parse_shape_options(input_shape), runs=0, rules_version=rules,
                            catalogue_version=catalogue, transfer=TransferOptions(enabled=False))
    failures = []
    for model in models:
        labels = run_assessment(model, options, None).labels.labels
        grades = ", ".join(f"{lab.device_class.id}={lab.label.class_ or 'not gradable'}" for lab in labels)
        bad = [lab for lab in labels if not lab.label.gradable or worse_than(lab.label.class_, fail_below)]
        typer.echo(f"{'FAIL' if bad else 'ok  '} {model}: {grades}")
        if bad:
            failures.append(f"{model.name} ({', '.join(f'{lab.device_class.id}={lab.label.class_ or chr(45)}' for lab in bad)})")
    if failures:
        raise GateFailed(f"worse than class {fail_below.upper()} or not gradable: {'; '.join(failures)}")


@app.command(cls=_Command)
@_guarded
def keygen(
    out: Path = typer.Option(..., "--out", help="Private key file to write (PEM, mode 600); the public key goes to OUT.pub."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing key files."),
) -> None:
    """Create an Ed25519 key pair for signing labels (assess --sign-key)."""
    from eeki_label.errors import KeyFileError
    from eeki_label.fileio import AtomicBatch
    from eeki_label.signing import fingerprint, generate_keypair, load_public_key

    pub = out.with_name(out.name + ".pub")
    for path in (out, pub):
        if path.exists() and not force:
            raise KeyFileError(f"{path} exists; not overwriting a key (use --force)")
    private_pem, public_pem = generate_keypair()
    with AtomicBatch() as batch:
        batch.add(out, private_pem, mode=0o600)
        batch.add(pub, public_pem, mode=0o644)
    typer.echo(f"wrote {out} (private key, mode 600) and {pub}; key {fingerprint(load_public_key(pub))}")


@app.command(cls=_Command, name="verify")
@_guarded
def verify_cmd(
    label: Path = typer.Argument(..., help="A label JSON file, or a model with an embedded label.", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", help="The model the label is for: its sha256 must match."),
    public_key: Optional[Path] = typer.Option(None, "--public-key", help="The issuer's public key (KEY.pub from keygen)."),
    record: Optional[Path] = typer.Option(
        None, "--record", help="The measurement record a measured label names: recompute its energy and compare."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="With --record: the external meter's log it names."),
) -> None:
    """Check a label's signature, key, model sha256 and data versions; each failure has its own exit code."""
    from eeki_label.verify import verify

    if trace is not None and record is None:
        raise UsageError("--trace needs --record")
    if record is not None:  # the measurement first: an unsigned label's figures can still be recomputed
        from eeki_label.energy.host import verify_measurement
        from eeki_label.verify import looks_like_json, read_label_file

        if not looks_like_json(label):
            raise UsageError("--record needs the label as a JSON file")
        typer.echo(verify_measurement(read_label_file(label)[1], record, trace))
    typer.echo(verify(label, model, public_key).summary())


def _check_utf8(option: str, text: str) -> None:
    """Free text that goes onto the label must be Unicode: a non-UTF-8 argument reaches Python as
    lone surrogates (surrogateescape), which no JSON, PDF or HTML output can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"{option}: not valid UTF-8 text (character {e.start + 1})") from e


def _check_iso(text: str) -> None:
    import datetime as dt

    try:
        dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise UsageError(f"--issued-at {text!r} is not an ISO 8601 date-time") from e


@app.command(cls=_Command)
@_guarded
def devices(
    calibration: bool = typer.Option(False, "--calibration", help="Print the calibration table (Markdown): every "
                                     "workload's measured, predicted and held-out energy, median and worst error."),
    device_data: Optional[str] = typer.Option(
        None, "--device-data", help="Device data version (default: newest) or a file of one's own."),
) -> None:
    """List the device classes and their calibration."""
    from eeki_label.pipeline import load_context
    from eeki_label.render.text import calibration_table, devices_table

    ctx = load_context(device_data=device_data)
    typer.echo(calibration_table(ctx) if calibration else devices_table(ctx))


@app.command(cls=_Command)
@_guarded
def calibrate(
    models: List[Path] = typer.Argument(..., help="ONNX models to measure here, e.g. the catalogue's references "
                                                  "exported with scripts/export_torchvision.py.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="The device-data file to write (JSON).", show_default=False),
    peak_macs_per_s: float = typer.Option(..., help="Datasheet peak MAC/s of this machine at --precision.",
                                          show_default=False),
    memory_bytes_per_s: float = typer.Option(..., help="Datasheet memory bandwidth, bytes/s.", show_default=False),
    datasheet_source: str = typer.Option(..., help="Where the two datasheet figures come from (title, URL).",
                                         show_default=False),
    class_id: str = typer.Option("own", help="Id of the class (assess -d ID --device-data OUT)."),
    name: str = typer.Option("This machine, calibrated", help="Name of the class."),
    system: Optional[str] = typer.Option(None, help="The reference system in words (default: the host as recorded)."),
    precision: str = typer.Option("fp32", help="Precision the models run at here."),
    precision_bytes: int = typer.Option(4, help="Bytes per value at --precision."),
    data_version: str = typer.Option("own-1", help="Version written into the file."),
    measurements: List[Path] = typer.Option(
        [], "--measurements", help="Archived records (measure --out), one per model in order, instead of measuring."),
    meter: str = typer.Option("auto", help="auto, rapl or nvml."),
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224 for inputs with unknown dims."),
    baseline_runs: int = typer.Option(10, min=2, help="Baseline runs per model."),
    idle_runs: int = typer.Option(10, min=0, help="Idle runs per model."),
    scenario_runs: int = typer.Option(30, min=2, help="Scenario runs per model."),
    run_seconds: float = typer.Option(1.0, min=0.001, help="Target duration of each run, seconds."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary, no progress."),
) -> None:
    """Measure models on this machine and write a device-class file (the format of device data 2.0.0)."""
    import datetime as dt

    from eeki_label import __version__
    from eeki_label.catalogue import load_catalogue
    from eeki_label.energy.calibrate import MachineSpec, calibration_document, dump_document, measure_workloads
    from eeki_label.energy.devices import load_devices
    from eeki_label.energy.host import HostOptions
    from eeki_label.energy.measure import ProtocolConfig
    from eeki_label.energy.meters import open_meter
    from eeki_label.fileio import write_atomic
    from eeki_label.pipeline import AssessOptions
    from eeki_label.profile.shapes import parse_shape_options

    if meter not in ("auto", "rapl", "nvml"):
        raise UsageError(f"--meter {meter!r}: use auto, rapl or nvml (a trace meter: measure --meter trace, then "
                         "calibrate --measurements)")
    _refuse_overwriting_inputs({"--out": out}, {**{f"model {m.name}": m for m in models},
                                                **{f"record {r.name}": r for r in measurements}})
    spec = MachineSpec(class_id=class_id, name=name, reference_system=system, peak_macs_per_s=peak_macs_per_s,
                       memory_bandwidth_bytes_per_s=memory_bytes_per_s, datasheet_source=datasheet_source,
                       precision=precision, precision_bytes=precision_bytes, data_version=data_version)
    spec.check()
    host = HostOptions(meter=meter, protocol=ProtocolConfig(baseline_runs, idle_runs, scenario_runs, run_seconds))
    host.protocol.check()
    if not measurements:
        open_meter(meter).close()  # fail before loading anything when nothing can be measured
    options = AssessOptions(input_shapes=parse_shape_options(input_shape))
    from eeki_label.cli_progress import StageProgress

    progress = StageProgress(not quiet)
    ok = False
    try:
        workloads = measure_workloads([str(m) for m in models], [str(r) for r in measurements], host, options,
                                      load_catalogue(None), progress)
        ok = True
    finally:
        progress.close(ok)
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    write_atomic(out, dump_document(calibration_document(spec, workloads, __version__, created)))
    if quiet:
        return
    dc = load_devices(None, str(out)).get(class_id)
    h = dc.held_out
    typer.echo(f"{out.name}: class {class_id!r} fitted on {len(workloads)} model(s): k = "
               f"{dc.j_per_effective_mac * 1e12:.4g} pJ per effective MAC, w = {dc.bytes_weight:.3f}; " + (
                   f"held-out error median {h.median_abs_error * 100:.1f} %, worst {h.worst_ratio:.2f}x"
                   if h.rows else "no held-out error (one model)"))
    typer.echo(f"use it: eeki-label assess MODEL --device-data {out} -d {class_id}")


@app.command("batch", cls=_Command,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_guarded
def batch_cmd(
    ctx: typer.Context,
    input_path: Path = typer.Argument(..., metavar="INPUT", show_default=False,
                                      help="A folder (every *.onnx below it) or a manifest (.csv or .jsonl)."),
    out: Path = typer.Option(..., "--out", "--out-dir", metavar="DIR", show_default=False,
                             help="Output folder: labels/, results.csv, results.jsonl, leaderboard.html."),
    engine: str = typer.Option("local", metavar="local|ray", help="Run on a local process pool or a Ray cluster."),
    workers: Optional[int] = typer.Option(
        None, min=1, metavar="N", help="Models assessed at once (default: local: the CPUs; ray: as the cluster schedules)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDR",
                                              help="Ray cluster address (default: start a local Ray for the batch)."),
    cpus_per_model: Optional[int] = typer.Option(
        None, "--cpus-per-model", min=1, metavar="N",
        help="CPUs per model (its onnxruntime threads; Ray: the task's num_cpus). Default: local CPUs / workers; ray 1."),
    model_timeout: Optional[float] = typer.Option(
        None, "--model-timeout", min=1.0, metavar="SECONDS",
        help="Kill a model's assessment after SECONDS (recorded as failed, exit code 31)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Assess models that failed in an earlier run again."),
    leaderboard: bool = typer.Option(True, "--leaderboard/--no-leaderboard", help="Write leaderboard.html."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no summary (errors are still printed)."),
) -> None:
    """Assess every model of a folder or manifest, each in its own process (failures are recorded and never stop
    the batch); resumable. Options after INPUT that batch does not know are assess options for every model
    (e.g. --runs 0 -d edge-gpu-batch1 --issued-at ...); put them after '--' to be explicit."""
    from eeki_label.batch.runner import BatchOptions, run_batch
    from eeki_label.errors import BatchFailed
    from eeki_label.cli_progress import BatchProgress

    progress = BatchProgress(enabled=not quiet)
    options = BatchOptions(input=input_path, out=out, assess_args=tuple(ctx.args), engine=engine, workers=workers,
                           ray_address=ray_address, cpus_per_model=cpus_per_model, model_timeout_s=model_timeout,
                           retry_failed=retry_failed, leaderboard=leaderboard)
    try:
        result = run_batch(options, progress)
    finally:
        progress.close()
    if not quiet:
        typer.echo(f"{result.total} models in {result.seconds:.1f} s on {result.engine} ({result.workers or 'cluster'} "
                   f"workers): {result.ok} assessed, {result.skipped} reused, {result.failed} failed; {result.rows} rows")
        typer.echo(f"wrote {out}/: labels/, {', '.join(result.files)}")
    if result.failed:
        raise BatchFailed(f"{result.failed} of {result.total} models failed (status 'failed' in {out}/results.csv)")
    if result.gate_failed:
        raise GateFailed(f"{result.gate_failed} of {result.total} models failed --fail-below (exit_code 3 in "
                         f"{out}/results.csv)")


@app.command(cls=_Command, name="catalogue")
@_guarded
def catalogue_cmd(
    version: Optional[str] = typer.Option(
        None, "--catalogue", "--version", metavar="VERSION",
        help="Catalogue version, as in 'assess --catalogue' (default: newest installed)."),
) -> None:
    """List the reference catalogue: tasks and reference models."""
    from eeki_label.catalogue import load_catalogue
    from eeki_label.render.text import catalogue_table

    typer.echo(catalogue_table(load_catalogue(version)))


@app.command(cls=_Command, name="rules")
@_guarded
def rules_cmd() -> None:
    """List the installed rule sets and the newest one's class thresholds."""
    from eeki_label.render.text import rules_table
    from eeki_label.rules import available_versions, load_rules

    typer.echo(rules_table([load_rules(v) for v in available_versions()]))


@app.command(cls=_Command, name="transfer")
@_guarded
def transfer_cmd(
    source: Path = typer.Argument(..., help="An ONNX model (coded with NNC now) or a label JSON with a transfer section.",
                                  show_default=False),
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224 for inputs with unknown dims (repeatable)."),
    clients: Optional[int] = typer.Option(None, min=1, help="Federated-learning clients (default: the rule set's)."),
    rounds: Optional[int] = typer.Option(None, min=1, help="Federated-learning rounds (default: the rule set's)."),
    updates: Optional[int] = typer.Option(None, min=1, help="Periodic updates (default: the rule set's)."),
    devices: Optional[int] = typer.Option(None, min=1, help="Receiving devices per distribution (default: the rule set's)."),
    link: Optional[str] = typer.Option(None, help="Named link from data/energy/transfer.json (default: the study's)."),
    link_up: Optional[float] = typer.Option(None, min=1e-6, help="Uplink rate, Mbit/s (overrides --link)."),
    link_down: Optional[float] = typer.Option(None, min=1e-6, help="Downlink rate, Mbit/s (overrides --link)."),
    country: Optional[str] = typer.Option(None, help="Country code for the grid's carbon intensity."),
    price: Optional[float] = typer.Option(None, min=0.0, max=10.0, help="Electricity price, EUR/kWh."),
    network: Optional[str] = typer.Option(None, help="Add network energy: fixed, mobile or fixed-2015-aslan."),
    previous: Optional[Path] = typer.Option(None, help="Previous version (ONNX source only): price delta coding too."),
    calibration_data: Optional[Path] = typer.Option(None, help=".npz of real inputs for the fidelity check (ONNX source)."),
    baselines: bool = typer.Option(False, "--baselines", help="Also measure raw, zstd-19, 8-bit + zstd and single-QP NNC."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the transfer section as JSON to PATH or '-'."),
    time_limit: float = typer.Option(600.0, min=0.001, help="Wall-clock limit of the trial run and of the codec, seconds."),
) -> None:
    """What-if: the energy of distributing a model with and without NNC (one-time, updates, federated)."""
    from eeki_label.models import TransferInfo
    from eeki_label.render.text import transfer_table
    from eeki_label.transfer.stage import TransferOptions, reprice

    options = TransferOptions(previous=previous, calibration_data=calibration_data, clients=clients, rounds=rounds,
                              updates=updates, devices=devices, link=link, link_up_mbit_s=link_up,
                              link_down_mbit_s=link_down, country=country, price_eur_per_kwh=price, network=network,
                              baselines=baselines, time_limit_s=time_limit)
    from eeki_label.verify import looks_like_json

    if looks_like_json(source):
        if previous or calibration_data or baselines:
            raise UsageError("--previous, --calibration-data and --baselines need an ONNX model, not a label")
        from eeki_label.rules import load_rules

        section, rules_version = _read_transfer_section(source)
        info: TransferInfo = reprice(section, options, load_rules(rules_version).raw)
        baseline_rows = None
    else:
        from eeki_label.pipeline import load_context
        from eeki_label.transfer.stage import transfer_for_model

        ctx = load_context()
        info, baseline_rows = transfer_for_model(source, parse_input_shapes(input_shape), ctx.rules, options)
    text = info.model_dump_json(indent=2) + "\n"
    if json_out == "-":
        sys.stdout.write(text)
        return
    if json_out:
        from eeki_label.fileio import write_atomic

        write_atomic(json_out, text)
    typer.echo(transfer_table(info, baseline_rows))


def parse_input_shapes(options: List[str]):
    from eeki_label.profile.shapes import parse_shape_options

    return parse_shape_options(options)


def _read_transfer_section(path: Path):
    from eeki_label.verify import read_label_file

    _, doc = read_label_file(path)
    first = doc.labels[0] if hasattr(doc, "labels") else doc
    if first.transfer is None:
        raise TransferError(f"{path.name}: the label has no transfer section (assessed with --no-transfer?)")
    return first.transfer, first.rules.version


@app.command(cls=_Command, name="decode")
@_guarded
def decode_cmd(
    bitstream: Path = typer.Argument(..., help="An NNC bitstream written by 'assess --bitstream'.", show_default=False),
    model: Path = typer.Option(..., "--model", "--previous",
                               help="The model it was coded from (for a delta: the previous version).",
                               show_default=False),
    out: Path = typer.Option(..., "--out", help="Where to write the reconstructed ONNX model.", show_default=False),
    max_file_bytes: int = typer.Option(DEFAULT_MAX_FILE_BYTES, min=1, help="Largest model and bitstream file accepted, bytes."),
) -> None:
    """Rebuild the reconstructed model from MODEL and an NNC bitstream, to re-check a fidelity claim."""
    from eeki_label.errors import ModelFileError, ModelTooLargeError
    from eeki_label.fileio import write_atomic
    from eeki_label.model_io import LoadLimits, load_model
    from eeki_label.transfer.nnc import decode_bitstream

    _refuse_overwriting_inputs({"--out": out}, {"the bitstream": bitstream, "--model": model})
    try:
        size = bitstream.stat().st_size
    except OSError as e:
        raise ModelFileError(f"{bitstream.name}: cannot read the bitstream ({e.strerror})") from e
    if not bitstream.is_file():
        raise ModelFileError(f"{bitstream.name}: not a regular file")
    if size > max_file_bytes:
        raise ModelTooLargeError(f"{bitstream.name}: {size} bytes, over the limit of {max_file_bytes}")
    loaded = load_model(model, LoadLimits(max_file_bytes=max_file_bytes))
    recon = decode_bitstream(bitstream.read_bytes(), loaded)
    write_atomic(out, recon.SerializeToString())
    typer.echo(f"wrote {out.name}: {loaded.name} with the tensors decoded from {bitstream.name}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 usage, others: README "Exit codes")."""
    # click's exception classes, whether typer uses click or its own copy of it
    click_usage_error = typer.BadParameter.__mro__[1]
    click_exception = typer.BadParameter.__mro__[2]
    try:
        result = app(args=argv, prog_name="eeki-label", standalone_mode=False)
    except click_usage_error as e:
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare command: typer has shown its help
            return 2
        # one line with the same prefix as every other error (README, "Exit codes")
        where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        sys.stderr.write(UsageError(e.format_message().rstrip(".") + where).diagnostics() + "\n")
        return 2
    except click_exception as e:
        sys.stderr.write(f"error: {' '.join(e.format_message().split())}\n")
        return getattr(e, "exit_code", 1)
    except typer.Abort:
        sys.stderr.write("interrupted\n")
        return 130
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
