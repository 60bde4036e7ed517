"""application/dialog-info+xml (RFC 4235): PUBLISHed dialog state in, one document per watcher out.

Theory of operation. A publisher (Kamailio's pua_dialoginfo, a PBX, a phone) PUBLISHes a full
dialog-info document for an AOR. `parse_dialog_info` validates it and keeps each <dialog>
element as canonical bytes (`Dialog.xml`): every attribute and child — local/remote identity,
target and its params, duration, the state's event/code attributes, extension elements — so
the notifier copies it verbatim into what watchers get without understanding it. The notifier
keeps one `DialogInfo` per live publication; `compose_dialogs` merges them (oldest first) into
the AOR's dialog set, and `encode_dialog_info` writes the document for one watcher, whose
`version` is that watcher's own counter (RFC 4235 §4.1). Fanning one change out to many
watchers costs one `encode_dialog_info_template` and one concatenation per watcher.

Decisions:
- Partial publications (state="partial") are refused by default: merging them needs the previous
  document of the same publication, which the PUBLISH layer replaces wholesale (RFC 3903). Publish
  full state (pua_dialoginfo does). `accept_partial=True` is for reading NOTIFYs as a watcher.
- Entity: the published `entity` is read and kept, but watchers get the AOR they subscribed to.
- Duplicate dialog ids inside one document are refused (the id is the dialog's key, §4.1.1).
- Unknown elements/attributes are kept (the schema allows extensions in other namespaces).

Canonical form of `Dialog.xml`: a standalone element `<dialog xmlns="urn:...:dialog-info" ...>`,
whitespace-only text between elements dropped, other text kept, raw line breaks written as
`&#10;` (so no raw LF from input ever reaches the wire) and serialized by lxml. The encoder drops
the redundant default-namespace declaration when it embeds the element.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from presenced.pa.documents.xml import DEFAULT_MAX_SIZE, DocumentError, parse_xml, xml_chars
from presenced.pa.packages.base import EventPackage

CONTENT_TYPE = "application/dialog-info+xml"
NS = "urn:ietf:params:xml:ns:dialog-info"

DIALOG_STATES = frozenset({"trying", "proceeding", "early", "confirmed", "terminated"})
DIRECTIONS = frozenset({"initiator", "recipient"})
# RFC 4235 §4.1.2 (schema): the event attribute of <state>.
STATE_EVENTS = frozenset(
    {"cancelled", "rejected", "replaced", "local-bye", "remote-bye", "error", "timeout"}
)
DOC_STATES = frozenset({"full", "partial"})
DEFAULT_MAX_DIALOGS = 64

# lxml-stubs type nsmap keys as str; None (the default namespace) is what lxml wants here.
_NSMAP: dict[Any, str] = {None: NS}
XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_ROOT_TAG = f"{{{NS}}}dialog-info"
_DIALOG_TAG = f"{{{NS}}}dialog"
_STATE_TAG = f"{{{NS}}}state"
# What lxml writes first for an element built with nsmap=_NSMAP; see _canonical().
_DIALOG_HEAD = f'<dialog xmlns="{NS}"'.encode()
_ROOT_HEAD = f'<dialog-info xmlns="{NS}" version="0"'.encode()
_VERSION_RE = re.compile(r"[0-9]{1,20}")  # xs:nonNegativeInteger, bounded to keep ints sane
_CODE_RE = re.compile(r"[1-6][0-9][0-9]")



@dataclass(frozen=True, slots=True)
class Dialog:
    """One <dialog> (RFC 4235 §4.1.1). `xml` is its canonical serialization (module docstring)."""

    id: str
    state: str
    direction: str | None
    call_id: str | None
    local_tag: str | None
    remote_tag: str | None
    xml: bytes


@dataclass(frozen=True, slots=True)
class DialogInfo:
    """A parsed dialog-info document: the publisher's entity and its dialogs in document order."""

    entity: str
    dialogs: tuple[Dialog, ...]
    version: int = 0
    state: str = "full"


def xml_safe(s: str) -> str:
    """`s` without the characters XML 1.0 cannot carry (C0 controls but TAB/LF/CR, surrogates)."""
    return xml_chars(s)


def _no_raw_lf(data: bytes) -> bytes:
    # lxml writes CR in text as &#13; and LF/TAB in attributes as references, but LF in text
    # raw. We never pretty-print, so every LF in `data` came from text: write it as a reference.
    return data.replace(b"\n", b"&#10;")


def _strip_ws(s: str | None) -> str | None:
    return None if s is None or not s.strip() else s


def _attrs(elem: etree._Element) -> dict[str, str]:
    return {str(k): str(v) for k, v in elem.attrib.items()}


def _copy_children(src: etree._Element, dst: etree._Element) -> None:
    for child in src:
        tag = child.tag
        if not isinstance(tag, str):  # comments/PIs are removed by the parser; be safe anyway
            continue
        ns = etree.QName(tag).namespace
        nsmap: dict[Any, str] | None = (
            {child.prefix: ns} if ns and ns != NS and child.prefix else None
        )
        sub = etree.SubElement(dst, tag, attrib=_attrs(child), nsmap=nsmap)
        if len(child):
            sub.text = _strip_ws(child.text)
            _copy_children(child, sub)
        else:
            sub.text = child.text or None  # "" and None both mean no text: one form
        sub.tail = _strip_ws(child.tail)


def _canonical(src: etree._Element) -> bytes:
    root = etree.Element(_DIALOG_TAG, attrib=_attrs(src), nsmap=_NSMAP)
    root.text = _strip_ws(src.text)
    _copy_children(src, root)
    return _no_raw_lf(etree.tostring(root, encoding="UTF-8", xml_declaration=False))


def make_dialog(
    id: str,
    state: str,
    direction: str | None = None,
    call_id: str | None = None,
    local_tag: str | None = None,
    remote_tag: str | None = None,
    *,
    local_identity: str | None = None,
    remote_identity: str | None = None,
) -> Dialog:
    """Build a `Dialog` (and its canonical `xml`) from fields, e.g. for a local dialog source."""
    if state not in DIALOG_STATES:
        raise ValueError(f"unknown dialog state {state!r}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    elem = etree.Element(_DIALOG_TAG, nsmap=_NSMAP)
    elem.set("id", xml_safe(id))
    for name, value in (
        ("call-id", call_id),
        ("local-tag", local_tag),
        ("remote-tag", remote_tag),
        ("direction", direction),
    ):
        if value is not None:
            elem.set(name, xml_safe(value))
    etree.SubElement(elem, _STATE_TAG).text = state
    for side, identity in (("local", local_identity), ("remote", remote_identity)):
        if identity is not None:
            party = etree.SubElement(elem, f"{{{NS}}}{side}")
            etree.SubElement(party, f"{{{NS}}}identity").text = xml_safe(identity)
    return _dialog_from_element(elem)


def _opt_attr(elem: etree._Element, name: str) -> str | None:
    value = elem.get(name)
    return value if value else None


def _dialog_from_element(elem: etree._Element) -> Dialog:
    dialog_id = elem.get("id")
    if not dialog_id:
        raise DocumentError("dialog without an id (RFC 4235 §4.1.1)")
    states = [c for c in elem if c.tag == _STATE_TAG]
    if len(states) != 1:
        raise DocumentError(f"dialog {dialog_id!r} needs exactly one <state>, has {len(states)}")
    state_elem = states[0]
    state = (state_elem.text or "").strip().lower()
    if state not in DIALOG_STATES:
        raise DocumentError(f"dialog {dialog_id!r}: unknown state {state[:40]!r}")
    # Kamailio 5.6's pua_dialoginfo publishes "Trying"; the schema's values are lower case, and
    # so is what watchers get (a phone's BLF may compare them exactly).
    state_elem.text = state
    event = state_elem.get("event")
    if event is not None and event not in STATE_EVENTS:
        raise DocumentError(f"dialog {dialog_id!r}: unknown state event {event[:40]!r}")
    code = state_elem.get("code")
    if code is not None and not _CODE_RE.fullmatch(code):
        raise DocumentError(f"dialog {dialog_id!r}: state code {code[:40]!r} is no SIP status")
    direction = _opt_attr(elem, "direction")
    if direction is not None and direction not in DIRECTIONS:
        raise DocumentError(f"dialog {dialog_id!r}: unknown direction {direction[:40]!r}")
    return Dialog(
        id=dialog_id,
        state=state,
        direction=direction,
        call_id=_opt_attr(elem, "call-id"),
        local_tag=_opt_attr(elem, "local-tag"),
        remote_tag=_opt_attr(elem, "remote-tag"),
        xml=_canonical(elem),
    )


def parse_dialog_info(
    body: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_dialogs: int = DEFAULT_MAX_DIALOGS,
    accept_partial: bool = False,
) -> DialogInfo:
    """Validate an untrusted dialog-info body (RFC 4235 §4.1) or raise `DocumentError`.

    Root <dialog-info> in the RFC 4235 namespace with `version` (a non-negative integer),
    `state` (full|partial; partial only with `accept_partial`) and a non-empty `entity`; each
    <dialog> has an `id`, unique in the document, and exactly one <state> whose value is one of
    trying|proceeding|early|confirmed|terminated (§4.1.2). At most `max_dialogs` dialogs.
    """
    root = parse_xml(body, max_size)
    if root.tag != _ROOT_TAG:
        raise DocumentError(f"root element is {root.tag!s:.80}, not {{{NS}}}dialog-info")
    version_text = root.get("version")
    if version_text is None or not _VERSION_RE.fullmatch(version_text):
        raise DocumentError("dialog-info version must be a non-negative integer (RFC 4235 §4.1)")
    doc_state = root.get("state")
    if doc_state not in DOC_STATES:
        raise DocumentError("dialog-info state must be full or partial (RFC 4235 §4.1)")
    if doc_state == "partial" and not accept_partial:
        raise DocumentError("partial dialog-info publications are not accepted: publish full state")
    entity = root.get("entity")
    if not entity:
        raise DocumentError("dialog-info without an entity (RFC 4235 §4.1)")
    dialogs: list[Dialog] = []
    seen: set[str] = set()
    for elem in root:
        if elem.tag != _DIALOG_TAG:
            continue  # extensions in other namespaces (schema: ##other) are ignored
        if len(dialogs) >= max_dialogs:
            raise DocumentError(f"more than {max_dialogs} dialogs in one document")
        dialog = _dialog_from_element(elem)
        if dialog.id in seen:
            raise DocumentError(f"duplicate dialog id {dialog.id[:40]!r}")
        seen.add(dialog.id)
        dialogs.append(dialog)
    return DialogInfo(entity, tuple(dialogs), int(version_text), doc_state)


def compose_dialogs(infos: Sequence[DialogInfo]) -> tuple[Dialog, ...]:
    """The dialogs of all live publications of one AOR, given oldest publication first.

    A dialog id present in several publications takes the latest publication's element; it
    keeps the position where the id first appeared, so a lamp's order does not jump around.
    """
    merged: dict[str, Dialog] = {}
    for info in infos:
        for dialog in info.dialogs:
            merged[dialog.id] = dialog  # dict keeps first-insertion order, value is the latest
    return tuple(merged.values())


def encode_dialog_info_template(
    entity: str, dialogs: Sequence[Dialog], state: str = "full"
) -> tuple[bytes, bytes]:
    """(prefix, suffix) with `prefix + str(version).encode() + suffix` the watcher's document."""
    if state not in DOC_STATES:
        raise ValueError(f"dialog-info state must be full or partial, not {state!r}")
    root = etree.Element(_ROOT_TAG, nsmap=_NSMAP)
    root.set("version", "0")  # placeholder, cut out below
    root.set("state", state)
    root.set("entity", xml_safe(entity))
    root.text = ""  # forces <dialog-info ...></dialog-info>, never the self-closed form
    shell = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    # lxml writes the namespace declaration, then the attributes in the order set.
    if not (shell.startswith(_ROOT_HEAD) and shell.endswith(b"></dialog-info>")):
        raise AssertionError(f"unexpected lxml serialization {shell[:80]!r}")
    head = shell[: len(_ROOT_HEAD) - 2]  # up to and including version="
    rest = shell[len(_ROOT_HEAD) - 1 : -len(b"</dialog-info>")]  # from the closing quote
    parts = [_no_raw_lf(rest)]
    for dialog in dialogs:
        if not dialog.xml.startswith(_DIALOG_HEAD):
            raise ValueError(f"dialog {dialog.id!r}: xml is not from parse_dialog_info/make_dialog")
        # The document declares the same default namespace: the element's own one is redundant.
        parts.append(b"<dialog" + dialog.xml[len(_DIALOG_HEAD) :])
    parts.append(b"</dialog-info>")
    return XML_DECL + head, b"".join(parts)


def encode_dialog_info(
    entity: str, dialogs: Sequence[Dialog], version: int, state: str = "full"
) -> bytes:
    """The dialog-info document for one watcher (RFC 4235 §4.1).

    `entity` is the AOR watched ("sip:alice@example.com"); `version` is this watcher's own
    counter, +1 per document sent to it (§4.1; kamailio #448 got this wrong by sharing one).
    No dialogs gives a valid document with no <dialog> elements (§3.7.1).
    """
    if version < 0:
        raise ValueError("version must be non-negative")
    prefix, suffix = encode_dialog_info_template(entity, dialogs, state)
    return prefix + str(version).encode() + suffix


# --- the event package ---------------------------------------------------------------------


class DialogPackage(EventPackage):
    """`Event: dialog` (RFC 4235): busy-lamp fields. PUBLISHed dialog-info (from a proxy's
    pua_dialoginfo or a PBX) is composed per AOR; every watcher gets the full document with
    its own version. State: the AOR's dialogs (a tuple), empty when nothing is published."""

    name = "dialog"
    formats = (CONTENT_TYPE,)
    publish_formats = (CONTENT_TYPE,)
    versioned = True

    def empty(self, resource: str) -> tuple[Dialog, ...]:
        return ()

    def compose(self, resource: str, parts: Mapping[str, object]) -> tuple[Dialog, ...]:
        published = parts.get("publish")
        return published if isinstance(published, tuple) else ()

    def decode_publication(self, body: bytes, content_type: str, max_size: int) -> DialogInfo:
        return parse_dialog_info(body, max_size=max_size)

    def compose_publications(self, resource: str,
                             publications: Sequence[object]) -> tuple[Dialog, ...] | None:
        infos = [p for p in publications if isinstance(p, DialogInfo)]
        return compose_dialogs(infos) if infos else None

    def template(self, resource: str, state: object, content_type: str,
                 now: float) -> tuple[bytes, bytes]:
        assert isinstance(state, tuple)
        return encode_dialog_info_template(f"sip:{resource}", state, "full")
