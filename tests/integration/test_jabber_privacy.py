"""The jabber gateway obeys presence rules (issue 13), both ways, over a real Prosody.

XMPP -> SIP: an XMPP user's roster request to ``alice*example.com@gw.jabber.test`` is a
watcher of alice like any other, named ``xmpp:user@jabber.test``: decided by her rules and
`[pa] default_policy` (confirm: no ``subscribed``, listed pending in her presence.winfo; a rule
set with `presenced rules` + SIGUSR1 then approves it at once; polite-block: ``subscribed`` but
always unavailable; block: ``unsubscribed``, also for a live subscriber).

SIP -> XMPP: each SIP watcher is its own JID, which the XMPP user approves herself: approving
romeo does not let benvolio see her; refusing benvolio ends his dialog ``rejected``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import ServerProcess, SipClient, SipTimeout, register
from prosody import ProsodyServer, available
from xmpp_client import XmppUser, xmpp_user_factory

from presenced.pa.documents.pidf import decode_pidf
from presenced.sip.message import Request

pytestmark = pytest.mark.integration

COMPONENT = "gw.jabber.test"
GATEWAY = "gw.example.com"
DOMAIN = "example.com"
ALICE_JID = f"alice*{DOMAIN}@{COMPONENT}"
ROMEO_JID = f"romeo*{DOMAIN}@{COMPONENT}"
BENVOLIO_JID = f"benvolio*{DOMAIN}@{COMPONENT}"
XMPP_USERS = ("tybalt", "mercutio", "paris", "rosaline")


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    assert available(), "prosody is not installed (apt-get install prosody)"
    server = ProsodyServer(tmp_path_factory.mktemp("prosody-privacy"), component=COMPONENT)
    server.start()
    for user in XMPP_USERS:
        server.create_user(user, "pw")
    try:
        yield server
    finally:
        server.stop()


async def _presenced(prosody: ProsodyServer, root: Path, policy: str) -> ServerProcess:
    srv = ServerProcess(
        root, domains=(DOMAIN,), log_level="info", storage="sqlite:///presenced.db",
        sections={
            "jabber": prosody.jabber_section(GATEWAY),
            "pa": {"default_policy": policy},
        })
    await asyncio.to_thread(srv.start)
    await srv.wait_log(f"xmpp component {COMPONENT}: connected")
    return srv


@pytest.fixture
async def servers(prosody: ProsodyServer, tmp_path: Path
                  ) -> AsyncIterator[Callable[[str], Any]]:
    started: list[ServerProcess] = []

    async def make(policy: str) -> ServerProcess:
        srv = await _presenced(prosody, tmp_path / f"presenced-{len(started)}", policy)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        if srv.running:
            await asyncio.to_thread(srv.stop)
        srv.close()


@pytest.fixture
async def xmpp_users(prosody: ProsodyServer) -> AsyncIterator[Callable[..., XmppUser]]:
    async with xmpp_user_factory(prosody) as make:  # users answer nothing by themselves
        yield make


def _rules(srv: ServerProcess, *args: str) -> None:
    """`presenced rules ...` against the server's storage, then SIGUSR1 (docs/presence.md)."""
    done = subprocess.run([sys.executable, "-m", "presenced", "rules", "--config",
                           str(srv.config_path), *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert srv.pid is not None
    os.kill(srv.pid, signal.SIGUSR1)


def _winfo_subscribe(alice: SipClient) -> Request:
    r = alice.request("SUBSCRIBE", f"sip:alice@{DOMAIN}", headers={
        "Event": "presence.winfo", "Accept": "application/watcherinfo+xml", "Expires": "600"})
    assert r.status == 200, r
    return alice.expect_request("NOTIFY", timeout=5)


def _watchers(n: Request) -> list[tuple[str, str, str]]:
    from lxml import etree

    ns = "{urn:ietf:params:xml:ns:watcherinfo}"
    root = etree.fromstring(n.body)
    return [(w.text or "", w.get("status") or "", w.get("event") or "")
            for w in root.iter(f"{ns}watcher")]


def _next_winfo(alice: SipClient, pred: Callable[[list[tuple[str, str, str]]], bool]
                ) -> list[tuple[str, str, str]]:
    seen = []
    for _ in range(10):
        w = _watchers(alice.expect_request("NOTIFY", timeout=5))
        if pred(w):
            return w
        seen.append(w)
    raise AssertionError(f"no matching winfo document: {seen}")


def _from_alice(kind: str) -> Callable[[Any], bool]:
    return lambda p: p["from"].bare == ALICE_JID and p["type"] == kind


async def test_confirm_keeps_xmpp_watcher_pending_in_winfo_until_a_rule_allows_it(
    servers: Callable[[str], Any], xmpp_users: Callable[..., XmppUser]
) -> None:
    srv = await servers("confirm")
    tybalt = xmpp_users("tybalt")
    await tybalt.connect()
    alice = SipClient(srv.addr, "udp", user="alice", domain=DOMAIN)
    try:
        assert (await asyncio.to_thread(register, alice, expires=600)).status == 200
        first = await asyncio.to_thread(_winfo_subscribe, alice)
        assert _watchers(first) == []
        tybalt.client.send_presence_subscription(pto=ALICE_JID, ptype="subscribe")
        # Pending: listed in alice's watcher information (RFC 3857), nothing reaches tybalt.
        w = await asyncio.to_thread(_next_winfo, alice, bool)
        assert w == [("xmpp:tybalt@jabber.test", "pending", "subscribe")]
        await asyncio.sleep(0.5)
        assert not [p for p in tybalt.presences if p["from"].bare == ALICE_JID]

        # alice allows tybalt (`presenced rules` + SIGUSR1): subscribed and her presence.
        await asyncio.to_thread(_rules, srv, "set", "alice@example.com", "allow",
                                "xmpp:tybalt@jabber.test")
        await tybalt.wait(_from_alice("subscribed"))
        await tybalt.wait(_from_alice("available"))
        w = await asyncio.to_thread(_next_winfo, alice, lambda w: w and w[0][1] == "active")
        assert w == [("xmpp:tybalt@jabber.test", "active", "approved")]

        # A block for the whole XMPP domain revokes the live subscription at once.
        await asyncio.to_thread(_rules, srv, "set", "alice@example.com", "block", "*@jabber.test")
        await tybalt.wait(_from_alice("unsubscribed"))
        w = await asyncio.to_thread(_next_winfo, alice, lambda w: not w or w[0][1] != "active")
        assert w == [("xmpp:tybalt@jabber.test", "terminated", "rejected")]
    finally:
        alice.close()
    srv.assert_running()


async def test_polite_block_is_subscribed_but_always_unavailable_and_block_is_refused(
    servers: Callable[[str], Any], xmpp_users: Callable[..., XmppUser]
) -> None:
    srv = await servers("allow")
    await asyncio.to_thread(_rules, srv, "set", "alice@example.com", "polite-block",
                            "xmpp:mercutio@jabber.test")
    mercutio, paris = xmpp_users("mercutio"), xmpp_users("paris")
    await mercutio.connect()
    await paris.connect()
    alice = SipClient(srv.addr, "udp", user="alice", domain=DOMAIN)
    try:
        assert (await asyncio.to_thread(register, alice, expires=600)).status == 200
        mercutio.client.send_presence_subscription(pto=ALICE_JID, ptype="subscribe")
        await mercutio.wait(_from_alice("subscribed"))
        await mercutio.wait(_from_alice("unavailable"))
        # paris, whom no rule names, gets the default (allow): alice is online.
        paris.client.send_presence_subscription(pto=ALICE_JID, ptype="subscribe")
        await paris.wait(_from_alice("subscribed"))
        await paris.wait(_from_alice("available"))
        # mercutio never sees her online, whatever she does (RFC 5025 §3.2.1).
        await asyncio.sleep(0.5)
        assert not [p for p in mercutio.presences if _from_alice("available")(p)]

        # block for paris: refused from now on, a new request too.
        await asyncio.to_thread(_rules, srv, "set", "alice@example.com", "block",
                                "xmpp:paris@jabber.test")
        await paris.wait(_from_alice("unsubscribed"))
        mark = len(paris.presences)
        paris.client.send_presence_subscription(pto=ALICE_JID, ptype="subscribe")
        await paris.wait(lambda p: p in paris.presences[mark:] and _from_alice("unsubscribed")(p))
    finally:
        alice.close()
    srv.assert_running()


def _pending_subscribe(sip: SipClient, uri: str) -> Any:
    r = sip.request("SUBSCRIBE", uri, headers={
        "Event": "presence", "Accept": "application/pidf+xml", "Expires": "300"})
    assert r.status == 200, r
    n = sip.expect_request("NOTIFY", timeout=5)
    assert str(n.headers.get("Subscription-State")).startswith("pending") and not n.body
    return sip.dialog(r)


async def test_xmpp_user_approving_one_sip_watcher_does_not_let_another_see_her(
    servers: Callable[[str], Any], xmpp_users: Callable[..., XmppUser]
) -> None:
    srv = await servers("allow")
    rosaline = xmpp_users("rosaline")
    await rosaline.connect(initial_presence=False)
    rosaline.send(show="away", statuses=(("Im Garten", "de"),))
    romeo = SipClient(srv.addr, "udp", user="romeo", domain=DOMAIN)
    benvolio = SipClient(srv.addr, "udp", user="benvolio", domain=DOMAIN)
    uri = f"sip:rosaline*jabber.test@{GATEWAY}"
    try:
        await asyncio.to_thread(_pending_subscribe, romeo, uri)
        await asyncio.to_thread(_pending_subscribe, benvolio, uri)
        # One request per SIP watcher, each from its own JID: she sees who asks.
        await rosaline.wait(lambda p: p["type"] == "subscribe" and p["from"].bare == ROMEO_JID)
        await rosaline.wait(lambda p: p["type"] == "subscribe" and p["from"].bare == BENVOLIO_JID)
        rosaline.send("subscribed", to=ROMEO_JID)  # romeo only

        n = await asyncio.to_thread(romeo.expect_request, "NOTIFY", 5.0)
        while not n.body or decode_pidf(n.body).basic != "open":
            n = await asyncio.to_thread(romeo.expect_request, "NOTIFY", 5.0)
        assert str(n.headers.get("Subscription-State")).startswith("active")
        assert b"Im Garten" in n.body
        # benvolio: still pending, never a document of hers.
        with pytest.raises(SipTimeout):
            await asyncio.to_thread(benvolio.expect_request, "NOTIFY", 1.0)

        # She refuses benvolio: his dialog ends rejected (RFC 6665 §4.1.3), romeo's stays.
        rosaline.send("unsubscribed", to=BENVOLIO_JID)
        n = await asyncio.to_thread(benvolio.expect_request, "NOTIFY", 5.0)
        assert str(n.headers.get("Subscription-State")).replace(" ", "").startswith(
            "terminated;reason=rejected"), n
        assert not n.body
        rosaline.send(show="dnd")
        n = await asyncio.to_thread(romeo.expect_request, "NOTIFY", 5.0)
        assert b"busy" in n.body
    finally:
        romeo.close()
        benvolio.close()
    srv.assert_running()
