#!/usr/bin/env python3
"""Independent reference implementation of Tacit protocol version 2 (docs/PROTOCOL.md).

Written from docs/PROTOCOL.md and the Signal specifications it cites, not from the Rust
code, using only vetted libraries:

* ``cryptography`` (OpenSSL): X25519, Ed25519, AES-256-GCM-SIV, HMAC/HKDF-SHA-256,
  SHA-256, SHA-512;
* ``kyber-py``: ML-KEM-1024 (FIPS 203), whose internal algorithms take the randomness
  explicitly (``key_derive(d || z)``, ``_encaps_internal(ek, m)``), so the KEM is fixed too.

Everything is deterministic: every private key and every KEM random input is
SHA-256("Tacit KAT v1 " || label). The script writes JSON files of hex strings to
``crates/protocol/tests/vectors/``; ``--check`` regenerates them in memory and exits 1 if
the committed files differ. The Rust tests (``crates/protocol/src/kat.rs``) check the Rust
implementation against the files byte for byte.

Section numbers (§) refer to docs/PROTOCOL.md.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import json
import sys
import unicodedata
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from kyber_py.ml_kem import ML_KEM_1024

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "crates" / "protocol" / "tests" / "vectors"


class Reject(Exception):
    """A check of the protocol refused its input; ``reason`` is the KAT outcome name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --------------------------------------------------------------------------------------
# Encoding (document conventions: big-endian integers, bool as 0x00/0x01)
# --------------------------------------------------------------------------------------


def u8(v: int) -> bytes:
    return v.to_bytes(1, "big")


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def u64(v: int) -> bytes:
    return v.to_bytes(8, "big")


def boolean(v: bool) -> bytes:
    return b"\x01" if v else b"\x00"


class Reader:
    """Reads fields; every shortage is a ``decode`` rejection."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Reject("decode", "truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def boolean(self) -> bool:
        b = self.u8()
        if b not in (0, 1):
            raise Reject("decode", "bool")
        return b == 1

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise Reject("decode", "trailing bytes")


def seed(label: str) -> bytes:
    """A fixed 32-byte secret for ``label``."""
    return hashlib.sha256(b"Tacit KAT v1 " + label.encode()).digest()


# --------------------------------------------------------------------------------------
# §1 Primitives
# --------------------------------------------------------------------------------------

P25519 = 2**255 - 19


def x25519_public(sk: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_check_public(pk: bytes) -> bytes:
    """§1 Key validation: canonical iff the top bit is clear and u < p (one comparison)."""
    if len(pk) != 32 or int.from_bytes(pk, "little") >= P25519:
        raise Reject("decode", "non-canonical X25519 key")
    return pk


def x25519(sk: bytes, pk: bytes) -> bytes:
    x25519_check_public(pk)
    try:
        out = X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))
    except ValueError as e:  # OpenSSL refuses an all-zero result
        raise Reject("degenerate_dh", str(e)) from e
    if out == bytes(32):
        raise Reject("degenerate_dh")
    return out


def ed25519_public(seed32: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed32).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def ed25519_sign(seed32: bytes, msg: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed32).sign(msg)


def ed25519_verify(pk: bytes, msg: bytes, sig: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
    except InvalidSignature as e:
        raise Reject("bad_signature") from e


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    h = HMAC(key, hashes.SHA256())
    h.update(msg)
    return h.finalize()


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def sha512(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA512())
    h.update(data)
    return h.finalize()


def aead_seal(key: bytes, nonce: bytes, aad: bytes, pt: bytes) -> bytes:
    return AESGCMSIV(key).encrypt(nonce, pt, aad)  # ciphertext || 16-byte tag (RFC 8452)


def aead_open(key: bytes, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
    try:
        return AESGCMSIV(key).decrypt(nonce, ct, aad)
    except InvalidTag as e:
        raise Reject("auth") from e


KEM = ML_KEM_1024
KEM_EK_LEN = 1568
KEM_CT_LEN = 1568
KEM_DK_LEN = 3168


def kem_keygen(d: bytes, z: bytes) -> tuple[bytes, bytes]:
    ek, dk = KEM.key_derive(d + z)  # FIPS 203 ML-KEM.KeyGen_internal(d, z)
    assert len(ek) == KEM_EK_LEN and len(dk) == KEM_DK_LEN
    return ek, dk


def kem_encaps(ek: bytes, m: bytes) -> tuple[bytes, bytes]:
    ss, ct = KEM._encaps_internal(ek, m)  # FIPS 203 ML-KEM.Encaps_internal(ek, m)
    assert len(ct) == KEM_CT_LEN and len(ss) == 32
    return ct, ss


def kem_decaps(dk: bytes, ct: bytes) -> bytes:
    return KEM.decaps(dk, ct)


# --------------------------------------------------------------------------------------
# §2 Names and identities
# --------------------------------------------------------------------------------------

NAME_CHARS = set(b"abcdefghijklmnopqrstuvwxyz0123456789._-")
BINDING_LABEL = b"Tacit v1 device identity binding"
assert len(BINDING_LABEL) == 32


def encode_name(name: str) -> bytes:
    raw = name.encode("ascii")
    assert 3 <= len(raw) <= 32 and set(raw) <= NAME_CHARS
    return u8(len(raw)) + raw


def decode_name(r: Reader) -> str:
    raw = r.take(r.u8())
    if not (3 <= len(raw) <= 32 and set(raw) <= NAME_CHARS):
        raise Reject("decode", "account name")
    return raw.decode("ascii")


def encode_address(name: str, device: int) -> bytes:
    assert device != 0
    return encode_name(name) + u32(device)


class Device:
    """A device identity (§2): signing key DSK, X25519 identity key IK, binding signature."""

    def __init__(self, label: str, name: str, device_id: int):
        self.name = name
        self.device_id = device_id
        self.dsk = seed(label + " device signing key")
        self.ik = seed(label + " device identity key")
        self.dsk_pub = ed25519_public(self.dsk)
        self.ik_pub = x25519_public(self.ik)
        self.binding = ed25519_sign(self.dsk, BINDING_LABEL + self.dsk_pub + self.ik_pub)
        self.public = self.dsk_pub + self.ik_pub + self.binding
        assert len(self.public) == 128

    @property
    def address(self) -> bytes:
        return encode_address(self.name, self.device_id)

    def json(self) -> dict:
        return {
            "account": self.name,
            "device_id": self.device_id,
            "address": self.address.hex(),
            "signing_seed": self.dsk.hex(),
            "identity_secret": self.ik.hex(),
            "device_public": self.public.hex(),
        }


def verify_device_public(dp: bytes) -> tuple[bytes, bytes]:
    dsk_pub, ik_pub, binding = dp[:32], dp[32:64], dp[64:128]
    x25519_check_public(ik_pub)
    try:
        ed25519_verify(dsk_pub, BINDING_LABEL + dsk_pub + ik_pub, binding)
    except Reject as e:
        raise Reject("bad_binding") from e
    return dsk_pub, ik_pub


# --------------------------------------------------------------------------------------
# §3 Device list
# --------------------------------------------------------------------------------------

DEVICE_LIST_LABEL = b"Tacit v1 device list"
ROTATION_LABEL = b"Tacit v1 account key rotation"
MAX_DEVICES = 32
MAX_LABEL = 64
FLAG_APPROVER = 0x01


class Entry:
    """A device list entry (§3): id, DevicePublic, and in format 2 flags, time added, label."""

    def __init__(self, device_id: int, public: bytes, approver: bool = False, added_ms: int = 0,
                 label: bytes = b"", flags: int | None = None):
        self.device_id = device_id
        self.public = public
        self.flags = (FLAG_APPROVER if approver else 0) if flags is None else flags
        self.added_ms = added_ms
        self.label = label  # raw bytes, so vectors can hold invalid labels

    def encode(self, fmt: int) -> bytes:
        out = u32(self.device_id) + self.public
        if fmt == 2:
            out += u8(self.flags) + u64(self.added_ms) + u8(len(self.label)) + self.label
        return out


def device_list_signed_part(fmt: int, name: str, account_key: bytes, version: int, entries: list[Entry]) -> bytes:
    out = u8(fmt) + DEVICE_LIST_LABEL + encode_name(name) + account_key + u64(version) + u32(len(entries))
    for e in entries:
        out += e.encode(fmt)
    return out


def sign_device_list(account_seed: bytes, name: str, version: int, entries: list[Entry], fmt: int = 2) -> bytes:
    part = device_list_signed_part(fmt, name, ed25519_public(account_seed), version, entries)
    return part + ed25519_sign(account_seed, part)


def valid_label(raw: bytes) -> bool:
    """§3: at most 64 bytes of UTF-8 without control characters (Unicode category Cc)."""
    if len(raw) > MAX_LABEL:
        return False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(unicodedata.category(c) == "Cc" for c in text)


def verify_device_list(data: bytes, name: str, known_key: bytes | None) -> dict:
    r = Reader(data)
    fmt = r.u8()
    if fmt not in (1, 2):
        raise Reject("decode", "device list format")
    if r.take(len(DEVICE_LIST_LABEL)) != DEVICE_LIST_LABEL:
        raise Reject("decode", "device list header")
    listed = decode_name(r)
    account_key = r.take(32)
    version = r.u64()
    n = r.u32()
    if n > MAX_DEVICES:
        raise Reject("decode", "too many devices")
    devices = []
    for _ in range(n):
        device_id = r.u32()
        if device_id == 0:
            raise Reject("decode", "device id 0")
        public = r.take(128)
        if fmt == 1:
            # Format 1 lists were made for an account's first device, which holds the key.
            devices.append({"id": device_id, "public": public, "approver": device_id == 1, "added_ms": 0,
                            "label": ""})
            continue
        flags = r.u8()
        if flags & ~FLAG_APPROVER:
            raise Reject("bad_entry", "unknown flags")
        added_ms = r.u64()
        length = r.u8()
        if length > MAX_LABEL:
            raise Reject("bad_entry", "label too long")
        raw = r.take(length)
        try:
            label = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Reject("bad_entry", "label not UTF-8") from e
        devices.append({"id": device_id, "public": public, "approver": bool(flags & FLAG_APPROVER),
                        "added_ms": added_ms, "label": label})
    signed_len = r.pos
    signature = r.take(64)
    r.finish()
    if listed != name:
        raise Reject("wrong_account")
    if known_key is not None and known_key != account_key:
        raise Reject("account_key_changed")
    if n == 0:
        raise Reject("bad_device_count")
    if not all(valid_label(d["label"].encode()) for d in devices):
        raise Reject("bad_entry", "control character in a label")
    if len({d["id"] for d in devices}) != n:
        raise Reject("duplicate_device")
    # One device identity under two ids (either of its keys): a list that lets one device
    # stand for two (a copy of the device, or a server's trick) is refused.
    if len({d["public"][:32] for d in devices}) != n or len({d["public"][32:64] for d in devices}) != n:
        raise Reject("duplicate_identity")
    ed25519_verify(account_key, data[:signed_len], signature)
    for d in devices:
        verify_device_public(d["public"])
    if not any(d["approver"] for d in devices):
        raise Reject("no_approver")
    return {"format": fmt, "version": version, "account_key": account_key, "devices": devices}


def sign_rotation(previous_seed: bytes, list_bytes: bytes) -> bytes:
    """§3 account key rotation: the previous account key signs the new list."""
    return ed25519_sign(previous_seed, ROTATION_LABEL + list_bytes)


def verify_rotation(previous_key: bytes, list_bytes: bytes, signature: bytes) -> None:
    try:
        ed25519_verify(previous_key, ROTATION_LABEL + list_bytes, signature)
    except Reject as e:
        raise Reject("bad_rotation") from e


# --------------------------------------------------------------------------------------
# §4 Prekeys
# --------------------------------------------------------------------------------------

SPK_LABEL = b"Tacit v1 signed prekey"
KEM_LABEL = b"Tacit v1 kem prekey"
KEM_ONE_TIME = 1
KEM_LAST_RESORT = 2
SPK_ID, KEM_ID, OPK_ID = 7, 42, 1001  # Bob's prekey ids in the vectors


class Prekeys:
    """Bob's private prekeys: one signed prekey, one one-time KEM prekey, one OPK."""

    def __init__(self, device: Device, label: str, spk_id: int, kem_id: int, opk_id: int):
        self.device = device
        self.spk_id = spk_id
        self.spk = seed(label + " signed prekey")
        self.spk_pub = x25519_public(self.spk)
        self.spk_sig = ed25519_sign(device.dsk, SPK_LABEL + u32(spk_id) + self.spk_pub)
        self.kem_kind = KEM_ONE_TIME
        self.kem_id = kem_id
        self.kem_d = seed(label + " kem prekey d")
        self.kem_z = seed(label + " kem prekey z")
        self.kem_ek, self.kem_dk = kem_keygen(self.kem_d, self.kem_z)
        self.kem_sig = ed25519_sign(device.dsk, KEM_LABEL + u8(self.kem_kind) + u32(kem_id) + self.kem_ek)
        self.opk_id = opk_id
        self.opk = seed(label + " one-time prekey")
        self.opk_pub = x25519_public(self.opk)
        # Private keys still held, by (kind, id); one-time ones are deleted after use.
        self.one_time_opks = {opk_id: self.opk}
        self.one_time_kems = {kem_id: self.kem_dk}

    def bundle(self) -> bytes:
        d = self.device
        return (
            u8(1)
            + d.address
            + d.public
            + u32(self.spk_id)
            + self.spk_pub
            + self.spk_sig
            + u8(self.kem_kind)
            + u32(self.kem_id)
            + self.kem_ek
            + self.kem_sig
            + boolean(True)
            + u32(self.opk_id)
            + self.opk_pub
        )

    def json(self) -> dict:
        return {
            "signed_prekey": {
                "id": self.spk_id,
                "secret": self.spk.hex(),
                "public": self.spk_pub.hex(),
                "signature": self.spk_sig.hex(),
            },
            "kem_prekey": {
                "kind": self.kem_kind,
                "id": self.kem_id,
                "d": self.kem_d.hex(),
                "z": self.kem_z.hex(),
                "encapsulation_key": self.kem_ek.hex(),
                "decapsulation_key": self.kem_dk.hex(),
                "signature": self.kem_sig.hex(),
            },
            "one_time_prekey": {"id": self.opk_id, "secret": self.opk.hex(), "public": self.opk_pub.hex()},
        }


def parse_bundle(data: bytes) -> dict:
    r = Reader(data)
    if r.u8() != 1:
        raise Reject("decode", "bundle version")
    name = decode_name(r)
    device_id = r.u32()
    identity = r.take(128)
    spk_id, spk_pub, spk_sig = r.u32(), x25519_check_public(r.take(32)), r.take(64)
    kem_kind = r.u8()
    if kem_kind not in (KEM_ONE_TIME, KEM_LAST_RESORT):
        raise Reject("decode", "kem kind")
    kem_id, kem_ek, kem_sig = r.u32(), r.take(KEM_EK_LEN), r.take(64)
    opk = None
    if r.boolean():
        opk = (r.u32(), x25519_check_public(r.take(32)))
    r.finish()
    return {
        "name": name,
        "device_id": device_id,
        "identity": identity,
        "spk": (spk_id, spk_pub, spk_sig),
        "kem": (kem_kind, kem_id, kem_ek, kem_sig),
        "opk": opk,
    }


def verify_bundle(b: dict, expected_identity: bytes) -> None:
    """§4: the identity must be the device list's, and both prekey signatures verify."""
    if b["identity"] != expected_identity:
        raise Reject("identity_mismatch")
    dsk_pub = b["identity"][:32]
    spk_id, spk_pub, spk_sig = b["spk"]
    ed25519_verify(dsk_pub, SPK_LABEL + u32(spk_id) + spk_pub, spk_sig)
    kind, kem_id, ek, sig = b["kem"]
    ed25519_verify(dsk_pub, KEM_LABEL + u8(kind) + u32(kem_id) + ek, sig)


# --------------------------------------------------------------------------------------
# §5 PQXDH
# --------------------------------------------------------------------------------------

PQXDH_INFO = b"Tacit_PQXDH_CURVE25519_SHA-256_ML-KEM-1024"
AD_LABEL = b"Tacit v2 PQXDH AD"
TRANSCRIPT_LABEL = b"Tacit v2 PQXDH transcript"


def pqxdh_kdf(dhs: list[bytes], ss: bytes) -> bytes:
    return hkdf(bytes(32), b"\xff" * 32 + b"".join(dhs) + ss, PQXDH_INFO, 32)


def transcript(ek_pub: bytes, spk_id: int, opk_id: int | None, kem_kind: int, kem_id: int, kem_ct: bytes) -> bytes:
    """§5: the hash of the initial message's PQXDH fields that AD binds."""
    opk = boolean(True) + u32(opk_id) if opk_id is not None else boolean(False)
    return sha256(TRANSCRIPT_LABEL + ek_pub + u32(spk_id) + opk + u8(kem_kind) + u32(kem_id) + kem_ct)


def associated_data(init_public: bytes, init_addr: bytes, resp_public: bytes, resp_addr: bytes, fields: bytes) -> bytes:
    # DSK_pub || IK_pub is the first 64 bytes of DevicePublic; `fields` is transcript(...).
    return AD_LABEL + init_public[:64] + init_addr + resp_public[:64] + resp_addr + fields


# --------------------------------------------------------------------------------------
# §7 Padding and messages
# --------------------------------------------------------------------------------------

MIN_BUCKET = 256
MAX_PLAINTEXT = 65535
HEADER_LEN = 42
TAG_LEN = 16


def bucket(n: int) -> int:
    if n <= MIN_BUCKET:
        return MIN_BUCKET
    e = n.bit_length() - 1  # floor(log2 n)
    s = e.bit_length()  # floor(log2 E) + 1
    z = e - s
    return (n + 2**z - 1) // 2**z * 2**z


def pad(pt: bytes) -> bytes:
    if len(pt) > MAX_PLAINTEXT:
        raise Reject("too_long")
    total = bucket(len(pt) + 1)
    return pt + b"\x80" + bytes(total - len(pt) - 1)


def unpad(buf: bytes) -> bytes:
    stripped = buf.rstrip(b"\x00")
    if not stripped.endswith(b"\x80"):
        raise Reject("padding")
    return stripped[:-1]


VERSION = 2


def encode_header(dh: bytes, pn: int, n: int) -> bytes:
    return u8(VERSION) + u8(1) + dh + u32(pn) + u32(n)


def parse_ratchet_body(r: Reader) -> dict:
    dh = x25519_check_public(r.take(32))
    pn, n = r.u32(), r.u32()
    ct = r.rest()
    if not (MIN_BUCKET + TAG_LEN <= len(ct) <= 65536 + TAG_LEN):
        raise Reject("decode", "ciphertext length")
    return {"dh": dh, "pn": pn, "n": n, "ct": ct}


def parse_message(data: bytes) -> dict:
    r = Reader(data)
    if r.u8() != VERSION:
        raise Reject("decode", "version")
    t = r.u8()
    if t == 1:
        m = {"type": "ratchet", "ratchet": parse_ratchet_body(r)}
    elif t == 2:
        ik = x25519_check_public(r.take(32))
        ek = x25519_check_public(r.take(32))
        spk_id = r.u32()
        opk_id = r.u32() if r.boolean() else None
        kind = r.u8()
        if kind not in (KEM_ONE_TIME, KEM_LAST_RESORT):
            raise Reject("decode", "kem kind")
        kem_id = r.u32()
        ct = r.take(KEM_CT_LEN)
        if r.u8() != VERSION or r.u8() != 1:
            raise Reject("decode", "inner message")
        m = {
            "type": "prekey",
            "ik": ik,
            "ek": ek,
            "spk_id": spk_id,
            "opk_id": opk_id,
            "kem_kind": kind,
            "kem_id": kem_id,
            "kem_ct": ct,
            "ratchet": parse_ratchet_body(r),
        }
    else:
        raise Reject("decode", "type")
    r.finish()
    return m


# --------------------------------------------------------------------------------------
# §6 Double Ratchet (Signal's state machine; Tacit's lazy sending chain)
# --------------------------------------------------------------------------------------

MAX_MESSAGE_GAP = 25_000
MAX_SKIPPED_PER_CHAIN = 2_000
MAX_RECEIVING_CHAINS = 5


def kdf_rk(rk: bytes, dh: bytes) -> tuple[bytes, bytes]:
    okm = hkdf(rk, dh, b"Tacit v1 ratchet root", 64)
    return okm[:32], okm[32:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """Returns (next chain key, message key)."""
    return hmac_sha256(ck, b"\x02"), hmac_sha256(ck, b"\x01")


def message_key_material(mk: bytes) -> tuple[bytes, bytes]:
    okm = hkdf(bytes(32), mk, b"Tacit v1 message keys", 44)
    return okm[:32], okm[32:]


class Ratchet:
    """State variables as in the Double Ratchet specification §3.2."""

    def __init__(self, ad: bytes):
        self.ad = ad
        self.dhs: bytes | None = None  # private
        self.dhr: bytes | None = None
        self.rk = b""
        self.cks: bytes | None = None
        self.ckr: bytes | None = None
        self.ns = self.nr = self.pn = 0
        self.skipped: dict[tuple[bytes, int], bytes] = {}
        self.chains: list[bytes] = []  # receiving chains' ratchet keys, oldest first
        self.send_due = False  # second half of DHRatchet deferred to the next send

    @classmethod
    def init_alice(cls, sk: bytes, bob_spk_pub: bytes, dhs: bytes, ad: bytes) -> "Ratchet":
        s = cls(ad)
        s.dhs = dhs
        s.dhr = bob_spk_pub
        s.rk, s.cks = kdf_rk(sk, x25519(dhs, bob_spk_pub))
        return s

    @classmethod
    def init_bob(cls, sk: bytes, spk: bytes, ad: bytes) -> "Ratchet":
        s = cls(ad)
        s.dhs = spk
        s.rk = sk
        return s

    def encrypt(self, pt: bytes, new_dhs: bytes | None) -> tuple[bytes, dict]:
        """RatchetEncrypt. ``new_dhs`` must be given exactly when a new ratchet key is due."""
        assert (new_dhs is not None) == self.send_due, "fresh ratchet key expected iff one is due"
        if self.send_due:
            self.dhs = new_dhs
            self.rk, self.cks = kdf_rk(self.rk, x25519(self.dhs, self.dhr))
            self.ns = 0
            self.send_due = False
        assert self.cks is not None
        self.cks, mk = kdf_ck(self.cks)
        header = encode_header(x25519_public(self.dhs), self.pn, self.ns)
        self.ns += 1
        key, nonce = message_key_material(mk)
        ct = aead_seal(key, nonce, self.ad + header, pad(pt))
        return header + ct, {"message_key": mk.hex(), "aes_key": key.hex(), "nonce": nonce.hex()}

    def decrypt(self, m: dict) -> bytes:
        """RatchetDecrypt; the state changes only if the message authenticates."""
        trial = copy.deepcopy(self)
        pt = trial._decrypt(m)
        self.__dict__.update(trial.__dict__)
        return pt

    def _decrypt(self, m: dict) -> bytes:
        header = encode_header(m["dh"], m["pn"], m["n"])
        slot = (m["dh"], m["n"])
        if slot in self.skipped:  # TrySkippedMessageKeys
            pt = self._open(self.skipped[slot], header, m["ct"])
            del self.skipped[slot]
            return pt
        if m["dh"] in self.chains[:-1]:
            # §6: an old chain is closed; only its stored skipped keys decrypt.
            raise Reject("duplicate")
        if m["dh"] != self.dhr:
            if self.send_due:
                # §6: this side has not sent since the last new ratchet key (lazy sending
                # chain), which an honest peer cannot answer with another new key.
                raise Reject("unexpected_ratchet_key")
            self._skip(m["pn"])
            # DHRatchet, first half; the second half runs at the next send (§6).
            self.pn = self.ns
            self.ns = 0
            self.nr = 0
            self.dhr = m["dh"]
            self.chains.append(self.dhr)
            if len(self.chains) > MAX_RECEIVING_CHAINS:
                gone = self.chains.pop(0)
                self.skipped = {k: v for k, v in self.skipped.items() if k[0] != gone}
            self.rk, self.ckr = kdf_rk(self.rk, x25519(self.dhs, self.dhr))
            self.cks = None
            self.send_due = True
        elif m["n"] < self.nr:
            # §6: below the chain's next index only a stored skipped key may decrypt.
            raise Reject("duplicate")
        self._skip(m["n"])
        self.ckr, mk = kdf_ck(self.ckr)
        self.nr += 1
        return self._open(mk, header, m["ct"])

    def _skip(self, until: int) -> None:
        if self.ckr is None:
            return
        if until > self.nr and until - self.nr > MAX_MESSAGE_GAP:
            raise Reject("too_big_gap")
        while self.nr < until:
            self.ckr, mk = kdf_ck(self.ckr)
            self.skipped[(self.dhr, self.nr)] = mk
            self.nr += 1
        on_chain = sorted(n for dh, n in self.skipped if dh == self.dhr)
        for n in on_chain[: max(0, len(on_chain) - MAX_SKIPPED_PER_CHAIN)]:
            del self.skipped[(self.dhr, n)]  # oldest first

    def _open(self, mk: bytes, header: bytes, ct: bytes) -> bytes:
        key, nonce = message_key_material(mk)
        return unpad(aead_open(key, nonce, self.ad + header, ct))


# --------------------------------------------------------------------------------------
# Sessions: Alice (initiator) and Bob (responder)
# --------------------------------------------------------------------------------------


class Initiator:
    """Alice's session (§5, §6, §7): prekey messages until she has decrypted a reply."""

    def __init__(self, me: Device, bundle: bytes, expected_identity: bytes, ek: bytes, dhs: bytes, kem_m: bytes):
        b = parse_bundle(bundle)
        verify_bundle(b, expected_identity)
        spk_id, spk_pub, _ = b["spk"]
        kind, kem_id, kem_ek, _ = b["kem"]
        ik_b = b["identity"][32:64]
        self.kem_ct, self.kem_ss = kem_encaps(kem_ek, kem_m)
        self.dh = [x25519(me.ik, spk_pub), x25519(ek, ik_b), x25519(ek, spk_pub)]
        if b["opk"] is not None:
            self.dh.append(x25519(ek, b["opk"][1]))
        self.sk = pqxdh_kdf(self.dh, self.kem_ss)
        bob_address = encode_address(b["name"], b["device_id"])
        self.ek_pub = x25519_public(ek)
        opk_id = b["opk"][0] if b["opk"] else None
        fields = transcript(self.ek_pub, spk_id, opk_id, kind, kem_id, self.kem_ct)
        self.ad = associated_data(me.public, me.address, b["identity"], bob_address, fields)
        self.prefix = (
            u8(VERSION)
            + u8(2)
            + me.ik_pub
            + self.ek_pub
            + u32(spk_id)
            + (boolean(True) + u32(b["opk"][0]) if b["opk"] else boolean(False))
            + u8(kind)
            + u32(kem_id)
            + self.kem_ct
        )
        self.ratchet = Ratchet.init_alice(self.sk, spk_pub, dhs, self.ad)
        self.pending = True

    def encrypt(self, pt: bytes, new_dhs: bytes | None) -> tuple[bytes, dict]:
        inner, info = self.ratchet.encrypt(pt, new_dhs)
        return (self.prefix + inner if self.pending else inner), info

    def decrypt(self, wire: bytes) -> bytes:
        m = parse_message(wire)
        if m["type"] != "ratchet":
            raise Reject("unexpected_prekey_message")
        pt = self.ratchet.decrypt(m["ratchet"])
        self.pending = False
        return pt


class Responder:
    """Bob: his device, prekeys, and the sessions he accepted (keyed by base key)."""

    def __init__(self, me: Device, prekeys: Prekeys):
        self.me = me
        self.prekeys = prekeys
        self.sessions: dict[bytes, Ratchet] = {}
        self.seen_base_keys: set[bytes] = set()

    def receive(self, wire: bytes, sender_public: bytes, sender_address: bytes, my_address: bytes | None = None) -> bytes:
        m = parse_message(wire)
        if m["type"] == "ratchet":
            if len(self.sessions) != 1:
                raise Reject("no_session")
            (session,) = self.sessions.values()
            return session.decrypt(m["ratchet"])
        if m["ek"] in self.sessions:  # a resend of the initial message on an existing session
            return self.sessions[m["ek"]].decrypt(m["ratchet"])
        return self.accept(m, sender_public, sender_address, my_address or self.me.address)

    def accept(self, m: dict, sender_public: bytes, sender_address: bytes, my_address: bytes) -> bytes:
        """PQXDH §3.4 then the first RatchetDecrypt; prekeys are consumed only on success."""
        if m["ik"] != sender_public[32:64]:
            raise Reject("identity_mismatch")
        pk = self.prekeys
        if m["spk_id"] != pk.spk_id:
            raise Reject("unknown_prekey", "signed")
        opk = None
        if m["opk_id"] is not None:
            if m["opk_id"] not in pk.one_time_opks:
                raise Reject("unknown_prekey", "one-time")
            opk = pk.one_time_opks[m["opk_id"]]
        if m["kem_kind"] != KEM_ONE_TIME or m["kem_id"] not in pk.one_time_kems:
            raise Reject("unknown_prekey", "kem")
        dk = pk.one_time_kems[m["kem_id"]]
        dh = [x25519(pk.spk, m["ik"]), x25519(self.me.ik, m["ek"]), x25519(pk.spk, m["ek"])]
        if opk is not None:
            dh.append(x25519(opk, m["ek"]))
        sk = pqxdh_kdf(dh, kem_decaps(dk, m["kem_ct"]))
        fields = transcript(m["ek"], m["spk_id"], m["opk_id"], m["kem_kind"], m["kem_id"], m["kem_ct"])
        ad = associated_data(sender_public, sender_address, self.me.public, my_address, fields)
        ratchet = Ratchet.init_bob(sk, pk.spk, ad)
        pt = ratchet.decrypt(m["ratchet"])
        # Authenticated: delete the one-time keys used (§4 Lifecycle).
        if m["opk_id"] is not None:
            del pk.one_time_opks[m["opk_id"]]
        del pk.one_time_kems[m["kem_id"]]
        self.sessions[m["ek"]] = ratchet
        return pt


# --------------------------------------------------------------------------------------
# §8 Safety numbers
# --------------------------------------------------------------------------------------


def fingerprint(key: bytes, name: bytes) -> bytes:
    h = u16(0) + key + name
    for _ in range(5200):
        h = sha512(h + key)
    return h


def fingerprint_digits(fp: bytes) -> str:
    return "".join(f"{int.from_bytes(fp[5 * i : 5 * i + 5], 'big') % 100_000:05d}" for i in range(6))


def safety_number(local_fp: bytes, remote_fp: bytes) -> str:
    a, b = fingerprint_digits(local_fp), fingerprint_digits(remote_fp)
    return a + b if a < b else b + a


def scannable(local_fp: bytes, remote_fp: bytes) -> bytes:
    return u8(1) + local_fp[:32] + remote_fp[:32]


# --------------------------------------------------------------------------------------
# §10 Linking a device
# --------------------------------------------------------------------------------------

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ZERO_SALT = bytes(32)


def link_code(s: bytes) -> str:
    """s and a 12-bit check, SHA256("Tacit v1 link code" || s)[0..12 bits], in Crockford base 32."""
    assert len(s) == 16
    check = sha256(b"Tacit v1 link code" + s)[:2]
    bits = int.from_bytes(s + check, "big") >> 4  # 128 + 12 = 140 bits
    chars = "".join(CROCKFORD[(bits >> (5 * (27 - i))) & 31] for i in range(28))
    return "-".join(chars[i : i + 4] for i in range(0, 28, 4))


def link_code_decode(code: str) -> bytes:
    values = []
    for c in code.upper():
        if c in "- \t":
            continue
        c = {"O": "0", "I": "1", "L": "1"}.get(c, c)
        if c not in CROCKFORD:
            raise Reject("bad_code")
        values.append(CROCKFORD.index(c))
    if len(values) != 28:
        raise Reject("bad_code")
    bits = 0
    for v in values:
        bits = (bits << 5) | v
    raw = (bits << 4).to_bytes(18, "big")
    s = raw[:16]
    if link_code(s).replace("-", "") != "".join(CROCKFORD[v] for v in values):
        raise Reject("code_typo")
    return s


def link_slot_id(s: bytes) -> bytes:
    return hkdf(ZERO_SALT, s, b"Tacit v1 link slot", 16)


def link_offer_key(s: bytes) -> bytes:
    return hkdf(ZERO_SALT, s, b"Tacit v1 link offer", 32)


def device_fingerprint(public: bytes) -> str:
    h = sha256(public)
    return " ".join(f"{int.from_bytes(h[5 * i : 5 * i + 5], 'big') % 100_000:05}" for i in range(5))


def link_answer_keys(s: bytes, dh: bytes, ss: bytes, offer: bytes, eph_pub: bytes, ct: bytes) -> tuple[bytes, bytes]:
    okm = hkdf(s, dh + ss, b"Tacit v1 link answer" + sha256(offer) + eph_pub + ct, 44)
    return okm[:32], okm[32:]


def open_link_offer(s: bytes, offer: bytes) -> dict:
    """§10: MAC first, then parse, binding and prekey signatures."""
    fixed = 1 + 128 + 1 + 100 + (1 + 4 + KEM_EK_LEN + 64) + 32 + KEM_EK_LEN + 32
    if not fixed <= len(offer) <= fixed + MAX_LABEL:
        raise Reject("decode", "offer length")
    body, mac = offer[:-32], offer[-32:]
    if not hmac_compare(hmac_sha256(link_offer_key(s), body), mac):
        raise Reject("bad_mac")
    r = Reader(body)
    if r.u8() != 1:
        raise Reject("decode", "offer format")
    public = r.take(128)
    label = r.take(r.u8())
    spk_id, spk_pub, spk_sig = r.u32(), x25519_check_public(r.take(32)), r.take(64)
    kind, kem_id, kem_ek, kem_sig = r.u8(), r.u32(), r.take(KEM_EK_LEN), r.take(64)
    eph_pub = x25519_check_public(r.take(32))
    eph_ek = r.take(KEM_EK_LEN)
    r.finish()
    if not valid_label(label):
        raise Reject("bad_label")
    try:
        verify_device_public(public)
    except Reject as e:
        raise Reject("bad_binding") from e
    try:
        if kind != KEM_LAST_RESORT:
            raise Reject("bad_prekey")
        ed25519_verify(public[:32], SPK_LABEL + u32(spk_id) + spk_pub, spk_sig)
        ed25519_verify(public[:32], KEM_LABEL + u8(kind) + u32(kem_id) + kem_ek, kem_sig)
    except Reject as e:
        raise Reject("bad_prekey") from e
    return {"public": public, "label": label, "eph_pub": eph_pub, "eph_ek": eph_ek}


def hmac_compare(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def encode_provisioning(name: str, device_id: int, approver_id: int, device_list: bytes,
                        account_seed: bytes | None, history: dict | None) -> bytes:
    out = u8(1) + encode_name(name) + u32(device_id) + u32(approver_id) + u32(len(device_list)) + device_list
    out += boolean(account_seed is not None) + (account_seed or b"")
    out += boolean(history is not None)
    if history is not None:
        out += history["blob_id"] + history["key"] + u64(history["size"]) + u64(history["plain_size"]) + history["digest"]
    return out


# --------------------------------------------------------------------------------------
# §11 History archive
# --------------------------------------------------------------------------------------

CHUNK_LEN = 65536


def archive_seal(key: bytes, plain: bytes) -> list[bytes]:
    subkey = hkdf(ZERO_SALT, key, b"Tacit v1 history archive", 32)
    chunks = [plain[i : i + CHUNK_LEN] for i in range(0, len(plain), CHUNK_LEN)] or [b""]
    out = []
    for i, c in enumerate(chunks):
        last = i == len(chunks) - 1
        nonce = i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        out.append(aead_seal(subkey, nonce, b"", c))
    return out


def archive_sealed_len(n: int) -> int:
    return n + 16 * max(1, -(-n // CHUNK_LEN))


# --------------------------------------------------------------------------------------
# Vector generation
# --------------------------------------------------------------------------------------


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def gen_padding() -> dict:
    lengths = [0, 1, 100, 254, 255, 256, 257, 300, 511, 512, 1000, 1023, 1024, 1025, 4095, 4096,
               10_000, 30_000, 65_000, 65_534, 65_535]
    cases = []
    for n in lengths:
        padded = pad(bytes(n))
        assert unpad(padded) == bytes(n)
        cases.append({"plaintext_len": n, "padded_len": len(padded)})
    # The padded bytes of one short plaintext, byte for byte.
    sample = b"Tacit"
    return {
        "description": "§7 padding: bucket(len + 1); plaintexts longer than 65535 bytes are refused",
        "cases": cases,
        "too_long": [65_536, 100_000],
        "sample": {"plaintext": sample.hex(), "padded": pad(sample).hex()},
    }


def gen_safety_numbers() -> dict:
    alice_seed, bob_seed = seed("alice account key"), seed("bob account key")
    alice_key, bob_key = ed25519_public(alice_seed), ed25519_public(bob_seed)
    fa, fb = fingerprint(alice_key, b"alice"), fingerprint(bob_key, b"bob")
    digits = safety_number(fa, fb)
    assert digits == safety_number(fb, fa) and len(digits) == 60
    return {
        "description": "§8 safety numbers over account keys (Ed25519 public keys of the seeds) and names",
        "alice": {"name": "alice", "account_seed": alice_seed.hex(), "account_key": alice_key.hex(),
                  "fingerprint": fa.hex(), "digits": fingerprint_digits(fa)},
        "bob": {"name": "bob", "account_seed": bob_seed.hex(), "account_key": bob_key.hex(),
                "fingerprint": fb.hex(), "digits": fingerprint_digits(fb)},
        "safety_number": digits,
        "display": " ".join(digits[i : i + 5] for i in range(0, 60, 5)),
        "scannable_alice": scannable(fa, fb).hex(),
        "scannable_bob": scannable(fb, fa).hex(),
    }


def gen_device_list(bob: Device) -> dict:
    account_seed = seed("bob account key")
    account_key = ed25519_public(account_seed)
    second = Device("bob laptop", "bob", 5)
    phone_label = "bob's phone".encode()
    laptop_label = "laptop \u2014 \u00fcn\u00efcode".encode()  # multi-byte UTF-8: lengths are in bytes
    entries = [
        Entry(bob.device_id, bob.public, approver=True, added_ms=1_700_000_000_000, label=phone_label),
        Entry(second.device_id, second.public, approver=False, added_ms=1_700_000_123_456, label=laptop_label),
    ]
    version = 3
    data = sign_device_list(account_seed, "bob", version, entries)
    verify_device_list(data, "bob", account_key)

    # A format 1 list (as stored before format 2): still read; device 1 is the approver.
    first = Device("bob first device", "bob", 1)
    v1_entries = [Entry(1, first.public), Entry(5, second.public)]
    v1 = sign_device_list(account_seed, "bob", 2, v1_entries, fmt=1)
    assert [d["approver"] for d in verify_device_list(v1, "bob", account_key)["devices"]] == [True, False]

    # Account key rotation: a new key signs list version 4, the previous key signs the rotation.
    new_seed = seed("bob account key 2")
    new_key = ed25519_public(new_seed)
    rotated = sign_device_list(new_seed, "bob", 4, [entries[0]])
    verify_device_list(rotated, "bob", new_key)
    rotation_sig = sign_rotation(account_seed, rotated)
    verify_rotation(account_key, rotated, rotation_sig)

    def must_fail(name: str, raw: bytes, account: str, expect: str) -> dict:
        try:
            verify_device_list(raw, account, account_key)
        except Reject as e:
            assert e.reason == expect, (name, e.reason, expect)
            return {"name": name, "account": account, "bytes": raw.hex(), "expect": expect}
        raise AssertionError(f"{name} was accepted")

    def rotation_must_fail(name: str, previous_key: bytes, raw: bytes, sig: bytes) -> dict:
        try:
            verify_rotation(previous_key, raw, sig)
        except Reject as e:
            assert e.reason == "bad_rotation", (name, e.reason)
            return {"name": name, "previous_key": previous_key.hex(), "bytes": raw.hex(), "signature": sig.hex(),
                    "expect": "bad_rotation"}
        raise AssertionError(f"{name} was accepted")

    def with_entry(**changes) -> bytes:
        e = Entry(second.device_id, second.public, added_ms=7, label=b"tablet")
        for k, v in changes.items():
            setattr(e, k, v)
        return sign_device_list(account_seed, "bob", 4, [entries[0], e])

    # A device whose binding signature is broken, in a list the account key signed.
    broken = second.public[:64] + flip(second.public[64:], 10)
    # Offset of the version field: format, label, name (u8 3 "bob"), account key.
    version_at = 1 + 20 + 4 + 32 + 7

    def dev(e: Entry) -> dict:
        d = {"id": e.device_id, "approver": bool(e.flags & FLAG_APPROVER), "added_ms": e.added_ms,
             "label": e.label.decode("utf-8")}
        d["device"] = (bob if e.device_id == bob.device_id else second).json()
        return d

    return {
        "description": "§3 a signed device list (format 2) for account bob, version 3, devices 2 (approver) "
        "and 5; a format 1 list that still verifies; an account key rotation; lists that must be refused",
        "account": "bob",
        "account_seed": account_seed.hex(),
        "account_key": account_key.hex(),
        "version": version,
        "devices": [dev(e) for e in entries],
        "bytes": data.hex(),
        "format1": {
            "version": 2,
            "devices": [{"id": 1, "device": first.json()}, {"id": 5, "device": second.json()}],
            "approvers": [1],
            "bytes": v1.hex(),
        },
        "rotation": {
            "new_account_seed": new_seed.hex(),
            "new_account_key": new_key.hex(),
            "version": 4,
            "device_indexes": [0],
            "bytes": rotated.hex(),
            "signature": rotation_sig.hex(),
        },
        "must_fail": [
            must_fail("signature bit flipped", flip(data, len(data) - 1, 3), "bob", "bad_signature"),
            must_fail("signed part bit flipped (version)", flip(data, version_at), "bob", "bad_signature"),
            must_fail("signed part bit flipped (approver flag)",
                      flip(data, version_at + 8 + 4 + 4 + 128), "bob", "bad_signature"),
            must_fail("verified for another account", data, "carol", "wrong_account"),
            must_fail("entry binding signature broken", with_entry(public=broken), "bob", "bad_binding"),
            must_fail("duplicate device id", with_entry(device_id=bob.device_id), "bob", "duplicate_device"),
            must_fail("one identity under two ids", with_entry(public=entries[0].public), "bob", "duplicate_identity"),
            must_fail("no devices", sign_device_list(account_seed, "bob", 4, []), "bob", "bad_device_count"),
            must_fail("unknown flag bit", with_entry(flags=0x02), "bob", "bad_entry"),
            must_fail("label of 65 bytes", with_entry(label=b"x" * 65), "bob", "bad_entry"),
            must_fail("label with a control character", with_entry(label=b"tab\x07let"), "bob", "bad_entry"),
            must_fail("label with C1 control character", with_entry(label="a\u0085b".encode()), "bob", "bad_entry"),
            must_fail("label not UTF-8", with_entry(label=b"tab\xfflet"), "bob", "bad_entry"),
            must_fail("no approver", sign_device_list(account_seed, "bob", 4, [Entry(2, bob.public), Entry(5, second.public)]),
                      "bob", "no_approver"),
            must_fail("format 1 without device 1",
                      sign_device_list(account_seed, "bob", 4, [Entry(2, bob.public)], fmt=1), "bob", "no_approver"),
            must_fail("unknown format 3", b"\x03" + data[1:], "bob", "decode"),
        ],
        "rotation_must_fail": [
            rotation_must_fail("signed by the new key", account_key, rotated, ed25519_sign(new_seed, ROTATION_LABEL + rotated)),
            rotation_must_fail("signature bit flipped", account_key, rotated, flip(rotation_sig, 0)),
            rotation_must_fail("another list", account_key, data, rotation_sig),
            rotation_must_fail("list without the rotation label", account_key, rotated, ed25519_sign(account_seed, rotated)),
        ],
    }


def gen_bundle(bob: Device, prekeys: Prekeys) -> dict:
    data = prekeys.bundle()
    b = parse_bundle(data)
    verify_bundle(b, bob.public)
    # The KEM key pair works: a decapsulation recovers an encapsulated secret.
    ct, ss = kem_encaps(prekeys.kem_ek, seed("bundle self-test m"))
    assert kem_decaps(prekeys.kem_dk, ct) == ss

    def must_fail(name: str, raw: bytes, expect: str) -> dict:
        try:
            verify_bundle(parse_bundle(raw), bob.public)
        except Reject as e:
            assert e.reason == expect, (name, e.reason, expect)
            return {"name": name, "bytes": raw.hex(), "expect": expect}
        raise AssertionError(f"{name} was accepted")

    addr_len = len(bob.address)
    spk_sig_at = 1 + addr_len + 128 + 4 + 32
    kem_kind_at = spk_sig_at + 64
    kem_sig_at = kem_kind_at + 1 + 4 + KEM_EK_LEN
    other = Device("mallory", "bob", 2)
    return {
        "description": "§4 Bob's prekey bundle: device bob/2, signed prekey, one-time KEM prekey, OPK",
        "device": bob.json(),
        **prekeys.json(),
        "bytes": data.hex(),
        "must_fail": [
            must_fail("signed prekey signature bit flipped", flip(data, spk_sig_at + 5), "bad_signature"),
            must_fail("kem prekey signature bit flipped", flip(data, kem_sig_at + 63, 7), "bad_signature"),
            must_fail("kem prekey kind changed to last-resort",
                      data[:kem_kind_at] + u8(KEM_LAST_RESORT) + data[kem_kind_at + 1 :], "bad_signature"),
            must_fail("identity not the device list's",
                      data[: 1 + addr_len] + other.public + data[1 + addr_len + 128 :], "identity_mismatch"),
        ],
    }


RATCHET_KEYS = {  # a fixed key for every send that needs a fresh ratchet key
    "alice_ratchet_2": seed("alice ratchet key 2"),
    "bob_ratchet_1": seed("bob ratchet key 1"),
    "bob_ratchet_3": seed("bob ratchet key 3"),
    "alice_ratchet_4": seed("alice ratchet key 4"),
}
PLAINTEXTS = {
    "a0": b"Hi Bob, it's Alice.",
    "a1": b"",
    "a2": bytes(range(256)) + b"crosses a padding bucket",
    "b0": "Hej Alice \N{WAVING HAND SIGN}".encode(),
    "b1": b"Second from Bob.",
    "a3": b"Alice, after hearing from Bob.",
    "b2": b"Bob again, on his first chain (crosses a3 in flight).",
    "b3": b"Bob on his second chain.",
    "a4": b"x" * 1000,
}
# (op, party, message, fresh ratchet key or None)
SCRIPT = [
    ("send", "alice", "a0", None),
    ("send", "alice", "a1", None),
    ("send", "alice", "a2", None),
    ("receive", "bob", "a0", None),  # Bob accepts: PQXDH, new session
    ("receive", "bob", "a2", None),  # skips N = 1
    ("receive", "bob", "a1", None),  # out of order: from the stored skipped key
    ("send", "bob", "b0", "bob_ratchet_1"),
    ("send", "bob", "b1", None),
    ("receive", "alice", "b1", None),  # out of order on a new chain
    ("receive", "alice", "b0", None),
    ("send", "alice", "a3", "alice_ratchet_2"),  # a ratchet message now; PN = 3
    ("send", "bob", "b2", None),  # Bob has not seen a3 yet
    ("receive", "bob", "a3", None),
    ("send", "bob", "b3", "bob_ratchet_3"),  # PN = 3
    ("receive", "alice", "b3", None),  # closes chain 1 at PN = 3, storing b2's key
    ("receive", "alice", "b2", None),  # from the closed chain's stored key
    ("send", "alice", "a4", "alice_ratchet_4"),  # PN = 1
    ("receive", "bob", "a4", None),
]
BASE_KEY = seed("alice base key")
INITIAL_RATCHET_KEY = seed("alice ratchet key 0")
KEM_M = seed("alice kem encapsulation m")


class Conversation:
    """Alice and Bob with fixed keys, able to replay the first k steps of SCRIPT."""

    def __init__(self, alice: Device, bob: Device):
        self.alice_device, self.bob_device = alice, bob
        self.prekeys = Prekeys(bob, "bob", SPK_ID, KEM_ID, OPK_ID)
        self.bundle = self.prekeys.bundle()
        self.alice = Initiator(alice, self.bundle, bob.public, BASE_KEY, INITIAL_RATCHET_KEY, KEM_M)
        self.bob = Responder(bob, self.prekeys)
        self.wires: dict[str, bytes] = {}
        self.done = 0

    def run(self, steps: int) -> list[dict]:
        out = []
        for op, who, mid, key_name in SCRIPT[self.done : steps]:
            if op == "send":
                fresh = RATCHET_KEYS[key_name] if key_name else None
                party = self.alice if who == "alice" else self.bob.sessions[self.alice.ek_pub]
                wire, info = party.encrypt(PLAINTEXTS[mid], fresh)
                self.wires[mid] = wire
                m = parse_message(wire)
                h = m["ratchet"]
                out.append({
                    "op": "send", "party": who, "message": mid,
                    "fresh_ratchet_secret": fresh.hex() if fresh else None,
                    "plaintext": PLAINTEXTS[mid].hex(),
                    "type": m["type"],
                    "header": {"ratchet_key": h["dh"].hex(), "pn": h["pn"], "n": h["n"]},
                    **info,
                    "wire": wire.hex(),
                })
            else:
                pt = self.deliver(who, self.wires[mid])
                assert pt == PLAINTEXTS[mid], mid
                out.append({"op": "receive", "party": who, "message": mid, "plaintext": pt.hex()})
        self.done = max(self.done, steps)
        return out

    def deliver(self, who: str, wire: bytes, bob_address: bytes | None = None) -> bytes:
        if who == "bob":
            return self.bob.receive(wire, self.alice_device.public, self.alice_device.address, bob_address)
        return self.alice.decrypt(wire)


def gen_conversation(alice: Device, bob: Device) -> dict:
    c = Conversation(alice, bob)
    a = c.alice
    # Bob computes the same secret from his private keys (§5).
    assert kem_decaps(c.prekeys.kem_dk, a.kem_ct) == a.kem_ss
    steps = c.run(len(SCRIPT))
    return {
        "description": "§5-§7 a scripted conversation alice/1 -> bob/2 with fixed keys and KEM randomness",
        "alice": alice.json(),
        "bob": bob.json(),
        "bundle": c.bundle.hex(),
        "kem": {"m": KEM_M.hex(), "ciphertext": a.kem_ct.hex(), "shared_secret": a.kem_ss.hex()},
        "pqxdh": {
            "base_key_secret": BASE_KEY.hex(),
            "base_key": a.ek_pub.hex(),
            "dh": [d.hex() for d in a.dh],
            "sk": a.sk.hex(),
            "ad": a.ad.hex(),
        },
        "initial_ratchet_secret": INITIAL_RATCHET_KEY.hex(),
        "steps": steps,
        "wire": {k: v.hex() for k, v in c.wires.items()},
    }


def gen_must_fail(alice: Device, bob: Device) -> dict:
    """Tampered or replayed messages, each delivered after the first ``after_steps`` steps of
    the conversation (to a fresh pair of parties replaying them)."""
    full = Conversation(alice, bob)
    full.run(len(SCRIPT))
    wire = full.wires
    a0 = wire["a0"]
    header_at = 2 + 32 + 32 + 4 + 1 + 4 + 1 + 4 + KEM_CT_LEN  # a0 has an OPK
    ct_at = header_at + HEADER_LEN
    cases = []

    def step_of(op: str, who: str, mid: str) -> int:
        return next(i for i, (o, w, m, _) in enumerate(SCRIPT) if (o, w, m) == (op, who, mid))

    def case(name: str, who: str, after: int, raw: bytes, expect: str, *, bob_address: bytes | None = None) -> None:
        c = Conversation(alice, bob)
        c.run(after)
        try:
            c.deliver(who, raw, bob_address)
        except Reject as e:
            assert e.reason == expect, (name, e.reason, expect)
            entry = {"name": name, "party": who, "after_steps": after, "wire": raw.hex(), "expect": expect}
            if bob_address is not None:
                entry["bob_address"] = bob_address.hex()
            cases.append(entry)
            # Nothing changed: the rest of the conversation still goes through.
            c.run(len(SCRIPT))
            assert c.wires == full.wires
            return
        raise AssertionError(f"{name} was accepted")

    def replace(data: bytes, at: int, new: bytes) -> bytes:
        return data[:at] + new + data[at + len(new) :]

    fresh = step_of("receive", "bob", "a0")  # Bob has received nothing yet
    p = P25519.to_bytes(32, "little")
    top = bytearray(wire["a0"][header_at + 2 : header_at + 34])
    top[31] |= 0x80
    other_base = x25519_public(seed("mallory base key"))
    case("a0: AEAD ciphertext bit flipped", "bob", fresh, flip(a0, ct_at + 7, 2), "auth")
    case("a0: AEAD tag bit flipped", "bob", fresh, flip(a0, len(a0) - 1, 7), "auth")
    case("a0: header counter N changed 0 -> 1", "bob", fresh, flip(a0, header_at + 41), "auth")
    case("a0: header PN changed 0 -> 1", "bob", fresh, flip(a0, header_at + 37), "auth")
    case("a0: Bob with another device address (wrong AD)", "bob", fresh, a0, "auth",
         bob_address=encode_address("bob", 3))
    case("a0: KEM ciphertext bit flipped (implicit rejection)", "bob", fresh, flip(a0, 80 + 100), "auth")
    case("a0: base key replaced by another valid key", "bob", fresh, replace(a0, 34, other_base), "auth")
    case("a0: header N = 25000 (largest gap allowed)", "bob", fresh, replace(a0, header_at + 38, u32(25_000)), "auth")
    case("a0: header N = 25001 (gap too big)", "bob", fresh, replace(a0, header_at + 38, u32(25_001)),
         "too_big_gap")
    case("a0: header ratchet key u = p (non-canonical)", "bob", fresh, replace(a0, header_at + 2, p), "decode")
    case("a0: header ratchet key with the top bit set", "bob", fresh, replace(a0, header_at + 2, bytes(top)),
         "decode")
    case("a0: base key u = p (non-canonical)", "bob", fresh, replace(a0, 34, p), "decode")
    case("a0: header ratchet key u = 0 (small order)", "bob", fresh, replace(a0, header_at + 2, bytes(32)),
         "degenerate_dh")
    case("a0: version 1 (PQXDH fields not bound into AD)", "bob", fresh, replace(a0, 0, b"\x01"), "decode")
    case("a0: unknown version 3", "bob", fresh, replace(a0, 0, b"\x03"), "decode")
    case("a0: unknown message type", "bob", fresh, replace(a0, 1, b"\x03"), "decode")
    case("a0: one-time prekey flag 2", "bob", fresh, replace(a0, 70, b"\x02"), "decode")
    case("a0: KEM prekey kind 3", "bob", fresh, replace(a0, 75, b"\x03"), "decode")
    case("a0: inner message of type prekey", "bob", fresh, replace(a0, header_at + 1, b"\x02"), "decode")
    case("a0: ciphertext truncated below 272 bytes", "bob", fresh, a0[: ct_at + 271], "decode")
    case("a0: one-time prekey id unknown", "bob", fresh, replace(a0, 71, u32(OPK_ID + 1)), "unknown_prekey")
    case("a0: signed prekey id unknown", "bob", fresh, replace(a0, 66, u32(SPK_ID + 1)), "unknown_prekey")
    case("a0: KEM prekey id unknown", "bob", fresh, replace(a0, 76, u32(KEM_ID + 1)), "unknown_prekey")
    case("a0: identity key not the sender's", "bob", fresh,
         replace(a0, 2, x25519_public(seed("mallory identity"))), "identity_mismatch")
    accepted = fresh + 1
    case("a0: replayed after Bob accepted it", "bob", accepted, a0, "duplicate")
    case("a0: other base key after Bob accepted a0 (one-time prekeys consumed)", "bob", accepted,
         replace(a0, 34, other_base), "unknown_prekey")
    case("a1: delivered twice (its skipped key was used)", "bob", step_of("receive", "bob", "a1") + 1,
         wire["a1"], "duplicate")
    case("a3: delivered twice", "bob", step_of("receive", "bob", "a3") + 1, wire["a3"], "duplicate")
    b3 = wire["b3"]
    case("b3: PN bit flipped 3 -> 2", "alice", step_of("receive", "alice", "b3"), flip(b3, 2 + 32 + 3), "auth")
    case("b3: ratchet key bit flipped", "alice", step_of("receive", "alice", "b3"), flip(b3, 2 + 5), "auth")
    case("b2: delivered again after its closed chain's key was used", "alice",
         step_of("receive", "alice", "b2") + 1, wire["b2"], "duplicate")
    case("a1 with a new ratchet key before Bob replied", "bob", accepted,
         replace(wire["a1"], header_at + 2, x25519_public(seed("mallory ratchet key"))), "unexpected_ratchet_key")
    return {
        "description": "messages that must be refused: each is delivered to `party` after the first "
        "`after_steps` steps of conversation.json, and the conversation then goes on unchanged",
        "cases": cases,
    }


def gen_link() -> dict:
    s = seed("link secret")[:16]
    code = link_code(s)
    assert link_code_decode(code.lower().replace("-", " ")) == s
    # The new device (erin/2), its first prekeys, and its ephemeral keys.
    new = Device("erin phone", "erin", 2)
    label = b"phone"
    spk_id, kem_id = 1, 2
    spk = seed("erin phone signed prekey")
    spk_pub = x25519_public(spk)
    spk_enc = u32(spk_id) + spk_pub + ed25519_sign(new.dsk, SPK_LABEL + u32(spk_id) + spk_pub)
    lr_ek, _ = kem_keygen(seed("erin phone last resort d"), seed("erin phone last resort z"))
    lr_enc = u8(KEM_LAST_RESORT) + u32(kem_id) + lr_ek + ed25519_sign(
        new.dsk, KEM_LABEL + u8(KEM_LAST_RESORT) + u32(kem_id) + lr_ek)
    eph = seed("link offer ephemeral")
    eph_d, eph_z = seed("link offer kem d"), seed("link offer kem z")
    eph_ek, eph_dk = kem_keygen(eph_d, eph_z)
    body = u8(1) + new.public + u8(len(label)) + label + spk_enc + lr_enc + x25519_public(eph) + eph_ek
    offer = body + hmac_sha256(link_offer_key(s), body)
    opened = open_link_offer(s, offer)
    assert opened["public"] == new.public

    # The approver (erin/1) lists the new device (as an approver) and sends the account key
    # and a history reference.
    account_seed = seed("erin account key")
    approver = Device("erin laptop", "erin", 1)
    entries = [Entry(1, approver.public, approver=True, added_ms=1_700_000_000_000, label=b"laptop"),
               Entry(2, new.public, approver=True, added_ms=1_700_000_600_000, label=label)]
    device_list = sign_device_list(account_seed, "erin", 2, entries)
    verify_device_list(device_list, "erin", None)
    history = {"blob_id": seed("history blob id")[:16], "key": seed("history archive key"),
               "size": archive_sealed_len(100_000), "plain_size": 100_000, "digest": seed("history digest")}
    provisioning = encode_provisioning("erin", 2, 1, device_list, account_seed, history)

    a_eph = seed("link answer ephemeral")
    a_eph_pub = x25519_public(a_eph)
    m = seed("link answer kem m")
    ct, ss = kem_encaps(opened["eph_ek"], m)
    dh = x25519(a_eph, opened["eph_pub"])
    key, nonce = link_answer_keys(s, dh, ss, offer, a_eph_pub, ct)
    header = u8(1) + a_eph_pub + ct
    answer = header + aead_seal(key, nonce, header, provisioning)
    # The new device's side.
    assert kem_decaps(eph_dk, ct) == ss and x25519(eph, a_eph_pub) == dh
    assert aead_open(key, nonce, header, answer[len(header):]) == provisioning

    def offer_must_fail(name: str, secret: bytes, raw: bytes, expect: str) -> dict:
        try:
            open_link_offer(secret, raw)
        except Reject as e:
            assert e.reason == expect, (name, e.reason, expect)
            return {"name": name, "secret": secret.hex(), "offer": raw.hex(), "expect": expect}
        raise AssertionError(f"{name} was accepted")

    def remac(b: bytes) -> bytes:
        return b + hmac_sha256(link_offer_key(s), b)

    mallory = Device("mallory", "erin", 2)
    eph_at = len(body) - 32 - KEM_EK_LEN
    return {
        "description": "§10 linking: code, slot id, offer key, offer, provisioning and sealed answer for "
        "erin/2 approved by erin/1 (as an approver, with a history archive); offers that must be refused",
        "secret": s.hex(),
        "code": code,
        "slot_id": link_slot_id(s).hex(),
        "offer_key": link_offer_key(s).hex(),
        "device": new.json(),
        "label": label.decode(),
        "fingerprint": device_fingerprint(new.public),
        "signed_prekey": spk_enc.hex(),
        "last_resort_prekey": lr_enc.hex(),
        "last_resort_d": seed("erin phone last resort d").hex(),
        "ephemeral_secret": eph.hex(),
        "ephemeral_kem_encapsulation_key": eph_ek.hex(),
        "ephemeral_kem_decapsulation_key": eph_dk.hex(),
        "offer": offer.hex(),
        "account_seed": account_seed.hex(),
        "approver": approver.json(),
        "device_list": device_list.hex(),
        "history": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in history.items()},
        "provisioning": provisioning.hex(),
        "answer_ephemeral_secret": a_eph.hex(),
        "kem_ciphertext": ct.hex(),
        "kem_shared_secret": ss.hex(),
        "dh": dh.hex(),
        "answer_key": key.hex(),
        "answer_nonce": nonce.hex(),
        "answer": answer.hex(),
        "offer_must_fail": [
            offer_must_fail("another secret", seed("other link secret")[:16], offer, "bad_mac"),
            offer_must_fail("ephemeral X25519 key replaced",
                            s, offer[:eph_at] + x25519_public(seed("mallory eph")) + offer[eph_at + 32:], "bad_mac"),
            offer_must_fail("device identity replaced", s, offer[:1] + mallory.public + offer[129:], "bad_mac"),
            offer_must_fail("binding broken (re-MACed by a holder of s)",
                            s, remac(body[:65] + flip(body[65:129], 3) + body[129:]), "bad_binding"),
            offer_must_fail("control character in the label (re-MACed)",
                            s, remac(body[:130] + b"ph\x00ne" + body[135:]), "bad_label"),
            offer_must_fail("one-time KEM prekey kind (re-MACed)",
                            s, remac(body[:135 + 100] + u8(KEM_ONE_TIME) + body[136 + 100:]), "bad_prekey"),
        ],
    }


def gen_archive() -> dict:
    key = seed("history archive key")
    short = b"Tacit history archive, one short chunk"
    short_ct = archive_seal(key, short)
    assert len(short_ct) == 1
    n = 2 * CHUNK_LEN + 100
    plain = bytes(i % 251 for i in range(n))
    long_ct = archive_seal(key, plain)
    assert sum(map(len, long_ct)) == archive_sealed_len(n)
    full = archive_seal(key, bytes(CHUNK_LEN))
    return {
        "description": "§11 history archive: STREAM chunks of 65,536 bytes under HKDF(key, "
        "\"Tacit v1 history archive\"), nonce = 11-byte counter || last flag",
        "key": key.hex(),
        "subkey": hkdf(ZERO_SALT, key, b"Tacit v1 history archive", 32).hex(),
        "short": {"plaintext": short.hex(), "chunks": [c.hex() for c in short_ct]},
        "empty": {"chunks": [c.hex() for c in archive_seal(key, b"")]},
        "long": {
            "plaintext": "byte i = i mod 251",
            "plaintext_len": n,
            "sealed_len": archive_sealed_len(n),
            "chunk_sha256": [sha256(c).hex() for c in long_ct],
            "last_chunk": long_ct[-1].hex(),
        },
        "one_full_chunk": {"plaintext": "65,536 zero bytes", "chunk_sha256": sha256(full[0]).hex()},
    }


def generate() -> dict[str, str]:
    alice = Device("alice", "alice", 1)
    bob = Device("bob", "bob", 2)
    prekeys = Prekeys(bob, "bob", SPK_ID, KEM_ID, OPK_ID)
    conversation = gen_conversation(alice, bob)
    files = {
        "padding.json": gen_padding(),
        "safety_number.json": gen_safety_numbers(),
        "device_list.json": gen_device_list(bob),
        "bundle.json": gen_bundle(bob, prekeys),
        "conversation.json": conversation,
        "must_fail.json": gen_must_fail(alice, bob),
        "link.json": gen_link(),
        "archive.json": gen_archive(),
    }
    header = {"generator": "vectors/reference.py", "spec": "docs/PROTOCOL.md, protocol version 2"}
    return {name: json.dumps({**header, **body}, indent=1) + "\n" for name, body in files.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args()
    files = generate()
    if args.check:
        bad = []
        for name, text in files.items():
            path = OUT_DIR / name
            if not path.exists() or path.read_text() != text:
                bad.append(name)
        extra = sorted(p.name for p in OUT_DIR.glob("*.json") if p.name not in files) if OUT_DIR.exists() else []
        for name in bad:
            print(f"kat-check: {OUT_DIR.relative_to(ROOT) / name} differs from what reference.py generates",
                  file=sys.stderr)
        for name in extra:
            print(f"kat-check: {OUT_DIR.relative_to(ROOT) / name} is not generated by reference.py", file=sys.stderr)
        if bad or extra:
            print("kat-check: run `python3 vectors/reference.py` (in the venv) and commit the result",
                  file=sys.stderr)
            return 1
        print(f"kat-check: {len(files)} vector files match the reference")
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT_DIR / name).write_text(text)
    print(f"wrote {len(files)} files to {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
