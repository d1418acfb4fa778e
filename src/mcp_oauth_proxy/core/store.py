"""The store interface the core's effects are carried out against.

A store operation is declared once, as its effect class in :mod:`.effects`
(``class TakeCode(StoreEffect[CodeGrant | None])``: its fields are the
method's parameters, ``T`` its answer, its docstring its contract; each is
ONE atomic domain operation that checks its own precondition, and none is
held open across an upstream call). Everything else is derived from those
declarations:

- :data:`Store`, the protocol a backend implements, is built from them at
  import time: one method per operation, named after it
  (``TakeCode`` -> ``take_code``), with the effect's fields as parameters,
  its answer as return annotation and its contract as docstring.
  (A type checker, which cannot read a class made at run time, sees
  ``Any``; what is typed statically is ``op.apply(store) -> T``.)
- :func:`conformance` lists where a backend differs from the declarations
  (a missing method, a parameter named, ordered, defaulted or annotated
  otherwise, another answer type); the tests run it on every backend.
- :func:`forwarding` gives a wrapper (storage/token_cache.py) a method for
  every operation it does not override, passing the call to the store it
  wraps; it names the ones it overrides, and only those may be defined.
- Effects are applied by keyword (``StoreEffect.apply``), never by field
  position.

What a store is, as opposed to what it does, is declared once too: its
:class:`StoreTraits` (``store.traits``), read by the drivers (runtime.py,
adapters/site.py) and the server (cli.py) instead of probing the store for
attributes. Backends: :mod:`mcp_oauth_proxy.storage`.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from .effects import STORE_OPERATIONS, StoreEffect
from .models import AccessToken

# The rotated_at of a successor a client's retry replaced: rotated long
# ago, so whoever presents it again replays it (RFC 9700 §4.14.2).
REPLACED = 0
# Seconds a revocation stays on record for other processes to follow.
REVOCATION_RECORD = 3600
# Seconds an audit event is kept, unless the server says otherwise
# (server.audit_retention_days).
AUDIT_RETENTION = 90 * 24 * 3600
# Marks (a value kept until its expiry, among the rate-limit counters) by
# name: a signed-out session, by its hash; a client's withdrawn approvals.
ENDED_MARK = "session-ended:"


def withdrawn_mark(tenant: str, client_id: str) -> str:
    return "approvals-withdrawn:" + json.dumps([tenant, client_id])

OPERATIONS: dict[str, type[StoreEffect[Any]]] = {op.method: op for op in STORE_OPERATIONS}


@attrs.frozen
class TokenMemory:
    """What a store remembers of access tokens, to be read, never written:
    ``entries[(tenant, token_hash)]`` is ``(until, record)``, ``until`` on
    ``clock``. An entry is replaced or removed, never changed in place, so
    what was decided from one holds while that same entry is there
    (adapters/verdicts.py)."""

    entries: Mapping[tuple[str, str], tuple[float, AccessToken]]
    clock: Callable[[], float]


@attrs.frozen
class StoreTraits:
    """What a store is, declared by the store (``traits``), so that nobody
    probes it for attributes. A store that declares nothing is taken as
    :data:`UNDECLARED`: the most cautious reading."""

    # Its calls wait on I/O (a database): under ASGI they run in a worker
    # thread, and the guard's first driver does not make them.
    blocks: bool = True
    # Other processes may use the same records: what they revoke must be
    # followed (housekeeping.follow_revocations) by a cache in front of it.
    shared: bool = True
    # What its calls share, and bound, with other stores: a SQL store's
    # Engine (its connection pool), so a store and a cache in front of it
    # take turns at one limiter. None: the store itself.
    pool: Any = None
    # How many calls may run at once (its pooled connections); None: no
    # bound of its own (anyio's default of 40 worker threads).
    concurrency: int | None = None
    # Seconds an async caller gives each call before answering 503 (its
    # driver's own timeouts may fall short); None: no bound.
    timeout: float | None = None
    # Answers an access-token lookup from memory, never asking the store
    # (``remembered(tenant, token_hash)``: the token or None); the guard's
    # first driver answers with it. None: it remembers nothing.
    remembered: Callable[[str, str], AccessToken | None] | None = None
    # The memory ``remembered`` answers from, itself (see TokenMemory).
    memory: TokenMemory | None = None
    # Waits up to the seconds given for other processes' announcements of
    # changes (``notices(timeout)``: the topics heard, storage/notices.py),
    # so housekeeping follows them at once. None: it announces nothing.
    notices: Callable[[float], set[str]] | None = None
    # Whether the database answers and its schema is the one this program
    # knows (blocking; raises StorageUnavailable when it does not answer);
    # the readiness probe asks it. None: always ready (nothing to ask).
    schema_current: Callable[[], bool] | None = None


UNDECLARED = StoreTraits()


def traits_of(store: object) -> StoreTraits:
    """The store's declared traits (UNDECLARED if it declares none)."""
    traits = getattr(store, "traits", UNDECLARED)
    if not isinstance(traits, StoreTraits):
        raise TypeError(f"{type(store).__name__}.traits must be a StoreTraits, not {type(traits).__name__}")
    return traits


# -- the derived protocol ---------------------------------------------------------------


def _hints(op: type[StoreEffect[Any]]) -> dict[str, Any]:
    return typing.get_type_hints(op)


def signature(op: type[StoreEffect[Any]]) -> inspect.Signature:
    """The method's signature (self first) as the operation declares it."""
    hints = _hints(op)
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for field in attrs.fields(op):
        default = inspect.Parameter.empty if field.default is attrs.NOTHING else field.default
        params.append(inspect.Parameter(field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=default, annotation=hints[field.name]))
    return inspect.Signature(params, return_annotation=op.answer)


def _stub(op: type[StoreEffect[Any]]) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(op.method)

    method.__name__ = method.__qualname__ = op.method
    method.__doc__ = op.__doc__
    # inspect.signature reads __signature__; typeshed's function type does not declare it.
    method.__signature__ = signature(op)  # type: ignore[attr-defined]
    return method


def _protocol() -> type:
    namespace: dict[str, Any] = {op.method: _stub(op) for op in STORE_OPERATIONS}
    namespace["__annotations__"] = {"traits": StoreTraits}
    namespace["__doc__"] = ("A store: one method per store operation (core/effects.py), as that "
                            "operation declares it; optionally, its ``traits``.")
    namespace["__module__"] = __name__
    metaclass: Callable[..., type] = type(Protocol)  # Protocol's own metaclass makes a protocol
    return metaclass("Store", (Protocol,), namespace)


if TYPE_CHECKING:
    Store = Any
else:
    Store = _protocol()


def conformance(store: object) -> list[str]:
    """Where ``store`` (a backend, or its class) differs from the declared
    operations: each missing method, and each whose parameters (names,
    order, defaults, annotations) or answer differ. Empty: it conforms."""
    cls = store if isinstance(store, type) else type(store)
    problems = []
    for name, op in OPERATIONS.items():
        method = getattr(cls, name, None)
        if not callable(method):
            problems.append(f"{name}: missing")
            continue
        wanted = signature(op)
        try:
            hints = typing.get_type_hints(method)
        except Exception as error:  # noqa: BLE001 - an annotation that names nothing, reported
            problems.append(f"{name}: unreadable annotations ({error})")
            continue
        given = inspect.signature(method)
        got = [(p.name, p.kind, p.default, hints.get(p.name, p.annotation)) for p in given.parameters.values()]
        want = [(p.name, p.kind, p.default, p.annotation) for p in wanted.parameters.values()]
        if got != want:
            problems.append(f"{name}: parameters {got[1:]} where the declaration has {want[1:]}")
        if hints.get("return", inspect.Signature.empty) != op.answer:
            problems.append(f"{name}: answers {hints.get('return')!r}, declared {op.answer!r}")
    return problems


W = TypeVar("W", bound=type)


def forwarding(to: str, overrides: tuple[type[StoreEffect[Any]], ...]) -> Callable[[W], W]:
    """A class decorator for a store that wraps another (its attribute
    ``to``): it defines the operations in ``overrides`` itself, and gets,
    for every other declared operation, a method passing the call on to the
    wrapped store unchanged. Defining an operation it does not declare as
    overridden, or declaring one it does not define, is an error."""
    overridden = {op.method for op in overrides}

    def wrap(cls: W) -> W:
        defined = {name for name in OPERATIONS if name in vars(cls)}
        if defined != overridden:
            raise TypeError(f"{cls.__name__} defines {sorted(defined)} but declares overriding {sorted(overridden)}")
        for name, op in OPERATIONS.items():
            if name not in overridden:
                setattr(cls, name, _forward(to, op))
        return cls

    return wrap


def _forward(to: str, op: type[StoreEffect[Any]]) -> Callable[..., Any]:
    name = op.method

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(getattr(self, to), name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = op.__doc__
    # inspect.signature reads __signature__; typeshed's function type does not declare it.
    method.__signature__ = signature(op)  # type: ignore[attr-defined]
    hints = _hints(op)
    method.__annotations__ = {**{p: hints[p] for p in op.parameters}, "return": op.answer}
    return method
