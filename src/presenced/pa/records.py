"""The records the core decides about and every storage backend persists.

They belong to the core (`pa/`): the registrar's bindings, the notifier's subscription dialogs,
the publications (RFC 3903). `storage/` imports them; nothing in the core imports `storage/`.

`gc=False`: the fields are text, numbers and tuples of text, which can never reach back to
the record, so the cyclic collector need not track a million of them (16 bytes each less,
and no traversal; issue 11).
"""

from __future__ import annotations

import msgspec


class Binding(msgspec.Struct, frozen=True, gc=False):
    """One registered contact of an address-of-record (RFC 3261 §10)."""

    aor: str  # "alice@example.com"
    contact: str  # the Contact URI as registered, e.g. "sip:alice@127.0.0.1:5070;transport=udp"
    expires_at: float  # wall-clock epoch seconds
    call_id: str
    cseq: int
    q: float | None = None
    peer: str = ""  # where the REGISTER came from: "udp:127.0.0.1:5070"
    instance: str | None = None  # +sip.instance (RFC 5626)
    user_agent: str | None = None


class Subscription(msgspec.Struct, frozen=True, gc=False):
    """One subscription dialog (RFC 6665 §4) as the presence agent persists it."""

    id: str  # dialog id: "<call-id>;<local tag>;<remote tag>"
    presentity: str  # "alice@example.com"
    event: str  # "presence"
    source: str  # "registrar" | "jabber"
    call_id: str
    local_tag: str  # our To-tag
    remote_tag: str  # the watcher's From-tag
    local_uri: str  # To URI of the SUBSCRIBE
    remote_uri: str  # From URI of the SUBSCRIBE (the watcher)
    watcher: str  # watcher AOR "bob@example.com"
    remote_target: str  # the watcher's Contact URI
    route_set: tuple[str, ...]  # from Record-Route, in the order NOTIFYs use it
    local_cseq: int  # CSeq of our last NOTIFY
    remote_cseq: int  # CSeq of the watcher's last SUBSCRIBE
    expires_at: float  # wall-clock epoch seconds
    content_type: str  # negotiated body format, e.g. "application/pidf+xml"
    peer: str  # transport and address the SUBSCRIBE came from: "udp:127.0.0.1:5070"
    state: str = "active"  # "active" | "pending"
    event_id: str | None = None  # Event header id parameter
    version: int = 0
    # The authenticated "user@domain" that subscribed ([auth]); None without authentication.
    # The watcher rules decide for and the per-watcher cap counts: the From is only a claim.
    identity: str | None = None


class Publication(msgspec.Struct, frozen=True, gc=False):
    """One event state publication (RFC 3903 §4)."""

    etag: str
    presentity: str
    event: str
    expires_at: float
    content_type: str
    body: bytes


class RulesDocument(msgspec.Struct, frozen=True):
    """One user's presence-rules document (RFC 5025 `pres-rules`, an RFC 4745 ruleset), as
    the XCAP server and the operator's tools stored it: whole, with its entity tag."""

    aor: str  # "alice@example.com"
    document: bytes  # the application/auth-policy+xml document as stored (validated)
    etag: str
    updated: float  # wall-clock epoch seconds of the last put


class EndedWatchers(msgspec.Struct, frozen=True):
    """The ended watchers of one presentity's presence that no presence.winfo document has shown
    yet ("offline winfo", RFC 3857): kept until its next winfo subscription, bounded per
    presentity ([pa] limits). Each entry is (id, uri, status, event) as RFC 3858 lists it."""

    presentity: str  # "alice@example.com"
    watchers: tuple[tuple[str, str, str, str], ...]
    updated: float  # wall-clock epoch seconds of the last write


# The records' msgpack form: one encoding for the Redis storage and for every node of a cluster
# (cluster/ writes and reads the same values).
encode_msgpack = msgspec.msgpack.Encoder().encode
decode_binding = msgspec.msgpack.Decoder(Binding).decode
decode_subscription = msgspec.msgpack.Decoder(Subscription).decode
decode_publication = msgspec.msgpack.Decoder(Publication).decode
decode_rules = msgspec.msgpack.Decoder(RulesDocument).decode
decode_ended = msgspec.msgpack.Decoder(EndedWatchers).decode
