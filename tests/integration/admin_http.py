"""A small client of the admin API for the tests (stdlib urllib: no client library between the
test and the real server), and the server sections that switch the admin server on."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from harness import LOCALHOST, ServerProcess, free_port_pair

TOKEN = "test-admin-token-0123456789"


def admin_sections(port: int, **admin: Any) -> dict[str, dict[str, Any]]:
    return {"admin": {"listen": f"{LOCALHOST}:{port}", "token": TOKEN, **admin},
            "limits": {"exempt": ["127.0.0.0/8"]}}


class Admin:
    def __init__(self, port: int, token: str | None = TOKEN) -> None:
        self.base = f"http://{LOCALHOST}:{port}"
        self.token = token

    def raw(self, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, token: str | None = "default") -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok is not None:
            h["Authorization"] = f"Bearer {tok}"
        req = Request(self.base + path, data=body, method=method, headers=h)
        try:
            with urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def call(self, method: str, path: str, body: Any = None, token: str | None = "default",
             expect: int | None = 200) -> Any:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        status, headers, raw = self.raw(method, path, data, hdrs, token)
        assert headers.get("Content-Type", "").startswith("application/json"), (status, headers, raw)
        doc = json.loads(raw)
        if expect is not None:
            assert status == expect, (status, doc)
        return doc if expect is not None else (status, doc)

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def wait_up(self, timeout: float = 20.0) -> None:
        """The admin server starts after the SIP listeners: wait for it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.raw("GET", "/api/v1/status")[0] == 200:
                    return
            except (URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("admin API did not come up")
            time.sleep(0.1)


def start_admin_server(factory: Any, name: str = "admin", storage: str = "memory:",
                       **admin: Any) -> tuple[ServerProcess, Admin]:
    """A server with the admin API on a free port; `admin` are more [admin] keys, `sections`
    more sections."""
    port = free_port_pair(LOCALHOST)
    extra = admin.pop("sections", {})
    srv = factory(name, storage=storage, sections={**admin_sections(port, **admin), **extra})
    api = Admin(port)
    api.wait_up()
    return srv, api
