"""Digest rules of issue 9 (RFC 7616 §3.3, §3.4, §5.4; RFC 3261 §19.1.4, §22.4): nonce-counts,
the digest-uri, one realm per served domain, identities as user@domain."""

from __future__ import annotations

import pytest
from test_auth import KEY, T0, answer, challenge_params  # type: ignore[import-not-found]

from presenced.sip.auth import (
    AuthOutcome,
    DigestAuthenticator,
    NcCheck,
    NonceCounts,
    StaticCredentials,
    compute_ha1,
    load_users_file,
    parse_digest_credentials,
    same_request_target,
)
from presenced.sip.uri import parse_uri

A, B = "a.example", "b.example"
ALICE_URI = "sip:alice@a.example"


def two_domains(**kwargs: object) -> DigestAuthenticator:
    store = StaticCredentials(A)
    store.add_password("alice", "alice-a")  # alice@a.example
    store.add_password("bob@b.example", "bob-b")
    store.add_password("carol", "same")
    store.add_password("carol@b.example", "same")
    return DigestAuthenticator((A, B), KEY, store, **kwargs)  # type: ignore[arg-type]


def verify(auth: DigestAuthenticator, header: str, *, uri: str = ALICE_URI, realm: str = A,
           now: float = T0 + 1, method: str = "SUBSCRIBE") -> AuthOutcome:
    creds = parse_digest_credentials(header)
    return auth.verify(creds, method, parse_uri(uri), now, realm=realm).outcome


def alice(auth: DigestAuthenticator, **kw: object) -> str:
    kw.setdefault("uri", ALICE_URI)
    return answer(auth.challenge(T0, realm=A)[0], "alice", "alice-a", **kw)  # type: ignore[arg-type]


# -- nonce-count (RFC 7616 §3.4: nc counts the requests sent with one nonce) -----------------------


def test_replayed_authorization_is_refused_as_stale() -> None:
    auth = two_domains()
    header = alice(auth)
    assert verify(auth, header) is AuthOutcome.OK
    result = auth.verify(parse_digest_credentials(header), "SUBSCRIBE", parse_uri(ALICE_URI),
                         T0 + 2, realm=A)
    assert result.outcome is AuthOutcome.STALE
    assert result.reason == "nonce-count replayed"


def test_lower_nonce_count_is_refused_and_higher_ones_pass() -> None:
    auth = two_domains()
    challenge = auth.challenge(T0, realm=A)[0]

    def with_nc(nc: int) -> AuthOutcome:
        return verify(auth, answer(challenge, "alice", "alice-a", uri=ALICE_URI, nc=f"{nc:08x}"))

    assert with_nc(5) is AuthOutcome.OK
    assert with_nc(3) is AuthOutcome.STALE
    assert with_nc(5) is AuthOutcome.STALE
    assert with_nc(6) is AuthOutcome.OK
    assert with_nc(0x10) is AuthOutcome.OK  # nc is hex


def test_nonce_counts_are_per_nonce() -> None:
    auth = two_domains()
    first = alice(auth)
    second = answer(auth.challenge(T0 + 0.5, realm=A)[0], "alice", "alice-a", uri=ALICE_URI)
    assert verify(auth, first) is AuthOutcome.OK
    assert verify(auth, second) is AuthOutcome.OK  # nc=1 again, but for another nonce


def test_a_failed_attempt_does_not_use_up_a_nonce_count() -> None:
    auth = two_domains()
    challenge = auth.challenge(T0, realm=A)[0]
    assert verify(auth, answer(challenge, "alice", "guess", uri=ALICE_URI)) is AuthOutcome.FAILED
    assert verify(auth, answer(challenge, "alice", "alice-a", uri=ALICE_URI)) is AuthOutcome.OK


def test_nonce_table_keeps_highest_nc_and_evicts_least_recent_into_the_floor() -> None:
    t = NonceCounts(max_entries=2)
    assert t.use("n1", 100, 1, expires=1000, now=10) is NcCheck.ACCEPTED
    assert t.use("n2", 200, 1, expires=1000, now=10) is NcCheck.ACCEPTED
    assert t.use("n1", 100, 1, expires=1000, now=11) is NcCheck.REPLAYED
    assert t.use("n3", 150, 1, expires=1000, now=12) is NcCheck.ACCEPTED  # evicts n2 (LRU)
    assert len(t) == 2
    assert t.floor == 200
    # n2 must not start over at nc=1, nor may an unused nonce issued before it.
    assert t.use("n2", 200, 9, expires=1000, now=13) is NcCheck.FORGOTTEN
    assert t.use("n4", 199, 1, expires=1000, now=13) is NcCheck.FORGOTTEN
    assert t.use("n5", 201, 1, expires=1000, now=13) is NcCheck.ACCEPTED


def test_nonce_table_drops_expired_entries_without_raising_the_floor() -> None:
    t = NonceCounts(max_entries=10)
    for i in range(5):
        t.use(f"old{i}", i, 1, expires=50, now=10)
    t.use("new", 1000, 1, expires=500, now=60)
    assert len(t) == 1
    assert t.floor < 0


def test_evicted_nonce_is_stale_not_reusable() -> None:
    auth = two_domains(max_nonces=1)
    challenge = auth.challenge(T0, realm=A)[0]
    assert verify(auth, answer(challenge, "alice", "alice-a", uri=ALICE_URI)) is AuthOutcome.OK
    later = answer(auth.challenge(T0 + 1, realm=A)[0], "alice", "alice-a", uri=ALICE_URI)
    assert verify(auth, later, now=T0 + 2) is AuthOutcome.OK  # evicts the first nonce
    again = answer(challenge, "alice", "alice-a", uri=ALICE_URI, nc="00000002")
    result = auth.verify(parse_digest_credentials(again), "SUBSCRIBE", parse_uri(ALICE_URI),
                         T0 + 3, realm=A)
    assert (result.outcome, result.reason) == (AuthOutcome.STALE, "nonce no longer tracked")


# -- digest-uri (RFC 7616 §3.4.6) ----------------------------------------------------------------


def test_credential_for_another_request_uri_is_refused() -> None:
    auth = two_domains()
    header = alice(auth, uri="sip:bob@a.example")
    assert verify(auth, header, uri=ALICE_URI) is AuthOutcome.FAILED
    # The same response stays valid where it was computed for.
    assert verify(auth, header, uri="sip:bob@a.example") is AuthOutcome.OK


@pytest.mark.parametrize(
    ("digest_uri", "ruri", "same"),
    [
        ("sip:alice@a.example", "sip:alice@a.example", True),
        ("sip:alice@A.Example", "sip:alice@a.example", True),  # host: case-insensitive
        ("sip:al%69ce@a.example", "sip:alice@a.example", True),  # escapes resolved
        ("sip:alice@a.example;transport=tcp", "sip:alice@a.example", True),  # params ignored
        ("sip:alice@a.example", "sip:alice@a.example;lr", True),
        ("sip:Alice@a.example", "sip:alice@a.example", False),  # user: case-sensitive
        ("sip:alice@a.example:5060", "sip:alice@a.example", False),  # §19.1.4: default != absent
        ("sip:alice@a.example:5062", "sip:alice@a.example:5060", False),
        ("sips:alice@a.example", "sip:alice@a.example", False),
        ("sip:alice@b.example", "sip:alice@a.example", False),
        ("sip:a.example", "sip:alice@a.example", False),
        ("tel:+15551234", "tel:+15551234", True),
        ("tel:+15551234", "tel:+15551235", False),
        ("not a uri", "sip:alice@a.example", False),
        ("/dir/index.html", "sip:alice@a.example", False),  # an HTTP request-target
    ],
)
def test_digest_uri_compares_as_a_sip_uri_rfc3261_section_19_1_4(
    digest_uri: str, ruri: str, same: bool
) -> None:
    assert same_request_target(digest_uri, parse_uri(ruri)) is same


# -- realms and identities -----------------------------------------------------------------------


def test_each_served_domain_is_its_own_realm() -> None:
    auth = two_domains()
    assert auth.realm_for(A) == A and auth.realm_for(B) == B
    assert auth.realm_for("elsewhere.org") == A  # the default realm
    for realm in (A, B):
        for value in auth.challenge(T0, realm=realm):
            assert challenge_params(value)["realm"] == realm


def test_alice_of_a_never_authenticates_in_b() -> None:
    auth = two_domains()
    # Credentials for realm a.example presented where b.example is required.
    assert verify(auth, alice(auth), realm=B) is AuthOutcome.FAILED
    # Answering a b.example challenge with alice's a.example password: no alice@b.example.
    header = answer(auth.challenge(T0, realm=B)[0], "alice", "alice-a", uri=ALICE_URI)
    assert verify(auth, header, realm=B) is AuthOutcome.FAILED


def test_identity_is_the_whole_address() -> None:
    auth = two_domains()
    ok = auth.verify(parse_digest_credentials(alice(auth)), "SUBSCRIBE", parse_uri(ALICE_URI),
                     T0 + 1, realm=A)
    assert ok.outcome is AuthOutcome.OK
    assert ok.identity == "alice@a.example"
    header = answer(auth.challenge(T0, realm=B)[0], "bob", "bob-b", uri=ALICE_URI)
    bob = auth.verify(parse_digest_credentials(header), "SUBSCRIBE", parse_uri(ALICE_URI),
                      T0 + 1, realm=B)
    assert bob.identity == "bob@b.example"


def test_nonce_is_bound_to_its_realm() -> None:
    # carol has the same password in both domains; a nonce issued for a.example is not
    # accepted for b.example even with a response that is right for carol@b.example.
    auth = two_domains()
    nonce = challenge_params(auth.challenge(T0, realm=A)[0])["nonce"]
    b_challenge = auth.challenge(T0, realm=B)[0]
    header = answer(b_challenge, "carol", "same", uri=ALICE_URI, nonce=nonce)
    result = auth.verify(parse_digest_credentials(header), "SUBSCRIBE", parse_uri(ALICE_URI),
                         T0 + 1, realm=B)
    assert result.outcome is AuthOutcome.STALE
    assert result.reason == "nonce not issued by us for this realm"


def test_users_file_names_users_of_other_domains() -> None:
    bob_sha = compute_ha1("SHA-256", "bob", B, "bob-b")
    text = f"alice:plain:alice-a\nalice@b.example:plain:other\nbob@B.Example::{bob_sha}\n"
    store = load_users_file(text, A, (A, B))
    assert len(store) == 3
    assert "alice" in store and "alice@a.example" in store and "alice@b.example" in store
    assert "bob" not in store and "bob@b.example" in store
    assert store.domains() == {A, B}
    assert store.ha1("alice", A, "MD5") != store.ha1("alice", B, "MD5")
    auth = DigestAuthenticator((A, B), KEY, store)
    header = answer(auth.challenge(T0, realm=B)[0], "bob", "bob-b", uri="sip:bob@b.example")
    assert verify(auth, header, uri="sip:bob@b.example", realm=B) is AuthOutcome.OK


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice@c.example:plain:x", "line 1: 'c.example' is not a served domain"),
        ("alice:plain:x\nalice@a.example:plain:y", "line 2: duplicate user"),
        ("@b.example:plain:x", "line 1: empty user or domain"),
    ],
)
def test_users_file_refuses_unserved_domains_and_duplicates(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_users_file(text, A, (A, B))
