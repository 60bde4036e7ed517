"""Conditional requests on XCAP resources (RFC 4825 §7.11, RFC 9110 §13).

An XCAP entity tag belongs to the whole document: an element or attribute is addressed inside
a document, so its preconditions compare the document's tag (§7.11). `evaluate` answers what a
request's If-Match / If-None-Match make of the current tag: go on (None), 412, or 304 for a GET
whose If-None-Match matches.
"""

from __future__ import annotations

import re

__all__ = ["ANY", "evaluate", "parse_etag_list", "quote_etag"]

ANY = "*"
# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text
_ETAG_RE = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
_MAX_TAGS = 64


def quote_etag(tag: str) -> str:
    return f'"{tag}"'


def parse_etag_list(value: str) -> list[tuple[bool, str]] | None:
    """`*` -> None; otherwise [(weak, opaque-tag), ...]. A malformed member is skipped (it
    can match nothing), as is an unquoted tag (some clients send them: taken as strong)."""
    value = value.strip()
    if value == ANY:
        return None
    out: list[tuple[bool, str]] = []
    for member in value.split(","):
        member = member.strip()
        if not member:
            continue
        m = _ETAG_RE.fullmatch(member)
        if m is not None:
            out.append((m.group(1) is not None, m.group(2)))
        elif '"' not in member and member.isprintable() and " " not in member:
            out.append((False, member))
        if len(out) >= _MAX_TAGS:
            break
    return out


def evaluate(method: str, current: str | None, if_match: str | None,
             if_none_match: str | None) -> int | None:
    """None when the request may proceed; else the status to answer (412, or 304)."""
    if if_match is not None:
        tags = parse_etag_list(if_match)
        if tags is None:
            if current is None:
                return 412
        # If-Match uses the strong comparison: a weak tag never matches (RFC 9110 §13.1.1).
        elif current is None or not any(not weak and tag == current for weak, tag in tags):
            return 412
    if if_none_match is not None:
        tags = parse_etag_list(if_none_match)
        matched = current is not None and (tags is None or any(tag == current for _, tag in tags))
        if matched:
            return 304 if method in ("GET", "HEAD") else 412
    return None
