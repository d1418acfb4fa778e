"""Outbound HTTP to identity providers and client metadata hosts."""
