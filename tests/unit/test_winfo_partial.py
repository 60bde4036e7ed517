"""Partial watcherinfo (RFC 3858 §4): the first document of a winfo subscription is full, later
ones carry only the changed watchers, and a subscriber merging them as §4 says always holds the
watcher list a full document would show. After a gap (coalesced changes, a refused NOTIFY, a
refresh) the notifier sends full state again. Offline winfo: ended watchers are saved for a
restart and dropped once shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from test_authz_notifier import PEER, agent, answer
from test_notifier import ALICE, T0, notify, of, reply, subscribe_req

from presenced.pa.packages import winfo as winfo_pkg
from presenced.pa.packages.winfo import Watcher, WatcherList, diff, encode_watcherinfo_template
from presenced.pa.subscription import Notifier, SaveEnded, SendNotify

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc3858"
NS = "{urn:ietf:params:xml:ns:watcherinfo}"
Row = tuple[str, str, str]  # uri, status, event


class Gap(Exception):
    pass


class Table:
    """What a winfo subscriber keeps, updated as RFC 3858 §4 says."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.rows: dict[tuple[str, str], dict[str, Row]] = {}

    def apply(self, body: bytes) -> str:
        root = etree.fromstring(body)
        assert root.tag == f"{NS}watcherinfo"
        version, state = int(root.get("version") or ""), root.get("state")
        if self.version is not None and version <= self.version:
            return "discarded"  # an old document
        if state == "partial" and (self.version is None or version != self.version + 1):
            raise Gap(f"partial version {version} after {self.version}: refresh for full state")
        if state == "full":
            self.rows = {}
        else:
            assert state == "partial", state
        for wl in root.findall(f"{NS}watcher-list"):
            rows = self.rows.setdefault((wl.get("resource") or "", wl.get("package") or ""), {})
            for w in wl.findall(f"{NS}watcher"):
                rows[w.get("id") or ""] = (w.text or "", w.get("status") or "", w.get("event") or "")
        for rows in self.rows.values():  # a terminated watcher is shown, then dropped
            for wid in [k for k, r in rows.items() if r[1] == "terminated"]:
                del rows[wid]
        self.version = version
        return state

    def of(self, resource: str = f"sip:{ALICE}") -> dict[str, Row]:
        return self.rows.get((resource, "presence"), {})


def _body(template: tuple[bytes, bytes], version: int) -> bytes:
    return template[0] + str(version).encode() + template[1]


# --- the RFC's example ---------------------------------------------------------------------------

PROFESSOR = "professor@example.net"
USER_A = Watcher("8ajksjda7s", "sip:userA@example.net", "active", "approved")
USER_B = Watcher("hh8juja87s997-ass7", "sip:userB@example.org", "pending", "subscribe")


def test_rfc3858_example_full_then_partial_as_a_subscriber_merges_them() -> None:
    t = Table()
    assert t.apply((VECTORS / "example-full.xml").read_bytes()) == "full"
    assert t.of("sip:professor@example.net") == {
        USER_A.id: ("sip:userA@example.net", "active", "approved"),
        USER_B.id: ("sip:userB@example.org", "pending", "subscribe")}
    assert t.apply((VECTORS / "example-partial.xml").read_bytes()) == "partial"
    assert t.of("sip:professor@example.net") == {
        USER_B.id: ("sip:userB@example.org", "active", "approved")}


def test_our_documents_for_the_rfc_example_read_as_the_rfcs() -> None:
    expected, ours = Table(), Table()
    expected.apply((VECTORS / "example-full.xml").read_bytes())
    first = WatcherList((USER_A, USER_B))
    ours.apply(_body(encode_watcherinfo_template(PROFESSOR, first), 0))
    assert ours.rows == expected.rows
    # userB approved, userA timed out (shown once as terminated): what changed, only.
    second = diff(first, (Watcher(USER_B.id, USER_B.uri, "active", "approved"),
                          Watcher(USER_A.id, USER_A.uri, "terminated", "timeout")))
    assert second.serial == first.serial + 1 and second.changes is not None
    assert {w.id for w in second.changes} == {USER_A.id, USER_B.id}
    partial = _body(encode_watcherinfo_template(PROFESSOR, second, partial=True), 1)
    assert etree.fromstring(partial).get("state") == "partial"
    expected.apply((VECTORS / "example-partial.xml").read_bytes())
    assert ours.apply(partial) == "partial" and ours.rows == expected.rows
    # The list after that drops userA (already shown terminated): nothing to tell.
    third = diff(second, (second.watchers[0],))
    assert third.changes == ()
    assert ours.apply(_body(encode_watcherinfo_template(PROFESSOR, third, partial=True), 2))
    assert ours.rows == expected.rows


def test_a_watcher_that_vanishes_without_a_final_status_reads_terminated() -> None:
    first = WatcherList((USER_A,))
    gone = diff(first, ())
    assert gone.changes == (Watcher(USER_A.id, USER_A.uri, "terminated", "giveup"),)


def test_a_partial_document_after_a_gap_is_refused_by_the_subscriber() -> None:
    t = Table()
    t.apply(_body(encode_watcherinfo_template(PROFESSOR, WatcherList((USER_A,))), 0))
    second = diff(WatcherList((USER_A,)), (USER_A, USER_B))
    with pytest.raises(Gap):
        t.apply(_body(encode_watcherinfo_template(PROFESSOR, second, partial=True), 2))


# --- the notifier ----------------------------------------------------------------------------


def winfo_sub(a: Notifier, call_id: str = "w1") -> SendNotify:
    effects = a.subscribe(subscribe_req(watcher="alice", event="presence.winfo",
                                        call_id=call_id, expires=3600),
                          ALICE, "registrar", PEER, T0, identity=ALICE)
    assert reply(effects).status == 200
    return notify(effects)


def watcher_joins(a: Notifier, who: str, now: float = T0) -> list:  # type: ignore[type-arg]
    effects = a.subscribe(subscribe_req(watcher=who, call_id=f"{who}-p", expires=600),
                          ALICE, "registrar", PEER, now)
    answer(a, effects)
    return a.flush_winfo(now)


def full_list(a: Notifier) -> dict[str, Row]:
    """What a fresh full document shows right now."""
    t = Table()
    t.apply(_body(encode_watcherinfo_template(ALICE, WatcherList(a._watcher_list(ALICE))), 0))
    return t.of()


def test_winfo_full_first_then_partial_per_change_and_the_merge_equals_full_state() -> None:
    a, _ = agent("confirm")
    t = Table()
    first = winfo_sub(a)
    assert t.apply(first.request.body) == "full" and t.of() == {}
    a.notify_result(first.sub_id, 200, T0)
    for who in ("bob", "carol", "dave"):
        n = notify(watcher_joins(a, who))
        assert n.sub_id == first.sub_id
        assert t.apply(n.request.body) == "partial"
        body = etree.fromstring(n.request.body)
        assert len(list(body.iter(f"{NS}watcher"))) == 1  # only the newcomer
        a.notify_result(n.sub_id, 200, T0)
        assert t.of() == full_list(a)
    # bob leaves: a partial with bob terminated, and the subscriber drops him.
    bob = next(d for d in a.dialogs.values() if d.record.watcher == "bob@example.com")
    a.deauthorize(bob.record.id, T0 + 1)
    n = notify(a.flush_winfo(T0 + 1))
    assert t.apply(n.request.body) == "partial"
    assert [w.get("status") for w in etree.fromstring(n.request.body).iter(f"{NS}watcher")] \
        == ["terminated"]
    assert sorted(r[0] for r in t.of().values()) == ["sip:carol@example.com",
                                                     "sip:dave@example.com"]
    assert t.version == 4


def test_coalesced_changes_a_refused_notify_and_a_refresh_each_give_full_state() -> None:
    a, _ = agent("confirm")
    t = Table()
    first = winfo_sub(a)
    t.apply(first.request.body)
    # Two changes while the first NOTIFY is unanswered: one NOTIFY follows, with full state.
    assert not of(watcher_joins(a, "bob"), SendNotify)
    assert not of(watcher_joins(a, "carol"), SendNotify)
    n = notify(a.notify_result(first.sub_id, 200, T0))
    assert t.apply(n.request.body) == "full" and len(t.of()) == 2
    # A NOTIFY the subscriber refused (503): the one after it is full.
    a.notify_result(n.sub_id, 200, T0)
    refused = notify(watcher_joins(a, "dave"))
    a.notify_result(refused.sub_id, 503, T0)
    n = notify(watcher_joins(a, "erin"))
    assert etree.fromstring(n.request.body).get("state") == "full"
    t2 = Table()
    t2.apply(n.request.body)
    assert t2.of() == full_list(a) and len(t2.of()) == 4


@pytest.mark.pure_python
def test_a_partial_document_is_encoded_once_for_every_winfo_subscriber(
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = agent("confirm")
    subs = [winfo_sub(a, f"w{i}") for i in range(3)]  # alice's three devices
    for n in subs:
        a.notify_result(n.sub_id, 200, T0)
    calls = []
    real = winfo_pkg.encode_watcherinfo_template

    def counted(*args: object, **kw: object) -> tuple[bytes, bytes]:
        calls.append(kw.get("partial", False))
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(winfo_pkg, "encode_watcherinfo_template", counted)
    notifies = of(watcher_joins(a, "bob"), SendNotify)
    assert len(notifies) == 3 and calls == [True]
    assert {etree.fromstring(n.request.body).get("state") for n in notifies} == {"partial"}


def test_ended_watchers_are_saved_while_nobody_reads_winfo_and_dropped_once_shown() -> None:
    a, _ = agent("confirm")
    answer(a, a.subscribe(subscribe_req(watcher="bob", expires=600), ALICE, "registrar",
                          PEER, T0))
    (bob,) = a.dialogs.values()
    # alice has no winfo subscription: the rejected watcher is saved for her next one.
    (saved,) = of(a.deauthorize(bob.record.id, T0 + 1), SaveEnded)
    assert [(w.uri, w.status, w.event) for w in saved.watchers] == [
        ("sip:bob@example.com", "terminated", "rejected")]
    # A restart: a fresh notifier takes the saved entries back.
    b, _ = agent("confirm")
    b.load_ended(ALICE, saved.watchers)
    effects = b.subscribe(subscribe_req(watcher="alice", event="presence.winfo",
                                        call_id="w9", expires=3600),
                          ALICE, "registrar", PEER, T0 + 2, identity=ALICE)
    rows = etree.fromstring(notify(effects).request.body).iter(f"{NS}watcher")
    assert [(w.text, w.get("status"), w.get("event")) for w in rows] == [
        ("sip:bob@example.com", "terminated", "rejected")]
    # Shown once: the stored entries are deleted, and a new subscriber does not see bob.
    assert of(b.flush_winfo(T0 + 2), SaveEnded) == [SaveEnded(ALICE, ())]
    answer(b, effects)
    n = notify(b.subscribe(subscribe_req(watcher="alice", event="presence.winfo",
                                         call_id="w10", expires=3600),
                           ALICE, "registrar", PEER, T0 + 3, identity=ALICE))
    assert list(etree.fromstring(n.request.body).iter(f"{NS}watcher")) == []


def test_the_allow_all_path_writes_nothing_for_ended_watchers() -> None:
    a, _ = agent("allow")  # no rules, default allow: nobody decides anything
    answer(a, a.subscribe(subscribe_req(watcher="bob", expires=600), ALICE, "registrar",
                          PEER, T0))
    (bob,) = a.dialogs.values()
    assert not of(a.terminate(bob.record.id, T0 + 1), SaveEnded)


# --- who may watch winfo and reg: the same identity rules as every decision ------------------


def _proxied_agent() -> Notifier:
    from test_notifier import contact_for, counter

    from presenced.pa.subscription import PaPolicy

    proxy = "192.0.2.50"
    return Notifier(PaPolicy(), counter("lt"), contact_for, trusted=lambda ip: ip == proxy)


PROXY = "udp:192.0.2.50:5060"


@pytest.mark.parametrize("event", ["presence.winfo", "reg"])
def test_owner_only_packages_through_a_trusted_proxy(event: str) -> None:
    a = _proxied_agent()
    # Without [auth], the proxy vouches for the From: bob is not alice.
    r = a.subscribe(subscribe_req(watcher="bob", event=event), ALICE, "registrar", PROXY, T0)
    assert reply(r).status == 403
    r = a.subscribe(subscribe_req(watcher="alice", event=event), ALICE, "registrar", PROXY, T0)
    assert reply(r).status == 200
    # With [auth], the authenticated user decides, whoever relays the request.
    r = a.subscribe(subscribe_req(watcher="alice", event=event), ALICE, "registrar", PROXY, T0,
                    identity="bob@example.com")
    assert reply(r).status == 403
    # An unvouched From proves nothing: without [auth] a direct watcher is not refused (a
    # monitor may watch reg; docs/events.md says [auth] is what makes these private).
    r = a.subscribe(subscribe_req(watcher="bob", event=event), ALICE, "registrar", PEER, T0)
    assert reply(r).status == 200
