"""XCAP errors: what the peer did wrong and what to answer.

Two kinds. `XcapError` carries a plain HTTP status (400 a broken URI, 404 nothing selected,
405, 412, 413, 415). `XcapConflict` is a 409 whose body is an `application/xcap-error+xml`
document (RFC 4825 §11) naming the condition: the client can tell "the parent element does not
exist" from "the document fails its schema" without parsing prose.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from presenced.pa.documents.xml import xml_chars

__all__ = ["ERROR_MIME", "ERROR_NS", "XcapConflict", "XcapError"]

ERROR_NS = "urn:ietf:params:xml:ns:xcap-error"
ERROR_MIME = "application/xcap-error+xml"

# The error elements of RFC 4825 §11.2 that this server produces.
CONDITIONS = frozenset({
    "not-well-formed", "not-xml-frag", "no-parent", "schema-validation-error",
    "not-xml-att-value", "cannot-insert", "cannot-delete", "uniqueness-failure",
    "constraint-failure", "not-utf-8",
})


class XcapError(Exception):
    """A request answered with `status` and no XCAP error body; `reason` is for logs and the
    plain-text body (never a document's content)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class XcapConflict(Exception):
    """A 409 Conflict with an xcap-error body (RFC 4825 §11).

    `condition` is one of `CONDITIONS`; `phrase` an optional human-readable text (the
    `phrase` attribute); `ancestor` (no-parent only) the closest existing ancestor's URI;
    `exists` (uniqueness-failure only) the field that must be unique, and `alt_values`
    values the server proposes instead."""

    def __init__(self, condition: str, phrase: str | None = None, *, ancestor: str | None = None,
                 exists: str | None = None, alt_values: tuple[str, ...] = ()) -> None:
        if condition not in CONDITIONS:
            raise ValueError(f"unknown xcap-error condition {condition!r}")
        super().__init__(f"409 {condition}" + (f": {phrase}" if phrase else ""))
        self.condition = condition
        self.phrase = phrase
        self.ancestor = ancestor
        self.exists = exists
        self.alt_values = alt_values

    def body(self) -> bytes:
        """The application/xcap-error+xml document (RFC 4825 §11.1)."""
        nsmap: dict[Any, str] = {None: ERROR_NS}  # lxml-stubs type the keys as str; None is default
        root = etree.Element(f"{{{ERROR_NS}}}xcap-error", nsmap=nsmap)
        el = etree.SubElement(root, f"{{{ERROR_NS}}}{self.condition}")
        if self.phrase:
            el.set("phrase", _xml_safe(self.phrase))
        if self.condition == "no-parent" and self.ancestor is not None:
            etree.SubElement(el, f"{{{ERROR_NS}}}ancestor").text = _xml_safe(self.ancestor)
        if self.condition == "uniqueness-failure" and self.exists is not None:
            exists = etree.SubElement(el, f"{{{ERROR_NS}}}exists", field=_xml_safe(self.exists))
            for value in self.alt_values:
                etree.SubElement(exists, f"{{{ERROR_NS}}}alt-value").text = _xml_safe(value)
        return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _xml_safe(text: str) -> str:
    """`text` without the characters XML 1.0 cannot carry (lxml refuses them)."""
    return xml_chars(text)
