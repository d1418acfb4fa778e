"""What a review of the JWT checks found: non-finite times answered with a
500, and a JWK Set whose first key is another curve's refusing a JWT the
second key signed."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mcp_oauth_proxy.core.jwt_checks import JwtRefused, check_times, keys_for, read, verify_signature

NOW = 1_800_000_000


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e400, 10**30])
def test_a_time_that_is_no_time_is_refused_not_a_500(value: float) -> None:
    with pytest.raises(JwtRefused):
        check_times({"exp": value, "iat": NOW}, NOW, iat_required=True)
    with pytest.raises(JwtRefused):
        check_times({"exp": NOW + 60, "iat": value}, NOW, iat_required=True)


def _jwk(key: ec.EllipticCurvePrivateKey) -> dict:
    return json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))


def test_every_key_is_tried_whatever_curve_comes_first() -> None:
    p256, p384 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    token = jwt.encode({"iss": "c", "sub": "c", "exp": NOW + 60}, p384, algorithm="ES384")
    unverified = read(token)
    claims = verify_signature(unverified, keys_for(unverified, [_jwk(p256), _jwk(p384)]))
    assert claims["sub"] == "c"
