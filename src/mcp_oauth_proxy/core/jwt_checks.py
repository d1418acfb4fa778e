"""The JWTs we are handed, and what we accept of them: a client's assertion
(private_key_jwt, RFC 7523 §2.2 and §3) and an Identity Assertion JWT
Authorization Grant (ID-JAG: SEP-990, draft-ietf-oauth-identity-assertion-
authz-grant §3, presented with RFC 7523 §2.1's jwt-bearer grant).

PyJWT parses the JWT and checks its signature; the rules are here, each
against ``now`` from the context (PyJWT's own time checks, which would read
the clock, are turned off). The keys come in through ResolveKeys, or with
the client's registration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import jwt

from .context import token_hash
from .effects import Flow, HitCounter, ResolveKeys
from .http import parse_json
from .scopes import normalize_resource

# RFC 8725 §3.1: an allow-list, and only asymmetric algorithms. Never "none"
# (§2.1), never HMAC (§2.1: a verifier handed an HMAC JWT would use a public
# key, which anyone has, as the secret).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_KEY_TYPES = ("RSA", "EC", "OKP")
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# draft-ietf-oauth-identity-assertion-authz-grant §3.1: the ID-JAG's typ.
ID_JAG_TYPE = "oauth-id-jag+jwt"
# How far apart our clock and a signer's may be (seconds).
CLOCK_SKEW = 30
# The longest a JWT we accept may still have to live (its exp ahead of now),
# which bounds how long its jti must be remembered.
MAX_LIFETIME = 300
# Larger than any assertion a client sends; a bigger one is not parsed.
MAX_JWT = 16 * 1024
MAX_KEYS = 100

_SIGNATURE_ONLY: Any = {
    "verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
    "verify_aud": False, "verify_iss": False, "verify_sub": False, "verify_jti": False, "require": [],
}


class JwtRefused(Exception):
    """Why a JWT is not accepted: safe to tell the client that sent it."""


@attrs.frozen
class Unverified:
    """A JWT's header and claims before its signature is checked: enough to
    know whose keys to check it with, nothing to believe."""

    token: str = attrs.field(repr=False)
    header: dict[str, Any]
    claims: dict[str, Any]

    @property
    def alg(self) -> str:
        return str(self.header["alg"])


def read(token: str) -> Unverified:
    """Parse a JWT (compact JWS), refusing an algorithm not on the allow-list."""
    if len(token) > MAX_JWT:
        raise JwtRefused("the JWT is too large")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise JwtRefused("the JWT is malformed") from None
    if header.get("alg") not in ALGORITHMS:
        raise JwtRefused("the JWT's alg must be one of " + ", ".join(ALGORITHMS))
    return Unverified(token, header, claims)


def keys_for(jwt_: Unverified, jwks: Sequence[Any]) -> list[jwt.PyJWK]:
    """The keys of a JWK Set that may have signed this JWT: its kid (when
    it names one), an asymmetric type, for signing, and the JWT's alg."""
    kid = jwt_.header.get("kid")
    found = []
    for jwk in jwks[:MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") not in _KEY_TYPES:
            continue  # RFC 8725 §3.1: never a symmetric ("oct") key
        if kid is not None and jwk.get("kid") != kid:
            continue
        # RFC 7517 §4.2, §4.4: a key for encryption, or for another alg, is not this one.
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", jwt_.alg) != jwt_.alg:
            continue
        try:
            found.append(jwt.PyJWK(jwk, algorithm=jwt_.alg))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue  # not a key of that algorithm's type, or malformed
    return found


def verify_signature(jwt_: Unverified, keys: Sequence[jwt.PyJWK]) -> dict[str, Any]:
    """The claims, once one of ``keys`` verifies the signature."""
    malformed = False
    for key in keys:
        try:
            return dict(jwt.api_jwt.decode_complete(jwt_.token, key, algorithms=[jwt_.alg],
                                                    options=_SIGNATURE_ONLY)["payload"])
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            # Another curve than this key's, say: the next key may be the one.
            malformed = True
            continue
    raise JwtRefused("the JWT is malformed" if malformed and len(keys) == 1 else
                     "the JWT's signature does not verify with the signer's keys")


def key_set(text: str) -> list[Any]:
    """The keys of a JWK Set given as JSON (RFC 7517 §5)."""
    try:
        doc = parse_json(text)
    except ValueError:
        return []
    keys = doc.get("keys") if isinstance(doc, dict) else None
    return keys if isinstance(keys, list) else []


def verified(jwt_: Unverified, location: str, discover: bool, public_only: str | None) -> Flow[dict[str, Any]]:
    """The claims of a JWT signed by a key published at ``location`` (a JWK
    Set URL, or with ``discover`` an issuer; fetched only from public
    addresses with ``public_only``). A kid not among the keys cached means
    they may have rotated: they are fetched again, once."""
    keys = keys_for(jwt_, (yield ResolveKeys(location, discover, public_only=public_only)))
    if not keys:
        keys = keys_for(jwt_, (yield ResolveKeys(location, discover, refresh=True, public_only=public_only)))
        if not keys:
            raise JwtRefused("no key of the signer matches the JWT's kid and alg")
    return verify_signature(jwt_, keys)


def _string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise JwtRefused(f"the JWT has no {name}")
    return value


# Later than any time a JWT could mean (year 9999): a number past it is no time.
_LATEST = 253402300799


def _time(claims: dict[str, Any], name: str, required: bool) -> int | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    # NaN and Infinity parse as floats (the JSON parser takes them): not times.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or abs(value) > _LATEST:
        raise JwtRefused(f"the JWT has no {name}" if value is None else f"the JWT's {name} is not a time")
    return int(value)


def check_times(claims: dict[str, Any], now: int, iat_required: bool) -> int:
    """RFC 7519 §4.1.4-6, RFC 7523 §3 items 4-6: unexpired, yet not valid
    for longer than MAX_LIFETIME, nor issued or valid only in the future,
    nor issued longer ago than that; the exp."""
    exp = _time(claims, "exp", required=True)
    assert exp is not None
    if exp <= now:
        raise JwtRefused("the JWT has expired")
    if exp > now + MAX_LIFETIME + CLOCK_SKEW:
        raise JwtRefused(f"the JWT's exp is more than {MAX_LIFETIME} seconds ahead")
    nbf = _time(claims, "nbf", required=False)
    if nbf is not None and nbf > now + CLOCK_SKEW:
        raise JwtRefused("the JWT is not valid yet")
    iat = _time(claims, "iat", required=iat_required)
    if iat is not None and not now - MAX_LIFETIME - CLOCK_SKEW <= iat <= now + CLOCK_SKEW:
        raise JwtRefused("the JWT's iat is too far from now")
    return exp


def _audiences(claims: dict[str, Any]) -> list[Any]:
    aud = claims.get("aud")
    return aud if isinstance(aud, list) else [aud]


def check_client_assertion(claims: dict[str, Any], client_id: str, issuer: str, now: int) -> tuple[str, int]:
    """RFC 7523 §3 for client authentication (§2.2), as RFC 7523bis §4
    updates it: iss and sub are the client, aud our issuer alone, exp
    bounded, a jti. The (jti, exp) to spend."""
    # §3 items 1-2: "the iss ... MUST be the client_id", and so MUST the sub.
    if _string(claims, "iss") != client_id or _string(claims, "sub") != client_id:
        raise JwtRefused("the assertion's iss and sub must both be the client_id")
    # RFC 7523bis §4: "The authorization server MUST reject any JWT that does not
    # contain its issuer identifier as its sole audience value"; the token
    # endpoint "MUST NOT be used" (a server whose metadata named our token
    # endpoint as its own would get an assertion good here). One audience
    # alone: an assertion naming two servers would be good at each.
    named = _audiences(claims)
    if len(named) > 1:
        raise JwtRefused("the assertion's aud must name one audience: this server's issuer")
    if named != [issuer]:
        raise JwtRefused("the assertion's aud is not this server's issuer (RFC 7523bis: not its token endpoint)")
    exp = check_times(claims, now, iat_required=False)
    return _string(claims, "jti"), exp


@attrs.frozen
class IdJag:
    """What an accepted ID-JAG says."""

    issuer: str
    subject: str
    scope: tuple[str, ...] | None  # None: it names none


def check_id_jag(jwt_: Unverified, claims: dict[str, Any], *, issuer: str, client_id: str, resource: str,
                 now: int) -> tuple[IdJag, str, int]:
    """draft-ietf-oauth-identity-assertion-authz-grant §3 and §5.1: its typ,
    aud our issuer, client_id the client presenting it, resource ours, exp
    and iat bounded, a jti. (Its iss is the caller's to trust before its
    keys are fetched.) The ID-JAG, and the (jti, exp) to spend."""
    typ = str(jwt_.header.get("typ", "")).lower().removeprefix("application/")
    if typ != ID_JAG_TYPE:
        raise JwtRefused(f"the assertion's typ must be {ID_JAG_TYPE}")
    named = _audiences(claims)
    if len(named) > 1:  # as for client assertions: one server's, good at it alone
        raise JwtRefused("the ID-JAG's aud must name one audience: this server's issuer")
    if issuer not in named:
        raise JwtRefused("the ID-JAG's aud is not this server's issuer")
    if _string(claims, "client_id") != client_id:
        raise JwtRefused("the ID-JAG was issued to another client")
    if normalize_resource(_string(claims, "resource")) != normalize_resource(resource):
        raise JwtRefused("the ID-JAG is for another resource")
    exp = check_times(claims, now, iat_required=True)
    scope = claims.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise JwtRefused("the ID-JAG's scope is not a string")
    granted = None if scope is None else tuple(scope.split())
    return IdJag(_string(claims, "iss"), _string(claims, "sub"), granted), _string(claims, "jti"), exp


def spend_jti(tenant: str, kind: str, issuer: str, jti: str, exp: int) -> Flow[None]:
    """RFC 7523 §3 item 7: a jti is accepted once, from one issuer (a
    ``kind`` of signer: a client or an ID-JAG issuer) at one tenant.
    Counted in the store, so every replica agrees; remembered until the JWT
    has expired (and past the skew any replica's clock may have)."""
    key = "jti:" + token_hash(f"{tenant}\n{kind}\n{issuer}\n{jti}")
    if (yield HitCounter(key, 0, exp + CLOCK_SKEW)) != 1:
        raise JwtRefused("the JWT was used before (its jti)")
