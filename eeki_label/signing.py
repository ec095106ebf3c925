"""Signed labels: the canonical serialisation, Ed25519 keys, signing and checking a signature.

**What is signed** (``docs/signing.md``): the label document as it is written to JSON (a ``Label`` or
a ``LabelSet``), with its top-level ``signature`` member removed, serialised with the JSON
Canonicalization Scheme of RFC 8785 (JCS):

* object members sorted by their names compared as UTF-16 code units; no whitespace;
* strings as ``JSON.stringify`` writes them: ``"`` and ``\\`` escaped, ``\\b \\f \\n \\r \\t``, the other
  control characters below U+0020 as ``\\u00xx`` (lower-case hex), everything else literal;
* numbers as ECMAScript writes an IEEE-754 double (shortest round-trip digits, ``1e-7``, ``1e+21``;
  integers are doubles, so they must lie within +-2^53);
* the result encoded as UTF-8.

Any JCS implementation (there is one for most languages) reproduces these bytes from the label file:
parse it, delete ``signature``, canonicalise, and check the Ed25519 signature in
``signature.value`` with the raw public key in ``signature.public_key`` (both base64). The label id
printed on the certificate is the first 16 hex digits of the sha256 of the same bytes.

No I/O here except reading and writing key material through the functions that say so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from eeki_label.errors import KeyFileError, LabelFileError, SignatureInvalidError, UnsignedLabelError

ALGORITHM = "ed25519"
CANONICALIZATION = "jcs-rfc8785-without-signature"
SIGNATURE_MEMBER = "signature"
_MAX_SAFE_INTEGER = 2**53


# --------------------------------------------------------------------------------------------
# Canonical serialisation (RFC 8785)


def canonical_bytes(document: dict) -> bytes:
    """The bytes that are signed: ``document`` (parsed JSON) without its top-level ``signature``."""
    if not isinstance(document, dict):
        raise LabelFileError("a label document must be a JSON object")
    body = {k: v for k, v in document.items() if k != SIGNATURE_MEMBER}
    try:
        return _jcs(body).encode("utf-8")
    except UnicodeEncodeError as e:
        raise LabelFileError("the label contains a lone UTF-16 surrogate and cannot be canonicalised") from e


def jcs(value: Any) -> str:
    """RFC 8785 canonical JSON text of a parsed JSON value (exposed for tests and auditors)."""
    return _jcs(value)


def _jcs(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return jcs_number(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _jcs(value[k]) for k in keys) + "}"
    raise LabelFileError(f"a {type(value).__name__} is not a JSON value")


def jcs_number(x: "int | float") -> str:
    """ECMAScript ``Number.prototype.toString`` of a double, as RFC 8785 requires."""
    if isinstance(x, int):
        if abs(x) > _MAX_SAFE_INTEGER:
            raise LabelFileError(f"integer {x} is outside +-2^53 and has no exact canonical form")
        return str(x)
    if not math.isfinite(x):
        raise LabelFileError("NaN and infinities are not JSON numbers")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp_text = repr(abs(x)).partition("e")  # repr: shortest round-trip digits
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    n = len(int_part) + (int(exp_text) if exp_text else 0)  # value = 0.<digits> x 10^n
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    s = stripped.rstrip("0")
    k = len(s)
    if k <= n <= 21:
        return sign + s + "0" * (n - k)
    if 0 < n <= 21:
        return sign + s[:n] + "." + s[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + s
    e = n - 1
    exponent = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + (s if k == 1 else s[0] + "." + s[1:]) + exponent


def label_id(document: dict) -> str:
    """First 16 hex digits of the sha256 of the canonical bytes: names this exact content."""
    return hashlib.sha256(canonical_bytes(document)).hexdigest()[:16]


def parse_document(text: "str | bytes", source: str) -> dict:
    """Parse a label file strictly: UTF-8, one JSON object, no duplicate member names, no NaN."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise LabelFileError(f"{source}: not UTF-8 text (byte {e.start})") from e

    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise LabelFileError(f"{source}: member {k!r} appears twice in one object")
            out[k] = v
        return out

    def bad_constant(name):
        raise LabelFileError(f"{source}: {name} is not a JSON number")

    try:
        doc = json.loads(text, object_pairs_hook=pairs, parse_constant=bad_constant)
    except RecursionError as e:  # nesting deeper than the parser's stack: refused, never a traceback
        raise LabelFileError(f"{source}: not JSON (nested too deeply)") from e
    except ValueError as e:
        raise LabelFileError(f"{source}: not JSON ({e})") from e
    if not isinstance(doc, dict):
        raise LabelFileError(f"{source}: a label document is a JSON object")
    _refuse_lone_surrogates(doc, source)
    return doc


def _refuse_lone_surrogates(doc: dict, source: str) -> None:
    """JSON may escape half of a UTF-16 surrogate pair (``"\\ud800"``); such a string is not Unicode
    text, cannot be written as UTF-8 (PDF, HTML, canonical bytes) and is refused here."""
    stack: list = [doc]
    while stack:
        value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            for text in (key, item):
                if isinstance(text, str) and not text.isascii():
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError as e:
                        raise LabelFileError(f"{source}: a string holds a lone UTF-16 surrogate "
                                             f"(U+{ord(text[e.start]):04X}); not Unicode text") from e
            if isinstance(item, (dict, list)):
                stack.append(item)


# --------------------------------------------------------------------------------------------
# Keys


def fingerprint(raw_public_key: bytes) -> str:
    """``sha256:<hex>`` of the raw 32-byte Ed25519 public key."""
    return "sha256:" + hashlib.sha256(raw_public_key).hexdigest()


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (private key PEM, PKCS #8, unencrypted; public key PEM, SPKI)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


def _read_key_file(path) -> bytes:
    from eeki_label.fileio import read_regular_file

    return read_regular_file(path, 64 * 1024, KeyFileError, "key file")


def load_private_key(path):
    """An Ed25519 private key from a PEM (PKCS #8) file, as ``keygen`` writes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise KeyFileError(f"{path}: encrypted private keys are not supported") from e
    except (ValueError, binascii.Error) as e:
        raise KeyFileError(f"{path}: not a PEM private key") from e
    except Exception as e:  # cryptography raises UnsupportedAlgorithm for unknown key types
        raise KeyFileError(f"{path}: unsupported private key ({type(e).__name__})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path) -> bytes:
    """The raw 32-byte public key from a PEM (SPKI) file, or from a file holding its base64 form."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path)
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except Exception as e:
            raise KeyFileError(f"{path}: not a PEM public key ({type(e).__name__})") from e
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise KeyFileError(f"{path}: neither a PEM public key nor a base64 raw Ed25519 key") from e
    if len(raw) != 32:
        raise KeyFileError(f"{path}: a raw Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


def public_raw(private_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# --------------------------------------------------------------------------------------------
# Sign and check


def sign_document(doc, private_key):
    """Return a copy of ``doc`` (a ``Label`` or ``LabelSet``) with its ``signature`` set.

    The signed bytes are derived from the JSON text that will be written (``dump_json``), parsed
    back, so that a verifier who only has the file reproduces them exactly."""
    from eeki_label.models import Signature, dump_json

    unsigned = doc.model_copy(update={"signature": None})
    message = canonical_bytes(json.loads(dump_json(unsigned)))
    raw = public_raw(private_key)
    signature = Signature(
        algorithm=ALGORITHM, canonicalization=CANONICALIZATION,
        public_key=base64.b64encode(raw).decode("ascii"), key_fingerprint=fingerprint(raw),
        value=base64.b64encode(private_key.sign(message)).decode("ascii"),
    )
    return doc.model_copy(update={"signature": signature})


@dataclass(frozen=True)
class SignatureCheck:
    public_key: bytes
    """Raw 32-byte Ed25519 public key the document names (and is signed with)."""
    key_fingerprint: str
    label_id: str


def check_signature(document: dict, source: str = "label") -> SignatureCheck:
    """Check the document's own signature against its content; raise on any mismatch.

    This proves the content is unchanged since it was signed with the key the document names; who
    holds that key is the caller's question (``verify --public-key``)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig = document.get(SIGNATURE_MEMBER)
    if sig is None:
        raise UnsignedLabelError(f"{source} is not signed (no signature; sign with assess --sign-key KEY)")
    if not isinstance(sig, dict):
        raise SignatureInvalidError(f"{source}: the signature member is not an object")
    if sig.get("algorithm") != ALGORITHM:
        raise SignatureInvalidError(f"{source}: unsupported signature algorithm {sig.get('algorithm')!r}")
    if sig.get("canonicalization", CANONICALIZATION) != CANONICALIZATION:
        raise SignatureInvalidError(f"{source}: unsupported canonicalization {sig.get('canonicalization')!r}")
    try:
        raw = base64.b64decode(sig.get("public_key", ""), validate=True)
        value = base64.b64decode(sig.get("value", ""), validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
        raise SignatureInvalidError(f"{source}: signature or public key is not valid base64") from e
    if len(raw) != 32 or len(value) != 64:
        raise SignatureInvalidError(f"{source}: malformed Ed25519 public key or signature (wrong length)")
    if sig.get("key_fingerprint") != fingerprint(raw):
        raise SignatureInvalidError(f"{source}: key_fingerprint does not match the public key in the signature")
    message = canonical_bytes(document)
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(value, message)
    except InvalidSignature as e:
        raise SignatureInvalidError(
            f"{source}: the signature does not match the content: the label was changed after it was signed") from e
    return SignatureCheck(public_key=raw, key_fingerprint=fingerprint(raw),
                          label_id=hashlib.sha256(message).hexdigest()[:16])
