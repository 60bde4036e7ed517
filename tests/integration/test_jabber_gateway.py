"""The jabber gateway end to end: SIP user agents <-> presenced <-> Prosody <-> XMPP users.

Everything is real: Prosody (tests/integration/prosody.py) with the component gw.jabber.test,
the `presenced` process (tests/integration/harness.py) with [jabber] pointing at Prosody's
component port, SIP over UDP sockets (harness.SipClient), and slixmpp clients as XMPP users.
The SIP client is blocking, so its calls run in a thread while the XMPP clients keep the loop.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import ServerProcess, SipClient, SipTimeout
from prosody import ProsodyServer, available
from xmpp_client import XmppUser, xmpp_user_factory

from presenced.pa.documents.pidf import decode_pidf
from presenced.pa.model import PresenceDoc
from presenced.sip.message import Request

pytestmark = pytest.mark.integration

COMPONENT = "gw.jabber.test"  # the XMPP side's name for presenced (XEP-0114 component)
GATEWAY = "gw.example.com"  # the SIP side's name for the XMPP world
DOMAIN = "example.com"  # the SIP domain presenced serves
ALICE_JID = f"alice*{DOMAIN}@{COMPONENT}"
ROMEO_JID = f"romeo*{DOMAIN}@{COMPONENT}"  # the SIP user romeo, as the XMPP side sees him


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    assert available(), "prosody is not installed (apt-get install prosody)"
    server = ProsodyServer(tmp_path_factory.mktemp("prosody-gw"), component=COMPONENT)
    server.start()
    for user in ("juliet", "romeo", "nurse"):
        server.create_user(user, "pw")
    try:
        yield server
    finally:
        server.stop()


def _gateway_server(prosody: ProsodyServer, root: Path,
                    extra: dict[str, dict[str, Any]] | None = None) -> ServerProcess:
    return ServerProcess(
        root,
        domains=(DOMAIN,),
        log_level="info",
        sections={
            "jabber": prosody.jabber_section(GATEWAY),
            **(extra or {}),
        },
    )


@pytest.fixture
async def presenced(prosody: ProsodyServer, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    srv = _gateway_server(prosody, tmp_path / "presenced")
    await asyncio.to_thread(srv.start)
    try:
        await srv.wait_log(f"xmpp component {COMPONENT}: connected")
        yield srv
    finally:
        if srv.running:
            await asyncio.to_thread(srv.stop)
        srv.close()


@pytest.fixture
async def xmpp_users(prosody: ProsodyServer) -> AsyncIterator[Callable[..., XmppUser]]:
    async with xmpp_user_factory(prosody) as make:
        yield make


# --- SIP helpers (blocking; called through asyncio.to_thread) ---------------------------------


def _subscribe(client: SipClient, uri: str, expires: int = 300) -> Any:
    r = client.request(
        "SUBSCRIBE",
        uri,
        headers={"Event": "presence", "Accept": "application/pidf+xml", "Expires": str(expires)},
    )
    assert r.status == 200, r
    return client.dialog(r)


def _next_doc(
    client: SipClient,
    pred: Callable[[PresenceDoc], bool],
    timeout: float = 8.0,
    seen: list[PresenceDoc] | None = None,
) -> tuple[PresenceDoc, Request]:
    """Consume NOTIFYs until one whose PIDF body satisfies `pred`; the skipped ones are
    appended to `seen`; pending ones (no body) are skipped."""
    deadline = time.monotonic() + timeout
    if seen is None:
        seen = []
    while True:
        left = deadline - time.monotonic()
        try:
            notify = client.expect_request("NOTIFY", timeout=max(0.01, left))
        except SipTimeout:
            raise AssertionError(f"no matching NOTIFY in {timeout} s; saw {seen}") from None
        if not notify.body:
            continue
        doc = decode_pidf(notify.body)
        if pred(doc):
            return doc, notify
        seen.append(doc)


def _is_closed(doc: PresenceDoc) -> bool:
    return bool(doc.basic == "closed")


def _activities(doc: PresenceDoc) -> set[str]:
    out = {a for p in doc.persons for a in p.activities}
    out.update(a for t in doc.tuples for a in t.activities)
    return out


# --- tests -----------------------------------------------------------------------------------


async def test_sip_watcher_sees_xmpp_user_open_with_show_and_french_status_rfc8048(
    presenced: ServerProcess, xmpp_users: Callable[..., XmppUser]
) -> None:
    juliet = xmpp_users("juliet")
    await juliet.connect(initial_presence=False)
    sip = SipClient(presenced.addr, "udp", user="romeo", domain=DOMAIN)
    try:
        # Before juliet approves: pending (RFC 6665 §4.2.2), no presence at all.
        dlg = await asyncio.to_thread(_subscribe, sip, f"sip:juliet*jabber.test@{GATEWAY}")
        notify = await asyncio.to_thread(sip.expect_request, "NOTIFY", 5.0)
        assert notify.headers.get("Subscription-State", "").startswith("pending")
        assert not notify.body

        # The gateway subscribed from romeo's own JID. Juliet goes available (away, in
        # French); the request is delivered to available resources only (RFC 6121 §3.1.3),
        # she approves and her server sends her current presence to romeo's JID (§3.1.5).
        juliet.send(show="away", statuses=(("Parti déjeuner", "fr"),))
        await juliet.wait(lambda p: p["type"] == "subscribe" and p["from"].bare == ROMEO_JID)
        juliet.send("subscribed", to=ROMEO_JID)

        doc, notify = await asyncio.to_thread(
            _next_doc, sip, lambda d: d.basic == "open" and "away" in _activities(d)
        )
        notes = [(n.text, n.lang) for t in doc.tuples for n in t.notes]
        assert ("Parti déjeuner", "fr") in notes
        assert b'xml:lang="fr"' in notify.body
        assert b"<rpid:away" in notify.body or b":away/>" in notify.body

        # She goes offline: closed again, no SIP action needed.
        juliet.send("unavailable")
        await asyncio.to_thread(_next_doc, sip, _is_closed)

        # The last SIP watcher leaves: the gateway unsubscribes in XMPP (RFC 6121 §3.3).
        r = await asyncio.to_thread(
            lambda: sip.request(
                "SUBSCRIBE", dialog=dlg, headers={"Event": "presence", "Expires": "0"}
            )
        )
        assert r.status == 200
        await juliet.wait(lambda p: p["type"] == "unsubscribe" and p["from"].bare == ROMEO_JID)
    finally:
        sip.close()


async def test_xmpp_user_watches_sip_user_through_register_and_unregister(
    presenced: ServerProcess, xmpp_users: Callable[..., XmppUser]
) -> None:
    romeo = xmpp_users("romeo")
    await romeo.connect()
    romeo.client.send_presence_subscription(pto=ALICE_JID, ptype="subscribe")
    # Policy: users of served domains are approved at once, then their presence follows.
    await romeo.wait(lambda p: p["from"].bare == ALICE_JID and p["type"] == "subscribed")
    await romeo.wait(lambda p: p["from"].bare == ALICE_JID and p["type"] == "unavailable")

    alice = SipClient(presenced.addr, "udp", user="alice", domain=DOMAIN)
    try:
        mark = len(romeo.presences)
        r = await asyncio.to_thread(
            lambda: alice.request(
                "REGISTER", f"sip:{DOMAIN}", to=f"<sip:alice@{DOMAIN}>", headers={"Expires": "60"}
            )
        )
        assert r.status == 200
        pres = await romeo.wait(
            lambda p: (
                romeo.presences.index(p) >= mark
                and p["from"].bare == ALICE_JID
                and p["type"] == "available"
            )
        )
        assert pres["type"] == "available"

        mark = len(romeo.presences)
        r = await asyncio.to_thread(
            lambda: alice.request(
                "REGISTER", f"sip:{DOMAIN}", to=f"<sip:alice@{DOMAIN}>", headers={"Expires": "0"}
            )
        )
        assert r.status == 200
        await romeo.wait(
            lambda p: (
                romeo.presences.index(p) >= mark
                and p["from"].bare == ALICE_JID
                and p["type"] == "unavailable"
            )
        )
    finally:
        alice.close()

    # Subscriptions to users of domains presenced does not serve are refused.
    stranger = f"bob*elsewhere.org@{COMPONENT}"
    romeo.client.send_presence_subscription(pto=stranger, ptype="subscribe")
    await romeo.wait(lambda p: p["from"].bare == stranger and p["type"] == "unsubscribed")
    presenced.assert_running()


async def test_xmpp_garbage_and_presence_flood_do_not_harm_the_sip_side(
    presenced: ServerProcess, xmpp_users: Callable[..., XmppUser]
) -> None:
    romeo = xmpp_users("romeo", auto_authorize=True)
    await romeo.connect()
    sip = SipClient(presenced.addr, "udp", user="benvolio", domain=DOMAIN)
    try:
        # A SIP address on the gateway domain that names no XMPP user is refused (404), as is
        # one that could only be folded onto another user's JID (RFC 3261 §19.1.4).
        for uri in (f"sip:no-separator@{GATEWAY}", f"sip:Romeo*jabber.test@{GATEWAY}"):
            r = await asyncio.to_thread(
                sip.request, "SUBSCRIBE", uri,
                headers={"Event": "presence", "Accept": "application/pidf+xml"},
            )
            assert r.status == 404, r

        # Garbage from XMPP: subscriptions to the bare component and to JIDs that name no SIP
        # user are refused; directed presence to the component from strangers is dropped.
        for target in (COMPONENT, f"nobody@{COMPONENT}"):
            romeo.client.send_presence_subscription(pto=target, ptype="subscribe")

            def refused(p: Any, t: str = target) -> bool:
                return bool(p["from"].bare == t and p["type"] == "unsubscribed")

            await romeo.wait(refused)
        for i in range(100):
            romeo.send(to=COMPONENT, show="bogus", statuses=((f"junk{i}", "en"),))
            romeo.send(to=ALICE_JID, show="dnd", statuses=((f"junk{i}", "en"),))

        # A flood from a watched XMPP user ends in her last state; NOTIFYs coalesce.
        await asyncio.to_thread(_subscribe, sip, f"sip:romeo*jabber.test@{GATEWAY}")
        await asyncio.to_thread(_next_doc, sip, lambda d: d.basic == "open")
        for i in range(200):
            romeo.send(show="xa", statuses=((f"n{i}", "en"),))
        last = ("n199", "en")
        skipped: list[PresenceDoc] = []
        doc, _ = await asyncio.to_thread(
            _next_doc,
            sip,
            lambda d: last in [(n.text, n.lang) for t in d.tuples for n in t.notes],
            8.0,
            skipped,
        )
        assert "away" in _activities(doc)  # xa has no RPID value of its own: away
        # 200 changes, far fewer NOTIFYs (3 on a quiet machine): the gateway flushes its dirty
        # set once per loop turn and the agent keeps one NOTIFY outstanding per dialog.
        assert len(skipped) < 100
        r = await asyncio.to_thread(lambda: sip.request("OPTIONS", f"sip:{DOMAIN}"))
        assert r.status == 200
    finally:
        sip.close()
    presenced.assert_running()
    assert "ERROR presenced.jabber" not in presenced.log_text()


async def test_prosody_restart_closes_then_presence_flows_again_without_sip_action(
    prosody: ProsodyServer, presenced: ServerProcess, xmpp_users: Callable[..., XmppUser]
) -> None:
    nurse = xmpp_users("nurse", auto_authorize=True)
    await nurse.connect()
    sip = SipClient(presenced.addr, "udp", user="romeo", domain=DOMAIN)
    try:
        await asyncio.to_thread(_subscribe, sip, f"sip:nurse*jabber.test@{GATEWAY}")
        await asyncio.to_thread(_next_doc, sip, lambda d: d.basic == "open")

        mark = len(presenced.log_text())
        await asyncio.to_thread(prosody.stop)
        await asyncio.to_thread(_next_doc, sip, _is_closed)  # the documented state while down
        await nurse.close()
        await asyncio.to_thread(prosody.start)
        # The nurse is back at once, most likely before the component's backoff ends: her
        # broadcast cannot reach the gateway then, only its re-subscribe and probe on
        # reconnection can bring her presence back.
        again = xmpp_users("nurse", auto_authorize=True)
        await again.connect(initial_presence=False)
        again.send(show="dnd", statuses=(("Mit der Amme", "de"),))
        doc, _ = await asyncio.to_thread(
            _next_doc, sip, lambda d: d.basic == "open" and "busy" in _activities(d), 15.0
        )
        assert ("Mit der Amme", "de") in [(n.text, n.lang) for t in doc.tuples for n in t.notes]
        await presenced.wait_log(f"xmpp component {COMPONENT}: connected", after=mark)
    finally:
        sip.close()


async def _approved_watch(sip: SipClient, xmpp: XmppUser, uri: str) -> Any:
    """SUBSCRIBE `uri` (as romeo), have the XMPP user approve him, wait for her presence."""
    dlg = await asyncio.to_thread(_subscribe, sip, uri)
    notify = await asyncio.to_thread(sip.expect_request, "NOTIFY", 5.0)
    assert str(notify.headers.get("Subscription-State")).startswith("pending")
    xmpp.send()  # available
    await xmpp.wait(lambda p: p["type"] == "subscribe" and p["from"].bare == ROMEO_JID)
    xmpp.send("subscribed", to=ROMEO_JID)
    await asyncio.to_thread(_next_doc, sip, lambda d: d.basic == "open")
    return dlg


async def test_unavailable_status_text_reaches_sip_watchers_as_a_note(
    presenced: ServerProcess, xmpp_users: Callable[..., XmppUser]
) -> None:
    """RFC 8048 §4 / docs/jabber.md: `unavailable` with <status>bye</status> closes the tuple
    and the text stays on it as a note; coming back online drops it."""
    juliet = xmpp_users("juliet")
    await juliet.connect(initial_presence=False)
    sip = SipClient(presenced.addr, "udp", user="romeo", domain=DOMAIN)
    try:
        await _approved_watch(sip, juliet, f"sip:juliet*jabber.test@{GATEWAY}")
        juliet.send("unavailable", statuses=(("bye", "en"),))

        def farewell(d: PresenceDoc) -> bool:
            return _is_closed(d) and any(n.text == "bye" for t in d.tuples for n in t.notes)

        doc, notify = await asyncio.to_thread(_next_doc, sip, farewell)
        notes = [(n.text, n.lang) for t in doc.tuples for n in t.notes]
        assert notes == [("bye", "en")], notify.body
        juliet.send()
        doc, _ = await asyncio.to_thread(_next_doc, sip, lambda d: d.basic == "open")
        assert "bye" not in [n.text for t in doc.tuples for n in t.notes]
    finally:
        sip.close()


async def test_routing_script_sends_a_served_domain_address_to_the_gateway(
    prosody: ProsodyServer, xmpp_users: Callable[..., XmppUser], tmp_path: Path
) -> None:
    """An operator's script routes `sip:viola*jabber.test@example.com` (a served SIP domain,
    not the gateway domain) to "jabber": the JID comes from the user part's separator form."""
    script = tmp_path / "route.py"
    script.write_text(
        "def route(request):\n"
        "    if request.ruri.user and '*' in request.ruri.user:\n"
        "        return handle_subscription(request, 'jabber')\n"
        "    return None\n"
    )
    srv = _gateway_server(prosody, tmp_path / "presenced", {"routing": {"script": str(script)}})
    await asyncio.to_thread(srv.start)
    prosody.create_user("viola", "pw")  # a user the gateway never asked before
    viola = xmpp_users("viola")
    await viola.connect(initial_presence=False)
    sip = SipClient(srv.addr, "udp", user="romeo", domain=DOMAIN)
    try:
        await srv.wait_log(f"xmpp component {COMPONENT}: connected")
        await _approved_watch(sip, viola, f"sip:viola*jabber.test@{DOMAIN}")
        assert "is no XMPP address" not in srv.log_text()
    finally:
        sip.close()
        if srv.running:
            await asyncio.to_thread(srv.stop)
        srv.close()
