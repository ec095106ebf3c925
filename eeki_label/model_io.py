"""Safe loading of an untrusted ONNX file.

What this module guarantees before any other stage sees a model:

* the file is a regular file under the size limit; its sha256 is of the whole file (streamed), and a
  file that changes while it is loaded is refused;
* it parses as an ONNX ModelProto with a graph that has nodes, and passes ``onnx.checker``;
* every operator's domain is one onnxruntime knows (or a function defined in the model);
* every stored tensor (initializers, ``Constant`` nodes, subgraphs of If/Loop/Scan, functions)
  declares a sane shape, and the declared total stays under the tensor-bytes limit *before*
  anything is allocated;
* external data is read only from inside the model's own folder: absolute locations, ``..``
  components and symbolic links that leave the folder are refused, and so is data that is missing
  or shorter than declared. External data stays on disk; :func:`tensor_array` reads one tensor.

Memory stays near the size of the graph, not of the weights: a wire-format scanner
(:func:`_scan_model`) walks the protobuf without reading large tensor payloads and rewrites every
tensor whose payload is at least :data:`SELF_REFERENCE_MIN_BYTES` as an external-data tensor that
points into the model file itself (``location`` = the file's own name, ``offset`` = where the
payload lies in it). Only the small remainder is parsed by protobuf and checked. Such
self-references are ordinary external data to every reader here (confined, bounds-checked, read
one tensor at a time by :func:`tensor_array`); :func:`materialize` inlines them again, and
onnxruntime sessions are opened on the original file. So stages must read tensor values only
through :func:`tensor_array` (never ``raw_data`` or ``numpy_helper.to_array`` on ``proto``), and
build a self-contained model (for a session from bytes) only with :func:`materialize`, which
covers every tensor of :func:`iter_all_tensors`, not just the stored ones.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto

from eeki_label.errors import (
    EekiError,
    ExternalDataError,
    ModelFileError,
    ModelFormatError,
    ModelInvalidError,
    ModelTooLargeError,
    UnsupportedOperatorError,
)

from eeki_label.limits import (  # noqa: F401  (re-exported: the limits belong to loading)
    DEFAULT_MAX_ACTIVATION_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_NODES,
    DEFAULT_MAX_TENSOR_BYTES,
)

#: Operator domains onnxruntime's CPU build implements. Anything else must be a model-local function.
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"})

_HASH_CHUNK_BYTES = 1 << 20

#: Tensor payloads of at least this many bytes are left in the file (self-referencing external data).
SELF_REFERENCE_MIN_BYTES = 1024
#: Deepest nesting of subgraphs (If/Loop/Scan bodies inside bodies) the loader accepts.
MAX_SUBGRAPH_DEPTH = 64


@dataclass(frozen=True)
class LoadLimits:
    """Resource limits applied while loading. Bytes throughout."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    max_nodes: int = DEFAULT_MAX_NODES
    """Nodes once local functions are expanded, subgraph bodies included (see :func:`expanded_node_count`)."""
    max_activation_bytes: int = DEFAULT_MAX_ACTIVATION_BYTES
    """Not checked while loading: the stages that compute or run (static profile, runtime profile)
    refuse larger activations and cap onnxruntime's working memory at this."""


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
    """Bytes of external data files inside the model's folder (the model file's own tensors excluded)."""
    proto: ModelProto
    """The model's structure. Large tensors are external data, most of them pointing into the model
    file itself: read values with :func:`tensor_array`, a self-contained copy with :func:`materialize`."""
    file_identity: "tuple[int, ...] | None" = field(default=None, repr=False, compare=False)
    """(device, inode, size, mtime_ns) of the model file when loaded; readers of its self-referencing
    tensors refuse a file that has changed since."""

    @property
    def name(self) -> str:
        """The file name for messages and labels, always valid UTF-8 (bytes of a file name that are
        not are shown as U+FFFD; the file itself is opened by ``path``)."""
        return os.fsencode(self.path.name).decode("utf-8", "replace")

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
    """Read, parse and check an ONNX file; raise an :class:`EekiError` subclass on bad input.

    Peak memory is about the size of the graph structure plus a 1 MB hashing buffer: large tensor
    payloads are never read here (see the module docstring)."""
    path = Path(os.path.abspath(path))
    size = _check_file(path, limits)
    try:
        f = open(path, "rb", buffering=0)
    except OSError as e:
        raise ModelFileError(f"{path.name}: cannot read ({e.strerror})") from e
    with f:
        st = os.fstat(f.fileno())
        identity = _identity(st)
        if not stat.S_ISREG(st.st_mode) or identity[2] != size:
            raise ModelFileError(f"{path.name}: the file changed while it was being loaded")
        hasher = _BackgroundHash(path, identity)
        try:
            location = path.name if _self_reference_ok(path) else None
            content = _scan_model(WindowReader(f, size, path.name), path.name, location)
            model = _parse(content, path)
            del content
        except BaseException:
            hasher.cancel()
            raise
        sha256 = hasher.result()
        if _identity(os.fstat(f.fileno())) != identity or _identity(path.stat()) != identity:
            raise ModelFileError(f"{path.name}: the file changed while it was being loaded")
    try:
        _check_structure(model, path)
        _check_declared_sizes(model, limits)
        slots = _tensor_slots(model)
        external_bytes = _validate_external_data(slots, path, limits)
        _check_domains(model)
    except UnicodeDecodeError as e:  # proto2 strings are not UTF-8-checked when parsed
        raise ModelFormatError(f"{path.name}: not an ONNX model (a name or string is not valid UTF-8)") from e
    _run_checker(model, slots)
    _check_node_count(model, limits, path)
    _check_einsum_equations(model)
    return LoadedModel(path=path, sha256=sha256, file_bytes=size, external_bytes=external_bytes,
                       proto=model, file_identity=identity)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _check_file(path: Path, limits: LoadLimits) -> int:
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
    return st.st_size


class _BackgroundHash:
    """sha256 of the file, streamed in 1 MB chunks on a thread (hashlib and file reads release the
    GIL, so this overlaps with scanning and checking). It reads the same file (device and inode)
    that the scanner has open."""

    def __init__(self, path: Path, identity: tuple[int, ...]) -> None:
        self._path, self._identity = path, identity
        self._digest: "str | None" = None
        self._error: "str | None" = None
        self._cause: "OSError | None" = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eeki-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        h = hashlib.sha256()
        buf = bytearray(_HASH_CHUNK_BYTES)
        view = memoryview(buf)
        try:
            with open(self._path, "rb", buffering=0) as f:
                if _identity(os.fstat(f.fileno())) != self._identity:
                    self._error = "the file changed while it was being loaded"
                    return
                while not self._stop.is_set():
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(view[:n])
        except OSError as e:
            self._error, self._cause = f"cannot read ({e.strerror})", e
            return
        self._digest = h.hexdigest()

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> str:
        self._thread.join()
        if self._digest is None:
            raise ModelFileError(f"{self._path.name}: {self._error or 'cannot read (interrupted)'}") from self._cause
        return self._digest


def _self_reference_ok(path: Path) -> bool:
    """Whether the file's own name, as an external-data location, passes the same confinement as
    any other location and leads back to this file (not so for a symbolic link leaving the folder,
    or a name that is not UTF-8): only then are tensors left in the file."""
    try:
        path.name.encode("utf-8")
        target = _safe_external_path(path.parent, path.name, "")
    except (UnicodeError, ExternalDataError):
        return False
    return os.path.realpath(path) == str(target)


def _parse(data: bytes, path: Path) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # google.protobuf.message.DecodeError and upb's variants
        if "MaxDepth" in str(e):
            raise ModelFormatError(f"{path.name}: not an ONNX model (messages nested too deeply: subgraphs inside "
                                   "subgraphs beyond the protobuf parser's depth limit)") from e
        raise ModelFormatError(f"{path.name}: not an ONNX model (protobuf parse failed: {e})") from e
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelFormatError(f"{path.name}: not an ONNX model (no IR version or no graph; truncated?)")
    problem = _string_problem(model)
    if problem is not None:
        where, length = problem
        if length is None:
            raise ModelFormatError(f"{path.name}: not an ONNX model (a {where} is not valid UTF-8)")
        raise ModelInvalidError(f"{path.name}: a {where} is {length} characters long; names are limited to "
                                f"{MAX_NAME_CHARS} characters")
    return model


#: Longest name (of a graph, node, value, tensor, operator, domain, attribute, producer...) accepted.
#: Real exporters write at most a few hundred characters; a name of megabytes only serves to stall
#: whatever lays it out (the PDF certificate). Doc strings and metadata values are not limited here.
MAX_NAME_CHARS = 4096
_UNLIMITED_STRINGS = frozenset({"doc_string", "value"})  # doc strings; StringStringEntryProto.value


def _string_problem(message) -> "tuple[str, int | None] | None":
    """The first string field anywhere in ``message`` that is not valid UTF-8 ``(field, None)``, or
    a name longer than :data:`MAX_NAME_CHARS` ``(field, length)``; None when all are fine. proto2
    parsers do not check UTF-8, and upb hands such a field back as bytes, which later stages (and
    JSON) cannot take. Iterative (no recursion limit)."""
    from google.protobuf.descriptor import FieldDescriptor

    string, msg = FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE
    stack = [message]
    while stack:
        for fd, value in stack.pop().ListFields():
            if fd.type == string:
                for v in (value if fd.is_repeated else (value,)):
                    if not isinstance(v, str):
                        return fd.full_name.removeprefix("onnx."), None
                    if len(v) > MAX_NAME_CHARS and fd.name not in _UNLIMITED_STRINGS:
                        return fd.full_name.removeprefix("onnx."), len(v)
            elif fd.type == msg:
                if fd.is_repeated:
                    stack.extend(value)
                else:
                    stack.append(value)
    return None


# --------------------------------------------------------------------------------------------
# The wire-format scanner: protobuf without the large payloads
#
# A protobuf message is a sequence of fields, each a varint tag (field number << 3 | wire type)
# followed by a varint (type 0), 8 bytes (1), a varint length and that many bytes (2) or 4 bytes (5).
# The scanner descends only into the messages that can hold tensors, copies every other field's
# bytes verbatim (also any submessage shorter than the threshold, which cannot hold a large
# payload) and rewrites a large TensorProto as external data pointing at its payload's offset.

_MODEL, _GRAPH, _FUNCTION, _NODE, _ATTRIBUTE, _TENSOR = range(6)
_KIND_NAMES = ("ModelProto", "GraphProto", "FunctionProto", "NodeProto", "AttributeProto", "TensorProto")


def _field_no(message, name: str) -> int:
    return message.DESCRIPTOR.fields_by_name[name].number


#: Submessages that can hold tensors, per message kind: field number -> kind.
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {_field_no(ModelProto, "graph"): _GRAPH, _field_no(ModelProto, "functions"): _FUNCTION},
    _GRAPH: {_field_no(GraphProto, "node"): _NODE, _field_no(GraphProto, "initializer"): _TENSOR},
    _FUNCTION: {_field_no(onnx.FunctionProto, "node"): _NODE},
    _NODE: {_field_no(NodeProto, "attribute"): _ATTRIBUTE},
    _ATTRIBUTE: {_field_no(AttributeProto, "t"): _TENSOR, _field_no(AttributeProto, "tensors"): _TENSOR,
                 _field_no(AttributeProto, "g"): _GRAPH, _field_no(AttributeProto, "graphs"): _GRAPH},
}
# Sparse tensors stay inline: the checker compares their values' dims with their indices, so a
# stand-in for checking would need the full size (and sparse initializers are rare).
#: Singular tensor-holding fields: protobuf *merges* repeated occurrences, so those are left verbatim.
_SINGULAR: dict[int, frozenset[int]] = {_ATTRIBUTE: frozenset({_field_no(AttributeProto, "t")})}
_T_DIMS = _field_no(TensorProto, "dims")
_T_DATA_TYPE = _field_no(TensorProto, "data_type")
_T_RAW = _field_no(TensorProto, "raw_data")
_T_FLOAT = _field_no(TensorProto, "float_data")
_T_DOUBLE = _field_no(TensorProto, "double_data")
_T_EXTERNAL = _field_no(TensorProto, "external_data")
_T_LOCATION = _field_no(TensorProto, "data_location")
#: TensorProto fields that may sit beside a payload that is moved out (anything else: left inline).
_T_HARMLESS = frozenset({_T_DIMS, _T_DATA_TYPE, _field_no(TensorProto, "name"),
                         _field_no(TensorProto, "doc_string"), _field_no(TensorProto, "metadata_props")})
#: Payload fields whose packed little-endian bytes are exactly raw_data's layout, by required dtype.
_PAYLOAD_DTYPE = {_T_FLOAT: TensorProto.FLOAT, _T_DOUBLE: TensorProto.DOUBLE}

_MASK64 = (1 << 64) - 1
_READ_WINDOW = 1 << 16


def _encode_varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_EXTERNAL_TAG = _encode_varint(_T_EXTERNAL << 3 | 2)
_EXTERNAL_FLAG = _encode_varint(_T_LOCATION << 3) + _encode_varint(TensorProto.EXTERNAL)


def _length_delimited(field_no: int, data: bytes) -> bytes:
    return _encode_varint(field_no << 3 | 2) + _encode_varint(len(data)) + data


def _external_entry(key: bytes, number: int) -> bytes:
    """An ``external_data`` field (StringStringEntryProto) ``key`` = the decimal ``number``."""
    value = str(number).encode()
    entry = b"\x0a" + bytes((len(key),)) + key + b"\x12" + bytes((len(value),)) + value  # both < 128 bytes
    return _EXTERNAL_TAG + _encode_varint(len(entry)) + entry


def _read_exactly(f, n: int) -> bytes:
    """``n`` bytes from an unbuffered file, fewer only at its end (one read() may return less,
    e.g. Linux caps a single read near 2 GiB)."""
    data = f.read(n)
    if data is None or len(data) >= n or not data:
        return data or b""
    parts = [data]
    got = len(data)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


class WindowReader:
    """Random access to the file through a small read window. (Not ``mmap``: a file truncated while
    mapped kills the process with SIGBUS; here it is a clean error.)"""

    def __init__(self, f, size: int, name: str) -> None:
        self._f, self.size, self._name = f, size, name
        self.base, self.buf = 0, b""

    def _fetch(self, pos: int, n: int) -> bytes:
        self._f.seek(pos)
        data = _read_exactly(self._f, n)
        if len(data) != n:
            raise ModelFileError(f"{self._name}: the file changed while it was being loaded")
        return data

    def read(self, a: int, b: int) -> bytes:
        """Bytes ``[a, b)``; the caller has checked ``0 <= a <= b <= size``."""
        base = self.base
        if a >= base and b <= base + len(self.buf):
            return self.buf[a - base:b - base]
        if b - a >= _READ_WINDOW:
            return self._fetch(a, b - a)
        self.buf, self.base = self._fetch(a, min(_READ_WINDOW, self.size - a)), a
        return self.buf[:b - a]

    def window(self, pos: int, end: int) -> tuple[bytes, int]:
        """(buffer, its file offset), covering ``[pos, min(end, pos + _FIELD_HEAD))`` at least."""
        base, buf = self.base, self.buf
        if pos < base or min(end, pos + _FIELD_HEAD) > base + len(buf):
            self.buf, self.base = self._fetch(pos, min(_READ_WINDOW, self.size - pos)), pos
        return self.buf, self.base


class _Malformed(Exception):
    def __init__(self, what: str, pos: int) -> None:
        super().__init__(what)
        self.what, self.pos = what, pos


_FIELD_HEAD = 20  # a tag and a varint: at most 10 bytes each


def _varint_at(buf: bytes, i: int, stop: int, base: int) -> tuple[int, int]:
    """(value, index after it) of the varint at ``buf[i]``, which must end before ``buf[stop]``."""
    result = shift = 0
    start = i
    limit = min(stop, i + 10)
    while i < limit:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _MASK64, i
        shift += 7
    raise _Malformed("a varint runs past the end of its message" if limit < start + 10 else "malformed varint",
                     base + start)


def _fields(r: WindowReader, start: int, end: int, kind: int) -> list[tuple[int, int, int, int, int, int]]:
    """The fields of the message ``[start, end)``: (field number, wire type, tag position, value
    position, field end, varint value or 0). Hot path: varints decoded inline, one-byte case first."""
    out = []
    append = out.append
    pos = start
    buf, base = r.window(pos, end)
    limit = base + len(buf)
    while pos < end:
        if pos + _FIELD_HEAD > limit and limit < end:
            buf, base = r.window(pos, end)
            limit = base + len(buf)
        stop = min(end, limit) - base
        i = pos - base
        tag = buf[i]
        if tag < 0x80:
            i += 1
        else:
            tag, i = _varint_at(buf, i, stop, base)
        field_no, wire = tag >> 3, tag & 7
        if field_no == 0 or field_no > 0x1FFFFFFF:
            raise _Malformed(f"invalid field number {field_no} in a {_KIND_NAMES[kind]}", pos)
        value = 0
        if wire == 2:
            length = buf[i] if i < stop else 0x80
            if length < 0x80:
                i += 1
            else:
                length, i = _varint_at(buf, i, stop, base)
            p = base + i
            q = p + length
        elif wire == 0:
            value = buf[i] if i < stop else 0x80
            if value < 0x80:
                i += 1
            else:
                value, i = _varint_at(buf, i, stop, base)
            p = q = base + i
        elif wire == 5:
            p = base + i
            q = p + 4
        elif wire == 1:
            p = base + i
            q = p + 8
        else:
            raise _Malformed(f"field {field_no} of a {_KIND_NAMES[kind]} has unsupported wire type {wire}", pos)
        if q > end:
            raise _Malformed(f"field {field_no} of a {_KIND_NAMES[kind]} runs past the end of "
                             f"{'the file' if end == r.size else 'its message'}", pos)
        append((field_no, wire, pos, p, q, value))
        pos = q
    return out


class _Scanner:
    def __init__(self, reader: WindowReader, location: "str | None") -> None:
        self.r = reader
        self.location = location
        if location is not None:
            self._location_entry = _length_delimited(
                _T_EXTERNAL, _length_delimited(1, b"location") + _length_delimited(2, location.encode()))

    def message(self, kind: int, start: int, end: int, graph_depth: int) -> "bytes | None":
        """The message ``[start, end)`` with its large tensors rewritten, or None if unchanged."""
        if kind == _TENSOR:
            return self.tensor(start, end)
        fields = _fields(self.r, start, end, kind)
        children = _CHILDREN[kind]
        singular = _SINGULAR.get(kind, frozenset())
        merged = {f for f in singular if sum(1 for fl in fields if fl[0] == f) > 1}
        out: list[bytes] = []
        run = start  # start of the bytes not yet copied
        for field_no, wire, tag_pos, pos, q, _ in fields:
            child = children.get(field_no)
            if child is None:
                continue
            if wire != 2:
                raise _Malformed(f"field {field_no} of a {_KIND_NAMES[kind]} has wire type {wire}, "
                                 f"expected an embedded {_KIND_NAMES[child]}", tag_pos)
            depth = graph_depth + (1 if kind == _ATTRIBUTE and child == _GRAPH else 0)
            if depth > MAX_SUBGRAPH_DEPTH:
                raise _Malformed(f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} levels", tag_pos)
            if q - pos < SELF_REFERENCE_MIN_BYTES or field_no in merged:
                continue
            sub = self.message(child, pos, q, depth)
            if sub is None:
                continue
            out.append(self.r.read(run, tag_pos))
            out.append(_length_delimited(field_no, sub))
            run = q
        if not out:
            return None
        out.append(self.r.read(run, end))
        return b"".join(out)

    def tensor(self, start: int, end: int) -> "bytes | None":
        fields = _fields(self.r, start, end, _TENSOR)
        if self.location is None:
            return None
        dims: list[int] = []
        data_type = TensorProto.UNDEFINED
        payload = None
        for field in fields:
            field_no, wire, _, pos, q, value = field
            if field_no == _T_DIMS and wire == 0:
                dims.append(_signed64(value))
            elif field_no == _T_DIMS and wire == 2:
                if q - pos > 256:  # a rank in the hundreds: leave such a tensor to protobuf
                    return None
                packed, i = self.r.read(pos, q), 0
                while i < len(packed):
                    v, i = _varint_at(packed, i, len(packed), pos)
                    dims.append(_signed64(v))
            elif field_no == _T_DATA_TYPE and wire == 0:
                v = value & 0xFFFFFFFF
                data_type = v - (1 << 32) if v >> 31 else v
            elif field_no in (_T_RAW, _T_FLOAT, _T_DOUBLE):
                if payload is not None or wire != 2:
                    return None
                payload = field
            elif field_no not in _T_HARMLESS or wire not in (0, 2):
                return None  # segments, other data fields, external data already, unknown fields
        if payload is None:
            return None
        field_no, _, tag_pos, pos, q, _ = payload
        length = q - pos
        if length < SELF_REFERENCE_MIN_BYTES:
            return None
        if field_no in _PAYLOAD_DTYPE:
            if data_type != _PAYLOAD_DTYPE[field_no]:
                return None
        elif data_type not in DTYPE_BYTES:
            return None
        if any(d < 0 for d in dims) or numel(dims) * DTYPE_BYTES[data_type] != length:
            return None  # a size mismatch stays inline for the declared-size check to report
        return b"".join((self.r.read(start, tag_pos), self.r.read(q, end), self._location_entry,
                         _external_entry(b"offset", pos), _external_entry(b"length", length), _EXTERNAL_FLAG))


def _scan_model(reader: WindowReader, name: str, location: "str | None") -> bytes:
    """The serialised ModelProto with every large tensor turned into a reference into the file
    (``location``; None: no references, the whole file is returned). Raises ModelFormatError on a
    malformed wire format."""
    scanner = _Scanner(reader, location)
    try:
        content = scanner.message(_MODEL, 0, reader.size, 0)
    except _Malformed as e:
        raise ModelFormatError(f"{name}: not an ONNX model (malformed protobuf at byte {e.pos}: {e.what})") from None
    except RecursionError:
        raise ModelFormatError(f"{name}: not an ONNX model (messages nested too deeply)") from None
    return content if content is not None else reader.read(0, reader.size)


def _check_structure(model: ModelProto, path: Path) -> None:
    if len(model.graph.node) == 0:
        raise ModelInvalidError(f"{path.name}: the graph has no nodes")
    if len(model.graph.output) == 0:
        raise ModelInvalidError(f"{path.name}: the graph has no outputs")


def expanded_node_count(model: ModelProto) -> int:
    """Nodes of the model once every call of a model-local function is replaced by the function's
    body, as onnxruntime and onnx shape inference do; nodes of subgraph bodies (If/Loop/Scan) count
    once. Memoised per function: a function calling another twice at each of 30 levels costs 30 steps
    here, though it expands to 2^30 nodes. Run after the ONNX checker, which refuses recursive calls and
    call chains deeper than 100; subgraphs nest at most ``MAX_SUBGRAPH_DEPTH`` deep."""
    functions = {(f.domain, f.name, f.overload): f for f in model.functions}
    memo: dict[tuple[str, str, str], "int | None"] = {}

    def count(nodes) -> int:
        total = 0
        for node in nodes:
            key = (node.domain, node.op_type, node.overload)
            fn = functions.get(key)
            if fn is None:
                total += 1
            else:
                if key not in memo:
                    memo[key] = None
                    memo[key] = count(fn.node)
                elif memo[key] is None:
                    raise ModelInvalidError(f"local function {fn.domain}.{fn.name} calls itself")
                total += memo[key]
            for a in node.attribute:
                if a.type == AttributeProto.GRAPH:
                    total += count(a.g.node)
                elif a.type == AttributeProto.GRAPHS:
                    total += sum(count(g.node) for g in a.graphs)
        return total

    return count(model.graph.node)


#: An Einsum equation as the ONNX specification defines it: terms of letters with at most one
#: ellipsis each, separated by commas, optionally "->" and an output term; spaces anywhere.
_EINSUM_TERM = r" *[A-Za-z ]*(?:\.\.\.)?[A-Za-z ]* *"
_EINSUM_EQUATION = re.compile(rf"{_EINSUM_TERM}(?:,{_EINSUM_TERM})*(?:->{_EINSUM_TERM})?")


def _check_einsum_equations(model: ModelProto) -> None:
    """The checker does not read Einsum's equation; onnx shape inference loops forever on some
    invalid ones (found by fuzzing: ``?chw,wv->bchv`` on a rank-3 input), and onnxruntime refuses them.
    So they are refused here (exit code 13), in every graph and function body."""
    nodes = [n for _, g in iter_graphs(model) for n in g.node] + [n for f in model.functions for n in f.node]
    for node in nodes:
        if node.op_type != "Einsum" or node.domain not in ("", "ai.onnx"):
            continue
        equation = next((a.s for a in node.attribute if a.name == "equation"), b"")
        if not _EINSUM_EQUATION.fullmatch(equation.decode("latin-1")):
            raise ModelInvalidError(f"Einsum node {node.name or '(unnamed)'!r}: equation {equation[:80]!r} is not an "
                                    "Einsum equation (letters, commas, '...', '->')")


def _check_node_count(model: ModelProto, limits: LoadLimits, path: Path) -> None:
    n = expanded_node_count(model)
    if n > limits.max_nodes:
        expanded = " once its local functions are expanded" if model.functions else ""
        raise ModelTooLargeError(f"{path.name}: the model has {n:,} nodes{expanded}, over the limit of "
                                 f"{limits.max_nodes:,} (raise it with --max-nodes)")


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
    info = {e.key: e.value for e in tensor.external_data}
    # upb hands back a proto2 string that is not valid UTF-8 as bytes instead of str
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in info.items()):
        raise ExternalDataError(f"tensor {tensor.name!r}: external data key or value is not valid UTF-8")
    return info


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


def iter_all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every TensorProto in the model that can hold data: the stored tensors of
    :func:`iter_stored_tensors` plus tensors in any other attribute (``tensors``, custom ops'),
    in every graph, subgraph and function body."""
    for t, _ in _tensor_slots(model):
        yield t


def _tensor_slots(model: ModelProto) -> list[tuple[TensorProto, bool]]:
    """(tensor, whether it is the values of a sparse tensor) for :func:`iter_all_tensors`, in one
    pass over every graph, subgraph and function body. Set fields are looked at, not the declared
    attribute type, so no tensor escapes because its attribute says otherwise."""
    out: list[tuple[TensorProto, bool]] = []
    graphs = [model.graph]
    node_lists = [fn.node for fn in model.functions]
    while graphs or node_lists:
        if graphs:
            g = graphs.pop()
            out.extend((t, False) for t in g.initializer)
            out.extend((sp.values, True) for sp in g.sparse_initializer)
            node_lists.append(g.node)
            continue
        for node in node_lists.pop():
            for attr in node.attribute:
                if attr.HasField("t"):
                    out.append((attr.t, False))
                if attr.HasField("g"):
                    graphs.append(attr.g)
                if attr.HasField("sparse_tensor"):
                    out.append((attr.sparse_tensor.values, True))
                if len(attr.tensors):
                    out.extend((t, False) for t in attr.tensors)
                if len(attr.graphs):
                    graphs.extend(attr.graphs)
                if len(attr.sparse_tensors):
                    out.extend((sp.values, True) for sp in attr.sparse_tensors)
    return out


def _validate_external_data(slots: list[tuple[TensorProto, bool]], model_path: Path, limits: LoadLimits) -> int:
    """Confine every external-data reference to the model's folder and check the bytes are there.

    Nothing is read here: readers go through :func:`tensor_array`, which re-applies the same
    confinement. Returns the total bytes referenced in files other than the model itself.
    """
    folder = model_path.parent
    own = Path(os.path.realpath(model_path))
    sizes: dict[Path, int] = {}
    resolved: dict[str, Path] = {}
    total = 0
    for t, _ in slots:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        target, offset, length = _external_span(folder, t, resolved)
        if target not in sizes:
            try:
                sizes[target] = target.stat().st_size
            except OSError as e:
                raise ExternalDataError(f"tensor {t.name!r}: cannot access external data {target.name!r} "
                                        f"({e.strerror})") from e
        size = sizes[target]
        if offset + length > size:
            raise ExternalDataError(
                f"tensor {t.name!r}: external data {target.name!r} is {size} bytes, "
                f"shorter than offset {offset} + length {length}"
            )
        if target == own:
            continue  # the model file's own tensors: already counted in file_bytes
        total += length
        if total > limits.max_tensor_bytes:
            raise ModelTooLargeError(f"external data exceeds {limits.max_tensor_bytes} bytes")
    return total


def _external_span(folder: Path, t: TensorProto, resolved: "dict[str, Path] | None" = None) -> tuple[Path, int, int]:
    """(confined file, offset, length) of an external tensor. ``resolved`` caches location -> file
    across the tensors of one model (one realpath per location, not per tensor)."""
    info = _external_info(t)
    location = info.get("location", "")
    target = resolved.get(location) if resolved is not None else None
    if target is None:
        target = _safe_external_path(folder, location, t.name)
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
    if resolved is None or location not in resolved:
        try:
            regular = stat.S_ISREG(os.stat(target).st_mode)
        except FileNotFoundError:
            regular = False
        except OSError as e:  # e.g. a name longer than the file system allows (ENAMETOOLONG), a loop of links
            raise ExternalDataError(f"tensor {t.name!r}: cannot access external data {location[:200]!r} "
                                    f"({e.strerror or e})") from e
        if not regular:
            raise ExternalDataError(f"tensor {t.name!r}: external data file {info.get('location')!r} is missing")
        if resolved is not None:
            resolved[location] = target
    return target, offset, length


def _open_external(loaded: "LoadedModel", t: TensorProto):
    """(open file positioned at the tensor's data, length); the same confinement as at load time,
    and the model file itself must be unchanged since it was loaded."""
    target, offset, length = _external_span(loaded.folder, t)
    try:
        f = open(target, "rb", buffering=0)
    except OSError as e:
        raise ExternalDataError(f"tensor {t.name!r}: cannot read external data {target.name!r} ({e.strerror})") from e
    try:
        st = os.fstat(f.fileno())
        if loaded.file_identity is not None and (st.st_dev, st.st_ino) == loaded.file_identity[:2] \
                and _identity(st) != loaded.file_identity:
            raise ModelFileError(f"{loaded.name}: the model file changed after it was loaded; load it again")
        if offset + length > st.st_size:
            raise ExternalDataError(f"tensor {t.name!r}: external data {target.name!r} is shorter than declared")
        f.seek(offset)
    except BaseException:
        f.close()
        raise
    return f, length


def read_external_bytes(loaded: "LoadedModel", t: TensorProto) -> bytes:
    """The payload bytes of one external (or self-referencing) tensor, re-checked against its folder
    confinement and the file's identity; memory stays proportional to that tensor."""
    f, length = _open_external(loaded, t)
    with f:
        data = _read_exactly(f, length)
    if len(data) != length:
        raise ExternalDataError(f"tensor {t.name!r}: external data is shorter than declared")
    return data


def _numpy_dtype(data_type: int) -> "np.dtype | None":
    """The numpy dtype whose buffer is exactly raw_data's layout, if there is one."""
    if data_type not in DTYPE_BYTES or data_type == TensorProto.STRING:
        return None
    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    except Exception:
        return None
    return dt if dt.itemsize == DTYPE_BYTES[data_type] else None


def tensor_array(loaded: "LoadedModel", tensor: TensorProto) -> np.ndarray:
    """The values of a stored tensor as a numpy array, reading external data (confined to the
    model's folder; the model file itself for its large tensors) only for this tensor, so memory
    stays proportional to one tensor. Equal, dtype and shape included, to ``numpy_helper.to_array``
    of the tensor as stored inline."""
    if tensor.data_location == TensorProto.EXTERNAL:
        dt = _numpy_dtype(tensor.data_type)
        if dt is not None and not tensor.HasField("segment"):
            f, length = _open_external(loaded, tensor)
            with f:
                arr = np.empty(length // dt.itemsize, dtype=dt)
                view = memoryview(arr.view(np.uint8))
                got = 0
                while got < length:
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
            if got != length:
                raise ExternalDataError(f"tensor {tensor.name!r}: external data is shorter than declared")
            if sys.byteorder == "big" and dt.itemsize > 1:
                arr.byteswap(inplace=True)
            try:
                return arr.reshape(tuple(tensor.dims))
            except ValueError as e:
                raise ModelInvalidError(f"tensor {tensor.name!r}: cannot decode its values ({e})") from e
        inline = TensorProto()
        inline.CopyFrom(tensor)
        del inline.external_data[:]
        inline.ClearField("data_location")
        inline.raw_data = read_external_bytes(loaded, tensor)
        tensor = inline
    try:
        return numpy_helper.to_array(tensor)
    except Exception as e:
        raise ModelInvalidError(f"tensor {tensor.name!r}: cannot decode its values ({e})") from e


def materialize(loaded: "LoadedModel") -> ModelProto:
    """A deep copy of the model with every external tensor read inline (self-contained, e.g. for
    writing a changed copy or opening a session from bytes). Memory: the whole model."""
    copy = ModelProto()
    copy.CopyFrom(loaded.proto)
    for t in iter_all_tensors(copy):
        if t.data_location == TensorProto.EXTERNAL:
            data = read_external_bytes(loaded, t)
            del t.external_data[:]
            t.ClearField("data_location")
            t.raw_data = data
    return copy


#: The newest opset per operator domain this installation's onnx knows (shape inference, checker);
#: a model that imports a newer one is refused rather than profiled with older operator semantics.
_MAX_OPSET = {"": onnx.defs.onnx_opset_version(), "ai.onnx": onnx.defs.onnx_opset_version(),
              "ai.onnx.ml": onnx.defs.onnx_ml_opset_version()}


def _check_domains(model: ModelProto) -> None:
    seen: dict[str, int] = {}
    for op in model.opset_import:
        domain = "" if op.domain == "ai.onnx" else op.domain
        if domain in seen and seen[domain] != op.version:
            raise ModelInvalidError(f"opset_import names domain {op.domain or 'ai.onnx'!r} twice, with versions "
                                    f"{seen[domain]} and {op.version}")
        seen[domain] = op.version
        newest = _MAX_OPSET.get(op.domain)
        if newest is not None and op.version > newest:
            raise UnsupportedOperatorError(
                f"the model imports opset {op.version} of {op.domain or 'ai.onnx'!r}, newer than this installation "
                f"supports (at most {newest}; onnx {onnx.__version__})")
    local_functions = {(f.domain, f.name) for f in model.functions}
    for path, graph in iter_graphs(model):
        for node in graph.node:
            if node.domain not in KNOWN_DOMAINS and (node.domain, node.op_type) not in local_functions:
                where = f" (in subgraph {path})" if path else ""
                raise UnsupportedOperatorError(
                    f"operator {node.op_type!r} of custom domain {node.domain!r}{where} is not supported by "
                    "onnxruntime and not defined as a function in the model"
                )


def _run_checker(model: ModelProto, slots: "list[tuple[TensorProto, bool]] | None" = None) -> None:
    """``onnx.checker.check_model`` on the model, its external tensors shown as inline stand-ins.

    Given a proto rather than a path, the checker resolves external locations against the
    *current directory* and refuses them; :func:`_validate_external_data` has already checked them
    properly (the model's folder, confined, bounds-checked). So for the check each external tensor
    is, in place and restored afterwards, an inline tensor of the same dtype and rank with one
    element (all-zero bytes): without ``full_check`` the checker reads no values, only which value
    field is set and whether raw_data fits the dims. Values of a sparse tensor keep their dims
    (compared with the indices) and get zeros of their full size."""
    saved: list[tuple[TensorProto, TensorProto]] = []
    try:
        for t, sparse_values in slots if slots is not None else _tensor_slots(model):
            if t.data_location != TensorProto.EXTERNAL:
                continue
            keep = TensorProto()
            keep.CopyFrom(t)
            saved.append((t, keep))
            del t.external_data[:]
            t.ClearField("data_location")
            if numel(t.dims) == 0:
                continue
            if not sparse_values:
                t.dims[:] = [1] * len(t.dims)
            if t.data_type == TensorProto.STRING:
                t.string_data.extend([b""] * numel(t.dims))
            else:
                t.raw_data = bytes(tensor_nbytes(t))
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "validation failed"
        raise ModelInvalidError(f"ONNX checker: {first}") from e
    except UnicodeError as e:  # a ValueError too: a name or string that is not UTF-8
        raise ModelFormatError(f"not an ONNX model (a name or string is not valid UTF-8: {e})") from e
    except ValueError as e:  # e.g. a message over protobuf's 2 GiB limit
        raise ModelTooLargeError(f"ONNX checker could not serialise the model: {e}") from e
    finally:
        for t, keep in saved:
            t.CopyFrom(keep)


def load_related(path: "str | os.PathLike[str]", limits: LoadLimits, role: str) -> LoadedModel:
    """Load a second model (``--base``, ``--previous``) with the same checks and limits as the
    assessed one; errors keep their class (and exit code) and name the ``role``."""
    try:
        return load_model(path, limits)
    except EekiError as e:
        raise type(e)(f"{role}: {e}") from e
