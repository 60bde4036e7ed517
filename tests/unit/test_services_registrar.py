"""The registrar service against a fake driver and a failing storage: a REGISTER whose write
fails is answered 500, the AOR's bindings are as they were and no watcher hears of it; an
expiry whose delete fails is logged, the binding still ends for the watchers, and the next
expiry runs."""

from __future__ import annotations

import pytest
from service_fakes import register, subscribe, world

ALICE = "alice@example.com"
BOB = "bob@example.com"
A = "sip:alice@192.0.2.20:5060"
B = "sip:alice@192.0.2.21:5060"


async def test_register_whose_write_fails_gets_500_restores_bindings_and_sends_no_notify() -> None:
    w = await world()
    reg = w.registrar
    await reg.register(register(contact=A))
    await w.notifications.subscribe(subscribe(), ALICE, "registrar")
    w.answer_notifies()
    before = dict(reg.bindings[ALICE])
    deadline = reg.expiry.next_deadline()

    w.storage.failing.add("put_binding")
    await reg.register(register(contact=B, cseq=2, expires=1200))
    assert w.net.statuses[-1] == 500
    assert reg.bindings[ALICE] == before and reg.total == 1
    assert reg.expiry.next_deadline() == deadline  # B's expiry is not armed
    assert w.net.requests == []  # the watcher hears nothing of a change that did not happen
    assert [b.contact for b in await w.storage.load_bindings()] == [A]

    # An AOR's first REGISTER failing leaves no AOR behind.
    await reg.register(register(user="bob", contact="sip:bob@192.0.2.22", call_id="reg2"))
    assert w.net.statuses[-1] == 500
    assert BOB not in reg.bindings and reg.total == 1

    w.storage.failing.clear()
    await reg.register(register(contact=B, cseq=3))
    assert w.net.statuses[-1] == 200 and set(reg.bindings[ALICE]) == {A, B} and reg.total == 2


async def test_unregister_whose_delete_fails_keeps_the_binding() -> None:
    w = await world()
    reg = w.registrar
    await reg.register(register(contact=A))
    w.storage.failing.add("delete_binding")
    await reg.register(register(contact=A, cseq=2, expires=0))
    assert w.net.statuses == [200, 500]
    assert set(reg.bindings[ALICE]) == {A} and reg.total == 1
    assert reg.part(ALICE) is not None  # still registered, as storage says


async def test_expiry_whose_delete_fails_is_logged_and_the_next_expiry_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    w = await world()
    reg = w.registrar
    await reg.register(register(contact=A, expires=600))
    await reg.register(register(user="bob", contact="sip:bob@192.0.2.22", expires=1200,
                                call_id="reg2"))
    await w.notifications.subscribe(subscribe(), ALICE, "registrar")
    await w.notifications.subscribe(subscribe(user="bob", call_id="sub2", from_tag="w2"), BOB,
                                    "registrar")
    w.answer_notifies()
    w.storage.failing.add("delete_binding")

    w.clock.now += 601
    await reg._expire_due()  # what the service's one timer runs
    assert "storage delete of expired bindings failed" in caplog.text
    assert ALICE not in reg.bindings and reg.total == 1
    (notify,) = w.net.notifies()  # alice's watcher sees her go offline
    assert b"<basic>closed</basic>" in notify.request.body
    assert reg.expiry.next_deadline() is not None  # bob's expiry is still due
    w.answer_notifies()

    w.clock.now += 600
    await reg._expire_due()
    assert reg.bindings == {} and reg.total == 0
    (notify,) = w.net.notifies()
    assert b"pres:bob@example.com" in notify.request.body
    assert b"<basic>closed</basic>" in notify.request.body
    assert reg.expiry.next_deadline() is None
