"""Concrete input shapes for a model whose inputs may have symbolic or unknown dimensions.

Rule (documented in README, "Input shapes"): a dimension given by ``--input-shape NAME=1x3x224x224``
wins; otherwise a known dimension is kept; a dynamic dimension the task's evaluation input fixes takes
that size (eeki_label/tasks.py); an unknown *leading* dimension of an input of rank >= 2 is
taken as the batch dimension and set to 1, and so is a symbolic dimension elsewhere that has the same name as
such a leading dimension; any other unknown dimension is an error that names the
input and the dimension.
"""

from __future__ import annotations

import re

from onnx import ModelProto, TensorProto, ValueInfoProto

from eeki_label.errors import ShapeError, UnsupportedOperatorError, UsageError

Shape = tuple[int, ...]

_SHAPE_RE = re.compile(r"^\s*([^=]+?)\s*=\s*(\d+(?:\s*[xX,]\s*\d+)*)\s*$")


def parse_shape_option(text: str) -> tuple[str, Shape]:
    """Parse ``NAME=1x3x224x224`` (``x`` or ``,`` separated) into ``(name, shape)``."""
    m = _SHAPE_RE.match(text)
    if not m:
        raise UsageError(f"--input-shape {text!r}: expected NAME=D1xD2x... with non-negative integers, e.g. x=1x3x224x224")
    dims = tuple(int(d) for d in re.split(r"\s*[xX,]\s*", m.group(2)))
    if any(d < 0 for d in dims):  # the pattern admits none; 0 is an empty dimension (an empty KV cache)
        raise UsageError(f"--input-shape {text!r}: dimensions must not be negative")
    return m.group(1), dims


def parse_shape_options(options: "list[str] | None") -> dict[str, Shape]:
    out: dict[str, Shape] = {}
    for text in options or []:
        name, dims = parse_shape_option(text)
        if name in out:
            raise UsageError(f"--input-shape given twice for input {name!r}")
        out[name] = dims
    return out


def graph_inputs(model: ModelProto) -> list[ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (IR < 4 lists initializers as inputs)."""
    init_names = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init_names]


#: Element types an input may not have: inputs cannot be generated for them (numpy has no such types)
#: and onnxruntime's CPU provider runs few operators on them.
UNSUPPORTED_INPUT_TYPES = frozenset(
    getattr(TensorProto, name) for name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
                                            "FLOAT8E8M0", "UINT4", "INT4", "FLOAT4E2M1", "UINT2", "INT2")
    if hasattr(TensorProto, name))


def input_dtype(vi: ValueInfoProto) -> int:
    if not vi.type.HasField("tensor_type"):
        raise ShapeError(f"input {vi.name!r} is not a tensor (sequence/map inputs are not supported)")
    elem = vi.type.tensor_type.elem_type
    if elem in UNSUPPORTED_INPUT_TYPES:
        raise UnsupportedOperatorError(
            f"input {vi.name!r} has element type {dtype_name(elem)}: inputs of float8, float4, int4 or uint4 types are "
            "not supported (no inputs can be generated for them); give the model a float or integer input")
    return elem


class _Declared:
    """A dimension the model declares as negative."""

    def __init__(self, value: int) -> None:
        self.value = int(value)


def _declared_dims(vi: ValueInfoProto) -> "list[int | str | None]":
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return []
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))  # 0: an empty dimension (an empty KV cache), legal where the ops allow it
        elif d.HasField("dim_value"):
            dims.append(_Declared(d.dim_value))  # negative: not a usable size
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def resolve_input_shapes(model: ModelProto, overrides: "dict[str, Shape] | None" = None,
                         defaults: "dict[str, dict[int, int]] | None" = None) -> dict[str, Shape]:
    """Concrete shapes for every real graph input (see the module docstring for the rule).
    ``defaults`` (input -> {axis: size}, the task's evaluation input) fill dynamic dimensions before the
    batch rule."""
    overrides = dict(overrides or {})
    defaults = defaults or {}
    inputs = graph_inputs(model)
    known = {vi.name for vi in inputs}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(
            f"--input-shape names {', '.join(map(repr, unknown))}, but the model's inputs are "
            f"{', '.join(map(repr, sorted(known))) or 'none'}"
        )
    # a symbolic dimension named like some input's leading (batch) dimension is that batch, wherever it is
    batch_params = {d for vi in inputs for d in _declared_dims(vi)[:1]
                    if isinstance(d, str) and d and len(_declared_dims(vi)) >= 2}
    shapes: dict[str, Shape] = {}
    for vi in inputs:
        input_dtype(vi)
        declared = _declared_dims(vi)
        if not vi.type.tensor_type.HasField("shape") and vi.name not in overrides:
            raise ShapeError(f"input {vi.name!r} declares no shape; give one with --input-shape {vi.name}=...")
        if vi.name in overrides:
            given = overrides[vi.name]
            if declared and len(given) != len(declared):
                raise ShapeError(
                    f"--input-shape {vi.name}: rank {len(given)} given, the model declares rank {len(declared)}"
                )
            for i, (g, d) in enumerate(zip(given, declared)):
                if isinstance(d, int) and d != g:
                    raise ShapeError(
                        f"--input-shape {vi.name}: dimension {i} is {g}, but the model fixes it to {d}"
                    )
            shapes[vi.name] = tuple(given)
            continue
        dims: list[int] = []
        for i, d in enumerate(declared):
            if isinstance(d, int):
                dims.append(d)
            elif i in defaults.get(vi.name, {}):
                dims.append(defaults[vi.name][i])
            elif i == 0 and len(declared) >= 2:
                dims.append(1)  # batch-like leading dimension
            elif isinstance(d, str) and d in batch_params:
                dims.append(1)  # the batch dimension named elsewhere as a leading dimension
            else:
                label = (f"declared as {d.value}, not a usable size" if isinstance(d, _Declared)
                         else f"{d!r}" if d else "unknown")
                raise ShapeError(
                    f"input {vi.name!r}: dimension {i} is {label}; give it with "
                    f"--input-shape {vi.name}={'x'.join(str(x) if isinstance(x, int) else ('1' if j == 0 else 'N') for j, x in enumerate(declared))}"
                )
        shapes[vi.name] = tuple(dims)
    return shapes


def dtype_name(elem_type: int) -> str:
    """``float``, ``int64``...; ``undefined_<n>`` for a number this onnx does not define (a model may
    declare any; the checker does not look at every value's type)."""
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"undefined_{int(elem_type)}"
