"""Where the key ring lives, and moving records to its active key.

Keys come from the environment (``MCP_OAUTH_PROXY_KEYS=kid:base64,kid:base64``,
the last one active unless ``MCP_OAUTH_PROXY_ACTIVE_KEY`` names another),
which wins, or from a JSON key file ``{"active": kid, "keys": {kid: base64}}``
that is created, readable by its owner only, on first start.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from sqlalchemy import Connection, Table, select, tuple_, update

from ..core.errors import DecryptionFailed
from .crypto import (
    KeyRing,
    open_client_secret,
    open_upstream,
    open_verifier,
    seal_client_secret,
    seal_upstream,
    seal_verifier,
)
from .schema import auth_sessions, grants, oauth_configs
from .sql import SqlStore

ENV_KEYS = "MCP_OAUTH_PROXY_KEYS"
# Where the keys are kept when neither the config nor the environment says.
DEFAULT_KEY_FILE = "mcp-oauth-proxy.keys"
ENV_ACTIVE = "MCP_OAUTH_PROXY_ACTIVE_KEY"


class KeyConfigError(Exception):
    """The keys cannot be loaded; the message says where and why (never a key)."""


def _decode(kid: str, text: str, where: str) -> bytes:
    """Base64, URL-safe or standard (as `openssl rand -base64 32` prints it)."""
    text = text.strip().translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"{where}: key {kid!r} is not base64") from None


def _ring(keys: dict[str, bytes], active: str, where: str) -> KeyRing:
    try:
        return KeyRing(keys, active)
    except ValueError as error:
        raise KeyConfigError(f"{where}: {error}") from None


def _from_env(value: str, active: str | None) -> KeyRing:
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        kid, sep, text = item.partition(":")
        if not sep:
            raise KeyConfigError(f"{ENV_KEYS}: each key is KID:BASE64, separated by commas")
        keys[kid] = _decode(kid, text, ENV_KEYS)
    if not keys:
        raise KeyConfigError(f"{ENV_KEYS} is set but holds no key")
    return _ring(keys, active or list(keys)[-1], ENV_KEYS)


def _read_file(path: Path) -> KeyRing:
    try:
        doc = json.loads(path.read_text("utf-8"))
        keys = {kid: _decode(kid, text, str(path)) for kid, text in doc["keys"].items()}
        return _ring(keys, doc["active"], str(path))
    except OSError as error:
        raise KeyConfigError(f"{path}: cannot read the key file: {error.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyConfigError(f'{path}: not a key file ({{"active": KID, "keys": {{KID: BASE64}}}})') from None


def _write_file(path: Path, ring: KeyRing, *, new: bool) -> None:
    """Write with mode 0600, atomically (a crash leaves the old file whole)."""
    raw = ring.raw_keys()
    doc = {"active": ring.active, "keys": {kid: base64.urlsafe_b64encode(k).decode("ascii") for kid, k in raw.items()}}
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    target = path if new else path.with_name(path.name + ".tmp")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not new:
        os.replace(target, path)


def load_keyring(key_file: str | None, environ: Mapping[str, str] = os.environ) -> KeyRing:
    """The key ring from the environment, else from ``key_file``."""
    if environ.get(ENV_KEYS):
        return _from_env(environ[ENV_KEYS], environ.get(ENV_ACTIVE))
    if key_file is None:
        raise KeyConfigError(f"no keys: set {ENV_KEYS} or give a key file")
    return _read_file(Path(key_file))


def load_or_create_keyring(path: str, environ: Mapping[str, str] = os.environ) -> tuple[KeyRing, bool]:
    """(the key ring, whether a new key file was created at ``path``)."""
    if environ.get(ENV_KEYS) or Path(path).exists():
        return load_keyring(path, environ), False
    ring = KeyRing.generate("k1")
    try:
        _write_file(Path(path), ring, new=True)
    except FileExistsError:  # another process created it first: use theirs
        return load_keyring(path, environ), False
    return ring, True


def rotate(path: str) -> KeyRing:
    """Add a new key to the key file and make it the active one."""
    ring = _read_file(Path(path))
    number = len(ring.key_ids) + 1
    while f"k{number}" in ring.key_ids:
        number += 1
    rotated = ring.with_new_key(f"k{number}")
    _write_file(Path(path), rotated, new=False)
    return rotated


@attrs.frozen
class Reencrypted:
    moved: int
    # "grant acme/1f2e…: key 'k0' is not in the key ring" for each record
    # that cannot be opened: its person signs in again.
    failed: tuple[str, ...]


def _reseal_grant(ring: KeyRing, tenant: str, grant_id: str, blob: str) -> str:
    return seal_upstream(ring, tenant, grant_id, open_upstream(ring, tenant, grant_id, blob))


def _reseal_session(ring: KeyRing, tenant: str, state_hash: str, blob: str) -> str:
    return seal_verifier(ring, tenant, state_hash, open_verifier(ring, tenant, state_hash, blob))


def _reseal_client_secret(ring: KeyRing, organization: str, name: str, blob: str) -> str:
    return seal_client_secret(ring, organization, name, open_client_secret(ring, organization, name, blob))


# (kind, table, the two columns naming a record, the sealed column, resealing)
_SEALED = (
    ("grant", grants, "tenant", "grant_id", "upstream", _reseal_grant),
    ("session", auth_sessions, "tenant", "state_hash", "upstream_code_verifier", _reseal_session),
    ("oauth config", oauth_configs, "organization", "name", "client_secret", _reseal_client_secret),
)


def reencrypt(store: SqlStore, ring: KeyRing, batch: int = 500,
              progress: Callable[[int], None] = lambda n: None) -> Reencrypted:
    """Move every grant, session and OAuth configuration ciphertext to the active key, a batch per
    transaction. Resumable: records already on the active key are skipped,
    so a second run continues where an interrupted one stopped."""
    moved, failed = 0, []
    for kind, table, owner, key, column, reseal in _SEALED:
        ident = tuple_(table.c[owner], table.c[key])
        off_key = ~table.c[column].startswith(f"v1.{ring.active}.", autoescape=True)
        query = select(table.c[owner], table.c[key], table.c[column]).where(off_key)
        query = query.order_by(table.c[owner], table.c[key]).limit(batch)
        cursor: tuple[str, str] | None = None
        while True:
            page = query if cursor is None else query.where(ident > tuple_(*cursor))

            def step(conn: Connection, page: Any = page, table: Table = table, owner: str = owner, key: str = key,
                     column: str = column, reseal: Any = reseal,
                     kind: str = kind) -> tuple[Sequence[Any], int, list[str]]:
                rows, done, bad = conn.execute(page).all(), 0, []
                for tenant, ident_value, blob in rows:
                    try:
                        new = reseal(ring, tenant, ident_value, blob)
                    except DecryptionFailed as error:
                        bad.append(f"{kind} {tenant}/{ident_value}: {error}")
                        continue
                    # Only if unchanged meanwhile: an upstream refresh wins.
                    done += conn.execute(update(table).where(
                        table.c[owner] == tenant, table.c[key] == ident_value, table.c[column] == blob
                    ).values({column: new})).rowcount
                return rows, done, bad

            rows, done, bad = store._write(step)
            moved += done
            failed += bad
            progress(len(rows))
            if len(rows) < batch:
                break
            cursor = (rows[-1][0], rows[-1][1])
    return Reencrypted(moved, tuple(failed))
