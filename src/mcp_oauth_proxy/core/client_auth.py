"""Client authentication at the token, revocation and introspection
endpoints (RFC 6749 §2.3, OAuth 2.1 §2.4): none, client_secret_basic,
client_secret_post, and private_key_jwt (RFC 7523 §2.2, OIDC Core §9) for
clients an operator registered with their public keys."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from urllib.parse import unquote

import attrs

from .cimd import load_client, names_document
from .context import Context, token_hash
from .effects import Flow
from .errors import InvalidClient, InvalidRequest
from .http import Request, single
from .jwt_checks import (
    CLIENT_ASSERTION_TYPE,
    JwtRefused,
    Unverified,
    check_client_assertion,
    key_set,
    keys_for,
    read,
    spend_jti,
    verified,
    verify_signature,
)
from .models import Client

PRIVATE_KEY_JWT = "private_key_jwt"


@attrs.frozen
class Credentials:
    client_id: str
    secret: str | None = attrs.field(repr=False)
    method: str
    # private_key_jwt: the client's assertion, its signature not yet checked.
    assertion: Unverified | None = attrs.field(default=None, repr=False)


def _basic(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("unsupported Authorization scheme")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII input
        raise InvalidClient("malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials")
    # RFC 6749 §2.3.1: id and secret are form-urlencoded inside Basic.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _assertion(form: Mapping[str, list[str]], form_id: str | None) -> Credentials:
    """RFC 7523 §2.2: a client_assertion of client_assertion_type jwt-bearer."""
    if single(form, "client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise InvalidClient(f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
    value = single(form, "client_assertion")
    if value is None:
        raise InvalidClient("client_assertion is missing")
    try:
        assertion = read(value)
    except JwtRefused as exc:
        raise InvalidClient(f"client authentication failed: {exc}") from None
    # RFC 7523 §3 item 2: its sub is the client_id; a client_id sent beside it must agree.
    client_id = assertion.claims.get("sub")
    if not isinstance(client_id, str) or not client_id:
        raise InvalidClient("the client assertion has no sub")
    if form_id is not None and form_id != client_id:
        raise InvalidClient("client_id differs from the client assertion's sub")
    return Credentials(client_id, None, PRIVATE_KEY_JWT, assertion)


def credentials(request: Request, form: Mapping[str, list[str]]) -> Credentials:
    """The credentials the request presents, by exactly one method."""
    header = request.header("authorization")
    form_id = single(form, "client_id")
    form_secret = single(form, "client_secret")
    if "client_assertion" in form or "client_assertion_type" in form:
        if header is not None or form_secret is not None:
            # OAuth 2.1 §2.4: a client MUST NOT use more than one method.
            raise InvalidRequest("use one client authentication method, not a client assertion and a secret")
        return _assertion(form, form_id)
    if header is not None:
        client_id, secret = _basic(header)
        if form_secret is not None:
            # OAuth 2.1 §2.4: a client MUST NOT use more than one method.
            raise InvalidRequest("use either HTTP Basic or client_secret in the body, not both")
        if form_id is not None and form_id != client_id:
            raise InvalidRequest("client_id in the body differs from the one in Basic credentials")
        return Credentials(client_id, secret, "client_secret_basic")
    if form_id is None:
        raise InvalidClient("client authentication is required")
    if form_secret is not None:
        return Credentials(form_id, form_secret, "client_secret_post")
    return Credentials(form_id, None, "none")


def check_secret(secret: str | None, expected_hash: str | None) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    if secret is None or expected_hash is None:
        return False
    return hmac.compare_digest(token_hash(secret), expected_hash)


def authenticate(request: Request, form: Mapping[str, list[str]], ctx: Context) -> Flow[Client]:
    """The registered client the request authenticates as, or InvalidClient."""
    creds = credentials(request, form)
    if creds.method != "none" and names_document(creds.client_id, ctx):
        # CIMD §4.1: a document holds no secret (client_from_document takes
        # only "none"), so a secret is refused before anything is fetched.
        raise InvalidClient("a client metadata document client authenticates with none")
    client = yield from load_client(creds.client_id, ctx)
    if client is None:
        raise InvalidClient("unknown client")
    if client.token_endpoint_auth_method != creds.method:
        raise InvalidClient(
            f"the client is registered for {client.token_endpoint_auth_method}"
        )
    if creds.method == PRIVATE_KEY_JWT:
        assert creds.assertion is not None
        yield from _check_assertion(creds.assertion, client, ctx)
    elif creds.method != "none" and not check_secret(creds.secret, client.secret_hash):
        raise InvalidClient("client authentication failed")
    return client


def _check_assertion(assertion: Unverified, client: Client, ctx: Context) -> Flow[None]:
    """RFC 7523 §3: signed by one of the client's keys (given at
    registration, or fetched from its jwks_uri), its claims about it and
    us, and its jti never seen before."""
    try:
        if client.jwks is not None:
            claims = verify_signature(assertion, keys_for(assertion, key_set(client.jwks)))
        elif client.jwks_uri is not None:
            claims = yield from verified(assertion, client.jwks_uri, discover=False,
                                         public_only=ctx.tenant.fetches_public_only)
        else:
            raise JwtRefused("the client has no public keys")
        jti, exp = check_client_assertion(claims, client.client_id, ctx.tenant.issuer, ctx.now)
        yield from spend_jti(ctx.tenant.slug, "client", client.client_id, jti, exp)
    except JwtRefused as exc:
        raise InvalidClient(f"client authentication failed: {exc}") from None


def authenticated_id(request: Request, form: Mapping[str, list[str]], ctx: Context) -> Flow[str]:
    """The id of the client the request authenticates as, fetching no
    metadata document: such a client is public, and for a public client
    RFC 7009 §2.1 has nothing to check but whether the token was issued to
    that client_id. Anyone may send such a request, so none makes us fetch."""
    creds = credentials(request, form)
    if creds.method == "none" and names_document(creds.client_id, ctx):
        return creds.client_id
    client = yield from authenticate(request, form, ctx)
    return client.client_id
