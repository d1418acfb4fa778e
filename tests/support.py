"""Shared test helpers: tenants, a deterministic context, a scripted
upstream identity provider, and a browser-ish client that walks the flow
through the sync driver."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import time
from html import unescape
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs

from mcp_oauth_proxy.core.context import Context
from mcp_oauth_proxy.core.effects import Effect, FetchClientMetadata, run_sync
from mcp_oauth_proxy.core.http import HttpRequest, HttpResponse, Request, Response
from mcp_oauth_proxy.core.flows.guard import guard
from mcp_oauth_proxy.core.router import handle
from mcp_oauth_proxy.core.tenant import Tenant, Upstream
from mcp_oauth_proxy.runtime import sync_performer
from mcp_oauth_proxy.storage.memory import MemoryStore

ISSUER = "https://acme.example.com"
RESOURCE = "https://acme.example.com/mcp"
UPSTREAM_ISSUER = "https://idp.example.org"
VERIFIER = "v" * 43 + "-verifier"
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
REDIRECT = "http://127.0.0.1:33418/callback"
NOW = 1_800_000_000


def upstream(oidc: bool = True, **kw: Any) -> Upstream:
    base = dict(
        authorization_endpoint=f"{UPSTREAM_ISSUER}/authorize",
        token_endpoint=f"{UPSTREAM_ISSUER}/token",
        userinfo_endpoint=f"{UPSTREAM_ISSUER}/userinfo",
        client_id="upstream-client",
        client_secret="upstream-secret-value",
        issuer=UPSTREAM_ISSUER if oidc else None,
        scopes=("openid", "profile", "email") if oidc else ("read:user",),
        oidc=oidc,
        user_id_claim="sub" if oidc else "id",
    )
    base.update(kw)
    return Upstream(**base)  # type: ignore[arg-type]


def tenant(slug: str = "acme", issuer: str = ISSUER, resource: str = RESOURCE, **kw: Any) -> Tenant:
    kw.setdefault("upstream", upstream())
    kw.setdefault("scopes", ("mcp", "mcp:admin"))
    return Tenant(slug=slug, issuer=issuer, resource=resource, **kw)


def context(t: Tenant | None = None, now: int = NOW, seed: int = 1) -> Context:
    rng = random.Random(seed)
    return Context(
        tenant=t or tenant(), now=now, random=lambda n: rng.randbytes(n), cookie_key=b"k" * 32
    )


def jwt(claims: dict[str, Any]) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


@attrs.define
class FakeIdP:
    """A scripted upstream: answers the token and userinfo endpoints the way
    an OIDC provider (or GitHub) does, and records what it was sent."""

    oidc: bool = True
    sub: str = "user-42"
    expires_in: int | None = 3600
    sent: list[HttpRequest] = attrs.Factory(list)
    nonce: str | None = None
    issued: int = 0
    fail: Callable[[HttpRequest], HttpResponse | None] | None = None
    now: int = NOW

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        if self.fail is not None:
            answer = self.fail(request)
            if answer is not None:
                return answer
        if request.url.endswith("/token"):
            form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
            self.issued += 1
            body: dict[str, Any] = {
                "access_token": f"upstream-at-{self.issued}",
                "refresh_token": f"upstream-rt-{self.issued}",
                "token_type": "Bearer",
            }
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            if self.oidc and form.get("grant_type") == "authorization_code":
                body["id_token"] = jwt(
                    {"iss": UPSTREAM_ISSUER, "aud": "upstream-client", "sub": self.sub, "exp": self.now + 600,
                     "nonce": self.nonce, "email": "ada@example.org"}
                )
            return HttpResponse(200, (("content-type", "application/json"),), json.dumps(body).encode())
        if request.url.endswith("/userinfo"):
            profile = {"sub": self.sub, "name": "Ada"} if self.oidc else {"id": 4242, "login": "ada"}
            return HttpResponse(200, (("content-type", "application/json"),), json.dumps(profile).encode())
        return HttpResponse(404, (), b"")


class ServerClock:
    """The server's clock (``runtime.now_seconds``), moved on by a test
    instead of waiting: a token's age without the time going by."""

    def __init__(self) -> None:
        self.offset = 0

    def advance(self, seconds: int) -> None:
        self.offset += seconds

    def __call__(self) -> int:
        return int(time.time()) + self.offset


def params_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def refusal_of(response: Response) -> dict[str, str]:
    """What an authorization request was refused with, for the client: at
    its redirect URI, or, for one not trusted yet, behind the link on the
    page the person is shown (RFC 9700 §4.11.2)."""
    if response.status in (302, 303):
        return params_of(response.header("location") or "")
    assert response.status == 400 and response.header("location") is None, response
    link = re.search(r'<a href="([^"]+)">Go back to', response.body.decode())
    assert link is not None, response.body
    return params_of(unescape(link.group(1)))


def hidden_value(page: Response, name: str) -> str:
    """The value of the first hidden input of this name on a page of ours."""
    html = page.body.decode()
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


@attrs.define
class Harness:
    """Runs requests through the router with the sync driver, a memory store
    and a FakeIdP, keeping the browser's cookies."""

    tenant: Tenant = attrs.Factory(tenant)
    store: MemoryStore = attrs.Factory(MemoryStore)
    idp: FakeIdP = attrs.Factory(FakeIdP)
    now: int = NOW
    cookies: dict[str, str] = attrs.Factory(dict)
    seed: int = 0
    remote_addr: str = ""
    # How a flow is run: the sync driver unless a test swaps in another.
    driver: Callable[[Any], Any] | None = None

    def run(self, flow: Any) -> Any:
        if self.driver is not None:
            return self.driver(flow)
        return run_sync(flow, self.perform())

    def guard(self, access_token: str, required: tuple[str, ...] | None = None) -> Any:
        """The guard's answer (a Principal, or the 401/403 Response)."""
        request = Request("POST", urlsplit(self.tenant.resource).path,
                          headers=(("authorization", f"Bearer {access_token}"),))
        return self.run(guard(request, self.ctx(), required))

    def ctx(self) -> Context:
        self.seed += 1
        self.idp.now = self.now
        return context(self.tenant, self.now, self.seed)

    def perform(self) -> Callable[[Effect], Any]:
        return sync_performer(self.store, self.idp, sleep=lambda s: None)

    def request(self, method: str, url: str, *, form: dict[str, str] | None = None, json_body: Any = None,
                headers: list[tuple[str, str]] | None = None, body: bytes | None = None) -> Response:
        parts = urlsplit(url)
        hdrs = list(headers or [])
        data = b""
        if form is not None:
            data = urlencode(form).encode()
            hdrs.append(("content-type", "application/x-www-form-urlencoded"))
        elif json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs.append(("content-type", "application/json"))
        if body is not None:
            data = body
        if self.cookies:
            hdrs.append(("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        req = Request(method, parts.path, parts.query, tuple(hdrs), data, scheme=parts.scheme, host=parts.netloc,
                      remote_addr=self.remote_addr)
        response = self.run(handle(req, self.ctx()))
        for name, value in response.headers:
            if name == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";")[0]
        return response

    # -- steps of the flow -----------------------------------------------------
    def register(self, **meta: Any) -> dict[str, Any]:
        doc = {"redirect_uris": [REDIRECT], "client_name": "Test Client",
               "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
               "application_type": "native"}
        doc.update(meta)
        response = self.request("POST", f"{self.tenant.issuer}/oauth/register", json_body=doc)
        assert response.status == 201, response.body
        return response.json()

    def authorize_url(self, client_id: str, **extra: str) -> str:
        q = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
             "code_challenge": CHALLENGE, "code_challenge_method": "S256", "state": "client-state",
             "resource": self.tenant.resource}
        q.update(extra)
        q = {k: v for k, v in q.items() if v is not None}
        return f"{self.tenant.issuer}/oauth/authorize?" + urlencode(q)

    def consent_request_id(self, page: Response) -> str:
        return hidden_value(page, "request_id")

    def login(self, client_id: str, **extra: str) -> dict[str, str]:
        """authorize -> consent approve -> upstream -> callback; the params
        the client receives at its redirect URI."""
        page = self.request("GET", self.authorize_url(client_id, **extra))
        if page.status == 200:
            page = self.request("POST", f"{self.tenant.issuer}/oauth/consent",
                                form={"request_id": self.consent_request_id(page), "decision": "approve"})
            assert page.status == 303, page.body
        assert page.status in (302, 303), page.body
        upstream_params = params_of(page.header("location") or "")
        self.idp.nonce = upstream_params.get("nonce")
        back = self.request("GET", f"{self.tenant.issuer}/oauth/callback?" + urlencode(
            {"code": "upstream-code", "state": upstream_params["state"], "iss": UPSTREAM_ISSUER}))
        assert back.status == 302, back.body
        return params_of(back.header("location") or "")

    def sign_in_to_connections(self) -> Response:
        """GET the connections page, unsigned -> upstream -> callback; the
        page the person lands on."""
        start = self.request("GET", f"{self.tenant.issuer}/oauth/connections")
        assert start.status == 302, start.body
        upstream_params = params_of(start.header("location") or "")
        self.idp.nonce = upstream_params.get("nonce")
        back = self.request("GET", f"{self.tenant.issuer}/oauth/callback?" + urlencode(
            {"code": "upstream-code", "state": upstream_params["state"], "iss": UPSTREAM_ISSUER}))
        assert back.status == 303, back.body
        assert back.header("location") == f"{self.tenant.issuer}/oauth/connections"
        return self.request("GET", back.header("location") or "")

    def token(self, form: dict[str, str], headers: list[tuple[str, str]] | None = None) -> Response:
        return self.request("POST", f"{self.tenant.issuer}/oauth/token", form=form, headers=headers)

    def redeem(self, client_id: str | None, code: str, headers: list[tuple[str, str]] | None = None,
               **extra: str | None) -> Response:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "code_verifier": VERIFIER, "client_id": client_id}
        form.update(extra)
        return self.token({k: v for k, v in form.items() if v is not None}, headers)

    def tokens(self, **meta: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        client = self.register(**meta)
        params = self.login(client["client_id"])
        method = client["token_endpoint_auth_method"]
        if method == "client_secret_basic":
            pair = f"{client['client_id']}:{client['client_secret']}".encode()
            headers = [("authorization", "Basic " + base64.b64encode(pair).decode())]
            response = self.redeem(None, params["code"], headers)
        else:
            response = self.redeem(client["client_id"], params["code"], client_secret=client.get("client_secret"))
        assert response.status == 200, response.body
        return client, response.json()


# -- Client ID Metadata Documents ---------------------------------------------
DOC_URL = "https://app.example.net/oauth/client.json"


def document(**over: Any) -> dict[str, Any]:
    """A good client metadata document for DOC_URL, with ``over`` changed (None removes)."""
    doc = {"client_id": DOC_URL, "client_name": "Doc Client", "redirect_uris": [REDIRECT],
           "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none",
           "application_type": "native"}
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


class DocHarness(Harness):
    """A harness whose FetchClientMetadata effects are answered by ``self.documents``."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.documents: dict[str, HttpResponse | Exception] = {}
        self.fetched: list[FetchClientMetadata] = []
        self.effects: list[object] = []

    def perform(self) -> Callable[[Effect], Any]:
        def fetch_document(effect: FetchClientMetadata) -> HttpResponse:
            self.fetched.append(effect)
            answer = self.documents.get(effect.url, HttpResponse(404, (), b""))
            if isinstance(answer, Exception):
                raise answer
            return answer

        carry_out = sync_performer(self.store, self.idp, sleep=lambda s: None, fetch_document=fetch_document)

        def perform(effect: Effect) -> Any:
            self.effects.append(effect)
            return carry_out(effect)

        return perform

    def serve(self, doc: dict[str, Any] | bytes, content_type: str = "application/json", url: str = DOC_URL) -> None:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.documents[url] = HttpResponse(200, (("content-type", content_type),), body)
