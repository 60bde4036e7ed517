"""Fixtures for the cluster tests: a real redis-server started by the test on a free port (AOF
on, in the test's tmp dir, so a restart keeps what it acknowledged), and presenced nodes on
127.0.0.2, 127.0.0.3, 127.0.0.4 sharing it (the integration harness's ServerProcess).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(_INTEGRATION) not in sys.path:
    sys.path.insert(0, str(_INTEGRATION))

from cluster_env import LEASE, NODE_HOSTS, NodeFactory, RedisServer  # noqa: E402
from harness import ServerProcess, SipClient, finish_servers  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    r = RedisServer(tmp_path / "redis")
    r.start()
    yield r
    r.stop()



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
    finish_servers(nodes)


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
