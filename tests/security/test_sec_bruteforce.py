"""Issue 9 findings 4 and 8 (enumeration): password guessing and user enumeration over real
sockets. After `[auth] max_failures` (default 5) wrong passwords for one user from one address,
that (address, user) pair gets 403 even with the right password, while the real user at another
address (127.0.0.2) still logs in; a source spraying many user names is refused for every user
after `4 x max_failures` failures; known and unknown users are answered alike.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any

from harness import (
    ServerProcess,
    SipClient,
    digest_authorization,
    parse_auth_params,
    parse_pidf,
    token,
)

from presenced.sip.message import Response, parse_message

PASSWORD = "correct horse battery staple"
AUTH = {"auth": {"users": {"alice": PASSWORD, "bob": "bob-secret"}}}
LOCKED = "Forbidden (too many failed authentications)"
MAX_FAILURES = 5  # the documented default of [auth] max_failures
MAX_SOURCE_FAILURES = 20  # ... of [auth] max_failures_per_source


class OtherAddress:
    """A bare UDP user agent on another loopback address (the real user, elsewhere)."""

    def __init__(self, server: tuple[str, int], host: str = "127.0.0.2") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.connect(server)
        self.host, self.port = self.sock.getsockname()[:2]
        self.cseq = 0

    def register(self, user: str, auth: str | None = None) -> Response:
        self.cseq += 1
        branch = "z9hG4bK" + token()
        lines = [
            "REGISTER sip:example.com SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@example.com>;tag={token(4)}",
            f"To: <sip:{user}@example.com>",
            f"Call-ID: {token()}@{self.host}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{user}@{self.host}:{self.port}>",
            "Expires: 600",
        ]
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
        deadline = time.monotonic() + 5
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            self.sock.send(data)  # retransmitted until answered (RFC 3261 §17.1.2.2)
            try:
                msg = parse_message(self.sock.recv(65535))
            except TimeoutError:
                continue
            if isinstance(msg, Response) and msg.status >= 200 and branch in str(msg.top_via):
                return msg
        raise AssertionError("no answer from 127.0.0.2")

    def close(self) -> None:
        self.sock.close()


def register(c: SipClient, user: str, auth: str | None = None) -> Any:
    h = {"Expires": "600"}
    if auth is not None:
        h["Authorization"] = auth
    aor = f"<sip:{user}@example.com>"
    return c.request("REGISTER", "sip:example.com", headers=h, to=aor, from_=f"{aor};tag={token(4)}")


def challenge(r: Any) -> dict[str, str]:
    assert r.status == 401, r
    return parse_auth_params(r.headers.get("WWW-Authenticate") or "")


def answer(ch: dict[str, str], user: str, password: str, nc: int = 1) -> str:
    return digest_authorization(ch, "REGISTER", "sip:example.com", user, password, nc=nc)


def test_guessing_is_refused_after_max_failures_but_not_from_another_address(
    server_factory: Any, sip_client: Any
) -> None:
    srv: ServerProcess = server_factory(sections=AUTH)
    eve = sip_client(server=srv)
    ch = challenge(register(eve, "alice"))
    for i in range(MAX_FAILURES):  # one nonce serves every guess: the throttle must count them
        r = register(eve, "alice", answer(ch, "alice", f"guess-{i}"))
        assert r.status == 401, (i, r)
    # Now even the right password from this address is refused, unchecked.
    r = register(eve, "alice", answer(ch, "alice", PASSWORD))
    assert (r.status, r.reason) == (403, LOCKED)
    r = register(eve, "alice", answer(challenge(register(eve, "alice")), "alice", PASSWORD))
    assert (r.status, r.reason) == (403, LOCKED)
    # The real alice, at another address, is not locked out.
    home = OtherAddress(srv.addr)
    try:
        r = home.register("alice")
        assert r.status == 401, r
        ch_home = parse_auth_params(r.headers.get("WWW-Authenticate") or "")
        r = home.register("alice", answer(ch_home, "alice", PASSWORD))
        assert r.status == 200, r
    finally:
        home.close()
    # Nor is another user at the attacker's address (5 failures: below the source limit).
    bob_ch = challenge(register(eve, "bob"))
    assert register(eve, "bob", answer(bob_ch, "bob", "bob-secret")).status == 200
    # Every decision was logged with its source, never with a password or a response.
    log = srv.log_text()
    assert "failed (Call-ID" in log and "source 127.0.0.1" in log and "locked out" in log
    assert PASSWORD not in log and "guess-0" not in log
    assert not re.search(r"response=", log)


def test_spraying_many_user_names_from_one_source_is_refused(
    server_factory: Any, sip_client: Any
) -> None:
    srv: ServerProcess = server_factory(sections=AUTH)
    eve = sip_client(server=srv)
    ch = challenge(register(eve, "alice"))
    for i in range(MAX_SOURCE_FAILURES):  # svcrack/svwar style: one guess per name
        name = f"user{i}"
        r = register(eve, name, answer(ch, name, "123456"))
        assert r.status == 401, (i, r)
    # The source is refused for any user, known or not, with or without credentials.
    assert (register(eve, "alice", answer(ch, "alice", PASSWORD)).status) == 403
    assert register(eve, "someone-new").status == 403
    home = OtherAddress(srv.addr)
    try:
        r = home.register("alice")
        ch_home = parse_auth_params(r.headers.get("WWW-Authenticate") or "")
        assert home.register("alice", answer(ch_home, "alice", PASSWORD)).status == 200
    finally:
        home.close()


def _shape(r: Any) -> tuple[int, str, list[str]]:
    values = [re.sub(r'nonce="[^"]*"', 'nonce=""', v) for v in r.headers.get_all("WWW-Authenticate")]
    return r.status, r.reason, values


def test_known_and_unknown_users_are_answered_alike(server_factory: Any, sip_client: Any) -> None:
    srv: ServerProcess = server_factory(sections=AUTH)
    c = sip_client(server=srv)
    # Before authentication: the same challenge for REGISTER and PUBLISH.
    for method in ("REGISTER", "PUBLISH"):
        known = c.request(method, "sip:alice@example.com" if method == "PUBLISH" else "sip:example.com",
                          to="<sip:alice@example.com>", headers={"Event": "presence"})
        unknown = c.request(method, "sip:nobody@example.com" if method == "PUBLISH" else "sip:example.com",
                            to="<sip:nobody@example.com>", headers={"Event": "presence"})
        assert _shape(known) == _shape(unknown)
    # A wrong password: the same failure for a known and an unknown user.
    ch = challenge(register(c, "alice"))
    assert _shape(register(c, "alice", answer(ch, "alice", "x"))) == _shape(
        register(c, "nobody", answer(ch, "nobody", "x"))
    )
    # An authenticated watcher subscribing to an unknown user of a served domain gets what a
    # known user who is offline gives: 200 and a closed document, not 404.
    bob = sip_client(server=srv, user="bob")
    h = {"Event": "presence", "Expires": "600", "Accept": "application/pidf+xml"}
    statuses = []
    for target in ("sip:alice@example.com", "sip:nobody@example.com"):
        r = bob.request("SUBSCRIBE", target, headers=h)
        auth = digest_authorization(challenge(r), "SUBSCRIBE", target, "bob", "bob-secret")
        r = bob.request("SUBSCRIBE", target, headers={**h, "Authorization": auth})
        note = bob.expect_request("NOTIFY")
        statuses.append((r.status, parse_pidf(note.body).basics == ["closed"]))
    assert statuses == [(200, True), (200, True)]
