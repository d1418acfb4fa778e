"""ASGI and WSGI adapters."""
