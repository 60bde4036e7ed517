"""application/simple-message-summary (RFC 3842): message-waiting indication (MWI) bodies.

The grammar (RFC 3842 §5.2), with RFC 3261's HCOLON, SLASH, LPAREN, RPAREN (SWS around):

    message-summary  = msg-status-line CRLF [msg-account CRLF]
                       [*(msg-summary-line CRLF)] [*opt-msg-headers]
    msg-status-line  = "Messages-Waiting" HCOLON ("yes" / "no")
    msg-account      = "Message-Account" HCOLON Account-URI
    msg-summary-line = message-context-class HCOLON newmsgs SLASH oldmsgs
                       [LPAREN new-urgentmsgs SLASH old-urgentmsgs RPAREN]
    opt-msg-headers  = CRLF 1*(extension-header CRLF)
    msgcount         = 1*DIGIT   ; MUST NOT exceed 2^32-1

message-context-class comes from RFC 3458: voice-message, fax-message, pager-message,
multimedia-message, text-message, none. Names are case-insensitive (ABNF strings, RFC 5234).

Normalisation (`MessageSummary.body`, what watchers get): the status line is rewritten as
"Messages-Waiting: yes|no" and the account line as "Message-Account: <uri>"; summary lines and
the extension-header blocks (each after one blank line; folded continuation lines allowed) are
kept verbatim; runs of blank lines collapse into one; every line ends with CRLF. LF-only line
ends are accepted, a CR not followed by LF is not.

Refused with `DocumentError`: over `max_size` bytes, not UTF-8, control characters (C0 but TAB,
DEL, C1), a first line that is not Messages-Waiting yes/no, a second Messages-Waiting or
Message-Account, an account that is no URI, a line in the summary block that is not a known
class with counts, a duplicate class, a count over 2^32-1, an extension line that is no header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from presenced.pa.documents.xml import DocumentError
from presenced.pa.packages.base import EventPackage

CONTENT_TYPE = "application/simple-message-summary"
DEFAULT_MAX_SIZE = 8192
MAX_COUNT = 2**32 - 1

MESSAGE_CLASSES = frozenset(
    {"voice-message", "fax-message", "pager-message", "multimedia-message", "text-message", "none"}
)

_SWS = r"[ \t]*"
_HCOLON = _SWS + ":" + _SWS
_STATUS_RE = re.compile(r"messages-waiting" + _HCOLON + r"(yes|no)[ \t]*", re.IGNORECASE)
_ACCOUNT_RE = re.compile(r"message-account" + _HCOLON + r"(<?)([^\s<>]+)(>?)[ \t]*", re.IGNORECASE)
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[!-~]+")
# RFC 3261 §25.1 token
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_SUMMARY_RE = re.compile(
    rf"({_TOKEN}){_HCOLON}([0-9]+){_SWS}/{_SWS}([0-9]+)"
    rf"(?:{_SWS}\({_SWS}([0-9]+){_SWS}/{_SWS}([0-9]+){_SWS}\))?{_SWS}"
)
_HEADER_RE = re.compile(rf"{_TOKEN}{_SWS}:.*")
# Everything but TAB below 0x20, DEL, and the C1 block; CR and LF are line ends, checked apart.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ACCOUNT_SAFE_RE = re.compile(r"[\x00-\x20\x7f-\x9f<>]")


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A validated summary: the waiting flag, the account (if given) and the normalised body."""

    waiting: bool
    account: str | None
    body: bytes


def _lines(text: str) -> list[str]:
    if "\r" in text:
        if text.count("\r") != text.count("\r\n"):
            raise DocumentError("a CR that does not end a line")
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()  # the final line end, and trailing blank lines
    return lines


def _check_counts(line: str, m: re.Match[str]) -> None:
    for group in m.groups()[1:]:
        if group is not None and (len(group) > 10 or int(group) > MAX_COUNT):
            raise DocumentError(f"message count over 2^32-1 in {line[:60]!r} (RFC 3842 §5.2)")


def parse_message_summary(body: bytes, max_size: int = DEFAULT_MAX_SIZE) -> MessageSummary:
    """Validate an untrusted message-summary body (RFC 3842 §5.2) or raise `DocumentError`."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise DocumentError("body is not bytes")
    if len(body) > max_size:
        raise DocumentError(f"body of {len(body)} bytes exceeds the {max_size}-byte limit")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentError("body is not valid UTF-8") from None
    if _CONTROL_RE.search(text):
        raise DocumentError("control characters in a message summary")
    lines = _lines(text)
    if not lines:
        raise DocumentError("empty body: Messages-Waiting is required (RFC 3842 §5.2)")
    status = _STATUS_RE.fullmatch(lines[0])
    if status is None:
        raise DocumentError("the first line must be 'Messages-Waiting: yes|no' (RFC 3842 §5.2)")
    waiting = status.group(1).lower() == "yes"
    out = ["Messages-Waiting: " + ("yes" if waiting else "no")]
    account: str | None = None
    i = 1
    if i < len(lines) and lines[i][:15].lower() == "message-account":
        m = _ACCOUNT_RE.fullmatch(lines[i])
        if m is None or bool(m.group(1)) != bool(m.group(3)) or not _URI_RE.fullmatch(m.group(2)):
            raise DocumentError("Message-Account is not a URI (RFC 3842 §5.2)")
        account = m.group(2)
        out.append("Message-Account: " + account)
        i += 1
    seen: set[str] = set()
    while i < len(lines) and lines[i] != "":
        line = lines[i]
        m = _SUMMARY_RE.fullmatch(line)
        if m is None:
            if _STATUS_RE.fullmatch(line) or line[:15].lower() == "message-account":
                raise DocumentError(f"{line.split(':', 1)[0][:30]!r} out of place or repeated")
            raise DocumentError(f"not a message-summary line: {line[:60]!r} (RFC 3842 §5.2)")
        cls = m.group(1).lower()
        if cls not in MESSAGE_CLASSES:
            raise DocumentError(f"unknown message-context-class {m.group(1)[:30]!r} (RFC 3458)")
        if cls in seen:
            raise DocumentError(f"message class {m.group(1)[:30]!r} given twice")
        seen.add(cls)
        _check_counts(line, m)
        out.append(line)  # verbatim
        i += 1
    # opt-msg-headers: blocks of extension headers, each after a blank line
    in_block = False
    while i < len(lines):
        line = lines[i]
        i += 1
        if line == "":
            in_block = False
            continue
        if not in_block:
            out.append("")
            in_block = True
            if line[0] in " \t":
                raise DocumentError("a continuation line opens a header block")
        elif line[0] in " \t":
            out.append(line)  # folded header value (RFC 3261 §7.3.1)
            continue
        if not _HEADER_RE.fullmatch(line):
            raise DocumentError(f"not a message header: {line[:60]!r} (RFC 3842 §5.2)")
        out.append(line)
    return MessageSummary(waiting, account, ("\r\n".join(out) + "\r\n").encode("utf-8"))


def encode_message_summary(summary: MessageSummary | None, account: str) -> bytes:
    """The body for watchers of `account` (the AOR URI).

    Nothing published: "Messages-Waiting: no" with `account` as the Message-Account. A summary
    published without a Message-Account gets `account` inserted after the status line (RFC 3842
    §5.2 allows it; phones display it); one that names its own account is sent as published.
    """
    safe = _ACCOUNT_SAFE_RE.sub("", account)  # a URI has no whitespace or controls (no CRLF!)
    if summary is None:
        return b"Messages-Waiting: no\r\nMessage-Account: " + safe.encode("utf-8") + b"\r\n"
    if summary.account is not None or not safe:
        return summary.body
    status, rest = summary.body.split(b"\r\n", 1)
    return status + b"\r\nMessage-Account: " + safe.encode("utf-8") + b"\r\n" + rest


# --- the event package ---------------------------------------------------------------------


class MessageSummaryPackage(EventPackage):
    """`Event: message-summary` (RFC 3842): voicemail lamps. A voicemail system PUBLISHes the
    summary; watchers get the newest live one verbatim (counts and extension lines kept), or
    "Messages-Waiting: no" for the AOR while nothing is published. State: the newest
    `MessageSummary`, or None."""

    name = "message-summary"
    formats = (CONTENT_TYPE,)
    publish_formats = (CONTENT_TYPE,)

    def empty(self, resource: str) -> None:
        return None

    def compose(self, resource: str, parts: Mapping[str, object]) -> MessageSummary | None:
        published = parts.get("publish")
        return published if isinstance(published, MessageSummary) else None

    def decode_publication(self, body: bytes, content_type: str,
                           max_size: int) -> MessageSummary:
        return parse_message_summary(body, max_size=min(max_size, DEFAULT_MAX_SIZE))

    def compose_publications(self, resource: str,
                             publications: Sequence[object]) -> MessageSummary | None:
        summaries = [p for p in publications if isinstance(p, MessageSummary)]
        return summaries[-1] if summaries else None  # the newest content wins

    def encode(self, resource: str, state: object, content_type: str, now: float) -> bytes:
        return encode_message_summary(state if isinstance(state, MessageSummary) else None,
                                      f"sip:{resource}")
