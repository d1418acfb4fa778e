"""Dynamic client registration (RFC 7591)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import attrs

from ..context import Context, token_hash
from ..effects import Audit, Flow, SaveClient
from ..errors import InvalidClientMetadata, InvalidRedirectUri, InvalidScope
from ..http import Request, Response, json_response, media_type, parse_json
from ..models import Client
from ..redirect_uris import check_registrable, is_loopback_redirect
from ..scopes import parse_scope

AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
GRANT_TYPES = ("authorization_code", "refresh_token")
MAX_BODY = 64 * 1024
MAX_REDIRECT_URIS = 20
MAX_NAME = 200
# What the consent page would show as nothing, or as a mere space: control
# and format characters, separators but the space, private use, unassigned
# code points (all that str.isprintable() refuses); bidi controls reorder
# what is shown (Unicode TR #36, "Trojan Source" CVE-2021-42574). And the
# Default_Ignorable_Code_Point characters (Unicode UAX #44, its
# DerivedCoreProperties.txt) that are printable by that measure: variation
# selectors, fillers, joiners. "Clau\u200bde" would show as another
# client's name.
_IGNORABLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U0001bca0-\U0001bca3"
                        "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")


def _shown(value: str) -> bool:
    """Whether every character of ``value`` is seen on a page."""
    return value.isprintable() and _IGNORABLE.search(value) is None


def is_blank(name: str) -> bool:
    """Whether a name shows as nothing but blank space: spaces, and the
    braille blank that is drawn as one (U+2800, a symbol by its category)."""
    return not name.replace("\u2800", " ").strip()


def shown_name(client: Client) -> str:
    """What a page calls a client: its name, else (none, or a blank one
    registered before blank names were refused) its id."""
    name = client.client_name
    return name if name is not None and not is_blank(name) else client.client_id


def _string(doc: dict[str, Any], key: str, limit: int = 2000) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidClientMetadata(f"{key} must be a string of at most {limit} characters")
    if not _shown(value):
        raise InvalidClientMetadata(f"{key} must not contain control characters or characters not seen")
    return value


def _name(doc: dict[str, Any]) -> str | None:
    name = _string(doc, "client_name", MAX_NAME)
    if name is not None and is_blank(name):
        # The consent page would ask "Allow   ?" (no name: it shows the id).
        raise InvalidClientMetadata("client_name must show something: it is blank")
    return name


def _string_list(doc: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidClientMetadata(f"{key} must be an array of strings")
    return tuple(dict.fromkeys(value))


def _loopback_only(redirect_uris: tuple[str, ...]) -> bool:
    """Every redirect URI an http one on the loopback interface."""
    return all(uri.partition(":")[0].lower() == "http" and is_loopback_redirect(uri) for uri in redirect_uris)


def _web_page(value: str | None) -> str | None:
    """RFC 7591 §2 client_uri: a web page of the client's, never script."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidClientMetadata("client_uri is not a valid URL") from None
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname or not value.isascii():
        raise InvalidClientMetadata("client_uri must be an https or http URL, in ASCII")
    return value


def parse_metadata(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise InvalidClientMetadata("the registration request is too large")
    try:
        doc = parse_json(body)
    except ValueError as exc:
        raise InvalidClientMetadata("the body must be a JSON object") from exc
    if not isinstance(doc, dict):
        raise InvalidClientMetadata("the body must be a JSON object")
    return doc


def validate(doc: dict[str, Any], ctx: Context) -> Client:
    """Check the metadata and build the client record (without id and secret)."""
    given_type = _string(doc, "application_type")
    if given_type and given_type not in ("web", "native"):
        raise InvalidClientMetadata("application_type must be 'web' or 'native'")

    grant_types = _string_list(doc, "grant_types", ("authorization_code",))
    unsupported = [g for g in grant_types if g not in GRANT_TYPES]
    if unsupported:
        raise InvalidClientMetadata("unsupported grant_types: " + ", ".join(unsupported))
    if "authorization_code" not in grant_types:
        raise InvalidClientMetadata("grant_types must include authorization_code")
    response_types = _string_list(doc, "response_types", ("code",))
    if response_types != ("code",):
        raise InvalidClientMetadata("response_types must be ['code']")

    # RFC 7591 §2: the default is client_secret_basic.
    method = _string(doc, "token_endpoint_auth_method") or "client_secret_basic"
    if method not in AUTH_METHODS:
        raise InvalidClientMetadata(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")

    redirect_uris = _string_list(doc, "redirect_uris", ())
    if not redirect_uris:
        raise InvalidRedirectUri("redirect_uris is required for the authorization_code grant")
    if len(redirect_uris) > MAX_REDIRECT_URIS:
        raise InvalidRedirectUri(f"at most {MAX_REDIRECT_URIS} redirect_uris")
    # Loopback redirects are a native application's (RFC 8252 §7.3); else
    # OIDC Registration §2's default, web.
    loopback = _loopback_only(redirect_uris)
    application_type = given_type or ("native" if loopback else "web")
    for uri in redirect_uris:
        check_registrable(uri, application_type)
    if application_type == "web" and loopback:
        # OIDC Registration §2: a web application does not redirect to localhost.
        raise InvalidRedirectUri("a web application cannot have only loopback redirect URIs; register it as native")

    scope = _string(doc, "scope") or None  # an empty scope is no scope
    if scope is not None:
        try:
            asked = parse_scope(scope)
        except InvalidScope as exc:
            raise InvalidClientMetadata("scope is malformed") from exc
        unknown = [s for s in asked if s not in ctx.tenant.scopes]
        if unknown:
            raise InvalidClientMetadata("scope not offered by this server: " + " ".join(unknown))
        scope = " ".join(asked)

    client_uri = _web_page(_string(doc, "client_uri"))

    return Client(
        tenant=ctx.tenant.slug,
        client_id="",
        redirect_uris=redirect_uris,
        token_endpoint_auth_method=method,
        grant_types=grant_types,
        response_types=response_types,
        application_type=application_type,
        created_at=ctx.now,
        expires_at=ctx.now + ctx.tenant.policy.unused_client_ttl,
        client_name=_name(doc),
        client_uri=client_uri,
        scope=scope,
    )


def client_metadata(client: Client) -> dict[str, Any]:
    """The registered metadata as returned to the client (RFC 7591 §3.2.1)."""
    data: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": client.created_at,
        "redirect_uris": list(client.redirect_uris),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "grant_types": list(client.grant_types),
        "response_types": list(client.response_types),
        "application_type": client.application_type,
    }
    for key in ("client_name", "client_uri", "scope"):
        value = getattr(client, key)
        if value is not None:
            data[key] = value
    return data


def register(request: Request, ctx: Context) -> Flow[Response]:
    # RFC 7591 §3.1: the request is application/json, which a page
    # elsewhere cannot make a visitor's browser send without asking first.
    if media_type(request.header("content-type")) != "application/json":
        raise InvalidClientMetadata("the registration request must be application/json (RFC 7591 section 3.1)")
    doc = parse_metadata(request.body)
    client = validate(doc, ctx)
    client_id = ctx.token("mcp_client_")
    secret = None if client.is_public else ctx.token("mcp_secret_")
    client = attrs.evolve(
        client, client_id=client_id, secret_hash=None if secret is None else token_hash(secret)
    )
    yield SaveClient(client)
    yield Audit("client_registered", ctx.tenant.slug, client.client_id,
                detail=(("client_name", client.client_name or ""), ("remote_addr", request.remote_addr)))
    body = client_metadata(client)
    if secret is not None:
        body["client_secret"] = secret
        body["client_secret_expires_at"] = 0
    return json_response(body, status=201)
