"""Digest authentication: RFC 2617 / RFC 7616 vectors, challenge/verify round trips, the parser."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presenced.sip.auth import (
    AuthOutcome,
    AuthParseError,
    DigestAuthenticator,
    DigestCredentials,
    StaticCredentials,
    UnsupportedSchemeError,
    compute_ha1,
    digest_response,
    load_users_file,
    parse_digest_credentials,
)
from presenced.sip.errors import ParseError
from presenced.sip.uri import parse_uri

REALM = "example.com"
KEY = b"0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0  # wall-clock epoch seconds
URI = "sip:example.com"
RURI = parse_uri(URI)


def make_auth(**kwargs: object) -> DigestAuthenticator:
    store = StaticCredentials(REALM)
    store.add_password("alice", "secret")
    store.add_password("bob", "hunter2")
    return DigestAuthenticator(REALM, KEY, store, **kwargs)  # type: ignore[arg-type]


_CHALLENGE_PARAM = re.compile(r'([A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')


def challenge_params(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    return {k: v.strip('"') for k, v in _CHALLENGE_PARAM.findall(value)}


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def answer(
    challenge: str,
    username: str,
    password: str,
    *,
    method: str = "SUBSCRIBE",
    uri: str = URI,
    realm: str | None = None,
    cnonce: str = "0a4f113b",
    nc: str = "00000001",
    qop: str | None = "auth",
    nonce: str | None = None,
) -> str:
    """What a well-behaved client sends back: an Authorization header value (RFC 3261 §22.2)."""
    p = challenge_params(challenge)
    algorithm = p["algorithm"]
    realm = p["realm"] if realm is None else realm
    nonce = p["nonce"] if nonce is None else nonce
    base = algorithm.upper().removesuffix("-SESS")
    ha1 = compute_ha1(base, username, realm, password)
    response = digest_response(algorithm, ha1, nonce, method, uri, qop=qop, nc=nc, cnonce=cnonce)
    parts = [
        f"username={quote(username)}",
        f"realm={quote(realm)}",
        f"nonce={quote(nonce)}",
        f"uri={quote(uri)}",
        f'response="{response}"',
        f"algorithm={algorithm}",
        f'opaque="{p["opaque"]}"',
    ]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc}", f"cnonce={quote(cnonce)}"]
    return "Digest " + ", ".join(parts)


def verify_header(
    auth: DigestAuthenticator, header: str, now: float, method: str = "SUBSCRIBE"
) -> AuthOutcome:
    return auth.verify(parse_digest_credentials(header), method, RURI, now).outcome


# -- published vectors --------------------------------------------------------------------------


def test_md5_response_matches_rfc2617_section_3_5_example() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = digest_response(
        "MD5",
        ha1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_response_matches_rfc7616_section_3_9_1_example(algorithm: str, expected: str) -> None:
    # Note the RFC 7616 password is "Circle of Life" (lower-case "of"), unlike RFC 2617's.
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = digest_response(
        algorithm,
        ha1,
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "GET",
        "/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == expected


def test_parses_rfc2617_section_3_5_authorization_header() -> None:
    creds = parse_digest_credentials(
        'Digest username="Mufasa",\t realm="testrealm@host.com",'
        ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth,'
        ' nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1",'
        ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert creds == DigestCredentials(
        username="Mufasa",
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html",
        response="6629fae49393a05397450978507c4ef1",
        algorithm="MD5",
        cnonce="0a4f113b",
        nc="00000001",
        qop="auth",
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
    )


def test_parses_rfc7616_section_3_9_1_sha256_header_and_ignores_userhash() -> None:
    creds = parse_digest_credentials(
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html",'
        ' algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001,'
        ' cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth,'
        ' response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",'
        ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", userhash=false'
    )
    assert creds.algorithm == "SHA-256"
    assert creds.cnonce == "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    assert creds.response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


# -- challenges ---------------------------------------------------------------------------------


def test_challenge_lists_sha256_before_md5_rfc8760_section_2_4() -> None:
    values = make_auth().challenge(T0)
    assert [challenge_params(v)["algorithm"] for v in values] == ["SHA-256", "MD5"]
    for v in values:
        p = challenge_params(v)
        assert p["realm"] == REALM
        assert p["qop"] == "auth"
        assert p["nonce"] and p["opaque"]
        assert "stale" not in p


def test_challenge_sets_stale_true_only_when_asked() -> None:
    auth = make_auth()
    assert all(challenge_params(v)["stale"] == "true" for v in auth.challenge(T0, stale=True))
    assert all("stale" not in challenge_params(v) for v in auth.challenge(T0))


def test_challenge_offers_only_the_configured_algorithms() -> None:
    values = make_auth(algorithms=("SHA-256",)).challenge(T0)
    assert [challenge_params(v)["algorithm"] for v in values] == ["SHA-256"]


def test_challenge_escapes_quotes_in_the_realm() -> None:
    auth = DigestAuthenticator('a"b\\c', KEY, StaticCredentials('a"b\\c'))
    assert auth.challenge(T0)[0].startswith('Digest realm="a\\"b\\\\c", ')


def test_nonces_differ_between_instants_and_are_32_base64url_chars() -> None:
    auth = make_auth()
    n1 = challenge_params(auth.challenge(T0)[0])["nonce"]
    n2 = challenge_params(auth.challenge(T0 + 0.001)[0])["nonce"]
    assert n1 != n2
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", n1)


def test_rejects_a_short_key_and_unknown_algorithms() -> None:
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, b"short", StaticCredentials(REALM))
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, KEY, StaticCredentials(REALM), algorithms=("SHA-512",))


# -- verify -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1], ids=["SHA-256", "MD5"])
def test_round_trip_challenge_response_succeeds(index: int) -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[index]
    result = auth.verify(
        parse_digest_credentials(answer(challenge, "alice", "secret")), "SUBSCRIBE", RURI, T0 + 1
    )
    assert result.outcome is AuthOutcome.OK
    assert result.ok
    assert result.username == "alice"


def test_nonce_is_stateless_another_instance_with_the_same_key_accepts_it() -> None:
    challenge = make_auth().challenge(T0)[0]
    assert (
        verify_header(make_auth(), answer(challenge, "alice", "secret"), T0 + 1) is AuthOutcome.OK
    )


def test_rfc2069_response_without_qop_is_refused_rfc7616_section_3_4() -> None:
    # Without qop there is no nonce-count, so nothing tells a replay from a new request.
    auth = make_auth()
    header = answer(auth.challenge(T0)[1], "alice", "secret", qop=None)
    result = auth.verify(parse_digest_credentials(header), "SUBSCRIBE", RURI, T0 + 1)
    assert result.outcome is AuthOutcome.FAILED
    assert result.reason == "qop absent refused"


def test_session_variant_works_when_offered_rfc7616_section_3_4_2() -> None:
    auth = make_auth(algorithms=("SHA-256-sess", "MD5"))
    challenge = auth.challenge(T0)[0]
    assert challenge_params(challenge)["algorithm"] == "SHA-256-sess"
    assert verify_header(auth, answer(challenge, "bob", "hunter2"), T0) is AuthOutcome.OK


def test_algorithm_not_offered_fails_even_with_the_right_password() -> None:
    sha_only = make_auth(algorithms=("SHA-256",))
    md5_challenge = make_auth().challenge(T0)[1]
    assert (
        verify_header(sha_only, answer(md5_challenge, "alice", "secret"), T0) is AuthOutcome.FAILED
    )


def test_wrong_password_fails() -> None:
    auth = make_auth()
    for challenge in auth.challenge(T0):
        header = answer(challenge, "alice", "Secret")
        assert verify_header(auth, header, T0 + 1) is AuthOutcome.FAILED


def test_response_for_another_method_or_uri_fails() -> None:
    auth = make_auth()
    creds = parse_digest_credentials(answer(auth.challenge(T0)[0], "alice", "secret"))
    assert auth.verify(creds, "PUBLISH", RURI, T0).outcome is AuthOutcome.FAILED
    altered = parse_digest_credentials(
        answer(auth.challenge(T0)[0], "alice", "secret").replace(URI, "sip:other.com")
    )
    assert auth.verify(altered, "SUBSCRIBE", RURI, T0).outcome is AuthOutcome.FAILED


def test_expired_nonce_with_right_password_is_stale_rfc7616_section_3_3() -> None:
    auth = make_auth(nonce_ttl=300)
    header = answer(auth.challenge(T0)[0], "alice", "secret")
    assert verify_header(auth, header, T0 + 299.9) is AuthOutcome.OK
    result = auth.verify(parse_digest_credentials(header), "SUBSCRIBE", RURI, T0 + 300.1)
    assert result.outcome is AuthOutcome.STALE
    assert result.username == "alice"
    assert not result.ok


def test_expired_nonce_with_wrong_password_fails_rather_than_stale() -> None:
    auth = make_auth(nonce_ttl=300)
    header = answer(auth.challenge(T0)[0], "alice", "wrong")
    assert verify_header(auth, header, T0 + 301) is AuthOutcome.FAILED


def test_nonce_from_the_future_is_stale_after_the_clock_went_back() -> None:
    auth = make_auth()
    header = answer(auth.challenge(T0)[0], "alice", "secret")
    assert verify_header(auth, header, T0 - 60) is AuthOutcome.STALE


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


@pytest.mark.parametrize("index", [0, 5, 10, 20, 31])
def test_tampered_nonce_is_never_ok(index: int) -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[0]
    nonce = _flip(challenge_params(challenge)["nonce"], index)
    # A correct response over a tampered nonce: only the HMAC catches it. The response is
    # right, so the answer is a new nonce with stale=true (RFC 7616 §3.3), never OK.
    header = answer(challenge, "alice", "secret", nonce=nonce)
    assert verify_header(auth, header, T0 + 1) is AuthOutcome.STALE
    wrong = answer(challenge, "alice", "wrong", nonce=nonce)
    assert verify_header(auth, wrong, T0 + 1) is AuthOutcome.FAILED


def test_nonce_with_a_forged_fresh_timestamp_is_never_ok() -> None:
    auth = make_auth(nonce_ttl=300)
    challenge = auth.challenge(T0)[0]
    raw = base64.urlsafe_b64decode(challenge_params(challenge)["nonce"])
    later = int((T0 + 3600) * 1_000_000).to_bytes(8, "big", signed=True)
    forged = base64.urlsafe_b64encode(later + raw[8:]).decode()
    header = answer(challenge, "alice", "secret", nonce=forged)
    assert verify_header(auth, header, T0 + 3600) is AuthOutcome.STALE


@pytest.mark.parametrize(
    "nonce",
    ["", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "!" * 32, "A" * 31 + "=", "A" * 32, "é" * 32],
)
def test_foreign_or_garbage_nonce_is_stale_with_a_right_response(nonce: str) -> None:
    # E.g. a nonce from before a restart (new key): the client retries without its user.
    auth = make_auth()
    header = answer(auth.challenge(T0)[0], "alice", "secret", nonce=nonce)
    assert verify_header(auth, header, T0) is AuthOutcome.STALE
    wrong = answer(auth.challenge(T0)[0], "alice", "guess", nonce=nonce)
    assert verify_header(auth, wrong, T0) is AuthOutcome.FAILED


def test_nonce_minted_with_another_key_is_not_ok() -> None:
    other = DigestAuthenticator(REALM, b"another key, 16+ bytes", StaticCredentials(REALM))
    header = answer(other.challenge(T0)[0], "alice", "secret")
    # The opaque differs too; drop it so the nonce check alone decides.
    header = re.sub(r', opaque="[^"]*"', "", header)
    assert verify_header(make_auth(), header, T0) is AuthOutcome.STALE


def test_realm_mismatch_fails_even_with_a_consistent_response() -> None:
    # The store holds HA1s computed for another realm, so a client that answers with that realm
    # produces a digest matching the stored HA1: only the realm check can refuse it.
    store = StaticCredentials("other.example.com")
    store.add_password("alice", "secret")
    auth = DigestAuthenticator(REALM, KEY, store)
    header = answer(auth.challenge(T0)[0], "alice", "secret", realm="other.example.com")
    assert verify_header(auth, header, T0) is AuthOutcome.FAILED
    good = answer(auth.challenge(T0)[0], "alice", "secret")
    assert verify_header(auth, good, T0) is AuthOutcome.FAILED  # HA1 is for the wrong realm


def test_nonce_from_another_realm_with_the_same_key_is_not_ok() -> None:
    # The nonce HMAC covers the realm: one issued for other.example.com is not ours here.
    other = DigestAuthenticator("other.example.com", KEY, StaticCredentials("other.example.com"))
    header = answer(other.challenge(T0)[0], "alice", "secret", realm=REALM)
    header = re.sub(r', opaque="[^"]*"', "", header)
    result = make_auth().verify(parse_digest_credentials(header), "SUBSCRIBE", RURI, T0)
    assert result.outcome is AuthOutcome.STALE
    assert result.reason == "nonce not issued by us for this realm"


def test_altered_opaque_fails_and_absent_opaque_is_accepted() -> None:
    auth = make_auth()
    header = answer(auth.challenge(T0)[0], "alice", "secret")
    altered = re.sub(r'opaque="[^"]*"', 'opaque="nope"', header)
    assert verify_header(auth, altered, T0) is AuthOutcome.FAILED
    absent = re.sub(r', opaque="[^"]*"', "", header)
    assert verify_header(auth, absent, T0) is AuthOutcome.OK


def test_qop_auth_int_is_not_offered_and_fails() -> None:
    auth = make_auth()
    header = answer(auth.challenge(T0)[0], "alice", "secret", qop="auth-int")
    assert verify_header(auth, header, T0) is AuthOutcome.FAILED


def test_unknown_user_fails_exactly_like_a_wrong_password() -> None:
    auth = make_auth()
    challenge = auth.challenge(T0)[0]
    unknown = auth.verify(
        parse_digest_credentials(answer(challenge, "mallory", "secret")), "SUBSCRIBE", RURI, T0
    )
    wrong = auth.verify(
        parse_digest_credentials(answer(challenge, "alice", "nope")), "SUBSCRIBE", RURI, T0
    )
    assert unknown.outcome is AuthOutcome.FAILED
    assert unknown == wrong  # same outcome, no username, same log reason


def test_unknown_user_cannot_log_in_even_with_the_dummy_ha1() -> None:
    # Unknown users are checked against an internal dummy HA1 (same work as a real one); a
    # response computed from that very dummy must still fail: only a stored HA1 gives OK.
    auth = make_auth()
    p = challenge_params(auth.challenge(T0)[0])
    dummy = auth._dummy_ha1["SHA-256"]
    response = digest_response(
        "SHA-256", dummy, p["nonce"], "SUBSCRIBE", URI, qop="auth", nc="00000001", cnonce="x"
    )
    creds = DigestCredentials(
        "mallory", REALM, p["nonce"], URI, response, "SHA-256", "x", "00000001", "auth"
    )
    assert auth.verify(creds, "SUBSCRIBE", RURI, T0).outcome is AuthOutcome.FAILED


def test_challenges_after_known_and_unknown_user_failures_are_indistinguishable() -> None:
    auth = make_auth()
    first = auth.challenge(T0)
    for user in ("alice", "mallory"):
        auth.verify(parse_digest_credentials(answer(first[0], user, "bad")), "SUBSCRIBE", RURI, T0)
    known = auth.challenge(T0 + 1)
    unknown = auth.challenge(T0 + 1)
    assert known == unknown
    shape = [re.sub(r'nonce="[^"]*"', 'nonce=""', v) for v in first]
    assert shape == [re.sub(r'nonce="[^"]*"', 'nonce=""', v) for v in unknown]


# -- credential stores --------------------------------------------------------------------------

_ALICE_MD5 = compute_ha1("MD5", "alice", REALM, "secret")
_ALICE_SHA = compute_ha1("SHA-256", "alice", REALM, "secret")
_CAROL_SHA = compute_ha1("SHA-256", "carol", REALM, "pa:ss")

USERS_FILE = f"""\
# presenced users
alice:{_ALICE_MD5}:{_ALICE_SHA}

  # indented comment
bob:plain:hunter2: with a colon
carol::{_CAROL_SHA}
"""


def test_users_file_with_hashes_and_plaintext_authenticates() -> None:
    store = load_users_file(USERS_FILE, REALM)
    assert len(store) == 3
    assert "bob" in store
    assert "mallory" not in store
    auth = DigestAuthenticator(REALM, KEY, store)
    sha, md5 = auth.challenge(T0)
    # One nonce serves both algorithms, so its nonce-count goes up with each use.
    assert verify_header(auth, answer(sha, "alice", "secret"), T0) is AuthOutcome.OK
    assert verify_header(auth, answer(md5, "alice", "secret", nc="00000002"), T0) is AuthOutcome.OK
    header = answer(md5, "bob", "hunter2: with a colon", nc="00000003")
    assert verify_header(auth, header, T0) is AuthOutcome.OK
    assert verify_header(auth, answer(sha, "carol", "pa:ss", nc="00000004"), T0) is AuthOutcome.OK


def test_user_without_md5_ha1_fails_with_md5() -> None:
    auth = DigestAuthenticator(REALM, KEY, load_users_file(USERS_FILE, REALM))
    md5 = auth.challenge(T0)[1]
    assert verify_header(auth, answer(md5, "carol", "pa:ss"), T0) is AuthOutcome.FAILED


def test_precomputed_ha1_is_tied_to_its_realm() -> None:
    store = load_users_file(USERS_FILE, "elsewhere.org")
    auth = DigestAuthenticator("elsewhere.org", KEY, store)
    sha = auth.challenge(T0)[0]
    # alice's hashes were computed for example.com, so they cannot match elsewhere.org...
    assert verify_header(auth, answer(sha, "alice", "secret"), T0) is AuthOutcome.FAILED
    # ...while bob's plaintext password is hashed for the realm it is loaded with.
    assert verify_header(auth, answer(sha, "bob", "hunter2: with a colon"), T0) is AuthOutcome.OK


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("alice", 1),
        ("alice:abc", 1),
        ("# c\nalice::", 2),
        (f"alice:{_ALICE_MD5[:-1]}:", 1),
        (f"alice::{_ALICE_MD5}", 1),
        (f"alice:{'g' * 32}:", 1),
        ("alice:plain:x\nalice:plain:y", 2),
        (":plain:x", 1),
        (" alice:plain:x", 1),
    ],
)
def test_users_file_errors_name_the_line(text: str, line: int) -> None:
    with pytest.raises(ValueError, match=f"line {line}:"):
        load_users_file(text, REALM)


def test_add_ha1_stores_nothing_when_one_hash_is_invalid() -> None:
    store = StaticCredentials(REALM)
    with pytest.raises(ValueError):
        store.add_ha1("alice", md5=_ALICE_MD5, sha256="xyz")
    assert "alice" not in store


# -- parser -------------------------------------------------------------------------------------

_MINIMAL = 'username="u", realm="r", nonce="n", uri="sip:x", response="0a"'


def test_parse_unescapes_quoted_pairs() -> None:
    creds = parse_digest_credentials(
        r'Digest username="a\"b\\c\d", realm="r", nonce="n", uri="sip:x", response="0a"'
    )
    assert creds.username == 'a"b\\cd'


def test_parse_allows_whitespace_around_equals_and_commas_and_case_insensitive_names() -> None:
    creds = parse_digest_credentials(
        '  dIgEsT  USERNAME = "u" ,REALM="r",\tnonce= "n" , uri ="sip:x",response="0A",'
        ' Algorithm=sha-256 , QOP="AUTH", NC="0000000a", cnonce=abc , , '
    )
    assert (creds.username, creds.realm, creds.nonce, creds.uri) == ("u", "r", "n", "sip:x")
    assert (creds.response, creds.algorithm, creds.qop, creds.nc) == (
        "0a",
        "SHA-256",
        "auth",
        "0000000a",
    )
    assert creds.cnonce == "abc"


def test_parse_defaults_algorithm_to_md5_and_keeps_empty_quoted_values() -> None:
    creds = parse_digest_credentials(
        'Digest username="", realm="", nonce="", uri="", response="00"'
    )
    assert creds.algorithm == "MD5"
    assert creds.username == ""
    assert creds.qop is None and creds.nc is None and creds.cnonce is None and creds.opaque is None


@pytest.mark.parametrize("missing", ["username", "realm", "nonce", "uri", "response"])
def test_parse_rejects_missing_required_field(missing: str) -> None:
    params = [p for p in _MINIMAL.split(", ") if not p.startswith(missing + "=")]
    with pytest.raises(AuthParseError, match=missing):
        parse_digest_credentials("Digest " + ", ".join(params))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Digest ",
        "Digest,",
        'Digest username="u"',
        "Digest " + _MINIMAL + ', username="v"',
        "Digest " + _MINIMAL + ", qop=auth",  # qop without nc/cnonce (RFC 7616 §3.4)
        "Digest " + _MINIMAL + ', qop=auth, cnonce="c", nc=1',  # nc is 8LHEX
        "Digest " + _MINIMAL.replace('"0a"', '"xyz"'),
        "Digest " + _MINIMAL.replace('"0a"', '""'),
        'Digest username="u, realm="r"',  # unterminated quote
        'Digest username="u" realm="r"',  # missing comma
        'Digest username=u/v, realm="r", nonce="n", uri="sip:x", response="0a"',  # not a token
        'Digest username="a\nb", realm="r", nonce="n", uri="sip:x", response="0a"',
        "Digest " + _MINIMAL + ", =x",
        "Digest " + _MINIMAL + ",x=",
        ",Digest " + _MINIMAL,
    ],
)
def test_parse_rejects_malformed_values(value: str) -> None:
    with pytest.raises(AuthParseError) as info:
        parse_digest_credentials(value)
    assert isinstance(info.value, ParseError)
    assert info.value.status == 400


def test_parse_rejects_basic_with_a_distinct_error_rfc3261_section_22_1() -> None:
    with pytest.raises(UnsupportedSchemeError):
        parse_digest_credentials("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")


# -- property tests -----------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "Digest",
        "digest ",
        " ",
        "\t",
        ",",
        "=",
        '"',
        "\\",
        '\\"',
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "qop",
        "nc",
        "cnonce",
        "algorithm",
        "auth",
        "00000001",
        "0a",
        "MD5",
        "SHA-256",
        "é",
        "\x00",
        "\r\n",
        "x",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_arbitrary_text_raises_only_auth_parse_error(value: str) -> None:
    try:
        parse_digest_credentials(value)
    except AuthParseError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=40).map("".join))
def test_parse_header_like_junk_raises_only_auth_parse_error_and_verify_never_raises(
    value: str,
) -> None:
    try:
        creds = parse_digest_credentials(value)
    except AuthParseError:
        return
    result = make_auth().verify(creds, "SUBSCRIBE", RURI, T0)
    assert result.outcome is AuthOutcome.FAILED


_VALUE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x7f"), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(user=_VALUE_TEXT, realm=_VALUE_TEXT, uri=_VALUE_TEXT)
def test_quoted_values_round_trip_through_escaping(user: str, realm: str, uri: str) -> None:
    value = f'Digest username={quote(user)}, realm={quote(realm)}, nonce="n", uri={quote(uri)}, response="ab"'
    creds = parse_digest_credentials(value)
    assert (creds.username, creds.realm, creds.uri) == (user, realm, uri)


@settings(max_examples=100, deadline=None)
@given(
    password=st.text(max_size=20),
    user=st.sampled_from(["alice", "bob", "mallory"]),
    elapsed=st.floats(min_value=0, max_value=1000),
    index=st.sampled_from([0, 1]),
)
def test_only_the_right_password_within_ttl_authenticates(
    password: str, user: str, elapsed: float, index: int
) -> None:
    auth = make_auth(nonce_ttl=300)
    header = answer(auth.challenge(T0)[index], user, password)
    outcome = verify_header(auth, header, T0 + elapsed)
    right = {"alice": "secret", "bob": "hunter2"}.get(user) == password
    if not right:
        assert outcome is AuthOutcome.FAILED
    elif elapsed <= 300:
        assert outcome is AuthOutcome.OK
    else:
        assert outcome is AuthOutcome.STALE
