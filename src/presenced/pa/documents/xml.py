"""The one hardened XML parser for every untrusted body (PUBLISH bodies, XMPP payloads, ...).

Threats and what stops each one:

- Size: the body is capped *before* lxml sees it (`max_size`, 64 KiB by default), so an oversized
  peer gets a `DocumentError`, never a MemoryError.
- Entity expansion (billion laughs), external entities (`file:///etc/passwd`), parameter-entity
  XXE and DTD fetches: presence documents never need a DTD, so any DOCTYPE is refused outright —
  first by a cheap byte scan for `<!DOCTYPE` / `<!ENTITY`, then by looking at the parsed tree's
  `docinfo` in case the scan was dodged. The parser itself also runs with `resolve_entities=False`,
  `load_dtd=False`, `no_network=True` and `huge_tree=False` (libxml2's depth and size guards).
- Encodings: SIP presence bodies are UTF-8 (RFC 3863 §3.1 examples; RFC 3023 for +xml types). We
  insist on it: invalid UTF-8, or a declaration of another encoding, is refused (a pure-ASCII
  body that declares an ISO-8859/Windows code page is let through: it reads the same). That also keeps the
  byte scan above honest (a UTF-16 body could hide `<!DOCTYPE` from it).
- Comments and processing instructions are dropped while parsing, so codecs never see them.

`parse_xml` raises `DocumentError` and nothing else, for any input.
"""

from __future__ import annotations

from lxml import etree

DEFAULT_MAX_SIZE = 64 * 1024

# Encodings we accept in the XML declaration; lxml reports the declared name (or UTF-8 if absent).
_OK_ENCODINGS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_ASCII_SUPERSETS = ("iso-8859-", "iso8859-", "latin", "windows-125", "cp125")


class DocumentError(Exception):
    """A body that is not an acceptable document. The peer's fault: answer 400 (or 415/488)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _make_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=False,
        collect_ids=False,
    )


# One parser for the process: the SIP core runs on one thread, and lxml parsers are reusable.
_PARSER = _make_parser()


def parse_xml(body: object, max_size: int = DEFAULT_MAX_SIZE) -> etree._Element:
    """Parse an untrusted XML body and return its root element, or raise `DocumentError`.
    `body` is typed `object` because anything that is not bytes-like is refused here with a
    `DocumentError`, also in the mypyc build, whose signature checks would raise TypeError."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise DocumentError("body is not bytes")
    if len(body) > max_size:
        raise DocumentError(f"body of {len(body)} bytes exceeds the {max_size}-byte limit")
    data = bytes(body)
    if not data.strip():
        raise DocumentError("empty body")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError("body is not valid UTF-8") from None
    # Cheap check first: no presence format needs a DTD, and refusing it here avoids parsing one.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise DocumentError("DOCTYPE and entity declarations are not allowed")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise DocumentError(f"not well-formed XML: {exc.msg}") from None
    except Exception as exc:  # any other lxml/libxml2 failure is still the body's fault
        raise DocumentError(f"unparseable XML: {type(exc).__name__}") from None
    if root is None:
        raise DocumentError("no root element")
    docinfo = root.getroottree().docinfo
    # (lxml-stubs lack DocInfo.doctype, hence getattr)
    if (
        getattr(docinfo, "doctype", "")
        or docinfo.internalDTD is not None
        or docinfo.externalDTD is not None
    ):
        raise DocumentError("DOCTYPE and entity declarations are not allowed")
    encoding = (docinfo.encoding or "utf-8").lower()
    # An ASCII-only body reads the same in any ISO-8859/Windows code page some old clients declare.
    if encoding not in _OK_ENCODINGS and not (
        data.isascii() and encoding.startswith(_ASCII_SUPERSETS)
    ):
        raise DocumentError(f"encoding {docinfo.encoding!r} is not UTF-8")
    return root


# --- Writing ---------------------------------------------------------------------------------
# The encoders build documents as strings (5 µs against lxml's 13 µs for a two-tuple PIDF,
# measured on the dev machine). These two helpers are the only escaping they use.
#
# XML 1.0 cannot carry C0 controls other than TAB/LF/CR, lone surrogates, U+FFFE or U+FFFF at all,
# not even as character references, so they are dropped: the output is always well-formed. CR is
# written as &#13; so that the end-of-line normalisation of XML 1.0 §2.11 does not turn it into LF,
# and LF as &#10;, so no line break of a publisher's text reaches the body's bytes (a line-based
# reader behind a proxy, or a cross-protocol listener, must not see lines the publisher wrote);
# in attributes TAB and LF are written as references so that §3.3.3 normalisation keeps them.

_FORBIDDEN = "".join(
    chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF)
)
_DROP = dict.fromkeys(map(ord, _FORBIDDEN))
_DROP.update(dict.fromkeys(range(0xD800, 0xE000)))
_TEXT_SPECIAL = frozenset("&<>\r\n" + _FORBIDDEN)
_ATTR_SPECIAL = frozenset('&<>"\r\n\t' + _FORBIDDEN)


def xml_chars(s: str) -> str:
    """`s` without the characters XML 1.0 cannot carry at all (for text handed to lxml, which
    escapes the rest itself)."""
    return s.translate(_DROP)


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def escape_text(s: str) -> str:
    """Escape `s` for use as element content."""
    if s.isascii() and s.isprintable():  # fast path: nothing but printable ASCII
        if "&" not in s and "<" not in s and ">" not in s:
            return s
    elif _TEXT_SPECIAL.isdisjoint(s) and not _has_surrogate(s):
        return s
    s = s.translate(_DROP)
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;").replace("\n", "&#10;"))


def escape_attr(s: str) -> str:
    """Escape `s` for use inside a double-quoted attribute value."""
    if s.isascii() and s.isprintable():
        if "&" not in s and "<" not in s and ">" not in s and '"' not in s:
            return s
    elif _ATTR_SPECIAL.isdisjoint(s) and not _has_surrogate(s):
        return s
    s = s.translate(_DROP)
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\r", "&#13;")
        .replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )
