"""Presets for named identity providers beyond GitHub, Google and Auth0
(providers.py): each provider's endpoints, checks and the claim that names
a person for good, said once so that nobody rediscovers them.

Most are OIDC issuers found by discovery (providers.OidcDiscovery); Discord
is plain OAuth 2, and GitHub Enterprise Server is GitHub's preset at another
address. The README's table lists each with its settings, user id claim and
refresh tokens.
"""

from __future__ import annotations

from typing import Any

from ..core.tenant import Upstream
from ..core.upstream import TENANT_PLACEHOLDER
from .providers import OidcDiscovery, Static, github

# Entra's sign-in hosts: the global cloud's, then the national clouds'
# (US Government, China operated by 21Vianet), each with its own issuers.
ENTRA_CLOUDS = ("login.microsoftonline.com", "login.microsoftonline.us", "login.partner.microsoftonline.cn")
# Entra's tenants for apps any organization's people sign in to.
ENTRA_MULTI_TENANT = ("common", "organizations")
OIDC_SCOPES = ("openid", "profile", "email")


def _oidc(issuer: str, client_id: str, client_secret: str, options: dict[str, Any],
          scopes: tuple[str, ...] = OIDC_SCOPES, user_id_claim: str = "sub", **fixed: Any) -> OidcDiscovery:
    # The configuration's scopes and user id claim, where given, win over the preset's.
    options = {"scopes": scopes, "user_id_claim": user_id_claim, **options, **fixed}
    return OidcDiscovery(issuer, client_id, client_secret, **options)


def entra_issuer(tenant: str, cloud: str = ENTRA_CLOUDS[0]) -> str:
    """The issuer a tenant's tokens name; a template for multi-tenant apps."""
    return f"https://{cloud}/{TENANT_PLACEHOLDER if tenant in ENTRA_MULTI_TENANT else tenant}/v2.0"


def entra(tenant: str, client_id: str, client_secret: str, cloud: str = ENTRA_CLOUDS[0],
          **options: Any) -> OidcDiscovery:
    """Microsoft Entra ID, v2.0 endpoints. ``tenant``: the directory's id,
    or ``common`` / ``organizations`` (multi-tenant apps), whose issuer is
    the template ``…/{tenantid}/v2.0``: each id_token's ``iss`` must be it
    filled with the token's own ``tid``. The person is ``tid+oid``: ``sub``
    is pairwise (another application sees another ``sub`` for the same
    person), ``oid`` is their object id, unique within their tenant.
    ``cloud``: one of ENTRA_CLOUDS, where the directory lives."""
    return _oidc(entra_issuer(tenant, cloud), client_id, client_secret, options,
                 scopes=OIDC_SCOPES + ("offline_access",), user_id_claim="tid+oid",
                 discovery_url=f"https://{cloud}/{tenant}/v2.0/.well-known/openid-configuration")


def okta(issuer: str, client_id: str, client_secret: str, **options: Any) -> OidcDiscovery:
    """Okta: the org authorization server (``https://ORG.okta.com``) or a
    custom one (``…/oauth2/default``, ``…/oauth2/ID``). ``sub`` is the
    person's Okta user id (``00u…``), which never changes."""
    return _oidc(issuer, client_id, client_secret, options)


def keycloak(issuer: str, client_id: str, client_secret: str, **options: Any) -> OidcDiscovery:
    """Keycloak: the realm's URL (``https://HOST/realms/REALM``, with
    ``/auth`` before it on versions before 17). ``sub`` is the user's id in
    the realm (a UUID; a username can be changed)."""
    return _oidc(issuer, client_id, client_secret, options)


GITLAB_COM = "https://gitlab.com"


def gitlab(client_id: str, client_secret: str, *, issuer: str | None = None, **options: Any) -> OidcDiscovery:
    """GitLab.com, or a self-managed instance at its external URL. ``sub``
    is the user's numeric id (usernames can be renamed)."""
    return _oidc(issuer or GITLAB_COM, client_id, client_secret, options)


def cognito_issuer(user_pool_id: str) -> str:
    """A user pool's issuer; the pool id begins with its region (``eu-west-1_AbC123``)."""
    region = user_pool_id.partition("_")[0]
    return f"https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"


def cognito(user_pool_id: str, client_id: str, client_secret: str, **options: Any) -> OidcDiscovery:
    """Amazon Cognito: the user pool's issuer, whose discovery document
    names the endpoints of the pool's domain (one must be set up). ``sub``
    is the user's id in the pool (a UUID; never reassigned)."""
    return _oidc(cognito_issuer(user_pool_id), client_id, client_secret, options)


SLACK_ISSUER = "https://slack.com"


def slack(client_id: str, client_secret: str, **options: Any) -> OidcDiscovery:
    """Sign in with Slack (OpenID Connect). A Slack user id is unique within
    its workspace only, so the person is the workspace's id (the
    ``https://slack.com/team_id`` claim) and ``sub``."""
    return _oidc(SLACK_ISSUER, client_id, client_secret, options, user_id_claim="https://slack.com/team_id+sub")


def discord(client_id: str, client_secret: str, *, scopes: tuple[str, ...] = ("identify",),
            **options: Any) -> Static:
    """Discord: OAuth 2, not OIDC. The person is the ``id`` (a snowflake)
    of ``/users/@me``; usernames can change."""
    return Static(Upstream(
        authorization_endpoint="https://discord.com/oauth2/authorize",
        token_endpoint="https://discord.com/api/oauth2/token",
        userinfo_endpoint="https://discord.com/api/users/@me",
        client_id=client_id,
        client_secret=client_secret,
        scopes=scopes,
        **{"user_id_claim": "id", **options},
    ))


def github_enterprise(domain: str, client_id: str, client_secret: str, **options: Any) -> Static:
    """GitHub Enterprise Server at ``domain``: GitHub's endpoints on that
    host, its REST API under ``/api/v3``. The person is the numeric ``id``,
    as on github.com (unique within the instance)."""
    base = f"https://{domain}"
    return github(client_id, client_secret, authorization_endpoint=f"{base}/login/oauth/authorize",
                  token_endpoint=f"{base}/login/oauth/access_token", userinfo_endpoint=f"{base}/api/v3/user",
                  **options)
