"""What RFC 4475 §3 says about each torture message, in a form the tests can check.

One entry per `<name>.sip` file in this folder. Keys:

- ``section`` / ``title``: where the RFC describes the message.
- ``verdict``:
    * ``"valid"``   — the RFC says parsers must accept it: `parse_message` returns and every
      accessor named in ``expect`` yields the listed value.
    * ``"invalid"`` — the RFC says the element answers with an error (or drops a response):
      `parse_message` raises `ParseError`, or — the parser being lazy — one of the accessors in
      ``broken`` does. ``status`` is the set of acceptable `ParseError.status` codes.
    * ``"either"``  — the RFC calls rejecting *acceptable* but allows a liberal element to accept;
      only "ParseError or a message, never another exception" is required.
    * ``"endpoint"`` — syntactically fine; the RFC's verdict (416, 420, 483 …) is the endpoint's
      or application's job (``endpoint_status`` records it). The parser must accept or raise
      `ParseError`; when it accepts, ``expect`` still holds.
- ``expect``: accessor name -> expected value. URI users, URI params and header params are
  compared after %-unescaping (RFC 3261 §19.1.4), param names case-insensitively, and quoted
  param values without their quotes. ``None`` for a param means "present without a value".
"""

from __future__ import annotations

from typing import Any

_SDP_150 = 150
VALID, INVALID, EITHER, ENDPOINT = "valid", "invalid", "either", "endpoint"


def _via(
    transport: str, host: str, port: int | None = None, **params: str | None
) -> dict[str, Any]:
    return {"transport": transport, "host": host, "port": port, "params": params}


def _uri(
    user: str | None,
    host: str,
    port: int | None = None,
    scheme: str = "sip",
    params: dict[str, str | None] | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    return {
        "scheme": scheme,
        "user": user,
        "password": password,
        "host": host,
        "port": port,
        "params": params or {},
    }


def _na(uri: dict[str, Any], display: str | None = None, **params: str | None) -> dict[str, Any]:
    return {"display": display, "uri": uri, "params": params}


_LONG_TAG = "12" + "982" * 50 + "424"
_LONG_USER = "amazinglylongcallername" * 5

CASES: dict[str, dict[str, Any]] = {
    # ---- 3.1.1 Valid messages --------------------------------------------------------------
    "wsinv": {
        "section": "3.1.1.1",
        "title": "A Short Tortuous INVITE",
        "verdict": VALID,
        "expect": {
            "method": "INVITE",
            "ruri": _uri("vivekg", "chair-dnrc.example.com", params={"unknownparam": None}),
            # Folded "TO :\r\n sip:..." with LWS around ';' and '='.
            "to": _na(_uri("vivekg", "chair-dnrc.example.com"), tag="1918181833n"),
            # "J Rosenberg \\\"" unquotes to: J Rosenberg \"
            "from_": _na(_uri("jdrosen", "example.com"), 'J Rosenberg \\"', tag="98asjd8"),
            "max_forwards": 68,  # "0068": leading zeros
            "call_id": "wsinv.ndaksdj@192.0.2.1",
            "cseq": (9, "INVITE"),  # "0009\r\n  INVITE": leading zeros and folding
            "vias": [
                _via("UDP", "192.0.2.2", branch="390skdjuw"),
                _via("TCP", "spindle.example.com", branch="z9hG4bK9ikj8"),
                _via("UDP", "192.168.255.111", branch="z9hG4bK30239"),
            ],
            "contacts": [
                _na(
                    _uri("jdrosen", "example.com"),
                    'Quoted string ""',
                    newparam="newvalue",
                    secondparam=None,
                    q="0.33",
                )
            ],
            "content_type": "application/sdp",
            "headers": {
                "Subject": [""],  # "s :" — an empty Subject in compact form
                # Folding is equivalent to one SP (RFC 3261 §7.3.1).
                "NewFangledHeader": ["newfangled value continued newfangled value"],
                # Unknown header: kept as an opaque value even though it would not be a
                # valid generic-param list.
                "UnknownHeaderWithUnusualValue": [";;,,;;,;"],
                "Route": ["<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"],
            },
            "body_len": _SDP_150,
        },
    },
    "intmeth": {
        "section": "3.1.1.2",
        "title": "Wide Range of Valid Characters",
        "verdict": VALID,
        "expect": {
            "method": "!interesting-Method0123456789_*+`.%indeed'~",
            "ruri": _uri(
                "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
                "example.com",
                password="&it+has=1,weird!*pas$wo~d_too.(doesn't-it)",
            ),
            # quoted-pair may escape BEL, NUL and DEL (RFC 3261 §25.1 quoted-pair).
            "to": _na(
                _uri("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*", "example.com"),
                "BEL:\x07 NUL:\x00 DEL:\x7f",
            ),
            "from_": _na(
                _uri("mundane", "example.com"),
                "token1~` token2'+_ token3*%!.-",
                **{"fromParam''~+*_!.-%": "работающий", "tag": "_token~1'+`*%!-."},
            ),
            "call_id": "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
            "cseq": (139122385, "!interesting-Method0123456789_*+`.%indeed'~"),
            "max_forwards": 255,
            "vias": [_via("TCP", "host1.example.com", branch="z9hG4bK-.!%66*_+`'~")],
            # UTF8-NONASCII value (with a BOM) of an extension header with odd name chars.
            "headers": {"extensionHeader-!.%*+_`'~": ["\ufeff大停電"]},
            "body_len": 0,
        },
    },
    "esc01": {
        "section": "3.1.1.3",
        "title": "Valid Use of the % Escaping Mechanism",
        "verdict": VALID,
        "expect": {
            "method": "INVITE",
            "ruri": _uri("sips:user@example.com", "example.net"),
            "to": _na(_uri("user", "example.com")),
            "from_": _na(_uri("I have spaces", "example.net"), tag="938"),
            "max_forwards": 87,
            "call_id": "esc01.239409asdfakjkn23onasd0-3234",
            "cseq": (234234, "INVITE"),
            "vias": [_via("UDP", "host5.example.net", branch="z9hG4bKkdjuw")],
            # "%6C%72" is the param "lr"; n%61me's value is "value%41" — unescaping is done
            # once, never recursively (RFC 3986).
            "contacts": [
                _na(_uri("caller", "host5.example.net", params={"lr": None, "name": "value%41"}))
            ],
            "content_type": "application/sdp",
            "body_len": _SDP_150,
        },
    },
    "escnull": {
        "section": "3.1.1.4",
        "title": "Escaped Nulls in URIs",
        "verdict": VALID,
        "expect": {
            "method": "REGISTER",
            "ruri": _uri(None, "example.com"),
            "to": _na(_uri("null-\x00-null", "example.com")),
            "from_": _na(_uri("null-\x00-null", "example.com"), tag="839923423"),
            "max_forwards": 70,
            "call_id": "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
            "cseq": (14398234, "REGISTER"),
            # Two distinct contacts: one NUL and two NULs.
            "contacts": [
                _na(_uri("\x00", "host5.example.com")),
                _na(_uri("\x00\x00", "host5.example.com")),
            ],
            "body_len": 0,
        },
    },
    "esc02": {
        "section": "3.1.1.5",
        "title": "Use of % When It Is Not an Escape",
        "verdict": VALID,
        "expect": {
            "method": "RE%47IST%45R",  # an unknown method, NOT REGISTER
            "ruri": _uri(None, "registrar.example.com"),
            "to": _na(_uri("resource", "example.com"), "%Z%45"),
            "from_": _na(_uri("resource", "example.com"), "%Z%45", tag="f232jadfj23"),
            "call_id": "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
            "vias": [_via("TCP", "host.example.com", branch="z9hG4bK209%fzsnel234")],
            "cseq": (29344, "RE%47IST%45R"),
            "max_forwards": 70,
            # Two Contact values, not three: C%6Fntact is another header.
            "contacts": [
                _na(_uri("alias1", "host1.example.com")),
                _na(_uri("alias3", "host3.example.com")),
            ],
            "headers": {"C%6Fntact": ["<sip:alias2@host2.example.com>"]},
            "body_len": 0,
        },
    },
    "lwsdisp": {
        "section": "3.1.1.6",
        "title": "Message with No LWS between Display Name and <",
        "verdict": VALID,
        "expect": {
            "method": "OPTIONS",
            "from_": _na(_uri("caller", "example.com"), "caller", tag="323"),
            "to": _na(_uri("user", "example.com")),
            "call_id": "lwsdisp.1234abcd@funky.example.com",
            "cseq": (60, "OPTIONS"),
            "max_forwards": 70,
            "body_len": 0,
        },
    },
    "longreq": {
        "section": "3.1.1.7",
        "title": "Long Values in Header Fields",
        "verdict": VALID,
        "expect": {
            "method": "INVITE",
            "to": _na(
                _uri(
                    "user",
                    "example.com",
                    6000,
                    params={
                        "unknownparam1": "very" + "long" * 20 + "value",
                        "longparam" + "name" * 25: "shortvalue",
                        "very" + "long" * 25 + "ParameterNameWithNoValue": None,
                    },
                ),
                "I have a user name of " + "extreme" * 10 + " proportion",
            ),
            "from_": _na(
                _uri(_LONG_USER, "example.net"),
                None,
                **{
                    "tag": _LONG_TAG,
                    "unknownheaderparam" + "name" * 20: "unknowheaderparam" + "value" * 15,
                    "unknownValueless" + "paramname" * 10: None,
                },
            ),
            "call_id": "longreq.one" + "really" * 20 + "longcallid",
            "cseq": (3882340, "INVITE"),
            "via_count": 34,
            "top_via": _via("TCP", "sip33.example.com"),
            "last_via": _via(
                "TCP",
                "host.example.com",
                received="192.0.2.5",
                branch="very" + "long" * 50 + "branchvalue",
            ),
            "max_forwards": 70,
            "contacts": [_na(_uri(_LONG_USER, "host5.example.net"))],
            "headers": {
                "Unknown-" + "Long" * 20 + "-Name": [
                    "unknown-"
                    + "long" * 20
                    + "-value; unknown-"
                    + "long" * 20
                    + "-parameter-name = unknown-"
                    + "long" * 20
                    + "-parameter-value"
                ]
            },
            "content_type": "application/sdp",
            "body_len": _SDP_150,
        },
    },
    "dblreq": {
        "section": "3.1.1.8",
        "title": "Extra Trailing Octets in a UDP Datagram",
        "verdict": VALID,
        "expect": {
            # The INVITE after the REGISTER's empty body is noise (RFC 3261 §18.3).
            "method": "REGISTER",
            "call_id": "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
            "cseq": (8, "REGISTER"),
            "max_forwards": 8,
            "contacts": [_na(_uri("j.user", "host.example.com"))],
            "vias": [_via("UDP", "192.0.2.125", branch="z9hG4bKkdjuw23492")],
            "body": b"",
        },
    },
    "semiuri": {
        "section": "3.1.1.9",
        "title": "Semicolon-Separated Parameters in URI User Part",
        "verdict": VALID,
        "expect": {
            "method": "OPTIONS",
            # The user part is "user;par=u@example.net"; the URI has no params.
            "ruri": _uri("user;par=u@example.net", "example.com"),
            "cseq": (8, "OPTIONS"),
            "max_forwards": 3,
            "header_lists": {
                "Accept": [
                    "application/sdp",
                    "application/pkcs7-mime",
                    "multipart/mixed",
                    "multipart/signed",
                    "message/sip",
                    "message/sipfrag",
                ]
            },
            "body_len": 0,
        },
    },
    "transports": {
        "section": "3.1.1.10",
        "title": "Variety of Transport Types",
        "verdict": VALID,
        "expect": {
            "method": "OPTIONS",
            "call_id": "transports.kijh4akdnaqjkwendsasfdj",
            "vias": [
                _via("UDP", "t1.example.com", branch="z9hG4bKkdjuw"),
                _via("SCTP", "t2.example.com", branch="z9hG4bKklasjdhf"),
                _via("TLS", "t3.example.com", branch="z9hG4bK2980unddj"),
                _via("UNKNOWN", "t4.example.com", branch="z9hG4bKasd0f3en"),
                _via("TCP", "t5.example.com", branch="z9hG4bK0a9idfnee"),
            ],
            "body_len": 0,
        },
    },
    "mpart01": {
        "section": "3.1.1.11",
        "title": "Multipart MIME Message",
        "verdict": VALID,
        "expect": {
            "method": "MESSAGE",
            "vias": [
                _via(
                    "UDP",
                    "127.0.0.1",
                    5070,
                    branch="z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-",
                    rport=None,
                )
            ],
            "content_type": "multipart/mixed",
            "cseq": (1, "MESSAGE"),
            # The binary part holds NUL and bare CR octets; framing is by Content-Length only.
            "body_len": 553,
            "body_contains": [b"\x00", b"--7a9cbec02ceef655--\r\n"],
        },
    },
    "unreason": {
        "section": "3.1.1.12",
        "title": "Unusual Reason Phrase",
        "verdict": VALID,
        "expect": {
            "status": 200,
            "reason": "= 2**3 * 5**2 но сто девяносто девять - простое",
            "cseq": (35, "INVITE"),
            "to": _na(_uri("user", "example.edu"), tag="2229"),
            "body_len": 154,
        },
    },
    "noreason": {
        "section": "3.1.1.13",
        "title": "Empty Reason Phrase",
        "verdict": VALID,
        "expect": {"status": 100, "reason": "", "cseq": (35, "INVITE"), "body_len": 0},
    },
    # ---- 3.1.2 Invalid messages --------------------------------------------------------------
    "badinv01": {
        "section": "3.1.2.1",
        "title": "Extraneous Header Field Separators",
        "verdict": INVALID,
        "status": {400},
        "broken": ["vias", "contacts"],
    },
    "clerr": {
        "section": "3.1.2.2",
        "title": "Content Length Larger Than Message",
        "verdict": INVALID,
        "status": {400},  # over UDP, which is how parse_message treats a whole datagram
        "broken": [],
    },
    "ncl": {
        "section": "3.1.2.3",
        "title": "Negative Content-Length",
        "verdict": INVALID,
        "status": {400},
        "broken": [],
    },
    "scalar02": {
        "section": "3.1.2.4",
        "title": "Request Scalar Fields with Overlarge Values",
        "verdict": INVALID,
        "status": {400},  # "should respond with a 400 Bad Request due to the CSeq error"
        "broken": ["cseq"],
        # Each out-of-range scalar is also an error on its own accessor.
        "also_broken": ["max_forwards", "expires"],
    },
    "scalarlg": {
        "section": "3.1.2.5",
        "title": "Response Scalar Fields with Overlarge Values",
        "verdict": INVALID,  # "will simply discard it"
        "status": {400},
        "broken": ["cseq"],
    },
    "quotbal": {
        "section": "3.1.2.6",
        "title": "Unterminated Quoted String in Display Name",
        "verdict": INVALID,
        "status": {400},
        "broken": ["to"],
    },
    "ltgtruri": {
        "section": "3.1.2.7",
        "title": "<> Enclosing Request-URI",
        "verdict": EITHER,  # "reasonable to reject"; a liberal element may accept
        "broken": ["ruri"],
    },
    "lwsruri": {
        "section": "3.1.2.8",
        "title": "Malformed SIP Request-URI (embedded LWS)",
        "verdict": INVALID,
        "status": {400},
        "broken": ["ruri"],
    },
    "lwsstart": {
        "section": "3.1.2.9",
        "title": "Multiple SP Separating Request-Line Elements",
        "verdict": EITHER,  # "acceptable to reject"; a liberal element may ignore the SPs
        "broken": ["ruri"],
    },
    "trws": {
        "section": "3.1.2.10",
        "title": "SP Characters at End of Request-Line",
        "verdict": EITHER,
        "broken": [],
    },
    "escruri": {
        "section": "3.1.2.11",
        "title": "Escaped Headers in SIP Request-URI",
        "verdict": EITHER,  # "acceptable ... to reject with a 400"; may ignore the headers
        "broken": ["ruri"],
    },
    "baddate": {
        "section": "3.1.2.12",
        "title": "Invalid Time Zone in Date Header Field",
        "verdict": EITHER,  # reject only if Date matters to the element (it does not here)
        "broken": [],
    },
    "regbadct": {
        "section": "3.1.2.13",
        "title": "Failure to Enclose name-addr URI in <>",
        "verdict": EITHER,  # "reasonable to reject"; a liberal element may accept
        "broken": ["contacts"],
    },
    "badaspec": {
        "section": "3.1.2.14",
        "title": "Spaces within addr-spec",
        "verdict": EITHER,  # "reasonable to reject"; a liberal element may accept
        "broken": ["to"],
    },
    "baddn": {
        "section": "3.1.2.15",
        "title": "Non-token Characters in Display Name",
        "verdict": EITHER,  # "reasonable to reject"; a liberal element may accept
        "broken": ["to", "from_"],
    },
    "badvers": {
        "section": "3.1.2.16",
        "title": "Unknown Protocol Version",
        "verdict": INVALID,
        "status": {505},
        "broken": [],
    },
    "mismatch01": {
        "section": "3.1.2.17",
        "title": "Start Line and CSeq Method Mismatch",
        "verdict": INVALID,
        "status": {400},
        "broken": [],
    },
    "mismatch02": {
        "section": "3.1.2.18",
        "title": "Unknown Method with CSeq Method Mismatch",
        "verdict": INVALID,
        "status": {501, 400},  # 501 preferred, 400 acceptable
        "broken": [],
    },
    "bigcode": {
        "section": "3.1.2.19",
        "title": "Overlarge Response Code",
        "verdict": INVALID,  # "should simply drop it"
        "status": {400},
        "broken": [],
    },
    # ---- 3.2 Transaction layer semantics -----------------------------------------------------
    "badbranch": {
        "section": "3.2.1",
        "title": "Missing Transaction Identifier",
        "verdict": VALID,  # "A parser must not break"; rejecting is the transaction layer's call
        "expect": {
            "method": "OPTIONS",
            "vias": [_via("UDP", "192.0.2.1", branch="z9hG4bK")],
            "cseq": (8, "OPTIONS"),
            "body_len": 0,
        },
    },
    # ---- 3.3 Application layer semantics -----------------------------------------------------
    "insuf": {
        "section": "3.3.1",
        "title": "Missing Required Header Fields",
        "verdict": INVALID,  # no To, From, Call-ID: 400; the parser checks mandatory headers
        "status": {400},
        "broken": [],
    },
    "unkscm": {
        "section": "3.3.2",
        "title": "Request-URI with Unknown Scheme",
        "verdict": ENDPOINT,
        "endpoint_status": 416,
        "expect": {"method": "OPTIONS", "uri": "nobodyKnowsThisScheme:totallyopaquecontent"},
    },
    "novelsc": {
        "section": "3.3.3",
        "title": "Request-URI with Known but Atypical Scheme",
        "verdict": ENDPOINT,
        "endpoint_status": 416,
        "expect": {"method": "OPTIONS", "uri": "soap.beep://192.0.2.103:3002"},
    },
    "unksm2": {
        "section": "3.3.4",
        "title": "Unknown URI Schemes in Header Fields",
        "verdict": ENDPOINT,
        "endpoint_status": 400,  # a registrar rejects the non-SIP To
        "expect": {"method": "REGISTER", "cseq": (234902, "REGISTER")},
    },
    "bext01": {
        "section": "3.3.5",
        "title": "Proxy-Require and Require",
        "verdict": ENDPOINT,
        "endpoint_status": 420,
        "expect": {
            "header_lists": {
                "Require": ["nothingSupportsThis", "nothingSupportsThisEither"],
                "Proxy-Require": ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"],
            }
        },
    },
    "invut": {
        "section": "3.3.6",
        "title": "Unknown Content-Type",
        "verdict": ENDPOINT,
        "endpoint_status": 415,
        "expect": {"content_type": "application/unknownformat", "body_len": 40},
    },
    "regaut01": {
        "section": "3.3.7",
        "title": "Unknown Authorization Scheme",
        "verdict": ENDPOINT,
        "endpoint_status": 401,
        "expect": {
            "method": "REGISTER",
            "headers": {"Authorization": ["NoOneKnowsThisScheme opaque-data=here"]},
        },
    },
    "multi01": {
        "section": "3.3.8",
        "title": "Multiple Values in Single Value Required Fields",
        "verdict": INVALID,  # "would respond with a 400 Bad Request"
        "status": {400},
        "broken": [],
    },
    "mcl01": {
        "section": "3.3.9",
        "title": "Multiple Content-Length Values",
        "verdict": INVALID,  # framing cannot be trusted: 400
        "status": {400},
        "broken": [],
    },
    "bcast": {
        "section": "3.3.10",
        "title": "200 OK Response with Broadcast Via Header Field Value",
        "verdict": ENDPOINT,  # must not be forwarded to the broadcast address
        "endpoint_status": None,
        "expect": {
            "status": 200,
            "vias": [
                _via("UDP", "192.0.2.198", branch="z9hG4bK1324923"),
                _via("UDP", "255.255.255.255", branch="z9hG4bK1saber23"),
            ],
        },
    },
    "zeromf": {
        "section": "3.3.11",
        "title": "Max-Forwards of Zero",
        "verdict": ENDPOINT,  # a proxy answers 483; a UAS answers the OPTIONS normally
        "endpoint_status": 483,
        "expect": {"method": "OPTIONS", "max_forwards": 0},
    },
    "cparam01": {
        "section": "3.3.12",
        "title": "REGISTER with a Contact Header Parameter",
        "verdict": ENDPOINT,
        "endpoint_status": 200,
        # addr-spec form: ";unknownparam" is a Contact header param, not a URI param.
        "expect": {"contacts": [_na(_uri("+19725552222", "gw1.example.net"), unknownparam=None)]},
    },
    "cparam02": {
        "section": "3.3.13",
        "title": "REGISTER with a URL Parameter",
        "verdict": ENDPOINT,
        "endpoint_status": 200,
        # name-addr form: ";unknownparam" belongs to the URI.
        "expect": {
            "contacts": [
                _na(_uri("+19725552222", "gw1.example.net", params={"unknownparam": None}))
            ]
        },
    },
    "regescrt": {
        "section": "3.3.14",
        "title": "REGISTER with a URL Escaped Header",
        "verdict": ENDPOINT,
        "endpoint_status": 200,
        "expect": {"contacts_uri_headers": [{"Route": "<sip:sip.example.com>"}]},
    },
    "sdp01": {
        "section": "3.3.15",
        "title": "Unacceptable Accept Offering",
        "verdict": ENDPOINT,
        "endpoint_status": 406,
        "expect": {"content_type": "application/sdp", "body_len": 150},
    },
    # ---- 3.4 Backward compatibility ----------------------------------------------------------
    "inv2543": {
        "section": "3.4.1",
        "title": "INVITE with RFC 2543 Syntax",
        "verdict": ENDPOINT,  # no Max-Forwards, no branch, no Content-Length: process it
        "endpoint_status": None,
        "expect": {
            "method": "INVITE",
            "max_forwards": None,
            "vias": [_via("UDP", "iftgw.example.com")],
            # No Content-Length over UDP: the body runs to the end of the datagram.
            "body_len": 105,
        },
    },
}
