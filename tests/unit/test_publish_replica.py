"""Publications as a cluster replica (sans-IO): another node's committed publications are
taken and dropped as they are, and report the resources that changed."""

from __future__ import annotations

from test_publish_decisions import counter, pidf

from presenced.pa.publish import Publications, PublishPolicy
from presenced.pa.records import Publication

T0 = 1_700_000_000.0


def pub(etag: str, basic: str = "open", expires_at: float = T0 + 600) -> Publication:
    return Publication(etag, "alice@example.com", "presence", expires_at,
                       "application/pidf+xml", pidf(basic=basic))


def replica() -> Publications:
    return Publications(PublishPolicy(), make_etag=counter("e"))


def test_apply_takes_replaces_and_ignores_repeats() -> None:
    p = replica()
    assert p.apply(pub("a"), None, T0) == {("presence", "alice@example.com")}
    assert p.apply(pub("a"), None, T0) == set()  # the same record again: no change
    assert p.apply(pub("b", "closed"), "a", T0) == {("presence", "alice@example.com")}
    assert p.get("a") is None and p.get("b") == pub("b", "closed")
    assert [x.etag for x in p.all()] == ["b"]


def test_discard_and_expired_records() -> None:
    p = replica()
    p.apply(pub("a"), None, T0)
    assert p.discard("a") == ("presence", "alice@example.com")
    assert p.discard("a") is None and len(p) == 0
    assert p.apply(pub("old", expires_at=T0 - 1), None, T0) == set()  # already over
    assert len(p) == 0
