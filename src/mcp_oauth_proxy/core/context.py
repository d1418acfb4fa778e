"""What a flow knows about the world: the time, a source of randomness and
the tenant. Drivers build one per request; tests pin every value."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import attrs

from .tenant import Tenant, Upstream


@attrs.frozen
class Context:
    tenant: Tenant
    # Seconds since the epoch, read once per request.
    now: int
    # Returns n random bytes from a CSPRNG.
    random: Callable[[int], bytes] = attrs.field(repr=False)
    # Signs the browser's consent cookie (HMAC-SHA256).
    cookie_key: bytes = attrs.field(repr=False)
    # Who asks: the client's address as the site trusts it ("" unknown), for
    # the work a request may start on its own behalf.
    requester: str = ""

    @property
    def upstream(self) -> Upstream:
        """The tenant's upstream, for the flows that talk to it; they run
        once it is resolved (upstream.with_upstream, Route.upstream)."""
        upstream = self.tenant.upstream
        if upstream is None:
            raise AssertionError(f"tenant {self.tenant.slug}: the upstream is not resolved")
        return upstream

    def token(self, prefix: str) -> str:
        """A new opaque credential: prefix + 256 random bits, base64url."""
        return prefix + urlsafe(self.random(32))

    def random_string(self, nbytes: int = 32) -> str:
        return urlsafe(self.random(nbytes))

    def new_id(self) -> str:
        """An identifier that is not a secret (128 random bits, hex)."""
        return self.random(16).hex()


# Our tokens' prefixes: minted by the token endpoint, recognised by the
# guard, revocation and introspection.
ACCESS_PREFIX = "mcp_at_"
REFRESH_PREFIX = "mcp_rt_"


def urlsafe(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 §5), as tokens, PKCE and JWTs use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_urlsafe(text: str) -> bytes:
    """The bytes of unpadded base64url; raises ValueError (binascii.Error) when malformed."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_hash(value: str) -> str:
    """How a token, code, state or client secret is stored and looked up.

    Our credentials carry 256 random bits, so an unsalted SHA-256 is enough:
    there is nothing to guess from the hash.
    """
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
