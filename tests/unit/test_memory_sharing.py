"""A million subscriptions in memory (issue 11): loaded records share what repeats, and the
cyclic collector does not track them. Sharing changes no value: every field loads back equal.
"""

from __future__ import annotations

import gc
from pathlib import Path

from storage_records import binding, publication, subscription

from presenced.pa.records import Subscription
from presenced.pa.subscription import Notifier, PaPolicy
from presenced.sip.endpoint import Peer
from presenced.storage.sqlite import SqliteStorage


def test_records_are_not_tracked_by_the_cyclic_collector() -> None:
    """Text, numbers and tuples of text cannot form a cycle through a record."""
    for record in (binding(), subscription(route_set=("<sip:p1;lr>",)), publication()):
        assert not gc.is_tracked(record)


async def test_loaded_subscriptions_share_repeated_columns_and_keep_every_value(
    tmp_path: Path,
) -> None:
    store = SqliteStorage(tmp_path / "p.db")
    await store.open()
    written = [subscription(f"s{i}", presentity="alice@example.com", watcher=f"w{i}@example.com",
                            route_set=("<sip:p1.example.com;lr>",) if i == 0 else ())
               for i in range(3)]
    for s in written:
        await store.put_subscription(s)
    loaded = sorted(await store.load_subscriptions(), key=lambda s: s.id)
    await store.close()
    assert loaded == written
    a, b, c = loaded
    assert a.presentity is b.presentity is c.presentity
    assert a.content_type is b.content_type and a.event is c.event
    assert a.watcher is not b.watcher  # distinct values stay distinct


def _contact(presentity: str, flow: Peer | str) -> str:
    return f"sip:{presentity}"


def test_restored_dialogs_behind_one_flow_share_its_peer() -> None:
    notifier = Notifier(PaPolicy(), lambda: "tag", _contact)
    records: list[Subscription] = [
        subscription(f"s{i}", peer="udp:192.0.2.7:5060", watcher=f"w{i}@example.com",
                     identity=None)  # without [auth]: the source address is the key
        for i in range(2)
    ] + [subscription("s9", peer="udp:192.0.2.8:5060", identity=None)]
    notifier.load(records, now=0.0)
    d0, d1, d9 = (notifier.dialogs[k] for k in ("s0", "s1", "s9"))
    assert d0.flow is d1.flow and d0.flow == Peer("udp", "192.0.2.7", 5060)
    assert d9.flow == Peer("udp", "192.0.2.8", 5060)
    assert d0.limit_key is d1.limit_key == "ip:192.0.2.7"
