"""One exception tree for everything a user can cause.

Every error carries the process exit code the CLI returns for it and a one-line diagnosis. Stages
raise these (with ``from`` the underlying exception); ``cli.py`` catches them in one place and
prints ``error: <diagnosis>`` on stderr. The codes are documented in README.md ("Exit codes") and
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
        return f"{self.label}: {self}"


class UsageError(EekiError):
    """An option value that cannot be used (bad --input-shape syntax, unknown --fail-below class)."""

    exit_code = 2
    label = "usage error"


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
