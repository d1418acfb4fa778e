"""ASGI and WSGI adapters.

Embedding: build a :class:`~.site.Site` (tenants, a store, a cookie key),
then serve ``asgi.OAuthApp(site)`` / ``wsgi.OAuthWSGIApp(site)`` for the OAuth
endpoints and wrap the MCP server in ``asgi.BearerGuard(app, site)`` /
``wsgi.BearerGuardWSGI(app, site)``. The guard hands the wrapped app
``mcp_oauth_proxy.principal`` and ``mcp_oauth_proxy.upstream_token`` in the
ASGI scope or WSGI environ (see :mod:`.site`)."""
