"""The guard's one decision (core/flows/guard.py ``decide``) under its two
drivers: first as far as memory answers (a token the token cache holds, a
request without credentials), and only then under the async or sync driver
with the store. The two may never answer otherwise than the store-only
guard: here a guard over a TokenCache and one over a store that always
blocks (every lookup suspended and finished by the async driver) answer
the same requests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcp_oauth_proxy.adapters import asgi as asgi_module
from mcp_oauth_proxy.adapters.asgi import BearerGuard
from mcp_oauth_proxy.adapters.site import PRINCIPAL_KEY, Site
from mcp_oauth_proxy.adapters.wsgi import BearerGuardWSGI
from mcp_oauth_proxy.core.models import AccessToken
from mcp_oauth_proxy.core.tenant import Tenant
from mcp_oauth_proxy.runtime import now_seconds
from mcp_oauth_proxy.storage.token_cache import TokenCache
from support import upstream

TENANTS = (
    Tenant(slug="acme", issuer="http://acme.test", resource="http://acme.test/mcp", upstream=upstream(),
           scopes=("mcp", "admin"), required_scopes=("mcp",)),
    Tenant(slug="globex", issuer="http://globex.test", resource="http://globex.test/mcp", upstream=upstream(),
           scopes=("mcp",)),
    # A tenant under an issuer path, beside another on the same host.
    Tenant(slug="t1", issuer="http://auth.test/t1", resource="http://auth.test/t1/mcp", upstream=upstream(),
           scopes=("mcp",)),
    Tenant(slug="t2", issuer="http://auth.test/t2", resource="http://auth.test/t2/mcp", upstream=upstream(),
           scopes=("mcp",)),
)


def _record(name: str, tenant: str, resource: str, scope: tuple[str, ...] = ("mcp",), ttl: int = 3600) -> AccessToken:
    now = now_seconds()
    return AccessToken(tenant=tenant, token_hash=hashlib.sha256(f"mcp_at_{name}".encode()).hexdigest(),
                       grant_id=f"grant-{name}", client_id=f"client-{name}", user_id=f"user-{name}", scope=scope,
                       resource=resource, issued_at=now - 10, expires_at=now + ttl)


RECORDS = [
    _record("acme", "acme", "http://acme.test/mcp"),
    _record("acme-admin", "acme", "http://acme.test/mcp", ("mcp", "admin")),
    _record("acme-spelled", "acme", "HTTP://ACME.test:80/mcp"),  # the same resource, spelled otherwise
    _record("acme-noscope", "acme", "http://acme.test/mcp", ("admin",)),
    _record("acme-expired", "acme", "http://acme.test/mcp", ttl=-5),
    _record("acme-elsewhere", "acme", "http://acme.test/other"),
    _record("globex", "globex", "http://globex.test/mcp"),
    _record("t1", "t1", "http://auth.test/t1/mcp"),
    _record("t2", "t2", "http://auth.test/t2/mcp"),
]


class LookupStore:
    """Answers a lookup by the hash alone, whatever tenant asks: so the
    guard's own check that a token is the tenant's is what refuses it."""

    def __init__(self) -> None:
        self.by_hash = {r.token_hash: r for r in RECORDS}
        self.lookups = 0

    def get_access_token(self, tenant: str, token_hash: str) -> AccessToken | None:
        self.lookups += 1
        return self.by_hash.get(token_hash)


def _sites(trusted: tuple[str, ...] = ()) -> tuple[Site, Site, LookupStore]:
    """(a site whose guard remembers every token, one that never does, the store)"""
    store = LookupStore()
    cache = TokenCache(store, 600)  # type: ignore[arg-type]
    for record in RECORDS:
        for tenant in TENANTS:
            cache.get_access_token(tenant.slug, record.token_hash)
    fast = Site(TENANTS, cache, b"k" * 32, trusted_proxies=trusted)  # type: ignore[arg-type]
    # No memory, and a store that blocks: the first driver answers nothing that needs it.
    slow = Site(TENANTS, store, b"k" * 32, trusted_proxies=trusted, store_blocks=True)  # type: ignore[arg-type]
    return fast, slow, store


# Shared by every example, so what one remembers is there for the next.
SITES = {behind_proxy: _sites(("10.0.0.0/8",) if behind_proxy else ()) for behind_proxy in (False, True)}


async def shown(scope: Any, receive: Any, send: Any) -> None:
    p = scope[PRINCIPAL_KEY]
    body = json.dumps([p.tenant, p.user_id, p.client_id, list(p.scopes), p.grant_id, p.resource]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _answer(app: Any, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(dict(scope), receive, send)
    return sent[0]["status"], sent[0]["headers"], b"".join(m.get("body", b"") for m in sent[1:])


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]], peer: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": headers, "client": (peer, 4000), "server": ("127.0.0.1", 8000)}


TOKENS = [f"mcp_at_{r.grant_id.removeprefix('grant-')}" for r in RECORDS] + ["mcp_at_unknown", "other_token"]
authorization = st.one_of(
    st.sampled_from(TOKENS).flatmap(lambda t: st.sampled_from([
        f"Bearer {t}", f"Bearer {t}", f"bearer {t}", f"BEARER  {t} ", f"Basic {t}", f"Bearer{t}", t])),
    st.sampled_from(["Bearer", "Bearer ", ""]),
)
host = st.sampled_from([b"acme.test", b"ACME.TEST:80", b"acme.test:8080", b"globex.test", b"auth.test",
                        b"evil.test", b""])
header = st.one_of(
    st.tuples(st.sampled_from([b"host", b"host", b"Host"]), host),
    st.tuples(st.sampled_from([b"authorization", b"authorization", b"Authorization"]),
              authorization.map(str.encode)),
    st.tuples(st.just(b"x-forwarded-host"), st.sampled_from([b"globex.test", b"acme.test", b"auth.test"])),
    st.tuples(st.just(b"x-forwarded-proto"), st.sampled_from([b"https", b"http"])),
    st.tuples(st.just(b"access-control-request-method"), st.just(b"POST")),
)
# Mostly a plausible request (a Host, a bearer token), with odd headers added.
headers = st.tuples(st.lists(st.tuples(st.just(b"host"), host), max_size=1, min_size=1),
                    st.lists(st.tuples(st.just(b"authorization"), authorization.map(str.encode)), max_size=1),
                    st.lists(header, max_size=3)).flatmap(lambda parts: st.permutations(sum(parts, [])))
request = st.tuples(
    st.sampled_from(["GET", "POST", "DELETE", "OPTIONS"]),
    st.sampled_from(["/mcp", "/mcp/x", "/t1/mcp", "/t2/mcp/y", "/t1/other", "/other",
                     "/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp",
                     "/.well-known/oauth-protected-resource/t1/mcp"]),
    headers,
    st.sampled_from(["127.0.0.1", "10.0.0.7"]),
    st.sampled_from([None, ("mcp",), ("admin",), ()]),
)


VALID = [(b"host", b"acme.test"), (b"authorization", b"Bearer mcp_at_acme")]


@settings(max_examples=600, deadline=None)
@given(st.booleans(), request)
# The cases where memory would most likely answer wrongly, always tried:
# a CORS preflight carrying a good token, the metadata URL, a second Host
# or Authorization header, and X-Forwarded-Host from a trusted proxy.
@example(False, ("OPTIONS", "/mcp", [*VALID, (b"access-control-request-method", b"POST")], "127.0.0.1", None))
@example(False, ("GET", "/.well-known/oauth-protected-resource", VALID, "127.0.0.1", None))
@example(False, ("GET", "/mcp", [*VALID, (b"host", b"globex.test"), (b"authorization", b"Bearer mcp_at_globex")],
                 "127.0.0.1", None))
@example(False, ("GET", "/mcp", [(b"host", b"globex.test"), *VALID], "127.0.0.1", None))
@example(False, ("GET", "/mcp", [(b"authorization", b"Bearer mcp_at_globex"), *VALID], "127.0.0.1", None))
@example(True, ("GET", "/mcp", [*VALID, (b"x-forwarded-host", b"globex.test")], "10.0.0.7", None))
# Without credentials: a tenant's 401 names its own scopes and metadata URL.
@example(False, ("GET", "/mcp", [(b"host", b"acme.test")], "127.0.0.1", ("admin",)))
@example(False, ("GET", "/mcp", [(b"host", b"acme.test")], "127.0.0.1", None))
@example(False, ("GET", "/t2/mcp", [(b"host", b"auth.test")], "127.0.0.1", None))
@example(False, ("GET", "/.well-known/oauth-protected-resource/mcp", [(b"host", b"acme.test")], "127.0.0.1", None))
@example(False, ("OPTIONS", "/mcp", [(b"host", b"acme.test"), (b"access-control-request-method", b"POST")],
                 "127.0.0.1", None))
def test_the_guard_answering_from_memory_answers_as_the_guard_asking_the_store(behind_proxy: bool, req: Any) -> None:
    method, path, headers, peer, required = req
    fast, slow, _ = SITES[behind_proxy]
    scope = _scope(method, path, headers, peer)

    async def both() -> tuple[Any, Any]:
        return (await _answer(BearerGuard(shown, fast, required_scopes=required), scope),
                await _answer(BearerGuard(shown, slow, required_scopes=required), scope))

    remembered, flowed = anyio.run(both)
    assert remembered == flowed


def _no_second_driver(*args: Any) -> Any:
    raise AssertionError("the async driver ran")


def test_a_remembered_token_is_admitted_without_the_store_or_the_async_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, _, store = _sites()
    store.lookups = 0
    monkeypatch.setattr(asgi_module, "run_async", _no_second_driver)
    scope = _scope("POST", "/mcp", [(b"host", b"acme.test"), (b"authorization", b"Bearer mcp_at_acme")], "1.2.3.4")
    status, _, body = anyio.run(_answer, BearerGuard(shown, fast), scope)
    assert status == 200 and json.loads(body)[:3] == ["acme", "user-acme", "client-acme"]
    assert store.lookups == 0


def test_a_token_not_in_memory_is_looked_up_once_by_the_second_driver() -> None:
    fast, _, store = _sites()
    store.lookups = 0
    scope = _scope("GET", "/mcp", [(b"host", b"acme.test"), (b"authorization", b"Bearer mcp_at_unknown")], "1.2.3.4")
    assert anyio.run(_answer, BearerGuard(shown, fast), scope)[0] == 401
    assert store.lookups == 1


def test_a_request_without_credentials_gets_its_tenants_one_401(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, _, _ = _sites()
    view = ("GET", "http", "acme.test", "/mcp", None, False)
    assert fast.guard(view, None)[1] is fast.guard(view, None)[1]  # made once
    monkeypatch.setattr(asgi_module, "run_async", _no_second_driver)
    guard = BearerGuard(shown, fast)
    status, headers, _ = anyio.run(_answer, guard, _scope("GET", "/mcp", [(b"host", b"acme.test")], "1.2.3.4"))
    assert status == 401
    assert dict(headers)[b"www-authenticate"] == (
        b'Bearer resource_metadata="http://acme.test/.well-known/oauth-protected-resource/mcp", scope="mcp"')
    globex = anyio.run(_answer, guard, _scope("GET", "/mcp", [(b"host", b"globex.test")], "1.2.3.4"))
    assert globex[0] == 401 and b"globex.test" in dict(globex[1])[b"www-authenticate"]


@pytest.mark.parametrize("token, status", [("mcp_at_acme-expired", 401), ("mcp_at_acme-noscope", 403),
                                           ("mcp_at_globex", 401), ("mcp_at_acme-elsewhere", 401)])
def test_a_remembered_token_the_guard_refuses_is_refused_by_the_flow(token: str, status: int) -> None:
    fast, _, _ = _sites()
    scope = _scope("GET", "/mcp", [(b"host", b"acme.test"), (b"authorization", f"Bearer {token}".encode())], "1.2.3.4")
    got, headers, _ = anyio.run(_answer, BearerGuard(shown, fast), scope)
    assert got == status and any(name == b"www-authenticate" for name, _ in headers)


def test_the_wsgi_guard_admits_a_remembered_token_and_refuses_a_remembered_expired_one() -> None:
    fast, _, store = _sites()
    store.lookups = 0

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [environ[PRINCIPAL_KEY].user_id.encode()]

    guard = BearerGuardWSGI(app, fast)
    statuses: list[str] = []

    def call(token: str) -> bytes:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/mcp", "HTTP_HOST": "acme.test", "wsgi.url_scheme": "http",
                   "HTTP_AUTHORIZATION": f"Bearer {token}", "REMOTE_ADDR": "1.2.3.4"}
        return b"".join(guard(environ, lambda status, headers: statuses.append(status)))

    assert call("mcp_at_acme") == b"user-acme" and statuses[-1].startswith("200")
    call("mcp_at_acme-expired")
    assert statuses[-1].startswith("401")
    assert store.lookups == 0  # both answered from memory


def test_a_records_principal_is_made_once_and_is_not_one_of_its_fields() -> None:
    import attrs

    from mcp_oauth_proxy.core.models import Principal

    record = RECORDS[1]
    assert record.principal is record.principal  # the token cache hands out one record, so one principal
    assert record.principal == Principal(tenant="acme", user_id="user-acme-admin", client_id="client-acme-admin",
                                         scopes=("mcp", "admin"), expires_at=record.expires_at,
                                         grant_id="grant-acme-admin", resource="http://acme.test/mcp")
    # Not stored, compared or hashed with the record.
    assert "principal" not in attrs.asdict(record)
    assert attrs.evolve(record) == record and hash(attrs.evolve(record)) == hash(record)


def test_a_token_revoked_through_the_cache_is_refused_at_once() -> None:
    from mcp_oauth_proxy.core.context import token_hash
    from mcp_oauth_proxy.storage.memory import MemoryStore
    from support import Harness

    cache = TokenCache(MemoryStore(), 60)
    h = Harness(store=cache)  # type: ignore[arg-type]
    _, tokens = h.tokens()
    site = Site([h.tenant], cache, b"k" * 32, store_blocks=False)  # type: ignore[arg-type]
    headers = [(b"host", b"acme.example.com"), (b"authorization", f"Bearer {tokens['access_token']}".encode())]
    scope = {**_scope("GET", "/mcp", headers, "1.2.3.4"), "scheme": "https"}
    guard = BearerGuard(shown, site)
    assert anyio.run(_answer, guard, scope)[0] == 200
    assert cache.remembered("acme", token_hash(tokens["access_token"])) is not None  # memory's to answer
    cache.revoke_access_token("acme", token_hash(tokens["access_token"]))
    assert anyio.run(_answer, guard, scope)[0] == 401


def test_only_places_of_a_sane_length_are_remembered() -> None:
    fast, _, _ = _sites()
    fast.directory.current._picked.cache_clear()
    for i in range(50):
        assert fast.pick_at("http", "acme.test", f"/mcp/{i:0600d}").tenant.slug == "acme"  # type: ignore[union-attr]
    assert fast.directory.current._picked.cache_info().currsize == 0
    assert fast.pick_at("http", "acme.test", "/mcp").tenant.slug == "acme"  # type: ignore[union-attr]
    assert fast.directory.current._picked.cache_info().currsize == 1
