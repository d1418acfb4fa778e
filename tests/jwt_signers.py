"""Signers of JWTs for the tests: a key pair of each kind, its public JWK,
and client assertions and ID-JAGs signed with it (PyJWT, as real clients and
identity providers sign them)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ALGORITHM_OBJECTS = {"RS256": jwt.algorithms.RSAAlgorithm, "ES256": jwt.algorithms.ECAlgorithm,
                      "EdDSA": jwt.algorithms.OKPAlgorithm}


def _private_key(alg: str) -> Any:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


@attrs.define
class Signer:
    """One key pair, named by ``kid``."""

    alg: str = "ES256"
    kid: str = attrs.Factory(lambda: uuid.uuid4().hex[:8])
    key: Any = None

    def __attrs_post_init__(self) -> None:
        if self.key is None:
            self.key = _private_key(self.alg)

    @property
    def jwk(self) -> dict[str, Any]:
        doc = json.loads(_ALGORITHM_OBJECTS[self.alg].to_jwk(self.key.public_key()))
        return {**doc, "kid": self.kid, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def private_pem(self) -> str:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": self.kid, **header})

    def assertion(self, client_id: str, audience: str, now: int, **over: Any) -> str:
        """A client assertion (RFC 7523 §2.2), ``over`` changing claims (None removes)."""
        claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + 60,
                  "jti": uuid.uuid4().hex}
        return self.sign({k: v for k, v in {**claims, **over}.items() if v is not None})

    def id_jag(self, issuer: str, *, audience: str, client_id: str | None, resource: str | None, now: int,
               sub: str | None = "user-42", typ: str = "oauth-id-jag+jwt", **over: Any) -> str:
        """An ID-JAG (SEP-990) for ``sub``, ``over`` changing claims (None removes)."""
        claims = {"iss": issuer, "sub": sub, "aud": audience, "client_id": client_id, "resource": resource,
                  "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
        return self.sign({k: v for k, v in {**claims, **over}.items() if v is not None}, typ=typ)


def unsigned(claims: dict[str, Any], **header: Any) -> str:
    """alg "none" (RFC 7519 §6): a JWT anyone can make."""
    return jwt.encode(claims, None, algorithm="none", headers=header or None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hmac_with(secret: bytes, claims: dict[str, Any], **header: Any) -> str:
    """HS256 with ``secret`` as the key: with a public key as the secret,
    the algorithm-substitution attack (RFC 8725 §2.1). Made by hand, as an
    attacker would: PyJWT refuses to use a public key as an HMAC secret."""
    signing_input = _b64(json.dumps({"alg": "HS256", "typ": "JWT", **header}).encode()) + "." + _b64(
        json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)
