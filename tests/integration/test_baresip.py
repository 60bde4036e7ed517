"""A real SIP client watching a user: baresip (Debian package `baresip`), headless.

baresip's presence module SUBSCRIBEs to every contact marked `presence=p2p` through the
account's outbound proxy (our server). When alice registers, baresip must receive a NOTIFY
saying open and report her "Online"; when she unregisters, "Offline" again. baresip runs with
`-s` (SIP trace) so its output shows the NOTIFYs it received.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from baresip import BaresipProcess, baresip_binary
from harness import ServerProcess, SipClient, register, wait_until

Client = Callable[..., SipClient]



@pytest.fixture
def baresip_path() -> str:
    return baresip_binary()


class Baresip(BaresipProcess):
    """baresip watching alice through presenced as outbound proxy (regint=0: no REGISTER of
    its own)."""

    def __init__(self, binary: str, home: Path, server: ServerProcess, user: str = "bob",
                 password: str | None = None) -> None:
        auth = f";auth_pass={password}" if password else ""
        super().__init__(
            binary, home, "127.0.0.1",
            ("account.so", "contact.so", "presence.so", "menu.so"),
            f'<sip:{user}@{server.domain}>{auth};regint=0;outbound="sip:127.0.0.1:{server.port}"',
            contacts=f'"Alice" <sip:alice@{server.domain}>;presence=p2p',
        )

    def notifies(self) -> list[str]:
        """The NOTIFY requests baresip's SIP trace shows it received (each up to the next trace)."""
        return [
            block
            for block in self.output().split("\n#\n")
            if re.search(r"^NOTIFY sip:", block, re.MULTILINE)
        ]


@pytest.fixture
def baresip(baresip_path: str, server: ServerProcess, tmp_path: Path) -> Iterator[Baresip]:
    b = Baresip(baresip_path, tmp_path / "baresip", server)
    yield b
    b.stop()


def test_baresip_sees_alice_go_online_and_offline(
    baresip: Baresip, server: ServerProcess, sip_client: Client
) -> None:
    # baresip subscribes on its own at startup; wait for the first NOTIFY (alice closed).
    assert wait_until(lambda: len(baresip.notifies()) >= 1, timeout=10), baresip.output()[-3000:]
    first = baresip.notifies()[0]
    assert "Subscription-State: active" in first
    assert "<basic>closed</basic>" in first

    alice = sip_client()
    assert register(alice, expires=600).status == 200
    online = re.compile(r"<sip:alice@example\.com> changed status from \w+ to Online")
    assert wait_until(lambda: bool(online.search(baresip.output())), timeout=10), baresip.output()[
        -3000:
    ]
    assert any("<basic>open</basic>" in n for n in baresip.notifies())
    # Device privacy: the registered contact (IP:port) is not in the documents by default.
    assert not any(alice.contact_uri in n for n in baresip.notifies())

    assert register(alice, expires=0).status == 200
    offline = re.compile(r"<sip:alice@example\.com> changed status from Online to Offline")
    assert wait_until(lambda: bool(offline.search(baresip.output())), timeout=10), baresip.output()[
        -3000:
    ]
    assert baresip.proc.poll() is None  # baresip liked every message we sent it
    server.assert_running()


def test_baresip_watches_through_digest_when_only_md5_is_offered(
    baresip_path: str, server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """With [auth], baresip 1.0's libre gives up when a SHA-256 challenge comes beside the MD5
    one, in either order (seen here); `[auth] algorithms = ["MD5"]` serves it (RFC 7616)."""
    srv = server_factory(sections={"auth": {"users": {"bob": "bobpw"},
                                            "algorithms": ["MD5"]}})
    b = Baresip(baresip_path, tmp_path / "baresip-auth", srv, password="bobpw")
    try:
        assert wait_until(lambda: len(b.notifies()) >= 1, timeout=10), b.output()[-3000:]
        first = b.notifies()[0]
        assert "Subscription-State: active" in first and "<basic>closed</basic>" in first
        assert "401 Unauthorized" in b.output()  # it was challenged, and answered
        assert b.proc.poll() is None
    finally:
        b.stop()
