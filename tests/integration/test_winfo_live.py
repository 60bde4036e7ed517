"""presence.winfo and rules over real sockets: a winfo watcher gets a full document, then
partial ones as watchers come and go (RFC 3858 §4); a rule whose validity window ends in ~2 s
ends a live watcher then (RFC 4745 §7.3); ended watchers are listed after kill -9 and a
restart (offline winfo)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from harness import SipClient
from lxml import etree
from test_privacy import authed, make, rules_tool, state, subscribe

from presenced.sip.message import Request

Factory = Callable[..., Any]
Client = Callable[..., SipClient]
ALICE = "sip:alice@example.com"
NS = "{urn:ietf:params:xml:ns:watcherinfo}"


def doc(n: Request) -> tuple[int, str, list[tuple[str, str, str]]]:
    root = etree.fromstring(n.body)
    return int(root.get("version") or "-1"), root.get("state") or "", [
        (w.text or "", w.get("status") or "", w.get("event") or "")
        for w in root.iter(f"{NS}watcher")]


def test_winfo_full_then_partial_as_watchers_come_and_go(server_factory: Factory,
                                                         sip_client: Client) -> None:
    srv = server_factory("winfo_partial", storage="memory:")
    alice = sip_client(server=srv, user="alice")
    r = alice.request("SUBSCRIBE", ALICE, headers={"Event": "presence.winfo", "Expires": "600"})
    assert r.status == 200, r
    assert doc(alice.expect_request("NOTIFY", timeout=5)) == (0, "full", [])
    bob = sip_client(server=srv, user="bob")
    rb = bob.request("SUBSCRIBE", ALICE, headers={"Event": "presence", "Expires": "600"})
    assert rb.status == 200, rb
    bob.expect_request("NOTIFY", timeout=5)
    assert doc(alice.expect_request("NOTIFY", timeout=5)) == (
        1, "partial", [("sip:bob@example.com", "active", "subscribe")])
    carol = sip_client(server=srv, user="carol")
    assert carol.request("SUBSCRIBE", ALICE, headers={"Event": "presence"}).status == 200
    carol.expect_request("NOTIFY", timeout=5)
    assert doc(alice.expect_request("NOTIFY", timeout=5)) == (
        2, "partial", [("sip:carol@example.com", "active", "subscribe")])
    # bob leaves: a partial document says so, and only that.
    d = bob.dialog(rb)
    assert bob.request("SUBSCRIBE", dialog=d, headers={"Event": "presence",
                                                       "Expires": "0"}).status == 200
    assert doc(alice.expect_request("NOTIFY", timeout=5)) == (
        3, "partial", [("sip:bob@example.com", "terminated", "timeout")])
    # A refresh resynchronises: full state, carol alone.
    ra = alice.request("SUBSCRIBE", dialog=alice.dialog(r),
                       headers={"Event": "presence.winfo", "Expires": "600"})
    assert ra.status == 200, ra
    assert doc(alice.expect_request("NOTIFY", timeout=5)) == (
        4, "full", [("sip:carol@example.com", "active", "subscribe")])


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_validity_window_that_ends_ends_the_live_watcher_then(
        server_factory: Factory, sip_client: Client, tmp_path: Any) -> None:
    srv = make(server_factory, "block", "validity")
    until = int(time.time()) + 3  # whole seconds: xs:dateTime as the rules carry it
    rules = tmp_path / "rules.xml"
    rules.write_text(
        '<cp:ruleset xmlns:cp="urn:ietf:params:xml:ns:common-policy" '
        'xmlns:pr="urn:ietf:params:xml:ns:pres-rules"><cp:rule id="until-soon"><cp:conditions>'
        '<cp:identity><cp:one id="sip:bob@example.com"/></cp:identity><cp:validity>'
        f"<cp:from>{stamp(until - 3600)}</cp:from><cp:until>{stamp(until)}</cp:until>"
        "</cp:validity></cp:conditions><cp:actions><pr:sub-handling>allow</pr:sub-handling>"
        "</cp:actions></cp:rule></cp:ruleset>")
    rules_tool(srv, "set", "alice@example.com", "--file", str(rules))
    os.kill(srv.pid, signal.SIGUSR1)
    bob = sip_client(server=srv, user="bob")
    deadline = time.time() + 10
    while True:  # until the server has read the rules (SIGUSR1 is handled asynchronously)
        r = authed(bob, "SUBSCRIBE", ALICE, "bob", {"Event": "presence", "Expires": "600"})
        if r.status == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert r.status == 200, r
    assert state(bob.expect_request("NOTIFY", timeout=5)).startswith("active")
    # No refresh, no rules change: the window's end alone ends the subscription.
    n = bob.expect_request("NOTIFY", timeout=15)
    assert state(n) == "terminated;reason=rejected" and n.body == b""
    assert time.time() >= until
    # And a new SUBSCRIBE is refused now (the default is block).
    r = authed(bob, "SUBSCRIBE", ALICE, "bob", {"Event": "presence", "Expires": "600"})
    assert r.status == 403, r


def test_ended_watchers_are_listed_after_kill9_and_restart(server_factory: Factory,
                                                           sip_client: Client) -> None:
    srv = make(server_factory, "confirm", "offline_winfo")
    bob = sip_client(server=srv, user="bob")
    _, n = subscribe(bob, "bob")
    assert state(n).startswith("pending")
    # alice, offline, blocks bob: his pending subscription ends with rejected.
    rules_tool(srv, "set", "alice@example.com", "block", "bob@example.com")
    os.kill(srv.pid, signal.SIGUSR1)
    n = bob.expect_request("NOTIFY", timeout=5)
    assert state(n) == "terminated;reason=rejected"
    srv.kill9()
    srv.start()
    alice = sip_client(server=srv, user="alice")
    _, w = subscribe(alice, "alice", "presence.winfo")
    assert doc(w) == (0, "full", [("sip:bob@example.com", "terminated", "rejected")])
    # Shown once: a second winfo subscription of alice's does not list him again.
    alice2 = sip_client(server=srv, user="alice")
    _, w2 = subscribe(alice2, "alice", "presence.winfo")
    assert doc(w2) == (0, "full", [])
