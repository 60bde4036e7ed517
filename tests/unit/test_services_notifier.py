"""The notifier service against a fake driver and a failing storage: a SUBSCRIBE whose write
fails is answered 500 and leaves nothing behind; a refresh whose write fails is answered 500
and its dialog is not left waiting for a NOTIFY that never went; an expiry whose delete fails
is logged and the next one still runs."""

from __future__ import annotations

import pytest
from service_fakes import WATCHER, FailingStorage, FakeNetwork, subscribe, world

from presenced.pa.model import PresenceDoc, Tuple
from presenced.services.notifier import NotifierService
from presenced.services.ports import Network
from presenced.sip.endpoint import Peer

ALICE = "alice@example.com"
OPEN = PresenceDoc("pres:alice@example.com", (Tuple("t1", "open"),))


def test_the_fake_driver_is_a_network_port() -> None:
    net: Network = FakeNetwork()  # mypy checks the fake against the ports
    assert net.has_flow(WATCHER) and not net.has_flow(Peer("tcp", "192.0.2.10", 5070, 7))


async def test_subscribe_whose_write_fails_gets_500_and_leaves_nothing_behind() -> None:
    w = await world(max_subscriptions_per_watcher=1)
    svc = w.notifications
    watched: list[tuple[str, str, bool]] = []
    svc.watch_listeners.append(lambda p, s, started: watched.append((p, s, started)))
    w.storage.failing.add("put_subscription")
    await svc.subscribe(subscribe(), ALICE, "registrar")
    assert w.net.statuses == [500]
    assert w.net.requests == []  # no NOTIFY for a subscription that does not exist
    n = svc.notifier
    assert n.dialogs == {} and n.per_watcher == {}
    res = n.resources.get(("presence", ALICE))
    assert res is None or not res.watchers
    assert n.next_deadline() is None and watched == []
    assert await w.storage.load_subscriptions() == []

    # The disk is back: the same watcher (limit 1: its count was given back) subscribes.
    w.storage.failing.clear()
    await svc.subscribe(subscribe(call_id="sub2"), ALICE, "registrar")
    assert w.net.statuses == [500, 200]
    assert len(n.dialogs) == 1 and len(w.net.notifies()) == 1
    assert watched == [(ALICE, "registrar", True)]
    assert len(await w.storage.load_subscriptions()) == 1


async def test_refresh_whose_write_fails_gets_500_and_the_dialog_is_not_stuck() -> None:
    w = await world()
    svc = w.notifications
    await svc.subscribe(subscribe(), ALICE, "registrar")
    ok = w.net.responses[-1]
    assert ok.status == 200 and ok.to.tag
    assert w.answer_notifies() == 1
    (dlg,) = svc.notifier.dialogs.values()

    w.storage.failing.add("put_subscription")
    await svc.subscribe(subscribe(cseq=2, to_tag=ok.to.tag), ALICE, "registrar")
    assert w.net.statuses[-1] == 500
    assert w.net.requests == []  # the refresh's NOTIFY was never sent...
    assert not dlg.outstanding  # ...so the dialog does not wait for its answer

    # The next change reaches the watcher at once (a stuck dialog would only mark it dirty).
    w.storage.failing.clear()
    await svc.set_part(ALICE, "registrar", OPEN)
    (notify,) = w.net.notifies()
    assert b"<basic>open</basic>" in notify.request.body
    await svc.subscribe(subscribe(cseq=3, to_tag=ok.to.tag), ALICE, "registrar")
    assert w.net.statuses[-1] == 200


async def test_expiry_whose_delete_fails_is_logged_and_the_next_expiry_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    w = await world()
    svc = w.notifications
    await svc.subscribe(subscribe(call_id="a", expires=600), ALICE, "registrar")
    await svc.subscribe(subscribe(call_id="b", expires=1200, from_tag="w2"), ALICE, "registrar")
    w.answer_notifies()
    w.storage.failing.add("delete_subscription")

    w.clock.now += 601
    await svc._expire()  # what the service's one timer runs
    assert "storage write failed" in caplog.text
    (final,) = w.net.notifies()  # the watcher still hears that it ended
    assert final.request.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert len(svc.notifier.dialogs) == 2  # the ended one waits for its final NOTIFY's answer
    assert svc.notifier.next_deadline() is not None  # the second one's expiry is still armed

    w.answer_notifies()
    w.clock.now += 600
    await svc._expire()
    (final,) = w.net.notifies()
    assert final.request.headers.get("Subscription-State") == "terminated;reason=timeout"
    w.answer_notifies()
    assert svc.notifier.dialogs == {} and svc.notifier.next_deadline() is None


async def test_notify_to_a_closed_tcp_flow_is_not_dialled() -> None:
    """`has_flow` is asked through the port: a gone TCP watcher's NOTIFY fails at once."""
    net, storage = FakeNetwork(), FailingStorage()
    await storage.open()
    w = await world()
    svc = NotifierService(w.notifications.notifier, net, storage, w.clock)
    tcp = Peer("tcp", "192.0.2.10", 40000, conn_id=3)
    ev = subscribe()
    ev = type(ev)(ev.request, tcp, ev.txn)
    net.flows.add(tcp)
    await svc.subscribe(ev, ALICE, "registrar")
    assert net.statuses == [200] and len(net.notifies()) == 1
    net.requests.clear()
    svc.on_notify_result(next(iter(svc.notifier.dialogs)), 200)
    net.flows.clear()  # the watcher hung up
    await svc.set_part(ALICE, "registrar", OPEN)
    assert net.notifies() == [] and svc.notify_failures == 1
    assert svc.notifier.dialogs == {}
