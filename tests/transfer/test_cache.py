"""The transfer stage's content cache: a hit gives the same label byte for byte, any change of what
the coding depends on misses, a damaged or tampered entry is coded again, and it can be turned off."""

import hashlib
import json
from pathlib import Path

import pytest

import eeki_label.transfer.nnc as nnc
from eeki_label.cli import main
from eeki_label.transfer import cache as tcache
from nnc_models import save_and_load, small_cnn

ARGS = ["--input-shape", "x=1x3x16x16", "-d", "edge-gpu-batch1", "--runs", "0", "-q",
        "--issued-at", "2026-01-01T00:00:00+00:00"]


@pytest.fixture
def model(tmp_path):
    return save_and_load(small_cnn(seed=0, with_subgraph=False), tmp_path / "m.onnx").path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("EEKI_LABEL_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def encodes(monkeypatch):
    """Counts the real codings (calls of encode_model)."""
    calls = []
    real = nnc.encode_model

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(nnc, "encode_model", counting)
    return calls


def assess(model, out: Path, capsys, *extra) -> bytes:
    code = main([str(a) for a in ["assess", model, *ARGS, "--json", out, *extra]])
    _, err = capsys.readouterr()
    assert code == 0, err
    return out.read_bytes()


def entries(folder: Path) -> list[Path]:
    return sorted((folder / "transfer").glob("*.entry"))


def test_a_hit_gives_the_same_label_byte_for_byte_and_the_same_bitstream(model, cache, encodes, tmp_path, capsys):
    first = assess(model, tmp_path / "a.json", capsys, "--bitstream", tmp_path / "a.nnc")
    assert len(encodes) == 1 and len(entries(cache)) == 1
    second = assess(model, tmp_path / "b.json", capsys, "--bitstream", tmp_path / "b.nnc")
    assert len(encodes) == 1  # not coded again
    assert second == first
    assert (tmp_path / "b.nnc").read_bytes() == (tmp_path / "a.nnc").read_bytes()
    assert _transfer(second)["bitstream_sha256"] == hashlib.sha256((tmp_path / "b.nnc").read_bytes()).hexdigest()
    # scenario options are priced again on a hit: another country still hits, with its own figures
    third = assess(model, tmp_path / "c.json", capsys, "--country", "FR")
    assert len(encodes) == 1 and third != first
    fresh = assess(model, tmp_path / "d.json", capsys, "--country", "FR", "--no-cache")
    assert len(encodes) == 2
    assert _untimed(fresh) == _untimed(third)  # the same figures, apart from this host's coding times


def _transfer(label: bytes) -> dict:
    doc = json.loads(label)
    return (doc["labels"][0] if "labels" in doc else doc)["transfer"]


def _untimed(label: bytes) -> dict:
    t = _transfer(label)
    assert t["encode_s"] > 0 and t["decode_s"] > 0
    return {k: v for k, v in t.items() if k not in ("encode_s", "decode_s")}


def test_a_changed_model_bound_or_calibration_misses(model, cache, encodes, tmp_path, capsys):
    import numpy as np

    assess(model, tmp_path / "a.json", capsys)
    other = save_and_load(small_cnn(seed=1, with_subgraph=False), tmp_path / "other.onnx").path
    assess(other, tmp_path / "b.json", capsys)
    assert len(encodes) == 2
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    assess(model, tmp_path / "c.json", capsys, "--calibration-data", calib)
    assert len(encodes) == 3
    assess(model, tmp_path / "c2.json", capsys, "--calibration-data", calib)  # same arrays: a hit
    assert len(encodes) == 3
    np.savez(calib, x=np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32))
    assess(model, tmp_path / "d.json", capsys, "--calibration-data", calib)
    assert len(encodes) == 4
    assert len(entries(cache)) == 4


def test_the_key_covers_the_bound_the_shapes_the_previous_model_and_the_code(model, monkeypatch):
    from eeki_label.model_io import load_model
    from eeki_label.transfer.fidelity import FidelityBound

    m = load_model(model)
    key = tcache.entry_key(m, {"x": (1, 3, 16, 16)}, 100, FidelityBound(0.03, 0.99), None, None, "previous")
    assert key == tcache.entry_key(m, {"x": (1, 3, 16, 16)}, 100, FidelityBound(0.03, 0.99), None, None, "base")
    others = [
        tcache.entry_key(m, {"x": (1, 3, 16, 16)}, 100, FidelityBound(0.02, 0.99), None, None, "previous"),
        tcache.entry_key(m, {"x": (1, 3, 16, 16)}, 100, FidelityBound(0.03, 0.98), None, None, "previous"),
        tcache.entry_key(m, {"x": (1, 3, 32, 32)}, 100, FidelityBound(0.03, 0.99), None, None, "previous"),
        tcache.entry_key(m, {"x": (1, 3, 16, 16)}, 100, FidelityBound(0.03, 0.99), None, m, "previous"),
        tcache.entry_key(m, {"x": (1, 3, 16, 16)}, 100, FidelityBound(0.03, 0.99), None, m, "base"),
    ]
    assert len({key, *others}) == 1 + len(others)
    monkeypatch.setattr(tcache, "_CODE_DIGEST", "another version of the code")
    assert tcache.entry_key(m, {"x": (1, 3, 16, 16)}, 100, FidelityBound(0.03, 0.99), None, None, "previous") != key


@pytest.mark.parametrize("damage", ["flip-bitstream", "truncate", "tamper-consistently", "garbage"])
def test_a_damaged_or_tampered_entry_is_coded_again(model, cache, encodes, tmp_path, capsys, damage):
    first = assess(model, tmp_path / "a.json", capsys)
    (entry,) = entries(cache)
    data = bytearray(entry.read_bytes())
    if damage == "flip-bitstream":
        data[-40] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not an entry at all")
    else:
        # rewrite the entry with valid checksums but a bitstream whose weights are all changed: only
        # the re-check of the decoded model against the bound can tell
        loaded = tcache.load(cache, entry.stem)
        from eeki_label.transfer.container import pack, unpack

        c = unpack(loaded.bitstream)
        bad = _coarser(c)
        info = json.loads(loaded.info_json)
        info["bitstream_sha256"] = hashlib.sha256(bad).hexdigest()
        tcache.store(cache, entry.stem, tcache.Entry(json.dumps(info), bad, None))
        data = bytearray(entry.read_bytes())
    entry.write_bytes(bytes(data))
    second = assess(model, tmp_path / "b.json", capsys)
    assert len(encodes) == 2  # coded again
    assert _untimed(second) == _untimed(first)  # the same coding as the first time
    assert tcache.load(cache, entry.stem) is not None  # the entry was replaced by a sound one


def _coarser(c):
    """The container with every NNC tensor re-coded at a very coarse QP (a valid bitstream that
    misses any reasonable fidelity bound)."""
    import dataclasses

    from eeki_label.transfer import _nncore
    from eeki_label.transfer.container import pack

    decoded = _nncore.decode(c.nnc)
    items = []
    for name, arr in decoded.items():
        lv, qp = _nncore.quantize(arr, 20)
        items.append(_nncore.CodedTensor(name, lv, qp))
    stream, _ = _nncore.encode(items)
    return pack(dataclasses.replace(c, nnc=stream))


def test_the_cache_can_be_turned_off(model, tmp_path, encodes, monkeypatch, capsys):
    monkeypatch.setenv("EEKI_LABEL_CACHE_DIR", "off")
    assert tcache.cache_dir() is None
    a = assess(model, tmp_path / "a.json", capsys)
    b = assess(model, tmp_path / "b.json", capsys)
    assert _untimed(a) == _untimed(b) and len(encodes) == 2
    folder = tmp_path / "cache"
    monkeypatch.setenv("EEKI_LABEL_CACHE_DIR", str(folder))
    assess(model, tmp_path / "c.json", capsys, "--no-cache")
    assert len(encodes) == 3 and not folder.exists()


def test_the_default_location(monkeypatch, tmp_path):
    monkeypatch.delenv("EEKI_LABEL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tcache.cache_dir() == tmp_path / "xdg" / "eeki-label"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tcache.cache_dir() == tmp_path / "home" / ".cache" / "eeki-label"


def test_an_unwritable_cache_never_fails_the_stage(model, tmp_path, encodes, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("EEKI_LABEL_CACHE_DIR", str(blocker))
    a = assess(model, tmp_path / "a.json", capsys)
    assert _untimed(assess(model, tmp_path / "b.json", capsys)) == _untimed(a) and len(encodes) == 2


def test_a_delta_hits_too_and_another_previous_model_misses(tmp_path, cache, encodes, capsys):
    old = save_and_load(small_cnn(seed=0), tmp_path / "old.onnx").path
    new = save_and_load(small_cnn(seed=0, classes=4), tmp_path / "new.onnx").path
    other = save_and_load(small_cnn(seed=2, classes=4), tmp_path / "other.onnx").path
    first = assess(new, tmp_path / "a.json", capsys, "--previous", old, "--delta-bitstream", tmp_path / "a.nnc")
    assert len(encodes) == 2 and _transfer(first)["delta"] is not None  # the whole model and the delta
    second = assess(new, tmp_path / "b.json", capsys, "--previous", old, "--delta-bitstream", tmp_path / "b.nnc")
    assert len(encodes) == 2 and second == first
    assert (tmp_path / "b.nnc").read_bytes() == (tmp_path / "a.nnc").read_bytes()
    assess(new, tmp_path / "c.json", capsys, "--previous", other)
    assert len(encodes) == 4


def test_a_fine_tuned_update_hits(tmp_path, cache, encodes, capsys):
    """An update whose error is measured against the update's own effect (same outputs as the previous
    model) is re-checked that way on a hit."""
    import numpy as np
    from onnx import numpy_helper

    base = small_cnn(seed=0, with_subgraph=False)
    old = save_and_load(base, tmp_path / "old.onnx").path
    rng = np.random.default_rng(7)
    for t in base.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.ndim >= 2:
            t.CopyFrom(numpy_helper.from_array((a + 0.05 * a.std() * rng.standard_normal(a.shape)).astype(np.float32),
                                               t.name))
    new = save_and_load(base, tmp_path / "new.onnx").path
    first = assess(new, tmp_path / "a.json", capsys, "--previous", old)
    d = _transfer(first)["delta"]
    assert len(encodes) == 2 and d is not None and d["fidelity_relative_to"] != "reference outputs"
    assert assess(new, tmp_path / "b.json", capsys, "--previous", old) == first and len(encodes) == 2
