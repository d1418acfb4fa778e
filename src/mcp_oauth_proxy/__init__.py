"""mcp-oauth-proxy: an OAuth 2.1 authorization server and bearer guard for MCP servers.

The pure, sans-IO core lives in :mod:`mcp_oauth_proxy.core`; storage backends in
:mod:`mcp_oauth_proxy.storage`; ASGI/WSGI adapters in :mod:`mcp_oauth_proxy.adapters`.
"""

__version__ = "0.1.0"
