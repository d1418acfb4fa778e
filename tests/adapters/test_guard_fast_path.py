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
    # One guard per case for every example: what it remembers of one
    # request (its verdicts, adapters/verdicts.py) is there for the others.
    remembering = GUARDS.setdefault((behind_proxy, required), BearerGuard(shown, fast, required_scopes=required))

    async def all_three() -> tuple[Any, Any, Any]:
        return (await _answer(remembering, scope), await _answer(remembering, scope),
                await _answer(BearerGuard(shown, slow, required_scopes=required), scope))

    first, again, flowed = anyio.run(all_three)
    assert first == again == flowed


GUARDS: dict[tuple[bool, Any], BearerGuard] = {}


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


# -- verdicts remembered by request (adapters/verdicts.py) --------------------------------


def _decided_anew(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Counts the requests the guard decides anew (not from a remembered verdict)."""
    decided: list[Any] = []
    guard = Site.guard

    def counting(self: Site, *args: Any, **kwargs: Any) -> Any:
        decided.append(args[0])
        return guard(self, *args, **kwargs)

    monkeypatch.setattr(Site, "guard", counting)
    return decided


def _harnessed(ttl: float = 60, clock: Any = None) -> tuple[Any, TokenCache, Site, str]:
    """(the harness, its token cache, a site over it, an access token the harness issued)"""
    import time

    from mcp_oauth_proxy.storage.memory import MemoryStore
    from support import Harness

    cache = TokenCache(MemoryStore(), ttl, clock=clock or time.monotonic)
    h = Harness(store=cache)  # type: ignore[arg-type]
    _, tokens = h.tokens()
    site = Site([h.tenant], cache, b"k" * 32, store_blocks=False)  # type: ignore[arg-type]
    return h, cache, site, tokens["access_token"]


def _acme(token: str | None, method: str = "GET", host: bytes = b"acme.example.com") -> dict[str, Any]:
    headers = [(b"host", host)] + ([(b"authorization", f"Bearer {token}".encode())] if token else [])
    return {**_scope(method, "/mcp", headers, "1.2.3.4"), "scheme": "https", "http_version": "1.1"}


def test_a_request_like_one_let_in_before_is_let_in_without_deciding_again(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, site, token = _harnessed()
    guard = BearerGuard(shown, site)
    decided = _decided_anew(monkeypatch)
    answers = [anyio.run(_answer, guard, _acme(token)) for _ in range(5)]
    assert {status for status, _, _ in answers} == {200} and len({body for _, _, body in answers}) == 1
    # The first looked the token up, the second decided from the token
    # cache's memory and was remembered; the rest were let in by that.
    assert len(decided) == 2
    # Another token, path or method is another request: decided anew.
    anyio.run(_answer, guard, _acme(token, "POST"))
    anyio.run(_answer, guard, _acme(token + "x"))
    anyio.run(_answer, guard, {**_acme(token), "path": "/mcp/x", "raw_path": b"/mcp/x"})
    assert len(decided) == 5


@pytest.mark.parametrize("revoke", ["token", "grant", "followed", "forget_all", "client"])
def test_a_remembered_verdict_goes_with_a_revocation_at_once(revoke: str) -> None:
    from mcp_oauth_proxy.core.context import token_hash
    from mcp_oauth_proxy.core.models import Revocation

    h, cache, site, token = _harnessed()
    guard = BearerGuard(shown, site)
    for _ in range(3):
        assert anyio.run(_answer, guard, _acme(token))[0] == 200  # remembered by now
    record = cache.remembered("acme", token_hash(token))
    assert record is not None
    if revoke == "token":
        cache.revoke_access_token("acme", record.token_hash)
    elif revoke == "grant":
        cache.revoke_grant("acme", record.grant_id)
    elif revoke == "followed":  # another process revoked it; this one follows the record of revocations
        cache.store.revoke_grant("acme", record.grant_id)
        cache.follow([Revocation("acme", Revocation.GRANT, record.grant_id, 0)])
    elif revoke == "forget_all":
        cache.store.revoke_access_token("acme", record.token_hash)
        cache.forget_all()
    else:
        cache.delete_client("acme", record.client_id)
    assert anyio.run(_answer, guard, _acme(token))[0] == 401


def test_a_remembered_verdict_lasts_no_longer_than_the_token_cache_remembers(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    _, cache, site, token = _harnessed(ttl=30, clock=lambda: clock[0])
    guard = BearerGuard(shown, site)
    decided = _decided_anew(monkeypatch)
    for _ in range(3):
        assert anyio.run(_answer, guard, _acme(token))[0] == 200
    assert len(decided) == 2
    clock[0] += 29.9
    assert anyio.run(_answer, guard, _acme(token))[0] == 200 and len(decided) == 2
    clock[0] += 0.2  # the cache's entry has lapsed: the store is asked again, and the verdict made again
    assert anyio.run(_answer, guard, _acme(token))[0] == 200 and len(decided) == 3
    assert anyio.run(_answer, guard, _acme(token))[0] == 200 and len(decided) == 4
    assert anyio.run(_answer, guard, _acme(token))[0] == 200 and len(decided) == 4


def test_a_remembered_verdict_ends_when_the_token_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from mcp_oauth_proxy.core.context import token_hash

    wall = time.time()
    steady = [1000.0]  # the token memory's clock
    monkeypatch.setattr(time, "time", lambda: wall)
    _, cache, site, token = _harnessed(ttl=10**6, clock=lambda: steady[0])
    guard = BearerGuard(shown, site)
    for _ in range(3):  # remembered by now
        assert anyio.run(_answer, guard, _acme(token))[0] == 200
    expires_at = cache.remembered("acme", token_hash(token)).expires_at  # type: ignore[union-attr]
    # Time passes on both clocks, to the token's last second, then past it.
    for at, status in ((expires_at + 0.99, 200), (expires_at + 1.0, 401)):
        monkeypatch.setattr(time, "time", lambda at=at: at)
        steady[0] = 1000.0 + (at - wall)
        assert anyio.run(_answer, guard, _acme(token))[0] == status


def test_a_remembered_verdict_goes_when_the_tenant_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    import attrs

    from mcp_oauth_proxy.directory import Entry

    h, _, site, token = _harnessed()
    guard = BearerGuard(shown, site)
    for _ in range(3):  # remembered by now
        assert anyio.run(_answer, guard, _acme(token))[0] == 200
    entry = site.directory.current.entries[0]
    # The tenant now requires a scope the token lacks.
    site.directory.replace([Entry(attrs.evolve(entry.tenant, scopes=("mcp", "admin"), required_scopes=("admin",)),
                                  entry.source)])
    status, headers, _ = anyio.run(_answer, guard, _acme(token))
    assert status == 403 and b"insufficient_scope" in dict(headers)[b"www-authenticate"]
    site.directory.replace([])
    assert anyio.run(_answer, guard, _acme(token))[0] == 404


def test_a_tenants_401_is_remembered_but_never_a_refused_token(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, site, token = _harnessed()
    guard = BearerGuard(shown, site)
    decided = _decided_anew(monkeypatch)
    for _ in range(3):
        assert anyio.run(_answer, guard, _acme(None))[0] == 401
    assert len(decided) == 1
    for i in range(3):
        assert anyio.run(_answer, guard, _acme("mcp_at_forged"))[0] == 401
    assert len(decided) == 4  # each decided anew: an unknown token is never remembered
    # A CORS preflight's verdict hangs on a header the key leaves out: never remembered.
    preflight = _acme(None, "OPTIONS")
    assert anyio.run(_answer, guard, preflight)[0] == 401
    preflight["headers"] = [*preflight["headers"], (b"access-control-request-method", b"POST")]
    assert anyio.run(_answer, guard, preflight)[0] == 204


def test_remembered_verdicts_hold_no_token_and_are_bounded() -> None:
    from mcp_oauth_proxy.adapters import verdicts

    _, _, site, token = _harnessed()
    guard = BearerGuard(shown, site)
    for _ in range(2):  # looked up, then decided from memory and remembered
        assert anyio.run(_answer, guard, _acme(token))[0] == 200
    kept = guard._verdicts._kept
    assert len(kept) == 1
    (key,) = kept
    # The Authorization value only as two hashes; nowhere the token itself.
    assert [type(part) for part in key] == [str, str, bytes, str, bytes, int, int]
    assert not any(token in repr(part) or token.encode() in repr(part).encode() for part in key)
    verdict = kept[key]
    assert not any(token in repr(getattr(verdict, name)) for name in verdicts.Verdict.__slots__)
    # A flood of requests made up to be remembered costs the memory no more than its bound.
    guard = BearerGuard(shown, site)
    guard._verdicts = verdicts.Verdicts(site.store.traits.memory, size=50)  # type: ignore[attr-defined]
    for i in range(120):
        scope = {**_acme(None), "path": f"/mcp/{i}", "raw_path": f"/mcp/{i}".encode()}
        assert anyio.run(_answer, guard, scope)[0] == 401
        assert len(guard._verdicts._kept) <= 50


def _served(site: Site) -> Any:
    """The standalone server's app over ``site``, its backend showing the principal and the body it read."""
    from mcp_oauth_proxy.adapters.asgi import OAuthApp
    from mcp_oauth_proxy.app import ServerApp

    async def backend(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope[PRINCIPAL_KEY].user_id.encode() + b" " + body})

    oauth = OAuthApp(site)
    return ServerApp(site, oauth, BearerGuard(backend, site, elsewhere=oauth), body_timeout=5)


SERVED = {behind_proxy: (_served(SITES[behind_proxy][0]), _served(SITES[behind_proxy][1]))
          for behind_proxy in (False, True)}


@settings(max_examples=300, deadline=None)
@given(st.booleans(), request)
@example(False, ("GET", "/mcp", VALID, "127.0.0.1", None))
@example(False, ("GET", "/mcp", [(b"host", b"acme.test")], "127.0.0.1", None))
@example(False, ("GET", "/t1/other", [(b"host", b"auth.test")], "127.0.0.1", None))
def test_the_served_app_answering_from_remembered_verdicts_answers_as_asking_the_store(behind_proxy: bool,
                                                                                       req: Any) -> None:
    method, path, headers, peer, _ = req
    remembering, flowing = SERVED[behind_proxy]
    scope = _scope(method, path, headers, peer)

    async def all_three() -> tuple[Any, Any, Any]:
        return await _answer(remembering, scope), await _answer(remembering, scope), await _answer(flowing, scope)

    first, again, flowed = anyio.run(all_three)
    assert first == again == flowed


def test_a_remembered_verdict_lets_a_body_through_whole_and_a_401_still_drains_one() -> None:
    _, _, site, token = _harnessed()
    served = _served(site)

    async def post(token: str | None, parts: list[bytes]) -> tuple[int, bytes, int]:
        scope = _acme(token, "POST")
        scope["headers"] = [*scope["headers"], (b"content-length", str(sum(map(len, parts))).encode())]
        pending = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
                   for i, part in enumerate(parts)]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return pending.pop(0) if pending else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await served(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), len(pending)

    parts = [b"a" * 10, b"b" * 10, b"c" * 10]
    for _ in range(3):  # the third by the remembered verdict
        status, body, unread = anyio.run(post, token, parts)
        assert status == 200 and body.endswith(b" " + b"".join(parts)) and unread == 0
    for _ in range(3):
        status, _, unread = anyio.run(post, None, parts)
        assert status == 401 and unread == 0  # read and dropped, so the connection can carry the next request


def test_the_access_log_names_the_client_a_remembered_verdict_let_in(caplog: pytest.LogCaptureFixture) -> None:
    from mcp_oauth_proxy.adapters.access_log import AccessLog

    _, _, site, token = _harnessed()
    logged = AccessLog(_served(site), site)
    with caplog.at_level("INFO", logger="mcp_oauth_proxy.access"):
        for _ in range(3):
            assert anyio.run(_answer, logged, _acme(token))[0] == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "mcp_oauth_proxy.access"]
    assert len(lines) == 3 and all("client_id=mcp_client_" in line for line in lines)


def test_a_made_up_place_too_long_to_remember_is_decided_anew_and_kept_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile review: each remembered 401 kept its path (twice, decoded
    and raw), up to a 16 KiB head each: 10,000 made-up paths held about
    290 MB. A place (host and path) is remembered no longer than the
    tenant directory remembers one."""
    from mcp_oauth_proxy.directory import REMEMBERED_PLACE

    _, _, site, token = _harnessed()
    guard = BearerGuard(shown, site)
    decided = _decided_anew(monkeypatch)
    long = "/mcp/" + "a" * REMEMBERED_PLACE
    for credentials in (None, token, token):
        scope = {**_acme(credentials), "path": long, "raw_path": long.encode()}
        assert anyio.run(_answer, guard, scope)[0] == (401 if credentials is None else 200)
    assert len(decided) == 3 and not guard._verdicts._kept
    short = "/mcp/" + "a" * (REMEMBERED_PLACE - len("/mcp/") - len("acme.example.com"))
    for _ in range(2):
        assert anyio.run(_answer, guard, {**_acme(None), "path": short, "raw_path": short.encode()})[0] == 401
    assert len(decided) == 4 and len(guard._verdicts._kept) == 1


def test_verdicts_of_a_tenant_directory_replaced_are_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile review: verdicts kept every snapshot of the directory they
    were decided in alive (each edit of a server makes one) until 10,000
    were kept. Once the directory is replaced, they are all forgotten."""
    import gc

    from mcp_oauth_proxy.directory import Snapshot

    _, _, site, token = _harnessed()
    guard = BearerGuard(shown, site)
    for _ in range(3):
        assert anyio.run(_answer, guard, _acme(token))[0] == 200
        assert anyio.run(_answer, guard, _acme(None))[0] == 401
    assert guard._verdicts._kept
    old = id(site.directory.current)
    site.directory.replace(list(site.directory.current.entries))
    assert anyio.run(_answer, guard, _acme(None, "DELETE"))[0] == 401
    gc.collect()
    assert not any(isinstance(o, Snapshot) and id(o) == old for o in gc.get_objects())


def test_a_remembered_verdict_ends_when_the_wall_clock_steps_past_the_tokens_expiry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile review: the verdict counted the token's expiry on the
    token memory's clock from when it was decided; a step of the wall clock
    (NTP) past the expiry let the token in for the rest of the cache's TTL,
    where the guard deciding anew refused it at once."""
    import time

    from mcp_oauth_proxy.core.context import token_hash

    wall = time.time()
    steady = [1000.0]
    monkeypatch.setattr(time, "time", lambda: wall)
    _, cache, site, token = _harnessed(ttl=60, clock=lambda: steady[0])
    guard = BearerGuard(shown, site)
    for _ in range(3):  # remembered by now
        assert anyio.run(_answer, guard, _acme(token))[0] == 200
    expires_at = cache.remembered("acme", token_hash(token)).expires_at  # type: ignore[union-attr]
    monkeypatch.setattr(time, "time", lambda: expires_at + 1.0)  # stepped; the steady clock has not moved
    assert anyio.run(_answer, guard, _acme(token))[0] == 401


def test_a_made_up_method_too_long_to_remember_is_kept_nowhere() -> None:
    """A second review: on trio (h11 takes any token as a method) 10,000
    requests with 60 KB methods held 565 MB of remembered 401s."""
    _, _, site, _ = _harnessed()
    guard = BearerGuard(shown, site)
    for i in range(3):
        assert anyio.run(_answer, guard, _acme(None, "M" * 2000 + str(i)))[0] == 401
    assert not guard._verdicts._kept
