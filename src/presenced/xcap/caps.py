"""The xcap-caps document (RFC 4825 §12): which AUIDs, extensions and namespaces this server
supports, at /xcap-root/xcap-caps/global/index."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from lxml import etree

from presenced.xcap.auids import CAPS_NS, Auid

__all__ = ["caps_document", "caps_etag"]


def caps_document(auids: Iterable[Auid]) -> bytes:
    """<xcap-caps><auids/><extensions/><namespaces/></xcap-caps> for `auids`."""
    auids = list(auids)
    nsmap: dict[Any, str] = {None: CAPS_NS}  # lxml-stubs type the keys as str; None is default
    root = etree.Element(f"{{{CAPS_NS}}}xcap-caps", nsmap=nsmap)
    el = etree.SubElement(root, f"{{{CAPS_NS}}}auids")
    for a in auids:
        etree.SubElement(el, f"{{{CAPS_NS}}}auid").text = a.name
    etree.SubElement(root, f"{{{CAPS_NS}}}extensions")
    el = etree.SubElement(root, f"{{{CAPS_NS}}}namespaces")
    for ns in dict.fromkeys(ns for a in auids for ns in a.namespaces):
        etree.SubElement(el, f"{{{CAPS_NS}}}namespace").text = ns
    etree.indent(root)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def caps_etag(document: bytes) -> str:
    """A fixed entity tag for a document that never changes while the process runs."""
    return "caps-" + hashlib.sha256(document).hexdigest()[:16]
