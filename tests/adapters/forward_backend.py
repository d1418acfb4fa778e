"""A backend MCP server for the forwarding tests, run as its own process:

    python forward_backend.py PORT

The official ``mcp`` SDK's ``MCPServer`` over streamable HTTP at ``/mcp``
(on uvicorn, 127.0.0.1), with:

- tool ``headers``: the request headers the tool call arrived with;
- tool ``gated(key)``: logs "before", waits until gate ``key`` is opened,
  logs "after", answers "done" (its SSE stream stays open in between);
- ``GET /mcp/events?key=K``: raw Server-Sent Events, ``EVENTS[0]``, then
  (after gate K opens) the rest; notes when its client goes away;
- ``/mcp/broken``: one event, then the connection drops;
- ``/control/open?key=K`` opens a gate; ``/control/seen`` lists every request
  that reached ``/mcp`` (method, path, raw path, query, headers) and every events
  stream whose client went away. The tests call these directly, not through
  the proxy.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import parse_qs

import anyio
import uvicorn
from anyio.abc import TaskGroup
from mcp.server.mcpserver import Context, MCPServer

EVENTS = (b"id: 1\nevent: tick\ndata: one\n\n", b"id: 2\nevent: tick\ndata: two\ndata: lines\n\n",
          b": a comment\nid: 3\ndata: {\"last\": true}\n\n")

seen: list[dict[str, Any]] = []
gone: list[str] = []
gates: dict[str, anyio.Event] = {}


def gate(key: str) -> anyio.Event:
    return gates.setdefault(key, anyio.Event())


def mcp_app() -> Any:
    server = MCPServer("forward-backend")

    @server.tool()
    async def headers(ctx: Context) -> dict[str, str]:
        """The headers this call arrived with."""
        return dict(ctx.request_context.request.headers)

    @server.tool()
    async def gated(key: str, ctx: Context) -> str:
        """Logs before and after waiting for a gate the test opens."""
        await ctx.info("before")
        await gate(key).wait()
        await ctx.info("after")
        return "done"

    return server.streamable_http_app(streamable_http_path="/mcp")


async def _json(send: Any, doc: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(doc).encode()})


async def _events(scope: Any, receive: Any, send: Any) -> None:
    key = parse_qs(scope["query_string"].decode()).get("key", [""])[0]
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-backend-says", b"hi")]})
    await send({"type": "http.response.body", "body": EVENTS[0], "more_body": True})

    async def until_gone(tasks: TaskGroup) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.append(key)
        tasks.cancel_scope.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(until_gone, tasks)
        await gate(key).wait()
        for event in EVENTS[1:]:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        tasks.cancel_scope.cancel()


def app() -> Any:
    inner = mcp_app()

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await inner(scope, receive, send)
        path, query = scope["path"], parse_qs(scope["query_string"].decode())
        if path == "/control/open":
            gate(query["key"][0]).set()
            return await _json(send, {"ok": True})
        if path == "/control/seen":
            return await _json(send, {"seen": seen, "gone": gone})
        seen.append({"method": scope["method"], "path": path, "raw_path": scope["raw_path"].decode("latin-1"),
                     "query": scope["query_string"].decode(),
                     "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]})
        if path == "/mcp/events":
            return await _events(scope, receive, send)
        if path == "/mcp/broken":
            # One event, then the connection drops mid-answer.
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": EVENTS[0], "more_body": True})
            raise RuntimeError("the backend fails mid-stream")
        return await inner(scope, receive, send)

    return dispatch


if __name__ == "__main__":
    uvicorn.run(app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", timeout_graceful_shutdown=2)
