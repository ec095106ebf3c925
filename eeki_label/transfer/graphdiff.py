"""The graph of an update: the new model without its tensor payloads, sent as a diff of the previous one.

A delta container (:mod:`eeki_label.transfer.container`) must let the receiver rebuild the *new*
model's structure bit-exactly from the previous model it holds, even when the head was replaced or
layers were added or removed. The structure is the **skeleton**: the model with every stored
tensor's payload cleared (dims, data type and name stay; see :func:`skeleton`). The patch from the
previous skeleton to the new one is taken element by element over the repeated fields that hold
the graph (:data:`FIELDS`: nodes, initializers, inputs, outputs, value infos, functions), each element
compared by its serialisation and aligned with :class:`difflib.SequenceMatcher`; what remains of the
model (opset imports, producer, graph name, metadata) is sent whole as the *shell*.

Patch layout (before the container's zlib)::

    u32 json_len, JSON {"v": 1, "shell": n, "fields": {field: [op, ...]}}, shell bytes, new elements

``op`` is ``["c", i, j]`` (copy the previous skeleton's elements ``i..j-1`` of that field) or
``["n", [len, ...]]`` (the next new elements, each a serialised message of these lengths, in the
order the fields and ops are listed). Copies must run forwards without overlap, so the rebuilt
model is never larger than the previous skeleton plus the patch (no amplification), and every
length and index is checked before use.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import struct

from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto

from eeki_label.errors import TransferError
from eeki_label.model_io import LoadedModel, iter_all_tensors, iter_stored_tensors, read_external_bytes

#: (owner, field) pairs diffed element by element; the rest of the model is the shell.
FIELDS = (("graph", "node"), ("graph", "initializer"), ("graph", "sparse_initializer"), ("graph", "input"),
          ("graph", "output"), ("graph", "value_info"), ("model", "functions"))
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                "string_data", "external_data", "data_location")
_LEN = struct.Struct("<I")
#: Largest patch JSON accepted (about 10 bytes per op).
MAX_PATCH_JSON_BYTES = 16 << 20


def clear_payload(t: TensorProto) -> None:
    for name in _DATA_FIELDS:
        t.ClearField(name)


def skeleton(loaded: LoadedModel) -> ModelProto:
    """A copy of ``loaded``'s model with every stored tensor's payload cleared; other tensors (node
    attributes other than Constant values) are kept, read inline when the loader left them on disk."""
    model = ModelProto()
    model.CopyFrom(loaded.proto)
    for ref in iter_stored_tensors(model):
        clear_payload(ref.tensor)
    for t in iter_all_tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            data = read_external_bytes(loaded, t)
            clear_payload(t)
            t.raw_data = data
    return model


def serialise(model: ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def digest(model: ModelProto) -> str:
    return hashlib.sha256(serialise(model)).hexdigest()


def _owner(model: ModelProto, owner: str):
    return model.graph if owner == "graph" else model


def _tokens(model: ModelProto, owner: str, name: str) -> list[bytes]:
    return [m.SerializeToString(deterministic=True) for m in getattr(_owner(model, owner), name)]


def make_patch(old: ModelProto, new: ModelProto) -> bytes:
    """The patch that turns skeleton ``old`` into skeleton ``new`` (see the module docstring)."""
    shell = ModelProto()
    shell.CopyFrom(new)
    for owner, name in FIELDS:
        _owner(shell, owner).ClearField(name)
    shell_bytes = serialise(shell)
    ops: dict[str, list] = {}
    blobs = [shell_bytes]
    for owner, name in FIELDS:
        a, b = _tokens(old, owner, name), _tokens(new, owner, name)
        out: list = []
        j_prev = 0
        sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
        for i0, j0, size in sm.get_matching_blocks():
            if j0 > j_prev:
                out.append(["n", [len(x) for x in b[j_prev:j0]]])
                blobs += b[j_prev:j0]
            if size:
                out.append(["c", i0, i0 + size])
            j_prev = j0 + size
        if out:
            ops[f"{owner}.{name}"] = out
    head = json.dumps({"v": 1, "shell": len(shell_bytes), "fields": ops}, separators=(",", ":")).encode()
    return _LEN.pack(len(head)) + head + b"".join(blobs)


def _int(x, lo: int, hi: int) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise ValueError("index out of range")
    return x


def apply_patch(old: ModelProto, patch: bytes) -> ModelProto:
    """Skeleton ``old`` plus ``patch`` -> the new skeleton; a malformed patch raises TransferError."""
    try:
        (n,) = _LEN.unpack_from(patch, 0)
        if n > MAX_PATCH_JSON_BYTES or _LEN.size + n > len(patch):
            raise ValueError("patch header out of range")
        head = json.loads(patch[_LEN.size:_LEN.size + n].decode("utf-8"))
        if not isinstance(head, dict) or head.get("v") != 1 or not isinstance(head.get("fields"), dict):
            raise ValueError("unknown patch layout")
        pos = _LEN.size + n
        shell_len = _int(head["shell"], 0, len(patch) - pos)
        model = ModelProto()
        model.ParseFromString(patch[pos:pos + shell_len])
        pos += shell_len
        known = {f"{o}.{f}": (o, f) for o, f in FIELDS}
        if set(head["fields"]) - set(known):
            raise ValueError("unknown field in patch")
        for key, (owner, name) in known.items():
            _owner(model, owner).ClearField(name)
            ops = head["fields"].get(key, [])
            if not isinstance(ops, list):
                raise ValueError("ops are not a list")
            src = getattr(_owner(old, owner), name)
            dst = getattr(_owner(model, owner), name)
            copied_to = 0
            for op in ops:
                if not isinstance(op, list) or not op:
                    raise ValueError("malformed op")
                if op[0] == "c" and len(op) == 3:
                    i = _int(op[1], copied_to, len(src))
                    j = _int(op[2], i, len(src))
                    for k in range(i, j):
                        dst.add().CopyFrom(src[k])
                    copied_to = j
                elif op[0] == "n" and len(op) == 2 and isinstance(op[1], list):
                    for length in op[1]:
                        length = _int(length, 0, len(patch) - pos)
                        dst.add().ParseFromString(patch[pos:pos + length])
                        pos += length
                else:
                    raise ValueError("unknown op")
        if pos != len(patch):
            raise ValueError("trailing bytes")
        return model
    except TransferError:
        raise
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError, RecursionError, DecodeError) as e:
        raise TransferError(f"NNC bitstream graph section is corrupt ({type(e).__name__})") from e
