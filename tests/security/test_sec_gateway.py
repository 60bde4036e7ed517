"""XMPP gateway subscription spam (issue 9 finding 7): one SIP user made the gateway send 1,200
subscription requests to 1,200 remote XMPP users in 64 s, all re-sent on every reconnection.

Real Prosody (tests/integration/prosody.py), the real presenced process, SIP over UDP, and
slixmpp clients as the remote XMPP users: each client counts the subscription requests that
reach it from the gateway's JID, which is what Prosody delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import ServerProcess, SipClient
from prosody import ProsodyServer, available
from xmpp_client import XmppUser, xmpp_user_factory

COMPONENT = "gw.jabber.test"
# The gateway asks each XMPP user once per SIP watcher, from that watcher's own JID.
MALLORY_JID = "mallory*example.com@gw.jabber.test"
GATEWAY = "gw.example.com"
DOMAIN = "example.com"
CAP = 3
SPRAYED = ("a0", "a1", "a2", "a3", "a4", "a5")  # more remote users than the cap
RESTART = ("b0", "b1")


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    assert available(), "prosody is not installed (apt-get install prosody)"
    server = ProsodyServer(tmp_path_factory.mktemp("prosody-sec"), component=COMPONENT)
    server.start()
    for user in SPRAYED + RESTART:
        server.create_user(user, "pw")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def presenced(prosody: ProsodyServer, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    srv = ServerProcess(
        tmp_path / "presenced",
        domains=(DOMAIN,),
        log_level="info",
        sections={
            "jabber": prosody.jabber_section(GATEWAY, max_contacts_per_user=CAP,
                                             allowed_domains=["jabber.test"]),
        },
    )
    await asyncio.to_thread(srv.start)
    try:
        await srv.wait_log(f"xmpp component {COMPONENT}: connected", timeout=40.0)
        yield srv
    finally:
        if srv.running:
            await asyncio.to_thread(srv.stop)
        srv.close()


@pytest.fixture
async def xmpp_users(prosody: ProsodyServer) -> AsyncIterator[Callable[[str], XmppUser]]:
    async with xmpp_user_factory(prosody) as make:  # requests stay pending: nobody approves
        yield make


def _requests_from_gateway(user: XmppUser, since: int = 0) -> int:
    return sum(
        1
        for p in user.presences[since:]
        if p["type"] == "subscribe" and p["from"].bare == MALLORY_JID
    )


def _subscribe(sip: SipClient, uri: str, expires: int = 300) -> Any:
    return sip.request(
        "SUBSCRIBE",
        uri,
        headers={"Event": "presence", "Accept": "application/pidf+xml", "Expires": str(expires)},
    )


async def test_one_sip_user_cannot_make_the_gateway_ask_more_than_the_cap(
    presenced: ServerProcess, xmpp_users: Callable[[str], XmppUser]
) -> None:
    remotes = [xmpp_users(name) for name in SPRAYED]
    for u in remotes:
        await u.connect()
    sip = SipClient(presenced.addr, "udp", user="mallory", domain=DOMAIN)
    try:
        statuses = []
        for name in SPRAYED:
            r = await asyncio.to_thread(_subscribe, sip, f"sip:{name}*jabber.test@{GATEWAY}")
            statuses.append((r.status, r.reason))
        assert [s for s, _ in statuses] == [200] * CAP + [403] * (len(SPRAYED) - CAP), statuses
        assert all("too many XMPP contacts" in reason for _, reason in statuses[CAP:])
        # Other XMPP domains never reach XMPP.
        r = await asyncio.to_thread(_subscribe, sip, f"sip:victim*elsewhere.example@{GATEWAY}")
        assert r.status == 403, r
        # Let every stanza the gateway might have sent arrive.
        await asyncio.sleep(1.5)
        asked = {u.jid: _requests_from_gateway(u) for u in remotes}
        assert sum(asked.values()) <= CAP, asked
        assert all(asked[u.jid] == 0 for u in remotes[CAP:]), asked
    finally:
        sip.close()
    presenced.assert_running()


async def test_after_prosody_restart_no_request_for_users_nobody_watches(
    prosody: ProsodyServer,
    presenced: ServerProcess,
    xmpp_users: Callable[[str], XmppUser],
) -> None:
    kept, dropped = xmpp_users(RESTART[0]), xmpp_users(RESTART[1])
    for u in (kept, dropped):
        await u.connect()
    sip = SipClient(presenced.addr, "udp", user="mallory", domain=DOMAIN)
    try:
        dialogs = {}
        for u in (kept, dropped):
            uri = f"sip:{u.jid.split('@')[0]}*jabber.test@{GATEWAY}"
            r = await asyncio.to_thread(_subscribe, sip, uri)
            assert r.status == 200, r
            dialogs[u.jid] = sip.dialog(r)
        await kept.wait(lambda p: p["type"] == "subscribe" and p["from"].bare == MALLORY_JID)
        await dropped.wait(lambda p: p["type"] == "subscribe" and p["from"].bare == MALLORY_JID)
        # The SIP user stops watching one of them: the gateway unsubscribes from her.
        d = dialogs[dropped.jid]
        r = await asyncio.to_thread(
            lambda: sip.request(
                "SUBSCRIBE", dialog=d, headers={"Event": "presence", "Expires": "0"}
            )
        )
        assert r.status == 200, r
        await asyncio.sleep(0.5)  # the gateway's unsubscribe reaches Prosody

        mark = len(presenced.log_text())
        await asyncio.to_thread(prosody.stop)
        await kept.close()
        await dropped.close()
        await asyncio.to_thread(prosody.start)
        again = {name: xmpp_users(name) for name in RESTART}
        for u in again.values():
            await u.connect()
        await presenced.wait_log(f"xmpp component {COMPONENT}: connected", timeout=40.0, after=mark)
        await asyncio.sleep(2.0)  # the paced re-announcement is done by then
        assert _requests_from_gateway(again[RESTART[1]]) == 0, again[RESTART[1]].presences
        assert _requests_from_gateway(again[RESTART[0]]) <= 1  # still pending: asked once
    finally:
        sip.close()
    presenced.assert_running()
