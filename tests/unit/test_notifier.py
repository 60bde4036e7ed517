"""The presence agent's decisions (RFC 6665, RFC 3856): SUBSCRIBE in, effects out; fake clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presenced.pa.documents.pidf import decode_pidf
from presenced.pa.model import Person, PresenceDoc, Tuple
from presenced.pa.packages.presence import presentity_tuple_id
from presenced.pa.records import Subscription
from presenced.pa.subscription import (
    CSEQ_LEASE,
    Effect,
    Forget,
    Notifier,
    PaPolicy,
    Persist,
    Reply,
    SendNotify,
    WatchStarted,
    WatchStopped,
)
from presenced.sip.endpoint import Peer
from presenced.sip.headers import SubscriptionState, parse_name_addr, parse_subscription_state
from presenced.sip.message import Request, Response, parse_message

ALICE = "alice@example.com"
T0 = 1_700_000_000.0
PEER = "udp:192.0.2.20:5070"
PIDF = "application/pidf+xml"
_n = itertools.count(1)


def counter(prefix: str) -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


def contact_for(presentity: str, flow: Peer | str) -> str:
    transport = flow.transport if isinstance(flow, Peer) else flow
    return f"sip:pa@192.0.2.1:5060;transport={transport}"


def make_agent(**policy: int) -> Notifier:
    return Notifier(PaPolicy(**policy), counter("lt"), contact_for)


def subscribe_req(
    *,
    to_user: str = "alice",
    watcher: str = "bob",
    from_tag: str | None = "ft",
    to_tag: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    expires: int | None = None,
    event: str | None = "presence",
    accept: str | None = None,
    contact: str | None = "<sip:bob@192.0.2.20:5070>",
    record_route: Sequence[str] = (),
) -> Request:
    n = next(_n)
    lines = [
        f"SUBSCRIBE sip:{to_user}@example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK{n}",
        "Max-Forwards: 70",
        f"From: <sip:{watcher}@example.com>" + (f";tag={from_tag}" if from_tag else ""),
        f"To: <sip:{to_user}@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id or f'sub{n}@192.0.2.20'}",
        f"CSeq: {cseq} SUBSCRIBE",
    ]
    if event is not None:
        lines.append(f"Event: {event}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if accept is not None:
        lines.append(f"Accept: {accept}")
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines.extend(f"Record-Route: {r}" for r in record_route)
    lines.append("Content-Length: 0")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def of(effects: Sequence[Effect], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in effects if isinstance(e, kind)]


def reply(effects: Sequence[Effect]) -> Response:
    (r,) = of(effects, Reply)
    assert isinstance(r, Reply)
    return r.response


def notify(effects: Sequence[Effect]) -> SendNotify:
    (n,) = of(effects, SendNotify)
    assert isinstance(n, SendNotify)
    return n


def sub_state(n: SendNotify) -> SubscriptionState:
    return parse_subscription_state(n.request.headers.get("Subscription-State") or "")


def cseq_of(n: SendNotify) -> int:
    return n.request.cseq.seq


def basics(n: SendNotify) -> list[tuple[str, str]]:
    return [(t.id, t.basic) for t in decode_pidf(n.request.body).tuples]


class Dialog:
    """The watcher's side of one subscription, enough to send in-dialog SUBSCRIBEs."""

    def __init__(self, req: Request, effects: Sequence[Effect]) -> None:
        ok = reply(effects)
        assert ok.status == 200
        self.call_id = req.call_id
        self.from_tag = req.from_.tag
        self.to_tag = ok.to.tag
        self.cseq = req.cseq.seq
        self.sub_id = notify(effects).sub_id

    def refresh(self, **kw: object) -> Request:
        self.cseq += 1
        return subscribe_req(
            call_id=self.call_id,
            from_tag=self.from_tag,
            to_tag=self.to_tag,
            cseq=self.cseq,
            **kw,  # type: ignore[arg-type]
        )


def start(agent: Notifier, now: float = T0, **kw: object) -> tuple[Dialog, list[Effect]]:
    req = subscribe_req(**kw)  # type: ignore[arg-type]
    effects = agent.subscribe(req, ALICE, "registrar", PEER, now)
    return Dialog(req, effects), effects


def registrar_open(contact: str = "sip:alice@192.0.2.30") -> PresenceDoc:
    return PresenceDoc(
        f"pres:{ALICE}", (Tuple(presentity_tuple_id(ALICE), "open", contact=contact),)
    )


# --- initial SUBSCRIBE (RFC 6665 §4.1.2.1, §4.2.1; RFC 3856 §6) --------------------------------


def test_initial_subscribe_persists_then_replies_then_starts_watch_then_notifies() -> None:
    agent = make_agent()
    req = subscribe_req(expires=600)
    effects = agent.subscribe(req, ALICE, "registrar", PEER, T0)
    assert [type(e) for e in effects] == [Persist, Reply, WatchStarted, SendNotify]
    persisted = effects[0]
    assert isinstance(persisted, Persist)
    assert persisted.sub.expires_at == T0 + 600
    assert effects[2] == WatchStarted(ALICE, "registrar")


def test_200_carries_to_tag_expires_and_contact() -> None:
    # RFC 6665 §4.2.1.1: the 200 carries Expires; RFC 3261 §12.1.1: To-tag and Contact.
    agent = make_agent()
    ok = reply(agent.subscribe(subscribe_req(expires=600), ALICE, "registrar", PEER, T0))
    assert ok.status == 200
    assert ok.to.tag == "lt1"
    assert ok.expires == 600
    assert [str(c.uri) for c in ok.contacts] == [contact_for(ALICE, "udp")]


def test_initial_notify_headers_follow_the_dialog() -> None:
    # RFC 6665 §4.2.1 (immediate NOTIFY), §8.2.3 Subscription-State, RFC 3261 §12.2.1.1 tags.
    agent = make_agent()
    req = subscribe_req(expires=600, call_id="c1@h")
    n = notify(agent.subscribe(req, ALICE, "registrar", PEER, T0))
    r = n.request
    assert r.method == "NOTIFY"
    assert r.uri == "sip:bob@192.0.2.20:5070"
    assert n.target == "sip:bob@192.0.2.20:5070"
    assert str(n.dest) == PEER
    assert n.route is None
    assert str(r.from_.uri) == "sip:alice@example.com" and r.from_.tag == "lt1"
    assert str(r.to.uri) == "sip:bob@example.com" and r.to.tag == "ft"
    assert r.call_id == "c1@h"
    assert (r.cseq.seq, r.cseq.method) == (1, "NOTIFY")
    assert r.headers.get("Event") == "presence"
    st = sub_state(n)
    assert (st.state, st.expires) == ("active", 600)
    assert r.content_type == PIDF
    assert [str(c.uri) for c in r.contacts] == [contact_for(ALICE, "udp")]
    # It is well-formed on the wire (once the transaction layer adds a Via).
    r.headers.insert_first("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx")
    again = parse_message(r.encode())
    assert isinstance(again, Request) and again.body == r.body


def test_notify_event_echoes_the_subscribe_id() -> None:
    # RFC 6665 §8.2.1: the NOTIFY's Event carries the SUBSCRIBE's id parameter.
    agent = make_agent()
    n = notify(agent.subscribe(subscribe_req(event="presence;id=42"), ALICE, "registrar", PEER, T0))
    ev = n.request.event
    assert ev is not None and (ev.package, ev.id) == ("presence", "42")


def test_unknown_presentity_gets_a_closed_pidf_with_the_stable_tuple_id() -> None:
    # docs/presence.md "No source, closed"; RFC 3863 §4.1.2 stable tuple id.
    agent = make_agent()
    n = notify(agent.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0))
    doc = decode_pidf(n.request.body)
    assert doc.entity == f"pres:{ALICE}"
    assert [(t.id, t.basic) for t in doc.tuples] == [(presentity_tuple_id(ALICE), "closed")]


@pytest.mark.parametrize(
    ("accept", "ctype"),
    [
        (None, "application/pidf+xml"),
        ("application/xpidf+xml", "application/xpidf+xml"),
        ("text/lpidf, application/pidf+xml;q=0.5", "text/lpidf"),
        ("application/cpim-pidf+xml", "application/cpim-pidf+xml"),
    ],
)
def test_notify_content_type_follows_accept(accept: str | None, ctype: str) -> None:
    # RFC 3856 §6.6 / RFC 3261 §20.1
    agent = make_agent()
    effects = agent.subscribe(subscribe_req(accept=accept), ALICE, "registrar", PEER, T0)
    n = notify(effects)
    assert n.request.content_type == ctype
    persisted = of(effects, Persist)[0]
    assert persisted.sub.content_type == ctype


def test_missing_expires_grants_the_default() -> None:
    agent = make_agent(default_expires=1800)
    effects = agent.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    assert reply(effects).expires == 1800
    assert sub_state(notify(effects)).expires == 1800


def test_too_brief_expires_is_423_with_min_expires() -> None:
    # RFC 6665 §4.2.1.1
    agent = make_agent(min_expires=60)
    effects = agent.subscribe(subscribe_req(expires=59), ALICE, "registrar", PEER, T0)
    r = reply(effects)
    assert r.status == 423
    assert r.headers.get("Min-Expires") == "60"
    assert len(effects) == 1 and not agent.dialogs


def test_expires_at_the_minimum_is_accepted() -> None:
    agent = make_agent(min_expires=60)
    assert (
        reply(agent.subscribe(subscribe_req(expires=60), ALICE, "registrar", PEER, T0)).status
        == 200
    )


def test_too_long_expires_is_capped() -> None:
    # RFC 6665 §4.2.1.1: the notifier may shorten, never lengthen.
    agent = make_agent(max_expires=7200)
    effects = agent.subscribe(subscribe_req(expires=99999), ALICE, "registrar", PEER, T0)
    assert reply(effects).expires == 7200
    assert sub_state(notify(effects)).expires == 7200
    assert agent.next_deadline() == T0 + 7200


@pytest.mark.parametrize("event", [None, "conference", "dialog.winfo"])
def test_other_or_missing_event_is_489_with_allow_events(event: str | None) -> None:
    # RFC 6665 §4.1.2.1 / §8.2.1
    agent = make_agent()
    effects = agent.subscribe(subscribe_req(event=event), ALICE, "registrar", PEER, T0)
    r = reply(effects)
    assert r.status == 489
    assert r.headers.get_list("Allow-Events") == ["presence", "dialog", "message-summary", "reg", "presence.winfo"]
    assert len(effects) == 1 and not agent.dialogs


def test_unacceptable_accept_is_406_listing_what_we_produce() -> None:
    # RFC 3261 §21.4.7 / §20.1
    agent = make_agent()
    effects = agent.subscribe(subscribe_req(accept="text/html"), ALICE, "registrar", PEER, T0)
    r = reply(effects)
    assert r.status == 406
    assert "application/pidf+xml" in r.headers.get_list("Accept")
    assert len(effects) == 1 and not agent.dialogs


@pytest.mark.parametrize(
    "kw",
    [
        {"from_tag": None},  # RFC 3261 §8.1.1.3: From MUST carry a tag
        {"contact": None},  # RFC 6665 §4.1.2.1: one Contact to target NOTIFYs at
        {"contact": "*"},
        {"contact": "<sip:a@192.0.2.20>, <sip:b@192.0.2.20>"},
    ],
)
def test_broken_dialog_creation_is_400(kw: dict[str, object]) -> None:
    agent = make_agent()
    effects = agent.subscribe(subscribe_req(**kw), ALICE, "registrar", PEER, T0)  # type: ignore[arg-type]
    assert reply(effects).status == 400
    assert len(effects) == 1 and not agent.dialogs and not agent.resources


@pytest.mark.parametrize(
    "kw",
    [
        {"event": "conference"},  # 489
        {"accept": "text/html"},  # 406
        {"expires": 1},  # 423
        {"from_tag": None},  # 400
        {"contact": "*"},  # 400
    ],
)
def test_error_answers_to_an_initial_subscribe_carry_a_to_tag(kw: dict[str, object]) -> None:
    # RFC 3261 §8.2.6.2: the UAS MUST add a To-tag when the request's To had none.
    agent = make_agent()
    r = reply(agent.subscribe(subscribe_req(**kw), ALICE, "registrar", PEER, T0))  # type: ignore[arg-type]
    assert r.status >= 400 and r.to.tag


def test_error_answer_in_a_dialog_keeps_the_one_to_tag() -> None:
    agent = make_agent()
    dlg, _ = start(agent)
    r = reply(agent.resubscribe(dlg.refresh(event="conference"), T0 + 1))
    assert r.status == 489 and r.to.tag == dlg.to_tag
    assert (r.headers.get("To") or "").count("tag=") == 1


def test_200_copies_record_route_in_order() -> None:
    # RFC 3261 §12.1.1: the 2xx that creates the dialog copies every Record-Route value, in
    # order, with all URI and header parameters.
    agent = make_agent()
    rr = ["<sip:p1.example.net;lr>;foo=bar", "<sip:p2.example.net;lr>, <sip:p3.example.net>"]
    ok = reply(agent.subscribe(subscribe_req(record_route=rr), ALICE, "registrar", PEER, T0))
    assert ok.headers.get_list("Record-Route") == [
        "<sip:p1.example.net;lr>;foo=bar",
        "<sip:p2.example.net;lr>",
        "<sip:p3.example.net>",
    ]


def test_max_subscriptions_per_watcher_is_403() -> None:
    agent = make_agent(max_subscriptions_per_watcher=2)
    for _ in range(2):
        start(agent)
    effects = agent.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    assert reply(effects).status == 403
    assert len(effects) == 1 and len(agent.dialogs) == 2
    # Without authentication the limit counts the source address: another host is not
    # affected, and neither is an authenticated user on the same host.
    other = "udp:192.0.2.21:5070"
    assert reply(agent.subscribe(subscribe_req(watcher="carol"), ALICE, "registrar", other, T0)).status == 200
    effects = agent.subscribe(subscribe_req(watcher="carol"), ALICE, "registrar", PEER, T0,
                              identity="carol@example.com")
    assert reply(effects).status == 200


def test_fetch_answers_once_and_keeps_nothing() -> None:
    # RFC 6665 §4.4.3: Expires: 0 outside a dialog polls the state; no subscription remains.
    agent = make_agent()
    effects = agent.subscribe(subscribe_req(expires=0), ALICE, "registrar", PEER, T0)
    assert [type(e) for e in effects] == [Reply, SendNotify]
    assert reply(effects).status == 200 and reply(effects).expires == 0
    n = notify(effects)
    st = sub_state(n)
    assert (st.state, st.reason) == ("terminated", "timeout")
    assert basics(n) == [(presentity_tuple_id(ALICE), "closed")]
    assert not agent.dialogs and not agent.per_watcher and agent.next_deadline() is None
    assert agent.resources == {}
    assert agent.notify_result(n.sub_id, 200, T0 + 1) == []


def test_fetch_shows_the_current_state() -> None:
    agent = make_agent()
    agent.set_part(ALICE, "registrar", registrar_open(), T0)
    n = notify(agent.subscribe(subscribe_req(expires=0), ALICE, "registrar", PEER, T0))
    assert basics(n) == [(presentity_tuple_id(ALICE), "open")]


def test_second_watcher_of_the_same_source_starts_no_watch() -> None:
    agent = make_agent()
    start(agent)
    _, effects = start(agent, watcher="carol")
    assert not of(effects, WatchStarted)
    effects = agent.subscribe(subscribe_req(watcher="dave"), ALICE, "jabber", PEER, T0)
    assert of(effects, WatchStarted) == [WatchStarted(ALICE, "jabber")]


# --- in-dialog SUBSCRIBE (RFC 6665 §4.1.2.2, §4.1.2.3) -----------------------------------------


def test_refresh_persists_replies_and_notifies_new_expiry() -> None:
    agent = make_agent()
    dlg, first = start(agent, expires=600)
    agent.notify_result(dlg.sub_id, 200, T0)
    effects = agent.resubscribe(dlg.refresh(expires=900), T0 + 100)
    assert [type(e) for e in effects] == [Persist, Reply, SendNotify]
    assert effects[0].sub.expires_at == T0 + 1000  # type: ignore[union-attr]
    ok = reply(effects)
    assert ok.status == 200 and ok.expires == 900 and ok.to.tag == dlg.to_tag
    n = notify(effects)
    assert sub_state(n).expires == 900
    assert cseq_of(n) == cseq_of(notify(first)) + 1
    assert agent.next_deadline() == T0 + 1000


def test_refresh_with_old_cseq_is_500() -> None:
    # RFC 3261 §12.2.2: a lower or equal CSeq inside a dialog is out of order.
    agent = make_agent()
    dlg, _ = start(agent, cseq=5)
    dlg.cseq = 4  # refresh() adds one: CSeq 5 again
    effects = agent.resubscribe(dlg.refresh(), T0 + 1)
    assert reply(effects).status == 500 and len(effects) == 1
    dlg.cseq = 2
    assert reply(agent.resubscribe(dlg.refresh(), T0 + 1)).status == 500
    dlg.cseq = 5
    assert reply(agent.resubscribe(dlg.refresh(), T0 + 1)).status == 200


def test_subscribe_in_unknown_dialog_is_481() -> None:
    # RFC 6665 §4.1.2.2 / RFC 3261 §12.2.2
    agent = make_agent()
    req = subscribe_req(to_tag="nosuch", cseq=2)
    assert reply(agent.resubscribe(req, T0)).status == 481


def test_unsubscribe_forgets_replies_and_sends_final_notify() -> None:
    # RFC 6665 §4.1.2.3: Expires: 0 ends it; the notifier sends a final NOTIFY.
    agent = make_agent()
    dlg, _ = start(agent)
    agent.notify_result(dlg.sub_id, 200, T0)
    effects = agent.resubscribe(dlg.refresh(expires=0), T0 + 10)
    assert [type(e) for e in effects] == [Forget, Reply, WatchStopped, SendNotify]
    assert effects[0] == Forget(dlg.sub_id)
    assert effects[2] == WatchStopped(ALICE, "registrar")
    assert reply(effects).status == 200 and reply(effects).expires == 0
    assert sub_state(notify(effects)).state == "terminated"
    assert agent.next_deadline() is None
    # The dialog is gone for the watcher; the final NOTIFY's answer closes it for us too.
    assert reply(agent.resubscribe(dlg.refresh(), T0 + 11)).status == 481
    assert agent.notify_result(dlg.sub_id, 200, T0 + 12) == []
    assert agent.dialogs == {} and agent.per_watcher == {} and agent.resources == {}


def test_unsubscribe_of_one_watcher_keeps_the_watch_for_others() -> None:
    agent = make_agent()
    dlg, _ = start(agent)
    start(agent, watcher="carol")
    agent.notify_result(dlg.sub_id, 200, T0)
    effects = agent.resubscribe(dlg.refresh(expires=0), T0 + 10)
    assert not of(effects, WatchStopped)
    assert agent.watched() == [ALICE]


def test_refresh_with_new_contact_retargets_notifies() -> None:
    # RFC 6665 §4.1.2.2 (target refresh, RFC 3261 §12.2.2)
    agent = make_agent()
    dlg, _ = start(agent)
    agent.notify_result(dlg.sub_id, 200, T0)
    effects = agent.resubscribe(dlg.refresh(contact="<sip:bob@198.51.100.7:5080>"), T0 + 1)
    assert effects[0].sub.remote_target == "sip:bob@198.51.100.7:5080"  # type: ignore[union-attr]
    n = notify(effects)
    assert n.request.uri == n.target == "sip:bob@198.51.100.7:5080"
    agent.notify_result(dlg.sub_id, 200, T0 + 1)
    n = notify(agent.set_part(ALICE, "registrar", registrar_open(), T0 + 2))
    assert n.target == "sip:bob@198.51.100.7:5080"


def test_refresh_while_notify_outstanding_waits_for_the_answer() -> None:
    agent = make_agent()
    dlg, _ = start(agent, expires=600)
    effects = agent.resubscribe(dlg.refresh(expires=900), T0 + 1)
    assert [type(e) for e in effects] == [Persist, Reply]
    n = notify(agent.notify_result(dlg.sub_id, 200, T0 + 2))
    assert sub_state(n).expires == 899


# --- NOTIFY discipline (RFC 6665 §4.2.2) --------------------------------------------------------


def test_change_notifies_every_watcher_once() -> None:
    agent = make_agent()
    d1, _ = start(agent)
    d2, _ = start(agent, watcher="carol")
    for d in (d1, d2):
        agent.notify_result(d.sub_id, 200, T0)
    effects = agent.set_part(ALICE, "registrar", registrar_open(), T0 + 1)
    sent = of(effects, SendNotify)
    assert sorted(n.sub_id for n in sent) == sorted([d1.sub_id, d2.sub_id])
    assert all(basics(n) == [(presentity_tuple_id(ALICE), "open")] for n in sent)


def test_changes_coalesce_while_a_notify_is_outstanding_and_the_latest_wins() -> None:
    agent = make_agent()
    dlg, first = start(agent)
    assert agent.set_part(ALICE, "registrar", registrar_open("sip:a@192.0.2.1"), T0 + 1) == []
    assert agent.set_part(ALICE, "registrar", registrar_open("sip:b@192.0.2.1"), T0 + 2) == []
    assert agent.set_part(ALICE, "registrar", None, T0 + 3) == []
    agent.set_part(ALICE, "registrar", registrar_open("sip:c@192.0.2.1"), T0 + 4)
    effects = agent.notify_result(dlg.sub_id, 200, T0 + 5)
    n = notify(effects)
    (t,) = decode_pidf(n.request.body).tuples
    assert (t.basic, t.contact) == ("open", "sip:c@192.0.2.1")
    assert cseq_of(n) == cseq_of(notify(first)) + 1
    # Nothing more is pending once that one is answered.
    assert agent.notify_result(dlg.sub_id, 200, T0 + 6) == []


def test_unchanged_part_sends_nothing() -> None:
    agent = make_agent()
    dlg, _ = start(agent)
    agent.notify_result(dlg.sub_id, 200, T0)
    assert of(agent.set_part(ALICE, "registrar", registrar_open(), T0 + 1), SendNotify)
    agent.notify_result(dlg.sub_id, 200, T0 + 1)
    assert agent.set_part(ALICE, "registrar", registrar_open(), T0 + 2) == []
    assert agent.notify_result(dlg.sub_id, 200, T0 + 3) == []


def test_removing_an_absent_part_sends_nothing() -> None:
    agent = make_agent()
    dlg, _ = start(agent)
    agent.notify_result(dlg.sub_id, 200, T0)
    assert agent.set_part(ALICE, "publish", None, T0 + 1) == []


def test_notify_cseq_strictly_increases() -> None:
    # RFC 3261 §12.2.1.1: CSeq increases by one per request in the dialog.
    agent = make_agent()
    dlg, first = start(agent)
    seen = [cseq_of(notify(first))]
    for i in range(10):
        agent.notify_result(dlg.sub_id, 200, T0 + i)
        n = notify(agent.set_part(ALICE, "registrar", registrar_open(f"sip:{i}@192.0.2.1"), T0 + i))
        seen.append(cseq_of(n))
    assert seen == list(range(1, 12))


@pytest.mark.parametrize("status", [481, 404, 408, 410])
def test_fatal_notify_answer_ends_only_that_subscription(status: int) -> None:
    # RFC 6665 §4.2.2: 481 (and 408 timeouts, §4.1.3 style 404/410) end the subscription.
    agent = make_agent()
    d1, _ = start(agent)
    d2, _ = start(agent, watcher="carol")
    effects = agent.notify_result(d1.sub_id, status, T0 + 1)
    assert effects == [Forget(d1.sub_id)]
    assert d1.sub_id not in agent.dialogs
    assert reply(agent.resubscribe(d1.refresh(), T0 + 2)).status == 481
    agent.notify_result(d2.sub_id, 200, T0 + 1)
    sent = of(agent.set_part(ALICE, "registrar", registrar_open(), T0 + 3), SendNotify)
    assert [n.sub_id for n in sent] == [d2.sub_id]


def test_fatal_answer_of_the_last_watcher_stops_the_watch() -> None:
    agent = make_agent()
    d1, _ = start(agent)
    effects = agent.notify_result(d1.sub_id, 481, T0 + 1)
    assert effects == [Forget(d1.sub_id), WatchStopped(ALICE, "registrar")]
    assert agent.dialogs == {} and agent.resources == {} and agent.per_watcher == {}
    assert agent.next_deadline() is None


def test_other_notify_errors_keep_the_subscription() -> None:
    agent = make_agent()
    dlg, _ = start(agent)
    assert agent.notify_result(dlg.sub_id, 500, T0 + 1) == []
    assert dlg.sub_id in agent.dialogs
    n = notify(agent.set_part(ALICE, "registrar", registrar_open(), T0 + 2))
    assert n.sub_id == dlg.sub_id


def test_notify_result_for_unknown_dialog_is_ignored() -> None:
    assert make_agent().notify_result("nope", 200, T0) == []


# --- CSeq lease across restarts (agent docstring) ----------------------------------------------


def test_persisted_lease_covers_every_cseq_sent_across_200_changes() -> None:
    agent = make_agent()
    dlg, effects = start(agent)
    lease = 0
    sent: list[int] = []
    for i in range(201):
        for e in effects:
            if isinstance(e, Persist):
                assert e.sub.local_cseq > lease
                lease = e.sub.local_cseq
            elif isinstance(e, SendNotify):
                # The Persist raising the lease comes before the NOTIFY that needs it.
                assert cseq_of(e) <= lease
                sent.append(cseq_of(e))
        agent.notify_result(dlg.sub_id, 200, T0 + i)
        effects = agent.set_part(ALICE, "registrar", registrar_open(f"sip:{i}@192.0.2.1"), T0 + i)
    assert sent == list(range(1, 202))
    assert lease >= 201 and lease <= 201 + CSEQ_LEASE + 1


def test_after_load_the_next_cseq_is_above_everything_sent() -> None:
    agent = make_agent()
    dlg, effects = start(agent)
    record: Subscription | None = None
    highest = 0
    for i in range(100):
        for e in effects:
            if isinstance(e, Persist):
                record = e.sub
            elif isinstance(e, SendNotify):
                highest = max(highest, cseq_of(e))
        agent.notify_result(dlg.sub_id, 200, T0 + i)
        effects = agent.set_part(ALICE, "registrar", registrar_open(f"sip:{i}@192.0.2.1"), T0 + i)
    assert record is not None
    # Restart: a new agent takes the stored record back.
    again = make_agent()
    loaded = again.load([record], T0 + 200)
    assert loaded == [WatchStarted(ALICE, "registrar")]
    effects = again.set_part(ALICE, "registrar", registrar_open(), T0 + 201)
    n = notify(effects)
    assert cseq_of(n) > highest
    persisted = of(effects, Persist)
    assert persisted and persisted[-1].sub.local_cseq >= cseq_of(n)


def test_refresh_persists_the_current_lease() -> None:
    agent = make_agent()
    dlg, _ = start(agent)
    for i in range(CSEQ_LEASE + 5):
        agent.notify_result(dlg.sub_id, 200, T0)
        agent.set_part(ALICE, "registrar", registrar_open(f"sip:{i}@192.0.2.1"), T0)
    agent.notify_result(dlg.sub_id, 200, T0)
    effects = agent.resubscribe(dlg.refresh(), T0 + 1)
    assert effects[0].sub.local_cseq >= cseq_of(notify(effects))  # type: ignore[union-attr]


# --- expiry and restart (RFC 6665 §4.2.2 timeout, §4.1.3) ---------------------------------------


def test_expiry_forgets_and_sends_final_notify_with_reason_timeout() -> None:
    agent = make_agent()
    dlg, _ = start(agent, expires=600)
    agent.notify_result(dlg.sub_id, 200, T0)
    assert agent.next_deadline() == T0 + 600
    assert agent.expire(T0 + 599) == []
    effects = agent.expire(T0 + 600)
    assert [type(e) for e in effects] == [Forget, WatchStopped, SendNotify]
    st = sub_state(notify(effects))
    assert (st.state, st.reason) == ("terminated", "timeout")
    assert agent.next_deadline() is None
    assert reply(agent.resubscribe(dlg.refresh(), T0 + 601)).status == 481
    assert agent.notify_result(dlg.sub_id, 200, T0 + 602) == []
    assert agent.dialogs == {} and agent.resources == {}


def test_expiry_while_notify_outstanding_sends_the_final_one_after_the_answer() -> None:
    agent = make_agent()
    dlg, _ = start(agent, expires=600)
    effects = agent.expire(T0 + 600)
    assert not of(effects, SendNotify) and of(effects, Forget)
    n = notify(agent.notify_result(dlg.sub_id, 200, T0 + 601))
    assert sub_state(n).state == "terminated" and sub_state(n).reason == "timeout"
    assert agent.notify_result(dlg.sub_id, 200, T0 + 602) == []
    assert agent.dialogs == {}


@pytest.mark.parametrize("status", [408, 481])
def test_no_final_notify_to_a_watcher_that_is_gone(status: int) -> None:
    # RFC 6665 §4.2.2: a 481 or a timeout means the watcher is gone; the final NOTIFY that was
    # waiting for that answer is not sent.
    agent = make_agent()
    dlg, _ = start(agent, expires=600)
    agent.expire(T0 + 600)
    assert agent.notify_result(dlg.sub_id, status, T0 + 601) == []
    assert agent.dialogs == {}


def test_unsubscribe_while_notify_outstanding_sends_the_final_one_after_the_answer() -> None:
    agent = make_agent()
    dlg, _ = start(agent)
    effects = agent.resubscribe(dlg.refresh(expires=0), T0 + 1)
    assert [type(e) for e in effects] == [Forget, Reply, WatchStopped]
    n = notify(agent.notify_result(dlg.sub_id, 200, T0 + 2))
    assert sub_state(n).state == "terminated"
    assert agent.notify_result(dlg.sub_id, 200, T0 + 3) == []
    assert agent.dialogs == {}


def test_refresh_moves_the_deadline() -> None:
    agent = make_agent()
    dlg, _ = start(agent, expires=600)
    agent.notify_result(dlg.sub_id, 200, T0)
    agent.resubscribe(dlg.refresh(expires=600), T0 + 500)
    assert agent.expire(T0 + 600) == []
    assert agent.next_deadline() == T0 + 1100


def _record(agent: Notifier, **kw: object) -> Subscription:
    _, effects = start(agent, T0, **kw)
    return of(effects, Persist)[0].sub  # type: ignore[no-any-return]


def test_load_of_live_records_starts_watches_and_sends_nothing() -> None:
    rec = _record(make_agent(), expires=600)
    agent = make_agent()
    effects = agent.load([rec], T0 + 10)
    assert effects == [WatchStarted(ALICE, "registrar")]
    assert agent.next_deadline() == T0 + 600
    assert agent.watched("registrar") == [ALICE]


def test_load_of_expired_records_sends_final_notify_at_once() -> None:
    # docs/presence.md: a subscription that ran out while we were down still gets its end.
    rec = _record(make_agent(), expires=600)
    agent = make_agent()
    effects = agent.load([rec], T0 + 601)
    assert of(effects, Forget) == [Forget(rec.id)]
    # A source that watched the presentity before the restart hears it stop (the gateway then
    # unsubscribes from the XMPP user): the start comes first.
    watch = [e for e in effects if isinstance(e, WatchStarted | WatchStopped)]
    assert watch == [WatchStarted(ALICE, "registrar"), WatchStopped(ALICE, "registrar")]
    n = notify(effects)
    st = sub_state(n)
    assert (st.state, st.reason) == ("terminated", "timeout")
    assert cseq_of(n) > rec.local_cseq - CSEQ_LEASE
    assert agent.next_deadline() is None and agent.watched() == []
    assert agent.notify_result(rec.id, 200, T0 + 602) == []
    assert agent.dialogs == {} and agent.resources == {} and agent.per_watcher == {}


def test_load_counts_toward_the_per_watcher_limit() -> None:
    old = make_agent()
    recs = [_record(old) for _ in range(2)]
    agent = make_agent(max_subscriptions_per_watcher=2)
    agent.load(recs, T0 + 1)
    assert reply(agent.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0 + 1)).status == 403


def test_renotify_sends_the_current_state_to_every_watcher() -> None:
    rec = _record(make_agent())
    agent = make_agent()
    agent.load([rec], T0 + 1)
    agent.seed_part(ALICE, "registrar", registrar_open())
    n = notify(agent.renotify(ALICE, T0 + 2))
    assert n.sub_id == rec.id
    assert basics(n) == [(presentity_tuple_id(ALICE), "open")]
    assert agent.renotify("nobody@example.com", T0 + 2) == []


def test_terminate_all_ends_every_subscription_with_the_reason() -> None:
    agent = make_agent()
    d1, _ = start(agent)
    d2, _ = start(agent, watcher="carol")
    for d in (d1, d2):
        agent.notify_result(d.sub_id, 200, T0)
    effects = agent.terminate_all(ALICE, "noresource", T0 + 1)
    assert sorted(e.sub_id for e in of(effects, Forget)) == sorted([d1.sub_id, d2.sub_id])
    assert of(effects, WatchStopped) == [WatchStopped(ALICE, "registrar")]
    assert {sub_state(n).reason for n in of(effects, SendNotify)} == {"noresource"}


# --- composition (docs/presence.md "Composition policy") ---------------------------------------


def _watch(agent: Notifier) -> Dialog:
    dlg, _ = start(agent)
    agent.notify_result(dlg.sub_id, 200, T0)
    return dlg


def _change(agent: Notifier, dlg: Dialog, key: str, part: PresenceDoc | None) -> PresenceDoc:
    n = notify(agent.set_part(ALICE, key, part, T0 + 1))
    agent.notify_result(dlg.sub_id, 200, T0 + 1)
    return decode_pidf(n.request.body)


def test_registrar_open_notifies_open() -> None:
    agent = make_agent()
    dlg = _watch(agent)
    doc = _change(agent, dlg, "registrar", registrar_open())
    assert [(t.id, t.basic) for t in doc.tuples] == [(presentity_tuple_id(ALICE), "open")]


def test_closed_publication_outranks_an_open_registration() -> None:
    # Publications are authoritative (docs/presence.md).
    agent = make_agent()
    dlg = _watch(agent)
    _change(agent, dlg, "registrar", registrar_open())
    doc = _change(agent, dlg, "publish", PresenceDoc(f"sip:{ALICE}", (Tuple("pub1", "closed"),)))
    assert [(t.id, t.basic) for t in doc.tuples] == [("pub1", "closed")]
    assert doc.basic == "closed"
    # When the publication goes, the registration shows again.
    doc = _change(agent, dlg, "publish", None)
    assert [(t.id, t.basic) for t in doc.tuples] == [(presentity_tuple_id(ALICE), "open")]


def test_person_only_publication_adds_to_the_registrar_tuple() -> None:
    agent = make_agent()
    dlg = _watch(agent)
    _change(agent, dlg, "registrar", registrar_open())
    doc = _change(
        agent, dlg, "publish", PresenceDoc(f"sip:{ALICE}", persons=(Person("p1", ("away",)),))
    )
    assert [(t.id, t.basic) for t in doc.tuples] == [(presentity_tuple_id(ALICE), "open")]
    assert [(p.id, p.activities) for p in doc.persons] == [("p1", ("away",))]


def test_no_parts_is_one_closed_tuple_with_the_registrar_tuple_id() -> None:
    agent = make_agent()
    dlg = _watch(agent)
    _change(agent, dlg, "registrar", registrar_open())
    doc = _change(agent, dlg, "registrar", None)
    assert [(t.id, t.basic) for t in doc.tuples] == [(presentity_tuple_id(ALICE), "closed")]
    assert agent.document(ALICE).tuples == (Tuple(presentity_tuple_id(ALICE), "closed"),)


def test_person_only_publication_without_registration_is_closed_but_keeps_the_person() -> None:
    agent = make_agent()
    dlg = _watch(agent)
    doc = _change(
        agent, dlg, "publish", PresenceDoc(f"sip:{ALICE}", persons=(Person("p1", ("busy",)),))
    )
    assert [(t.id, t.basic) for t in doc.tuples] == [(presentity_tuple_id(ALICE), "closed")]
    assert [p.activities for p in doc.persons] == [("busy",)]


def test_parts_without_watchers_leave_no_entry_behind() -> None:
    agent = make_agent()
    agent.set_part(ALICE, "registrar", registrar_open(), T0)
    assert agent.document(ALICE).basic == "open"
    agent.set_part(ALICE, "registrar", None, T0 + 1)
    assert agent.resources == {}
    assert agent.document(ALICE).basic == "closed"


# --- route set (RFC 3261 §12.1.1, §12.2.1.1) ---------------------------------------------------


def test_loose_route_set_becomes_route_headers_in_order() -> None:
    agent = make_agent()
    rr = ["<sip:p1.example.net;lr>", "<sip:p2.example.net:5070;lr;transport=tcp>"]
    n = notify(agent.subscribe(subscribe_req(record_route=rr), ALICE, "registrar", PEER, T0))
    r = n.request
    assert r.uri == "sip:bob@192.0.2.20:5070"
    assert [str(parse_name_addr(v).uri) for v in r.headers.get_list("Route")] == [
        "sip:p1.example.net;lr",
        "sip:p2.example.net:5070;lr;transport=tcp",
    ]
    assert n.route == "sip:p1.example.net;lr"
    assert n.target == "sip:bob@192.0.2.20:5070"


def test_record_route_in_one_header_line_is_split() -> None:
    agent = make_agent()
    rr = ["<sip:p1.example.net;lr>, <sip:p2.example.net;lr>"]
    n = notify(agent.subscribe(subscribe_req(record_route=rr), ALICE, "registrar", PEER, T0))
    assert len(n.request.headers.get_list("Route")) == 2


def test_strict_router_goes_in_the_request_uri_and_the_target_last() -> None:
    # RFC 3261 §12.2.1.1: a first route without lr is a strict router.
    agent = make_agent()
    rr = ["<sip:strict.example.net>", "<sip:p2.example.net;lr>"]
    n = notify(agent.subscribe(subscribe_req(record_route=rr), ALICE, "registrar", PEER, T0))
    r = n.request
    assert r.uri == "sip:strict.example.net"
    assert [str(parse_name_addr(v).uri) for v in r.headers.get_list("Route")] == [
        "sip:p2.example.net;lr",
        "sip:bob@192.0.2.20:5070",
    ]
    assert n.route == "sip:strict.example.net"
    assert n.target == "sip:bob@192.0.2.20:5070"


def test_unparseable_record_route_is_400() -> None:
    agent = make_agent()
    effects = agent.subscribe(subscribe_req(record_route=["<junk"]), ALICE, "registrar", PEER, T0)
    assert reply(effects).status == 400 and not agent.dialogs


def test_single_strict_router_leaves_only_the_target_in_route() -> None:
    agent = make_agent()
    effects = agent.subscribe(
        subscribe_req(record_route=["<sip:192.0.2.99:5060>"]), ALICE, "registrar", PEER, T0
    )
    r = notify(effects).request
    assert r.uri == "sip:192.0.2.99:5060"
    assert r.headers.get_all("Route") == ["<sip:bob@192.0.2.20:5070>"]


def test_route_set_survives_a_restart() -> None:
    rr = ["<sip:p1.example.net;lr>"]
    old = make_agent()
    _, effects = start(old, record_route=rr)
    rec = of(effects, Persist)[0].sub
    agent = make_agent()
    agent.load([rec], T0 + 1)
    n = notify(agent.renotify(ALICE, T0 + 2))
    assert n.route == "sip:p1.example.net;lr"
    assert n.request.headers.get_all("Route") == rr


# --- invariants over random runs (RFC 6665 §4.2.2, RFC 3261 §12.2.1.1) ---------------------------

_agent_ops = st.lists(
    st.one_of(
        st.tuples(st.just("sub"), st.integers(0, 2), st.sampled_from([0, 60, 600])),
        st.tuples(st.just("change"), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("answer"), st.integers(0, 2), st.sampled_from([200, 200, 481, 408, 500])),
        st.tuples(st.just("refresh"), st.integers(0, 2), st.sampled_from([0, 60, 600])),
        st.tuples(st.just("tick"), st.just(0), st.sampled_from([1, 30, 200])),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_agent_ops)
def test_notify_discipline_holds_for_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    agent = make_agent()
    now = T0
    dialogs: dict[int, Dialog] = {}
    outstanding: dict[str, bool] = {}
    last_cseq: dict[str, int] = {}
    lease: dict[str, int] = {}
    ended: set[str] = set()  # sub ids whose terminated NOTIFY went out

    def check(effects: Sequence[Effect]) -> None:
        for e in effects:
            if isinstance(e, Persist):
                assert e.sub.id not in ended
                lease[e.sub.id] = e.sub.local_cseq
            elif isinstance(e, SendNotify):
                sid = e.sub_id
                assert not outstanding.get(sid), "two NOTIFYs in flight in one dialog"
                assert sid not in ended, "a NOTIFY after the final one"
                seq = cseq_of(e)
                assert seq > last_cseq.get(sid, 0)
                last_cseq[sid] = seq
                state = sub_state(e)
                if state.state == "terminated":
                    ended.add(sid)
                else:
                    assert seq <= lease[sid]  # the lease was persisted first
                    # The NOTIFY carries the state of the moment it is sent.
                    sent = [(t.id, t.basic, t.contact) for t in decode_pidf(e.request.body).tuples]
                    assert sent == [
                        (t.id, t.basic, t.contact) for t in agent.document(ALICE).tuples
                    ]
                if sid in agent.dialogs:
                    outstanding[sid] = True

    for op, w, arg in ops:
        d = dialogs.get(w)
        if op == "sub" and d is None:
            req = subscribe_req(watcher=f"w{w}", expires=arg)
            effects = agent.subscribe(req, ALICE, "registrar", PEER, now)
            check(effects)
            if arg:
                dialogs[w] = Dialog(req, effects)
        elif op == "change":
            part = None if w == 3 else registrar_open(f"sip:{w}@192.0.2.1")
            check(agent.set_part(ALICE, "registrar", part, now))
        elif op == "answer" and d is not None and outstanding.get(d.sub_id):
            outstanding[d.sub_id] = False
            check(agent.notify_result(d.sub_id, arg, now))
            if d.sub_id not in agent.dialogs:
                del dialogs[w]
        elif op == "refresh" and d is not None:
            effects = agent.resubscribe(d.refresh(expires=arg), now)
            check(effects)
            assert reply(effects).status in (200, 481)
        elif op == "tick":
            now += arg
            check(agent.expire(now))
    # Answer everything still in flight: every dialog ends or stays consistent.
    for d in list(dialogs.values()):
        while outstanding.get(d.sub_id):
            outstanding[d.sub_id] = False
            check(agent.notify_result(d.sub_id, 200, now))
    check(agent.expire(now + 10_000))
    for d in list(dialogs.values()):
        while outstanding.get(d.sub_id):
            outstanding[d.sub_id] = False
            check(agent.notify_result(d.sub_id, 200, now + 10_000))
    assert agent.dialogs == {} and agent.per_watcher == {}
    assert agent.watched() == [] and agent.next_deadline() is None


# --- review fixes ------------------------------------------------------------------------------


def test_notify_rejected_with_403_ends_the_subscription_but_503_does_not() -> None:
    """RFC 6665 §4.2.2: a NOTIFY failure that cannot be retried removes the subscription."""
    agent = make_agent()
    dlg, _effects = start(agent)
    assert agent.notify_result(dlg.sub_id, 503, T0 + 1) == []  # transient: kept
    assert dlg.sub_id in agent.dialogs
    agent.set_part(ALICE, "registrar", registrar_open(), T0 + 2)
    out = agent.notify_result(dlg.sub_id, 403, T0 + 3)
    assert of(out, Forget) and dlg.sub_id not in agent.dialogs


def test_refresh_with_another_event_id_is_481() -> None:
    """RFC 6665 §4.1.2: the Event id names the subscription; another id is another one."""
    agent = make_agent()
    dlg, _ = start(agent, event="presence;id=1")
    assert reply(agent.resubscribe(dlg.refresh(event="presence;id=2"), T0 + 1)).status == 481
    assert reply(agent.resubscribe(dlg.refresh(event="presence;id=1"), T0 + 2)).status == 200


def test_refresh_from_a_new_address_moves_the_notify_flow() -> None:
    """A client behind NAT (or on a new TCP connection) refreshes from elsewhere."""
    agent = make_agent()
    dlg, _effects = start(agent)
    agent.notify_result(dlg.sub_id, 200, T0)
    out = agent.resubscribe(dlg.refresh(), T0 + 1, "udp:198.51.100.9:40000")
    assert str(notify(out).dest) == "udp:198.51.100.9:40000"


def test_rollback_of_an_initial_subscribe_leaves_nothing_behind() -> None:
    agent = make_agent()
    _, effects = start(agent)
    agent.rollback(effects, initial=True)
    assert agent.dialogs == {} and agent.resources == {} and agent.per_watcher == {}
    assert agent.next_deadline() is None


def test_rollback_of_a_refresh_unsticks_the_unsent_notify() -> None:
    agent = make_agent()
    dlg, _ = start(agent)
    agent.notify_result(dlg.sub_id, 200, T0)
    effects = agent.resubscribe(dlg.refresh(), T0 + 1)
    agent.rollback(effects, initial=False)
    # The NOTIFY was never sent: a later change must be able to send one.
    assert of(agent.set_part(ALICE, "registrar", registrar_open(), T0 + 2), SendNotify)


def test_global_subscription_cap_answers_503_with_retry_after() -> None:
    agent = make_agent(max_subscriptions=1)
    start(agent)
    r = reply(agent.subscribe(subscribe_req(watcher="carol"), ALICE, "registrar", PEER, T0))
    assert r.status == 503 and r.headers.get("Retry-After") == "60"
    assert len(agent.dialogs) == 1


def test_refresh_from_another_user_with_the_right_tags_is_481() -> None:
    """Knowing a dialog's Call-ID and tags is not enough: the From must be the watcher."""
    agent = make_agent()
    dlg, _ = start(agent)
    req = subscribe_req(
        watcher="mallory", call_id=dlg.call_id, from_tag=dlg.from_tag, to_tag=dlg.to_tag,
        cseq=dlg.cseq + 1, expires=0,
    )
    assert reply(agent.resubscribe(req, T0 + 1)).status == 481
    assert dlg.sub_id in agent.dialogs
