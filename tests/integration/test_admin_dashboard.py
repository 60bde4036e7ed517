"""The dashboard in a real browser: Debian's chromium headless, driven by selenium through
/usr/bin/chromedriver. The page takes the token from its URL fragment, shows a presentity's
watchers when searched, and a live counter moves when SIP traffic arrives. A screenshot is
saved and its path printed (artifacts/, or the test's tmp dir)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from admin_http import TOKEN, start_admin_server
from harness import ServerProcess, SipClient, register
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

Factory = Callable[..., ServerProcess]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(tool):
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"{tool} is missing (apt-get install chromium chromium-driver)")
            pytest.skip(f"{tool} is missing")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _artifact(tmp_path: Path, name: str) -> Path:
    root = Path(__file__).resolve().parents[2] / "artifacts"
    try:
        root.mkdir(exist_ok=True)
        return root / name
    except OSError:
        return tmp_path / name


def test_dashboard_shows_watchers_and_live_counters(server_factory: Factory, browser: webdriver.Chrome,
                                                    tmp_path: Path) -> None:
    srv, api = start_admin_server(server_factory)
    alice = SipClient(srv.addr, user="alice")
    bob = SipClient(srv.addr, user="bob")
    try:
        assert register(alice).status == 200
        r = bob.request("SUBSCRIBE", "sip:alice@example.com", headers={"Event": "presence", "Expires": "600"})
        assert r.status == 200
        bob.expect_request("NOTIFY")

        browser.get(f"{api.base}/#token={TOKEN}")
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "feed").text == "live")
        # The token left the address bar (kept in sessionStorage only).
        assert TOKEN not in browser.current_url

        search = browser.find_element(By.ID, "search")
        search.send_keys("alice@example.com")
        browser.find_element(By.ID, "search-btn").click()
        wait.until(lambda d: "bob@example.com" in d.find_element(By.ID, "watchers").text)
        row = browser.find_element(By.CSS_SELECTOR, "#watchers tbody tr").text
        assert "presence" in row and "active" in row
        wait.until(lambda d: "alice@example.com" in d.find_element(By.ID, "top").text)

        before = int(browser.find_element(By.ID, "v-requests").text)
        for _ in range(5):
            assert alice.request("OPTIONS", "sip:example.com").status == 200
        wait.until(lambda d: int(d.find_element(By.ID, "v-requests").text) >= before + 5)
        time.sleep(1.2)  # one more snapshot: the rate graph has two points
        shot = _artifact(tmp_path, "dashboard.png")
        assert browser.save_screenshot(str(shot))
        print(f"dashboard screenshot: {shot}")
    finally:
        alice.close()
        bob.close()


def test_dashboard_with_a_wrong_token_says_so(server_factory: Factory, browser: webdriver.Chrome) -> None:
    _, api = start_admin_server(server_factory)
    browser.get(f"{api.base}/#token=not-the-right-token")
    WebDriverWait(browser, 30).until(lambda d: "403" in d.find_element(By.ID, "feed").text)
