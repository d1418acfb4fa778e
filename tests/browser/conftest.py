"""The page tests share the local identity provider of tests/adapters, a
served world (login_world.py) and a headless Chromium."""

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "adapters"))

from chromium import ARGS, require_chromium  # noqa: E402 - needs the path above
from login_world import World, serving  # noqa: E402


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    require_chromium()
    with serving(tmp_path) as w:
        yield w


@pytest.fixture
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=require_chromium(), args=ARGS)
        yield browser
        browser.close()
