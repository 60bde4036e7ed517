"""HEP3 mirroring ([hep], transport/mirror.py): a capture server receives a copy of every SIP
message the real server receives and sends, over UDP and TCP, and the SIP path does not care
whether a capture server is there."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    ServerProcess,
    SipClient,
    free_port_pair,
    free_udp_port,
    register,
    wait_until,
)
from hep_capture import HepCollector, HepPacket

from presenced.sip.message import Request, Response, parse_message

Factory = Callable[..., ServerProcess]

# The order sngrep 1.x reads chunks in (fixed offsets): family, protocol, ports, time, type,
# capture id, then addresses, then (with a password) the key, and the payload last.
SNGREP_ORDER = [0x01, 0x02, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x03, 0x04]


def hep_server(factory: Factory, address: str, **hep: object) -> ServerProcess:
    return factory(sections={"hep": {"address": address, **hep}})


def first_line_is(text: str) -> Callable[[HepPacket], bool]:
    return lambda p: p.payload.startswith(text.encode())


def test_register_and_its_200_are_mirrored_with_addresses_ports_time_and_payload(
    server_factory: Factory,
) -> None:
    with HepCollector() as hep:
        srv = hep_server(server_factory, hep.address, capture_id=4242, password="hep-secret")
        with SipClient(srv.addr, "udp", domain=srv.domain) as c:
            before = int(time.time())
            r = register(c, user="alice")
            assert r.status == 200, r
            call_id = r.call_id
            inbound = hep.wait_for(lambda p: p.payload.startswith(b"REGISTER ")
                                   and call_id.encode() in p.payload)
            outbound = hep.wait_for(lambda p: p.payload.startswith(b"SIP/2.0 200")
                                    and call_id.encode() in p.payload)
            after = int(time.time())
        assert hep.errors == []
        for p in (inbound, outbound):
            assert (p.family, p.protocol, p.proto_type) == (2, 17, 1)
            assert p.capture_id == 4242
            assert p.auth_key == b"hep-secret"
            assert before - 1 <= p.sec <= after + 1 and 0 <= p.usec < 1_000_000
            assert p.order[: len(SNGREP_ORDER)] == SNGREP_ORDER
            assert p.order[-2:] == [0x0E, 0x0F]  # key, then payload last
        assert (inbound.src_ip, inbound.src_port) == ("127.0.0.1", c.local_port)
        assert (inbound.dst_ip, inbound.dst_port) == srv.addr
        assert (outbound.src_ip, outbound.src_port) == srv.addr
        assert (outbound.dst_ip, outbound.dst_port) == ("127.0.0.1", c.local_port)
        req = parse_message(inbound.payload)
        assert isinstance(req, Request) and req.method == "REGISTER"
        assert req.headers.get("Call-ID") == call_id
        # The copy is the message as it crossed the wire, byte for byte.
        resp = parse_message(outbound.payload)
        assert isinstance(resp, Response) and resp.status == 200
        assert resp.encode() == r.encode()


def test_notify_over_tcp_and_the_watchers_200_are_mirrored_as_tcp(
    server_factory: Factory,
) -> None:
    with HepCollector() as hep:
        srv = hep_server(server_factory, hep.address)
        with SipClient(srv.addr, "tcp", user="bob", domain=srv.domain) as w:
            r = w.request("SUBSCRIBE", srv.uri("alice"),
                          headers={"Event": "presence", "Expires": "600"})
            assert r.status == 200, r
            notify = w.expect_request("NOTIFY")
            sent = hep.wait_for(lambda p: p.payload.startswith(b"NOTIFY ")
                                and notify.call_id.encode() in p.payload)
            answer = hep.wait_for(lambda p: p.payload.startswith(b"SIP/2.0 200")
                                  and b"NOTIFY" in p.payload.split(b"\r\n\r\n")[0]
                                  and notify.call_id.encode() in p.payload)
        assert hep.errors == []
        assert (sent.protocol, answer.protocol) == (6, 6)
        assert sent.capture_id == 2001  # the default
        assert sent.auth_key is None  # no password, no key chunk
        assert (sent.src_ip, sent.src_port) == srv.addr
        assert (sent.dst_ip, sent.dst_port) == ("127.0.0.1", w.local_port)
        assert (answer.src_ip, answer.src_port) == ("127.0.0.1", w.local_port)
        assert (answer.dst_ip, answer.dst_port) == srv.addr
        mirrored = parse_message(sent.payload)
        assert isinstance(mirrored, Request) and mirrored.method == "NOTIFY"
        assert mirrored.body == notify.body and mirrored.body  # the PIDF went along
        assert mirrored.headers.get("Event") == "presence"


def test_sip_works_unchanged_when_the_capture_server_is_absent(server_factory: Factory) -> None:
    nobody = free_udp_port()  # nothing listens there: every copy meets ICMP port unreachable
    srv = hep_server(server_factory, f"127.0.0.1:{nobody}")
    with SipClient(srv.addr, "udp", domain=srv.domain) as c, \
            SipClient(srv.addr, "udp", user="bob", domain=srv.domain) as w:
        for i in range(20):
            assert register(c, user=f"user{i}").status == 200
        r = w.request("SUBSCRIBE", srv.uri("alice"), headers={"Event": "presence"})
        assert r.status == 200, r
        w.expect_request("NOTIFY")
        assert c.request("OPTIONS", srv.uri()).status == 200
    srv.assert_running()
    assert "Traceback" not in srv.log_text()


# --- sngrep as the capture server ---------------------------------------------------------------


def _pcap_records(data: bytes) -> tuple[int, list[bytes]]:
    """(link type, frames) of a classic little-endian pcap file (what sngrep -O writes)."""
    assert data[:4] == b"\xd4\xc3\xb2\xa1", data[:4]
    (linktype,) = struct.unpack_from("<I", data, 20)
    frames, pos = [], 24
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        frames.append(data[pos + 16 : pos + 16 + incl])
        pos += 16 + incl
    return linktype, frames


def _udp_of(frame: bytes) -> tuple[str, int, str, int, bytes]:
    """Ethernet + IPv4 + UDP: (source IP, port, destination IP, port, payload)."""
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    return src, sport, dst, dport, ip[ihl + 8 :]


@pytest.fixture(scope="session")
def sngrep() -> str:
    path = shutil.which("sngrep")
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("sngrep is not installed (apt-get install sngrep); CI must run this")
        pytest.skip("sngrep is not installed")
    return path


def test_sngrep_listening_for_hep_records_the_register_its_200_and_a_notify(
    server_factory: Factory, sngrep: str, tmp_path: Path
) -> None:
    port = free_udp_port()
    pcap = tmp_path / "hep.pcap"
    # -N -q: no interface; -F: no user config; -L: HEP listener only (no live capture at all).
    proc = subprocess.Popen([sngrep, "-N", "-q", "-F", "-L", f"udp:127.0.0.1:{port}",
                             "-O", str(pcap)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_until(pcap.exists, 10), "sngrep did not start"
        srv = hep_server(server_factory, f"127.0.0.1:{port}")
        with SipClient(srv.addr, "udp", domain=srv.domain) as c, \
                SipClient(srv.addr, "udp", user="bob", domain=srv.domain) as w:
            r = register(c, user="alice")
            assert r.status == 200, r
            assert w.request("SUBSCRIBE", srv.uri("alice"),
                             headers={"Event": "presence"}).status == 200
            notify = w.expect_request("NOTIFY")

            def recorded() -> list[tuple[str, int, str, int, bytes]]:
                return [_udp_of(f) for f in _pcap_records(pcap.read_bytes())[1]]

            def has(start: bytes, call_id: str) -> bool:
                return any(p[4].startswith(start) and call_id.encode() in p[4]
                           for p in recorded())

            assert wait_until(lambda: has(b"REGISTER ", r.call_id)
                              and has(b"SIP/2.0 200", r.call_id)
                              and has(b"NOTIFY ", notify.call_id), 10), recorded()
        linktype, _ = _pcap_records(pcap.read_bytes())
        assert linktype == 1  # frames sngrep built from HEP (a live "any" capture is SLL)
        reg = next(p for p in recorded() if p[4].startswith(b"REGISTER "))
        assert reg[:4] == ("127.0.0.1", c.local_port, *srv.addr)
        ok = next(p for p in recorded() if p[4].startswith(b"SIP/2.0 200")
                  and r.call_id.encode() in p[4])
        assert ok[:4] == (*srv.addr, "127.0.0.1", c.local_port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ipv6_listener_and_ipv6_capture_server_give_ipv6_chunks(server_factory: Factory) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.fail("no IPv6 loopback (::1) on this machine")
    with HepCollector("::1") as hep:
        port = free_port_pair()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
            v6_port = int(probe.getsockname()[1])
        listen = [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}", f"udp:[::1]:{v6_port}"]
        srv = server_factory(port=port, sections={"hep": {"address": hep.address},
                                                  "server": {"listen": listen}})
        with SipClient(("::1", v6_port), "udp", domain=srv.domain, local_host="::1") as c:
            r = register(c, user="six")
            assert r.status == 200, r
            inbound = hep.wait_for(lambda p: p.payload.startswith(b"REGISTER ")
                                   and r.call_id.encode() in p.payload)
            outbound = hep.wait_for(lambda p: p.payload.startswith(b"SIP/2.0 200")
                                    and r.call_id.encode() in p.payload)
        assert (inbound.family, inbound.protocol) == (10, 17)
        assert (inbound.src_ip, inbound.src_port) == ("::1", c.local_port)
        assert (inbound.dst_ip, inbound.dst_port) == ("::1", v6_port)
        assert (outbound.src_ip, outbound.dst_ip, outbound.dst_port) == ("::1", "::1",
                                                                         c.local_port)
        assert 0x05 in inbound.order and 0x03 not in inbound.order  # IPv6 address chunks
