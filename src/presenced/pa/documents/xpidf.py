"""`application/xpidf+xml`: the pre-PIDF presence format desk phones and Windows Messenger speak.

XPIDF comes from draft-rosenberg-impp-pidf (2000), "A Data Format for Presence Using XML"; it never
became an RFC but Microsoft (Windows Messenger 4.x/5.x, with the `<msnsubstatus>` extension) and
many SIP desk phones (busy-lamp fields) implemented it, and SER's pa module wrote it for watchers
whose Accept asked for it. We write what SER wrote, one <atom> per tuple:

    <?xml version="1.0" encoding="UTF-8"?>
    <!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">
    <presence>
    <presentity uri="sip:alice@example.com;method=SUBSCRIBE"/>
    <atom id="t1">
    <address uri="sip:alice@192.0.2.1" priority="0.8">
    <status status="open"/>
    <msnsubstatus substatus="online"/>
    </address>
    </atom>
    </presence>

- The DOCTYPE names the draft's DTD by public id only; clients never fetch it, some want it.
- presentity uri: the document entity with a `pres:` scheme turned into `sip:` (XPIDF predates
  the pres: URI), plus `;method=SUBSCRIBE` as the draft and SER did.
- address uri: the tuple's contact, or the presentity's URI when the tuple has none.
  priority: the contact priority as a q-value, 1.0 when unknown.
- A document without tuples gets one closed atom with id "none" at the presentity's URI (as SER
  did): clients treat an empty <presence> as malformed.
- Tuple and presentity notes are not written; phones ignore them and the draft's DTD varies.

msnsubstatus mapping (RFC 4480 activities of the tuple and of every person, first rule that
matches wins; a closed tuple is always "offline"):

    on-the-phone                                                         -> onthephone
    busy, meeting, appointment, presentation, performance, worship,
      steering, working                                                  -> busy
    meal, breakfast, dinner                                              -> outtolunch
    away, vacation, holiday, travel, in-transit, sleeping, shopping,
      permanent-absence, looking-for-work, spectator, playing, tv        -> away
    anything else, or no activity                                        -> online
"""

from __future__ import annotations

from presenced.pa.documents.pidf import format_priority
from presenced.pa.documents.xml import escape_attr
from presenced.pa.model import PresenceDoc

_PHONE = frozenset({"on-the-phone"})
_BUSY = frozenset(
    {
        "busy",
        "meeting",
        "appointment",
        "presentation",
        "performance",
        "worship",
        "steering",
        "working",
    }
)
_LUNCH = frozenset({"meal", "breakfast", "dinner"})
_AWAY = frozenset(
    {
        "away",
        "vacation",
        "holiday",
        "travel",
        "in-transit",
        "sleeping",
        "shopping",
        "permanent-absence",
        "looking-for-work",
        "spectator",
        "playing",
        "tv",
    }
)
_RULES = ((_PHONE, "onthephone"), (_BUSY, "busy"), (_LUNCH, "outtolunch"), (_AWAY, "away"))

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    '<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">\r\n'
    "<presence>\r\n"
)


def msn_substatus(basic: str, activities: frozenset[str] | set[str]) -> str:
    """The <msnsubstatus> value for a service with `basic` status and these RPID activities."""
    if basic != "open":
        return "offline"
    for names, value in _RULES:
        if not names.isdisjoint(activities):
            return value
    return "online"


def sip_uri(entity: str) -> str:
    """The presentity's SIP URI: `pres:alice@example.com` -> `sip:alice@example.com`."""
    if entity[:5].lower() == "pres:":
        return "sip:" + entity[5:]
    return entity


def encode_xpidf(doc: PresenceDoc) -> bytes:
    """`application/xpidf+xml` bytes for `doc` (see the module docstring for the mapping)."""
    uri = escape_attr(sip_uri(doc.entity))
    out = [_HEAD, f'<presentity uri="{uri};method=SUBSCRIBE"/>\r\n']
    person_acts = {a for p in doc.persons for a in p.activities}
    if not doc.tuples:
        out.append(
            f'<atom id="none">\r\n<address uri="{uri}" priority="1.0">\r\n'
            '<status status="closed"/>\r\n<msnsubstatus substatus="offline"/>\r\n'
            "</address>\r\n</atom>\r\n"
        )
    for t in doc.tuples:
        address = escape_attr(t.contact) if t.contact else uri
        priority = format_priority(t.priority if t.priority is not None else 1.0)
        sub = msn_substatus(t.basic, person_acts.union(t.activities))
        out.append(
            f'<atom id="{escape_attr(t.id)}">\r\n'
            f'<address uri="{address}" priority="{priority}">\r\n'
            f'<status status="{t.basic}"/>\r\n'
            f'<msnsubstatus substatus="{sub}"/>\r\n'
            "</address>\r\n</atom>\r\n"
        )
    out.append("</presence>\r\n")
    return "".join(out).encode("utf-8")
