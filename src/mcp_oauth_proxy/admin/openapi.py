"""The admin API's OpenAPI 3.1 document, made from its routes
(admin/api.py) and the fields the operations accept (admin/operations.py),
so it cannot drift from what the server does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .operations import CONFIG_FIELDS, MAX_PAGE, ORGANIZATION_FIELDS, SERVER_FIELDS

if TYPE_CHECKING:
    from .api import Route

_KIND_SCHEMAS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    bool: {"type": "boolean"},
    "strings": {"type": "array", "items": {"type": "string"}},
    "policy": {"type": "object", "additionalProperties": {"type": "integer"}},
    None: {"type": "null"},
}


def _fields(fields: Mapping[str, tuple[Any, ...]], names: Mapping[str, str] = {},
            required: Sequence[str] = ()) -> dict[str, Any]:
    """An object schema: ``names`` are extra string fields (a record's key)."""
    props: dict[str, Any] = {n: {"type": "string", "description": d} for n, d in names.items()}
    for name, kinds in fields.items():
        options = [dict(_KIND_SCHEMAS[k]) for k in kinds]
        props[name] = options[0] if len(options) == 1 else {"anyOf": options}
    props.get("client_secret", {})["writeOnly"] = True
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


_NAME = "1-63 characters of a-z 0-9 _ -"
_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/organizations"): _fields(ORGANIZATION_FIELDS, {"name": _NAME}, ["name"]),
    ("PATCH", "/organizations/{name}"): _fields(ORGANIZATION_FIELDS),
    ("POST", "/oauth-configs"): _fields(CONFIG_FIELDS, {"organization": "its organization", "name": _NAME},
                                        ["organization", "name", "kind", "client_id", "client_secret"]),
    ("PATCH", "/oauth-configs/{organization}/{name}"): _fields(CONFIG_FIELDS),
    ("POST", "/servers"): _fields(SERVER_FIELDS, {"slug": _NAME, "organization": "its organization"},
                                  ["slug", "organization", "oauth_config", "issuer", "resource"]),
    ("PATCH", "/servers/{slug}"): _fields(SERVER_FIELDS),
}

_PROBLEM = {
    "description": "An RFC 9457 problem; a 422's `errors` name the field each is about",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def _parameter(name: str, where: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if name == "limit":
        schema = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100}
    elif name == "since":
        schema = {"type": "integer", "description": "events at or after this Unix time (seconds)"}
    elif name == "until":
        schema = {"type": "integer", "description": "events before this Unix time (seconds)"}
    return {"name": name, "in": where, "required": where == "path", "schema": schema}


def _operation(route: Route) -> dict[str, Any]:
    params = [_parameter(p.strip("{}"), "path") for p in route.segments if p.startswith("{")]
    params += [_parameter(q, "query") for q in route.query]
    ok = "201" if route.method == "POST" else "200"
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{route.handler.__name__.strip('_')}",
        "parameters": params,
        "responses": {ok: {"description": "Done", "content": {"application/json": {"schema": {"type": "object"}}}},
                      "default": _PROBLEM},
    }
    body = _BODIES.get((route.method, route.path))
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def document(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mcp-oauth-proxy admin API", "version": "1"},
        "servers": [{"url": "/admin/api/v1"}],
        "security": [{"adminToken": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer",
                                               "description": "mcp_admin_… (mcp-oauth-proxy admin create-token)"}},
            "schemas": {"Problem": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                               "status": {"type": "integer"}, "detail": {"type": "string"},
                               "errors": {"type": "array", "items": {
                                   "type": "object",
                                   "properties": {"field": {"type": "string"}, "detail": {"type": "string"}}}}},
            }},
        },
    }
