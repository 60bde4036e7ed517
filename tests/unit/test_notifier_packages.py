"""The notifier with every event package (issue 10): dialog (RFC 4235), message-summary
(RFC 3842), reg (RFC 3680) beside presence; the subscription state table (RFC 6665 §4.1.2,
§4.2.2) and the one-NOTIFY-in-flight discipline for every package."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from test_notifier import (
    ALICE,
    PEER,
    T0,
    Dialog,
    contact_for,
    counter,
    notify,
    of,
    reply,
    sub_state,
    subscribe_req,
)

from presenced.pa.model import PresenceDoc, Tuple
from presenced.pa.packages import registry
from presenced.pa.packages.dialog_info import DialogPackage, parse_dialog_info
from presenced.pa.packages.message_summary import parse_message_summary
from presenced.pa.packages.presence import PUBLISHED, PUBLISHED_MARK, PresencePackage
from presenced.pa.packages.reginfo import (
    REASON_EXPIRY,
    REASON_REGISTER,
    BindingView,
    ContactInfo,
    RegState,
    apply_changes,
    contact_id,
    diff_contacts,
    parse_reginfo,
)
from presenced.pa.subscription import (
    TRANSITIONS,
    Notifier,
    PaPolicy,
    SendNotify,
    transition,
)
from presenced.sip.errors import LocalError

DIALOG_NS = "{urn:ietf:params:xml:ns:dialog-info}"


def make_notifier() -> Notifier:
    return Notifier(PaPolicy(), counter("lt"), contact_for)


def watch(n: Notifier, event: str, watcher: str = "bob", **kw: object) -> tuple[Dialog, SendNotify]:
    req = subscribe_req(event=event, watcher=watcher)
    effects = n.subscribe(req, ALICE, "registrar", PEER, T0, **kw)  # type: ignore[arg-type]
    return Dialog(req, effects), notify(effects)


def dialog_doc(state: str, dialog_id: str = "d1") -> bytes:
    return (
        '<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
        f'version="3" state="full" entity="sip:alice@example.com"><dialog id="{dialog_id}" '
        f'call-id="c1" local-tag="l1" direction="initiator"><state>{state}</state></dialog>'
        "</dialog-info>"
    ).encode()


def published_dialogs(*states: str) -> object:
    pkg = DialogPackage()
    infos = [parse_dialog_info(dialog_doc(s, f"d{i}")) for i, s in enumerate(states)]
    return pkg.compose_publications(ALICE, infos)


# --- registry, Allow-Events, negotiation --------------------------------------------------------


def test_registry_names_every_package_served_in_allow_events_order() -> None:
    assert list(registry()) == ["presence", "dialog", "message-summary", "reg", "presence.winfo"]
    assert make_notifier().allow_events == "presence, dialog, message-summary, reg, presence.winfo"


@pytest.mark.parametrize(
    ("event", "content_type"),
    [("dialog", "application/dialog-info+xml"),
     ("message-summary", "application/simple-message-summary"),
     ("reg", "application/reginfo+xml")],
)
def test_each_package_notifies_in_its_own_format(event: str, content_type: str) -> None:
    _, n = watch(make_notifier(), event)
    assert n.request.content_type == content_type
    assert n.request.headers.get("Event") == event


def test_a_package_refuses_an_accept_it_cannot_meet_with_406_naming_its_formats() -> None:
    n = make_notifier()
    r = reply(n.subscribe(subscribe_req(event="dialog", accept="application/pidf+xml"), ALICE,
                          "registrar", PEER, T0))
    assert r.status == 406 and r.headers.get("Accept") == "application/dialog-info+xml"


def test_watchers_of_two_packages_of_one_aor_are_two_resources() -> None:
    n = make_notifier()
    for event, who in (("presence", "bob"), ("dialog", "carol")):
        d, _ = watch(n, event, watcher=who)
        n.notify_result(d.sub_id, 200, T0)
    assert set(n.resources) == {("presence", ALICE), ("dialog", ALICE)}
    out = n.set_part(ALICE, "publish", published_dialogs("confirmed"), T0 + 1, "dialog")
    assert [s.request.headers.get("Event") for s in of(out, SendNotify)] == ["dialog"]


# --- dialog (RFC 4235) ----------------------------------------------------------------------------


def test_dialog_watchers_get_an_empty_document_then_the_published_dialogs() -> None:
    n = make_notifier()
    dlg, first = watch(n, "dialog")
    root = etree.fromstring(first.request.body)
    assert root.tag == f"{DIALOG_NS}dialog-info"
    assert (root.get("version"), root.get("state"), root.get("entity")) == (
        "0", "full", "sip:alice@example.com")
    assert root.findall(f"{DIALOG_NS}dialog") == []  # RFC 4235 §3.7.1: no dialogs, valid
    n.notify_result(dlg.sub_id, 200, T0)
    out = n.set_part(ALICE, "publish", published_dialogs("early"), T0 + 1, "dialog")
    doc = parse_dialog_info(notify(out).request.body)
    assert doc.version == 1 and [d.state for d in doc.dialogs] == ["early"]


def test_dialog_version_is_counted_per_subscription() -> None:
    """RFC 4235 §4.1: +1 per document sent to *that* subscriber (kamailio #448 shared one)."""
    n = make_notifier()
    early, _first = watch(n, "dialog", watcher="w1")
    n.notify_result(early.sub_id, 200, T0)
    for i, state in enumerate(("trying", "early", "confirmed")):
        out = n.set_part(ALICE, "publish", published_dialogs(state), T0 + 1 + i, "dialog")
        n.notify_result(early.sub_id, 200, T0 + 1 + i)
    assert parse_dialog_info(notify(out).request.body).version == 3
    late, joined = watch(n, "dialog", watcher="w2")
    assert parse_dialog_info(joined.request.body).version == 0  # its own first document
    assert [d.state for d in parse_dialog_info(joined.request.body).dialogs] == ["confirmed"]
    n.notify_result(late.sub_id, 200, T0 + 5)
    out = n.set_part(ALICE, "publish", published_dialogs("terminated"), T0 + 6, "dialog")
    versions = sorted(parse_dialog_info(s.request.body).version for s in of(out, SendNotify))
    assert versions == [1, 4]


def test_one_body_template_serves_every_dialog_watcher() -> None:
    n = make_notifier()
    for i in range(3):
        d, _ = watch(n, "dialog", watcher=f"w{i}")
        n.notify_result(d.sub_id, 200, T0)
    out = of(n.set_part(ALICE, "publish", published_dialogs("confirmed"), T0 + 1, "dialog"),
             SendNotify)
    bodies = {s.request.body for s in out}
    assert len(bodies) == 1  # all at version 1, built from one template
    assert len(n.resources[("dialog", ALICE)].bodies) == 1


def test_removed_publication_drops_its_dialogs() -> None:
    n = make_notifier()
    d, _ = watch(n, "dialog")
    n.notify_result(d.sub_id, 200, T0)
    n.set_part(ALICE, "publish", published_dialogs("confirmed"), T0 + 1, "dialog")
    n.notify_result(d.sub_id, 200, T0 + 1)
    out = n.set_part(ALICE, "publish", None, T0 + 2, "dialog")
    assert parse_dialog_info(notify(out).request.body).dialogs == ()


# --- message-summary (RFC 3842) -----------------------------------------------------------------


def test_message_summary_without_publication_says_no_messages_for_the_aor() -> None:
    _, n = watch(make_notifier(), "message-summary")
    assert n.request.body == b"Messages-Waiting: no\r\nMessage-Account: sip:alice@example.com\r\n"


def test_message_summary_watchers_get_the_published_summary_verbatim() -> None:
    n = make_notifier()
    d, _ = watch(n, "message-summary")
    n.notify_result(d.sub_id, 200, T0)
    body = (b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@vm.example.com\r\n"
            b"Voice-Message: 2/8 (0/2)\r\n")
    out = n.set_part(ALICE, "publish", parse_message_summary(body), T0 + 1, "message-summary")
    sent = notify(out).request.body
    assert b"Messages-Waiting: yes\r\n" in sent and b"Voice-Message: 2/8 (0/2)\r\n" in sent


# --- reg (RFC 3680) -----------------------------------------------------------------------------


def reg_state(before: dict[str, BindingView], after: dict[str, BindingView], reason: str,
              now: float, known: dict[str, ContactInfo]) -> RegState:
    """What the registrar service builds for one change (services/registrar.py)."""
    return apply_changes(known, diff_contacts(before, after, now, reason))


def test_reg_register_refresh_unregister_and_expiry_each_give_one_notify() -> None:
    n = make_notifier()
    d, first = watch(n, "reg")
    version, _state, regs = parse_reginfo(first.request.body)
    assert (version, regs[0].state, regs[0].contacts) == (0, "init", ())
    n.notify_result(d.sub_id, 200, T0)
    cid = contact_id(ALICE, "sip:alice@192.0.2.30")
    phone = BindingView("sip:alice@192.0.2.30", T0 + 3600)
    known: dict[str, ContactInfo] = {}
    events = []
    steps = [
        ({}, {cid: phone}, REASON_REGISTER),
        ({cid: phone}, {cid: BindingView(phone.uri, T0 + 7200)}, REASON_REGISTER),
        ({cid: BindingView(phone.uri, T0 + 7200)}, {}, REASON_EXPIRY),
    ]
    for i, (before, after, reason) in enumerate(steps):
        part = reg_state(before, after, reason, T0 + i, known)
        out = n.set_part(ALICE, "registrar", part, T0 + 1 + i, "reg")
        (sent,) = of(out, SendNotify)
        n.notify_result(d.sub_id, 200, T0 + 1 + i)
        version, _, regs = parse_reginfo(sent.request.body)
        events.append((version, regs[0].state, [(c.state, c.event) for c in regs[0].contacts]))
    assert events == [
        (1, "active", [("active", "registered")]),
        (2, "active", [("active", "refreshed")]),
        (3, "terminated", [("terminated", "expired")]),
    ]


def test_reg_is_for_the_owner_only_when_authenticated() -> None:
    n = make_notifier()
    r = reply(n.subscribe(subscribe_req(event="reg"), ALICE, "registrar", PEER, T0,
                          identity="bob@example.com"))
    assert r.status == 403
    ok = reply(n.subscribe(subscribe_req(event="reg", watcher="alice"), ALICE, "registrar", PEER,
                           T0, identity=ALICE))
    assert ok.status == 200


def test_a_registrar_refresh_is_nothing_for_presence_watchers() -> None:
    n = make_notifier()
    d, _ = watch(n, "presence")
    n.notify_result(d.sub_id, 200, T0)
    open_doc = PresenceDoc(f"pres:{ALICE}", (Tuple("t", "open", contact="sip:a@192.0.2.30"),))
    assert of(n.set_part(ALICE, "registrar", open_doc, T0 + 1), SendNotify)
    n.notify_result(d.sub_id, 200, T0 + 1)
    assert of(n.set_part(ALICE, "registrar", open_doc, T0 + 2), SendNotify) == []


def test_a_quiet_removal_keeps_the_last_state_and_frees_unwatched_resources() -> None:
    n = make_notifier()
    n.set_part(ALICE, "registrar", RegState((), True), T0, "reg")
    n.set_part(ALICE, "registrar", None, T0, "reg", quiet=True)
    assert ("reg", ALICE) not in n.resources


# --- the presence package's registrar policy (docs/presence.md) ----------------------------------


REG_OPEN = PresenceDoc(f"pres:{ALICE}", (Tuple("reg", "open", contact="sip:a@192.0.2.30"),))
PUB_NOTE = PresenceDoc(f"pres:{ALICE}", (Tuple("pub", "closed"),))


@pytest.mark.parametrize(
    ("policy", "parts", "basics"),
    [
        ("until-published", {"registrar": REG_OPEN}, ["open"]),
        ("until-published", {"registrar": REG_OPEN, "publish": PUB_NOTE}, ["closed"]),
        # liblinphone withdrew its PUBLISH and stays registered: it asked to be offline.
        ("until-published", {"registrar": REG_OPEN, PUBLISHED: PUBLISHED_MARK}, ["closed"]),
        ("fallback", {"registrar": REG_OPEN, PUBLISHED: PUBLISHED_MARK}, ["open"]),
        ("fallback", {"registrar": REG_OPEN, "publish": PUB_NOTE}, ["closed"]),
        ("always", {"registrar": REG_OPEN, "publish": PUB_NOTE}, ["open", "closed"]),
        ("never", {"registrar": REG_OPEN}, ["closed"]),
    ],
)
def test_registrar_policy(policy: str, parts: dict[str, object], basics: list[str]) -> None:
    doc = PresencePackage(policy).compose(ALICE, parts)  # type: ignore[arg-type]
    assert [t.basic for t in doc.tuples] == basics


# --- the state table (RFC 6665 §4.1.2, §4.2.2) -------------------------------------------------


def test_terminated_is_final_and_unknown_moves_are_errors() -> None:
    assert all(nxt in ("pending", "active", "terminated") for nxt, _ in TRANSITIONS.values())
    assert not any(state == "terminated" for state, _ in TRANSITIONS)
    with pytest.raises(LocalError):
        transition("terminated", "refresh")
    with pytest.raises(LocalError):
        transition("active", "authorize")
    assert transition("active", "expire") == ("terminated", "timeout")
    assert transition("pending", "deauthorize") == ("terminated", "rejected")


def test_pending_says_pending_without_state_until_authorized() -> None:
    n = make_notifier()
    d, first = watch(n, "presence", authorized=False)
    assert sub_state(first).state == "pending" and first.request.body == b""
    assert "Content-Type" not in first.request.headers
    n.notify_result(d.sub_id, 200, T0)
    out = n.authorize(d.sub_id, T0 + 1)
    sent = notify(out)
    assert sub_state(sent).state == "active" and b"<basic>closed</basic>" in sent.request.body


def test_deauthorize_terminates_with_rejected() -> None:
    n = make_notifier()
    d, _ = watch(n, "dialog")
    n.notify_result(d.sub_id, 200, T0)
    sent = notify(n.deauthorize(d.sub_id, T0 + 1))
    st = sub_state(sent)
    assert (st.state, st.reason) == ("terminated", "rejected")
    n.notify_result(d.sub_id, 200, T0 + 2)
    assert d.sub_id not in n.dialogs and ("dialog", ALICE) not in n.resources


# --- the NOTIFY discipline holds for every package (property) -----------------------------------

PARTS = {
    "presence": lambda i: PresenceDoc(f"pres:{ALICE}", (Tuple("t", "open" if i % 2 else "closed"),)),
    "dialog": lambda i: published_dialogs(("trying", "early", "confirmed", "terminated")[i % 4]),
    "message-summary": lambda i: parse_message_summary(
        f"Messages-Waiting: yes\r\nVoice-Message: {i}/0\r\n".encode()),
    "reg": lambda i: RegState((), bool(i % 2)),
}
ACTIONS = st.lists(st.sampled_from(["change", "answer", "refresh", "expire"]), max_size=30)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(event=st.sampled_from(sorted(PARTS)), actions=ACTIONS)
def test_one_notify_in_flight_and_increasing_cseq_for_every_package(
    event: str, actions: list[str]
) -> None:
    n = make_notifier()
    d, first = watch(n, event)
    outstanding = True
    cseqs = [first.request.cseq.seq]
    now = T0
    for i, action in enumerate(actions):
        now += 1
        if action == "change":
            out = n.set_part(ALICE, "registrar" if event == "reg" else "publish",
                             PARTS[event](i), now, event)
        elif action == "answer":
            out = n.notify_result(d.sub_id, 200, now) if outstanding else []
            outstanding = False
        elif action == "refresh":
            out = n.resubscribe(d.refresh(event=event, expires=600), now)
        else:
            out = n.expire(now + 10**6)
        sent = of(out, SendNotify)
        assert len(sent) <= 1
        if sent:
            assert not outstanding, "a second NOTIFY while one was in flight"
            outstanding = True
            cseqs.append(sent[0].request.cseq.seq)
        if d.sub_id not in n.dialogs:
            break
    assert cseqs == sorted(set(cseqs))


def test_a_provider_seeds_a_new_resource_so_the_first_watcher_gets_the_current_state() -> None:
    """The registrar keeps no reg bookkeeping for AORs nobody watches; the first reg watcher
    (or a fetch) still sees the AOR's registered contacts at once (Notifier.provide)."""
    n = make_notifier()
    cid = contact_id(ALICE, "sip:alice@192.0.2.30")
    contact = diff_contacts({}, {cid: BindingView("sip:alice@192.0.2.30", T0 + 600)}, T0,
                            REASON_REGISTER)
    n.provide("reg", lambda aor: {"registrar": RegState(contact, True)} if aor == ALICE else {})
    assert not n.watching(ALICE, "reg")
    _, first = watch(n, "reg")
    _, _, regs = parse_reginfo(first.request.body)
    assert regs[0].state == "active" and [c.event for c in regs[0].contacts] == ["registered"]
    assert n.watching(ALICE, "reg")
    fetch = notify(n.subscribe(subscribe_req(event="reg", watcher="carol", expires=0), "bob@example.com",
                               "registrar", PEER, T0))
    assert parse_reginfo(fetch.request.body)[2][0].state == "init"
