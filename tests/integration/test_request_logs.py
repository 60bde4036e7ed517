"""Request logs (`[server] log_requests`, services/reqlog.py) and JSON log lines
(`[server] log_format = "json"`), read from the real server's stderr."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
from harness import ServerProcess, SipClient, free_port_pair, register, wait_until

Factory = Callable[..., ServerProcess]

PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:carol@example.com">'
    b"<tuple id='t1'><status><basic>open</basic></status></tuple></presence>"
)


def traffic(srv: ServerProcess, logged: bool = True) -> dict[str, str]:
    """A REGISTER, a PUBLISH, a SUBSCRIBE and its NOTIFY; method -> Call-ID."""
    with SipClient(srv.addr, "udp", user="carol", domain=srv.domain) as c, \
            SipClient(srv.addr, "tcp", user="dave", domain=srv.domain) as w:
        reg = register(c, user="carol")
        assert reg.status == 200, reg
        pub = c.request("PUBLISH", srv.uri("carol"), body=PIDF,
                        headers={"Event": "presence", "Expires": "600",
                                 "Content-Type": "application/pidf+xml"})
        assert pub.status == 200, pub
        sub = w.request("SUBSCRIBE", srv.uri("carol"), headers={"Event": "presence"})
        assert sub.status == 200, sub
        notify = w.expect_request("NOTIFY")
        ids = {"REGISTER": reg.call_id, "PUBLISH": pub.call_id, "SUBSCRIBE": sub.call_id,
               "NOTIFY": notify.call_id, "carol_port": str(c.local_port),
               "dave_port": str(w.local_port)}
        # The NOTIFY's line comes once our 200 to it is in.
        assert not logged or wait_until(lambda: f"NOTIFY carol@{srv.domain} 200" in srv.log_text(), 5), \
            srv.log_tail()
    return ids


def request_lines(srv: ServerProcess) -> list[str]:
    return [line for line in srv.log_text().splitlines() if " presenced.requests " in line]


def test_log_requests_writes_one_info_line_per_register_publish_subscribe_and_notify(
    server_factory: Factory,
) -> None:
    srv = server_factory(log_level="info", sections={"server": {"log_requests": True}})
    ids = traffic(srv)
    lines = request_lines(srv)
    d = srv.domain
    expected = {
        "REGISTER": f"INFO presenced.requests REGISTER carol@{d} 200 OK call-id={ids['REGISTER']}"
                    f" source=udp:127.0.0.1:{ids['carol_port']}",
        "PUBLISH": f"INFO presenced.requests PUBLISH carol@{d} 200 OK call-id={ids['PUBLISH']}"
                   f" source=udp:127.0.0.1:{ids['carol_port']} event=presence",
        "SUBSCRIBE": f"INFO presenced.requests SUBSCRIBE carol@{d} 200 OK "
                     f"call-id={ids['SUBSCRIBE']} source=tcp:127.0.0.1:{ids['dave_port']} "
                     f"event=presence watcher=dave@{d} expires=",
        "NOTIFY": f"INFO presenced.requests NOTIFY carol@{d} 200 OK call-id={ids['NOTIFY']} "
                  f"destination=tcp:127.0.0.1:{ids['dave_port']} event=presence "
                  f"watcher=dave@{d} state=active",
    }
    for method, text in expected.items():
        mine = [line for line in lines if f" {method} " in line
                and f"call-id={ids[method]}" in line]
        assert len(mine) == 1, (method, lines)
        assert text in mine[0], (text, mine[0])


def test_without_the_switch_at_info_there_are_no_request_lines(server_factory: Factory) -> None:
    srv = server_factory(log_level="info")
    traffic(srv, logged=False)
    srv.stop()  # every answer is in and every line written
    assert request_lines(srv) == []


def test_at_debug_the_request_lines_come_as_debug_lines(server_factory: Factory) -> None:
    srv = server_factory(log_level="debug")
    ids = traffic(srv)
    lines = request_lines(srv)
    register_lines = [line for line in lines if ids["REGISTER"] in line]
    assert len(register_lines) == 1 and " DEBUG presenced.requests REGISTER " in register_lines[0]


def test_json_format_gives_one_object_per_line_with_the_request_fields_as_keys(
    server_factory: Factory,
) -> None:
    srv = server_factory(log_level="info",
                         sections={"server": {"log_requests": True, "log_format": "json"}})
    ids = traffic(srv)
    records: list[dict[str, Any]] = []
    for line in srv.log_text().splitlines():
        if line.startswith("--- harness:"):
            continue
        obj = json.loads(line)  # every line the server wrote is one JSON object
        assert {"time", "level", "logger", "message"} <= obj.keys(), obj
        records.append(obj)
    reqs = [r for r in records if r["logger"] == "presenced.requests"]
    by_method = {r["method"]: r for r in reqs}
    assert by_method.keys() == {"REGISTER", "PUBLISH", "SUBSCRIBE", "NOTIFY"}, reqs
    reg = by_method["REGISTER"]
    assert reg["level"] == "INFO" and reg["status"] == 200
    assert reg["aor"] == f"carol@{srv.domain}" and reg["call_id"] == ids["REGISTER"]
    assert reg["source"] == f"udp:127.0.0.1:{ids['carol_port']}"
    sub = by_method["SUBSCRIBE"]
    assert sub["watcher"] == f"dave@{srv.domain}" and sub["event"] == "presence"
    notify = by_method["NOTIFY"]
    assert notify["destination"] == f"tcp:127.0.0.1:{ids['dave_port']}"
    assert notify["state"] == "active" and notify["call_id"] == ids["NOTIFY"]
    assert records[0]["time"].endswith("Z")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _port_free_on_both() -> int:
    for _ in range(50):
        port = free_port_pair()
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET6, kind) as s:
                    s.bind(("::1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on 127.0.0.1 and ::1")


def test_ipv6_listen_addresses_are_logged_in_brackets(server_factory: Factory) -> None:
    if not _ipv6_loopback():
        pytest.fail("no IPv6 loopback (::1) on this machine")
    port = _port_free_on_both()
    listen = [f"{t}:{h}:{port}" for h in ("127.0.0.1", "[::1]") for t in ("udp", "tcp")]
    srv = server_factory(port=port, log_level="info", sections={"server": {"listen": listen}})
    log = srv.log_text()
    assert f"listening on udp:[::1]:{port}" in log, log
    assert f"listening on tcp:[::1]:{port}" in log, log
    assert f"udp [::1]:{port} buffers" in log, log
    assert f"listening on udp:127.0.0.1:{port}" in log, log
