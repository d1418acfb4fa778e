"""The store interface the core's effects are carried out against.

Every method is ONE atomic domain operation that checks its own
precondition; none is held open across an upstream call. Backends:
:mod:`mcp_oauth_proxy.storage`.
"""

from __future__ import annotations

from typing import Protocol

from .models import (
    AccessToken,
    AuthSession,
    Client,
    CodeGrant,
    ConsentRequest,
    Grant,
    RefreshToken,
    Revocation,
    Rotation,
    UpstreamTokens,
)


# The rotated_at of a successor a client's retry replaced: rotated long
# ago, so whoever presents it again replays it (RFC 9700 §4.14.2).
REPLACED = 0
# Seconds a revocation stays on record for other processes to follow.
REVOCATION_RECORD = 3600


class Store(Protocol):
    def save_client(self, client: Client) -> None: ...

    def get_client(self, tenant: str, client_id: str) -> Client | None: ...

    def save_consent_request(self, consent: ConsentRequest) -> None: ...

    def take_consent_request(self, tenant: str, id_hash: str, now: int) -> ConsentRequest | None:
        """Get and delete, only while unexpired: one answer per consent page."""

    def save_auth_session(self, session: AuthSession) -> None: ...

    def take_auth_session(self, tenant: str, state_hash: str, now: int) -> AuthSession | None:
        """Get and delete, only while unexpired: a state is used once."""

    def save_grant_and_code(self, grant: Grant, code: CodeGrant) -> None: ...

    def take_code(self, tenant: str, code_hash: str, now: int) -> CodeGrant | None:
        """Get and delete, only while unexpired: exactly one caller wins."""

    def revoke_grant_of_code(self, tenant: str, code_hash: str) -> bool:
        """Revoke the grant a code was issued for (a replayed code,
        RFC 6749 §4.1.2). True if a grant was revoked."""

    def issue_tokens(
        self, tenant: str, grant_id: str, access: AccessToken, refresh: RefreshToken | None
    ) -> bool:
        """Store new tokens of a grant, only if the grant is not revoked."""

    def get_access_token(self, tenant: str, token_hash: str) -> AccessToken | None:
        """The token, unless it or its grant is revoked (expiry is the caller's)."""

    def get_refresh_token(self, tenant: str, token_hash: str) -> RefreshToken | None:
        """The token, rotated or not, unless its grant is revoked."""

    def rotate_refresh_token(
        self,
        tenant: str,
        token_hash: str,
        now: int,
        grace: int,
        access: AccessToken,
        refresh: RefreshToken,
    ) -> Rotation:
        """Exchange a refresh token for its successors; a family never has
        more than one live refresh token.

        Current (never rotated): mark it rotated at ``now``, with ``refresh``
        as its successor; store both, ROTATED.
        Rotated no more than ``grace`` seconds ago (a client's retry) while
        its successor is still unused: that successor is marked REPLACED (a
        later use of it is reuse) and ``refresh`` takes its place; store
        both, ROTATED.
        Rotated earlier, or its successor already used: revoke its grant,
        REUSED (RFC 9700 §4.14.2).
        Unknown, expired, or grant revoked: GONE.
        """

    def revoke_access_token(self, tenant: str, token_hash: str) -> None:
        """The token is valid no more. Every revoking operation (this one,
        revoke_grant, revoke_grant_of_code, a REUSED rotation) records what it
        revoked, in the same transaction, for revocations_since."""

    def revoke_grant(self, tenant: str, grant_id: str) -> None:
        """After this no token of the grant is valid and none can be issued."""

    def revocations_since(self, since: int) -> list[Revocation]:
        """What was revoked at or after ``since`` (Unix time, seconds; kept
        REVOCATION_RECORD seconds): what another process remembering tokens
        must forget."""

    def get_grant(self, tenant: str, grant_id: str) -> Grant | None:
        """The grant with its upstream tokens decrypted, unless revoked."""

    def claim_upstream_refresh(
        self, tenant: str, grant_id: str, version: int, now: int, lease_until: int
    ) -> bool:
        """Take the lease to refresh the grant's upstream tokens, only if they
        are still at ``version`` and no unexpired lease is held."""

    def release_upstream_refresh(self, tenant: str, grant_id: str, version: int) -> None:
        """Give up a lease after a failed upstream refresh."""

    def update_upstream_tokens(
        self, tenant: str, grant_id: str, version: int, tokens: UpstreamTokens
    ) -> bool:
        """Replace the upstream tokens, only if still at ``version``; bumps the
        version and clears the lease."""

    def mark_client_used(self, tenant: str, client_id: str) -> None:
        """The client completed an authorization: its registration no longer lapses."""

    def hit_counter(self, key: str, window_start: int, expires_at: int) -> int:
        """Count one hit on ``key`` in the window starting at ``window_start``;
        the count in that window, this hit included (rate limits; shared by
        every replica using the store)."""

    def delete_expired(self, now: int, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired records of each kind; the count removed."""
