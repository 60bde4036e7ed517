"""XCAP URIs (RFC 4825 §6): which document, and which node inside it.

    /xcap-root/<auid>/users/<xui>/<document path>[/~~/<node selector>][?<xmlns bindings>]
    /xcap-root/<auid>/global/<document path>[/~~/<node selector>]

The document selector is split on "/" before any segment is percent-decoded, so an XUI
`sip:alice@example.com` may come as it is or escaped (`sip%3Aalice%40example.com`) and a `%2F`
never makes a new segment. The node selector after the `~~` segment is percent-decoded as a
whole (§6.3: its brackets, quotes and `@` usually come escaped) and handed to `selectors`. The
query holds namespace bindings for the selector's prefixes (§6.4, the XPointer xmlns()
scheme): `?xmlns(cp=urn:ietf:params:xml:ns:common-policy)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from presenced.sip.errors import ParseError
from presenced.sip.uri import parse_uri
from presenced.xcap.errors import XcapError

__all__ = ["DEFAULT_MAX_URI_LENGTH", "DEFAULT_ROOT", "XcapUri", "parse_xcap_uri", "xui_aor"]

DEFAULT_ROOT = "/xcap-root"
DEFAULT_MAX_URI_LENGTH = 4096
_MAX_BINDINGS = 32

# XPointer xmlns() scheme part (XPointer xmlns() §2): xmlns( NCName = EscapedNamespaceName ).
_NCNAME = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_XMLNS_RE = re.compile(rf"\s*xmlns\(\s*({_NCNAME})\s*=\s*([^()\s]+)\s*\)")


@dataclass(frozen=True, slots=True)
class XcapUri:
    """A parsed XCAP URI. `xui` is None in the global tree; `node` None for the whole document."""

    auid: str
    xui: str | None
    document: str  # the path below the user's (or the global) directory, e.g. "index"
    node: str | None = None
    namespaces: tuple[tuple[str, str], ...] = ()  # (prefix, namespace URI) from the query

    @property
    def is_global(self) -> bool:
        return self.xui is None

    def document_path(self, root: str = DEFAULT_ROOT) -> str:
        """The document's own URI path (what a no-parent <ancestor> may name)."""
        tree = "global" if self.xui is None else f"users/{self.xui}"
        return f"{root}/{self.auid}/{tree}/{self.document}"


def _decode(segment: str, what: str) -> str:
    try:
        text = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise XcapError(400, f"{what} is not UTF-8 once percent-decoded") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise XcapError(400, f"{what} holds a control character")
    return text


def parse_xcap_uri(target: str, root: str = DEFAULT_ROOT,
                   max_length: int = DEFAULT_MAX_URI_LENGTH) -> XcapUri:
    """Parse an HTTP request-target (path and query, as sent). Raises `XcapError`: 414 when
    longer than `max_length`, 404 outside the root or naming no document, 400 when broken."""
    if len(target) > max_length:
        raise XcapError(414, f"request-target longer than {max_length} characters")
    path, _, query = target.partition("?")
    if "#" in path:
        raise XcapError(400, "fragment in request-target")
    if not path.startswith(root + "/"):
        raise XcapError(404, "not under the XCAP root")
    rest = path[len(root) + 1:]
    doc_part, sep, node_part = rest.partition("/~~/")
    if not sep and rest.endswith("/~~"):
        raise XcapError(400, "empty node selector")
    segments = doc_part.split("/")
    if len(segments) < 3 or any(not s for s in segments):
        raise XcapError(404, "no document named (a directory, or an empty segment)")
    auid = _decode(segments[0], "AUID")
    tree = segments[1]
    if tree == "global":
        xui = None
        doc_segments = segments[2:]
    elif tree == "users":
        if len(segments) < 4:
            raise XcapError(404, "no document named below the user's directory")
        xui = _decode(segments[2], "XUI")
        doc_segments = segments[3:]
    else:
        raise XcapError(404, f"unknown tree {tree!r} (users or global)")
    names = [_decode(s, "document path") for s in doc_segments]
    if any(n in (".", "..") or "/" in n for n in names):
        raise XcapError(400, "dot segments or an escaped '/' in the document path")
    node = None
    if sep:
        if not node_part:
            raise XcapError(400, "empty node selector")
        node = _decode(node_part, "node selector")
    bindings: list[tuple[str, str]] = []
    if query:
        if node is None:
            raise XcapError(400, "a query without a node selector")
        text = _decode(query, "query")
        pos = 0
        while pos < len(text):
            m = _XMLNS_RE.match(text, pos)
            if m is None:
                if not text[pos:].strip():
                    break
                raise XcapError(400, "the query is not a list of xmlns(prefix=namespace)")
            bindings.append((m.group(1), m.group(2)))
            if len(bindings) > _MAX_BINDINGS:
                raise XcapError(400, f"more than {_MAX_BINDINGS} namespace bindings")
            pos = m.end()
    return XcapUri(auid, xui, "/".join(names), node, tuple(bindings))


def xui_aor(xui: str) -> str:
    """The AOR ("user@host") an XUI names: `sip:alice@Example.COM` -> "alice@example.com"
    (the form the rules store and the authenticated identity use). Raises XcapError(404) for
    an XUI that is not a SIP URI with a user part (no such user can exist)."""
    if ":" not in xui.partition("@")[0] and "@" in xui:
        xui = "sip:" + xui  # some clients leave the scheme out of the XUI
    try:
        uri = parse_uri(xui)
        user = uri.user_unescaped
    except ParseError:
        raise XcapError(404, "the XUI is not a SIP URI") from None
    if not uri.is_sip or user is None or not user:
        raise XcapError(404, "the XUI is not a SIP URI with a user part")
    return uri.aor
