"""The Debian Chromium the page tests drive, and the flags that keep it off
the network it cannot reach here. Missing, it skips those tests, or fails
them in CI."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def require_chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("MCP_OAUTH_PROXY_REQUIRE_DATABASES") == "1":
            pytest.fail("chromium is required in CI (apt-get install chromium)", pytrace=False)
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM
