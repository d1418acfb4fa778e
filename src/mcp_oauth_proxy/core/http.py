"""Request and response value types, and the parsing every endpoint shares."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs

from .errors import InvalidRequest


def _lower_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    headers = tuple(headers)
    if all(name.islower() for name, _ in headers):
        return headers  # already lower case (ASGI servers send them so): no copy
    return tuple((name.lower(), value) for name, value in headers)


@attrs.frozen
class Request:
    """An HTTP request as the core sees it: already read, already decoded.

    ``path`` is the decoded path without the query; ``query`` the raw query
    string. Header names are lower-cased on construction. ``scheme`` and
    ``host`` are what the adapter decided the public URL is (after any
    trusted-proxy handling).
    """

    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_lower_headers)
    body: bytes = b""
    scheme: str = "https"
    host: str = "localhost"
    remote_addr: str = ""

    def header(self, name: str) -> str | None:
        """The single value of a header, or None. Repeated headers are joined
        with ", " as RFC 9110 §5.3 allows for list-valued fields."""
        name = name.lower()
        values = [v for n, v in self.headers if n == name]
        if not values:
            return None
        return ", ".join(values)

    def cookies(self) -> dict[str, str]:
        """Cookies of the request; on a repeated name the first one wins."""
        jar: dict[str, str] = {}
        for name, value in self.headers:
            if name != "cookie":
                continue
            for part in value.split(";"):
                key, sep, val = part.strip().partition("=")
                if sep and key and key not in jar:
                    jar[key] = val.strip().strip('"')
        return jar


@attrs.frozen
class Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    def with_headers(self, *headers: tuple[str, str]) -> Response:
        """The same answer with ``headers`` added."""
        return attrs.evolve(self, headers=self.headers + headers)


# -- requests the core sends upstream (carried out by a Fetch effect) --------


@attrs.frozen
class HttpRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    # The organization whose admin chose the URL: sent only to a public
    # address, or into the networks the operator lets that organization
    # reach (upstream/egress.py PUBLIC_ONLY). None: anywhere.
    public_only: str | None = None


@attrs.frozen
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_lower_headers)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return None


# -- parsing -------------------------------------------------------------------

# RFC 6749 §3.1 / §3.2: "Request and response parameters MUST NOT be included
# more than once." RFC 8707 §2 makes ``resource`` the exception.
_REPEATABLE = frozenset({"resource"})


def parse_params(raw: str) -> dict[str, list[str]]:
    """Parse a query string or urlencoded form into name -> values.

    Values that are not valid UTF-8 or a malformed encoding give
    ``invalid_request``; repeated parameters are rejected unless repeatable.
    """
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("the parameters are not valid UTF-8 urlencoding") from exc
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest(f"parameter {name!r} contains a NUL character")
        if name in params and name not in _REPEATABLE:
            raise InvalidRequest(f"parameter {name!r} is repeated")
        params.setdefault(name, []).append(value)
    return params


def single(params: Mapping[str, list[str]], name: str) -> str | None:
    """The one value of a parameter; an empty value counts as absent
    (RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if
    they were omitted from the request")."""
    values = params.get(name)
    if not values or values[0] == "":
        return None
    return values[0]


def required(params: Mapping[str, list[str]], name: str) -> str:
    value = single(params, name)
    if value is None:
        raise InvalidRequest(f"missing parameter {name!r}")
    return value


def form_params(request: Request) -> dict[str, list[str]]:
    """The body of a form POST (RFC 6749 §3.2 requires
    application/x-www-form-urlencoded)."""
    content_type = media_type(request.header("content-type"))
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the body is not valid UTF-8") from exc
    return parse_params(text)


def query_params(request: Request) -> dict[str, list[str]]:
    return parse_params(request.query)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes | str) -> Any:
    """JSON from an untrusted party. ValueError for anything that is not
    clean JSON text: bad UTF-8, nesting deep enough to exhaust the stack, or
    lone surrogates (``"\\ud800"``), which no response, page or store could
    encode as UTF-8 later."""
    try:
        # NaN and Infinity are not JSON (RFC 8259 §6); Python would accept them.
        value = json.loads(data, parse_constant=_no_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise ValueError("not valid JSON text") from exc
    return value


# -- building responses --------------------------------------------------------

NO_STORE = (("cache-control", "no-store"), ("pragma", "no-cache"))


def json_response(
    data: Mapping[str, Any] | list[Any],
    status: int = 200,
    headers: Iterable[tuple[str, str]] = (),
    no_store: bool = True,
) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    base = [("content-type", "application/json")]
    if no_store:
        base.extend(NO_STORE)
    return Response(status, tuple(base) + tuple(headers), body)


def redirect(location: str, status: int = 302, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, (("location", location), ("cache-control", "no-store")) + tuple(headers))


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type value, lower-cased, without its parameters."""
    return (content_type or "").split(";")[0].strip().lower()


def add_query(url: str, params: Mapping[str, str | None]) -> str:
    """Append parameters to a URL that may already have a query, keeping its
    own (RFC 6749 §3.1.2: the redirect URI's query component MUST be retained)."""
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    if not extra:
        return url
    # Registered redirect URIs never carry a fragment (RFC 6749 §3.1.2).
    return url + ("&" if "?" in url else "?") + extra
