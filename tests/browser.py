"""Render a page in headless Chromium (Debian's ``chromium`` and ``chromium-driver``) through Selenium.

Used by the HTML report's browser test and by ``docs/report_screenshot.py``. Selenium is given
Debian's chromedriver explicitly, so Selenium Manager never tries to download a driver.
"""
from __future__ import annotations

import base64
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Set in CI (.ci/run): a missing browser fails the test instead of skipping it.
REQUIRE_ENV = "SERCACHE_REQUIRE_BROWSER"


def find_browser() -> tuple[str, str] | None:
    """Paths of chromium and chromedriver, or None when either is absent."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@dataclass
class Rendered:
    console: list[dict[str, Any]]          # browser log entries (console-api, javascript, network)
    images: list[dict[str, Any]]           # per <img>: complete, naturalWidth, naturalHeight, alt
    title: str
    page_height: int
    screenshot: Path
    errors: list[dict[str, Any]] = field(default_factory=list)  # console entries at level SEVERE


def render(page: Path, screenshot: Path, width: int = 1280, height: int | None = None,
           down_to: str | None = None) -> Rendered:
    """Open ``page`` (a local file), collect the console log and image states, and save a screenshot.

    The capture is the whole page, or its top ``height`` pixels, or the top down to the bottom of the
    first element matching the CSS selector ``down_to``.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise FileNotFoundError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    chromium, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", f"--window-size={width},{height or 900}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(Path(page).resolve().as_uri())
        driver.execute_script("return document.fonts ? document.fonts.ready : null")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({complete: i.complete, naturalWidth: i.naturalWidth, "
            "naturalHeight: i.naturalHeight, alt: i.alt}))")
        full = int(driver.execute_script("return document.documentElement.scrollHeight"))
        if down_to is not None:
            height = int(driver.execute_script(
                "const r = document.querySelector(arguments[0]).getBoundingClientRect(); "
                "return r.bottom + window.scrollY + 12", down_to))
        # DevTools' capture (beyond the viewport): the whole page, or its top ``height`` pixels
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height or full, full), "scale": 1}})
        Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        console = driver.get_log("browser")
        title = driver.title
    finally:
        driver.quit()
    return Rendered(console, images, title, full, Path(screenshot),
                    [c for c in console if c.get("level") == "SEVERE"])


def ink_fraction(png: Path) -> float:
    """Share of pixels that differ clearly (> 32 grey levels) from the page's most common colour, the background."""
    import numpy as np
    from PIL import Image

    grey = np.asarray(Image.open(png).convert("L"), dtype=np.int16)
    background = np.bincount(grey.ravel(), minlength=256).argmax()
    return float((np.abs(grey - background) > 32).mean())


def require_or_skip() -> None:
    """Skip (with the reason) when the browser is absent, unless CI demands it."""
    import pytest

    reason = None
    if find_browser() is None:
        reason = "chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            reason = "selenium not installed (pip install -e '.[html]')"
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set but {reason}")
    pytest.skip(reason)
