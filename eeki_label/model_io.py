"""Safe loading of an untrusted ONNX file.

What this module guarantees before any other stage sees a model:

* the file is a regular file under the size limit, read once; its sha256 is of exactly those bytes;
* it parses as an ONNX ModelProto with a graph that has nodes, and passes ``onnx.checker``;
* every operator's domain is one onnxruntime knows (or a function defined in the model);
* every stored tensor (initializers, ``Constant`` nodes, subgraphs of If/Loop/Scan, functions)
  declares a sane shape, and the declared total stays under the tensor-bytes limit *before*
  anything is allocated;
* external data is read only from inside the model's own folder: absolute locations, ``..``
  components and symbolic links that leave the folder are refused, and so is data that is missing
  or shorter than declared. External data stays on disk; :func:`tensor_array` reads one tensor.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from eeki_label.errors import (
    ExternalDataError,
    ModelFileError,
    ModelFormatError,
    ModelInvalidError,
    ModelTooLargeError,
    UnsupportedOperatorError,
)

#: Default limit on the model file itself. Protobuf cannot serialise a message over 2 GiB.
DEFAULT_MAX_FILE_BYTES = 2 * 1024**3
#: Default limit on the sum of all stored tensors' declared sizes (initializers plus external data).
DEFAULT_MAX_TENSOR_BYTES = 8 * 1024**3

#: Operator domains onnxruntime's CPU build implements. Anything else must be a model-local function.
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"})

_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class LoadLimits:
    """Resource limits applied while loading. Bytes throughout."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES


@dataclass(frozen=True)
class LoadedModel:
    """A checked model. ``proto`` is shared: stages must treat it as read-only (copy to change)."""

    path: Path
    """The model file as given (absolute)."""
    sha256: str
    """Hex sha256 of the model file's bytes."""
    file_bytes: int
    """Size of the model file in bytes (external data files not included)."""
    external_bytes: int
    """Bytes read from external data files inside the model's folder."""
    proto: ModelProto

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def folder(self) -> Path:
        return self.path.parent


@dataclass(frozen=True)
class TensorRef:
    """A tensor stored in the model, wherever it sits."""

    key: str
    """Unique, stable key: ``<graph path>/<kind>:<name>``; the main graph's path is empty."""
    kind: str
    """``initializer``, ``constant`` (a Constant node's ``value``) or ``sparse`` (sparse initializer values)."""
    graph_path: str
    """``""`` for the main graph, else ``node/attr`` steps separated by ``/`` (subgraphs, functions)."""
    tensor: TensorProto
    """The live proto inside the model; replace its contents with ``CopyFrom`` to write back."""


DTYPE_BYTES = {
    TensorProto.FLOAT: 4, TensorProto.UINT8: 1, TensorProto.INT8: 1, TensorProto.UINT16: 2,
    TensorProto.INT16: 2, TensorProto.INT32: 4, TensorProto.INT64: 8, TensorProto.BOOL: 1,
    TensorProto.FLOAT16: 2, TensorProto.DOUBLE: 8, TensorProto.UINT32: 4, TensorProto.UINT64: 8,
    TensorProto.COMPLEX64: 8, TensorProto.COMPLEX128: 16, TensorProto.BFLOAT16: 2,
    TensorProto.FLOAT8E4M3FN: 1, TensorProto.FLOAT8E4M3FNUZ: 1, TensorProto.FLOAT8E5M2: 1,
    TensorProto.FLOAT8E5M2FNUZ: 1,
}
FLOAT_DTYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16})


def dtype_bytes(data_type: int) -> int:
    """Bytes per element; 1 for sub-byte and unknown types (counted conservatively as 1 byte)."""
    return DTYPE_BYTES.get(data_type, 1)


def numel(dims: "list[int] | tuple[int, ...]") -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def tensor_nbytes(tensor: TensorProto) -> int:
    """Declared size of a stored tensor in bytes (from dims and dtype, not from the payload)."""
    return numel(tensor.dims) * dtype_bytes(tensor.data_type)


# --------------------------------------------------------------------------------------------
# Walking every graph and every stored tensor


def iter_graphs(model: ModelProto) -> Iterator[tuple[str, GraphProto]]:
    """The main graph, every subgraph (If/Loop/Scan bodies, at any depth) and function bodies.

    Function bodies are not GraphProtos; their Constant nodes are reached through
    :func:`iter_stored_tensors`. Iterative (no recursion limit on deeply nested subgraphs).
    """
    stack: list[tuple[str, GraphProto]] = [("", model.graph)]
    while stack:
        path, graph = stack.pop()
        yield path, graph
        sub = list(_subgraphs(path, graph.node))
        stack.extend(reversed(sub))
    for fn in model.functions:
        stack = list(_subgraphs(f"fn:{fn.domain}.{fn.name}", fn.node))
        while stack:
            path, graph = stack.pop()
            yield path, graph
            stack.extend(reversed(list(_subgraphs(path, graph.node))))


def _subgraphs(path: str, nodes) -> Iterator[tuple[str, GraphProto]]:
    for i, node in enumerate(nodes):
        node_id = node.name or f"#{i}"
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield _join(path, f"{node_id}.{attr.name}"), attr.g
            elif attr.type == AttributeProto.GRAPHS:
                for j, g in enumerate(attr.graphs):
                    yield _join(path, f"{node_id}.{attr.name}[{j}]"), g


def _join(path: str, step: str) -> str:
    return f"{path}/{step}" if path else step


def _constant_tensors(path: str, nodes) -> Iterator[TensorRef]:
    for i, node in enumerate(nodes):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            out = node.output[0] if node.output else (node.name or f"#{i}")
            for attr in node.attribute:
                if attr.name == "value" and attr.type == AttributeProto.TENSOR:
                    yield TensorRef(_join(path, f"constant:{out}"), "constant", path, attr.t)
                elif attr.name == "sparse_value" and attr.type == AttributeProto.SPARSE_TENSOR:
                    yield TensorRef(_join(path, f"constant:{out}"), "sparse", path, attr.sparse_tensor.values)


def iter_stored_tensors(model: ModelProto) -> Iterator[TensorRef]:
    """Every tensor the model stores: initializers, sparse initializers and Constant nodes, in
    the main graph, in every subgraph and in function bodies. Keys are unique."""
    seen: set[str] = set()
    for path, graph in iter_graphs(model):
        refs: list[TensorRef] = [
            TensorRef(_join(path, f"initializer:{t.name}"), "initializer", path, t) for t in graph.initializer
        ]
        refs += [
            TensorRef(_join(path, f"sparse:{s.values.name}"), "sparse", path, s.values)
            for s in graph.sparse_initializer
        ]
        refs += list(_constant_tensors(path, graph.node))
        for ref in refs:
            key = ref.key
            n = 1
            while key in seen:  # duplicate names (invalid, but do not lose a tensor while counting)
                n += 1
                key = f"{ref.key}~{n}"
            seen.add(key)
            yield ref if key == ref.key else TensorRef(key, ref.kind, ref.graph_path, ref.tensor)
    for fn in model.functions:
        yield from _constant_tensors(f"fn:{fn.domain}.{fn.name}", fn.node)


# --------------------------------------------------------------------------------------------
# Loading


def load_model(path: "str | os.PathLike[str]", limits: LoadLimits = LoadLimits()) -> LoadedModel:
    """Read, parse and check an ONNX file; raise an :class:`EekiError` subclass on bad input."""
    path = Path(os.path.abspath(path))
    data = _read_file(path, limits)
    sha256 = hashlib.sha256(data).hexdigest()
    model = _parse(data, path)
    del data
    _check_structure(model, path)
    _check_declared_sizes(model, limits)
    external_bytes = _validate_external_data(model, path.parent, limits)
    _check_domains(model)
    _run_checker(model)
    return LoadedModel(path=path, sha256=sha256, file_bytes=path.stat().st_size,
                       external_bytes=external_bytes, proto=model)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _read_file(path: Path, limits: LoadLimits) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise ModelFileError(f"{path.name}: no such file") from e
    except OSError as e:
        raise ModelFileError(f"{path.name}: cannot access ({e.strerror})") from e
    if not path.is_file():
        raise ModelFileError(f"{path.name}: not a regular file")
    if st.st_size == 0:
        raise ModelFormatError(f"{path.name}: empty file, not an ONNX model")
    if st.st_size > limits.max_file_bytes:
        raise ModelTooLargeError(
            f"{path.name}: file is {st.st_size} bytes, over the limit of {limits.max_file_bytes} bytes "
            "(raise it with --max-file-bytes)"
        )
    try:
        with open(path, "rb") as f:
            return f.read(limits.max_file_bytes + 1)
    except OSError as e:
        raise ModelFileError(f"{path.name}: cannot read ({e.strerror})") from e


def _parse(data: bytes, path: Path) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and upb's variants
        raise ModelFormatError(f"{path.name}: not an ONNX model (protobuf parse failed: {e})") from e
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelFormatError(f"{path.name}: not an ONNX model (no IR version or no graph; truncated?)")
    return model


def _check_structure(model: ModelProto, path: Path) -> None:
    if len(model.graph.node) == 0:
        raise ModelInvalidError(f"{path.name}: the graph has no nodes")
    if len(model.graph.output) == 0:
        raise ModelInvalidError(f"{path.name}: the graph has no outputs")


def _check_declared_sizes(model: ModelProto, limits: LoadLimits) -> None:
    total = 0
    for ref in iter_stored_tensors(model):
        t = ref.tensor
        if any(d < 0 for d in t.dims):
            raise ModelInvalidError(f"tensor {t.name!r} declares a negative dimension {list(t.dims)}")
        n = tensor_nbytes(t)
        if n > limits.max_tensor_bytes:
            raise ModelTooLargeError(
                f"tensor {t.name!r} declares {list(t.dims)} = {n} bytes, over the limit of "
                f"{limits.max_tensor_bytes} bytes (raise it with --max-tensor-bytes)"
            )
        total += n
        if total > limits.max_tensor_bytes:
            raise ModelTooLargeError(
                f"stored tensors declare more than {limits.max_tensor_bytes} bytes in total "
                "(raise the limit with --max-tensor-bytes)"
            )
        if t.data_location != TensorProto.EXTERNAL and t.HasField("raw_data"):
            if len(t.raw_data) != n and t.data_type in DTYPE_BYTES:
                raise ModelInvalidError(
                    f"tensor {t.name!r} declares {list(t.dims)} ({n} bytes) but stores {len(t.raw_data)} bytes"
                )


def _external_info(tensor: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def _safe_external_path(folder: Path, location: str, tensor_name: str) -> Path:
    if not location:
        raise ExternalDataError(f"tensor {tensor_name!r}: external data without a location")
    if "\x00" in location:
        raise ExternalDataError(f"tensor {tensor_name!r}: external data location contains a NUL byte")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise ExternalDataError(f"tensor {tensor_name!r}: absolute external data location refused: {location!r}")
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise ExternalDataError(f"tensor {tensor_name!r}: external data location with '..' refused: {location!r}")
    real_folder = os.path.realpath(folder)
    candidate = os.path.realpath(os.path.join(real_folder, location))
    if os.path.commonpath([real_folder, candidate]) != real_folder:
        raise ExternalDataError(
            f"tensor {tensor_name!r}: external data {location!r} resolves outside the model's folder (symbolic link?)"
        )
    return Path(candidate)


def _validate_external_data(model: ModelProto, folder: Path, limits: LoadLimits) -> int:
    """Confine every external-data reference to ``folder`` and check the bytes are there.

    Nothing is read here: readers go through :func:`tensor_array`, which re-applies the same
    confinement. Returns the total external bytes referenced.
    """
    total = 0
    for ref in iter_stored_tensors(model):
        t = ref.tensor
        if t.data_location != TensorProto.EXTERNAL:
            continue
        target, offset, length = _external_span(folder, t)
        size = target.stat().st_size
        if offset + length > size:
            raise ExternalDataError(
                f"tensor {t.name!r}: external data {target.name!r} is {size} bytes, "
                f"shorter than offset {offset} + length {length}"
            )
        total += length
        if total > limits.max_tensor_bytes:
            raise ModelTooLargeError(f"external data exceeds {limits.max_tensor_bytes} bytes")
    return total


def _external_span(folder: Path, t: TensorProto) -> tuple[Path, int, int]:
    info = _external_info(t)
    target = _safe_external_path(folder, info.get("location", ""), t.name)
    try:
        offset = int(info.get("offset", "0"))
        declared = tensor_nbytes(t)
        length = int(info["length"]) if "length" in info else declared
    except ValueError as e:
        raise ExternalDataError(f"tensor {t.name!r}: external data offset/length is not an integer") from e
    if offset < 0 or length < 0:
        raise ExternalDataError(f"tensor {t.name!r}: negative external data offset or length")
    if length != declared and t.data_type in DTYPE_BYTES:
        raise ExternalDataError(
            f"tensor {t.name!r}: external data length {length} differs from the declared {declared} bytes"
        )
    if not target.is_file():
        raise ExternalDataError(f"tensor {t.name!r}: external data file {info.get('location')!r} is missing")
    return target, offset, length


def tensor_array(loaded: "LoadedModel", tensor: TensorProto) -> np.ndarray:
    """The values of a stored tensor as a numpy array, reading external data (confined to the
    model's folder) only for this tensor, so memory stays proportional to one tensor."""
    if tensor.data_location == TensorProto.EXTERNAL:
        target, offset, length = _external_span(loaded.folder, tensor)
        inline = TensorProto()
        inline.CopyFrom(tensor)
        del inline.external_data[:]
        inline.data_location = TensorProto.DEFAULT
        with open(target, "rb") as f:
            f.seek(offset)
            inline.raw_data = f.read(length)
        tensor = inline
    try:
        return numpy_helper.to_array(tensor)
    except Exception as e:
        raise ModelInvalidError(f"tensor {tensor.name!r}: cannot decode its values ({e})") from e


def materialize(loaded: "LoadedModel") -> ModelProto:
    """A deep copy of the model with every external tensor read inline (for writing a changed copy)."""
    copy = ModelProto()
    copy.CopyFrom(loaded.proto)
    for ref in iter_stored_tensors(copy):
        if ref.tensor.data_location == TensorProto.EXTERNAL:
            arr = tensor_array(loaded, ref.tensor)
            name = ref.tensor.name
            ref.tensor.CopyFrom(numpy_helper.from_array(arr, name))
    return copy


def _check_domains(model: ModelProto) -> None:
    local_functions = {(f.domain, f.name) for f in model.functions}
    for path, graph in iter_graphs(model):
        for node in graph.node:
            if node.domain not in KNOWN_DOMAINS and (node.domain, node.op_type) not in local_functions:
                where = f" (in subgraph {path})" if path else ""
                raise UnsupportedOperatorError(
                    f"operator {node.op_type!r} of custom domain {node.domain!r}{where} is not supported by "
                    "onnxruntime and not defined as a function in the model"
                )


def _run_checker(model: ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "validation failed"
        raise ModelInvalidError(f"ONNX checker: {first}") from e
    except ValueError as e:  # e.g. a message over protobuf's 2 GiB limit
        raise ModelTooLargeError(f"ONNX checker could not serialise the model: {e}") from e
