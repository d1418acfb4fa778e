"""Clients without a browser, as an operator registers them (the admin API,
the CLI, the configuration file): the rules said once, and the record made.

A machine client has only the grants without a browser (client credentials,
the jwt-bearer grant of ID-JAGs), no redirect URI, and authenticates with a
secret (shown once; only its hash is kept) or with private_key_jwt and its
public keys, given as a JWK Set or as the URL it publishes them at.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .core.client_auth import PRIVATE_KEY_JWT
from .core.context import token_hash
from .core.http import parse_json
from .core.models import CLIENT_CREDENTIALS, JWT_BEARER, Client

SECRET_METHODS = ("client_secret_basic", "client_secret_post")
AUTH_METHODS = (*SECRET_METHODS, PRIVATE_KEY_JWT)
# What an operator may write for a grant type: its name, or jwt-bearer for short.
GRANT_ALIASES = {"client_credentials": CLIENT_CREDENTIALS, "jwt-bearer": JWT_BEARER, JWT_BEARER: JWT_BEARER}
_PUBLIC_KEY_TYPES = ("RSA", "EC", "OKP")
# Members of a JWK that only a private key has (RFC 7518 §6.2.2, §6.3.2, RFC 8037 §2).
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MAX_KEYS = 20
MAX_JWKS = 64 * 1024


def grant_types_of(values: tuple[str, ...] | list[str]) -> tuple[tuple[str, ...], str | None]:
    """The grant types named (their aliases resolved), or why they are refused."""
    unknown = [v for v in values if v not in GRANT_ALIASES]
    if not values or unknown:
        return (), f"must name grants among client_credentials, jwt-bearer ({JWT_BEARER})"
    return tuple(dict.fromkeys(GRANT_ALIASES[v] for v in values)), None


def jwks_problem(jwks: Any) -> str | None:
    """Why a JWK Set cannot be a client's public keys (RFC 7517 §5)."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys or len(keys) > MAX_KEYS:
        return f"must be a JWK Set: an object whose keys list holds 1 to {MAX_KEYS} keys"
    if len(json.dumps(jwks)) > MAX_JWKS:
        # Kept with the client and read at every assertion: public keys are small.
        return f"must be at most {MAX_JWKS // 1024} KiB as JSON"
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in _PUBLIC_KEY_TYPES:
            return "each key must be an RSA, EC or OKP public key (never a shared secret)"
        if any(member in key for member in _PRIVATE_MEMBERS):
            return "must hold public keys only: a key has private members"
    return None


def url_problem(value: str) -> str | None:
    try:
        parts = urlsplit(value)
    except ValueError:
        return "must be an https or http URL"
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        return "must be an https or http URL"
    return None


def problems(method: str, grant_types: tuple[str, ...] | list[str], *, has_secret: bool, jwks: Any,
             jwks_uri: str | None, scope: str | None, offered: tuple[str, ...]) -> dict[str, str]:
    """What is wrong with a machine client's settings, by field."""
    found: dict[str, str] = {}
    _, grant_problem = grant_types_of(grant_types)
    if grant_problem:
        found["grant_types"] = grant_problem
    if method not in AUTH_METHODS:
        found["token_endpoint_auth_method"] = "must be one of " + ", ".join(AUTH_METHODS)
    elif method == PRIVATE_KEY_JWT:
        if (jwks is None) == (jwks_uri is None):
            found["jwks"] = "private_key_jwt needs the client's public keys: jwks or jwks_uri, one of them"
        elif jwks is not None and jwks_problem(jwks):
            found["jwks"] = jwks_problem(jwks) or ""
        elif jwks_uri is not None and url_problem(jwks_uri):
            found["jwks_uri"] = url_problem(jwks_uri) or ""
    else:
        if jwks is not None or jwks_uri is not None:
            found["jwks"] = "only a private_key_jwt client has public keys"
        if not has_secret:
            found["secret"] = f"{method} needs the client's secret"
    if scope is not None:
        unknown = [s for s in scope.split(" ") if s not in offered]
        if unknown or not scope:
            found["scope"] = "not offered by the server: " + " ".join(unknown)
    return found


def machine_client(tenant: str, client_id: str, method: str, grant_types: tuple[str, ...], *, created_at: int,
                   secret_hash: str | None = None, jwks: Mapping[str, Any] | None = None,
                   jwks_uri: str | None = None, scope: str | None = None,
                   client_name: str | None = None) -> Client:
    """The record of a machine client whose settings break no rule (problems)."""
    resolved, _ = grant_types_of(grant_types)
    return Client(tenant=tenant, client_id=client_id, redirect_uris=(), token_endpoint_auth_method=method,
                  grant_types=resolved, response_types=(), application_type="web", created_at=created_at,
                  client_name=client_name, scope=scope, secret_hash=secret_hash,
                  jwks=None if jwks is None else _json(jwks), jwks_uri=jwks_uri)


def new_credentials(method: str) -> tuple[str, str | None]:
    """A new client's id, and its secret for a secret method (shown once,
    kept only as its hash)."""
    client_id = "mcp_client_" + secrets.token_urlsafe(32)
    return client_id, ("mcp_secret_" + secrets.token_urlsafe(32)) if method in SECRET_METHODS else None


def secret_hash(secret: str | None) -> str | None:
    return None if secret is None else token_hash(secret)


def parsed_jwks(text: str) -> Any:
    """A JWK Set given as JSON text (TOML, a file), or None if it is not JSON."""
    try:
        return parse_json(text)
    except ValueError:
        return None


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def declared(tenant: str, c: Any) -> Client:
    """A machine client of the configuration file (config.MachineClientConfig,
    checked): its record, never stored."""
    return machine_client(tenant, c.client_id, c.token_endpoint_auth_method, tuple(c.grant_types), created_at=0,
                          secret_hash=c.secret_sha256, jwks=None if c.jwks is None else parsed_jwks(c.jwks),
                          jwks_uri=c.jwks_uri, scope=c.scope, client_name=c.client_name)
