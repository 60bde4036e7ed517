"""The jabber gateway's XMPP component against a real Prosody and a real XMPP client.

Prosody runs from tests/integration/prosody.py (CI installs the Debian package); the client is
slixmpp's ClientXMPP logged in as juliet@jabber.test; the component is presenced's XmppComponent
connected as gw.jabber.test (XEP-0114). No part is simulated.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from prosody import ProsodyServer, available
from xmpp_client import XmppUser, statuses

from presenced.jabber.addressing import Addressing
from presenced.jabber.component import (
    Connected,
    Disconnected,
    PresenceChanged,
    Probe,
    Subscribed,
    SubscribeRequest,
    XmppComponent,
    XmppEvent,
)
from presenced.jabber.mapping import XmppPresence, pidf_to_xmpp
from presenced.pa.model import Note, Person, PresenceDoc, Tuple

pytestmark = pytest.mark.integration

GW = "gw.jabber.test"
ADDR = Addressing("sip-gw.example.com", GW)
ALICE = ADDR.sip_user_as_jid("sip:alice@example.com")  # alice*example.com@gw.jabber.test
BOB = ADDR.sip_user_as_jid("sip:bob@example.com")


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    assert available(), "prosody is not installed (apt-get install prosody)"
    server = ProsodyServer(tmp_path_factory.mktemp("prosody"), component=GW)
    server.start()
    server.create_user("juliet", "balcony")
    try:
        yield server
    finally:
        server.stop()


class Recorder:
    """Collects component events and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[XmppEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: XmppEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(
        self, pred: Callable[[XmppEvent], bool], timeout: float = 8.0, start: int = 0
    ) -> XmppEvent:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events[start:]:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event in {timeout} s; got {self.events!r}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass


@pytest.fixture
async def component(prosody: ProsodyServer) -> AsyncIterator[tuple[XmppComponent, Recorder]]:
    rec = Recorder()
    comp = XmppComponent(
        GW,
        prosody.component_secret,
        "127.0.0.1",
        prosody.component_port,
        rec,
        min_backoff=0.2,
        max_backoff=1.0,
    )
    await comp.start()
    try:
        await rec.wait_for(lambda e: isinstance(e, Connected))
        yield comp, rec
    finally:
        await comp.stop()


class Juliet(XmppUser):
    """juliet@jabber.test, approving every subscription request."""

    def __init__(self, prosody: ProsodyServer, resource: str = "balcony") -> None:
        super().__init__(
            prosody, "juliet", password="balcony", resource=resource, auto_authorize=True
        )

    wait_presence = XmppUser.wait

    def send_presence(
        self,
        show: str | None,
        statuses: list[tuple[str, str]],
        to: str | None = None,
        priority: str | None = None,
    ) -> None:
        self.send(to=to, show=show, statuses=statuses, priority=priority)


@pytest.fixture
async def juliet(prosody: ProsodyServer) -> AsyncIterator[Juliet]:
    j = Juliet(prosody)
    await j.connect()
    try:
        yield j
    finally:
        await j.close()


async def test_client_subscription_reaches_component_and_mapped_presence_reaches_client(
    component: tuple[XmppComponent, Recorder], juliet: Juliet
) -> None:
    comp, rec = component
    juliet.client.send_presence_subscription(pto=ALICE, ptype="subscribe")
    req = await rec.wait_for(lambda e: isinstance(e, SubscribeRequest) and e.to_bare == ALICE)
    assert req == SubscribeRequest("juliet@jabber.test", ALICE)

    # The gateway decides: approve, then send alice's presence mapped from a PIDF model
    # (RFC 8048: RPID busy -> <show>dnd</show>, note -> <status xml:lang>).
    assert comp.approve(ALICE, "juliet@jabber.test")
    doc = PresenceDoc(
        entity="pres:alice@example.com",
        tuples=(Tuple(id="t1", basic="open", priority=1.0),),
        persons=(Person(id="p1", activities=("busy",), notes=(Note("In a meeting", "en"),)),),
    )
    xp = pidf_to_xmpp(doc)
    assert comp.send_presence(ALICE, "juliet@jabber.test", xp)

    pres = await juliet.wait_presence(
        lambda p: p["from"].bare == ALICE and p["type"] not in ("subscribed", "unavailable")
    )
    assert pres["show"] == "dnd"
    assert statuses(pres) == [("In a meeting", "en")]
    assert pres["priority"] == 127
    # Prosody recorded the approval: its roster push gave juliet subscription "to" alice.
    assert juliet.client.client_roster[ALICE]["subscription"] in ("to", "both")

    # A new session of juliet's makes Prosody probe her contacts (RFC 6121 §4.3): the probe
    # reaches the component, which must answer itself (slixmpp's roster does not).
    mark = len(rec.events)
    hall = Juliet(juliet.prosody, resource="hall")
    await hall.connect()
    try:
        probe = await rec.wait_for(lambda e: isinstance(e, Probe), start=mark)
        assert isinstance(probe, Probe)
        assert probe.to_bare == ALICE
        assert probe.from_jid.partition("/")[0] == "juliet@jabber.test"
    finally:
        await hall.close()


async def test_component_subscription_approved_then_client_presence_arrives_mapped(
    component: tuple[XmppComponent, Recorder], juliet: Juliet
) -> None:
    comp, rec = component
    assert comp.subscribe(BOB, "juliet@jabber.test")
    await rec.wait_for(lambda e: e == Subscribed("juliet@jabber.test", BOB))

    mark = len(rec.events)
    juliet.send_presence("away", [("Parti déjeuner", "fr"), ("Out for lunch", "en")], priority="5")
    ev = await rec.wait_for(
        lambda e: isinstance(e, PresenceChanged) and e.to_jid == BOB and e.presence.show == "away",
        start=mark,
    )
    assert isinstance(ev, PresenceChanged)
    assert ev.from_jid == "juliet@jabber.test/balcony"
    assert ev.presence == XmppPresence(
        available=True,
        show="away",
        statuses=(("Parti déjeuner", "fr"), ("Out for lunch", "en")),
        priority=5,
    )

    # Going offline reaches the component as unavailable presence.
    mark = len(rec.events)
    await juliet.close()
    off = await rec.wait_for(
        lambda e: isinstance(e, PresenceChanged) and e.to_jid == BOB and not e.presence.available,
        start=mark,
    )
    assert isinstance(off, PresenceChanged)
    assert off.from_jid == "juliet@jabber.test/balcony"


async def test_malformed_presence_and_failing_callback_do_not_break_the_component(
    component: tuple[XmppComponent, Recorder], juliet: Juliet
) -> None:
    comp, rec = component
    calls = 0

    def explode(event: XmppEvent) -> None:
        nonlocal calls
        calls += 1
        rec(event)
        raise RuntimeError("callback bug")

    comp.on_event = explode
    # Directed presence needs no subscription (RFC 6121 §4.6); garbage show and priority.
    for i in range(50):
        juliet.send_presence("sleeping", [(f"n{i}", "en")], to=ALICE, priority="high")
    ev = await rec.wait_for(
        lambda e: isinstance(e, PresenceChanged) and e.presence.statuses == (("n49", "en"),)
    )
    assert isinstance(ev, PresenceChanged)
    assert ev.presence == XmppPresence(True, None, (("n49", "en"),), 0)
    assert calls >= 50
    assert comp.connected
    assert not any(isinstance(e, Disconnected) for e in rec.events)


async def test_component_reconnects_after_prosody_restart_and_events_flow_again(
    prosody: ProsodyServer, component: tuple[XmppComponent, Recorder]
) -> None:
    comp, rec = component
    mark = len(rec.events)
    # Down for a while (the component backs off), then up again with the same data.
    await asyncio.to_thread(prosody.stop)
    await rec.wait_for(lambda e: isinstance(e, Disconnected), start=mark)
    assert not comp.connected
    assert not comp.send_presence(ALICE, "juliet@jabber.test", XmppPresence(True))
    await asyncio.sleep(1.5)
    await asyncio.to_thread(prosody.start)
    kinds = await _kinds_after(rec, mark, Connected)
    assert kinds == [Disconnected, Connected]
    assert comp.connected

    # A fresh client session: subscriptions survived in Prosody's storage, events flow again.
    j = Juliet(prosody, resource="garden")
    await j.connect()
    try:
        # Juliet approves (or Prosody answers for her if she already had, RFC 6121 §3.1.3).
        mark = len(rec.events)
        assert comp.subscribe(BOB, "juliet@jabber.test")
        await rec.wait_for(lambda e: e == Subscribed("juliet@jabber.test", BOB), start=mark)
        j.send_presence("dnd", [("Au jardin", "fr")])
        ev = await rec.wait_for(
            lambda e: (
                isinstance(e, PresenceChanged)
                and e.to_jid == BOB
                and e.from_jid == "juliet@jabber.test/garden"
                and e.presence.show == "dnd"
            ),
            start=mark,
        )
        assert isinstance(ev, PresenceChanged)
        assert ev.presence.statuses == (("Au jardin", "fr"),)
    finally:
        await j.close()


async def _kinds_after(rec: Recorder, mark: int, last: type) -> list[type]:
    await rec.wait_for(lambda e: isinstance(e, last), start=mark, timeout=15)
    return [type(e) for e in rec.events[mark:] if isinstance(e, (Connected, Disconnected))]
