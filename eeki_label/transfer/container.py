"""The self-describing file around the NNC bitstream (``.eeki-nnc``).

Layout (all integers little-endian)::

    magic        8 bytes   b"EEKINNC\\x00"
    version      u16       CONTAINER_VERSION
    header_len   u32       length of the compressed header
    header       zlib-compressed UTF-8 JSON (below)
    nnc          header["nnc_bytes"] bytes: one ISO/IEC 15938-17 bitstream (decodable by nncodec)
    raw          header["raw_bytes"] bytes: zlib-compressed concatenation of serialised TensorProtos
    graph        header["graph_bytes"] bytes (version 2; 0 for a full-model container): the zlib-compressed
                 patch from the previous model's skeleton to the new one (:mod:`eeki_label.transfer.graphdiff`)

Header JSON::

    {"model_sha256": hex,          # the model these tensors belong to (the new model for a delta)
     "base_sha256": hex | null,    # a delta: the previous model the receiver holds
     "keys_sha256": hex,           # sha256 of the newline-joined stored-tensor keys (of the new model)
     "tensor_count": int,          # stored tensors in the (new) model
     "payload_sha256": hex,        # sha256 of nnc + raw + graph: detects corruption before decoding
     "nnc_bytes": int, "raw_bytes": int,
     "graph_bytes": int, "graph_inflated_bytes": int,   # version 2
     "graph_sha256": hex | null,   # version 2: sha256 of the new model's skeleton (null: no graph section)
     "removed": [key, ...],        # version 2: previous-model tensors the new model no longer has
     "tensors": [[index, mode, offset, length, base], ...]}

``index`` is the tensor's position in :func:`eeki_label.model_io.iter_stored_tensors` order of the
model being rebuilt (for a version-2 delta: of the skeleton the graph section rebuilds). ``mode`` is
``nnc`` (absolute, NNC tensor ``t<index>``), ``delta`` (NNC tensor ``t<index>`` added to the previous
model's tensor ``base``), ``raw`` (a serialised TensorProto at ``offset``/``length`` in the
decompressed raw section, bit-exact) or ``same`` (the previous model's tensor ``base`` unchanged;
deltas only). ``base`` is a position in the previous model's stored-tensor order, -1 when unused;
version 1 (4-element rows, no graph section) meant ``base == index`` on an identical graph, and is
still read. Tensors the list omits are kept as they are in the model given to the decoder (only
possible for version-1 deltas; a version-2 delta lists every tensor).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass

from eeki_label.errors import TransferError

MAGIC = b"EEKINNC\x00"
CONTAINER_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: Largest inflated graph section: the protobuf limit of one model (2 GiB).
MAX_GRAPH_BYTES = 2 * 1024**3
MODES = ("nnc", "delta", "raw", "same")
_FIXED = struct.Struct("<8sHI")


@dataclass(frozen=True)
class Entry:
    index: int
    mode: str
    offset: int = 0
    length: int = 0
    base: int = -1
    """Position of the previous model's tensor (``delta``, ``same``); -1 when unused."""


@dataclass(frozen=True)
class Container:
    model_sha256: str
    base_sha256: str | None
    keys_sha256: str
    tensor_count: int
    entries: tuple[Entry, ...]
    nnc: bytes
    raw: bytes
    """The decompressed raw section."""
    graph: bytes | None = None
    """The decompressed graph patch (a delta whose receiver rebuilds the new graph), or None."""
    graph_sha256: str | None = None
    removed: tuple[str, ...] = ()


def keys_digest(keys: "list[str]") -> str:
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def pack(c: Container) -> bytes:
    raw_z = zlib.compress(c.raw, 9) if c.raw else b""
    graph_z = zlib.compress(c.graph, 9) if c.graph is not None else b""
    header = {
        "model_sha256": c.model_sha256,
        "base_sha256": c.base_sha256,
        "keys_sha256": c.keys_sha256,
        "tensor_count": c.tensor_count,
        "payload_sha256": hashlib.sha256(c.nnc + raw_z + graph_z).hexdigest(),
        "nnc_bytes": len(c.nnc),
        "raw_bytes": len(raw_z),
        "graph_bytes": len(graph_z),
        "graph_inflated_bytes": len(c.graph) if c.graph is not None else 0,
        "graph_sha256": c.graph_sha256,
        "removed": list(c.removed),
        "tensors": [[e.index, e.mode, e.offset, e.length, e.base] for e in c.entries],
    }
    hz = zlib.compress(json.dumps(header, separators=(",", ":")).encode("utf-8"), 9)
    return _FIXED.pack(MAGIC, CONTAINER_VERSION, len(hz)) + hz + c.nnc + raw_z + graph_z


def section_sizes(blob: bytes) -> dict:
    """Bytes of each part of a container (``header``, ``nnc``, ``raw``, ``graph``), without decoding it."""
    c_hdr = header_size(blob)
    _, version, _ = _FIXED.unpack_from(blob, 0)
    header = json.loads(_inflate(blob[_FIXED.size:c_hdr], MAX_HEADER_BYTES, "header").decode("utf-8"))
    return {"header": c_hdr, "nnc": int(header["nnc_bytes"]), "raw": int(header["raw_bytes"]),
            "graph": int(header.get("graph_bytes", 0))}


#: Largest inflated header accepted: a tensor table of about 100,000 tensors (about 30 bytes each).
MAX_HEADER_BYTES = 4 << 20


def _inflate(data: bytes, limit: int, what: str) -> bytes:
    """zlib-decompress at most ``limit`` bytes: a small stream that would inflate beyond the size the
    container declares (a decompression bomb) is refused without inflating it."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise TransferError(f"NNC bitstream {what} is corrupt") from e
    if len(out) > limit or d.unconsumed_tail:
        raise TransferError(f"NNC bitstream {what} is corrupt (inflates beyond its declared {limit} bytes)")
    return out


def header_size(blob: bytes) -> int:
    """Bytes before the NNC bitstream (fixed part plus compressed header)."""
    _, _, n = _FIXED.unpack_from(blob, 0)
    return _FIXED.size + n


def unpack(blob: bytes) -> Container:
    """Parse and integrity-check a container; any defect raises TransferError."""
    if len(blob) < _FIXED.size:
        raise TransferError("not an eeki-label NNC bitstream (file too short)")
    magic, version, hlen = _FIXED.unpack_from(blob, 0)
    if magic != MAGIC:
        raise TransferError("not an eeki-label NNC bitstream (bad magic bytes)")
    if version not in READABLE_VERSIONS:
        raise TransferError(f"NNC bitstream container version {version} is not supported (this tool reads "
                            f"versions {', '.join(map(str, READABLE_VERSIONS))})")
    end = _FIXED.size + hlen
    if end > len(blob):
        raise TransferError("NNC bitstream is truncated (header)")
    try:
        header = json.loads(_inflate(blob[_FIXED.size:end], MAX_HEADER_BYTES, "header").decode("utf-8"))
        nnc_len, raw_len = int(header["nnc_bytes"]), int(header["raw_bytes"])
        if version == 1:
            entries = tuple(Entry(int(i), str(m), int(o), int(n), int(i) if m in ("delta", "same") else -1)
                            for i, m, o, n in header["tensors"])
            graph_len = graph_inflated = 0
            graph_sha, removed = None, ()
        else:
            entries = tuple(Entry(int(i), str(m), int(o), int(n), int(b)) for i, m, o, n, b in header["tensors"])
            graph_len, graph_inflated = int(header["graph_bytes"]), int(header["graph_inflated_bytes"])
            graph_sha = header["graph_sha256"]
            graph_sha = None if graph_sha is None else str(graph_sha)
            removed = tuple(str(k) for k in header["removed"])
        model_sha, base_sha = str(header["model_sha256"]), header["base_sha256"]
        keys_sha, count, payload_sha = str(header["keys_sha256"]), int(header["tensor_count"]), str(header["payload_sha256"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise TransferError(f"NNC bitstream header is corrupt ({type(e).__name__})") from e
    if min(nnc_len, raw_len, graph_len, graph_inflated) < 0 or end + nnc_len + raw_len + graph_len != len(blob):
        raise TransferError(f"NNC bitstream is truncated or has trailing bytes (expected "
                            f"{end + nnc_len + raw_len + graph_len} bytes, got {len(blob)})")
    if graph_inflated > MAX_GRAPH_BYTES or (graph_len > 0) != (graph_sha is not None):
        raise TransferError("NNC bitstream header declares an impossible graph section")
    payload = blob[end:]
    if hashlib.sha256(payload).hexdigest() != payload_sha:
        raise TransferError("NNC bitstream is corrupt (payload checksum mismatch)")
    if any(e.mode not in MODES for e in entries):
        raise TransferError("NNC bitstream header names an unknown tensor mode")
    raw_declared = max((e.offset + e.length for e in entries if e.mode == "raw"), default=0)
    if any(e.offset < 0 or e.length < 0 for e in entries):
        raise TransferError("NNC bitstream header has negative offsets or lengths")
    raw = _inflate(payload[nnc_len:nnc_len + raw_len], raw_declared, "raw section") if raw_len else b""
    graph = None
    if graph_len:
        graph = _inflate(payload[nnc_len + raw_len:], graph_inflated, "graph section")
        if len(graph) != graph_inflated:
            raise TransferError("NNC bitstream graph section is shorter than declared")
    return Container(model_sha, base_sha if base_sha is None else str(base_sha), keys_sha, count, entries,
                     bytes(payload[:nnc_len]), raw, graph, graph_sha, removed)
