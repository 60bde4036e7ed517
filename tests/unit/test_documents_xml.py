"""The hardened XML parser: every hostile body is a DocumentError, quickly, and nothing else."""

from __future__ import annotations

import pathlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presenced.pa.documents.xml import (
    DEFAULT_MAX_SIZE,
    DocumentError,
    escape_attr,
    escape_text,
    parse_xml,
)

VECTORS = pathlib.Path(__file__).parents[1] / "vectors" / "pidf"
HOSTILE = sorted((VECTORS / "hostile").glob("*.xml"))

PIDF = b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@example.com"/>'


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_hostile_vector_is_rejected_quickly(path: pathlib.Path) -> None:
    start = time.perf_counter()
    with pytest.raises(DocumentError):
        parse_xml(path.read_bytes())
    assert time.perf_counter() - start < 0.05


def test_hostile_vectors_are_present() -> None:
    names = {p.name for p in HOSTILE}
    assert {"billion-laughs.xml", "xxe-file.xml", "xxe-parameter-entity.xml"} <= names


def test_xxe_file_contents_never_reach_the_tree() -> None:
    with pytest.raises(DocumentError, match="DOCTYPE"):
        parse_xml((VECTORS / "hostile" / "xxe-file.xml").read_bytes())


def test_oversized_body_is_rejected_before_parsing() -> None:
    body = PIDF[:-2] + b">" + b"<note>x</note>" * (DEFAULT_MAX_SIZE // 14 + 1) + b"</presence>"
    assert len(body) > DEFAULT_MAX_SIZE
    with pytest.raises(DocumentError, match="limit"):
        parse_xml(body)


def test_size_limit_is_a_parameter() -> None:
    assert parse_xml(PIDF, max_size=len(PIDF)).get("entity") == "pres:a@example.com"
    with pytest.raises(DocumentError):
        parse_xml(PIDF, max_size=len(PIDF) - 1)


def test_deep_nesting_is_rejected() -> None:
    body = b"<a>" * 5000 + b"</a>" * 5000
    with pytest.raises(DocumentError):
        parse_xml(body)


@pytest.mark.parametrize(
    "body",
    [b"", b"   \r\n", b"not xml", b"<a>", b"<a></b>", b"\x00\x01\x02", b"<?xml version='1.0'?>"],
)
def test_junk_is_a_document_error(body: bytes) -> None:
    with pytest.raises(DocumentError):
        parse_xml(body)


def test_non_bytes_is_a_document_error() -> None:
    with pytest.raises(DocumentError):
        parse_xml("<a/>")  # type: ignore[arg-type]


def test_ascii_body_declaring_latin1_is_accepted() -> None:
    body = b'<?xml version="1.0" encoding="ISO-8859-1"?>' + PIDF
    assert parse_xml(body).tag == "{urn:ietf:params:xml:ns:pidf}presence"


def test_comments_and_processing_instructions_are_dropped() -> None:
    root = parse_xml(b"<a><!-- hi --><?pi x?><b/></a>")
    assert [c.tag for c in root] == ["b"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_an_element_or_a_document_error(data: bytes) -> None:
    try:
        parse_xml(data)
    except DocumentError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_escaped_text_and_attributes_parse_back_to_the_allowed_characters(s: str) -> None:
    allowed = "".join(
        c
        for c in s
        if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c > "\uffff"
    )
    body = f'<a x="{escape_attr(s)}">{escape_text(s)}</a>'.encode()
    root = parse_xml(body)
    assert (root.text or "") == allowed
    assert root.get("x") == allowed
