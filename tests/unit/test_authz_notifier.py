"""The notifier under a presence policy: confirm -> pending, block -> 403, polite-block ->
offline, and a changed rule applied to live subscriptions (RFC 5025 §3.2.1, RFC 6665 §4.2.2)."""

from __future__ import annotations

from test_notifier import (
    ALICE,
    T0,
    basics,
    make_agent,
    notify,
    of,
    reply,
    sub_state,
    subscribe_req,
)

from presenced.pa.documents.pidf import decode_pidf
from presenced.pa.model import PresenceDoc, Tuple
from presenced.pa.packages.presence import presentity_tuple_id
from presenced.pa.policy.evaluate import Policy
from presenced.pa.policy.rules import parse_rules, simple_rules
from presenced.pa.subscription import Forget, Notifier, Persist, SendNotify

PEER = "udp:192.0.2.20:5070"
REG = presentity_tuple_id(ALICE)


def agent(default: str = "allow") -> tuple[Notifier, Policy]:
    a = make_agent()
    p = Policy(default)  # type: ignore[arg-type]
    a.authz = p
    a.set_part(ALICE, "registrar", PresenceDoc(f"pres:{ALICE}", (
        Tuple(REG, "open", "sip:alice@192.0.2.9:5070"),)), T0)
    return a, p


def set_rules(a: Notifier, p: Policy, entries: list) -> list:  # type: ignore[type-arg]
    p.set_rules(ALICE, parse_rules(simple_rules(entries)))
    return a.reauthorize(ALICE, T0 + 1)


def answer(a: Notifier, effects: list) -> None:  # type: ignore[type-arg]
    for n in of(effects, SendNotify):
        a.notify_result(n.sub_id, 200, T0)


def test_confirm_accepts_with_200_and_notifies_pending_without_state() -> None:
    a, p = agent("confirm")
    effects = a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    assert reply(effects).status == 200
    n = notify(effects)
    assert sub_state(n).state == "pending" and n.request.body == b""
    assert of(effects, Persist)[0].sub.state == "pending"
    answer(a, effects)
    # The presentity allows bob: the watcher gets the document at once.
    changed = set_rules(a, p, [("a", "allow", ["bob@example.com"])])
    n = notify(changed)
    assert sub_state(n).state == "active" and basics(n) == [(REG, "open")]
    assert of(changed, Persist)[0].sub.state == "active"


def test_block_refuses_a_new_subscribe_with_403() -> None:
    a, _p = agent("block")
    effects = a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    assert reply(effects).status == 403 and not of(effects, Persist)
    assert not a.dialogs


def test_polite_block_is_active_but_always_offline() -> None:
    a, _p = agent("polite-block")
    effects = a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    n = notify(effects)
    assert sub_state(n).state == "active" and basics(n) == [(REG, "closed")]


def test_a_block_rule_terminates_a_live_subscription_with_rejected_and_no_state() -> None:
    a, p = agent("allow")
    effects = a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    answer(a, effects)
    changed = set_rules(a, p, [("b", "block", ["bob@example.com"])])
    n = notify(changed)
    st = sub_state(n)
    assert st.state == "terminated" and st.reason == "rejected" and n.request.body == b""
    assert of(changed, Forget) and not of(changed, Persist)


def test_active_watcher_whose_rules_now_say_confirm_is_deactivated() -> None:
    a, p = agent("allow")
    answer(a, a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0))
    n = notify(set_rules(a, p, [("c", "confirm", ["bob@example.com"])]))
    assert sub_state(n).reason == "deactivated" and n.request.body == b""


def test_default_allow_hides_the_registered_contact_and_a_device_rule_shows_it() -> None:
    a, p = agent("allow")
    effects = a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    (t,) = decode_pidf(notify(effects).request.body).tuples
    assert t.contact == f"sip:{ALICE}"  # the AOR, not the device
    answer(a, effects)
    n = notify(set_rules(a, p, [("a", "allow", ["bob@example.com"])]))  # provides devices
    (t,) = decode_pidf(n.request.body).tuples
    assert t.contact == "sip:alice@192.0.2.9:5070"


def test_narrower_transformation_sends_the_narrower_document() -> None:
    a, p = agent("allow")
    answer(a, a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0))
    p.set_rules(ALICE, parse_rules(
        b'<cp:ruleset xmlns:cp="urn:ietf:params:xml:ns:common-policy" '
        b'xmlns:pr="urn:ietf:params:xml:ns:pres-rules"><cp:rule id="a"><cp:conditions/>'
        b"<cp:actions><pr:sub-handling>allow</pr:sub-handling></cp:actions></cp:rule>"
        b"</cp:ruleset>"))
    n = notify(a.reauthorize(ALICE, T0 + 1))
    assert decode_pidf(n.request.body).tuples == ()  # nothing provided


def test_an_unchanged_decision_notifies_nobody() -> None:
    a, _p = agent("allow")
    answer(a, a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0))
    assert a.reauthorize(ALICE, T0 + 1) == []


def test_one_body_per_transformation_not_per_watcher() -> None:
    a, p = agent("allow")
    p.set_rules(ALICE, parse_rules(simple_rules([("a", "allow", ["w0@example.com"])])))
    notifies = []
    for i in range(6):
        effects = a.subscribe(subscribe_req(watcher=f"w{i % 3}"), ALICE, "registrar", PEER, T0)
        notifies.append(notify(effects))
    bodies = {id(n.request.body) for n in notifies}
    assert len(bodies) == 2  # two views: w0's rule, and the default for w1 and w2
    res = a.resources[("presence", ALICE)]
    assert len(res.views) == 2


def test_without_a_policy_nothing_changes() -> None:
    a = make_agent()
    a.set_part(ALICE, "registrar", PresenceDoc(f"pres:{ALICE}", (
        Tuple(REG, "open", "sip:alice@192.0.2.9:5070"),)), T0)
    (t,) = decode_pidf(notify(a.subscribe(subscribe_req(), ALICE, "registrar", PEER,
                                          T0)).request.body).tuples
    assert t.contact == "sip:alice@192.0.2.9:5070"


# --- presence.winfo (RFC 3857 / RFC 3858) ------------------------------------------------------

WINFO_NS = "{urn:ietf:params:xml:ns:watcherinfo}"


def watchers_of(n: SendNotify) -> tuple[str, str, list[tuple[str, str, str]]]:
    from lxml import etree

    root = etree.fromstring(n.request.body)
    assert root.tag == f"{WINFO_NS}watcherinfo"
    wl = root.find(f"{WINFO_NS}watcher-list")
    assert wl is not None and wl.get("package") == "presence"
    return root.get("version") or "", root.get("state") or "", [
        (w.text or "", w.get("status") or "", w.get("event") or "")
        for w in wl.findall(f"{WINFO_NS}watcher")]


def winfo_req() -> object:
    return subscribe_req(watcher="alice", event="presence.winfo")


def flushed(a: Notifier) -> SendNotify:
    return notify(a.flush_winfo(T0))


def test_winfo_lists_a_pending_watcher_then_its_approval_with_versions() -> None:
    a, p = agent("confirm")
    answer(a, a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0))  # bob asks: pending
    a.flush_winfo(T0)
    # Offline winfo: alice subscribes after bob asked, and the first document lists him.
    effects = a.subscribe(winfo_req(), ALICE, "registrar", PEER, T0,  # type: ignore[arg-type]
                          identity=ALICE)
    n = notify(effects)
    assert n.request.headers.get("Content-Type") == "application/watcherinfo+xml"
    assert watchers_of(n) == ("0", "full", [("sip:bob@example.com", "pending", "subscribe")])
    answer(a, effects)
    answer(a, set_rules(a, p, [("a", "allow", ["bob@example.com"])]))
    # RFC 3858 §4: the next document is partial, with only the watcher that changed.
    assert watchers_of(flushed(a)) == ("1", "partial",
                                       [("sip:bob@example.com", "active", "approved")])


def test_winfo_shows_a_rejected_watcher_once() -> None:
    a, p = agent("allow")
    answer(a, a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0))
    w = a.subscribe(winfo_req(), ALICE, "registrar", PEER, T0, identity=ALICE)  # type: ignore[arg-type]
    answer(a, w)
    answer(a, set_rules(a, p, [("b", "block", ["bob@example.com"])]))
    n = flushed(a)
    assert watchers_of(n)[2] == [("sip:bob@example.com", "terminated", "rejected")]
    a.notify_result(n.sub_id, 200, T0)
    a.subscribe(subscribe_req(watcher="carol"), ALICE, "registrar", PEER, T0)
    # Partial: carol is new; bob, shown terminated, is gone from the subscriber's table.
    assert watchers_of(flushed(a))[1:] == (
        "partial", [("sip:carol@example.com", "active", "subscribe")])


def test_winfo_is_for_the_owner_only_with_authentication() -> None:
    a, _ = agent("allow")
    effects = a.subscribe(subscribe_req(watcher="bob", event="presence.winfo"), ALICE,
                          "registrar", PEER, T0, identity="bob@example.com")
    assert reply(effects).status == 403


def test_pending_and_politely_blocked_watchers_get_no_notify_when_the_state_changes() -> None:
    """A NOTIFY's timing alone would tell a pending or politely blocked watcher when the
    presentity's state changes; they get NOTIFYs only for their own subscription's events."""
    for default in ("confirm", "polite-block"):
        a, _p = agent(default)
        answer(a, a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0))
        away = PresenceDoc(f"pres:{ALICE}", (Tuple(REG, "closed", "sip:alice@192.0.2.9:5070"),))
        assert not of(a.set_part(ALICE, "registrar", away, T0 + 1), SendNotify), default
    # An allowed watcher of the same presentity still gets the change.
    a, _p = agent("allow")
    answer(a, a.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0))
    away = PresenceDoc(f"pres:{ALICE}", (Tuple(REG, "closed", "sip:alice@192.0.2.9:5070"),))
    assert basics(notify(a.set_part(ALICE, "registrar", away, T0 + 1))) == [(REG, "closed")]


def test_the_rules_judge_the_authenticated_user_not_the_from_it_claims() -> None:
    """With [auth], mallory may write any From: a rule change is applied to her, live and
    after a restart (the identity is part of the stored record)."""
    a, p = agent("allow")
    req = subscribe_req(watcher="bob")  # From: bob, authenticated as mallory
    effects = a.subscribe(req, ALICE, "registrar", PEER, T0, identity="mallory@example.com")
    (saved,) = [e.sub for e in of(effects, Persist)]
    assert saved.identity == "mallory@example.com" and saved.watcher == "bob@example.com"
    answer(a, effects)
    changed = set_rules(a, p, [("b", "allow", ["bob@example.com"]),
                               ("m", "block", ["mallory@example.com"])])
    st = sub_state(notify(changed))
    assert st.state == "terminated" and st.reason == "rejected"
    # Restored from storage: the same rules keep her out at once.
    b, q = agent("allow")
    q.set_rules(ALICE, parse_rules(simple_rules([("b", "allow", ["bob@example.com"]),
                                                 ("m", "block", ["mallory@example.com"])])))
    b.load([saved], T0 + 2)
    assert b.dialogs[saved.id].withheld


def test_a_restored_dialog_counts_for_its_authenticated_user_and_answers_only_to_them() -> None:
    a, _p = agent("allow")
    req = subscribe_req(watcher="bob")
    effects = a.subscribe(req, ALICE, "registrar", PEER, T0, identity="bob@example.com")
    (saved,) = [e.sub for e in of(effects, Persist)]
    b, _q = agent("allow")
    b.load([saved], T0 + 1)
    assert b.per_watcher == {"bob@example.com": 1}  # not the source address "ip:192.0.2.20"
    refresh = subscribe_req(watcher="bob", call_id=req.call_id, from_tag=req.from_.tag,
                            to_tag=saved.local_tag, cseq=2)
    assert reply(b.resubscribe(refresh, T0 + 2, PEER, identity="eve@example.com")).status == 481
    refresh = subscribe_req(watcher="bob", call_id=req.call_id, from_tag=req.from_.tag,
                            to_tag=saved.local_tag, cseq=3)
    assert reply(b.resubscribe(refresh, T0 + 3, PEER, identity="bob@example.com")).status == 200
