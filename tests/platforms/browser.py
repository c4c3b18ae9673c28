"""Debian's Chromium driven by Playwright, for the tests a person would do in a browser.

Without a browser these tests are skipped on a developer machine and FAIL in CI
(CI=true), like the PostgreSQL and OpenViking tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest
from playwright.async_api import Browser, Playwright
from playwright.async_api import Error as PlaywrightError

CHROMIUM = Path(os.environ.get("SESSIONGATE_TEST_CHROMIUM", "/usr/bin/chromium"))


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


def require_chromium() -> None:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")


async def launch(playwright: Playwright) -> Browser:
    """Chromium, headless; skip or fail as above when it cannot start."""
    require_chromium()
    try:
        return await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    except PlaywrightError as exc:
        unavailable(f"Chromium at {CHROMIUM} does not start: {exc}")
