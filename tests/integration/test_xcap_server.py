"""The XCAP server (RFC 4825, RFC 5025 pres-rules) of a real presenced process, over real HTTP.

Clients: aiohttp's client with its own DigestAuthMiddleware (an HTTP digest implementation
independent of ours, SHA-256 as we offer first), the standard library's urllib with
HTTPDigestAuthHandler for MD5, and curl --digest. No XCAP client could be installed from Debian or PyPI (see
docs/xcap.md), so the XCAP side is this module's own requests, written from the RFC.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import ServerProcess
from lxml import etree
from yarl import URL

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "xcap"
RULES = (VECTORS / "pres-rules.xml").read_bytes()
ERR_NS = "urn:ietf:params:xml:ns:xcap-error"
CP = "urn:ietf:params:xml:ns:common-policy"
DOC_MIME = "application/auth-policy+xml"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
RULE_C = (b'<cp:rule id="c" xmlns:cp="urn:ietf:params:xml:ns:common-policy">'
          b"<cp:conditions><cp:identity><cp:one id=\"sip:carol@example.com\"/></cp:identity>"
          b"</cp:conditions><cp:actions>"
          b'<sub-handling xmlns="urn:ietf:params:xml:ns:pres-rules">confirm</sub-handling>'
          b"</cp:actions></cp:rule>")
QUERY = "?xmlns(cp=urn:ietf:params:xml:ns:common-policy)"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Xcap:
    """The XCAP server of one presenced process, and URLs into it."""

    def __init__(self, server: ServerProcess, port: int) -> None:
        self.server = server
        self.port = port
        self.base = f"http://127.0.0.1:{port}/xcap-root"

    def doc(self, user: str = "alice") -> str:
        return f"{self.base}/pres-rules/users/sip:{user}@example.com/index"

    def node(self, selector: str, user: str = "alice", query: str = QUERY) -> URL:
        # Sent as written (encoded=True): brackets and quotes percent-escaped as clients do.
        sel = selector.replace("[", "%5b").replace("]", "%5d").replace('"', "%22")
        return URL(f"{self.doc(user)}/~~/{sel}{query}", encoded=True)

    async def wait(self) -> None:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError("the XCAP server did not listen")


XcapFactory = Callable[..., Xcap]


@pytest.fixture
def xcap_factory(server_factory: Callable[..., ServerProcess]) -> XcapFactory:
    def start(storage: str = "memory:", algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
              **xcap: Any) -> Xcap:
        port = free_tcp_port()
        srv = server_factory(storage=storage, sections={
            "auth": {"users": USERS, "algorithms": list(algorithms)},
            "xcap": {"listen": f"127.0.0.1:{port}", **xcap},
        })
        return Xcap(srv, port)
    return start


def session(user: str = "alice", password: str | None = None) -> aiohttp.ClientSession:
    digest = aiohttp.DigestAuthMiddleware(user, password or USERS[user])
    return aiohttp.ClientSession(middlewares=(digest,))


def etag_of(resp: aiohttp.ClientResponse) -> str:
    tag = resp.headers.get("ETag")
    assert tag is not None and tag.startswith('"') and tag.endswith('"'), tag
    return tag


def xcap_error(body: bytes) -> etree._Element:
    root = etree.fromstring(body)
    assert root.tag == f"{{{ERR_NS}}}xcap-error"
    assert len(root) == 1
    return root[0]


async def test_put_a_pres_rules_document_and_get_it_back_with_its_etag(
        xcap_factory: XcapFactory) -> None:
    x = xcap_factory()
    await x.wait()
    async with session() as http:
        async with http.put(x.doc(), data=RULES, headers={"Content-Type": DOC_MIME}) as r:
            assert r.status == 201, await r.text()
            tag = etag_of(r)
        async with http.get(x.doc()) as r:
            assert r.status == 200
            assert r.content_type == DOC_MIME
            assert await r.read() == RULES
            assert etag_of(r) == tag
        # RFC 4825 §7.11 / RFC 9110 §13.1.2: a GET with a matching If-None-Match is 304.
        async with http.get(x.doc(), headers={"If-None-Match": tag}) as r:
            assert r.status == 304 and etag_of(r) == tag
        async with http.put(x.doc(), data=RULES, headers={"Content-Type": DOC_MIME}) as r:
            assert r.status == 200
            assert etag_of(r) != tag  # a replaced document gets a new tag
        async with http.get(x.doc(), headers={"If-None-Match": tag}) as r:
            assert r.status == 200
        async with http.delete(x.doc()) as r:
            assert r.status == 200
        async with http.get(x.doc()) as r:
            assert r.status == 404


async def test_rules_by_id_element_get_put_delete_and_attributes(
        xcap_factory: XcapFactory) -> None:
    x = xcap_factory()
    await x.wait()
    async with session() as http:
        async with http.put(x.doc(), data=RULES, headers={"Content-Type": DOC_MIME}) as r:
            assert r.status == 201
            tag0 = etag_of(r)
        async with http.get(x.node('cp:ruleset/cp:rule[@id="b"]')) as r:
            assert r.status == 200, await r.text()
            assert r.content_type == "application/xcap-el+xml"
            el = etree.fromstring(await r.read())
            assert el.tag == f"{{{CP}}}rule" and el.get("id") == "b"
            assert etag_of(r) == tag0  # an element's tag is its document's (§7.11)
        rule_c = x.node('cp:ruleset/cp:rule[@id="c"]')
        el_type = {"Content-Type": "application/xcap-el+xml"}
        async with http.put(rule_c, data=RULE_C, headers=el_type) as r:
            assert r.status == 201, await r.text()
            tag1 = etag_of(r)
            assert tag1 != tag0
        async with http.put(rule_c, data=RULE_C, headers=el_type) as r:
            assert r.status == 200  # the same PUT again replaces: idempotent
        async with http.get(x.doc()) as r:
            doc = etree.fromstring(await r.read())
            assert [rule.get("id") for rule in doc] == ["a", "b", "c"]
        # An attribute: the <many domain> of rule a.
        many = x.node('cp:ruleset/cp:rule[@id="a"]/cp:conditions/cp:identity/cp:many/@domain')
        async with http.get(many) as r:
            assert r.status == 200 and r.content_type == "application/xcap-att+xml"
            assert await r.read() == b"example.com"
        async with http.put(many, data=b"example.org",
                            headers={"Content-Type": "application/xcap-att+xml"}) as r:
            assert r.status == 200, await r.text()
        async with http.get(many) as r:
            assert await r.read() == b"example.org"
        async with http.delete(rule_c) as r:
            assert r.status == 200, await r.text()
        async with http.get(rule_c) as r:
            assert r.status == 404
        async with http.delete(rule_c) as r:
            assert r.status == 404
        # A positional DELETE that would make the URI select the next rule: cannot-delete.
        async with http.delete(x.node("cp:ruleset/cp:rule[1]")) as r:
            assert r.status == 409
            assert r.content_type == "application/xcap-error+xml"
            assert xcap_error(await r.read()).tag == f"{{{ERR_NS}}}cannot-delete"
        # The well-known prefix without the query's xmlns() binding (leniency).
        async with http.get(x.node('cp:ruleset/cp:rule[@id="a"]', query="")) as r:
            assert r.status == 200
        # A parent that does not exist: no-parent naming the closest ancestor.
        async with http.put(x.node('cp:ruleset/cp:rule[@id="zz"]/cp:actions'),
                            data=b"<cp:actions/>", headers=el_type) as r:
            assert r.status == 409
            err = xcap_error(await r.read())
            assert err.tag == f"{{{ERR_NS}}}no-parent"
            assert err.findtext(f"{{{ERR_NS}}}ancestor", "").endswith("/index/~~/cp:ruleset")


async def test_stale_if_match_is_412_and_if_none_match_star_creates_only(
        xcap_factory: XcapFactory) -> None:
    x = xcap_factory()
    await x.wait()
    doc_type = {"Content-Type": DOC_MIME}
    async with session() as http:
        async with http.put(x.doc(), data=RULES, headers={**doc_type, "If-None-Match": "*"}) as r:
            assert r.status == 201
            old = etag_of(r)
        async with http.put(x.doc(), data=RULES, headers={**doc_type, "If-None-Match": "*"}) as r:
            assert r.status == 412
        async with http.put(x.doc(), data=RULES, headers={**doc_type, "If-Match": old}) as r:
            assert r.status == 200
            new = etag_of(r)
        async with http.put(x.doc(), data=RULES, headers={**doc_type, "If-Match": old}) as r:
            assert r.status == 412  # stale: someone (here: we) wrote since
        async with http.put(x.node('cp:ruleset/cp:rule[@id="c"]'), data=RULE_C,
                            headers={"Content-Type": "application/xcap-el+xml",
                                     "If-Match": old}) as r:
            assert r.status == 412
        async with http.delete(x.node('cp:ruleset/cp:rule[@id="b"]'),
                               headers={"If-Match": old}) as r:
            assert r.status == 412
        async with http.delete(x.doc(), headers={"If-Match": old}) as r:
            assert r.status == 412
        async with http.get(x.doc(), headers={"If-Match": old}) as r:
            assert r.status == 412
        async with http.delete(x.doc(), headers={"If-Match": new}) as r:
            assert r.status == 200


@pytest.mark.parametrize(("body", "condition"), [
    (b"<cp:ruleset", "not-well-formed"),
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
     b'<ruleset xmlns="urn:ietf:params:xml:ns:common-policy">&b;</ruleset>', "not-well-formed"),
    (b'<!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>', "not-well-formed"),
    (b"<ruleset xmlns=\"urn:ietf:params:xml:ns:common-policy\">\xff</ruleset>", "not-utf-8"),
    (b'<ruleset xmlns="urn:example:not-common-policy"/>', "schema-validation-error"),
    (RULES.replace(b'"block"', b'"block"').replace(b"<sub-handling>block<",
                                                   b"<sub-handling>maybe<"),
     "schema-validation-error"),
    (RULES.replace(b'id="b"', b'id="a"'), "uniqueness-failure"),
])
async def test_an_invalid_document_is_409_with_the_xcap_error_body(
        xcap_factory: XcapFactory, body: bytes, condition: str) -> None:
    x = xcap_factory()
    await x.wait()
    async with session() as http:
        async with http.put(x.doc(), data=body, headers={"Content-Type": DOC_MIME}) as r:
            assert r.status == 409, await r.text()
            assert r.content_type == "application/xcap-error+xml"
            assert xcap_error(await r.read()).tag == f"{{{ERR_NS}}}{condition}"
        async with http.get(x.doc()) as r:
            assert r.status == 404  # nothing was stored


async def test_bounds_and_media_types(xcap_factory: XcapFactory) -> None:
    x = xcap_factory(max_document_size=4096)
    await x.wait()
    async with session() as http:
        big = RULES.replace(b"</cr:ruleset>", b"<!--" + b"x" * 5000 + b"--></cr:ruleset>")
        async with http.put(x.doc(), data=big, headers={"Content-Type": DOC_MIME}) as r:
            assert r.status == 413
        async with http.put(x.doc(), data=RULES, headers={"Content-Type": "text/xml"}) as r:
            assert r.status == 415
        async with http.get(f"{x.doc()}/{'a' * 5000}") as r:
            assert r.status in (414, 400)
        async with http.get(x.node("cp:ruleset/cp:rule[")) as r:
            assert r.status == 400
        async with http.get(f"{x.base}/no-such-auid/users/sip:alice@example.com/index") as r:
            assert r.status == 404
        async with http.post(x.doc(), data=RULES) as r:
            assert r.status == 405 and "PUT" in r.headers.get("Allow", "")


async def test_401_without_credentials_and_403_for_another_users_document(
        xcap_factory: XcapFactory) -> None:
    x = xcap_factory()
    await x.wait()
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(x.doc()) as r:
            assert r.status == 401
            challenges = r.headers.getall("WWW-Authenticate")
            assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]
            assert all('realm="example.com"' in c and 'qop="auth"' in c for c in challenges)
        async with anonymous.put(x.doc(), data=RULES, headers={"Content-Type": DOC_MIME}) as r:
            assert r.status == 401
    async with session("alice", "wrong") as http, http.get(x.doc()) as r:
        assert r.status == 401
    async with (session("alice") as http,
                http.put(x.doc(), data=RULES, headers={"Content-Type": DOC_MIME}) as r):
        assert r.status == 201
    async with session("bob") as http:
        async with http.get(x.doc("alice")) as r:
            assert r.status == 403
        async with http.put(x.doc("alice"), data=RULES, headers={"Content-Type": DOC_MIME}) as r:
            assert r.status == 403
        async with http.delete(x.node('cp:ruleset/cp:rule[@id="a"]', user="alice")) as r:
            assert r.status == 403
        async with http.get(x.doc("bob")) as r:
            assert r.status == 404  # his own, which he has not written
        # xcap-caps (RFC 4825 §12) is global: any authenticated user reads it.
        async with http.get(f"{x.base}/xcap-caps/global/index") as r:
            assert r.status == 200 and r.content_type == "application/xcap-caps+xml"
            caps = etree.fromstring(await r.read())
            ns = "{urn:ietf:params:xml:ns:xcap-caps}"
            assert [a.text for a in caps.iter(f"{ns}auid")] == ["xcap-caps", "pres-rules"]
            assert CP in [n.text for n in caps.iter(f"{ns}namespace")]
        async with http.put(f"{x.base}/xcap-caps/global/index", data=b"<x/>",
                            headers={"Content-Type": "application/xcap-caps+xml"}) as r:
            assert r.status == 405


def _urllib(method: str, url: str, user: str, password: str, body: bytes | None = None,
            content_type: str | None = None) -> tuple[int, bytes, str | None]:
    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    passwords.add_password(None, url, user, password)
    opener = urllib.request.build_opener(urllib.request.HTTPDigestAuthHandler(passwords))
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("ETag")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("ETag")


async def test_md5_digest_with_the_standard_librarys_client(xcap_factory: XcapFactory) -> None:
    x = xcap_factory(algorithms=("MD5",))
    await x.wait()
    status, _, tag = await asyncio.to_thread(_urllib, "PUT", x.doc(), "alice", USERS["alice"],
                                             RULES, DOC_MIME)
    assert status == 201 and tag
    status, body, tag2 = await asyncio.to_thread(_urllib, "GET", x.doc(), "alice",
                                                 USERS["alice"])
    assert (status, body, tag2) == (200, RULES, tag)
    # urllib answers each 401 with another try; after [auth] max_failures (5) wrong answers
    # from this address the pair is locked out: 403 (the SIP side's guessing throttle).
    status, _, _ = await asyncio.to_thread(_urllib, "GET", x.doc(), "alice", "wrong")
    assert status in (401, 403)


async def test_the_document_survives_kill9(xcap_factory: XcapFactory) -> None:
    x = xcap_factory(storage="sqlite:///presenced.db")
    await x.wait()
    async with session() as http:
        async with http.put(x.doc(), data=RULES, headers={"Content-Type": DOC_MIME}) as r:
            assert r.status == 201
        async with http.put(x.node('cp:ruleset/cp:rule[@id="c"]'), data=RULE_C,
                            headers={"Content-Type": "application/xcap-el+xml"}) as r:
            assert r.status == 201
            tag = etag_of(r)
    x.server.kill9()
    x.server.start_again()
    await x.wait()
    async with session() as http, http.get(x.doc()) as r:
        assert r.status == 200
        assert etag_of(r) == tag
        doc = etree.fromstring(await r.read())
        assert [rule.get("id") for rule in doc] == ["a", "b", "c"]


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    curl = shutil.which("curl")
    assert curl is not None, "curl is missing (.ci/run installs it)"
    return subprocess.run([curl, "-sS", "--digest", "-u", f"alice:{USERS['alice']}", *args],
                          capture_output=True, timeout=30, check=False)


async def test_curl_puts_and_gets_with_digest(xcap_factory: XcapFactory) -> None:
    x = xcap_factory()
    await x.wait()
    put = await asyncio.to_thread(
        _curl, "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
        "-H", f"Content-Type: {DOC_MIME}", "--data-binary", RULES.decode(), x.doc())
    assert put.stdout == b"201", (put.stdout, put.stderr)
    got = await asyncio.to_thread(_curl, "-D", "-", x.doc())
    # -D - prints the challenge's 401 headers, then the 200's, then the body.
    assert b"HTTP/1.1 401" in got.stdout and b"HTTP/1.1 200" in got.stdout, got.stdout[:500]
    assert got.stdout.endswith(RULES), got.stdout[-300:]


BLOCK_BOB = b"""<?xml version="1.0" encoding="UTF-8"?>
<cp:ruleset xmlns:cp="urn:ietf:params:xml:ns:common-policy"
            xmlns:pr="urn:ietf:params:xml:ns:pres-rules">
  <cp:rule id="no-bob">
    <cp:conditions><cp:identity><cp:one id="sip:bob@example.com"/></cp:identity></cp:conditions>
    <cp:actions><pr:sub-handling>block</pr:sub-handling></cp:actions>
  </cp:rule>
</cp:ruleset>
"""


async def test_rules_put_over_xcap_decide_sip_subscriptions(
        xcap_factory: XcapFactory, sip_client: Callable[..., Any]) -> None:
    """End to end: alice blocks bob over XCAP, bob's SUBSCRIBE gets 403 (RFC 5025 §3.2.1
    block); alice deletes her rules over XCAP, the default policy (allow) lets him in."""
    from harness import digest_authorization, parse_auth_params

    x = xcap_factory()
    await x.wait()
    async with session() as http, http.put(x.doc(), data=BLOCK_BOB,
                                           headers={"Content-Type": DOC_MIME}) as r:
        assert r.status == 201, await r.text()
    alice = "sip:alice@example.com"
    bob = sip_client(server=x.server, user="bob")
    h: dict[str, str | None] = {"Event": "presence", "Expires": "600"}
    first = bob.request("SUBSCRIBE", alice, headers=h)
    assert first.status == 401
    challenge = parse_auth_params(first.headers.get("WWW-Authenticate") or "")

    def with_auth(nc: int) -> dict[str, str | None]:
        auth = digest_authorization(challenge, "SUBSCRIBE", alice, "bob", USERS["bob"], nc=nc)
        return {**h, "Authorization": auth}

    blocked = bob.request("SUBSCRIBE", alice, headers=with_auth(1))
    assert blocked.status == 403, blocked
    async with session() as http, http.delete(x.doc()) as r:
        assert r.status == 200
    allowed = bob.request("SUBSCRIBE", alice, headers=with_auth(2))
    assert allowed.status == 200, allowed
    first_notify = bob.expect_request("NOTIFY", timeout=5)
    assert "active" in (first_notify.headers.get("Subscription-State") or "")
    bob.reply(first_notify, 200)
    # A rule put over XCAP applies to the live subscription before the 201 (RFC 5025 block:
    # terminated;reason=rejected).
    async with session() as http, http.put(x.doc(), data=BLOCK_BOB,
                                           headers={"Content-Type": DOC_MIME}) as r:
        assert r.status == 201, await r.text()
    final = bob.expect_request("NOTIFY", timeout=5)
    state = final.headers.get("Subscription-State") or ""
    assert state.startswith("terminated") and "rejected" in state, state
    bob.reply(final, 200)
