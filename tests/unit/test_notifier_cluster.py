"""The notifier's cluster entry points (sans-IO): a dialog released to another node goes
without a NOTIFY or a write; an adopted one is NOTIFYed once, its CSeq above the lease."""

from __future__ import annotations

from test_notifier import (
    ALICE,
    T0,
    Persist,
    SendNotify,
    WatchStopped,
    cseq_of,
    make_agent,
    notify,
    of,
    registrar_open,
    start,
)

from presenced.pa.records import Subscription


def test_release_forgets_the_dialog_without_notify_or_write() -> None:
    agent = make_agent()
    dlg, _ = start(agent)
    agent.notify_result(dlg.sub_id, 200, T0)
    effects = agent.release(dlg.sub_id)
    assert effects == [WatchStopped(ALICE, "registrar")]
    assert agent.dialogs == {} and agent.per_watcher == {} and agent.next_deadline() is None
    assert agent.set_part(ALICE, "registrar", registrar_open(), T0 + 1) == []
    assert agent.release(dlg.sub_id) == []  # twice: nothing
    assert agent.notify_result(dlg.sub_id, 200, T0 + 2) == []  # a late answer: ignored


def test_adopted_dialog_gets_one_notify_with_cseq_above_the_lease() -> None:
    first = make_agent()
    _, effects = start(first)
    record: Subscription = of(effects, Persist)[0].sub
    sent = cseq_of(notify(effects))
    adopter = make_agent()
    adopter.load([record], T0 + 5)
    n = notify(adopter.touch([record.id], T0 + 5))
    assert cseq_of(n) > max(sent, record.local_cseq)
    assert n.request.call_id == record.call_id
    # Outstanding: a change coalesces into one later NOTIFY, none now.
    assert not of(adopter.set_part(ALICE, "registrar", registrar_open(), T0 + 6), SendNotify)
    assert adopter.touch(["no-such-dialog"], T0 + 6) == []
