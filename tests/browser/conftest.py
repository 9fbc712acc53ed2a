"""Browser tests: pages the router serves, driven in a real headless Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401
    _clean_fakes,
    database_url,
    fakes,
    postgres,
)
from tests.observe.conftest import collector  # noqa: F401

#: Where Debian's chromium package puts the browser itself (/usr/bin/chromium is a
#: wrapper script); SWITCHYARD_CHROMIUM names another.
CHROMIUM = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium() -> str | None:
    given = os.environ.get("SWITCHYARD_CHROMIUM")
    if given:
        return given
    for path in CHROMIUM:
        if Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per module (Playwright's synchronous API: the routers under
    test run their own event loops on threads of their own)."""
    path = chromium()
    if path is None:
        pytest.skip("no Chromium: apt-get install chromium (./dev test installs it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: ./dev setup")
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=path,
            # Root in CI has no user namespace for Chromium's sandbox; the pages are
            # the router's own.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield launched
        launched.close()
