"""Safe by default at start-up (issue 9 finding 8): the default configuration accepted anyone as
anyone, and on a public address a stranger removed a user's registrations with ``Contact: *``.

presenced now refuses to start on a non-loopback address without ``[auth]`` unless the operator
opts in with ``[server] allow_anonymous = true``; ``--check-config`` reports the same line.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import ServerProcess, SipClient, free_port_pair

ServerFactory = Callable[..., ServerProcess]


def _wildcard(port: int, **extra: Any) -> dict[str, Any]:
    return {"listen": [f"udp:0.0.0.0:{port}", f"tcp:0.0.0.0:{port}"], **extra}


def test_refuses_to_start_on_all_interfaces_without_auth(tmp_path: Path) -> None:
    port = free_port_pair()
    srv = ServerProcess(tmp_path / "open", port=port, sections={"server": _wildcard(port)})
    srv.write_config()
    run = subprocess.run(
        [sys.executable, "-m", "presenced", "--config", str(srv.config_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
    )
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr  # one clear line, no traceback
    assert "server.allow_anonymous" in lines[0]
    assert f"udp:0.0.0.0:{port}" in lines[0]
    # Nothing was bound: the port is still free for anyone else.
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", port))

    check = subprocess.run(
        [sys.executable, "-m", "presenced", "--check-config", str(srv.config_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
    )
    assert check.returncode == 1
    assert "server.allow_anonymous" in check.stderr


def test_starts_on_all_interfaces_with_allow_anonymous_and_warns(
    server_factory: ServerFactory,
) -> None:
    port = free_port_pair()
    srv = server_factory(port=port, sections={"server": _wildcard(port, allow_anonymous=True)})
    client = SipClient(srv.addr, "udp", user="alice", domain=srv.domain)
    try:
        assert client.request("OPTIONS", srv.uri()).status == 200
    finally:
        client.close()
    assert "WARNING presenced.server serving udp:0.0.0.0" in srv.log_text()
    assert "allow_anonymous" in srv.log_text()


def test_starts_on_all_interfaces_with_auth(server_factory: ServerFactory) -> None:
    port = free_port_pair()
    srv = server_factory(
        port=port,
        sections={"server": _wildcard(port), "auth": {"users": {"alice": "secret"}}},
    )
    client = SipClient(srv.addr, "udp", user="alice", domain=srv.domain)
    try:
        r = client.request(
            "REGISTER", srv.uri(), to=f"<{srv.uri('alice')}>", headers={"Expires": "60"}
        )
        assert r.status == 401  # a stranger is challenged, not served
    finally:
        client.close()
    assert "without [auth]" not in srv.log_text()


def test_embedded_default_on_loopback_keeps_starting(server_factory: ServerFactory) -> None:
    srv = server_factory()  # udp/tcp on 127.0.0.1, no [auth]: as before
    assert srv.running
    assert "allow_anonymous" not in srv.log_text()
