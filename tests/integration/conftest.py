"""Fixtures for tests that run the real presenced process (see harness.py).

- `server`: memory storage, started, stopped with SIGTERM at teardown (exit code 0 asserted,
  and no traceback in its log unless the test sets ``server.allow_tracebacks = True``).
- `sqlite_server`: the same on a SQLite file in the test's tmp dir (survives restart/kill9).
- `server_factory`: start servers with custom configuration; all are stopped at teardown.
- `sip_client`: factory for `SipClient`s bound to the `server` fixture unless told otherwise.
- `sipp`: path of the sipp binary; skipped locally when missing, a failure under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import ServerProcess, SipClient, finish_servers, sipp_path

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    servers: list[ServerProcess] = []

    def start(name: str | None = None, *, start: bool = True, **kwargs: Any) -> ServerProcess:
        root = tmp_path / (name or f"server{len(servers)}")
        srv = ServerProcess(root, **kwargs)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield start
    finish_servers(servers)


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    """A running presenced with memory storage serving example.com on UDP+TCP 127.0.0.1."""
    return server_factory("server", storage="memory:")


@pytest.fixture
def sqlite_server(server_factory: ServerFactory) -> ServerProcess:
    """A running presenced persisting to SQLite under its data dir."""
    return server_factory("sqlite_server", storage="sqlite:///presenced.db")


@pytest.fixture
def sip_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., SipClient]]:
    """``sip_client("tcp", user="bob")`` -> a SipClient to the `server` fixture's server, or to
    ``server=other`` (then the `server` fixture is not started at all). Closed at teardown."""
    clients: list[SipClient] = []

    def make(
        transport: str = "udp", *, server: ServerProcess | None = None, **kw: Any
    ) -> SipClient:
        if server is None:
            server = request.getfixturevalue("server")
        kw.setdefault("domain", server.domain)
        client = SipClient(server.addr, transport, **kw)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture(scope="session")
def sipp() -> str:
    path = sipp_path()
    if path is None:
        if _IN_CI:
            pytest.fail("sipp is not installed (apt-get install sip-tester); CI must run these")
        pytest.skip("sipp is not installed")
    return path
