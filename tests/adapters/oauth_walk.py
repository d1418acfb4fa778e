"""The client's and the browser's side of the whole flow, written once as a
generator of HTTP requests and driven by a sync (WSGI) or async (ASGI)
httpx client. Requests to the identity provider go over real HTTP."""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Generator, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

T = TypeVar("T")
# (method, url, httpx keyword arguments); the answer is sent back in.
Step = tuple[str, str, dict[str, Any]]
Walk = Generator[Step, httpx.Response, T]

REDIRECT = "http://127.0.0.1:33418/callback"
VERIFIER = "w" * 50
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
UPSTREAM = "upstream"  # a keyword marking a request that goes to the real IdP


def params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def register(issuer: str) -> Walk[dict[str, Any]]:
    r = yield ("POST", f"{issuer}/oauth/register", {"json": {
        "redirect_uris": [REDIRECT], "client_name": "Walker", "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "application_type": "native"}})
    assert r.status_code == 201, r.text
    return r.json()


def authorize_url(issuer: str, resource: str, client_id: str) -> str:
    return f"{issuer}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "state": "st-1",
        "code_challenge": CHALLENGE, "code_challenge_method": "S256", "resource": resource, "scope": "mcp"})


def to_upstream(issuer: str, resource: str, client_id: str) -> Walk[str]:
    """authorize -> consent approved; the URL of the upstream's login."""
    page = yield ("GET", authorize_url(issuer, resource, client_id), {})
    if page.status_code == 200:
        html = page.text
        marker = 'name="request_id" value="'
        start = html.index(marker) + len(marker)
        request_id = html[start:html.index('"', start)]
        page = yield ("POST", f"{issuer}/oauth/consent", {"data": {"request_id": request_id, "decision": "approve"}})
        assert page.status_code == 303, page.text
    assert page.status_code in (302, 303), page.text
    return page.headers["location"]


def at_upstream(upstream_url: str) -> Walk[str]:
    """The person signs in at the IdP; the URL it sends the browser back to."""
    r = yield ("GET", upstream_url, {UPSTREAM: True})
    assert r.status_code == 302, r.text
    return r.headers["location"]


def login(issuer: str, resource: str, client_id: str) -> Walk[dict[str, str]]:
    """The parameters the client receives at its redirect URI."""
    upstream_url = yield from to_upstream(issuer, resource, client_id)
    callback = yield from at_upstream(upstream_url)
    back = yield ("GET", callback, {})
    assert back.status_code == 302, back.text
    assert back.headers["location"].startswith(REDIRECT)
    return params(back.headers["location"])


def redeem(issuer: str, client_id: str, code: str) -> Walk[httpx.Response]:
    return (yield ("POST", f"{issuer}/oauth/token", {"data": {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER, "client_id": client_id}}))


def tokens(issuer: str, resource: str) -> Walk[tuple[str, dict[str, Any]]]:
    """(client_id, token response) after a whole login."""
    client = yield from register(issuer)
    got = yield from login(issuer, resource, client["client_id"])
    assert got["iss"] == issuer and got["state"] == "st-1"
    r = yield from redeem(issuer, client["client_id"], got["code"])
    assert r.status_code == 200, r.text
    return client["client_id"], r.json()


def hidden(page: httpx.Response, name: str) -> str:
    marker = f'name="{name}" value="'
    start = page.text.index(marker) + len(marker)
    return page.text[start:page.text.index('"', start)]


def connections(issuer: str) -> Walk[httpx.Response]:
    """The person opens the connections page, signs in at the IdP, and is
    shown their connections."""
    start = yield ("GET", f"{issuer}/oauth/connections", {})
    assert start.status_code == 302, start.text
    callback = yield from at_upstream(start.headers["location"])
    back = yield ("GET", callback, {})
    assert back.status_code == 303 and back.headers["location"] == f"{issuer}/oauth/connections", back.text
    page = yield ("GET", back.headers["location"], {})
    assert page.status_code == 200, page.text
    return page


def disconnect(issuer: str, page: httpx.Response) -> Walk[httpx.Response]:
    """The Disconnect button of the page's first connection; the page after."""
    done = yield ("POST", f"{issuer}/oauth/connections", {"data": {
        "form_token": hidden(page, "form_token"), "grant_id": hidden(page, "grant_id"), "action": "disconnect"}})
    assert done.status_code == 303, done.text
    return (yield ("GET", done.headers["location"], {}))


def bearer(token: str) -> dict[str, Any]:
    return {"headers": {"authorization": f"Bearer {token}"}}


# -- drivers ---------------------------------------------------------------------


def _upstream_request(step: Step) -> httpx.Response:
    method, url, kw = step
    kw = {k: v for k, v in kw.items() if k != UPSTREAM}
    with httpx.Client(follow_redirects=False, trust_env=False) as real:
        return real.request(method, url, **kw)


def drive(walk: Walk[T], client: httpx.Client) -> T:
    answer = None
    try:
        while True:
            step = walk.send(answer)  # type: ignore[arg-type]
            method, url, kw = step
            answer = _upstream_request(step) if kw.get(UPSTREAM) else client.request(method, url, **kw)
    except StopIteration as stop:
        return stop.value


async def drive_async(walk: Walk[T], client: httpx.AsyncClient) -> T:
    answer = None
    try:
        while True:
            step = walk.send(answer)  # type: ignore[arg-type]
            method, url, kw = step
            # The IdP runs in its own thread: a blocking call from the loop is fine here.
            answer = _upstream_request(step) if kw.get(UPSTREAM) else await client.request(method, url, **kw)
    except StopIteration as stop:
        return stop.value
