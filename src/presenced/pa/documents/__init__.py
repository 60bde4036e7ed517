"""Presence document codecs: PIDF (+RPID, data model), cpim-pidf, XPIDF, LPIDF; negotiation.

Every untrusted XML body goes through `xml.parse_xml`, the one hardened parser.
"""

from presenced.pa.documents.lpidf import encode_lpidf
from presenced.pa.documents.negotiate import SUPPORTED, choose_format, encode
from presenced.pa.documents.pidf import (
    decode_pidf,
    encode_cpim_pidf,
    encode_pidf,
    stable_id,
)
from presenced.pa.documents.xml import DEFAULT_MAX_SIZE, DocumentError, parse_xml
from presenced.pa.documents.xpidf import encode_xpidf

__all__ = [
    "DEFAULT_MAX_SIZE",
    "SUPPORTED",
    "DocumentError",
    "choose_format",
    "decode_pidf",
    "encode",
    "encode_cpim_pidf",
    "encode_lpidf",
    "encode_pidf",
    "encode_xpidf",
    "parse_xml",
    "stable_id",
]
