"""The console's "check" of an OAuth configuration: its endpoints resolved
the way a login resolves them (OIDC discovery for oidc, google and auth0,
the configured endpoints for github and oauth2), by the same code and with
the same outbound limits, and what came back or went wrong."""

from __future__ import annotations

from typing import Any, Callable

import attrs

from ..core.effects import Fetch, run_sync
from ..core.errors import EffectError
from ..core.http import HttpRequest, HttpResponse
from ..core.models import OAuthConfig
from ..tenants_db import upstream_config
from ..upstream.http import SyncFetcher


@attrs.frozen
class Check:
    ok: bool
    summary: str
    found: tuple[tuple[str, str], ...] = ()


def check_discovery(c: OAuthConfig, fetch: Callable[[HttpRequest], HttpResponse] | None = None,
                    timeout: float = 5.0) -> Check:
    from ..app import upstream_source

    source = upstream_source(upstream_config(c), {})
    carrier = fetch or SyncFetcher(timeout=timeout)

    def perform(effect: Any) -> Any:
        if isinstance(effect, Fetch):
            return carrier(effect.request)
        raise TypeError(f"unexpected effect {effect!r}")

    where = getattr(source, "discovery_url", None)
    try:
        upstream = run_sync(source.resolve(), perform)
    except EffectError as failed:
        return Check(False, str(failed) or f"{where or 'the provider'} did not answer")
    found = tuple((k, str(getattr(upstream, k))) for k in (
        "issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
        if getattr(upstream, k, None))
    summary = f"found at {where}" if where else "the endpoints as configured (this kind has no discovery document)"
    return Check(True, summary, found)
