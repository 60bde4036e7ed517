"""parse_via's fast path (sip/headers.py: string operations, one character class for the
parameters) gives exactly what the general parser gives: the same Via, or a ParseError with
the same text, for generated Vias close to the common shape and for arbitrary strings. And the
host cache (sip/uri.py `valid_host`) answers what the pattern answers."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presenced.sip import uri
from presenced.sip.errors import ParseError
from presenced.sip.headers import Via, _parse_via, parse_via

CHECK = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that are valid, and near misses of each (the cases a fast path could get wrong).
_protocols = st.sampled_from(["SIP/2.0/", "sip/2.0/", "SIP/2.1/", "SIP / 2.0 / ", "SIP/2.0"])
_transports = st.sampled_from(["UDP", "tcp", "Tls", "WSS", "X-1", "", "U D"])
_gaps = st.sampled_from([" ", "  ", "\t", ""])
_hosts = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9\-]{0,5}(\.[a-z0-9\-]{1,5}){0,3}\.?", fullmatch=True),
    st.text("ab09.-[]:_", min_size=0, max_size=8),
    st.just("127.0.0.1"), st.just("[::1]"), st.just("-bad.example"),
)
_ports = st.one_of(st.none(), st.integers(0, 99999).map(str), st.text("09a ", max_size=6))
_params = st.lists(st.one_of(
    st.sampled_from(["branch=z9hG4bK1", "rport", "rport=5060", "received=10.0.0.1", "RPORT",
                     "branch=", "=x", "a=b=c", 'x="q;uoted"', "received=::1", "ttl=[::1]"]),
    st.text("abAB09-.!%*_+`'~=\" ", max_size=6)), max_size=4)


def _outcome(fn, text: str) -> Via | str:  # type: ignore[no-untyped-def]
    try:
        return fn(text)  # type: ignore[no-any-return]
    except ParseError as exc:
        return f"ParseError: {exc}"


@CHECK
@given(_protocols, _transports, _gaps, _hosts, _ports, _params, st.sampled_from(["", " ", ";"]))
def test_fast_path_agrees_with_the_general_parser(protocol: str, transport: str, gap: str,
                                                  host: str, port: str | None,
                                                  params: list[str], tail: str) -> None:
    text = (protocol + transport + gap + host + (f":{port}" if port is not None else "")
            + "".join(f";{p}" for p in params) + tail)
    assert _outcome(parse_via, text) == _outcome(_parse_via, text), text


@CHECK
@given(st.text(max_size=40))
def test_any_string_gets_the_same_answer(text: str) -> None:
    assert _outcome(parse_via, "SIP/2.0/UDP " + text) == _outcome(_parse_via, "SIP/2.0/UDP " + text)


def test_common_vias_parse_as_before() -> None:
    via = parse_via("SIP/2.0/udp pc33.example.com:5066;branch=z9hG4bK776asdhds;RPORT;received=192.0.2.1")
    assert (via.transport, via.host, via.port) == ("UDP", "pc33.example.com", 5066)
    assert via.params == {"branch": "z9hG4bK776asdhds", "rport": None, "received": "192.0.2.1"}
    assert str(via) == "SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1"


def test_the_host_cache_answers_as_the_pattern_and_stays_bounded() -> None:
    assert uri.valid_host("proxy.example.com") and uri.valid_host("proxy.example.com")
    assert not uri.valid_host("-proxy.example.com") and not uri.valid_host("a..b")
    assert "-proxy.example.com" not in uri._GOOD_HOSTS  # only accepted hosts are kept
    for i in range(uri._GOOD_HOSTS_MAX + 10):
        assert uri.valid_host(f"h{i}.example.com")
    assert len(uri._GOOD_HOSTS) <= uri._GOOD_HOSTS_MAX
    assert not uri.valid_host("a..b")
    huge = "a" * 60_000 + ".example.com"  # accepted, but never kept: the cache's memory is bounded
    assert uri.valid_host(huge) and huge not in uri._GOOD_HOSTS


# Near misses of each step the string operations take: the space, the port, the parameter
# characters, empty names and values, a second '=', non-ASCII letters and digits.
_NEAR_MISSES = [
    "SIP/2.0/UDP h", "SIP/2.0/UDP h:", "SIP/2.0/UDP h:5060:1", "SIP/2.0/UDP h:123456",
    "SIP/2.0/UDP h:65536", "SIP/2.0/UDP h:065535", "SIP/2.0/UDP h;", "SIP/2.0/UDP h;;a",
    "SIP/2.0/UDP h;=a", "SIP/2.0/UDP h;a=", "SIP/2.0/UDP h;a=b=c", "SIP/2.0/UDP h;A=B;a",
    "SIP/2.0/UDP h ;a", "SIP/2.0/UDP  h", "SIP/2.0/ h", "SIP/2.0/UDP", "SIP/2.0/U1 h",
    "SIP/2.0/UDP h;a b", 'SIP/2.0/UDP h;a="b"', "SIP/2.0/UDP h:5\u0661", "SIP/2.0/\u00c9 h",
    "SIP/2.0/UDP h\u00e9", "SIP/2.0/UDP h;\u00e9", "SIP/2.0/UDP [::1];a", "SIP/2.0/UDP h.:5;a",
    "SIP/2.0/UDP -h", "SIP/2.0/UDP h;branch=z9hG4bK-1;rport;received=10.0.0.1",
]


def test_near_misses_get_the_same_answer() -> None:
    for text in _NEAR_MISSES:
        assert _outcome(parse_via, text) == _outcome(_parse_via, text), text
