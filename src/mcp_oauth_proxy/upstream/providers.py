"""Upstream presets: GitHub, Google, Auth0, any OIDC issuer, or plain OAuth 2
endpoints, each turned into the core's :class:`~..core.tenant.Upstream`.

OIDC issuers are discovered lazily and cached: discovery is a small flow
yielding a Fetch effect, so the sync and async drivers share it, and an
upstream that is down at startup only makes its tenant answer
``temporarily_unavailable`` until a later request finds it up. After a
failed discovery the next try waits (1 s, doubling up to 60 s), so a down
issuer is neither hammered nor waited on by every request; the daily
refresh is made by one request while the others keep the endpoints found
before, which a failed refresh keeps too.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, overload

import attrs

from ..core.effects import Fetch, Flow
from ..core.errors import EffectError, UpstreamNotReady
from ..core.http import HttpRequest
from ..core.tenant import Upstream

log = logging.getLogger("mcp_oauth_proxy.upstream")

# Discovered endpoints rarely change; look again once a day.
DISCOVERY_TTL = 24 * 3600.0
# Waits before trying discovery again after consecutive failures.
RETRY_FIRST, RETRY_MAX = 1.0, 60.0
# While one request refreshes the endpoints, the others keep the old ones;
# for at most this long, should that request be abandoned half-way.
REFRESH_ALONE = 60.0


# Sources raise the core's UpstreamNotReady (a failed ResolveUpstream), also
# importable from here.


class UpstreamSource(Protocol):
    def resolve(self) -> Flow[Upstream]:
        """The upstream's endpoints; may yield a Fetch (discovery)."""
        ...


@attrs.frozen
class Static:
    """Endpoints known from the configuration."""

    upstream: Upstream

    def resolve(self) -> Flow[Upstream]:
        return self.upstream
        yield  # a generator, so callers drive every source alike


@attrs.frozen
class NotReady:
    """A tenant whose upstream cannot work (e.g. its secret is not set)."""

    reason: str

    def resolve(self) -> Flow[Upstream]:
        raise UpstreamNotReady(self.reason)
        yield


@attrs.frozen
class PublicOnly:
    """An organization's upstream: ``source``, its every request (discovery
    and the endpoints it finds alike) made PUBLIC_ONLY for ``organization``."""

    source: UpstreamSource
    organization: str

    @property
    def discovery_url(self) -> str | None:
        return getattr(self.source, "discovery_url", None)

    def resolve(self) -> Flow[Upstream]:
        flow = self.source.resolve()
        try:
            effect = next(flow)
            while True:
                if isinstance(effect, Fetch):
                    effect = attrs.evolve(effect, request=attrs.evolve(effect.request,
                                                                       public_only=self.organization))
                try:
                    answer = yield effect
                except Exception as failure:  # noqa: BLE001 - the driver's, thrown back into the source
                    effect = flow.throw(failure)
                else:
                    effect = flow.send(answer)
        except StopIteration as done:
            upstream: Upstream = done.value
            return attrs.evolve(upstream, public_only=self.organization)
        finally:
            flow.close()  # abandoned half-way (this one closed): so is the source's


@overload
def _string(doc: dict[str, Any], key: str, required: Literal[True] = True) -> str: ...
@overload
def _string(doc: dict[str, Any], key: str, required: bool) -> str | None: ...
def _string(doc: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise UpstreamNotReady(f"discovery document: {key} is missing or not a URL")
    return value


def _auth_method(doc: dict[str, Any]) -> str:
    # OIDC Discovery §3: the default is client_secret_basic.
    methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if isinstance(methods, list) and "client_secret_post" in methods and "client_secret_basic" not in methods:
        return "client_secret_post"
    return "client_secret_basic"


class OidcDiscovery:
    """An OIDC issuer whose endpoints come from its discovery document
    (OIDC Discovery 1.0 §4), fetched once and cached."""

    def __init__(self, issuer: str, client_id: str, client_secret: str, *, scopes: tuple[str, ...],
                 token_auth_method: str | None = None, user_id_claim: str = "sub", pkce: bool = True,
                 extra_authorize_params: tuple[tuple[str, str], ...] = (), discovery_url: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        # Where the document is, when not beneath the issuer: Entra's
        # multi-tenant issuer is a template (core/upstream.py TENANT_PLACEHOLDER).
        self._discovery_url = discovery_url
        # Upstream's fields of the same names.
        self._settings: dict[str, Any] = dict(client_id=client_id, client_secret=client_secret, scopes=scopes,
                              user_id_claim=user_id_claim, pkce=pkce, extra_authorize_params=extra_authorize_params)
        self._auth_method = token_auth_method
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Upstream] | None = None  # (look again after, endpoints)
        self._failures = 0
        self._retry_at = 0.0
        self._refreshing_until = 0.0

    @property
    def discovery_url(self) -> str:
        return self._discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def resolve(self) -> Flow[Upstream]:
        now = self._clock()
        claim = 0.0  # set while this request refreshes endpoints the others keep meanwhile
        with self._lock:
            cached, retry_at = self._cached, self._retry_at
            if cached is not None:
                if cached[0] > now or retry_at > now or self._refreshing_until > now:
                    # Fresh; or stale while a failed refresh waits to be tried
                    # again, or while another request refreshes it.
                    return cached[1]
                claim = self._refreshing_until = now + REFRESH_ALONE
        if retry_at > now:
            raise UpstreamNotReady(f"discovery of {self.issuer} failed; "
                                   f"trying again in {math.ceil(retry_at - now)} s")
        try:
            upstream = yield from self._discover()
        except UpstreamNotReady as exc:
            with self._lock:
                self._failures = min(self._failures + 1, 16)  # past the cap anyway; keeps 2**n small
                self._retry_at = self._clock() + min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
            if cached is None:
                raise
            # The endpoints found before most likely still work.
            log.warning("%s; keeping the endpoints found before", exc)
            return cached[1]
        finally:
            with self._lock:  # done, failed or abandoned half-way: the next may refresh
                if claim and self._refreshing_until == claim:
                    self._refreshing_until = 0.0
        with self._lock:
            self._cached = (self._clock() + DISCOVERY_TTL, upstream)
            self._failures, self._retry_at = 0, 0.0
        log.info("discovered the endpoints of %s", self.issuer)
        return upstream

    def _discover(self) -> Flow[Upstream]:
        try:
            request = HttpRequest("GET", self.discovery_url, (("accept", "application/json"),))
            response = yield Fetch(request, "discovery")
        except EffectError:
            raise UpstreamNotReady(f"discovery of {self.issuer} failed: no answer") from None
        return self._parse(response.status, response.body)

    def _parse(self, status: int, body: bytes) -> Upstream:
        if status != 200:
            raise UpstreamNotReady(f"discovery of {self.issuer} failed: HTTP {status}")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise UpstreamNotReady(f"discovery of {self.issuer} failed: not JSON") from None
        if not isinstance(doc, dict):
            raise UpstreamNotReady(f"discovery of {self.issuer} failed: not a JSON object")
        # OIDC Discovery §4.3: the issuer MUST be identical to the one configured.
        if doc.get("issuer") != self.issuer:
            raise UpstreamNotReady(f"discovery of {self.issuer} failed: the document names another issuer")
        return Upstream(
            authorization_endpoint=_string(doc, "authorization_endpoint"),
            token_endpoint=_string(doc, "token_endpoint"),
            userinfo_endpoint=_string(doc, "userinfo_endpoint", required=False),
            issuer=self.issuer,
            oidc=True,
            # RFC 9207 §3: then a response without iss is refused.
            iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
            token_auth_method=self._auth_method or _auth_method(doc),
            **self._settings,
        )


def github(client_id: str, client_secret: str, *, scopes: tuple[str, ...] = ("read:user",),
           **overrides: Any) -> Static:
    """GitHub OAuth apps: not OIDC; the stable user id is the numeric ``id``
    of ``/user`` (logins can be renamed)."""
    return Static(Upstream(
        authorization_endpoint=overrides.pop("authorization_endpoint", None) or "https://github.com/login/oauth/authorize",
        token_endpoint=overrides.pop("token_endpoint", None) or "https://github.com/login/oauth/access_token",
        userinfo_endpoint=overrides.pop("userinfo_endpoint", None) or "https://api.github.com/user",
        client_id=client_id,
        client_secret=client_secret,
        scopes=scopes,
        user_id_claim="id",
        token_auth_method="client_secret_post",
        **overrides,
    ))


def oidc(issuer: str, client_id: str, client_secret: str, *, scopes: tuple[str, ...] = ("openid", "profile", "email"),
         **options: Any) -> OidcDiscovery:
    return OidcDiscovery(issuer, client_id, client_secret, scopes=scopes, **options)


# Google gives a refresh token only to access_type=offline, and only at a
# sign-in that showed its consent screen: without prompt=consent, a person's
# second sign-in (another MCP client, a grant revoked and made again) would
# get none, and the server behind us no fresh upstream token after the hour.
GOOGLE_OFFLINE = (("access_type", "offline"), ("prompt", "consent"))


def google(client_id: str, client_secret: str, **options: Any) -> OidcDiscovery:
    return oidc("https://accounts.google.com", client_id, client_secret, extra_authorize_params=GOOGLE_OFFLINE,
                **options)


def auth0(domain: str, client_id: str, client_secret: str, **options: Any) -> OidcDiscovery:
    # Auth0's issuer is the tenant domain with a trailing slash.
    return oidc(f"https://{domain}/", client_id, client_secret, **options)


def oauth2(authorization_endpoint: str, token_endpoint: str, client_id: str, client_secret: str, *,
           userinfo_endpoint: str | None = None, issuer: str | None = None, **options: Any) -> Static:
    """Any OAuth 2 provider, endpoints given; the user id comes from userinfo."""
    return Static(Upstream(
        authorization_endpoint=authorization_endpoint,
        token_endpoint=token_endpoint,
        userinfo_endpoint=userinfo_endpoint,
        issuer=issuer,
        client_id=client_id,
        client_secret=client_secret,
        **options,
    ))
