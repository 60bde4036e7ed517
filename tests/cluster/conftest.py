"""Fixtures for the cluster tests: a real redis-server started by the test on a free port (AOF
on, in the test's tmp dir, so a restart keeps what it acknowledged), and presenced nodes on
127.0.0.2, 127.0.0.3, 127.0.0.4 sharing it (the integration harness's ServerProcess).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(_INTEGRATION) not in sys.path:
    sys.path.insert(0, str(_INTEGRATION))

from harness import ServerError, ServerProcess, SipClient  # noqa: E402

NODE_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
LEASE = 2.0  # seconds: adoption within a few seconds in the tests


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class RedisServer:
    """One redis-server with `appendonly yes` + `appendfsync everysec` (docs/configuration.md:
    a kill of redis-server then loses nothing it acknowledged)."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            pytest.fail("redis-server is missing: install the Debian redis-server package")
        self.binary = binary
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.root),
                "--daemonize", "no", "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers_ping():
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not answer PING within 10 s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    r = RedisServer(tmp_path / "redis")
    r.start()
    yield r
    r.stop()


NodeFactory = Callable[..., ServerProcess]


@pytest.fixture
def node_factory(tmp_path: Path, redis_server: RedisServer) -> Iterator[NodeFactory]:
    """``node_factory(0)`` -> a running node "n0" on 127.0.0.2 (1: .3, 2: .4) on the test's
    Redis; ``start=False`` to start it later; extra `sections` merge over the defaults."""
    nodes: list[ServerProcess] = []

    def make(index: int, *, start: bool = True, sections: dict[str, Any] | None = None,
             cluster: dict[str, Any] | None = None) -> ServerProcess:
        merged: dict[str, Any] = {
            "cluster": {"node_id": f"n{index}", "lease_time": LEASE, **(cluster or {})},
            "limits": {"exempt": ["127.0.0.0/8"]},
            "pa": {"min_expires": 1},
            "registrar": {"min_expires": 1},
        }
        merged.update(sections or {})
        srv = ServerProcess(tmp_path / f"n{index}", storage=redis_server.url, sections=merged)
        srv.host = NODE_HOSTS[index]
        nodes.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    problems: list[str] = []
    for srv in nodes:
        try:
            if srv.running:
                srv.stop()
        except ServerError as exc:
            problems.append(str(exc))
        finally:
            srv.close()
        if not srv.allow_tracebacks and srv.tracebacks():
            problems.append(f"{srv.root} logged a traceback:\n" + "\n".join(srv.tracebacks()[:3]))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def client() -> Iterator[Callable[..., SipClient]]:
    """``client(node, user="bob")``: a UDP client that takes datagrams from every node."""
    made: list[SipClient] = []

    def make(node: ServerProcess, **kw: Any) -> SipClient:
        kw.setdefault("domain", node.domain)
        c = SipClient(node.addr, "udp", connect=False, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
