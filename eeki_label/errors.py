"""One exception tree for everything a user can cause.

Every error carries the process exit code the CLI returns for it and a one-line diagnosis. Stages
raise these (with ``from`` the underlying exception); ``cli.py`` catches them in one place and
prints ``error: <diagnosis>`` (``error: <kind>: <diagnosis>`` for the kinds with a label) on stderr. The codes are documented in README.md ("Exit codes") and
a test keeps that table and this module in step.
"""

from __future__ import annotations


class EekiError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with; ``str(err)`` is one line."""

    exit_code = 1
    label = "error"

    def __init__(self, message: str) -> None:
        # One line, always: a message from a library may contain newlines or control characters.
        one_line = " ".join(str(message).split())
        super().__init__(one_line)

    def diagnostics(self) -> str:
        """One line that always starts with ``error:``, then the kind of error where it is not generic."""
        return f"error: {self}" if self.label == "error" else f"error: {self.label}: {self}"


class UsageError(EekiError):
    """An option value that cannot be used (bad --input-shape syntax, unknown --fail-below class)."""

    exit_code = 2
    label = "usage"


class GateFailed(EekiError):
    """``--fail-below`` was given and the label is worse than the required class."""

    exit_code = 3
    label = "gate failed"


class ModelFileError(EekiError):
    """The model file is missing, not a regular file, or cannot be read."""

    exit_code = 10


class ModelTooLargeError(EekiError):
    """The file, or the tensors it declares, exceed the configured limits."""

    exit_code = 11


class ModelFormatError(EekiError):
    """Not an ONNX protobuf: empty, truncated, garbage, or an unparsable message."""

    exit_code = 12


class ModelInvalidError(EekiError):
    """A parsable ONNX file that the ONNX checker or our structural checks reject (e.g. no nodes)."""

    exit_code = 13


class UnsupportedOperatorError(EekiError):
    """An operator from a domain or opset onnxruntime cannot run (e.g. an unknown custom domain)."""

    exit_code = 14


class ExternalDataError(EekiError):
    """External tensor data that points outside the model's folder, or is missing or short."""

    exit_code = 15


class ShapeError(EekiError):
    """An input dimension is unknown and no --input-shape gives it, or shapes contradict each other."""

    exit_code = 16


class RuntimeProfileError(EekiError):
    """onnxruntime could not create a session for the model or run it."""

    exit_code = 17


class CatalogueError(EekiError):
    """Unknown task, device class, rule set or reference catalogue; or a damaged data file."""

    exit_code = 20


class OutputError(EekiError):
    """An output file could not be written."""

    exit_code = 21


class TransferError(EekiError):
    """The NNC codec could not encode or decode, or no quantisation met the fidelity bound."""

    exit_code = 30


class LimitExceededError(EekiError):
    """A wall-clock limit (runtime profile, codec) was exceeded."""

    exit_code = 31


# Certificates: signed labels, `verify`, `render` (README, "Exit codes" 40-46).


class LabelFileError(EekiError):
    """A label file (or a model's embedded label) is missing, unreadable, not JSON, or not a valid label."""

    exit_code = 40


class UnsignedLabelError(EekiError):
    """``verify`` was given a label that carries no signature."""

    exit_code = 41


class SignatureInvalidError(EekiError):
    """The signature does not match the label's content: the label was changed after signing."""

    exit_code = 42


class UntrustedKeyError(EekiError):
    """The label is signed with another key than the one given with ``--public-key``."""

    exit_code = 43


class ModelMismatchError(EekiError):
    """The model's sha256 is not the one the label names (another or a changed model)."""

    exit_code = 44


class DataMismatchError(EekiError):
    """The rule set, catalogue or device data the label names is unknown here or differs from the installed file."""

    exit_code = 45


class KeyFileError(EekiError):
    """A signing or public key file is missing, unreadable, not an Ed25519 key, or would be overwritten."""

    exit_code = 46


class MeasurementMismatchError(EekiError):
    """``verify --record/--trace``: the record or trace is not the one the label names (sha256), or the
    energy recomputed from them differs from the label's."""

    exit_code = 47


# Measured energy: meters, measurement records, traces (README, "Exit codes" 50-53).


class MeterUnavailableError(EekiError):
    """Nothing can be measured with the chosen meter on this machine (RAPL unreadable or absent, no NVML,
    no trace); ``--allow-estimate`` falls back to the estimate instead."""

    exit_code = 50
    label = "cannot measure"


class MeasurementRecordError(EekiError):
    """A measurement record (``measure --out``) or meter trace is unreadable, invalid, inconsistent, or
    belongs to another model or input shape."""

    exit_code = 51


class MeasurementError(EekiError):
    """A measurement ran but cannot give a figure (a meter failed mid-run, or a power meter or trace
    holds fewer samples per scenario run than the rule set asks for)."""

    exit_code = 52


class UnresolvedMeasurementError(EekiError):
    """The measured label was written but not graded: the net energy's interval includes zero or is
    wider than the rule set allows (``measurement`` section), so the meter does not resolve the model."""

    exit_code = 53
    label = "not resolved"


class BatchFailed(EekiError):
    """``batch`` ran to its end but at least one model failed (each one's code is in results.csv)."""

    exit_code = 4
    label = "batch"


class Interrupted(EekiError):
    """Ctrl-C or SIGTERM; ``batch`` keeps what finished, and a rerun continues."""

    exit_code = 130
    label = "interrupted"


class InternalError(EekiError):
    """A bug in eeki-label: reported in one line; set EEKI_DEBUG=1 to see the traceback."""

    exit_code = 70
    label = "internal error"


def all_error_classes() -> list[type[EekiError]]:
    """Every concrete error class, for the documentation test."""
    out: list[type[EekiError]] = []
    stack = [EekiError]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return sorted(out, key=lambda c: (c.exit_code, c.__name__))
