"""Admin tokens: ``mcp_admin_`` and 256 random bits, shown once when made;
the store keeps only their SHA-256 (core.context.token_hash), looked up
exactly, and compared again in constant time."""

from __future__ import annotations

import hmac
import secrets
import time

from ..core.context import token_hash
from ..core.models import AdminToken
from ..core.store import Store
from .operations import Actor

PREFIX = "mcp_admin_"


def new_token(organization: str | None, label: str, now: int | None = None) -> tuple[str, AdminToken]:
    """(the token, what the store keeps of it)."""
    token = PREFIX + secrets.token_urlsafe(32)
    record = AdminToken(token_id="adm_" + secrets.token_hex(8), token_hash=token_hash(token), label=label,
                        organization=organization, created_at=int(time.time()) if now is None else now)
    return token, record


def authenticate(store: Store, authorization: str | None) -> Actor | None:
    """The actor a request's ``Authorization: Bearer mcp_admin_…`` names, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(PREFIX) or len(token) > 200:
        return None
    wanted = token_hash(token)
    found: AdminToken | None = store.get_admin_token(token_hash=wanted)
    if found is None or not hmac.compare_digest(found.token_hash, wanted):
        return None
    return Actor(found.token_id, found.organization)
