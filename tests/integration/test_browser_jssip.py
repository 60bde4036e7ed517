"""A real browser: Debian's chromium, headless, driven by selenium through /usr/bin/chromedriver,
runs JsSIP (from the npm registry, pinned in tests/browser/package-lock.json, bundled here with
esbuild) on a page this test serves. The page registers and subscribes over WebSocket
(RFC 7118) to presenced and shows the watched user's status; the test reads the page and sees
it change from offline to online when that user registers."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web
from harness import ServerProcess, SipClient, free_tcp_port, register, wait_until

BROWSER = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _bundle(out: Path) -> None:
    """JsSIP's CommonJS modules as one browser script (global `JsSIP`)."""
    esbuild = BROWSER / "node_modules" / ".bin" / "esbuild"
    jssip = BROWSER / "node_modules" / "jssip" / "lib" / "JsSIP.js"
    if not esbuild.exists() or not jssip.exists():
        pytest.fail("run `npm ci` in tests/browser (JsSIP and esbuild from the npm registry)")
    subprocess.run([str(esbuild), str(jssip), "--bundle", "--platform=browser",
                    "--global-name=JsSIP", f"--outfile={out}", "--log-level=warning"],
                   check=True, timeout=60, cwd=BROWSER)


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[str]:
    """The test page and the JsSIP bundle over HTTP on 127.0.0.1 (aiohttp static)."""
    root = tmp_path / "page"
    shutil.copytree(BROWSER / "page", root)
    _bundle(root / "jssip.js")
    port = free_tcp_port()
    loop = asyncio.new_event_loop()
    runner: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_static("/", root)
        r = web.AppRunner(app, access_log=None)
        await r.setup()
        await web.TCPSite(r, "127.0.0.1", port).start()
        runner.append(r)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_jssip_in_chromium_sees_a_user_go_online(
        server_factory: Callable[..., ServerProcess], page_server: str, browser: object) -> None:
    srv = server_factory("ws", extra_listen=("ws",))
    query = urlencode({"ws": srv.ws_url("ws"), "user": f"sip:carol@{srv.domain}",
                       "target": f"sip:alice@{srv.domain}"})
    browser.get(f"{page_server}/index.html?{query}")  # type: ignore[attr-defined]

    def text(element: str) -> str:
        return str(browser.find_element("id", element).text)  # type: ignore[attr-defined]

    def page() -> str:
        return str(browser.page_source)  # type: ignore[attr-defined]

    assert wait_until(lambda: text("registration") == "registered", timeout=20), page()
    assert wait_until(lambda: text("subscription") == "active", timeout=10), page()
    assert wait_until(lambda: text("status") == "offline", timeout=10), page()
    log = srv.log_text()
    assert "listening on ws:" in log

    with SipClient(srv.addr, "udp", user="alice", domain=srv.domain) as alice:
        assert register(alice, expires=600).status == 200
        assert wait_until(lambda: text("status") == "online", timeout=10), page()
        assert register(alice, expires=0).status == 200
        assert wait_until(lambda: text("status") == "offline", timeout=10), page()
    srv.assert_running()
