"""The jabber gateway's admission of SIP watchers (issue 9 finding 7): faithful addresses,
allowed XMPP domains, contact caps per watcher and in total, and the subscribe rate; and what
it keeps of an XMPP user's presence (a farewell text against a late probe answer).

Built on the real pieces (presence agent and service, memory storage, an XMPP component that is
simply not connected); `check` is called with parsed SIP requests and a fake clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from presenced.jabber.addressing import Addressing
from presenced.jabber.component import PresenceChanged, XmppComponent
from presenced.jabber.mapping import XmppPresence
from presenced.pa.subscription import Notifier, PaPolicy
from presenced.services.jabber import JabberGateway, _Remote
from presenced.services.notifier import NotifierService
from presenced.sip.endpoint import Endpoint, EndpointConfig
from presenced.sip.message import Request, parse_message
from presenced.storage.memory import MemoryStorage
from presenced.transport.driver import Driver

GW = "gw.example.com"
COMP = "gw.jabber.test"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _subscribe(uri: str, expires: int = 300) -> Request:
    text = (
        f"SUBSCRIBE {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKadm\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:mallory@example.com>;tag=m1\r\n"
        f"To: <{uri}>\r\n"
        "Call-ID: adm@127.0.0.1\r\n"
        "CSeq: 1 SUBSCRIBE\r\n"
        "Event: presence\r\n"
        f"Expires: {expires}\r\n"
        "Contact: <sip:mallory@127.0.0.1:5070>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def _presentity(user: str) -> str:
    return f"{user}@{GW}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _gateway(clock: Clock, **kw: Any) -> JabberGateway:
    endpoint = Endpoint(EndpointConfig(domains=frozenset({"example.com", GW})), lambda: "t")
    agent = Notifier(PaPolicy(), lambda: "t", lambda p, t: f"sip:{p}")
    presence = NotifierService(agent, Driver(endpoint), MemoryStorage())
    addressing = Addressing(GW, COMP)
    component = XmppComponent(COMP, "secret", "127.0.0.1", 5347, lambda e: None)
    return JabberGateway(presence, addressing, component, ["example.com"], clock=clock, **kw)


def _watch(gw: JabberGateway, key: str, user: str) -> None:
    """What `JabberGateway.subscribe` records once the agent created the dialog."""
    jid = gw._jid_of(_presentity(user))
    assert jid is not None
    gw._owned.setdefault(key, {}).setdefault(jid, set()).add(f"dlg-{user}")
    gw._remotes.setdefault(jid, _Remote())


def _check(gw: JabberGateway, user: str, key: str = "10.0.0.1", expires: int = 300) -> Any:
    return gw.check(_subscribe(f"sip:{user}@{GW}", expires), _presentity(user), key)


async def test_unfaithful_addresses_are_refused_with_400_or_404(clock: Clock) -> None:
    gw = _gateway(clock)
    assert _check(gw, "Juliet*jabber.test").status == 404
    assert _check(gw, "no-separator").status == 404
    refusal = gw.check(
        _subscribe(f"sip:juliet%00*jabber.test@{GW}"), _presentity("juliet\x00*jabber.test"), "k"
    )
    assert refusal is not None and refusal.status == 400
    assert _check(gw, "juliet*jabber.test") is None


async def test_other_xmpp_domains_are_refused_when_allowed_domains_is_set(clock: Clock) -> None:
    gw = _gateway(clock, allowed_domains=["jabber.test"])
    assert _check(gw, "juliet*jabber.test") is None
    refusal = _check(gw, "juliet*elsewhere.example")
    assert refusal is not None and (refusal.status, refusal.reason) == (
        403,
        "Forbidden (XMPP domain not allowed)",
    )


async def test_per_user_cap_refuses_a_new_contact_but_not_one_already_watched(clock: Clock) -> None:
    gw = _gateway(clock, max_contacts_per_user=2)
    _watch(gw, "k", "u0*jabber.test")
    _watch(gw, "k", "u1*jabber.test")
    # The dialogs named above do not exist in the agent: the cap check prunes them.
    assert _check(gw, "u2*jabber.test", "k") is None
    gw._owned["k"] = {"u0@jabber.test": {"x"}, "u1@jabber.test": {"y"}}
    gw.presence.notifier.dialogs.update({"x": object(), "y": object()})  # type: ignore[dict-item]
    refusal = _check(gw, "u2*jabber.test", "k")
    assert refusal is not None and refusal.status == 403
    assert refusal.reason == "Forbidden (too many XMPP contacts)"
    assert _check(gw, "u1*jabber.test", "k") is None  # a second dialog to a contact it has
    assert _check(gw, "u2*jabber.test", "other") is None  # another watcher has its own cap


async def test_global_cap_answers_503_with_retry_after(clock: Clock) -> None:
    gw = _gateway(clock, max_contacts=2)
    _watch(gw, "a", "u0*jabber.test")
    _watch(gw, "b", "u1*jabber.test")
    refusal = _check(gw, "u2*jabber.test", "c")
    assert refusal is not None and refusal.status == 503 and refusal.retry_after == 60
    assert _check(gw, "u0*jabber.test", "c") is None  # already watched: nothing new on XMPP


async def test_subscribe_rate_per_watcher_refills_over_a_minute(clock: Clock) -> None:
    gw = _gateway(clock, subscribe_rate=3)
    for i in range(3):
        assert _check(gw, f"u{i}*jabber.test", "k") is None
    refusal = _check(gw, "u3*jabber.test", "k")
    assert refusal is not None and refusal.status == 503
    assert refusal.retry_after == 20  # one token every 60/3 s
    assert _check(gw, "u3*jabber.test", "someone-else") is None
    clock.now += 20
    assert _check(gw, "u3*jabber.test", "k") is None


async def test_fetches_cost_no_token_and_count_no_contact(clock: Clock) -> None:
    gw = _gateway(clock, subscribe_rate=1, max_contacts_per_user=1)
    for i in range(5):
        assert _check(gw, f"u{i}*jabber.test", "k", expires=0) is None
    assert _check(gw, "u9*jabber.test", "k") is None


async def test_a_late_probe_answer_without_status_keeps_the_farewell_text(clock: Clock) -> None:
    """She goes offline with "bye"; the answer to the gateway's probe, sent by her server
    before or after, is an unavailable from her bare JID without text (RFC 6121 §4.3.2). SIP
    watchers keep seeing "bye" on the closed tuple, whatever order the two arrive in."""
    gw = _gateway(clock)
    remote = gw._remotes.setdefault("juliet@jabber.test", _Remote())
    watcher = f"romeo*example.com@{COMP}"
    remote.watchers[watcher] = True
    gw._on_presence(PresenceChanged("juliet@jabber.test/balcony", watcher,
                                    XmppPresence(available=True)))
    assert set(remote.resources) == {"balcony"}
    gw._on_presence(PresenceChanged("juliet@jabber.test/balcony", watcher,
                                    XmppPresence(available=False, statuses=(("bye", "en"),))))
    assert not remote.resources and remote.farewell == (("bye", "en"),)
    gw._on_presence(PresenceChanged("juliet@jabber.test", watcher, XmppPresence(available=False)))
    assert remote.farewell == (("bye", "en"),)
    # A bare unavailable with a text of its own is news: it replaces the farewell.
    gw._on_presence(PresenceChanged("juliet@jabber.test", watcher,
                                    XmppPresence(available=False, statuses=(("away", None),))))
    assert remote.farewell == (("away", None),)
