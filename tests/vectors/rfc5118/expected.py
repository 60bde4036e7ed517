"""What RFC 5118 §4 says about each IPv6 torture message (same schema as ../rfc4475/expected.py)."""

from __future__ import annotations

from typing import Any

VALID, INVALID, EITHER, ENDPOINT = "valid", "invalid", "either", "endpoint"


def _via(
    transport: str, host: str, port: int | None = None, **params: str | None
) -> dict[str, Any]:
    return {"transport": transport, "host": host, "port": port, "params": params}


def _uri(user: str | None, host: str, port: int | None = None) -> dict[str, Any]:
    return {
        "scheme": "sip",
        "user": user,
        "password": None,
        "host": host,
        "port": port,
        "params": {},
    }


def _na(uri: dict[str, Any], display: str | None = None, **params: str | None) -> dict[str, Any]:
    return {"display": display, "uri": uri, "params": params}


CASES: dict[str, dict[str, Any]] = {
    "ipv6-good": {
        "section": "4.1",
        "title": "Valid SIP Message with an IPv6 Reference",
        "verdict": VALID,
        "expect": {
            "method": "REGISTER",
            "ruri": _uri(None, "[2001:db8::10]"),
            "vias": [_via("UDP", "[2001:db8::9:1]", branch="z9hG4bKas3-111")],
            "contacts": [_na(_uri("caller", "[2001:db8::1]"), "Caller")],
        },
    },
    "ipv6-bad": {
        "section": "4.2",
        "title": "Invalid SIP Message with an IPv6 Reference",
        "verdict": INVALID,  # "should respond with a 400 Bad Request error"
        "status": {400},
        "broken": ["ruri"],
    },
    "port-ambiguous": {
        "section": "4.3",
        "title": "Port Ambiguous in a SIP URI",
        # Well-formed: 5070 is part of the address, there is no port.
        "verdict": VALID,
        "expect": {"ruri": _uri(None, "[2001:db8::10:5070]")},
    },
    "port-unambiguous": {
        "section": "4.4",
        "title": "Port Unambiguous in a SIP URI",
        "verdict": VALID,
        "expect": {"ruri": _uri(None, "[2001:db8::10]", 5070)},
    },
    "via-received-param-with-delim": {
        "section": "4.5",
        "title": "IPv6 Reference Delimiters in Via Header",
        # Not valid by a strict reading of the grammar, but implementations "must parse" it.
        "verdict": VALID,
        "expect": {
            "method": "BYE",
            "top_via_received": "2001:db8::9:255",  # compared with any [] removed
            "top_via_host": "[2001:db8::9:1]",
        },
    },
    "via-received-param-no-delim": {
        "section": "4.5",
        "title": "IPv6 Reference Delimiters in Via Header",
        "verdict": VALID,
        "expect": {
            "method": "OPTIONS",
            "top_via_received": "2001:db8::9:255",
            "top_via_host": "[2001:db8::9:1]",
            "contacts": [_na(_uri("caller", "[2001:db8::9:1]"), "Caller")],
        },
    },
    "ipv6-in-sdp": {
        "section": "4.6",
        "title": "SIP Request with IPv6 Addresses in SDP Body",
        "verdict": VALID,
        "expect": {
            "method": "INVITE",
            "ruri": _uri("user", "[2001:db8::10]"),
            "vias": [_via("UDP", "[2001:db8::20]", branch="z9hG4bKas3-111")],
            "content_type": "application/sdp",
            "body_contains": [b"c=IN IP6 2001:db8::20\r\n"],
        },
    },
    "mult-ip-in-header": {
        "section": "4.7",
        "title": "Multiple IP Addresses in SIP Headers",
        "verdict": VALID,
        "expect": {
            "method": "BYE",
            "vias": [
                _via("UDP", "[2001:db8::9:1]", 6050, branch="z9hG4bKas3-111"),
                _via("UDP", "192.0.2.1", branch="z9hG4bKjhja8781hjuaij65144"),
                _via("TCP", "[2001:db8::9:255]", branch="z9hG4bK451jj", received="192.0.2.200"),
            ],
        },
    },
    "mult-ip-in-sdp": {
        "section": "4.8",
        "title": "Multiple IP Addresses in SDP",
        "verdict": VALID,
        "expect": {
            "method": "INVITE",
            "body_contains": [b"c=IN IP4 192.0.2.1\r\n", b"c=IN IP6 2001:db8::1\r\n"],
        },
    },
    "ipv4-mapped-ipv6": {
        "section": "4.9",
        "title": "IPv4-Mapped IPv6 Addresses",
        "verdict": VALID,
        "expect": {
            "vias": [
                _via("UDP", "[::ffff:192.0.2.10]", 19823, branch="z9hG4bKbh19"),
                _via("UDP", "[::ffff:192.0.2.2]", branch="z9hG4bKas3-111"),
            ],
            "contacts": [_na(_uri("ted", "[::ffff:192.0.2.2]"), "T. desk phone")],
        },
    },
    "ipv6-bug-abnf-3-colons": {
        "section": "4.10",
        "title": "IPv6 Reference Bug in RFC 3261 ABNF",
        # "an implementation must tolerate both of the above constructs"; a proxy may drop the
        # extra colon when it re-serializes, so either spelling of the host is accepted.
        "verdict": VALID,
        "expect": {"ruri_host_any": ["[2001:db8:::192.0.2.1]", "[2001:db8::192.0.2.1]"]},
    },
    "ipv6-correct-abnf-2-colons": {
        "section": "4.10",
        "title": "IPv6 Reference Bug in RFC 3261 ABNF",
        "verdict": VALID,
        "expect": {"ruri": _uri("user", "[2001:db8::192.0.2.1]")},
    },
}
