"""PKCE (RFC 7636), S256 only (OAuth 2.1 §4.1.1, RFC 9700 §2.1.1)."""

from __future__ import annotations

import hashlib
import hmac
import re

from .context import urlsafe
from .errors import InvalidGrant, InvalidRequest

# RFC 7636 §4.1: 43-128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# A base64url SHA-256 digest without padding is 43 characters.
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def s256(verifier: str) -> str:
    return urlsafe(hashlib.sha256(verifier.encode("ascii")).digest())


def check_challenge(challenge: str | None, method: str | None) -> str:
    """Validate the authorization request's PKCE parameters; the challenge."""
    if challenge is None:
        raise InvalidRequest("code_challenge is required (PKCE, S256)")
    # RFC 7636 §4.3: an absent method means "plain", which we refuse.
    if method != "S256":
        raise InvalidRequest("code_challenge_method must be S256")
    if not _CHALLENGE.fullmatch(challenge):
        raise InvalidRequest("code_challenge must be a base64url SHA-256 digest (43 characters)")
    return challenge


def check_verifier(verifier: str | None, challenge: str) -> None:
    """RFC 7636 §4.6, compared in constant time."""
    if verifier is None:
        raise InvalidRequest("code_verifier is required")
    if not _VERIFIER.fullmatch(verifier):
        raise InvalidGrant("code_verifier is malformed")
    if not hmac.compare_digest(s256(verifier), challenge):
        raise InvalidGrant("code_verifier does not match the code_challenge")
