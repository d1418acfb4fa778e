"""Calling the admin API as its ASGI adapter would (admin/api.py's
``handle``), and the records its tests make."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import attrs

from mcp_oauth_proxy.admin.api import PREFIX, AdminApi
from mcp_oauth_proxy.admin.tokens import new_token
from mcp_oauth_proxy.core.http import Request

T0 = 1_800_000_000
SECRET = "upstream-client-secret-8d1f"


@attrs.define
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@attrs.define
class Admin:
    api: AdminApi
    store: Any
    token: str = ""

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             content_type: str = "application/json", **query: Any) -> Answer:
        token = self.token if token is None else token
        headers = [("authorization", f"Bearer {token}")] if token else []
        raw = b""
        if body is not None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.append(("content-type", content_type))
        response = self.api.handle(Request(method, PREFIX + path, urlencode(query), headers, raw, "http"))
        return Answer(response.status, dict(response.headers), json.loads(response.body) if response.body else None)

    def get(self, path: str, **query: Any) -> Answer:
        return self.call("GET", path, **query)

    def post(self, path: str, body: Any, **kw: Any) -> Answer:
        return self.call("POST", path, body, **kw)

    def patch(self, path: str, body: Any, **kw: Any) -> Answer:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Answer:
        return self.call("DELETE", path, **kw)

    def as_token(self, token: str) -> "Admin":
        return Admin(self.api, self.store, token)


def oauth_config(name: str = "github-main", organization: str = "acme", **over: Any) -> dict[str, Any]:
    return {"organization": organization, "name": name, "kind": "github", "client_id": "Iv1.abc",
            "client_secret": SECRET, **over}


def server(slug: str = "acme", organization: str = "acme", oauth_config: str = "github-main",
           **over: Any) -> dict[str, Any]:
    return {"slug": slug, "organization": organization, "oauth_config": oauth_config,
            "issuer": f"https://{slug}.example.com", "resource": f"https://{slug}.example.com/mcp", **over}


def org_token(admin: Admin, organization: str) -> Admin:
    token, record = new_token(organization, f"{organization} ops", T0)
    admin.store.create_admin_token(token=record)
    return admin.as_token(token)
