"""Signatures for what only the game coordinator may say: approved policies, game states, e-stop releases.

The Fast DDS of the PyPI wheels is built without DDS Security, so any participant of a domain
can publish on any topic. What moves a robot is therefore signed at the application level:

- at the start of a run the coordinator creates an Ed25519 key pair in ``<log_dir>/keys/``
  (:meth:`Signer.load_or_create`): the private key as PKCS#8 PEM, file mode 0600 (a key file
  that others can read is refused when loaded), the public key as one line
  ``ed25519:<base64 of the 32 raw bytes>`` that collectors get through a file path or a
  parameter (:func:`load_public_key` takes either);
- it signs every approved policy record (:meth:`Signer.sign_record`: the record's JSON header,
  which holds the payload's SHA-256, gets a ``signature`` field) and every game state
  (:meth:`Signer.sign_json`: the JSON body gets one);
- collectors verify before use (:class:`Verifier`) and reject everything else with a
  :class:`SignatureError` whose ``reason`` is one of :data:`REASONS`.

A signature covers the message, its kind (a signed game state cannot pass as a policy), the
key id and a sequence number. Sequence numbers grow strictly with every signature of a key
(microseconds since the epoch, or the previous number plus one when the clock has not moved on,
so a coordinator restarted on the same key keeps counting up); a verifier accepts each kind's
numbers only in increasing order, so a recorded message replayed later is refused (``replay``).
A key belongs to one run: messages of another run's key are ``wrong_key``.

No ROS import here: the nodes, the tests and offline tools use the same code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import struct
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG = "ed25519"
PUBLIC_PREFIX = "ed25519:"
SIG_FIELD = "signature"
KEY_DIR = "keys"
PRIVATE_KEY_FILE = "coordinator_ed25519.pem"
PUBLIC_KEY_FILE = "coordinator_ed25519.pub"
# Domain separation: these bytes start every signed message, so a signature made here can never
# be mistaken for one over some other protocol's bytes made with the same key.
_CONTEXT = b"mbrl_ros.signature/1\x00"
_RECORD_MAGIC = b"MBRW"  # mbrl_ros.wire's record framing: magic, uint32 LE header length, header, payload
_PREFIX = struct.Struct("<4sI")
_MAX_HEADER_BYTES = 256 * 1024

REASONS = ("unsigned", "malformed", "wrong_key", "kind", "forged", "replay")


class SignatureError(ValueError):
    """A message that is not signed by the coordinator's key for this run; ``reason`` in :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def canonical(obj: Any) -> bytes:
    """The one byte string a JSON value is signed as (sorted keys, no spaces, ASCII, no NaN)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def key_id(public_raw: bytes) -> str:
    """Short name of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(key: Ed25519PublicKey) -> str:
    """``ed25519:<base64>``: the form of the public key in files and parameters."""
    return PUBLIC_PREFIX + base64.b64encode(_public_raw(key)).decode("ascii")


def key_paths(log_dir: Union[str, Path], key_dir: Union[str, Path, None] = None) -> tuple[Path, Path]:
    """(private, public) key files of a run: in ``key_dir`` if given, else ``<log_dir>/keys``."""
    d = Path(key_dir) if key_dir else Path(log_dir) / KEY_DIR
    return d / PRIVATE_KEY_FILE, d / PUBLIC_KEY_FILE


def load_public_key(spec: Union[str, Path, bytes]) -> Ed25519PublicKey:
    """A public key from ``ed25519:<base64>`` text, the 32 raw bytes, or the path of a file holding the text."""
    if isinstance(spec, bytes):
        if len(spec) != 32:
            raise ValueError(f"an Ed25519 public key has 32 bytes, got {len(spec)}")
        return Ed25519PublicKey.from_public_bytes(spec)
    text = str(spec).strip()
    if not text.startswith(PUBLIC_PREFIX):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"coordinator key {str(spec)!r} is neither 'ed25519:<base64>' nor a readable key file ({exc})"
            ) from None
        if not text.startswith(PUBLIC_PREFIX):
            raise ValueError(f"{path} does not hold an 'ed25519:<base64>' public key")
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the public key is not valid base64") from None
    return load_public_key(raw)


class Signer:
    """The coordinator's signing key (thread-safe: the gate thread and the executor both sign)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.public_text = public_key_text(self.public_key)
        self.key_id = key_id(_public_raw(self.public_key))
        self._lock = threading.Lock()
        self._last_seq = 0

    # -- keys on disk -----------------------------------------------------------------
    @classmethod
    def generate(cls) -> "Signer":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def create(cls, log_dir: Union[str, Path], key_dir: Union[str, Path, None] = None) -> "Signer":
        """A new key pair in ``<log_dir>/keys/`` (or ``key_dir``); the private file is created 0600
        (never overwritten)."""
        private, public = key_paths(log_dir, key_dir)
        private.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(private.parent, 0o700)
        signer = cls.generate()
        pem = signer._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # O_EXCL: never overwrite (or follow a planted link to) an existing file; mode 0600 from
        # the start, not chmod-ed after the key was already on disk
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        tmp = public.with_suffix(".pub.tmp")
        tmp.write_text(signer.public_text + "\n", encoding="ascii")
        tmp.replace(public)  # collectors waiting for the file never read half of it
        return signer

    @classmethod
    def load(cls, private_path: Union[str, Path]) -> "Signer":
        """Load a private key file; refused when group or others may read or write it."""
        path = Path(private_path)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(f"{path} is accessible by others (mode {stat.S_IMODE(mode):o}); it must be 0600")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(key)

    @classmethod
    def load_or_create(cls, log_dir: Union[str, Path], key_dir: Union[str, Path, None] = None) -> "Signer":
        """The run's key: loaded when the run already has one (a restarted coordinator), else created."""
        private, public = key_paths(log_dir, key_dir)
        if private.exists():
            signer = cls.load(private)
            if not public.exists():
                public.write_text(signer.public_text + "\n", encoding="ascii")
            return signer
        return cls.create(log_dir, key_dir)

    # -- signing ----------------------------------------------------------------------
    def _next_seq(self) -> int:
        with self._lock:
            self._last_seq = max(self._last_seq + 1, time.time_ns() // 1000)
            return self._last_seq

    def signature(self, kind: str, body: Mapping[str, Any]) -> dict:
        """The ``signature`` field for ``body`` (which must not hold one) as a message of ``kind``."""
        meta = {"alg": ALG, "key_id": self.key_id, "kind": str(kind), "seq": self._next_seq()}
        value = self._key.sign(_CONTEXT + canonical({"body": dict(body), "sig": meta}))
        return {**meta, "value": base64.b64encode(value).decode("ascii")}

    def sign_json(self, text: str, kind: str) -> str:
        """A JSON message (a game state) with its signature added."""
        body = json.loads(text)
        if not isinstance(body, dict):
            raise ValueError("only JSON objects are signed")
        body.pop(SIG_FIELD, None)
        body[SIG_FIELD] = self.signature(kind, body)
        return json.dumps(body, sort_keys=True, allow_nan=False)

    def sign_record(self, data: bytes) -> bytes:
        """A wire record (an approved policy) with a signature in its header; the payload is
        bound through the header's ``sha256``, which is checked here before signing."""
        header, payload = _split_record(data)
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise ValueError("the record's payload does not match its sha256: not signing it")
        header.pop(SIG_FIELD, None)
        header[SIG_FIELD] = self.signature(str(header.get("kind")), header)
        head = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
        return _PREFIX.pack(_RECORD_MAGIC, len(head)) + head + payload


def _split_record(data: bytes) -> tuple[dict, bytes]:
    """(header, payload) of a wire record, framing checked (``malformed`` otherwise)."""
    data = bytes(data)
    if len(data) < _PREFIX.size:
        raise SignatureError("malformed", "record shorter than its prefix")
    magic, n = _PREFIX.unpack_from(data, 0)
    if magic != _RECORD_MAGIC or n > _MAX_HEADER_BYTES or len(data) < _PREFIX.size + n:
        raise SignatureError("malformed", "not an mbrl_ros wire record")
    try:
        header = json.loads(data[_PREFIX.size : _PREFIX.size + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SignatureError("malformed", "record header is not JSON") from None
    if not isinstance(header, dict):
        raise SignatureError("malformed", "record header is not a JSON object")
    return header, data[_PREFIX.size + n :]


class Verifier:
    """Checks the coordinator's signatures for one run (one per subscriber process).

    ``verify_*`` raise :class:`SignatureError` or return the message; a message that passes
    advances its kind's sequence number, so the same message (or an older one) is refused next
    time as a ``replay``."""

    def __init__(self, public_key: Union[str, Path, bytes, Ed25519PublicKey]) -> None:
        self.public_key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
        self.key_id = key_id(_public_raw(self.public_key))
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def last_seq(self, kind: str) -> int:
        with self._lock:
            return self._last.get(kind, 0)

    def _check(self, kind: str, body: dict) -> int:
        sig = body.pop(SIG_FIELD, None)
        if sig is None:
            raise SignatureError("unsigned", f"{kind} carries no signature")
        if not isinstance(sig, dict):
            raise SignatureError("malformed", f"{kind} signature is not an object")
        value, seq = sig.get("value"), sig.get("seq")
        if (
            sig.get("alg") != ALG
            or not isinstance(value, str)
            or not isinstance(seq, int)
            or isinstance(seq, bool)
            or seq <= 0
            or not isinstance(sig.get("key_id"), str)
            or not isinstance(sig.get("kind"), str)
            or set(sig) != {"alg", "key_id", "kind", "seq", "value"}
        ):
            raise SignatureError("malformed", f"{kind} signature fields are missing or of the wrong type")
        if sig["key_id"] != self.key_id:
            raise SignatureError(
                "wrong_key", f"{kind} is signed by key {sig['key_id']}, this run's coordinator key is {self.key_id}"
            )
        if sig["kind"] != kind:
            raise SignatureError("kind", f"a signed {sig['kind']!r} message presented as a {kind}")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("malformed", f"{kind} signature is not base64") from None
        meta = {k: sig[k] for k in ("alg", "key_id", "kind", "seq")}
        try:
            self.public_key.verify(raw, _CONTEXT + canonical({"body": body, "sig": meta}))
        except (InvalidSignature, ValueError):
            raise SignatureError("forged", f"{kind} signature does not verify with the coordinator's key") from None
        with self._lock:
            last = self._last.get(kind, 0)
            if seq <= last:
                raise SignatureError("replay", f"{kind} signed as #{seq}, not newer than the last accepted #{last}")
            self._last[kind] = seq
        return seq

    def verify_json(self, text: str, kind: str) -> dict:
        """A signed JSON message's body (the signature removed); raises :class:`SignatureError`."""
        try:
            body = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            raise SignatureError("malformed", f"{kind} is not JSON") from None
        if not isinstance(body, dict):
            raise SignatureError("malformed", f"{kind} is not a JSON object")
        self._check(kind, body)
        return body

    def verify_record(self, data: bytes, kind: str) -> dict:
        """A signed wire record's header (the signature removed); the payload must match its SHA-256."""
        header, payload = _split_record(data)
        if header.get("kind") != kind:
            raise SignatureError("kind", f"expected a {kind} record, got {header.get('kind')!r}")
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            # a valid signature over the header would not cover a swapped payload: refuse here too
            raise SignatureError("forged", f"{kind} payload does not match the signed SHA-256")
        self._check(kind, header)
        return header


class EstopLatch:
    """The e-stop rule of a collector: any participant may raise it; only the coordinator's signed
    release clears it.

    Raises come from ``true`` on ``/mbrl/estop`` (anyone: stopping is always allowed), a node's
    own service, or a signed game state with ``estop: true``. The coordinator counts its releases
    (``estop_release`` in its signed game state, +1 for every operator's release). A raise
    remembers the count it has seen; only a signed state with ``estop: false`` and a *larger*
    count clears it, so a release made before the raise (a signed state still in flight, or a
    recorded one replayed) never clears a later raise. ``false`` on the topic clears nothing.
    A raise that reaches the collector after the release that answered it keeps the collector
    stopped until the next release: the safe side."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held = False
        self.release_seen = -1  # largest estop_release of a verified state
        self._mark = -1  # release_seen at the latest raise

    def raise_estop(self) -> bool:
        """Hold the e-stop; True when it was not held before."""
        with self._lock:
            changed = not self.held
            self.held = True
            self._mark = self.release_seen
            return changed

    def signed_state(self, estop: bool, release: int) -> str:
        """A verified game state's ``estop`` and ``estop_release``: ``"raise"`` (newly held),
        ``"release"`` (cleared by the coordinator) or ``""`` (no change)."""
        if estop:
            with self._lock:
                self.release_seen = max(self.release_seen, int(release))
            return "raise" if self.raise_estop() else ""
        with self._lock:
            self.release_seen = max(self.release_seen, int(release))
            if self.held and int(release) > self._mark:
                self.held = False
                return "release"
        return ""


def sign_game_state(signer: Signer, state_json: str, estop_release: int) -> str:
    """A game state as collectors follow it: its JSON with the operator's e-stop release count
    (``estop_release``, see :class:`EstopLatch`), signed as a ``game_state``. One function for the
    game coordinator and the deploy graphs' policy_deployer."""
    body = json.loads(state_json)
    body["estop_release"] = int(estop_release)
    return signer.sign_json(json.dumps(body, sort_keys=True), "game_state")


def describe(verifier: Optional[Verifier]) -> str:
    """One line for logs: which key a node trusts."""
    return "no coordinator key (signatures not checked)" if verifier is None else f"coordinator key {verifier.key_id}"
