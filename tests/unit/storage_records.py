"""Sample records for the storage backend tests (every field set, awkward values included)."""

from __future__ import annotations

from typing import Any

import msgspec

from presenced.pa.records import Binding, Publication, Subscription

_BINDING = Binding(
    aor="alice@example.com",
    contact="sip:alice@192.0.2.1:5060",
    expires_at=1_900_000_000.5,
    call_id="reg-1@192.0.2.1",
    cseq=7,
    q=0.8,
    peer="udp:192.0.2.1:5060",
    instance='"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
    user_agent="softphone/1.0",
)

_SUBSCRIPTION = Subscription(
    id="cid-1;tagL;tagR",
    presentity="alice@example.com",
    event="presence",
    source="registrar",
    call_id="cid-1",
    local_tag="tagL",
    remote_tag="tagR",
    local_uri="sip:alice@example.com",
    remote_uri="sip:bob@example.com",
    watcher="bob@example.com",
    remote_target="sip:bob@198.51.100.7:5062;transport=tcp",
    route_set=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"),
    local_cseq=3,
    remote_cseq=12,
    expires_at=1_900_000_100.25,
    content_type="application/pidf+xml",
    peer="tcp:198.51.100.7:5062",
    state="pending",
    event_id="e1",
    version=4,
    identity="bob@example.com",  # every field set: each backend must round-trip it
)

_PUBLICATION = Publication(
    etag="etag-1",
    presentity="alice@example.com",
    event="presence",
    expires_at=1_900_000_200.0,
    content_type="application/pidf+xml",
    body=b"<?xml version='1.0'?>\x00\xff\xfe<presence/>",
)


def binding(contact: str = _BINDING.contact, **kw: Any) -> Binding:
    return msgspec.structs.replace(_BINDING, contact=contact, **kw)


def subscription(sub_id: str = _SUBSCRIPTION.id, **kw: Any) -> Subscription:
    return msgspec.structs.replace(_SUBSCRIPTION, id=sub_id, **kw)


def publication(etag: str = _PUBLICATION.etag, **kw: Any) -> Publication:
    return msgspec.structs.replace(_PUBLICATION, etag=etag, **kw)
