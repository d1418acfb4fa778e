"""What every backend refuses of a change to the directory in the database,
said once, so the memory and SQL stores refuse alike, in the same words
(core.errors.DirectoryRefused)."""

from __future__ import annotations

from collections.abc import Iterable

from ..core.errors import DirectoryRefused
from ..core.models import Server


def org_exists(name: str) -> DirectoryRefused:
    return DirectoryRefused(f"organization {name!r} exists already")


def no_org(name: str) -> DirectoryRefused:
    return DirectoryRefused(f"no organization {name!r}")


def org_in_use(name: str, configs: Iterable[str], servers: Iterable[str]) -> DirectoryRefused:
    owned = [f"OAuth configuration(s) {', '.join(sorted(configs))}" if configs else "",
             f"server(s) {', '.join(sorted(servers))}" if servers else ""]
    return DirectoryRefused(f"organization {name!r} still owns {' and '.join(o for o in owned if o)}")


def config_exists(organization: str, name: str) -> DirectoryRefused:
    return DirectoryRefused(f"OAuth configuration {organization}/{name} exists already")


def no_config(organization: str, name: str) -> DirectoryRefused:
    return DirectoryRefused(f"no OAuth configuration {organization}/{name}")


def config_in_use(organization: str, name: str, servers: Iterable[str]) -> DirectoryRefused:
    return DirectoryRefused(f"OAuth configuration {organization}/{name} is used by server(s) "
                            f"{', '.join(sorted(servers))}")


def server_exists(slug: str) -> DirectoryRefused:
    return DirectoryRefused(f"server {slug!r} exists already")


def no_server(slug: str) -> DirectoryRefused:
    return DirectoryRefused(f"no server {slug!r}")


def moved(slug: str) -> DirectoryRefused:
    return DirectoryRefused(f"server {slug!r}: its organization cannot change")


def place_taken(server: Server, others: Iterable[Server]) -> DirectoryRefused | None:
    """The refusal if another server answers at the server's issuer or resource."""
    for other in others:
        if other.slug == server.slug:
            continue
        # Not named: the other server may be another organization's.
        if other.issuer == server.issuer:
            return DirectoryRefused(f"issuer {server.issuer} is taken by another server")
        if other.resource == server.resource:
            return DirectoryRefused(f"resource {server.resource} is taken by another server")
    return None


def admin_token_exists(token_id: str) -> DirectoryRefused:
    # Its hash too: a second token with one hash would be the same credential.
    return DirectoryRefused(f"admin token {token_id!r} exists already")
