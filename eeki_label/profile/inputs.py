"""Representative inputs: what the runtime profile, the probes and the fidelity check feed the model.

Generated inputs follow the input's role, read from the graph (no task-specific code):

* integer inputs that index an embedding table (``Gather`` on a stored ``[V, D]`` tensor, possibly through
  ``Cast``/``Unsqueeze``/``Reshape``) get token ids inside the vocabulary ``[0, V)``;
* integer inputs named like a mask get ones, position ids ``0..n-1``, token types zeros;
* scalar integer inputs tested for equality with a stored constant (``Equal``, as Silero VAD does with its
  sample rate ``sr``) get the first such constant, so the branch a real caller takes runs;
* float inputs of rank <= 3 whose last axis is long (>= 1,600 samples) and whose name says audio get a
  band-limited signal (a sum of sines plus noise at speech level), others a standard normal;
* booleans are true, every other integer 1.

``--inputs FILE.npz`` (strict npz: plain arrays, no pickles, the same limits as ``--calibration-data``)
replaces the generated values: its arrays must be keyed by input name and have the assessed shapes.
"""

from __future__ import annotations

import re

import numpy as np
from onnx import ModelProto, TensorProto, numpy_helper

from eeki_label.errors import UsageError
from eeki_label.profile._ortchild import generate_input as generate  # noqa: F401  (one generator, child and parent)

_PASS_THROUGH = {"Cast", "Unsqueeze", "Reshape", "Squeeze", "Flatten", "Identity"}
_COMPARE = {"Equal"}  # a threshold (Greater, Less...) names no value a caller passes; an equality does
_AUDIO_NAME = re.compile(r"(audio|wav|pcm|speech|signal|input_values|waveform|samples)", re.I)
_INTS = (TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8,
         TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64)
_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


def _stored_shapes_and_scalars(model: ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, float]]:
    """Shapes of stored tensors (initializers and Constant outputs), and the values of stored scalars."""
    shapes: dict[str, tuple[int, ...]] = {}
    scalars: dict[str, float] = {}
    g = model.graph
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    for n in g.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.t is not None:
                    shapes[n.output[0]] = tuple(a.t.dims)
                    if int(np.prod(a.t.dims or [1])) == 1 and not a.t.external_data and a.t.data_type in _INTS + _FLOATS:
                        try:
                            scalars[n.output[0]] = float(numpy_helper.to_array(a.t).reshape(-1)[0])
                        except (ValueError, TypeError):
                            pass
                elif a.name in ("value_int", "value_float"):
                    shapes[n.output[0]] = ()
                    scalars[n.output[0]] = float(a.i if a.name == "value_int" else a.f)
    for t in g.initializer:
        if int(np.prod(t.dims or [1])) == 1 and not t.external_data and t.data_type in _INTS + _FLOATS:
            try:
                scalars[t.name] = float(numpy_helper.to_array(t).reshape(-1)[0])
            except (ValueError, TypeError):
                pass
    return shapes, scalars


def fill_hints(model: ModelProto, shapes: dict[str, tuple[int, ...]]) -> dict[str, dict]:
    """How to generate each real graph input (see the module docstring); JSON-serialisable."""
    from eeki_label.profile.shapes import graph_inputs

    stored, scalars = _stored_shapes_and_scalars(model)
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))

    def reach(name: str, depth: int = 0):
        """(node, input index) pairs that consume ``name``, looking through shape-only ops."""
        for n, i in consumers.get(name, []):
            if n.op_type in _PASS_THROUGH and depth < 4 and n.output:
                yield from reach(n.output[0], depth + 1)
            else:
                yield n, i

    hints: dict[str, dict] = {}
    for vi in graph_inputs(model):
        elem = vi.type.tensor_type.elem_type
        shape = tuple(shapes.get(vi.name, ()))
        hint: dict = {"kind": "normal"} if elem in _FLOATS else {"kind": "ones"}
        if elem in _INTS:
            uses = list(reach(vi.name))
            vocab = [stored[n.input[0]][0] for n, i in uses
                     if n.op_type == "Gather" and i == 1 and len(stored.get(n.input[0], ())) == 2]
            compared = [scalars[other] for n, i in uses if n.op_type in _COMPARE
                        for other in n.input if other != vi.name and other in scalars]
            lname = vi.name.lower()
            if vocab:
                hint = {"kind": "ids", "high": int(min(vocab))}
            elif "mask" in lname:
                hint = {"kind": "ones"}
            elif "position" in lname:
                hint = {"kind": "positions"}
            elif "token_type" in lname or "segment" in lname:
                hint = {"kind": "zeros"}
            elif compared and int(np.prod(shape or (1,))) == 1:
                hint = {"kind": "const", "value": int(compared[0])}
        elif elem in _FLOATS and 1 <= len(shape) <= 3 and shape and shape[-1] >= 1600 and _AUDIO_NAME.search(vi.name):
            hint = {"kind": "audio"}
        hints[vi.name] = hint
    return hints


def check_given_inputs(arrays: dict, model: ModelProto, shapes: dict[str, tuple[int, ...]], name: str) -> dict:
    """``--inputs``: every real input present, with the assessed shape and a castable dtype."""
    from onnx import helper

    from eeki_label.profile.shapes import graph_inputs

    out = {}
    for vi in graph_inputs(model):
        if vi.name not in arrays:
            raise UsageError(f"--inputs {name}: no array for input {vi.name!r} (it has: {', '.join(sorted(arrays)) or 'none'})")
        a = arrays[vi.name]
        want = tuple(shapes[vi.name])
        if tuple(a.shape) != want:
            raise UsageError(f"--inputs {name}: array {vi.name!r} has shape {'x'.join(map(str, a.shape)) or 'scalar'}, "
                             f"the model is assessed at {'x'.join(map(str, want)) or 'scalar'}")
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if a.dtype.kind not in "biuf" or (a.dtype.kind == "f" and np.dtype(dtype).kind in "biu"):
            raise UsageError(f"--inputs {name}: array {vi.name!r} is {a.dtype}, the model expects {np.dtype(dtype)}")
        out[vi.name] = a.astype(dtype)
    return out
