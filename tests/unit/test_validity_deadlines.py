"""Validity periods take effect at their boundaries for live subscriptions (RFC 4745 §7.3): the
notifier's next deadline is the next boundary, and at it the presentity's watchers are decided
again: a window that closes ends or blocks a watcher, one that opens lets a pending one in."""

from __future__ import annotations

from datetime import UTC, datetime

from test_authz_notifier import PEER, agent, answer
from test_notifier import ALICE, T0, notify, of, sub_state, subscribe_req

from presenced.pa.policy.evaluate import Policy
from presenced.pa.policy.rules import parse_rules
from presenced.pa.subscription import Forget, Notifier, SendNotify

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"


def stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def allow_during(start: float, end: float, who: str = "sip:bob@example.com") -> bytes:
    return (f'<cp:ruleset xmlns:cp="{CP}" xmlns:pr="{PR}"><cp:rule id="w"><cp:conditions>'
            f'<cp:identity><cp:one id="{who}"/></cp:identity>'
            f"<cp:validity><cp:from>{stamp(start)}</cp:from><cp:until>{stamp(end)}</cp:until>"
            f"</cp:validity></cp:conditions><cp:actions><pr:sub-handling>allow</pr:sub-handling>"
            "</cp:actions><cp:transformations><pr:provide-services><pr:all-services/>"
            "</pr:provide-services><pr:provide-persons><pr:all-persons/></pr:provide-persons>"
            "<pr:provide-devices><pr:all-devices/></pr:provide-devices>"
            "<pr:provide-all-attributes/></cp:transformations></cp:rule></cp:ruleset>").encode()


def install(a: Notifier, p: Policy, doc: bytes, now: float) -> list:  # type: ignore[type-arg]
    p.set_rules(ALICE, parse_rules(doc))
    return a.reauthorize(ALICE, now)


def test_policy_next_boundary_is_the_next_start_or_end() -> None:
    p = Policy("block")
    p.set_rules(ALICE, parse_rules(allow_during(T0 + 10, T0 + 20)))
    assert p.next_boundary(ALICE, T0) == T0 + 10
    assert p.next_boundary(ALICE, T0 + 10) == T0 + 20  # at the start: the end is next
    assert p.next_boundary(ALICE, T0 + 20) is None
    assert p.next_boundary("nobody@example.com", T0) is None
    assert p.with_validity() == [ALICE]


def test_a_closing_window_ends_a_live_subscription_at_the_boundary() -> None:
    a, p = agent("block")
    install(a, p, allow_during(T0 - 10, T0 + 2), T0)
    effects = a.subscribe(subscribe_req(expires=600), ALICE, "registrar", PEER, T0)
    assert sub_state(notify(effects)).state == "active"
    answer(a, effects)
    assert a.next_deadline() == T0 + 2  # before the subscription's own expiry
    assert a.expire(T0 + 1.9) == []
    ended = a.expire(T0 + 2)
    n = notify(ended)
    assert str(n.request.headers.get("Subscription-State")) == "terminated;reason=rejected"
    assert n.request.body == b"" and of(ended, Forget)
    assert not a.dialogs or all(d.final for d in a.dialogs.values())
    assert a.next_deadline() is None  # no boundary left, no subscription


def test_a_closing_window_under_confirm_sends_the_watcher_back_to_ask() -> None:
    a, p = agent("confirm")
    install(a, p, allow_during(T0 - 10, T0 + 2), T0)
    answer(a, a.subscribe(subscribe_req(expires=600), ALICE, "registrar", PEER, T0))
    n = notify(a.expire(T0 + 2))
    assert str(n.request.headers.get("Subscription-State")) == "terminated;reason=deactivated"


def test_an_opening_window_activates_a_pending_watcher_at_its_start() -> None:
    a, p = agent("confirm")
    install(a, p, allow_during(T0 + 5, T0 + 50), T0)
    effects = a.subscribe(subscribe_req(expires=600), ALICE, "registrar", PEER, T0)
    assert sub_state(notify(effects)).state == "pending"
    answer(a, effects)
    assert a.next_deadline() == T0 + 5
    n = notify(a.expire(T0 + 5))
    assert sub_state(n).state == "active"
    answer(a, [n])
    assert a.next_deadline() == T0 + 50  # the end is armed next
    assert str(notify(a.expire(T0 + 50)).request.headers.get("Subscription-State")) == \
        "terminated;reason=deactivated"


def test_boundaries_of_rules_loaded_before_any_watcher_are_armed_at_start() -> None:
    a, p = agent("block")
    p.set_rules(ALICE, parse_rules(allow_during(T0 - 10, T0 + 3)))
    a.reauthorize_all(T0)  # the start-up path: nobody watches alice yet
    answer(a, a.subscribe(subscribe_req(expires=600), ALICE, "registrar", PEER, T0 + 1))
    assert a.next_deadline() == T0 + 3
    assert of(a.expire(T0 + 3), SendNotify)
