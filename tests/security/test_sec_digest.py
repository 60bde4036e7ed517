"""Issue 9 finding 5: digest weaknesses, attacked over real sockets.

A captured Authorization replayed in a new request, a credential computed for one Request-URI
used on another, the RFC 2069 form without qop, and alice@a.example acting as alice@b.example
on a two-domain server: each is refused (RFC 7616 §3.3, §3.4; RFC 3261 §22.4).
"""

from __future__ import annotations

from typing import Any

from harness import (
    ServerProcess,
    SipClient,
    digest_authorization,
    parse_auth_params,
    parse_pidf,
    token,
)

USERS = {"alice": "alice-secret", "bob": "bob-secret"}
AUTH = {"auth": {"users": USERS}}
SUB = {"Event": "presence", "Expires": "600", "Accept": "application/pidf+xml"}


def challenge_of(r: Any, realm: str | None = None) -> dict[str, str]:
    assert r.status == 401, r
    for value in r.headers.get_all("WWW-Authenticate"):
        params = parse_auth_params(value)
        if params.get("algorithm", "MD5").upper() == "SHA-256":
            if realm is not None:
                assert params["realm"] == realm
            return params
    raise AssertionError("no SHA-256 challenge")


def register(c: SipClient, contact: str, auth: str | None = None, to: str | None = None,
             uri: str | None = None) -> Any:
    h = {"Contact": contact, "Expires": "600"}
    if auth is not None:
        h["Authorization"] = auth
    target = to or c.aor
    return c.request("REGISTER", uri or f"sip:{c.domain}", headers=h, to=f"<{target}>",
                     from_=f"<{target}>;tag={token(4)}")


def bindings(c: SipClient, password: str) -> list[str]:
    """alice's current contacts, asked with fresh credentials of her own."""
    ids = {"to": f"<{c.aor}>", "from_": f"<{c.aor}>;tag={token(4)}"}
    r = c.request("REGISTER", f"sip:{c.domain}", headers={"Contact": None}, **ids)
    auth = digest_authorization(challenge_of(r), "REGISTER", f"sip:{c.domain}", c.user, password)
    ok = c.request("REGISTER", f"sip:{c.domain}", headers={"Authorization": auth, "Contact": None},
                   **ids)
    assert ok.status == 200, ok
    return ok.headers.get_all("Contact")


def test_replayed_authorization_is_refused(server_factory: Any, sip_client: Any) -> None:
    srv: ServerProcess = server_factory(sections=AUTH)
    alice = sip_client(server=srv)
    ch = challenge_of(register(alice, alice.contact))
    captured = digest_authorization(ch, "REGISTER", "sip:example.com", "alice", USERS["alice"])
    assert register(alice, alice.contact, captured).status == 200
    # The attacker copies the captured header into a REGISTER of its own (new transaction).
    mallory = sip_client(server=srv)
    evil = "<sip:alice@127.0.0.1:9>"
    replay = register(mallory, evil, captured)
    assert replay.status == 401, replay
    # RFC 7616 §3.3: a right digest over a used nonce-count -> a new nonce, stale=true.
    assert challenge_of(replay).get("stale", "").lower() == "true"
    assert not any("127.0.0.1:9>" in c for c in bindings(alice, USERS["alice"]))


def test_credential_for_another_request_uri_is_refused(
    server_factory: Any, sip_client: Any
) -> None:
    srv: ServerProcess = server_factory(sections=AUTH)
    bob = sip_client(server=srv, user="bob")
    ch = challenge_of(bob.request("SUBSCRIBE", "sip:alice@example.com", headers=SUB))
    for_alice = digest_authorization(ch, "SUBSCRIBE", "sip:alice@example.com", "bob", "bob-secret")
    # Computed for sip:alice@example.com, sent to sip:carol@example.com.
    moved = bob.request("SUBSCRIBE", "sip:carol@example.com",
                        headers={**SUB, "Authorization": for_alice})
    assert moved.status == 401, moved
    assert challenge_of(moved).get("stale", "false").lower() != "true"
    bob.expect_no_request("NOTIFY", timeout=0.3)
    # Where it was computed for, it is good.
    ok = bob.request("SUBSCRIBE", "sip:alice@example.com",
                     headers={**SUB, "Authorization": for_alice})
    assert ok.status == 200, ok


def test_response_without_qop_is_refused(server_factory: Any, sip_client: Any) -> None:
    srv: ServerProcess = server_factory(sections=AUTH)
    alice = sip_client(server=srv)
    ch = challenge_of(register(alice, alice.contact))
    rfc2069 = {k: v for k, v in ch.items() if k != "qop"}  # the client pretends qop was absent
    auth = digest_authorization(rfc2069, "REGISTER", "sip:example.com", "alice", USERS["alice"])
    assert "qop" not in auth and "nc=" not in auth
    r = register(alice, alice.contact, auth)
    assert r.status == 401, r
    assert bindings(alice, USERS["alice"]) == []


def test_alice_of_a_cannot_act_as_alice_of_b(server_factory: Any, sip_client: Any) -> None:
    users = {"alice": "pw-a", "alice@b.example": "pw-b", "bob": "pw-bob"}
    srv: ServerProcess = server_factory(
        domains=("a.example", "b.example"), sections={"auth": {"users": users}}
    )
    a = sip_client(server=srv, user="alice", domain="a.example")
    b = sip_client(server=srv, user="alice", domain="b.example")
    # Each domain is its own realm.
    ch_a = challenge_of(register(a, a.contact, uri="sip:a.example"), realm="a.example")
    ch_b = challenge_of(register(b, b.contact, uri="sip:b.example"), realm="b.example")

    # alice@a.example's credentials (realm a.example) on a REGISTER for alice@b.example.
    cred_a = digest_authorization(ch_a, "REGISTER", "sip:b.example", "alice", "pw-a")
    assert register(b, b.contact, cred_a, uri="sip:b.example").status == 401
    # alice@a.example's password answering the b.example challenge.
    guess = digest_authorization(ch_b, "REGISTER", "sip:b.example", "alice", "pw-a")
    assert register(b, b.contact, guess, uri="sip:b.example").status == 401
    # The b.example nonce is bound to its realm: relabelled for a.example it is not ours.
    relabelled = {**ch_b, "realm": "a.example", "opaque": ch_a["opaque"]}
    cred = digest_authorization(relabelled, "REGISTER", "sip:a.example", "alice", "pw-a")
    r = register(a, a.contact, cred, uri="sip:a.example")
    assert r.status == 401 and challenge_of(r).get("stale") == "true", r

    # PUBLISH and SUBSCRIBE as alice@b.example with alice@a.example's identity: 401 or 403.
    body = (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
            b'entity="sip:alice@b.example"><tuple id="t"><status><basic>open</basic>'
            b"</status></tuple></presence>")
    pub_h = {"Event": "presence", "Content-Type": "application/pidf+xml", "Expires": "600"}
    ch = challenge_of(a.request("PUBLISH", "sip:alice@b.example", headers=pub_h, body=body))
    assert ch["realm"] == "b.example"
    pub_auth = digest_authorization({**ch, "realm": "a.example", "opaque": ch_a["opaque"]},
                                    "PUBLISH", "sip:alice@b.example", "alice", "pw-a")
    r = a.request("PUBLISH", "sip:alice@b.example", headers={**pub_h, "Authorization": pub_auth},
                  body=body)
    assert r.status in (401, 403), r

    # A watcher authenticated as alice@a.example whose From says alice@b.example: 403.
    w = sip_client(server=srv, user="alice", domain="a.example")
    spoof_from = "<sip:alice@b.example>;tag=s1"
    ch = challenge_of(w.request("SUBSCRIBE", "sip:bob@a.example", headers=SUB, from_=spoof_from))
    assert ch["realm"] == "b.example"  # the watcher's claimed domain picks the realm
    sub_auth = digest_authorization({**ch, "realm": "a.example", "opaque": ch_a["opaque"]},
                                    "SUBSCRIBE", "sip:bob@a.example", "alice", "pw-a")
    r = w.request("SUBSCRIBE", "sip:bob@a.example", headers={**SUB, "Authorization": sub_auth},
                  from_=spoof_from)
    assert r.status in (401, 403), r
    w.expect_no_request("NOTIFY", timeout=0.3)

    # Both alices exist and each works with her own password in her own realm.
    ok_a = digest_authorization(ch_a, "REGISTER", "sip:a.example", "alice", "pw-a", nc=2)
    assert register(a, a.contact, ok_a, uri="sip:a.example").status == 200
    ok_b = digest_authorization(ch_b, "REGISTER", "sip:b.example", "alice", "pw-b")
    assert register(b, b.contact, ok_b, uri="sip:b.example").status == 200
    # The NOTIFY for alice@a's own subscription names the a.example presentity only.
    sub_ch = challenge_of(a.request("SUBSCRIBE", "sip:bob@a.example", headers=SUB))
    sub_ok = digest_authorization(sub_ch, "SUBSCRIBE", "sip:bob@a.example", "alice", "pw-a")
    r = a.request("SUBSCRIBE", "sip:bob@a.example", headers={**SUB, "Authorization": sub_ok})
    assert r.status == 200, r
    assert parse_pidf(a.expect_request("NOTIFY").body).basics == ["closed"]
