"""``GET /healthz`` and ``GET /readyz`` on the public listener, for
Kubernetes-style probes. Liveness: the process answers. Readiness: the
database answers at the schema this program knows, and the upstream
endpoints of every tenant of the configuration file are known (discovered
at least once, or given). An organization's server (kept in the database)
is not waited for: one organization's upstream, down or never there, would
take every replica, and every tenant, out of its load balancer. Each
answers 200 or 503 with a tiny JSON body that tells an outsider nothing
more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from ..core.effects import Effect, run_async
from ..core.errors import EffectError, StorageUnavailable
from ..core.http import Response, json_response
from ..core.store import traits_of
from .site import Site

PATHS = ("/healthz", "/readyz")
_OK = json_response({"status": "ok"}, no_store=True)
_UNAVAILABLE = json_response({"status": "unavailable"}, 503, no_store=True)


async def answer(path: str, site: Site, perform: Callable[[Effect], Awaitable[Any]], timeout: float) -> Response:
    """The probe's answer; readiness gives up after ``timeout`` seconds."""
    if path == "/healthz":
        return _OK
    with anyio.move_on_after(timeout):
        return _OK if await _ready(site, perform) else _UNAVAILABLE
    return _UNAVAILABLE


async def _ready(site: Site, perform: Callable[[Effect], Awaitable[Any]]) -> bool:
    check = traits_of(site.store).schema_current
    if check is not None:
        try:
            if not await anyio.to_thread.run_sync(check, abandon_on_cancel=True):
                return False
        except StorageUnavailable:
            return False
    for entry in site.directory.current.entries:
        if entry.tenant.fetches_public_only:  # an organization's server
            continue
        try:
            # Known endpoints come back at once; unknown ones are discovered
            # now (and then kept), so a probe readies the server.
            await run_async(entry.source.resolve(), perform)
        except EffectError:
            return False
    return True
