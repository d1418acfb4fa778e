"""Store operations declared once (core/effects.py ``StoreEffect``), and what
is derived from them (core/store.py): the Store protocol, every backend's
conformance, application by keyword, the token cache's explicit wrapping,
and the stores' declared traits."""

from __future__ import annotations

import inspect
import threading
import typing
import time
from typing import Any

import anyio
import attrs
import pytest

from mcp_oauth_proxy.adapters.site import Site, ready_performer
from mcp_oauth_proxy.core import effects
from mcp_oauth_proxy.core.effects import (
    STORE_OPERATIONS,
    GetAccessToken,
    RevokeGrant,
    StoreEffect,
    Suspended,
    TakeCode,
    WouldBlock,
)
from mcp_oauth_proxy.core.context import token_hash
from mcp_oauth_proxy.core.models import AccessToken, CodeGrant
from mcp_oauth_proxy.core.store import (
    OPERATIONS,
    UNDECLARED,
    Store,
    StoreTraits,
    conformance,
    forwarding,
    signature,
    traits_of,
)
from mcp_oauth_proxy.runtime import async_performer
from mcp_oauth_proxy.storage.crypto import KeyRing
from mcp_oauth_proxy.storage.memory import MemoryStore
from mcp_oauth_proxy.storage.sql import SqlStore, make_engine
from mcp_oauth_proxy.storage.token_cache import TokenCache
from support import RESOURCE, tenant


def _arguments(op: type[StoreEffect[Any]]) -> dict[str, object]:
    """A distinct value for each field (same-typed fields never alike)."""
    return {name: f"{op.__name__}.{name}" for name in op.parameters}


class Recorder:
    """Every operation, recording the keywords it was called with."""

    traits = UNDECLARED

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    def __getattr__(self, name: str) -> Any:
        def method(**kwargs: object) -> str:
            self.calls.append((name, kwargs))
            return f"answer of {name}"

        return method


# -- the declarations ------------------------------------------------------------


def test_each_operation_is_declared_once_and_named_after_its_class() -> None:
    assert len({op.method for op in STORE_OPERATIONS}) == len(STORE_OPERATIONS) == len(OPERATIONS)
    for op in STORE_OPERATIONS:
        assert getattr(effects, op.__name__) is op
        assert op.method == "".join(f"_{c.lower()}" if c.isupper() else c for c in op.__name__).lstrip("_")
        assert op.__doc__ and op.__doc__.strip(), f"{op.__name__} states no contract"
        assert op.parameters == tuple(f.name for f in attrs.fields(op))
        assert attrs.has(op) and issubclass(op, effects.Effect)


def test_the_answer_is_the_declared_type_parameter() -> None:
    assert TakeCode.answer == (CodeGrant | None)
    assert RevokeGrant.answer is type(None)
    assert effects.RevocationsSince.answer == list[effects.Revocation]
    assert effects.HitCounter.answer is int


def test_the_store_protocol_is_derived_from_the_declarations() -> None:
    methods = {name for name, value in vars(Store).items() if inspect.isfunction(value) and not name.startswith("__")}
    assert methods == set(OPERATIONS)
    assert typing.get_type_hints(Store) == {"traits": StoreTraits}
    for name, op in OPERATIONS.items():
        method = getattr(Store, name)
        assert inspect.signature(method) == signature(op)
        assert method.__doc__ == op.__doc__
    assert str(inspect.signature(Store.delete_expired)) == "(self, now: int, limit: int = 1000) -> int"


# -- every backend implements every declared operation, as declared ----------------


@pytest.mark.parametrize("backend", [MemoryStore, SqlStore, TokenCache])
def test_every_backend_class_conforms(backend: type) -> None:
    assert conformance(backend) == []


def test_every_opened_backend_conforms_and_so_does_a_cache_in_front(store: object) -> None:
    assert conformance(store) == []
    assert conformance(TokenCache(store, 5)) == []  # type: ignore[arg-type]


def test_conformance_names_what_differs() -> None:
    class Wrong:
        def take_code(self, tenant: str, now: int, code_hash: str) -> CodeGrant | None:  # two swapped
            return None

        def hit_counter(self, key: str, window_start: int, expires_at: int) -> str:  # another answer
            return ""

        def delete_expired(self, now: int, limit: int = 10) -> int:  # another default
            return 0

        def get_grant(self, tenant: str, grant: str) -> None:  # renamed, another answer
            return None

    problems = conformance(Wrong)
    by_name: dict[str, list[str]] = {}
    for problem in problems:
        by_name.setdefault(problem.split(":")[0], []).append(problem.split(": ", 1)[1])
    assert [p.split(" ")[0] for p in by_name.pop("take_code")] == ["parameters"]
    assert [p.split(" ")[0] for p in by_name.pop("hit_counter")] == ["answers"]
    assert [p.split(" ")[0] for p in by_name.pop("delete_expired")] == ["parameters"]
    assert [p.split(" ")[0] for p in by_name.pop("get_grant")] == ["parameters", "answers"]
    assert by_name == {name: ["missing"] for name in OPERATIONS if name not in
                       ("take_code", "hit_counter", "delete_expired", "get_grant")}


# -- applied by keyword --------------------------------------------------------------


@pytest.mark.parametrize("op", STORE_OPERATIONS, ids=lambda op: op.__name__)
def test_each_field_reaches_the_parameter_of_its_name(op: type[StoreEffect[Any]]) -> None:
    recorder = Recorder()
    arguments = _arguments(op)
    assert op(**arguments).apply(recorder) == f"answer of {op.method}"
    assert recorder.calls == [(op.method, arguments)]


def test_a_backend_ordering_same_typed_parameters_otherwise_still_gets_each_by_name() -> None:
    # Positional application (attrs.astuple) would hand this store the hash
    # as the tenant, and the tenant as the hash.
    class Reversed:
        def get_access_token(self, token_hash: str, tenant: str) -> tuple[str, str]:
            return tenant, token_hash

        def take_code(self, now: int, code_hash: str, tenant: str) -> tuple[str, str, int]:
            return tenant, code_hash, now

    assert GetAccessToken("acme", "hash-1").apply(Reversed()) == ("acme", "hash-1")
    assert TakeCode("acme", "code-1", 7).apply(Reversed()) == ("acme", "code-1", 7)


def test_a_backend_whose_parameter_names_differ_fails_loudly() -> None:
    class Misnamed:
        def get_access_token(self, tenant: str, hash: str) -> None:
            return None

    with pytest.raises(TypeError):
        GetAccessToken("acme", "hash-1").apply(Misnamed())


# -- the token cache wraps explicitly --------------------------------------------------


def test_the_cache_passes_every_operation_it_does_not_override_to_the_store() -> None:
    assert "__getattr__" not in vars(TokenCache)
    overridden = {"get_access_token", "revoke_access_token", "revoke_grant", "revoke_grant_of_code",
                  "rotate_refresh_token", "update_server", "delete_server", "delete_client"}
    recorder = Recorder()
    cache = TokenCache(recorder, 60)  # type: ignore[arg-type]
    for op in STORE_OPERATIONS:
        if op.method in overridden:
            continue
        arguments = _arguments(op)
        assert op(**arguments).apply(cache) == f"answer of {op.method}"
        assert recorder.calls[-1] == (op.method, arguments)
    assert len(recorder.calls) == len(STORE_OPERATIONS) - len(overridden)


def test_nothing_but_store_operations_shows_through_the_cache() -> None:
    inner = MemoryStore()
    cache = TokenCache(inner, 60)
    assert not hasattr(cache, "keyring") and not hasattr(cache, "dump")
    assert cache.store.keyring is inner.keyring


def test_a_wrapper_must_declare_exactly_what_it_overrides() -> None:
    with pytest.raises(TypeError, match="declares overriding"):
        @forwarding(to="store", overrides=())
        class Undeclared:
            def get_grant(self, tenant: str, grant_id: str) -> None:
                return None

    with pytest.raises(TypeError, match="declares overriding"):
        @forwarding(to="store", overrides=(GetAccessToken,))
        class Missing:
            pass


# -- capabilities, declared once ---------------------------------------------------------


def test_the_backends_declare_their_traits(tmp_path: Any) -> None:
    memory = MemoryStore()
    assert traits_of(memory) == StoreTraits(blocks=False, shared=False)
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", timeout=2.5)
    sql = SqlStore(engine, KeyRing.generate(), timeout=2.5)
    assert traits_of(sql) == StoreTraits(blocks=True, shared=True, pool=engine, concurrency=10, timeout=2.5,
                                         schema_current=sql.schema_current)
    cache = TokenCache(sql, 60)
    assert traits_of(cache) == attrs.evolve(sql.traits, remembered=cache.remembered, memory=cache.traits.memory)
    assert cache.traits.memory is not None and cache.traits.memory.clock is time.monotonic
    assert traits_of(TokenCache(memory, 60)).blocks is False
    engine.dispose()


def test_a_store_declaring_nothing_is_read_cautiously_and_is_never_probed() -> None:
    class Bare:
        # Not declared as traits: never consulted.
        concurrency = 3
        timeout = 0.1

        def remembered(self, tenant: str, token_hash: str) -> str:
            return "from memory"

        def get_access_token(self, tenant: str, token_hash: str) -> None:
            return None

    assert traits_of(Bare()) is UNDECLARED
    assert UNDECLARED == StoreTraits(blocks=True, shared=True, pool=None, concurrency=None, timeout=None,
                                     remembered=None)
    with pytest.raises(WouldBlock):
        ready_performer(Bare(), store_blocks=True)(GetAccessToken("acme", "h"))

    class Misdeclared:
        traits = {"blocks": False}

    with pytest.raises(TypeError):
        traits_of(Misdeclared())


def test_the_guard_answers_from_what_the_traits_declare_remembered() -> None:
    record = AccessToken(tenant="acme", token_hash=token_hash("mcp_at_x"), grant_id="g", client_id="c",
                         user_id="u", scope=("mcp",), resource=RESOURCE, issued_at=0,
                         expires_at=2**40)
    asked: list[tuple[str, str]] = []

    class Remembering:
        # Remembers the one record; its store itself would block, and says nothing.
        def remembered(self, tenant: str, hash_: str) -> AccessToken | None:
            asked.append((tenant, hash_))
            return record if hash_ == record.token_hash else None

        def get_access_token(self, tenant: str, token_hash: str) -> None:
            raise AssertionError("the store is never asked on the first driver")

    store = Remembering()
    store.traits = StoreTraits(remembered=store.remembered)  # type: ignore[attr-defined]
    site = Site([tenant()], store, b"k" * 32)  # type: ignore[arg-type]
    view = ("GET", "https", "acme.example.com", "/mcp", "Bearer mcp_at_x", False)
    _, decision = site.guard(view, None)  # type: ignore[misc]
    assert decision == record.principal
    _, other = site.guard(view[:4] + ("Bearer mcp_at_y", False), None)  # type: ignore[misc,operator]
    assert isinstance(other, Suspended) and other.effect == GetAccessToken("acme", token_hash("mcp_at_y"))
    assert asked == [("acme", token_hash("mcp_at_x")), ("acme", token_hash("mcp_at_y"))]


def test_where_store_calls_run_follows_the_traits_unless_overridden() -> None:
    class Where:
        def __init__(self, blocks: bool) -> None:
            self.traits = StoreTraits(blocks=blocks)

        def get_access_token(self, tenant: str, token_hash: str) -> int:
            return threading.get_ident()

    async def thread_of(store: Any, **override: Any) -> int:
        return await async_performer(store, None, **override)(GetAccessToken("acme", "h"))  # type: ignore[arg-type,no-any-return]

    here = threading.get_ident()
    assert anyio.run(thread_of, Where(blocks=False)) == here
    assert anyio.run(thread_of, Where(blocks=True)) != here
    assert anyio.run(lambda: thread_of(Where(blocks=True), store_blocks=False)) == here
    assert Site([tenant()], Where(blocks=False), b"k" * 32).store_blocks is False  # type: ignore[arg-type]
    assert Site([tenant()], Where(blocks=True), b"k" * 32).store_blocks is True  # type: ignore[arg-type]
    assert Site([tenant()], Where(blocks=True), b"k" * 32, store_blocks=False).store_blocks is False  # type: ignore[arg-type]
