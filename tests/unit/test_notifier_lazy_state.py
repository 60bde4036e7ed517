"""A resource nobody watches composes its state only when asked (`_Resource.current()`): the
changes themselves cost no composition, and what watchers and fetches see is unchanged."""

from __future__ import annotations

from test_notifier import ALICE, PEER, T0, basics, make_agent, notify, of, subscribe_req

from presenced.pa.model import PresenceDoc, Tuple
from presenced.pa.subscription import Notifier, SendNotify

KEY = ("presence", ALICE)


def doc(*tuples: tuple[str, str]) -> PresenceDoc:
    return PresenceDoc(f"pres:{ALICE}", tuple(Tuple(i, b) for i, b in tuples))


def watch(n: Notifier, watcher: str = "bob", expires: int | None = None) -> SendNotify:
    req = subscribe_req(watcher=watcher, expires=expires)
    return notify(n.subscribe(req, ALICE, "registrar", PEER, T0))


def test_changes_nobody_watches_leave_the_state_stale_and_the_first_watcher_sees_the_last() -> None:
    n = make_agent()
    assert n.set_part(ALICE, "publish", doc(("p", "open")), T0) == []
    assert n.set_part(ALICE, "publish", doc(("p", "closed")), T0 + 1) == []
    assert n.resources[KEY].stale
    first = watch(n)
    assert basics(first) == [("p", "closed")]
    assert not n.resources[KEY].stale


def test_a_fetch_and_document_compose_a_stale_state_on_demand() -> None:
    n = make_agent()
    n.set_part(ALICE, "publish", doc(("p", "open")), T0)
    state = n.document(ALICE)
    assert isinstance(state, PresenceDoc) and [t.basic for t in state.tuples] == ["open"]
    n.set_part(ALICE, "publish", doc(("p", "closed")), T0 + 1)
    assert n.resources[KEY].stale  # the cached bodies went with the old state too
    fetch = watch(n, "carol", expires=0)
    assert basics(fetch) == [("p", "closed")]


def test_a_watcher_that_came_while_stale_hears_a_change_and_not_a_repeat() -> None:
    n = make_agent()
    n.set_part(ALICE, "publish", doc(("p", "open")), T0)
    first = watch(n)
    n.notify_result(first.sub_id, 200, T0)
    # A new registrar part composes to the same state (a publication hides the registrar's
    # tuple, docs/presence.md): no change for the watcher ...
    assert of(n.set_part(ALICE, "registrar", doc(("r", "open")), T0 + 1), SendNotify) == []
    # ... a new publication is one, and it is compared with what the watcher saw.
    changed = notify(n.set_part(ALICE, "publish", doc(("p", "closed")), T0 + 2))
    assert basics(changed) == [("p", "closed")]


def test_a_pending_watcher_that_came_while_stale_gets_the_latest_state_once_authorized() -> None:
    n = make_agent()
    n.set_part(ALICE, "publish", doc(("p", "open")), T0)
    req = subscribe_req(watcher="dave")
    pending = notify(n.subscribe(req, ALICE, "registrar", PEER, T0,
                                 authorized=False))
    assert pending.request.body == b""
    n.notify_result(pending.sub_id, 200, T0)
    assert of(n.set_part(ALICE, "publish", doc(("p", "closed")), T0 + 1), SendNotify) == []
    sent = notify(n.authorize(pending.sub_id, T0 + 2))
    assert basics(sent) == [("p", "closed")]


def test_a_quiet_removal_after_an_unwatched_change_keeps_that_change_for_the_next_watcher() -> None:
    """The registrar reports a registration's end, then drops its part quietly: the state
    stays as of the report (as an eager composition kept it), with the other parts."""
    n = make_agent()
    n.set_part(ALICE, "jabber", doc(("j", "open")), T0)
    n.set_part(ALICE, "registrar", doc(("r", "closed")), T0 + 1)
    n.set_part(ALICE, "registrar", None, T0 + 2, quiet=True)
    assert basics(watch(n)) == [("j", "open"), ("r", "closed")]


def test_the_last_part_going_while_nobody_watches_forgets_the_resource() -> None:
    n = make_agent()
    n.set_part(ALICE, "publish", doc(("p", "open")), T0)
    n.set_part(ALICE, "publish", None, T0 + 1)
    assert KEY not in n.resources
