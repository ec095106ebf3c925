"""The bitstream container: round trip and every way a file can be damaged."""

from __future__ import annotations

import pytest

from eeki_label.errors import TransferError
from eeki_label.transfer.container import MAGIC, Container, Entry, header_size, keys_digest, pack, unpack


def _container():
    return Container("ab" * 32, None, keys_digest(["a", "b", "c"]), 3,
                     (Entry(0, "nnc"), Entry(1, "raw", 0, 5), Entry(2, "raw", 5, 3)), b"NNC-BYTES" * 10, b"12345678")


def test_round_trip():
    c = _container()
    blob = pack(c)
    assert blob.startswith(MAGIC)
    assert unpack(blob) == c
    assert header_size(blob) < len(blob)


@pytest.mark.parametrize("damage", [
    lambda b: b[:-1],                                   # truncated
    lambda b: b + b"x",                                  # trailing bytes
    lambda b: b[:-3] + bytes([b[-3] ^ 0xFF]) + b[-2:],   # flipped payload byte
    lambda b: b"NOTNNC!!" + b[8:],                       # bad magic
    lambda b: b[:8] + b"\x09\x00" + b[10:],              # unknown version
    lambda b: b[:16] + b"\x00" * 8 + b[24:],             # damaged header
    lambda b: b"",
])
def test_damage_is_detected(damage):
    with pytest.raises(TransferError):
        unpack(damage(pack(_container())))
