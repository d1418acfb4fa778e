"""Encryption at rest of upstream secrets: AES-256-GCM under a key ring.

Several keys, one active; every ciphertext names the id of its key, so keys
rotate without re-encrypting at once. The associated data binds a ciphertext
to its record (tenant and id), so it cannot be moved to another row.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..core.errors import DecryptionFailed
from ..core.models import UpstreamTokens

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_FORMAT = "v1"


class KeyRing:
    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError(f"active key {active!r} is not in the key ring")
        for kid, key in keys.items():
            if not _KEY_ID.fullmatch(kid):
                raise ValueError(f"key id {kid!r} must be 1-32 characters of A-Z a-z 0-9 _ -")
            if len(key) != 32:
                raise ValueError(f"key {kid!r} must be 32 bytes (AES-256)")
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        self._raw = dict(keys)
        self.active = active

    @classmethod
    def generate(cls, kid: str = "k1") -> KeyRing:
        return cls({kid: AESGCM.generate_key(bit_length=256)}, kid)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def with_new_key(self, kid: str) -> KeyRing:
        """A ring with one more key, which becomes the active one."""
        if kid in self._raw:
            raise ValueError(f"key {kid!r} exists already")
        return KeyRing({**self._raw, kid: AESGCM.generate_key(bit_length=256)}, kid)

    def raw_keys(self) -> dict[str, bytes]:
        return dict(self._raw)

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(12)  # 96-bit random nonce (NIST SP 800-38D §8.2.2)
        sealed = self._keys[self.active].encrypt(nonce, plaintext, aad)
        return f"{_FORMAT}.{self.active}.{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, blob: str, aad: bytes) -> bytes:
        try:
            fmt, kid, data = blob.split(".", 2)
        except ValueError:
            raise DecryptionFailed("ciphertext is malformed") from None
        if fmt != _FORMAT:
            raise DecryptionFailed("ciphertext format is unknown")
        key = self._keys.get(kid)
        if key is None:
            raise DecryptionFailed(f"key {kid!r} is not in the key ring")
        try:
            raw = base64.urlsafe_b64decode(data)
            return key.decrypt(raw[:12], raw[12:], aad)
        except (binascii.Error, ValueError, InvalidTag):
            raise DecryptionFailed("ciphertext does not decrypt") from None

    @staticmethod
    def key_id_of(blob: str) -> str | None:
        parts = blob.split(".", 2)
        return parts[1] if len(parts) == 3 else None


def _aad(*parts: str) -> bytes:
    return "\x1f".join(parts).encode("utf-8")


def seal_upstream(ring: KeyRing, tenant: str, grant_id: str, tokens: UpstreamTokens) -> str:
    data = json.dumps(attrs.asdict(tokens), separators=(",", ":")).encode("utf-8")
    return ring.encrypt(data, _aad("grant", tenant, grant_id))


_UPSTREAM_FIELDS = frozenset(f.name for f in attrs.fields(UpstreamTokens))


def open_upstream(ring: KeyRing, tenant: str, grant_id: str, blob: str) -> UpstreamTokens:
    data = json.loads(ring.decrypt(blob, _aad("grant", tenant, grant_id)))
    # Fields a newer release sealed are left out: rolling back a release
    # keeps the grants it made working.
    return UpstreamTokens(**{k: v for k, v in data.items() if k in _UPSTREAM_FIELDS})


def seal_verifier(ring: KeyRing, tenant: str, state_hash: str, verifier: str) -> str:
    return ring.encrypt(verifier.encode("utf-8"), _aad("session", tenant, state_hash))


def open_verifier(ring: KeyRing, tenant: str, state_hash: str, blob: str) -> str:
    return ring.decrypt(blob, _aad("session", tenant, state_hash)).decode("utf-8")


def seal_client_secret(ring: KeyRing, organization: str, name: str, secret: str) -> str:
    """An OAuth configuration's client secret, bound to its record."""
    return ring.encrypt(secret.encode("utf-8"), _aad("oauth_config", organization, name))


def open_client_secret(ring: KeyRing, organization: str, name: str, blob: str) -> str:
    return ring.decrypt(blob, _aad("oauth_config", organization, name)).decode("utf-8")
