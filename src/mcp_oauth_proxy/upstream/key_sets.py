"""The public keys that sign the JWTs we accept (a client's assertions, an
ID-JAG issuer's grants), fetched where they are published and cached: the
carrier of the core's ResolveKeys effect.

Resolving is a small flow yielding Fetch effects, so the fetches go through
the request's own carrier (no redirects, size and time caps, failures
without detail) under the sync and async drivers alike. A JWK Set is kept
KEYS_TTL seconds. A JWT whose kid is not among them makes one fetch again,
but never more than once per REFETCH_AFTER seconds for one location:
anyone can send a JWT with a made-up kid, and it must not make us hammer
the signer. A failed fetch is remembered FAILED_FOR seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..core.effects import Fetch, Flow, ResolveKeys
from ..core.errors import EffectError, FetchFailed
from ..core.http import HttpRequest, HttpResponse
from ..core.jwt_checks import MAX_KEYS

log = logging.getLogger("mcp_oauth_proxy.upstream")

KEYS_TTL = 300.0
REFETCH_AFTER = 10.0
FAILED_FOR = 10.0
# One fetch per location at a time (held at most this long: longer than its
# three calls, metadata twice and the keys, each ended by the fetcher's
# deadline, 10 s by default; a review saw claims lapse at 15 s while their
# fetches went on), and no more than this many at once in all: anyone who
# knows a client's id can make us fetch its keys, and a slow signer must
# not take the upstream pool.
FETCH_ALONE = 60.0
MAX_FETCHING = 8
# Of which one organization's (the locations its admin chose) hold at most
# this many: its slow signers must not keep every other's keys away.
MAX_FETCHING_PER_ORGANIZATION = 2
_UNAVAILABLE = "the signer's keys could not be fetched"


class _Unusable(Exception):
    """A document that is not what was asked for (logged, then FetchFailed)."""


def _json(response: HttpResponse, what: str) -> dict[str, Any]:
    if response.status != 200:
        raise _Unusable(f"{what}: HTTP {response.status}")
    try:
        doc = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        raise _Unusable(f"{what}: not JSON") from None
    if not isinstance(doc, dict):
        raise _Unusable(f"{what}: not a JSON object")
    return doc


def _get(url: str, public_only: str | None) -> HttpRequest:
    return HttpRequest("GET", url, (("accept", "application/json"),), public_only=public_only)


def metadata_urls(issuer: str) -> tuple[str, str]:
    """Where an issuer's metadata is: OIDC Discovery §4 (appended), then
    RFC 8414 §3.1 (inserted before the issuer's path)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return (issuer.rstrip("/") + "/.well-known/openid-configuration",
            f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{path}")


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


class KeySets:
    """The JWK Sets of every location asked for, each cached."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # (location, discover, public_only) -> (fetched at, keys), and -> failed until
        self._keys: dict[tuple[str, bool, str | None], tuple[float, list[Any]]] = {}
        self._failed: dict[tuple[str, bool, str | None], float] = {}
        # Locations being fetched -> until when the fetch may hold them.
        self._fetching: dict[tuple[str, bool, str | None], float] = {}

    def resolve(self, effect: ResolveKeys) -> Flow[list[Any]]:
        """The keys at the effect's location: cached, or fetched (Fetch)."""
        where = (effect.location, effect.discover, effect.public_only)
        now = self._clock()
        with self._lock:
            cached = self._keys.get(where)
            failed_until = self._failed.get(where, 0.0)
        if cached is not None:
            age = now - cached[0]
            if age < (REFETCH_AFTER if effect.refresh else KEYS_TTL):
                return cached[1]
        if failed_until > now:
            raise FetchFailed(_UNAVAILABLE)
        if not self._claim(where, now):
            # Another request fetches them (or too many fetches are under
            # way): the keys found before, else try again shortly.
            if cached is not None:
                return cached[1]
            raise FetchFailed(_UNAVAILABLE)
        try:
            jwks_uri = (yield from self._discover(effect.location, effect.public_only)) if effect.discover \
                else effect.location
            keys = self._key_set(_json((yield Fetch(_get(jwks_uri, effect.public_only), "keys")), "JWK Set"))
        except (_Unusable, EffectError) as exc:
            log.warning("the keys of %s could not be had: %s", effect.location, exc)
            with self._lock:
                self._failed[where] = self._clock() + FAILED_FOR
            if cached is not None:
                return cached[1]  # the keys found before most likely still work
            raise FetchFailed(_UNAVAILABLE) from None
        finally:  # done, failed or abandoned half-way (the generator closed)
            with self._lock:
                self._fetching.pop(where, None)
        with self._lock:
            self._keys[where] = (self._clock(), keys)
            self._failed.pop(where, None)
        return keys

    def _claim(self, where: tuple[str, bool, str | None], now: float) -> bool:
        with self._lock:
            for held, until in list(self._fetching.items()):
                if until <= now:  # a fetch that outlived its time: no longer counted
                    del self._fetching[held]
            if where in self._fetching or len(self._fetching) >= MAX_FETCHING:
                return False
            organization = where[2]
            if organization is not None and sum(held[2] == organization for held in self._fetching) \
                    >= MAX_FETCHING_PER_ORGANIZATION:
                return False
            self._fetching[where] = now + FETCH_ALONE
            return True

    def _discover(self, issuer: str, public_only: str | None) -> Flow[str]:
        """The issuer's jwks_uri, from its metadata."""
        for url in metadata_urls(issuer):
            try:
                doc = _json((yield Fetch(_get(url, public_only), "keys")), "metadata")
            except _Unusable:
                continue  # not published there: the other place
            # RFC 8414 §3.3, OIDC Discovery §4.3: the issuer identical to the one asked.
            if doc.get("issuer") != issuer:
                raise _Unusable("the metadata names another issuer")
            if not _is_url(doc.get("jwks_uri")):
                raise _Unusable("the metadata has no jwks_uri")
            return str(doc["jwks_uri"])
        raise _Unusable("no metadata found")

    @staticmethod
    def _key_set(doc: dict[str, Any]) -> list[Any]:
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise _Unusable("not a JWK Set")
        return keys[:MAX_KEYS]
