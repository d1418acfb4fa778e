"""Times as pages show them, computed without the time module."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_oauth_proxy.core.dates import utc_minute


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "1970-01-01 00:00 UTC"),
    (1_800_000_000, "2027-01-15 08:00 UTC"),
    (951_782_400, "2000-02-29 00:00 UTC"),  # divisible by 400: a leap year
    (4_107_542_399, "2100-02-28 23:59 UTC"),  # divisible by 100 only: not one
    (4_107_542_400, "2100-03-01 00:00 UTC"),
    (1_704_067_199, "2023-12-31 23:59 UTC"),
])
def test_known_times(seconds: int, shown: str) -> None:
    assert utc_minute(seconds) == shown


@given(st.integers(0, 2**34))
def test_agrees_with_the_standard_library(seconds: int) -> None:
    assert utc_minute(seconds) == datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
