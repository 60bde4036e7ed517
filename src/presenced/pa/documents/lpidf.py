"""`text/lpidf`: SER's "lightweight PIDF", a few SIP-header-like text lines.

SER's pa module offered it to minimal clients that could not parse XML. It is not a standard:
the whole format is what SER wrote, which is

    To: <sip:alice@example.com>\\r\\n
    Contact: <sip:alice@192.0.2.1>;q=0.8\\r\\n
    Contact: <sip:alice@198.51.100.7>;q=0.0\\r\\n

- one `To:` line with the presentity's URI (a `pres:` entity is written as `sip:`);
- one `Contact:` line per tuple that has a contact, in tuple order. The q parameter carries the
  status the way SER's pa module did: an open tuple gets its contact priority (1.0 when unknown),
  a closed tuple gets q=0.0, i.e. "known but not reachable". Tuples without a contact are left
  out; notes, activities and timestamps have no place in the format.

The lines look like SIP headers, so a URI that carries CR, LF, "<" or ">" would let a publisher
inject lines into a watcher's body: those characters are removed.
"""

from __future__ import annotations

from presenced.pa.documents.pidf import format_priority
from presenced.pa.documents.xpidf import sip_uri
from presenced.pa.model import PresenceDoc

_UNSAFE = dict.fromkeys(map(ord, "\r\n<>\x00"))


def _clean(uri: str) -> str:
    return uri.translate(_UNSAFE)


def encode_lpidf(doc: PresenceDoc) -> bytes:
    """`text/lpidf` bytes for `doc` (see the module docstring for the format)."""
    out = [f"To: <{_clean(sip_uri(doc.entity))}>\r\n"]
    for t in doc.tuples:
        if not t.contact:
            continue
        if t.basic == "open":
            q = format_priority(t.priority if t.priority is not None else 1.0)
        else:
            q = "0.0"
        out.append(f"Contact: <{_clean(t.contact)}>;q={q}\r\n")
    return "".join(out).encode("utf-8", "replace")
