"""parse_uri's fast path (sip/uri.py: string operations, one character class for the
parameters) gives exactly what the general parser gives: the same SipUri, or a ParseError
with the same text, for generated URIs close to the common shape and for arbitrary strings."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presenced.sip.errors import ParseError
from presenced.sip.uri import SipUri, _parse_uri, parse_uri

CHECK = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that are valid, and near misses of each (the cases a fast path could get wrong).
_schemes = st.sampled_from(["sip", "sips", "SIP", "Sip", "tel", "sipx", ""])
_users = st.one_of(st.none(), st.text("abAB09-_.!~*'()&=+$,;?/%:@2F", min_size=0, max_size=8))
_hosts = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9\-]{0,5}(\.[a-z0-9\-]{1,5}){0,3}\.?", fullmatch=True),
    st.text("ab09.-[]:_", min_size=0, max_size=8),
    st.just("127.0.0.1"), st.just("[::1]"),
)
_ports = st.one_of(st.none(), st.integers(0, 99999).map(str), st.text("09a", max_size=6))
_params = st.lists(st.text("abAB09-_.!~*'()[]/:&+$=%", max_size=6), max_size=4)


def _outcome(fn, text: str) -> SipUri | str:  # type: ignore[no-untyped-def]
    try:
        return fn(text)  # type: ignore[no-any-return]
    except ParseError as exc:
        return f"ParseError: {exc}"


@CHECK
@given(_schemes, _users, _hosts, _ports, _params, st.sampled_from(["", "?h=v", "?x", "%41"]))
def test_fast_path_agrees_with_the_general_parser(scheme: str, user: str | None, host: str,
                                                  port: str | None, params: list[str],
                                                  tail: str) -> None:
    text = (f"{scheme}:" + (f"{user}@" if user is not None else "") + host
            + (f":{port}" if port is not None else "") + "".join(f";{p}" for p in params) + tail)
    assert _outcome(parse_uri, text) == _outcome(_parse_uri, text), text


@CHECK
@given(st.text(max_size=40))
def test_any_string_gets_the_same_answer(text: str) -> None:
    assert _outcome(parse_uri, "sip:" + text) == _outcome(_parse_uri, "sip:" + text)


def test_common_uris_parse_as_before() -> None:
    uri = parse_uri("sip:alice@example.com:5070;transport=UDP;lr")
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("sip", "alice", "example.com", 5070)
    assert uri.params == {"transport": "UDP", "lr": None}
    assert str(uri) == "sip:alice@example.com:5070;transport=UDP;lr"


def test_a_long_near_miss_fails_in_linear_time() -> None:
    """No catastrophic backtracking: 60,000 host characters and then a bad one."""
    text = "sip:" + "a" * 30_000 + "@" + "b-" * 30_000 + "!"
    start = time.process_time()
    assert isinstance(_outcome(parse_uri, text), str)
    assert time.process_time() - start < 1.0


@CHECK
@given(st.one_of(st.text(max_size=12), st.text("abAZ09-_.!~*'()&=+$,;?/%@: \r\n", max_size=12)))
def test_escape_user_gives_what_quote_gives(user: str) -> None:
    from urllib.parse import quote

    from presenced.sip.uri import _USER_SAFE, escape_user
    assert escape_user(user) == quote(user, safe=_USER_SAFE)
    assert "\r" not in escape_user(user) and "\n" not in escape_user(user)


# Near misses of each step the string operations take: the scheme, the '@', the user's
# characters, the port, the parameters' characters, empty names and values, a second '='.
_NEAR_MISSES = [
    "sip:", "sips:", "sip:@h", "sip:u@", "sip:u@@h", "sip:u@h@g", "sip:a;b@h", "sip:u%41@h",
    "sip:u:pw@h", "sip:u@h:", "sip:u@h:5:6", "sip:u@h:123456", "sip:u@h:65536", "sip:u@h:0",
    "sip:h;", "sip:h;;lr", "sip:h;=x", "sip:h;a=", "sip:h;a=b=c", "sip:h;A=B;a", "sip:h?x=y",
    "sip:h;a?b", "sip:h;a%41", "sip:[::1]:5060", "sip:u@h;transport=udp;lr", "SIP:u@h",
    "sip:\u00e9@h", "sip:u@h\u00e9", "sip:u@h;\u00e9", "sip:u@h:5\u0661", "sip:u@-h",
    "sips:u@h.:5061;lr", "sip:u@h t", "sip:u@h;a b", "tel:+1-555",
]


def test_near_misses_get_the_same_answer() -> None:
    for text in _NEAR_MISSES:
        assert _outcome(parse_uri, text) == _outcome(_parse_uri, text), text
