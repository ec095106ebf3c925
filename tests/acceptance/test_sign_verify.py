"""Signed labels: keygen, assess --sign-key, verify (and each way it must fail), embedded labels."""

from __future__ import annotations

import json
import os
import stat

import onnx
import onnxruntime as ort
import pytest

from support import ROOT, save, tiny_cnn
from eeki_label.cli import main
from eeki_label.embed import METADATA_KEY, extract, record
from eeki_label.models import Label, dump_json
from eeki_label.signing import canonical_bytes, jcs, jcs_number, load_private_key, sign_document

EXAMPLE = ROOT / "examples" / "ppocr_mobile_v2_cls.onnx"


def run(args, capsys=None):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, out, err


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A key pair, and a signed label of the example with an embedded copy of the model."""
    d = tmp_path_factory.mktemp("signed")
    assert main(["keygen", "--out", str(d / "issuer.key")]) == 0
    assert main(["keygen", "--out", str(d / "other.key")]) == 0
    assert main(["assess", str(EXAMPLE), "--input-shape", "x=1x3x48x192", "--runs", "1", "-d", "edge-gpu-batch1",
                 "--sign-key", str(d / "issuer.key"), "--issuer", "Test Lab", "--json-shape", "single", "--json", str(d / "label.json"),
                 "--embed", str(d / "embedded.onnx"), "-q"]) == 0
    return d


def test_keygen_writes_a_private_key_only_its_owner_can_read(signed, tmp_path, capsys):
    mode = stat.S_IMODE(os.stat(signed / "issuer.key").st_mode)
    assert mode == 0o600
    assert (signed / "issuer.key.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    code, _, err = run(["keygen", "--out", signed / "issuer.key"], capsys)
    assert code == 46 and "exists" in err


def test_signed_label_verifies_with_model_and_key(signed, capsys):
    doc = json.loads((signed / "label.json").read_text())
    sig = doc["signature"]
    assert sig["algorithm"] == "ed25519" and sig["canonicalization"] == "jcs-rfc8785-without-signature"
    assert sig["key_fingerprint"].startswith("sha256:")
    code, out, err = run(["verify", signed / "label.json", "--model", EXAMPLE,
                          "--public-key", signed / "issuer.key.pub"], capsys)
    assert code == 0, err
    assert out.startswith("OK label.json") and "key matches --public-key" in out and "model sha256" in out


def test_reformatted_label_still_verifies(signed, tmp_path, capsys):
    """The signature covers the canonical form, not the file's whitespace or member order."""
    doc = json.loads((signed / "label.json").read_text())
    shuffled = dict(reversed(list(doc.items())))
    path = tmp_path / "compact.json"
    path.write_text(json.dumps(shuffled, separators=(",", ":"), ensure_ascii=True))
    code, _, err = run(["verify", path, "--public-key", signed / "issuer.key.pub"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("tamper", [
    lambda d: d["label"].__setitem__("class", "G" if d["label"]["class"] != "G" else "A"),
    lambda d: d["inference"].__setitem__("energy_j", d["inference"]["energy_j"] * 0.5),
    lambda d: d.__setitem__("issuer", "Someone Else"),
    lambda d: d["model"].__setitem__("sha256", "0" * 64),
])
def test_a_tampered_field_fails(signed, tmp_path, capsys, tamper):
    doc = json.loads((signed / "label.json").read_text())
    tamper(doc)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(doc, indent=2))
    code, _, err = run(["verify", path], capsys)
    assert code == 42 and err.startswith("error: ") and err.count("\n") == 1


def test_another_model_fails(signed, tmp_path, capsys):
    other = save(tiny_cnn(), tmp_path / "other.onnx")
    code, _, err = run(["verify", signed / "label.json", "--model", other], capsys)
    assert code == 44 and "not the labelled model" in err


def test_a_wrong_key_fails(signed, capsys):
    code, _, err = run(["verify", signed / "label.json", "--public-key", signed / "other.key.pub"], capsys)
    assert code == 43 and "not with the given key" in err


def test_a_label_re_signed_by_someone_else_fails_against_the_issuer_key(signed, tmp_path, capsys):
    doc = Label.model_validate_json((signed / "label.json").read_text())
    forged = sign_document(doc.model_copy(update={"issuer": "Test Lab"}), load_private_key(signed / "other.key"))
    path = tmp_path / "forged.json"
    path.write_text(dump_json(forged))
    assert run(["verify", path], capsys)[0] == 0  # valid for the key it names ...
    assert run(["verify", path, "--public-key", signed / "issuer.key.pub"], capsys)[0] == 43  # ... not the issuer's


def test_an_unsigned_label_fails(tmp_path, capsys):
    path = tmp_path / "u.json"
    assert main(["assess", str(EXAMPLE), "--input-shape", "x=1x3x48x192", "--runs", "0", "-d", "edge-gpu-batch1",
                 "--json", str(path), "-q"]) == 0
    code, _, err = run(["verify", path], capsys)
    assert code == 41 and "not signed" in err


@pytest.mark.parametrize("change, message", [
    (lambda lab: {"rules": lab.rules.model_copy(update={"version": "9.9.9"})}, "does not know"),
    (lambda lab: {"catalogue": lab.catalogue.model_copy(update={"sha256": "f" * 64})}, "differs"),
    (lambda lab: {"device_data": lab.device_data.model_copy(update={"version": "0.0.1"})}, "not the installed one"),
])
def test_unknown_or_changed_data_files_fail(signed, tmp_path, capsys, change, message):
    lab = Label.model_validate_json((signed / "label.json").read_text())
    doc = sign_document(lab.model_copy(update=change(lab)), load_private_key(signed / "issuer.key"))
    path = tmp_path / "d.json"
    path.write_text(dump_json(doc))
    code, _, err = run(["verify", path, "--public-key", signed / "issuer.key.pub"], capsys)
    assert code == 45 and message in err


def test_embedded_label_verifies_from_the_model_file_alone(signed, capsys):
    emb = signed / "embedded.onnx"
    original = EXAMPLE.read_bytes()
    data = emb.read_bytes()
    label_text = (signed / "label.json").read_text()
    assert data == original + record(label_text)  # the original bytes, then one metadata record
    model = onnx.load(str(emb))
    onnx.checker.check_model(model)
    assert {p.key: p.value for p in model.metadata_props}[METADATA_KEY] == label_text
    assert ort.InferenceSession(str(emb)).get_modelmeta().custom_metadata_map[METADATA_KEY] == label_text
    code, out, err = run(["verify", emb, "--public-key", signed / "issuer.key.pub"], capsys)
    assert code == 0, err
    assert "embedded in embedded.onnx" in out
    # and the embedded model is itself a model: verify --model accepts it via its embedded record
    assert extract(emb).original_bytes == len(original)


def test_a_changed_embedded_model_fails(signed, tmp_path, capsys):
    data = bytearray((signed / "embedded.onnx").read_bytes())
    data[len(data) // 3] ^= 0x01  # a weight byte
    path = tmp_path / "changed.onnx"
    path.write_bytes(bytes(data))
    code, _, err = run(["verify", path], capsys)
    assert code == 44 and "changed after labelling" in err


def test_a_model_without_an_embedded_label_fails(capsys):
    code, _, err = run(["verify", EXAMPLE], capsys)
    assert code == 40 and "no embedded eeki-label label" in err


def test_embedding_refuses_a_model_that_already_carries_a_label(signed, tmp_path, capsys):
    code, _, err = run(["assess", signed / "embedded.onnx", "--input-shape", "x=1x3x48x192", "--runs", "0",
                        "-d", "edge-gpu-batch1", "--embed", tmp_path / "again.onnx", "--json", tmp_path / "l.json",
                        "-q"], capsys)
    assert code == 2 and "already carries an embedded label" in err
    assert list(tmp_path.iterdir()) == []  # neither the copy nor the label were written


def test_render_refuses_a_tampered_signed_label(signed, tmp_path, capsys):
    doc = json.loads((signed / "label.json").read_text())
    doc["inference"]["energy_j"] *= 0.5
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    code, _, err = run(["render", path, "--pdf", tmp_path / "t.pdf"], capsys)
    assert code == 42 and not (tmp_path / "t.pdf").exists()


def test_a_bad_sign_key_fails_before_assessing(tmp_path, capsys):
    key = tmp_path / "k.pem"
    key.write_text("not a key")
    code, _, err = run(["assess", EXAMPLE, "--input-shape", "x=1x3x48x192", "--sign-key", key,
                        "--json", tmp_path / "l.json"], capsys)
    assert code == 46 and not (tmp_path / "l.json").exists()


# RFC 8785 (JCS) test vectors: numbers (appendix B) and the canonical form of a document.
@pytest.mark.parametrize("bits, text", [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("444b1ae4d6e2ef50", "1e+21"), ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("3eb0c6f7a0b5ed8d", "0.000001"), ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("41b3de4355555555", "333333333.3333333"), ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
])
def test_jcs_numbers_follow_rfc_8785(bits, text):
    import struct

    assert jcs_number(struct.unpack(">d", bytes.fromhex(bits))[0]) == text


def test_canonical_bytes_sort_members_by_utf16_and_drop_only_the_top_level_signature():
    doc = {"signature": {"value": "x"}, "b": [1, 2.5, None, True], "a": "\u00e9\u2028\"\\\x01",
           "\U0001F600": {"signature": 1}, "\ufb33": 3, "\u20ac": 1.0}
    expected = ('{"a":"\u00e9\u2028\\"\\\\\\u0001","b":[1,2.5,null,true],"\u20ac":1,'
                '"\U0001F600":{"signature":1},"\ufb33":3}')
    assert jcs({k: v for k, v in doc.items() if k != "signature"}) == expected
    assert canonical_bytes(doc) == expected.encode("utf-8")
