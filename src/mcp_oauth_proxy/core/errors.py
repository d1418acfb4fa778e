"""The OAuth error family.

Each error carries its RFC error code and HTTP status; one place
(:func:`.router.handle`) turns them into JSON, a redirect or an HTML page.
"""

from __future__ import annotations


class OAuthError(Exception):
    """An error answered to the client as ``{"error": code, "error_description": …}``."""

    error = "invalid_request"
    status = 400

    def __init__(self, description: str = "", *, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(description or self.error)
        self.description = description
        self.headers = headers


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    # RFC 6749 §5.2: 401 when the client tried to authenticate, and RFC 9110
    # §15.5.2: every 401 names a scheme to authenticate with.
    error = "invalid_client"
    status = 401

    def __init__(self, description: str = "") -> None:
        super().__init__(description, headers=(("www-authenticate", 'Basic realm="oauth"'),))


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class UnsupportedTokenType(OAuthError):
    error = "unsupported_token_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    # RFC 8707 §2
    error = "invalid_target"


class AccessDenied(OAuthError):
    error = "access_denied"
    status = 403


class InvalidRedirectUri(OAuthError):
    # RFC 7591 §3.2.2
    error = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    error = "invalid_client_metadata"


class InvalidToken(OAuthError):
    # RFC 6750 §3.1
    error = "invalid_token"
    status = 401


class InsufficientScope(OAuthError):
    error = "insufficient_scope"
    status = 403


class NotFound(OAuthError):
    error = "not_found"
    status = 404


class MethodNotAllowed(OAuthError):
    error = "invalid_request"
    status = 405


class ServerError(OAuthError):
    error = "server_error"
    status = 500


class UpstreamServerError(ServerError):
    """The identity provider reported its own failure: a client is told
    server_error, a page says 502 (the failure is upstream's, not ours)."""

    status = 502


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status = 503


class NoUpstreamTokens(OAuthError):
    """The principal has no upstream tokens: a client acting for itself
    (client credentials), or a person whose access came from an ID-JAG,
    never signed in upstream through us."""

    error = "invalid_request"


class UpstreamUnavailable(TemporarilyUnavailable):
    """The upstream identity provider failed; no upstream detail is passed on."""

    status = 502


# -- failures of carrying out an effect, thrown back into the flow ----------


class EffectError(Exception):
    """Raised by a driver's effect handler; flows may catch it."""


class StorageUnavailable(EffectError):
    """The store could not be reached or the operation was aborted."""


# Seconds a client is told to wait (Retry-After) when the store is unavailable.
STORAGE_RETRY_AFTER = "5"


class FetchFailed(EffectError):
    """An outbound HTTP request failed: refused, timed out, TLS, too large."""


class TooManyFetches(EffectError):
    """Every slot for outbound fetches of this kind is taken: try again in
    ``retry_after`` seconds (a 503, RFC 9110 §15.6.4)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many fetches at once; retry after {retry_after} seconds")
        self.retry_after = retry_after


class UpstreamNotReady(EffectError):
    """The tenant's upstream cannot be used yet (discovery failed, or its
    credentials are not configured): a ResolveUpstream failed. The message
    is for the operator's log."""


class DecryptionFailed(EffectError):
    """A stored upstream secret cannot be decrypted (its key is gone)."""


class BrowserError(Exception):
    """An error shown to a person as an HTML page, because no redirect to the
    client is safe (RFC 6749 §4.1.2.1: unknown client or bad redirect URI)."""

    def __init__(self, title: str, detail: str, status: int = 400) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail
        self.status = status


class AuthorizationRedirectError(Exception):
    """An error returned to the client at its (verified) redirect URI, with
    ``state`` and ``iss`` (RFC 6749 §4.1.2.1, RFC 9207 §2)."""

    def __init__(self, error: OAuthError, redirect_uri: str, state: str | None, trusted: bool = True) -> None:
        super().__init__(error.description)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state
        # RFC 9700 §4.11.2: an authorization server "MUST only automatically
        # redirect the user agent if it trusts the redirection URI"; else the
        # person is shown the error and a link there (anyone may register one).
        self.trusted = trusted


class DirectoryRefused(Exception):
    """A change to the database's directory (organizations, OAuth
    configurations, servers) that its precondition refuses: a name taken,
    a record unknown, a configuration still in use. The message says which,
    naming the records (never a secret)."""
