"""The registrar (RFC 3261 §10.3) of the real server process: bindings, expiry, persistence, auth.

Every test starts its own presenced (fixtures in conftest.py), speaks to it over real sockets,
and reads the answers with the project's parser. Expiry tests use `[registrar] min_expires = 1`
so a binding can be made to run out in two seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from harness import (
    LOOPBACK_UNLIMITED,
    ServerProcess,
    SipClient,
    bindings,
    digest_authorization,
    parse_auth_params,
    parse_pidf,
    register,
    run_sipp,
    token,
)

from presenced.sip.message import Response

Client = Callable[..., SipClient]
Factory = Callable[..., ServerProcess]

FAST_EXPIRY = {"registrar": {"min_expires": 1, "default_expires": 3600}}
AUTH = {"auth": {"realm": "example.com", "users": {"alice": "secret", "bob": "hunter2"}}}


def query(c: SipClient, user: str | None = None) -> dict[str, int]:
    r = register(c, user=user, contacts=[])
    assert r.status == 200, r
    return bindings(r)


# --- sipp --------------------------------------------------------------------------------------


def test_sipp_register_two_contacts_query_and_star_removal(
    server_factory: Callable[..., ServerProcess], sipp: str, tmp_path: Path
) -> None:
    server = server_factory(sections=LOOPBACK_UNLIMITED)
    result = run_sipp(sipp, "register_star.xml", server.addr, tmp_path / "sipp", calls=50, rate=50)
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (50, 0), result.describe()


# --- the 200 and its bindings (§10.3 step 8) ------------------------------------------------------


def test_200_lists_every_binding_with_remaining_expires_and_a_date(sip_client: Client) -> None:
    c = sip_client()
    a, b = f"sip:alice@127.0.0.1:{c.local_port}", "sip:alice@192.0.2.7:5062"
    r = register(c, contacts=[f"<{a}>;expires=100", f"<{b}>;q=0.5"], expires=200)
    assert r.status == 200
    assert bindings(r) == {a: 100, b: 200}  # the parameter wins over the header (§10.3 step 7)
    assert any(ct.params.get("q") == "0.5" for ct in r.contacts)  # q-values are kept
    date = r.headers.get("Date")
    assert date is not None
    assert abs(parsedate_to_datetime(date).timestamp() - time.time()) < 5  # §20.17, RFC 1123 form
    time.sleep(1.2)
    listed = query(c)
    assert set(listed) == {a, b}
    assert 97 <= listed[a] <= 99 and 197 <= listed[b] <= 199  # *remaining* lifetime


def test_register_responses_carry_a_to_tag(sip_client: Client) -> None:
    # RFC 3261 §8.2.6.2: a UAS (a registrar is one, §10.3) MUST add a To-tag to its responses.
    c = sip_client()
    assert register(c, expires=600).to.tag
    assert register(c, expires=5).to.tag  # 423


def test_binding_expires_on_time(server_factory: Factory, sip_client: Client) -> None:
    srv = server_factory(sections=FAST_EXPIRY)
    c = sip_client(server=srv)
    r = register(c, expires=2)
    assert r.status == 200 and bindings(r) == {c.contact_uri: 2}
    time.sleep(0.5)
    assert c.contact_uri in query(c)
    time.sleep(2.8)
    assert query(c) == {}  # gone from the location service, not just hidden


def test_contact_star_with_expires_0_removes_every_binding(sip_client: Client) -> None:
    c = sip_client()
    call_id = f"{token()}@127.0.0.1"
    contacts = [f"<sip:alice@192.0.2.{i}:5060>" for i in range(1, 4)]
    assert register(c, contacts=contacts, expires=600, call_id=call_id, cseq=1).status == 200
    other = sip_client()  # another device of the same AOR, another Call-ID
    assert register(other, expires=600).status == 200
    assert len(query(c)) == 4
    r = register(c, contacts=["*"], expires=0, call_id=call_id, cseq=2)  # §10.2.2
    assert r.status == 200
    assert bindings(r) == {}
    assert query(other) == {}


@pytest.mark.parametrize("expires", ["10", None], ids=["expires-10", "no-expires"])
def test_contact_star_without_expires_0_is_400(sip_client: Client, expires: str | None) -> None:
    c = sip_client()
    assert register(c, expires=600).status == 200
    r = register(c, contacts=["*"], headers={"Expires": expires})
    assert r.status == 400  # §10.3 step 6: "*" is only allowed with Expires: 0
    assert c.contact_uri in query(c)  # nothing was removed


@pytest.mark.parametrize("how", ["header", "param"])
def test_expires_below_min_gets_423_with_min_expires(sip_client: Client, how: str) -> None:
    c = sip_client()
    if how == "header":
        r = register(c, expires=30)
    else:
        r = register(c, contacts=[f"{c.contact};expires=30"])
    assert r.status == 423  # §10.3 step 7 ([registrar] min_expires defaults to 60)
    assert r.headers.get("Min-Expires") == "60"  # §20.23
    assert query(c) == {}


def test_expires_above_max_is_capped(server_factory: Factory, sip_client: Client) -> None:
    srv = server_factory(sections={"registrar": {"max_expires": 120, "default_expires": 60}})
    c = sip_client(server=srv)
    r = register(c, expires=100_000)
    assert r.status == 200
    assert bindings(r) == {c.contact_uri: 120}  # §10.3 step 7: the registrar may shorten it
    r = register(c, contacts=[])
    assert 118 <= bindings(r)[c.contact_uri] <= 120
    r = register(c, headers={"Expires": None})  # no expiry at all: the default
    assert bindings(r) == {c.contact_uri: 60}


def test_older_cseq_for_the_same_call_id_gets_500_and_changes_nothing(sip_client: Client) -> None:
    c = sip_client()
    call_id = f"{token()}@127.0.0.1"
    assert register(c, expires=600, call_id=call_id, cseq=5).status == 200
    # §10.3 step 7: a CSeq not above the stored one for this Call-ID aborts the update.
    assert register(c, expires=0, call_id=call_id, cseq=4).status == 500
    assert register(c, expires=0, call_id=call_id, cseq=5).status == 500  # not a retransmission
    assert c.contact_uri in query(c)
    assert register(c, expires=0, call_id=call_id, cseq=6).status == 200
    assert query(c) == {}


@pytest.mark.parametrize(
    "contact",
    [
        pytest.param("<sip:alice@127.0.0.1:5060", id="unclosed-angle"),
        pytest.param("sip:alice@[::1", id="broken-ipv6"),
        pytest.param("<sip:alice@127.0.0.1>;expires=soon", id="expires-not-a-number"),
        pytest.param("<sip:alice@127.0.0.1>;q=7", id="q-out-of-range"),
        pytest.param("<>", id="empty-uri"),
    ],
)
def test_malformed_contact_gets_400_and_the_server_keeps_answering(
    server: ServerProcess, sip_client: Client, contact: str
) -> None:
    c = sip_client()
    r = register(c, contacts=[contact], expires=600)
    assert r.status == 400  # RFC 3261 §21.4.1
    assert query(c) == {}
    assert register(c, expires=600).status == 200
    assert c.request("OPTIONS", "sip:example.com").status == 200
    server.assert_running()


# --- persistence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["restart", "kill9"])
def test_bindings_survive_restart_and_kill9_right_after_the_200(
    sqlite_server: ServerProcess, sip_client: Client, how: str
) -> None:
    c = sip_client(server=sqlite_server)
    d = sip_client(server=sqlite_server, user="bob")
    assert register(c, contacts=["<sip:alice@192.0.2.1>", "<sip:alice@192.0.2.2>"], expires=600)
    r = register(d, expires=900)
    assert r.status == 200
    if how == "kill9":
        sqlite_server.kill9()  # no shutdown code runs: the 200 meant it was written
        sqlite_server.start_again()
    else:
        sqlite_server.restart()
    listed = query(c)
    assert set(listed) == {"sip:alice@192.0.2.1", "sip:alice@192.0.2.2"}
    assert all(590 <= v <= 600 for v in listed.values())
    assert 890 <= query(d, "bob")[d.contact_uri] <= 900


def test_bindings_expired_while_down_are_removed_and_watchers_hear_closed(
    server_factory: Factory, sip_client: Client
) -> None:
    srv = server_factory(storage="sqlite:///presenced.db", sections=FAST_EXPIRY)
    watcher = sip_client(server=srv, user="bob")
    alice = sip_client(server=srv)
    r = watcher.request(
        "SUBSCRIBE", "sip:alice@example.com", headers={"Event": "presence", "Expires": "600"}
    )
    assert r.status == 200
    assert parse_pidf(watcher.expect_request("NOTIFY").body).basics == ["closed"]
    assert register(alice, expires=2).status == 200
    assert parse_pidf(watcher.expect_request("NOTIFY").body).basics == ["open"]
    srv.stop()
    time.sleep(2.5)  # the binding runs out while nobody is there to expire it
    srv.start_again()
    # RFC 3856 §6.6 / issue 3: the AOR is closed at startup and its watchers are told so.
    notify = watcher.expect_request("NOTIFY", timeout=5)
    assert notify.call_id == r.call_id and notify.from_.tag == r.to.tag
    assert parse_pidf(notify.body).basics == ["closed"]
    assert query(alice) == {}


# --- digest authentication (RFC 3261 §22, RFC 7616, RFC 8760) --------------------------------------


def _challenges(r: Response) -> dict[str, dict[str, str]]:
    assert r.status == 401, r
    out = {}
    for value in r.headers.get_all("WWW-Authenticate"):
        params = parse_auth_params(value)
        assert params["scheme"].lower() == "digest"
        out[params.get("algorithm", "MD5").upper()] = params
    return out


def _register_with(
    c: SipClient, challenge: dict[str, str], user: str, password: str, aor_user: str = "alice"
) -> Response:
    auth = digest_authorization(challenge, "REGISTER", "sip:example.com", user, password)
    return register(c, user=aor_user, expires=600, headers={"Authorization": auth})


def test_register_without_credentials_is_challenged_for_sha256_and_md5(
    server_factory: Factory, sip_client: Client
) -> None:
    srv = server_factory(sections=AUTH)
    c = sip_client(server=srv)
    ch = _challenges(register(c, expires=600))
    assert list(ch) == ["SHA-256", "MD5"]  # RFC 8760 §2.4: the preferred algorithm first
    for params in ch.values():
        assert params["realm"] == "example.com"
        assert params["nonce"]
        assert "auth" in params.get("qop", "").split(",")
        assert params.get("stale", "false").lower() != "true"
    # No user enumeration: an unknown user is challenged exactly like a known one.
    stranger = _challenges(register(sip_client(server=srv, user="mallory"), expires=600))
    assert {a: {k: v for k, v in p.items() if k != "nonce"} for a, p in stranger.items()} == {
        a: {k: v for k, v in p.items() if k != "nonce"} for a, p in ch.items()
    }


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_register_with_correct_credentials_gets_200(
    server_factory: Factory, sip_client: Client, algorithm: str
) -> None:
    srv = server_factory(sections=AUTH)
    c = sip_client(server=srv)
    ch = _challenges(register(c, expires=600))[algorithm]
    r = _register_with(c, ch, "alice", "secret")
    assert r.status == 200, r
    assert c.contact_uri in bindings(r)


def test_register_with_wrong_password_is_challenged_again(
    server_factory: Factory, sip_client: Client
) -> None:
    srv = server_factory(sections=AUTH)
    c = sip_client(server=srv)
    ch = _challenges(register(c, expires=600))["SHA-256"]
    again = _challenges(_register_with(c, ch, "alice", "not-the-secret"))
    assert again["SHA-256"].get("stale", "false").lower() != "true"
    # Still nothing bound; the right password still works.
    assert _register_with(c, again["MD5"], "alice", "secret").status == 200


def test_register_for_someone_elses_aor_gets_403(
    server_factory: Factory, sip_client: Client
) -> None:
    srv = server_factory(sections=AUTH)
    c = sip_client(server=srv)
    ch = _challenges(register(c, expires=600))["SHA-256"]
    r = _register_with(c, ch, "bob", "hunter2", aor_user="alice")  # bob's valid credentials
    assert r.status == 403  # RFC 3261 §10.3 step 3: not authorized for this AOR


def test_stale_nonce_gets_401_with_stale_true(server_factory: Factory, sip_client: Client) -> None:
    sections = {"auth": {**AUTH["auth"], "nonce_ttl": 1}}
    srv = server_factory(sections=sections)
    c = sip_client(server=srv)
    ch = _challenges(register(c, expires=600))["SHA-256"]
    time.sleep(2.2)
    fresh = _challenges(_register_with(c, ch, "alice", "secret"))
    # RFC 7616 §3.3: right password, old nonce -> stale=true, so the UA retries silently.
    assert fresh["SHA-256"].get("stale", "").lower() == "true"
    assert fresh["SHA-256"]["nonce"] != ch["nonce"]
    assert _register_with(c, fresh["SHA-256"], "alice", "secret").status == 200
