"""Discovery documents: RFC 8414 authorization server metadata, RFC 9728
protected resource metadata, and our (empty) JWKS."""

from __future__ import annotations

from typing import Any

from ..client_auth import PRIVATE_KEY_JWT
from ..context import Context
from ..http import Response, json_response
from ..jwt_checks import ALGORITHMS
from ..models import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, JWT_BEARER, REFRESH_TOKEN

_SECRETS = ["client_secret_basic", "client_secret_post"]


def authorization_server_metadata(ctx: Context) -> dict[str, Any]:
    t = ctx.tenant
    return {
        # RFC 8414 §3.3: identical to the issuer the client derived the URL from.
        "issuer": t.issuer,
        "authorization_endpoint": t.endpoint("authorize"),
        "token_endpoint": t.endpoint("token"),
        "registration_endpoint": t.endpoint("register"),
        "revocation_endpoint": t.endpoint("revoke"),
        "introspection_endpoint": t.endpoint("introspect"),
        "userinfo_endpoint": t.endpoint("userinfo"),
        "jwks_uri": t.endpoint("jwks"),
        "scopes_supported": list(t.scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        # jwt-bearer (ID-JAG) only where the tenant trusts an issuer of them.
        "grant_types_supported": [AUTHORIZATION_CODE, REFRESH_TOKEN, CLIENT_CREDENTIALS]
        + ([JWT_BEARER] if t.id_jag_issuers else []),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", *_SECRETS, PRIVATE_KEY_JWT],
        # RFC 8414 §2: the algorithms of private_key_jwt's assertions.
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": ["none", *_SECRETS, PRIVATE_KEY_JWT],
        "revocation_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": [*_SECRETS, PRIVATE_KEY_JWT],
        "introspection_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": t.client_metadata_documents,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["none"],
    }


def protected_resource_metadata(ctx: Context) -> dict[str, Any]:
    t = ctx.tenant
    doc: dict[str, Any] = {
        # RFC 9728 §3.3: identical to the resource the metadata URL was built from.
        "resource": t.resource,
        "authorization_servers": [t.issuer],
        "scopes_supported": list(t.scopes),
        "bearer_methods_supported": ["header"],
    }
    if t.resource_name:
        doc["resource_name"] = t.resource_name
    return doc


def resource_metadata_url(ctx: Context) -> str:
    """RFC 9728 §3.1: the well-known segment inserted before the resource's path."""
    return ctx.tenant.resource_metadata_url


def as_metadata(ctx: Context) -> Response:
    # Cacheable: it changes only with the configuration.
    return json_response(authorization_server_metadata(ctx), no_store=False, headers=[("cache-control", "max-age=300")])


def pr_metadata(ctx: Context) -> Response:
    return json_response(protected_resource_metadata(ctx), no_store=False, headers=[("cache-control", "max-age=300")])


def jwks(ctx: Context) -> Response:
    # Our tokens are opaque; there is nothing to verify with a key.
    return json_response({"keys": []}, no_store=False, headers=[("cache-control", "max-age=3600")])
