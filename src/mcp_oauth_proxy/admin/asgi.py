"""The admin listener's ASGI app: the admin API (admin/api.py) under
``/admin/api/v1/``, the console (admin/console.py) under ``/admin/``,
and the Prometheus metrics at ``/metrics``,
their blocking store calls in worker threads; anything else is a 404
problem."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.to_thread
import attrs

from .. import metrics
from ..adapters.asgi import (
    Receive,
    Scope,
    Send,
    _Disconnected,
    _read_body,
    answer_lifespan,
    raw_path,
    refuse_websocket,
    request_of,
    send_response,
)
from ..adapters.site import BodyTooLarge, Site
from ..core.http import Request, Response
from ..core.store import traits_of
from .api import PREFIX, AdminApi, problem
from .console import Console


async def _nothing() -> None:
    return None


class AdminApp:
    """The admin API, and (given) the console at ``/admin/``."""

    def __init__(self, api: AdminApi, site: Site, console: Console | None = None, *,
                 max_body: int = 1024 * 1024) -> None:
        self.api = api
        self.console = console
        # The public scheme, host and client address, as the site trusts
        # X-Forwarded-* of its trusted proxies (adapters/site.Site.origin):
        # a console behind a TLS-terminating proxy sees its https origin.
        self.site = site
        self.max_body = max_body
        traits = traits_of(api.management.store)
        # As the OAuth endpoints do: a database that stops answering gets the
        # caller a 503 after its timeout, not a request that waits for ever.
        self.deadline = traits.timeout
        self.limiter = anyio.CapacityLimiter(traits.concurrency or 8)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await answer_lifespan(receive, send, _nothing)
        if scope["type"] != "http":
            return await refuse_websocket(send)
        path = raw_path(scope)
        if path == "/metrics" and scope["method"] in ("GET", "HEAD"):
            body, content_type = metrics.exposition()
            return await send_response(send, Response(200, (("content-type", content_type),
                                                            ("cache-control", "no-store")), body))
        api = path == PREFIX or path.startswith(PREFIX + "/")
        console = not api and self.console is not None and (path == "/admin" or path.startswith("/admin/"))
        if not (api or console):
            return await send_response(send, problem(404, "the admin API is under " + PREFIX + "/"))
        try:
            body = await _read_body(scope, receive, self.max_body)
        except BodyTooLarge:
            return await send_response(send, problem(413, f"the body is larger than {self.max_body} bytes"))
        except _Disconnected:
            return
        # The raw path: the API splits it into segments before decoding them.
        request = attrs.evolve(request_of(self.site, scope), path=path, body=body)
        if api:
            late = problem(503, "the server did not answer in time; try again")
            return await send_response(send, await self._answer(self.api.handle, request, late))
        assert self.console is not None
        late = self.console.late()
        await send_response(send, await self._answer(self.console.handle, request, late))

    async def _answer(self, handle: Callable[[Request], Response], request: Request, late: Response) -> Response:
        with anyio.move_on_after(self.deadline):
            return await anyio.to_thread.run_sync(handle, request, abandon_on_cancel=True, limiter=self.limiter)
        return late
