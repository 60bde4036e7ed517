"""presence.winfo lists watchers that hold no SIP dialog (the XMPP gateway's subscribers):
`Notifier.set_watcher` adds, changes and drops them; a terminated one is shown once (RFC 3858
§5.2 "terminated" with its event), like an ended dialog."""

from __future__ import annotations

from presenced.pa.packages.winfo import PART, Watcher, WatcherList
from presenced.pa.subscription import Notifier, PaPolicy

ALICE = "alice@example.com"


def _listed(n: Notifier) -> list[tuple[str, str, str]]:
    parts = n._watcher_parts(ALICE)
    state = parts[PART]
    assert isinstance(state, WatcherList)
    return [(w.uri, w.status, w.event) for w in state.watchers]


def test_foreign_watcher_pending_then_active_then_terminated_shown_once() -> None:
    n = Notifier(PaPolicy(), lambda: "t", lambda p, f: f"sip:{p}")
    uri = "xmpp:juliet@jabber.test"
    n.set_watcher(ALICE, uri, Watcher("w1", uri, "pending", "subscribe"))
    assert _listed(n) == [(uri, "pending", "subscribe")]
    n.set_watcher(ALICE, uri, Watcher("w1", uri, "active", "approved"))
    assert _listed(n) == [(uri, "active", "approved")]
    n.set_watcher(ALICE, uri, Watcher("w1", uri, "terminated", "rejected"))
    assert _listed(n) == [(uri, "terminated", "rejected")]
    n.flush_winfo(0.0)  # nobody watches alice's winfo: nothing sent, nothing kept but the end
    n.set_watcher(ALICE, uri, None)
    assert (uri, "active", "approved") not in _listed(n)
