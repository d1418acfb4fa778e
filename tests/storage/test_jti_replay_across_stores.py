"""A JWT's jti is spent once across replicas: two stores on one database
(each a replica's) agree, whichever sees it first (core/jwt_checks.py
spend_jti, on the store's HitCounter)."""

from __future__ import annotations

import pytest

from mcp_oauth_proxy.core.effects import run_sync
from mcp_oauth_proxy.core.jwt_checks import JwtRefused, spend_jti
from mcp_oauth_proxy.storage.open import open_store

EXP = 1_800_000_300


def _spend(store: object, issuer: str, jti: str, tenant: str = "acme", kind: str = "id-jag") -> None:
    run_sync(spend_jti(tenant, kind, issuer, jti, EXP), lambda effect: effect.apply(store))


def test_a_jti_spent_by_one_replica_is_refused_by_another(sql_url, ring):
    one, two = open_store(sql_url, ring), open_store(sql_url, ring)
    try:
        _spend(one, "https://idp.example", "j-1")
        with pytest.raises(JwtRefused, match="used before"):
            _spend(two, "https://idp.example", "j-1")
        # Another issuer's jti of the same value is its own.
        _spend(two, "https://other.example", "j-1")
        with pytest.raises(JwtRefused):
            _spend(one, "https://other.example", "j-1")
        # Remembered until the JWT has expired, then swept.
        assert two.delete_expired(EXP) == 0
    finally:
        for store in (one, two):
            store.engine.dispose()


def test_a_jti_is_spent_once_on_every_backend(store):
    _spend(store, "client-1", "j")
    with pytest.raises(JwtRefused):
        _spend(store, "client-1", "j")


def test_a_jti_is_one_tenants_and_one_kind_of_signers(store):
    """A client named like an issuer, or another tenant's client of the same
    id, spends jtis of its own (so nobody can spend another's ahead)."""
    _spend(store, "http://127.0.0.1:9101", "j", kind="client")
    _spend(store, "http://127.0.0.1:9101", "j", kind="id-jag")
    _spend(store, "http://127.0.0.1:9101", "j", kind="client", tenant="other")
    with pytest.raises(JwtRefused):
        _spend(store, "http://127.0.0.1:9101", "j", kind="client")
