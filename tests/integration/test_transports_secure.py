"""TLS (RFC 3261 §26, RFC 5630), WebSocket and secure WebSocket (RFC 7118) against the real
server process: REGISTER / SUBSCRIBE / PUBLISH / NOTIFY over each, the `sip` subprotocol,
flows that are gone, mutual TLS, certificate errors and reload, outbound TLS to a trusted
proxy. Certificates are made at test time (trustme)."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from harness import (
    CertificateSet,
    ServerProcess,
    SipClient,
    make_certificates,
    parse_pidf,
    register,
)

from presenced.sip.framing import StreamFramer
from presenced.sip.message import Request, make_response, parse_message

Factory = Callable[..., ServerProcess]
SECURE = ("tls", "ws", "wss")
PIDF = "application/pidf+xml"


def pidf(entity: str, basic: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:{entity}">\n'
        f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple>\n'
        "</presence>\n"
    ).encode()


@pytest.fixture
def certs(tmp_path: Path) -> CertificateSet:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
def secure_server(server_factory: Factory, certs: CertificateSet) -> ServerProcess:
    return server_factory("secure", extra_listen=SECURE, sections={"tls": certs.tls_section()})


@pytest.fixture
def clients() -> Iterator[list[SipClient]]:
    made: list[SipClient] = []
    yield made
    for c in made:
        c.close()


def client(made: list[SipClient], srv: ServerProcess, transport: str, certs: CertificateSet,
           user: str) -> SipClient:
    ctx = certs.client_context() if transport in ("tls", "wss") else None
    c = SipClient(srv.addr_of(transport), transport, user=user, domain=srv.domain, ssl_context=ctx)
    made.append(c)
    return c


def subscribe(c: SipClient, target: str, expires: int = 600) -> tuple[Request, int, str | None]:
    req = c.build_request("SUBSCRIBE", target, headers={
        "Event": "presence", "Accept": PIDF, "Expires": str(expires)})
    c.send(req)
    r = c.wait_response(req)
    return req, r.status, r.headers.get("Contact")


@pytest.mark.parametrize("transport", SECURE)
def test_register_subscribe_publish_notify_over_each_secure_transport(
        secure_server: ServerProcess, certs: CertificateSet, clients: list[SipClient],
        transport: str) -> None:
    watcher = client(clients, secure_server, transport, certs, "watcher")
    publisher = client(clients, secure_server, transport, certs, "carol")
    assert register(watcher, expires=300).status == 200
    _, status, contact = subscribe(watcher, "sip:carol@example.com")
    assert status == 200
    # Our Contact names the flow's listener: sips: for TLS (RFC 5630 §3.1.3), transport=ws for
    # WS and WSS, sips: for WSS (RFC 7118 §5.2).
    assert contact is not None
    expected = {"tls": "<sips:carol@", "ws": "<sip:carol@", "wss": "<sips:carol@"}[transport]
    assert contact.startswith(expected), contact
    assert (";transport=ws" in contact) == transport.startswith("ws")
    first = watcher.expect_request("NOTIFY")
    assert first.top_via.transport.upper() == transport.upper()  # Via TLS / WS / WSS
    # A NOTIFY to a WebSocket client targets its .invalid Contact; it arrived over the socket.
    assert first.uri == watcher.contact_uri
    assert parse_pidf(first.body).basics in ([], ["closed"])

    pub = publisher.build_request("PUBLISH", "sip:carol@example.com", headers={
        "Event": "presence", "Expires": "300", "Content-Type": PIDF},
        body=pidf("carol@example.com", "open"))
    publisher.send(pub)
    assert publisher.wait_response(pub).status == 200
    update = watcher.expect_request("NOTIFY", where=lambda r: b"<basic>open</basic>" in r.body)
    assert update.top_via.transport.upper() == transport.upper()
    assert not watcher.errors and not publisher.errors


def test_websocket_handshake_without_sip_subprotocol_is_refused(secure_server: ServerProcess) -> None:
    async def attempt(protocols: tuple[str, ...]) -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(secure_server.ws_url(), protocols=protocols):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(attempt(())) == 400  # RFC 7118 §4.1: no "sip", no WebSocket
    assert asyncio.run(attempt(("chat",))) == 400
    assert asyncio.run(attempt(("chat", "sip"))) == 101


def test_ws_frame_over_max_message_size_closes_only_that_connection(
        secure_server: ServerProcess, certs: CertificateSet, clients: list[SipClient]) -> None:
    big = client(clients, secure_server, "ws", certs, "big")
    other = client(clients, secure_server, "ws", certs, "other")
    big.send_raw(b"OPTIONS sip:example.com SIP/2.0\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n")
    assert big.wait_closed(5)
    assert register(other, expires=60).status == 200


def test_closed_websocket_watcher_fails_at_once_and_others_are_notified(
        secure_server: ServerProcess, certs: CertificateSet, clients: list[SipClient]) -> None:
    """kamailio #4118: a reloaded browser tab's WebSocket is gone. Its NOTIFY fails at once
    (430, nothing to dial), that subscription ends, every other watcher still gets its NOTIFY."""
    gone = client(clients, secure_server, "ws", certs, "tab1")
    stays = client(clients, secure_server, "ws", certs, "tab2")
    udp = SipClient(secure_server.addr, "udp", user="desk", domain=secure_server.domain)
    clients.append(udp)
    for w in (gone, stays, udp):
        assert subscribe(w, "sip:dave@example.com")[1] == 200
        w.expect_request("NOTIFY")
    gone.close()  # the tab reloads: the close handshake ends, the connection is gone
    dave = SipClient(secure_server.addr, "udp", user="dave", domain=secure_server.domain)
    clients.append(dave)
    mark = len(secure_server.log_text())
    assert register(dave, expires=300).status == 200
    for w in (stays, udp):
        n = w.expect_request("NOTIFY", where=lambda r: b"<basic>open</basic>" in r.body)
        assert n.headers.get("Subscription-State", "").startswith("active")
    asyncio.run(secure_server.wait_log("not dialling out", after=mark))
    assert "answered 430" in secure_server.log_text()[mark:]


def test_closed_websocket_from_a_trusted_address_fails_at_once_too(
        server_factory: Factory, certs: CertificateSet, clients: list[SipClient]) -> None:
    """Trust lets us dial TCP/TLS to a proxy, never a WebSocket (RFC 7118 §5: only the client
    opens one): a gone WS flow from a trusted address fails at once instead of waiting out
    Timer F."""
    srv = server_factory("ws-trusted", extra_listen=SECURE, sections={
        "tls": certs.tls_section(), "server": {"trusted_proxies": ["127.0.0.1"]}})
    gone = client(clients, srv, "ws", certs, "tab1")
    assert subscribe(gone, "sip:fred@example.com")[1] == 200
    gone.expect_request("NOTIFY")
    gone.close()
    fred = SipClient(srv.addr, "udp", user="fred", domain=srv.domain)
    clients.append(fred)
    mark = len(srv.log_text())
    assert register(fred, expires=300).status == 200
    asyncio.run(srv.wait_log("not dialling out", after=mark, timeout=5))
    assert "answered 430" in srv.log_text()[mark:]


def test_websocket_refresh_after_reload_gets_481_and_a_new_subscription_works(
        secure_server: ServerProcess, certs: CertificateSet, clients: list[SipClient]) -> None:
    """The choice documented in docs/transports.md: the subscription of a gone flow ends when
    its NOTIFY fails; the reloaded page subscribes afresh (its old dialog gets 481)."""
    old = client(clients, secure_server, "ws", certs, "tab")
    req = old.build_request("SUBSCRIBE", "sip:erin@example.com", headers={
        "Event": "presence", "Accept": PIDF, "Expires": "600"})
    old.send(req)
    ok = old.wait_response(req)
    assert ok.status == 200
    dlg = old.dialog(ok, req)
    old.expect_request("NOTIFY")
    old.close()
    erin = SipClient(secure_server.addr, "udp", user="erin", domain=secure_server.domain)
    clients.append(erin)
    mark = len(secure_server.log_text())
    assert register(erin, expires=300).status == 200
    asyncio.run(secure_server.wait_log("answered 430", after=mark))
    new = client(clients, secure_server, "ws", certs, "tab")
    refresh = new.request("SUBSCRIBE", dialog=dlg, headers={"Event": "presence", "Expires": "600"})
    assert refresh.status == 481
    assert subscribe(new, "sip:erin@example.com")[1] == 200
    assert b"<basic>open</basic>" in new.expect_request("NOTIFY").body


def test_mutual_tls_refuses_a_client_without_a_certificate(
        server_factory: Factory, certs: CertificateSet) -> None:
    srv = server_factory("mtls", extra_listen=("tls",),
                         sections={"tls": certs.tls_section(verify_client=True)})
    raw = socket.create_connection(srv.addr_of("tls"), timeout=5)
    refused = False
    try:
        tls = certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        tls.settimeout(5)
        tls.sendall(b"OPTIONS sip:example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        refused = tls.recv(100) == b""  # TLS 1.3: the alert comes after the client's Finished
    except (ssl.SSLError, ConnectionError):
        refused = True
    finally:
        raw.close()
    assert refused
    with SipClient(srv.addr_of("tls"), "tls", domain=srv.domain,
                   ssl_context=certs.client_context(with_certificate=True)) as c:
        assert register(c, expires=60).status == 200


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "presenced", "--check-config", str(path)],
                          capture_output=True, text=True, timeout=30, check=False)


def test_bad_certificate_configuration_is_one_clear_error(
        tmp_path: Path, certs: CertificateSet) -> None:
    other = make_certificates(tmp_path / "other")
    cases = {
        "tls.certificate": f'certificate = "missing.pem"\nprivate_key = "{certs.private_key}"',
        "tls.private_key": f'certificate = "{certs.certificate}"\nprivate_key = "{other.private_key}"',
        "tls.ca_file": (f'certificate = "{certs.certificate}"\nprivate_key = "{certs.private_key}"\n'
                        f'ca_file = "{certs.private_key}"'),
    }
    for key, tls in cases.items():
        conf = tmp_path / f"{key}.toml"
        conf.write_text(f'[server]\nlisten = ["tls:127.0.0.1:0"]\n\n[tls]\n{tls}\n')
        done = _check_config(conf)
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f": {key}: " in lines[0], done.stderr
    conf = tmp_path / "no-tls.toml"
    conf.write_text('[server]\nlisten = ["wss:127.0.0.1:0"]\n')
    done = _check_config(conf)
    assert done.returncode == 1 and ": tls: " in done.stderr, done.stderr


def test_sighup_reloads_the_certificate_for_new_connections(
        server_factory: Factory, tmp_path: Path, certs: CertificateSet) -> None:
    srv = server_factory("reload", extra_listen=("tls",), sections={"tls": certs.tls_section()})
    before = SipClient(srv.addr_of("tls"), "tls", domain=srv.domain, ssl_context=certs.client_context())
    try:
        assert register(before, expires=60).status == 200
        fresh = make_certificates(tmp_path / "fresh")
        certs.certificate.write_bytes(fresh.certificate.read_bytes())
        certs.private_key.write_bytes(fresh.private_key.read_bytes())
        mark = len(srv.log_text())
        srv.signal(signal.SIGHUP)
        asyncio.run(srv.wait_log("TLS certificate reloaded", after=mark))
        with SipClient(srv.addr_of("tls"), "tls", domain=srv.domain, user="bob",
                       ssl_context=fresh.client_context()) as after:
            assert register(after, expires=60).status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            SipClient(srv.addr_of("tls"), "tls", domain=srv.domain, ssl_context=certs.client_context())
        assert register(before, expires=60).status == 200  # the old connection keeps going
        # A broken file on reload keeps the old (new) certificate serving.
        certs.private_key.write_text("garbage")
        mark = len(srv.log_text())
        srv.signal(signal.SIGHUP)
        asyncio.run(srv.wait_log("TLS reload failed", after=mark))
        with SipClient(srv.addr_of("tls"), "tls", domain=srv.domain, user="carol",
                       ssl_context=fresh.client_context()) as again:
            assert register(again, expires=60).status == 200
    finally:
        before.close()


class _TlsProxy:
    """A TLS listener standing in for a trusted proxy: answers every NOTIFY 200, keeps them."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ctx = ctx
        self.notifies: list[Request] = []
        self.handshake_errors: list[str] = []
        self.got = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn = self.ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(str(exc))
                raw.close()
                continue
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: ssl.SSLSocket) -> None:
        framer = StreamFramer(1 << 20)
        while True:
            try:
                data = conn.recv(65535)
            except OSError:
                return
            if not data:
                return
            for item in framer.feed(data):
                if not isinstance(item, bytes):
                    continue
                msg = parse_message(item)
                if isinstance(msg, Request):
                    self.notifies.append(msg)
                    conn.sendall(make_response(msg, 200, to_tag="proxy").encode())
                    self.got.set()

    def close(self) -> None:
        self.sock.close()


def _dialled(srv: ServerProcess, certs: CertificateSet, proxy: _TlsProxy, user: str) -> None:
    """Subscribe over TLS from the trusted address with the proxy as Contact: the dialog's
    target is the proxy, no connection to it exists, so presenced dials it over TLS."""
    with SipClient(srv.addr_of("tls"), "tls", user=user, domain=srv.domain,
                   ssl_context=certs.client_context()) as c:
        req = c.build_request("SUBSCRIBE", f"sip:{user}-target@example.com", headers={
            "Event": "presence", "Expires": "600",
            "Contact": f"<sips:{user}@127.0.0.1:{proxy.port}>"})
        c.send(req)
        assert c.wait_response(req).status == 200


def test_notify_dials_a_trusted_proxy_over_tls_and_verifies_its_certificate(
        server_factory: Factory, certs: CertificateSet, tmp_path: Path) -> None:
    srv = server_factory("dial", extra_listen=("tls",), sections={
        "tls": certs.tls_section(), "server": {"trusted_proxies": ["127.0.0.1"]}})
    good = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    good.load_cert_chain(str(certs.certificate), str(certs.private_key))  # valid for 127.0.0.1
    proxy = _TlsProxy(good)
    try:
        _dialled(srv, certs, proxy, "viaproxy")
        assert proxy.got.wait(10), srv.log_tail()
        assert proxy.notifies[0].method == "NOTIFY"
        assert proxy.notifies[0].top_via.transport == "TLS"
    finally:
        proxy.close()
    # A proxy whose certificate is not from ca_file (nor the system store) is not spoken to.
    stranger = make_certificates(tmp_path / "stranger")
    bad = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    bad.load_cert_chain(str(stranger.certificate), str(stranger.private_key))
    impostor = _TlsProxy(bad)
    try:
        mark = len(srv.log_text())
        _dialled(srv, certs, impostor, "impostor")
        asyncio.run(srv.wait_log("certificate verify failed", after=mark))
        assert not impostor.notifies
    finally:
        impostor.close()
