"""baresip (Debian package) watching a user over TLS (`transport=tls`, RFC 3261 §26): it
verifies presenced's certificate against the test CA (`sip_cafile`), subscribes through the
TLS listener, and sees the user go online when she registers."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from baresip import BaresipProcess, baresip_binary
from harness import ServerProcess, SipClient, make_certificates, register, wait_until


def test_baresip_over_tls_sees_alice_go_online(
        server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    binary = baresip_binary()
    certs = make_certificates(tmp_path / "certs")
    srv = server_factory("tls", extra_listen=("tls",), sections={"tls": certs.tls_section()})
    tls_port = srv.ports["tls"]
    b = BaresipProcess(
        binary, tmp_path / "baresip", "127.0.0.1",
        ("account.so", "contact.so", "presence.so", "menu.so"),
        f'<sip:bob@{srv.domain};transport=tls>;regint=0;'
        f'outbound="sip:127.0.0.1:{tls_port};transport=tls"',
        contacts=f'"Alice" <sip:alice@{srv.domain}>;presence=p2p',
        extra_config=f"sip_cafile {certs.ca_file}\nsip_verify_server yes\n",
    )
    try:
        def notifies() -> list[str]:
            return [blk for blk in b.output().split("\n#\n")
                    if re.search(r"^NOTIFY sip", blk, re.MULTILINE)]

        assert wait_until(lambda: len(notifies()) >= 1, timeout=15), b.output()[-3000:]
        first = notifies()[0]
        assert "Subscription-State: active" in first
        assert re.search(r"^Via: SIP/2.0/TLS ", first, re.MULTILINE), first
        with SipClient(srv.addr, "udp", user="alice", domain=srv.domain) as alice:
            assert register(alice, expires=600).status == 200
            online = re.compile(r"<sip:alice@example\.com> changed status from \w+ to Online")
            assert wait_until(lambda: bool(online.search(b.output())), timeout=10), b.output()[-3000:]
        assert b.proc.poll() is None
        assert "tls:127.0.0.1" in srv.log_text()
    finally:
        b.stop()
