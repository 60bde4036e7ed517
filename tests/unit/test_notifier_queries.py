"""The notifier's operator surface (pure): read-only views of subscriptions, counts by package
and state, the coalescing counter, and `terminate` (RFC 6665 §4.1.3 reason in the final NOTIFY);
and the publications' `of` / `remove`."""

from __future__ import annotations

from test_notifier import ALICE, PEER, T0, make_agent, notify, of, sub_state, subscribe_req

from presenced.pa.model import PresenceDoc, Tuple
from presenced.pa.publish import Publications, PublishPolicy
from presenced.pa.records import Publication
from presenced.pa.subscription import Forget, Persist


def test_info_watchers_and_counts_follow_a_subscription() -> None:
    agent = make_agent()
    effects = agent.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    sub_id = of(effects, Persist)[0].sub.id
    info = agent.info(sub_id)
    assert info is not None
    assert (info.status, info.outstanding, info.last_notify_status, info.flow) == (
        "active", True, None, PEER)
    assert [i.record.id for i in agent.watchers_of(ALICE)] == [sub_id]
    assert agent.watchers_of(ALICE, "dialog") == []
    assert [i.record.presentity for i in agent.subscriptions_of("bob@example.com")] == [ALICE]
    assert agent.counts() == {("presence", "active"): 1}
    assert agent.watcher_count(ALICE, "presence") == 1
    agent.notify_result(sub_id, 200, T0 + 1)
    info = agent.info(sub_id)
    assert info is not None and info.last_notify_status == 200 and not info.outstanding


def test_changes_while_a_notify_is_in_flight_count_as_coalesced() -> None:
    agent = make_agent()
    agent.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    assert agent.coalesced == 0
    for basic in ("open", "closed", "open"):
        doc = PresenceDoc(f"pres:{ALICE}", (Tuple("t1", basic),))
        assert agent.set_part(ALICE, "registrar", doc, T0 + 1) == []  # one NOTIFY in flight
    assert agent.coalesced == 3


def test_terminate_sends_a_final_notify_with_the_reason_and_forgets() -> None:
    agent = make_agent()
    effects = agent.subscribe(subscribe_req(), ALICE, "registrar", PEER, T0)
    sub_id = of(effects, Persist)[0].sub.id
    agent.notify_result(sub_id, 200, T0 + 1)
    ended = agent.terminate(sub_id, T0 + 2, "noresource")
    assert of(ended, Forget)[0].sub_id == sub_id
    state = sub_state(notify(ended))
    assert (state.state, state.reason) == ("terminated", "noresource")
    info = agent.info(sub_id)
    assert info is not None and info.status == "terminated"  # until its final NOTIFY's answer
    assert agent.counts() == {("presence", "terminated"): 1}
    assert agent.terminate(sub_id, T0 + 3) == []  # once
    agent.notify_result(sub_id, 200, T0 + 3)
    assert agent.info(sub_id) is None and agent.counts() == {}
    assert agent.terminate("no;such;id", T0) == []


def test_publications_of_and_remove() -> None:
    pubs = Publications(PublishPolicy(), iter(f"e{i}" for i in range(100)).__next__)
    body = (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
            b'entity="pres:alice@example.com"><tuple id="t"><status><basic>open</basic></status>'
            b'</tuple></presence>')
    pub = Publication("tag1", ALICE, "presence", T0 + 600, "application/pidf+xml", body)
    assert pubs.load([pub], T0) == []
    assert pubs.of(ALICE) == [pub] and pubs.of(ALICE, "dialog") == []
    assert pubs.remove("tag1") == pub
    assert pubs.of(ALICE) == [] and len(pubs) == 0 and pubs.total_bytes == 0
    assert pubs.remove("tag1") is None
