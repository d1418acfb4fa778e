"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document;
the MCP authorization spec's preferred way for clients to identify
themselves): a ``client_id`` that is an https URL names a JSON document
describing the client, which we fetch (an SSRF-guarded Fetch) and check."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs

from .context import Context
from .effects import FetchClientMetadata, Flow, GetClient
from .errors import BrowserError, FetchFailed, InvalidClient, InvalidClientMetadata, InvalidRedirectUri
from .flows.register import is_blank, validate
from .http import HttpResponse, media_type, parse_json
from .models import Client
from .redirect_uris import is_plain_host

# A client metadata document is small; the draft suggests 5 KB as a limit.
MAX_DOCUMENT = 5 * 1024
# Cache lifetimes the Cache-Control of a document is clamped to (seconds).
MIN_CACHE = 60
MAX_CACHE = 24 * 3600
# How long a failed fetch (an error, or an answer other than 200) is
# remembered: a host that answers slowly or not at all is asked once per
# this time, not once per request naming it.
FAILED_CACHE = 10
_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def is_metadata_url(client_id: str) -> bool:
    return client_id.startswith("https://")


def names_document(client_id: str, ctx: Context) -> bool:
    """Whether this client_id names a metadata document the tenant accepts."""
    return is_metadata_url(client_id) and ctx.tenant.client_metadata_documents


_PATH_ESCAPES = re.compile(r"%(?:2[eEfF]|5[cC]|25|[01][0-9A-Fa-f]|7[fF])")


# The longest client_id URL taken (CIMD sets none; real ones are a few dozen characters).
MAX_CLIENT_ID_URL = 512


def check_client_id_url(url: str) -> None:
    """CIMD §3: https, with a path, no dot segments, fragment or userinfo;
    ASCII only, no backslash."""
    if len(url) > MAX_CLIENT_ID_URL:
        # It is written into every audit event of the client, kept for months.
        raise InvalidClient(f"the client_id URL is longer than {MAX_CLIENT_ID_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidClient("the client_id URL is malformed") from None
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidClient("the client_id URL must be https with a host")
    if not parts.path or parts.path == "/":
        raise InvalidClient("the client_id URL must have a path")
    # RFC 3986 §6.2.2.2: "%2E" is "."; such a segment is a dot segment too,
    # and so is one whose ";" parameter a host cuts off (Tomcat, Spring).
    if any(unquote(seg.partition(";")[0]) in (".", "..") for seg in parts.path.split("/")):
        raise InvalidClient("the client_id URL must not contain dot segments")
    # An encoded "/", "\", "%" or control character makes another path of
    # the same text on some hosts: one document presented as another's.
    if _PATH_ESCAPES.search(parts.path):
        raise InvalidClient("the client_id URL must not percent-encode '.', '/', '\\', '%' or a control "
                            "character in its path")
    if "#" in url or parts.username is not None or parts.password is not None:
        raise InvalidClient("the client_id URL must not contain a fragment or credentials")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidClient("the client_id URL contains spaces or control characters")
    # As for redirect URIs: one reading for Python, browsers and the person
    # the consent page names its host to (punycode, percent-encoding).
    if not url.isascii() or "\\" in url or not is_plain_host(parts.hostname):
        raise InvalidClient("the client_id URL must be ASCII, without backslashes, its host plainly written")


def cache_seconds(cache_control: str | None) -> int:
    """How long to keep a document: its max-age clamped to
    [MIN_CACHE, MAX_CACHE]; ``no-store``/``no-cache`` give the minimum, which
    still spares the client's host a fetch per request."""
    if not cache_control:
        return MIN_CACHE
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return MIN_CACHE
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return MIN_CACHE
    return max(MIN_CACHE, min(MAX_CACHE, int(match.group(1))))


def _document(response: HttpResponse) -> dict[str, Any]:
    if response.status != 200:
        raise InvalidClient(f"the client metadata document answered HTTP {response.status}")
    if len(response.body) > MAX_DOCUMENT:
        raise InvalidClient(f"the client metadata document is larger than {MAX_DOCUMENT} bytes")
    content_type = media_type(response.header("content-type"))
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidClient("the client metadata document is not served as application/json")
    try:
        doc = parse_json(response.body)
    except ValueError:
        raise InvalidClient("the client metadata document is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidClient("the client metadata document is not a JSON object")
    return doc


def client_from_document(url: str, response: HttpResponse, ctx: Context) -> Client:
    """The client a fetched document describes, or InvalidClient with the reason."""
    doc = _document(response)
    # CIMD §4.1: exact, simple string comparison.
    if doc.get("client_id") != url:
        raise InvalidClient("the document's client_id is not its URL")
    if not isinstance(doc.get("client_name"), str) or is_blank(doc["client_name"]):
        raise InvalidClient("the client metadata document has no client_name")
    # CIMD §4.1: no shared secrets in a public document.
    if "client_secret" in doc or "client_secret_expires_at" in doc:
        raise InvalidClient("the client metadata document must not contain a client secret")
    method = doc.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise InvalidClient("only token_endpoint_auth_method 'none' is supported for metadata documents")
    # The document serves every authorization server: keep the scopes this
    # tenant offers rather than refusing the client for the others.
    scope = doc.get("scope")
    if isinstance(scope, str):
        offered = [s for s in scope.split() if s in ctx.tenant.scopes]
        doc = {**doc, "scope": " ".join(offered) if offered else None}
    try:
        client = validate({**doc, "token_endpoint_auth_method": "none"}, ctx)
    except (InvalidClientMetadata, InvalidRedirectUri) as exc:
        raise InvalidClient(f"the client metadata document is invalid: {exc.description}") from None
    # Never stored, so never lapses unused: nothing to mark when it is used.
    return attrs.evolve(client, client_id=url, expires_at=None)


def load_client(client_id: str, ctx: Context) -> Flow[Client | None]:
    """The client behind an id: a registered one, or one described by its
    metadata document. InvalidClient says why a document was refused."""
    declared = next((c for c in ctx.tenant.machine_clients if c.client_id == client_id), None)
    if declared is not None:
        return declared
    if not names_document(client_id, ctx):
        client: Client | None = yield GetClient(ctx.tenant.slug, client_id)
        # A registration that never completed an authorization has lapsed.
        if client is not None and client.expires_at is not None and client.expires_at <= ctx.now:
            return None
        return client
    check_client_id_url(client_id)
    try:
        response = yield FetchClientMetadata(client_id, ctx.tenant.client_metadata_allow_loopback, ctx.requester)
    except FetchFailed as exc:
        raise InvalidClient(f"the client metadata document could not be fetched: {exc}") from None
    return client_from_document(client_id, response, ctx)


def load_browser_client(client_id: str, ctx: Context, missing: str) -> Flow[Client]:
    """:func:`load_client` for the browser's endpoints: a refused document or
    an unknown client is a page saying so (``missing`` for the latter)."""
    try:
        client = yield from load_client(client_id, ctx)
    except InvalidClient as exc:
        raise BrowserError("Unknown application", exc.description) from exc
    if client is None:
        raise BrowserError("Unknown application", missing)
    return client

