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
from eeki_label.limits import (
    DEFAULT_MAX_ACTIVATION_BYTES, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_NODES, DEFAULT_MAX_TENSOR_BYTES,
)

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
    prompt_tokens: Optional[int] = typer.Option(None, "--prompt-tokens", help="Decoders with a KV cache: prompt tokens of one query (default: the rule set's preset)."),
    output_tokens: Optional[int] = typer.Option(None, "--output-tokens", help="Decoders with a KV cache: output tokens of one query (default: the rule set's preset)."),
    lengths: Optional[str] = typer.Option(None, "--lengths", help="Decoders: the rule set's length preset (default, short, long)."),
    out: Optional[Path] = typer.Option(None, help="Folder to write label.json, label.pdf and report.html into."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the label JSON to PATH, or '-' for stdout."),
    fail_below: Optional[str] = typer.Option(None, help="Exit with code 3 if a label is worse than this class (A..G)."),
    runs: int = typer.Option(30, min=0, help="Timed onnxruntime runs (0 skips the runtime profile)."),
    threads: Optional[int] = typer.Option(None, min=1, help="onnxruntime intra-op threads (default: onnxruntime's)."),
    seed: int = typer.Option(0, help="Seed of the generated inputs."),
    rules: Optional[str] = typer.Option(None, help="Rule set version (default: newest installed)."),
    catalogue: Optional[str] = typer.Option(None, help="Reference catalogue version (default: newest installed)."),
    max_file_bytes: int = typer.Option(DEFAULT_MAX_FILE_BYTES, min=1, help="Largest model file accepted, bytes."),
    max_tensor_bytes: int = typer.Option(DEFAULT_MAX_TENSOR_BYTES, min=1, help="Largest total declared tensor size accepted, bytes."),
    max_nodes: int = typer.Option(
        DEFAULT_MAX_NODES, min=1, help="Most nodes accepted once local functions are expanded (subgraphs included)."),
    max_activation_bytes: int = typer.Option(
        DEFAULT_MAX_ACTIVATION_BYTES, min=1, help="Largest activation working set (checked before running) and onnxruntime working memory, bytes."),
    time_limit: float = typer.Option(
        600.0, min=0.001, help="Wall-clock limit of the runtime profile (and of a shape probe), seconds."),
    issued_at: Optional[str] = typer.Option(None, help="Fix the issue time (ISO 8601) for reproducible documents."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary, no progress."),
    pdf: Optional[Path] = typer.Option(None, "--pdf", help="Write the PDF certificate to PATH."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write the interactive HTML report to PATH."),
    sign_key: Optional[Path] = typer.Option(None, "--sign-key", help="Sign the label with this Ed25519 key (keygen)."),
    embed: Optional[Path] = typer.Option(
        None, "--embed", help="Write a copy of the model with the label in its metadata_props ('eeki_label') to PATH."),
    issuer: Optional[str] = typer.Option(None, "--issuer", help="Who issues the label (recorded and printed)."),
    base: Optional[Path] = typer.Option(
        None, help="Declared pretrained base model (ONNX): classify tensors as frozen / fine-tuned / new against it."),
    train_samples: Optional[int] = typer.Option(
        None, min=1, help="Training samples for the training-energy figures (default: the rule set's)."),
    epochs: Optional[int] = typer.Option(
        None, min=1, help="Epochs of recycling and transfer learning (default: the rule set's)."),
    scratch_epochs: Optional[int] = typer.Option(
        None, min=1, help="Epochs of training from scratch (default: the matched catalogue family's, else the rule set's)."),
    training_device_class: Optional[str] = typer.Option(
        None, help="Device class of the training-energy figures (default: the rule set's)."),
    features_cached: Optional[bool] = typer.Option(
        None, "--features-cached/--no-features-cached",
        help="Frozen features computed once and reused across epochs (default: the rule set's)."),
    update_codec: str = typer.Option(
        "auto", help="Size of the update against --base: 'auto' (NNC delta when possible) or 'raw'."),
    meter: str = typer.Option(
        "auto", help="Meter for --device-class host: auto, rapl, nvml, trace (with --trace) or none."),
    allow_estimate: bool = typer.Option(
        False, "--allow-estimate", help="If host cannot be measured, give the estimate on the reference class instead."),
    measurements: Optional[Path] = typer.Option(
        None, help="Build the host label from a record written by 'eeki-label measure' (implies -d host)."),
    trace: Optional[Path] = typer.Option(
        None, help="External power-meter log (CSV or line protocol) for --meter trace or a record taken with it."),
    reference_class: Optional[str] = typer.Option(
        None, help="Device class whose estimated reference energy grades host (default: single-board-cpu; GPU runs: "
                   "datacenter-gpu-batch1)."),
    transfer: bool = typer.Option(
        True, "--transfer/--no-transfer", help="Code the weights with NNC (ISO/IEC 15938-17) and price distribution."),
    bitstream: Optional[Path] = typer.Option(None, help="Write the NNC bitstream to PATH ('eeki-label decode' rebuilds the model)."),
    previous: Optional[Path] = typer.Option(None, help="Previous version of the model: also code the difference (delta)."),
    delta_bitstream: Optional[Path] = typer.Option(None, help="With --previous: write the delta bitstream to PATH."),
    calibration_data: Optional[Path] = typer.Option(
        None, help=".npz of real inputs (keyed by input name) for the NNC fidelity check (default: synthetic)."),
    clients: Optional[int] = typer.Option(None, min=1, help="Federated-learning clients (default: the rule set's)."),
    rounds: Optional[int] = typer.Option(None, min=1, help="Federated-learning rounds (default: the rule set's)."),
    updates: Optional[int] = typer.Option(None, min=1, help="Periodic updates (default: the rule set's)."),
    country: Optional[str] = typer.Option(None, help="Grid carbon intensity of this country code (data/energy/transfer.json)."),
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
    from eeki_label.rules import class_rank, worse_than

    if fail_below is not None:
        class_rank(fail_below)
    if issued_at is not None:
        _check_iso(issued_at)
    if issuer is not None:
        _check_utf8("--issuer", issuer)
    if update_codec not in ("auto", "raw"):
        raise UsageError(f"--update-codec {update_codec!r}: use 'auto' or 'raw'")
    options = AssessOptions(
        device_classes=tuple(device_class), task=task, accuracy=accuracy,
        input_shapes=parse_shape_options(input_shape), runs=runs, threads=threads, seed=seed,
        rules_version=rules, catalogue_version=catalogue,
        prompt_tokens=prompt_tokens, output_tokens=output_tokens, length_preset=lengths,
        limits=LoadLimits(max_file_bytes=max_file_bytes, max_tensor_bytes=max_tensor_bytes, max_nodes=max_nodes,
                          max_activation_bytes=max_activation_bytes),
        runtime_time_limit_s=time_limit, issued_at=issued_at, issuer=issuer,
        base=base, recycling=RecyclingOptions(
            train_samples=train_samples, fine_tune_epochs=epochs, scratch_epochs=scratch_epochs,
            training_device_class=training_device_class, features_cached=features_cached, update_codec=update_codec),
        host=_host_options(meter, allow_estimate, measurements, trace, reference_class, device_classes=device_class),
        transfer=TransferOptions(enabled=transfer, previous=previous, calibration_data=calibration_data,
                                 clients=clients, rounds=rounds, updates=updates, country=country,
                                 required=bool(bitstream or previous or delta_bitstream or calibration_data)),
    )
    if not transfer and (bitstream or previous or delta_bitstream or calibration_data):
        raise UsageError("--bitstream, --previous, --delta-bitstream and --calibration-data need the transfer stage "
                         "(drop --no-transfer)")
    if delta_bitstream and not previous:
        raise UsageError("--delta-bitstream needs --previous")
    signing_key = _certificate_preflight(model, sign_key, embed)
    _refuse_overwriting_inputs(
        {"--json": Path(json_out) if json_out and json_out != "-" else None, "--pdf": pdf, "--html": html,
         "--embed": embed, "--bitstream": bitstream, "--delta-bitstream": delta_bitstream,
         **({f"--out ({name})": out / name for name in ("label.json", "label.pdf", "report.html")} if out else {})},
        {"the model": model, "--base": base, "--previous": previous, "--measurements": measurements, "--trace": trace,
         "--calibration-data": calibration_data, "--sign-key": sign_key})
    progress = _Progress(not quiet)
    try:
        assessment = run_assessment(model, options, progress)
    finally:
        progress.close()
    labels = assessment.labels
    extra = {}
    if assessment.transfer is not None:
        extra = {bitstream: assessment.transfer.bitstream, delta_bitstream: assessment.transfer.delta_bitstream}
        extra.pop(None, None)
    doc = labels.labels[0] if len(labels.labels) == 1 else labels
    if signing_key is not None:
        from eeki_label.signing import sign_document

        doc = sign_document(doc, signing_key)
    text = dump_json(doc)
    _write_outputs(doc, text, out=out, json_out=json_out, pdf=pdf, html=html, embed=embed, model=model, extra=extra)
    if json_out == "-":
        sys.stdout.write(text)
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


def _host_options(meter, allow_estimate, measurements, trace, reference_class, device_classes=(), **more):
    from eeki_label.energy.host import HOST_CLASS_ID, HostOptions

    if device_classes and HOST_CLASS_ID not in device_classes and (measurements or trace or meter != "auto"):
        raise UsageError("--measurements, --trace and --meter apply to --device-class host; add -d host")
    return HostOptions(meter=meter, allow_estimate=allow_estimate,
                       measurements=str(measurements) if measurements else None, trace=str(trace) if trace else None,
                       reference_class=reference_class, **more)


@app.command()
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
    trace_offset_s: float = typer.Option(0.0, help="Seconds added to the trace's timestamps (the logger's clock offset)."),
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
    from eeki_label.energy.host import HostOptions, measure_record
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
                                 offset_s=trace_offset_s)
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
    progress = _Progress(not quiet)
    try:
        record = measure_record(loaded, shapes, options, progress)
    finally:
        progress.close()
    write_atomic(markers or out.with_name(out.name + ".markers.csv"), markers_csv(record))
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
    lo, hi = m.net.ci95_j
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


@app.command("render")
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


@app.command()
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


@app.command("verify")
@_guarded
def verify_cmd(
    label: Path = typer.Argument(..., help="A label JSON file, or a model with an embedded label.", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", help="The model the label is for: its sha256 must match."),
    public_key: Optional[Path] = typer.Option(None, "--public-key", help="The issuer's public key (KEY.pub from keygen)."),
) -> None:
    """Check a label's signature, key, model sha256 and data versions; each failure has its own exit code."""
    from eeki_label.verify import verify

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


@app.command("transfer")
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
    from eeki_label.errors import TransferError
    from eeki_label.verify import read_label_file

    _, doc = read_label_file(path)
    first = doc.labels[0] if hasattr(doc, "labels") else doc
    if first.transfer is None:
        raise TransferError(f"{path.name}: the label has no transfer section (assessed with --no-transfer?)")
    return first.transfer, first.rules.version


@app.command("decode")
@_guarded
def decode_cmd(
    bitstream: Path = typer.Argument(..., help="An NNC bitstream written by 'assess --bitstream'.", show_default=False),
    model: Path = typer.Option(..., "--model", help="The model it was coded from (for a delta: the previous version).",
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
    try:
        app(args=argv, prog_name="eeki-label")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
