"""The publication service against a fake driver and a failing storage: a PUBLISH whose write
fails is answered 500 and the publication state is reverted (the old publication still answers
its SIP-If-Match, the watchers hear nothing); an expiry whose delete fails is logged, the
publication still ends for the watchers, and the next expiry runs."""

from __future__ import annotations

import pytest
from service_fakes import pidf, publish, subscribe, world

from presenced.pa.model import PresenceDoc

ALICE = "alice@example.com"
BOB = "bob@example.com"


def basic(doc: object) -> list[str]:
    assert isinstance(doc, PresenceDoc)
    return [t.basic for t in doc.tuples]


async def test_publish_whose_write_fails_gets_500_and_the_old_publication_stays() -> None:
    w = await world()
    svc = w.publish
    await svc.publish(publish(pidf("open", "here")))
    first = w.net.responses[-1]
    assert first.status == 200
    etag = first.headers.get("SIP-ETag")
    assert etag
    await w.notifications.subscribe(subscribe(), ALICE, "registrar")
    w.answer_notifies()

    w.storage.failing.add("put_publication")
    await svc.publish(publish(pidf("closed", "gone"), if_match=etag))  # a modification
    assert w.net.statuses[-1] == 500
    assert basic(w.notifications.notifier.document(ALICE)) == ["open"]
    assert w.net.requests == []  # the watcher hears nothing of it
    await svc.publish(publish(if_match=etag))  # a refresh, failing too
    assert w.net.statuses[-1] == 500
    (stored,) = await w.storage.load_publications()
    assert stored.etag == etag

    # The disk is back: the old publication still answers its entity tag.
    w.storage.failing.clear()
    await svc.publish(publish(if_match=etag))
    refreshed = w.net.responses[-1]
    assert refreshed.status == 200 and refreshed.headers.get("SIP-ETag")
    assert w.net.requests == []  # a refresh changes nothing a watcher sees


async def test_removal_whose_delete_fails_keeps_the_publication() -> None:
    w = await world()
    svc = w.publish
    await svc.publish(publish(pidf("open")))
    etag = w.net.responses[-1].headers.get("SIP-ETag")
    w.storage.failing.add("delete_publication")
    await svc.publish(publish(if_match=etag, expires=0))
    assert w.net.statuses == [200, 500]
    assert basic(svc.part(ALICE)) == ["open"]
    w.storage.failing.clear()
    await svc.publish(publish(if_match=etag, expires=0))
    assert w.net.statuses[-1] == 200 and svc.part(ALICE) is None


async def test_expiry_whose_delete_fails_is_logged_and_the_next_expiry_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    w = await world()
    svc = w.publish
    await svc.publish(publish(pidf("open"), expires=600))
    await svc.publish(publish(pidf("open", user="bob"), expires=1200, user="bob"))
    await w.notifications.subscribe(subscribe(), ALICE, "registrar")
    await w.notifications.subscribe(subscribe(user="bob", call_id="sub2", from_tag="w2"), BOB,
                                    "registrar")
    w.answer_notifies()
    w.storage.failing.add("delete_publication")

    w.clock.now += 601
    await svc._expire_due()  # what the service's one timer runs
    assert "storage delete of expired publication failed" in caplog.text
    assert svc.part(ALICE) is None
    (notify,) = w.net.notifies()
    assert b"pres:alice@example.com" in notify.request.body
    assert b"<basic>open</basic>" not in notify.request.body
    assert svc.pubs.next_deadline() is not None  # bob's is still due
    w.answer_notifies()

    w.clock.now += 600
    await svc._expire_due()
    assert svc.part(BOB) is None and svc.pubs.next_deadline() is None
    (notify,) = w.net.notifies()
    assert b"pres:bob@example.com" in notify.request.body
