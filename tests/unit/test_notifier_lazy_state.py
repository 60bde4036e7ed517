"""A resource nobody watches composes its state only when asked (`_Resource.state`): the
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
    sub_id = first.sub_id
    n.notify_result(sub_id, 200, T0)
    # The same composition again is no change for the watcher ...
    assert of(n.set_part(ALICE, "publish", doc(("p", "open")), T0 + 1), SendNotify) == []
    # ... another one is, and it is compared with what the watcher saw.
    changed = notify(n.set_part(ALICE, "publish", doc(("p", "closed")), T0 + 2))
    assert basics(changed) == [("p", "closed")]


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
