"""Several listeners of one transport in one real server process (issue 10, "Also mend").

`listen` names UDP and TCP on two addresses with one port: IPv4 + IPv6 (127.0.0.1, ::1) and two
IPv4 addresses (127.0.0.1, 127.0.0.2). Over each listener a client REGISTERs, SUBSCRIBEs and
sends OPTIONS; every answer and every NOTIFY must come from the address the client talks to
(RFC 3261 §18.2.2: a response leaves from where the request arrived; a UDP client here only
reads datagrams from that address, its socket being connected) and our Via must name it.
Before the fix the last listener of a transport replaced the others: IPv4 UDP answers failed
("socket family mismatch") and TCP answers dialled the client's ephemeral port.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

import pytest
from harness import LOOPBACK_UNLIMITED, ServerProcess, SipClient, parse_pidf, register

from presenced.sip.message import Request, Response

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
Factory = Callable[..., ServerProcess]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _free_port(hosts: tuple[str, ...]) -> int:
    """A port free for UDP and TCP on every host (the server binds them all)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        held: list[socket.socket] = []
        try:
            for host in hosts:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(family, kind)
                    held.append(s)
                    s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return port
    raise RuntimeError("no port free on every address")


def _ref(host: str) -> str:
    return f"[{host}]" if ":" in host else host


PAIRS = {
    "ipv4+ipv6": ("127.0.0.1", "::1"),
    "two-ipv4": ("127.0.0.1", "127.0.0.2"),
}


@pytest.fixture(params=sorted(PAIRS))
def listeners(request: pytest.FixtureRequest, server_factory: Factory) -> Iterator[tuple[ServerProcess, tuple[str, ...]]]:
    hosts = PAIRS[str(request.param)]
    if any(":" in h for h in hosts) and not _has_ipv6_loopback():
        if _IN_CI:
            pytest.fail("no IPv6 loopback (::1) on this machine; CI must have one")
        pytest.skip("no IPv6 loopback (::1) on this machine")
    port = _free_port(hosts)
    listen = [f"{t}:{_ref(h)}:{port}" for h in hosts for t in ("udp", "tcp")]
    sections = {"server": {"listen": listen}, **LOOPBACK_UNLIMITED}
    yield server_factory(port=port, sections=sections), hosts


def _client(srv: ServerProcess, host: str, transport: str, user: str) -> SipClient:
    return SipClient((host, srv.port), transport, user=user, domain=srv.domain, local_host=host)


def _names_listener(msg: Request | Response, host: str, port: int) -> None:
    """A request we sent names the listener in its top Via (RFC 3261 §18.1.1 sent-by) and
    in its Contact (the address in-dialog requests come back to, RFC 3261 §12.1.1)."""
    via = msg.top_via
    assert (via.host.strip("[]"), via.port) == (host, port), via
    (contact,) = msg.contacts
    assert (contact.uri.host.strip("[]"), contact.uri.port) == (host, port), contact


def _subscribe(w: SipClient, uri: str) -> tuple[Response, Request]:
    r = w.request("SUBSCRIBE", uri, headers={"Event": "presence", "Expires": "600"})
    assert r.status == 200, r
    return r, w.expect_request("NOTIFY")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_register_subscribe_options_work_on_every_listener(
    listeners: tuple[ServerProcess, tuple[str, ...]], transport: str
) -> None:
    srv, hosts = listeners
    for i, host in enumerate(hosts):
        user = f"{transport}{i}"
        c = _client(srv, host, transport, user)
        try:
            ok = c.request("OPTIONS", srv.uri())
            assert ok.status == 200, ok
            r = register(c, expires=600)
            assert r.status == 200, r
            _sub, notify = _subscribe(c, c.aor)
            _names_listener(notify, host, srv.port)
            assert parse_pidf(notify.body).basics == ["open"]  # its own registration
            if transport == "tcp":
                assert c.wait_closed(0.2) is False  # the answers came on this connection
            assert not c.errors
        finally:
            c.close()


def test_each_watcher_gets_its_notify_from_the_address_it_subscribed_to(
    listeners: tuple[ServerProcess, tuple[str, ...]],
) -> None:
    """One presentity watched over all four listeners; a REGISTER over one of them makes a
    NOTIFY to each watcher, each through the listener its SUBSCRIBE came on."""
    srv, hosts = listeners
    watchers = [(host, t, _client(srv, host, t, f"w-{t}-{i}"))
                for i, host in enumerate(hosts) for t in ("udp", "tcp")]
    presentity = _client(srv, hosts[-1], "udp", "carol")
    try:
        for host, _t, w in watchers:
            ok, first = _subscribe(w, presentity.aor)
            _names_listener(first, host, srv.port)
            (contact,) = ok.contacts  # the 2xx's Contact: where the watcher's refreshes go
            assert (contact.uri.host.strip("[]"), contact.uri.port) == (host, srv.port)
            assert parse_pidf(first.body).basics == ["closed"]
        assert register(presentity, expires=600).status == 200
        for host, t, w in watchers:
            n = w.expect_request("NOTIFY")
            _names_listener(n, host, srv.port)
            assert parse_pidf(n.body).basics == ["open"], (host, t)
            assert not w.errors
    finally:
        presentity.close()
        for _h, _t, w in watchers:
            w.close()

