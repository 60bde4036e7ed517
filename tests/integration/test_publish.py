"""PUBLISH (RFC 3903) against the real server process, and what watchers see of it.

Composition policy under test is docs/presence.md: publications are authoritative (a user
who publishes closed while registered shows closed); removing the publication brings the
registrar's state back. Bodies are read in the test with lxml, not the server's codecs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    LOOPBACK_UNLIMITED,
    ServerProcess,
    SipClient,
    digest_authorization,
    parse_auth_params,
    parse_pidf,
    parse_xpidf,
    register,
    run_sipp,
)

from presenced.sip.message import Request, Response

Client = Callable[..., SipClient]
Factory = Callable[..., ServerProcess]

ALICE = "sip:alice@example.com"
PIDF = "application/pidf+xml"

MEETING = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
          xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
          entity="pres:alice@example.com">
  <tuple id="pc1">
    <status><basic>open</basic></status>
    <contact priority="0.8">sip:alice@192.0.2.5</contact>
  </tuple>
  <note xml:lang="en">In a meeting until noon</note>
  <dm:person id="p1">
    <rpid:activities><rpid:meeting/></rpid:activities>
    <dm:note xml:lang="fr">En réunion</dm:note>
  </dm:person>
</presence>
""".encode()


def pidf(basic: str, note: str = "", tuple_id: str = "pc1") -> bytes:
    note_el = f"<note>{note}</note>" if note else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:alice@example.com">\n'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status>{note_el}</tuple>\n'
        "</presence>\n"
    ).encode()


def build_publish(
    c: SipClient,
    body: bytes | None = None,
    *,
    etag: str | None = None,
    expires: int | None = 600,
    uri: str = ALICE,
    content_type: str = PIDF,
    headers: dict[str, str | None] | None = None,
) -> Request:
    h: dict[str, str | None] = {"Event": "presence"}
    if expires is not None:
        h["Expires"] = str(expires)
    if etag is not None:
        h["SIP-If-Match"] = etag
    if body:
        h["Content-Type"] = content_type
    h.update(headers or {})
    return c.build_request("PUBLISH", uri, headers=h, body=body or b"")


def publish(c: SipClient, body: bytes | None = None, **kw: object) -> Response:
    req = build_publish(c, body, **kw)  # type: ignore[arg-type]
    c.send(req)
    return c.wait_response(req)


def etag_of(r: Response) -> str:
    assert r.status == 200, r
    etag = r.headers.get("SIP-ETag")
    assert etag, "200 to PUBLISH without SIP-ETag (RFC 3903 §6 step 6)"
    return str(etag)


def watch(w: SipClient, accept: str | None = None) -> Request:
    h = {"Event": "presence", "Expires": "600"}
    if accept:
        h["Accept"] = accept
    r = w.request("SUBSCRIBE", ALICE, headers=h)
    assert r.status == 200, r
    return w.expect_request("NOTIFY")


# --- sipp --------------------------------------------------------------------------------------


def test_sipp_publish_refresh_modify_412_remove(
    server_factory: Factory, sipp: str, tmp_path: Path
) -> None:
    server = server_factory(sections=LOOPBACK_UNLIMITED)
    result = run_sipp(sipp, "publish.xml", server.addr, tmp_path / "sipp", calls=50, rate=50)
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (50, 0), result.describe()


# --- what watchers see ---------------------------------------------------------------------------


def test_published_note_and_activity_reach_pidf_and_xpidf_watchers(sip_client: Client) -> None:
    pw = sip_client(user="bob")
    xw = sip_client(user="carol")
    watch(pw)
    watch(xw, "application/xpidf+xml")
    r = publish(sip_client(), MEETING)
    etag_of(r)
    assert r.headers.get("Expires") == "600"
    doc = parse_pidf(pw.expect_request("NOTIFY").body)
    assert doc.basics == ["open"] and doc.contacts == ["sip:alice@192.0.2.5"]
    assert ("In a meeting until noon", "en") in doc.notes  # RFC 3863 §4.1.6, xml:lang kept
    assert ("En réunion", "fr") in doc.notes
    assert "meeting" in doc.activities  # RFC 4480 §3.2
    n = xw.expect_request("NOTIFY")
    assert n.content_type == "application/xpidf+xml"
    assert parse_xpidf(n.body) == [("open", "busy", "sip:alice@192.0.2.5")]  # meeting -> busy


def test_refresh_gets_a_new_etag_and_sends_no_notify(sip_client: Client) -> None:
    c = sip_client()
    e1 = etag_of(publish(c, pidf("open", "here")))
    w = sip_client(user="bob")
    assert parse_pidf(watch(w).body).basics == ["open"]
    r = publish(c, etag=e1, expires=300)  # RFC 3903 §4.3: SIP-If-Match, no body
    e2 = etag_of(r)
    assert e2 != e1  # §6 step 6: a new entity-tag for every success
    assert r.headers.get("Expires") == "300"
    w.expect_no_request("NOTIFY", timeout=0.7)  # nothing a watcher could see changed
    assert publish(c, etag=e1).status == 412  # the old tag was replaced
    assert publish(c, etag=e2).status == 200


def test_modify_notifies_watchers(sip_client: Client) -> None:
    c = sip_client()
    e1 = etag_of(publish(c, pidf("open", "here")))
    w = sip_client(user="bob")
    watch(w)
    e2 = etag_of(publish(c, pidf("closed", "gone fishing"), etag=e1))  # §4.4
    assert e2 != e1
    doc = parse_pidf(w.expect_request("NOTIFY").body)
    assert doc.basics == ["closed"]
    assert ("gone fishing", None) in doc.notes


def test_published_closed_wins_over_registration_and_a_withdrawn_publication_stays_offline(
    sip_client: Client,
) -> None:
    """The default registrar policy, "until-published" (docs/presence.md): liblinphone goes
    offline by withdrawing its PUBLISH and stays registered; its watchers must see offline."""
    alice = sip_client()
    assert register(alice, expires=600).status == 200
    w = sip_client(user="bob")
    doc = parse_pidf(watch(w).body)
    assert doc.basics == ["open"] and doc.contacts == ["sip:alice@example.com"]  # device privacy: the AOR
    # docs/presence.md: publications are authoritative, closed while registered shows closed.
    etag = etag_of(publish(alice, pidf("closed", "do not disturb")))
    assert parse_pidf(w.expect_request("NOTIFY").body).basics == ["closed"]
    r = publish(alice, etag=etag, expires=0)  # §4.5: remove
    assert r.status == 200 and r.headers.get("Expires") == "0"
    doc = parse_pidf(w.expect_request("NOTIFY").body)
    assert doc.basics == ["closed"] and doc.contacts == []  # not the registration's device
    assert publish(alice, etag=etag).status == 412  # nothing left to refresh
    # A new registration starts afresh: the registration counts again.
    assert register(alice, expires=0).status == 200
    assert register(alice, expires=600).status == 200
    assert parse_pidf(w.expect_request(
        "NOTIFY", where=lambda r: b"<basic>open</basic>" in r.body).body).basics == ["open"]


def test_fallback_policy_brings_the_registration_back_when_the_publication_goes(
    server_factory: Factory, sip_client: Client,
) -> None:
    srv = server_factory(sections={"pa": {"registrar_presence": "fallback"}})
    alice = sip_client(server=srv)
    assert register(alice, expires=600).status == 200
    w = sip_client(server=srv, user="bob")
    assert parse_pidf(watch(w).body).basics == ["open"]
    etag = etag_of(publish(alice, pidf("closed", "do not disturb")))
    assert parse_pidf(w.expect_request("NOTIFY").body).basics == ["closed"]
    assert publish(alice, etag=etag, expires=0).status == 200
    doc = parse_pidf(w.expect_request("NOTIFY").body)
    assert doc.basics == ["open"] and doc.contacts == ["sip:alice@example.com"]  # the registrar's again (the AOR)


def test_publication_expires_on_time(server_factory: Factory, sip_client: Client) -> None:
    srv = server_factory(sections={"pa": {"min_publish_expires": 1}})
    w = sip_client(server=srv, user="bob")
    watch(w)
    etag_of(publish(sip_client(server=srv), pidf("open"), expires=2))
    assert parse_pidf(w.expect_request("NOTIFY").body).basics == ["open"]
    started = time.monotonic()
    assert parse_pidf(w.expect_request("NOTIFY", timeout=5).body).basics == ["closed"]
    assert 1.0 < time.monotonic() - started < 4.0


# --- errors (RFC 3903 §6) -------------------------------------------------------------------------


def test_unknown_sip_if_match_gets_412(sip_client: Client) -> None:
    c = sip_client()
    assert publish(c, etag="no-such-etag").status == 412  # §6 step 3
    assert publish(c, pidf("open"), etag="no-such-etag").status == 412


def test_racing_publishes_with_one_etag_give_one_200_and_one_412(sip_client: Client) -> None:
    c = sip_client()
    e1 = etag_of(publish(c, pidf("open")))
    first = build_publish(c, pidf("closed", "one"), etag=e1)
    second = build_publish(c, pidf("closed", "two"), etag=e1)
    c.send(first)
    c.send(second)
    statuses = sorted([c.wait_response(first).status, c.wait_response(second).status])
    assert statuses == [200, 412]  # each entity-tag is good for exactly one request
    # A fresh initial PUBLISH after the 412 makes exactly one more publication.
    w = sip_client(user="bob")
    etag_of(publish(c, pidf("open", "again", tuple_id="pc2")))
    doc = parse_pidf(watch(w).body)
    assert sorted(t[0] for t in doc.tuples) == ["pc1", "pc2"]


def test_unsupported_content_type_gets_415_with_accept(sip_client: Client) -> None:
    r = publish(sip_client(), b"I am around", content_type="text/plain")
    assert r.status == 415  # §6 step 5, RFC 3261 §21.4.13
    accept = [v.strip() for v in r.headers.get_list("Accept")]
    assert "application/pidf+xml" in accept


def test_expires_below_min_gets_423_with_min_expires(sip_client: Client) -> None:
    r = publish(sip_client(), pidf("open"), expires=3)
    assert r.status == 423  # §6 step 4; [pa] min_publish_expires defaults to 5
    assert r.headers.get("Min-Expires") == "5"


@pytest.mark.parametrize("event", ["reg", "conference", None])
def test_event_other_than_presence_gets_489(sip_client: Client, event: str | None) -> None:
    r = publish(sip_client(), pidf("open"), headers={"Event": event})
    assert r.status == 489  # §6 step 2
    assert "presence" in [v.strip() for v in r.headers.get_list("Allow-Events")]


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE presence [
  <!ENTITY a "lollollollollollollollollollol">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
  <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
  <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
  <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
  <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
  <!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">
  <!ENTITY i "&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;">
]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:alice@example.com">
<tuple id="t"><status><basic>open</basic></status><note>&i;</note></tuple>
</presence>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE presence [ <!ENTITY secret SYSTEM "file:///etc/passwd"> ]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:alice@example.com">
<tuple id="t"><status><basic>open</basic></status><note>&secret;</note></tuple>
</presence>
"""

HUGE = pidf("open", "x" * 100_000)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, id="external-entity"),
        pytest.param(b"<presence><tuple", id="truncated"),
        pytest.param(b"<html><body>hi</body></html>", id="not-pidf"),
        pytest.param(HUGE, id="100kB"),
    ],
)
def test_hostile_body_gets_400_and_the_server_stays_fast(
    server_factory: Factory, sip_client: Client, body: bytes
) -> None:
    # Room for a 100 kB message, so the body cap (not the message-size limit) must catch it.
    srv = server_factory(sections={"server": {"max_message_size": 262_144}})
    c = sip_client("tcp", server=srv)
    w = sip_client(server=srv, user="bob")
    watch(w)
    r = publish(c, body)
    assert r.status == 400, r  # the document cap (64 KiB), not the message limit, answers
    assert b"root:" not in r.encode()  # nothing of the file leaks into the answer
    started = time.monotonic()
    assert c.request("OPTIONS", "sip:example.com").status == 200
    assert time.monotonic() - started < 0.1
    w.expect_no_request("NOTIFY", timeout=0.3)  # nothing was published
    srv.assert_running()


# --- persistence and authorization ----------------------------------------------------------------


def test_publications_survive_restart(sqlite_server: ServerProcess, sip_client: Client) -> None:
    c = sip_client(server=sqlite_server)
    etag = etag_of(publish(c, MEETING))
    sqlite_server.restart()
    w = sip_client(server=sqlite_server, user="bob")
    doc = parse_pidf(watch(w).body)
    assert doc.basics == ["open"] and "meeting" in doc.activities
    assert ("In a meeting until noon", "en") in doc.notes
    assert publish(c, etag=etag).status == 200  # its entity-tag still names it


def _authorized_publish(c: SipClient, user: str, password: str, body: bytes) -> Response:
    r = publish(c, body)
    assert r.status == 401, r
    challenge = parse_auth_params(r.headers.get("WWW-Authenticate") or "")
    auth = digest_authorization(challenge, "PUBLISH", ALICE, user, password)
    return publish(c, body, headers={"Authorization": auth})


def test_with_auth_only_the_presentity_may_publish(
    server_factory: Factory, sip_client: Client
) -> None:
    srv = server_factory(
        sections={"auth": {"realm": "example.com", "users": {"alice": "secret", "bob": "pw"}}}
    )
    bob = sip_client(server=srv, user="bob")
    assert _authorized_publish(bob, "bob", "pw", pidf("open")).status == 403
    alice = sip_client(server=srv)
    etag_of(_authorized_publish(alice, "alice", "secret", pidf("open")))
