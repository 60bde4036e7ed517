"""Presence authorization over real sockets with [auth] (issue 13): confirm -> pending, the
presentity's winfo lists the watcher, a rule set by `presenced rules` + SIGUSR1 -> the watcher
gets the document and winfo says approved; polite-block; block; rules survive kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from harness import (
    SipClient,
    digest_authorization,
    parse_auth_params,
    parse_pidf,
    register,
)

from presenced.sip.message import Request, Response

Factory = Callable[..., Any]
Client = Callable[..., SipClient]
ALICE = "sip:alice@example.com"
USERS = {"alice": "secret", "bob": "pw", "carol": "pw3"}
PASSWORDS = USERS


def authed(c: SipClient, method: str, uri: str, user: str,
           headers: dict[str, str | None]) -> Response:
    r = c.request(method, uri, headers=headers)
    assert r.status == 401, r
    challenge = parse_auth_params(r.headers.get("WWW-Authenticate") or "")
    auth = digest_authorization(challenge, method, uri, user, PASSWORDS[user])
    return c.request(method, uri, headers={**headers, "Authorization": auth})


def subscribe(c: SipClient, user: str, event: str = "presence") -> tuple[Response, Request]:
    r = authed(c, "SUBSCRIBE", ALICE, user, {"Event": event, "Expires": "600"})
    assert r.status == 200, r
    return r, c.expect_request("NOTIFY", timeout=5)


def state(n: Request) -> str:
    return str(n.headers.get("Subscription-State") or "").replace(" ", "")


def winfo(n: Request) -> list[tuple[str, str, str]]:
    from lxml import etree

    ns = "{urn:ietf:params:xml:ns:watcherinfo}"
    root = etree.fromstring(n.body)
    return [(w.text or "", w.get("status") or "", w.get("event") or "")
            for w in root.iter(f"{ns}watcher")]


def rules_tool(srv: Any, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "presenced", "rules", "--config",
                           str(srv.config_path), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def make(server_factory: Factory, policy: str, name: str = "privacy") -> Any:
    return server_factory(name, storage="sqlite:///presenced.db", sections={
        "auth": {"realm": "example.com", "users": USERS},
        "pa": {"default_policy": policy},
    })


def test_confirm_pending_winfo_then_a_rule_approves(server_factory: Factory,
                                                    sip_client: Client) -> None:
    srv = make(server_factory, "confirm")
    alice = sip_client(server=srv, user="alice")
    bob = sip_client(server=srv, user="bob")
    _, n = subscribe(bob, "bob")
    assert state(n).startswith("pending") and n.body == b""  # no presence while pending
    _, w = subscribe(alice, "alice", "presence.winfo")
    assert w.headers.get("Content-Type") == "application/watcherinfo+xml"
    assert winfo(w) == [("sip:bob@example.com", "pending", "subscribe")]
    # Another user may not read alice's watchers.
    carol = sip_client(server=srv, user="carol")
    r = authed(carol, "SUBSCRIBE", ALICE, "carol", {"Event": "presence.winfo"})
    assert r.status == 403, r
    # alice allows bob (the operator tool, then SIGUSR1): bob gets the document at once.
    rules_tool(srv, "set", "alice@example.com", "allow", "bob@example.com")
    os.kill(srv.pid, signal.SIGUSR1)
    n = bob.expect_request("NOTIFY", timeout=1.0)
    assert state(n).startswith("active") and parse_pidf(n.body).basics == ["closed"]
    w = alice.expect_request("NOTIFY", timeout=1.0)
    assert winfo(w) == [("sip:bob@example.com", "active", "approved")]


def test_block_and_polite_block_and_rules_survive_kill9(server_factory: Factory,
                                                        sip_client: Client) -> None:
    srv = make(server_factory, "allow", "privacy2")
    rules_tool(srv, "set", "alice@example.com", "block", "carol@example.com")
    srv.kill9()
    srv.start()
    carol = sip_client(server=srv, user="carol")
    r = authed(carol, "SUBSCRIBE", ALICE, "carol", {"Event": "presence", "Expires": "600"})
    assert r.status == 403, r  # the rule came back after kill -9
    alice = sip_client(server=srv, user="alice")
    r = register(alice, expires=600)
    assert r.status == 401, r
    challenge = parse_auth_params(r.headers.get("WWW-Authenticate") or "")
    auth = digest_authorization(challenge, "REGISTER", "sip:example.com", "alice", "secret")
    assert register(alice, expires=600, headers={"Authorization": auth}).status == 200
    bob = sip_client(server=srv, user="bob")
    _, n = subscribe(bob, "bob")
    assert state(n).startswith("active") and parse_pidf(n.body).basics == ["open"]
    # polite-block for bob: still active, but alice looks offline from now on.
    rules_tool(srv, "set", "alice@example.com", "polite-block", "bob@example.com")
    os.kill(srv.pid, signal.SIGUSR1)
    n = bob.expect_request("NOTIFY", timeout=1.0)
    assert state(n).startswith("active") and parse_pidf(n.body).basics == ["closed"]
    # block for bob: the live subscription ends with reason=rejected.
    rules_tool(srv, "set", "alice@example.com", "block", "bob@example.com")
    os.kill(srv.pid, signal.SIGUSR1)
    n = bob.expect_request("NOTIFY", timeout=1.0)
    assert state(n).startswith("terminated;reason=rejected") and n.body == b""
