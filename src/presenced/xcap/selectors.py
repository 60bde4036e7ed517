"""XCAP node selectors (RFC 4825 §6.3, §6.4) and the edits they address (§8.2).

Grammar (§6.3)::

    node-selector      = element-selector ["/" terminal-selector]
    element-selector   = step *( "/" step)
    step               = by-name / by-pos / by-attr / by-pos-attr
    by-pos             = NameorAny "[" position "]"
    by-attr            = NameorAny "[" attr-test "]"
    by-pos-attr        = NameorAny "[" position "]" "[" attr-test "]"
    attr-test          = "@" att-name "=" att-value        ; AttValue, quoted
    terminal-selector  = attribute-selector / namespace-selector
    attribute-selector = "@" att-name
    namespace-selector = "namespace::*"

Meaning: the first step matches the document's root element, each further step the child
elements of what the previous one matched. A step's name is a QName: an unprefixed element
name is in the application usage's default namespace (§6.3; not the document's own default),
a prefix must be bound by the URI's query (§6.4) or be one of the AUID's well-known prefixes
(leniency for clients that leave the xmlns() out); "*" matches any element. The position
counts, from 1, the children matching the name, and the attribute test then filters those
(XPath's left-to-right predicates). A URI must select exactly one node; otherwise GET and
DELETE get 404.

Edits are made on a parsed tree and then checked the way §8.2.5 wants them checked: after a
PUT the same URI must select exactly what was put (else 409 cannot-insert), after a DELETE it
must select nothing (else 409 cannot-delete). The caller parses the stored document afresh for
each request, so a failed edit simply discards its tree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lxml import etree

from presenced.pa.documents.xml import DocumentError, escape_attr, parse_xml
from presenced.xcap.errors import XcapConflict, XcapError

__all__ = [
    "ATT_MIME", "EL_MIME", "NS_MIME", "NodeSelector", "Step", "delete_node", "get_node",
    "parse_attribute_value", "parse_element_body", "parse_node_selector", "put_attribute",
    "put_element", "select_elements",
]

EL_MIME = "application/xcap-el+xml"
ATT_MIME = "application/xcap-att+xml"
NS_MIME = "application/xcap-ns+xml"

DEFAULT_MAX_STEPS = 32
_MAX_POSITION = 1_000_000

_NCNAME = r"[^\W\d][\w.\-]*"
_QNAME = rf"(?:{_NCNAME}:)?{_NCNAME}"
_STEP_RE = re.compile(
    rf"(?P<name>\*|{_QNAME})"
    r"(?:\[(?P<pos>[0-9]{1,7})\])?"
    rf"(?:\[@(?P<an>{_QNAME})=(?P<av>\"[^\"<]*\"|'[^'<]*')\])?"
)
_ATTR_SEL_RE = re.compile(rf"@(?P<an>{_QNAME})")
# AttValue without its quotes (XML 1.0 [10]): no "<", no '"', "&" only in a reference.
_ATT_BODY_RE = re.compile(r"(?:[^<&\"]|&(?:[A-Za-z_][\w.\-]*|#[0-9]+|#x[0-9A-Fa-f]+);)*")
ElementT = etree._Element


@dataclass(frozen=True, slots=True)
class Step:
    """One step. `name` is a Clark name ("{ns}local") or None for "*"; `attr` is (attribute
    Clark name, value); `text` the step as written (for no-parent ancestors)."""

    name: str | None
    position: int | None = None
    attr: tuple[str, str] | None = None
    text: str = ""

    def name_matches(self, el: ElementT) -> bool:
        return self.name is None or el.tag == self.name


@dataclass(frozen=True, slots=True)
class NodeSelector:
    """A parsed node selector: element steps and at most one terminal selector."""

    steps: tuple[Step, ...]
    attribute: str | None = None  # Clark name of a terminal attribute selector
    namespaces: bool = False  # a terminal namespace::* selector

    @property
    def targets_element(self) -> bool:
        return self.attribute is None and not self.namespaces


def _split_steps(text: str) -> list[str]:
    """Split on "/" outside quoted attribute values."""
    parts: list[str] = []
    start = 0
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "/":
            parts.append(text[start:i])
            start = i + 1
    if quote:
        raise XcapError(400, "unterminated quoted value in the node selector")
    parts.append(text[start:])
    return parts


def _resolve(qname: str, bindings: Mapping[str, str], fallback: Mapping[str, str],
             default_ns: str | None) -> str:
    prefix, colon, local = qname.rpartition(":")
    if not colon:
        return local if default_ns is None else f"{{{default_ns}}}{local}"
    ns = bindings.get(prefix) or fallback.get(prefix)
    if ns is None:
        raise XcapError(400, f"namespace prefix {prefix!r} is not bound (xmlns() in the query)")
    return f"{{{ns}}}{local}"


def _att_value(quoted: str) -> str:
    """The value of a quoted AttValue, references resolved by the hardened parser."""
    try:
        el = parse_xml(f"<x a={quoted}/>".encode())
    except DocumentError:
        raise XcapError(400, "attribute value in the node selector is not an XML AttValue") from None
    return el.get("a") or ""


def parse_node_selector(text: str, bindings: Mapping[str, str], default_ns: str,
                        known_prefixes: Mapping[str, str] | None = None,
                        max_steps: int = DEFAULT_MAX_STEPS) -> NodeSelector:
    """Parse a percent-decoded node selector. `bindings` come from the URI's query,
    `default_ns` is the AUID's default namespace, `known_prefixes` the AUID's well-known ones.
    Raises XcapError(400) when it is not one."""
    fallback = known_prefixes or {}
    parts = _split_steps(text.removeprefix("/"))
    if len(parts) > max_steps:
        raise XcapError(400, f"node selector of more than {max_steps} steps")
    attribute = None
    namespaces = False
    last = parts[-1]
    if last == "namespace::*":
        namespaces = True
        parts.pop()
    elif last.startswith("@"):
        m = _ATTR_SEL_RE.fullmatch(last)
        if m is None:
            raise XcapError(400, f"bad attribute selector {last!r}")
        attribute = _resolve(m.group("an"), bindings, fallback, None)
        parts.pop()
    if not parts:
        raise XcapError(400, "node selector without an element step")
    steps: list[Step] = []
    for part in parts:
        m = _STEP_RE.fullmatch(part)
        if m is None:
            raise XcapError(400, f"bad node selector step {part!r}")
        name = m.group("name")
        pos = m.group("pos")
        attr = None
        if m.group("an") is not None:
            attr = (_resolve(m.group("an"), bindings, fallback, None), _att_value(m.group("av")))
        position = int(pos) if pos is not None else None
        if position is not None and not 1 <= position <= _MAX_POSITION:
            raise XcapError(400, f"position {pos} out of range")
        steps.append(Step(None if name == "*" else _resolve(name, bindings, fallback, default_ns),
                          position, attr, part))
    return NodeSelector(tuple(steps), attribute, namespaces)


# --- selection ---------------------------------------------------------------------------


def _children(el: ElementT) -> list[ElementT]:
    return [c for c in el if isinstance(c.tag, str)]


def _step(step: Step, parents: list[ElementT | None], root: ElementT) -> list[ElementT]:
    out: list[ElementT] = []
    for parent in parents:
        kids = [root] if parent is None else _children(parent)
        matches = [c for c in kids if step.name_matches(c)]
        if step.position is not None:
            matches = matches[step.position - 1: step.position]
        if step.attr is not None:
            name, value = step.attr
            matches = [c for c in matches if c.get(name) == value]
        out.extend(matches)
    return out


def select_elements(root: ElementT, steps: tuple[Step, ...]) -> list[ElementT]:
    """The elements the steps select, in document order."""
    current: list[ElementT | None] = [None]  # None: the document node, parent of the root
    for step in steps:
        current = list(_step(step, current, root))
        if not current:
            return []
    return [el for el in current if el is not None]


def _one(root: ElementT, sel: NodeSelector) -> ElementT:
    found = select_elements(root, sel.steps)
    if len(found) != 1:
        raise XcapError(404, "the node selector selects no element" if not found
                        else "the node selector selects more than one element")
    return found[0]


def get_node(root: ElementT, sel: NodeSelector) -> tuple[bytes, str]:
    """GET of an element, attribute or namespace bindings: (body, MIME type). 404 when the
    selector does not select exactly one node."""
    el = _one(root, sel)
    if sel.attribute is not None:
        value = el.get(sel.attribute)
        if value is None:
            raise XcapError(404, "no such attribute")
        return escape_attr(value).encode("utf-8"), ATT_MIME
    if sel.namespaces:
        # §7.8: an element of the same name carrying every namespace binding in scope.
        nsmap: dict[Any, str] = dict(el.nsmap)  # (lxml-stubs: keys typed str; None is default)
        bare = etree.Element(el.tag, nsmap=nsmap)
        return bytes(etree.tostring(bare, encoding="UTF-8")), NS_MIME
    return bytes(etree.tostring(el, encoding="UTF-8", with_tail=False)), EL_MIME


# --- bodies ------------------------------------------------------------------------------


def parse_element_body(body: bytes, context: ElementT | None, max_size: int,
                       known: Mapping[str, str] | None = None,
                       bindings: Mapping[str, str] | None = None) -> ElementT:
    """The element of an application/xcap-el+xml PUT body: exactly one element, nothing but
    whitespace around it (RFC 4825 §7.4). Prefixes the body uses without declaring them take
    the URI's `bindings`, else those in scope at `context` (the parent it goes into), else
    the AUID's `known` prefixes (leniency: a body written with "cp:" for a document that
    says "cr:")."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise XcapConflict("not-utf-8") from None
    nsmap: dict[Any, str] = dict(known or {})  # (None: the default namespace)
    if context is not None:
        nsmap.update(context.nsmap)
    nsmap.update(bindings or {})
    decls = " ".join(f'xmlns{":" + p if p else ""}="{escape_attr(ns)}"' for p, ns in nsmap.items())
    wrapped = f"<xcap-wrapper {decls}>{text}</xcap-wrapper>".encode()
    try:
        wrapper = parse_xml(wrapped, max_size + len(wrapped) - len(body))
    except DocumentError as exc:
        raise XcapConflict("not-xml-frag", exc.reason) from None
    kids = list(wrapper)
    if len(kids) != 1 or not isinstance(kids[0].tag, str):
        raise XcapConflict("not-xml-frag", "the body must hold exactly one element")
    el = kids[0]
    if (wrapper.text or "").strip() or (el.tail or "").strip():
        raise XcapConflict("not-xml-frag", "text outside the element")
    el.tail = None
    return el


def parse_attribute_value(body: bytes) -> str:
    """The value of an application/xcap-att+xml PUT body: an AttValue without its quotes
    (RFC 4825 §7.5), references resolved."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise XcapConflict("not-utf-8") from None
    if _ATT_BODY_RE.fullmatch(text) is None:
        raise XcapConflict("not-xml-att-value", "'<', '\"' or a bare '&' in the value")
    try:
        el = parse_xml(f'<x a="{text}"/>'.encode(), len(body) + 16)
    except DocumentError as exc:
        raise XcapConflict("not-xml-att-value", exc.reason) from None
    return el.get("a") or ""


# --- edits -------------------------------------------------------------------------------


def _ancestor(root: ElementT, steps: tuple[Step, ...], document_uri: str) -> str:
    """The URI of the deepest existing ancestor of `steps` that is one element (§11.2)."""
    best = document_uri
    for n in range(1, len(steps)):
        if len(select_elements(root, steps[:n])) != 1:
            break
        best = document_uri + "/~~/" + "/".join(s.text for s in steps[:n])
    return best


def _append(parent: ElementT, el: ElementT) -> None:
    kids = _children(parent)
    if kids:
        _insert_after(kids[-1], el)
    else:
        parent.append(el)


def _insert_after(prev: ElementT, el: ElementT) -> None:
    # Keep pretty-printed documents pretty: the new element takes prev's tail (the closing
    # indent), prev takes the indent that precedes it.
    before_prev = prev.getprevious()
    parent = prev.getparent()
    indent = (before_prev.tail if before_prev is not None else parent.text if parent is not None
              else None)
    tail = prev.tail
    prev.addnext(el)
    el.tail = tail
    if indent is not None and not indent.strip():
        prev.tail = indent


def put_element(root: ElementT, sel: NodeSelector, new: ElementT, document_uri: str) -> ElementT:
    """Put `new` where `sel` points: replace the element selected, or insert it (§7.4, §8.2.5).
    Returns the document's root (new when the root itself was replaced)."""
    steps = sel.steps
    found = select_elements(root, steps)
    if len(found) > 1:
        raise XcapConflict("cannot-insert", "the node selector selects more than one element")
    if found:
        old = found[0]
        parent = old.getparent()
        if parent is None:
            root = new
        else:
            new.tail = old.tail
            parent.replace(old, new)
    else:
        if len(steps) == 1:
            raise XcapConflict("cannot-insert", "a document has one root element")
        parents = select_elements(root, steps[:-1])
        if len(parents) != 1:
            raise XcapConflict("no-parent", ancestor=_ancestor(root, steps, document_uri))
        parent = parents[0]
        last = steps[-1]
        siblings = [c for c in _children(parent) if last.name_matches(c)]
        if last.position is None:
            _append(parent, new)
        elif len(siblings) >= last.position:  # the nth exists but failed the attribute test
            siblings[last.position - 1].addprevious(new)
        elif len(siblings) == last.position - 1:
            if siblings:
                _insert_after(siblings[-1], new)
            else:
                _append(parent, new)
        else:
            raise XcapConflict("cannot-insert", f"fewer than {last.position - 1} siblings")
    if select_elements(root, steps) != [new]:
        raise XcapConflict("cannot-insert", "the URI would not select the element put")
    return root


def put_attribute(root: ElementT, sel: NodeSelector, value: str, document_uri: str) -> None:
    """Create or replace the attribute `sel` points at (§7.5)."""
    assert sel.attribute is not None
    found = select_elements(root, sel.steps)
    if not found:
        raise XcapConflict("no-parent", ancestor=_ancestor(root, (*sel.steps, Step(None)),
                                                           document_uri))
    if len(found) > 1:
        raise XcapConflict("cannot-insert", "the node selector selects more than one element")
    el = found[0]
    el.set(sel.attribute, value)
    if select_elements(root, sel.steps) != [el]:
        raise XcapConflict("cannot-insert", "the URI would not select the attribute put")


def delete_node(root: ElementT, sel: NodeSelector) -> None:
    """Delete the element or attribute `sel` selects (§7.6, §8.2.5)."""
    el = _one(root, sel)
    if sel.attribute is not None:
        if sel.attribute not in el.attrib:
            raise XcapError(404, "no such attribute")
        del el.attrib[sel.attribute]
        again = select_elements(root, sel.steps)
        if len(again) == 1 and sel.attribute in again[0].attrib:
            raise XcapConflict("cannot-delete", "the URI would select another attribute")
        return
    if sel.namespaces:
        raise XcapError(405, "read-only: namespace bindings")
    parent = el.getparent()
    if parent is None:
        raise XcapConflict("cannot-delete", "the root element (DELETE the document instead)")
    prev = el.getprevious()
    if prev is not None and el.getnext() is None:
        prev.tail = el.tail  # the last child's tail is the parent's closing indent
    parent.remove(el)  # (its tail goes with it)
    if select_elements(root, sel.steps):
        raise XcapConflict("cannot-delete", "the URI would select another element")
