"""The admin API (docs/admin.md) of the real server process, over real sockets: every route,
bearer-token auth (401 / 403), bad input answered 4xx JSON, operator actions that SIP watchers
see (a terminated NOTIFY, a closed document), reload, and `presenced ctl` against the server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from admin_http import TOKEN, start_admin_server
from harness import (
    ServerProcess,
    SipClient,
    digest_authorization,
    parse_pidf,
    register,
    wait_until,
)

from presenced.sip.message import Request, Response

Factory = Callable[..., ServerProcess]
ALICE = "sip:alice@example.com"


def subscribe(w: SipClient, uri: str = ALICE, event: str = "presence") -> tuple[Response, Request]:
    r = w.request("SUBSCRIBE", uri, headers={"Event": event, "Expires": "600"})
    assert r.status == 200, r
    return r, w.expect_request("NOTIFY")


def state(n: Request) -> str:
    return str(n.headers.get("Subscription-State") or "").replace(" ", "")


def test_admin_auth_no_token_401_wrong_token_403_dashboard_open(server_factory: Factory) -> None:
    _, api = start_admin_server(server_factory)
    status, headers, body = api.raw("GET", "/api/v1/status", token=None)
    assert status == 401 and "error" in json.loads(body)
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert api.raw("GET", "/api/v1/status", token="not-the-token-at-all")[0] == 403
    assert api.raw("GET", "/api/v1/status", headers={"Authorization": f"Basic {TOKEN}"},
                   token=None)[0] == 403
    assert api.raw("GET", "/metrics", token=None)[0] == 401
    assert api.raw("DELETE", "/api/v1/subscriptions/x", token=None)[0] == 401
    # The page and its script hold no data: served without the token, under a strict CSP.
    status, headers, body = api.raw("GET", "/", token=None)
    assert status == 200 and b"dashboard.js" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert api.raw("GET", "/static/dashboard.js", token=None)[0] == 200
    # SSE needs a one-time ticket, never the token in the URL.
    assert api.raw("GET", "/api/v1/events?ticket=forged", token=None)[0] == 403


def test_admin_status_and_presentities_follow_sip_traffic(server_factory: Factory) -> None:
    srv, api = start_admin_server(server_factory)
    st = api.get("/api/v1/status")
    assert st["version"] and st["node"] and st["uptime"] >= 0
    assert st["overloaded"] is False and st["counts"]["shed"] == 0
    assert st["storage"]["backend"] == "memory" and st["storage"]["ok"] is True
    assert st["counts"]["subscriptions"] == 0 and "cluster" in st
    alice = SipClient(srv.addr, user="alice")
    bob = SipClient(srv.addr, user="bob")
    carol = SipClient(srv.addr, user="carol")
    try:
        assert register(alice).status == 200
        subscribe(bob)
        subscribe(carol)
        subscribe(bob, "sip:dave@example.com")
        st = api.get("/api/v1/status")
        assert st["counts"]["subscriptions"] == 3
        assert st["counts"]["subscriptions_by_event"]["presence"] == 3
        assert st["counts"]["bindings"] == 1 and st["counts"]["registered_aors"] == 1
        page = api.get("/api/v1/presentities")
        names = [i["aor"] for i in page["items"]]
        assert names == sorted(names) and {"alice@example.com", "dave@example.com"} <= set(names)
        row = next(i for i in page["items"] if i["aor"] == "alice@example.com")
        assert row["watchers"] == {"presence": 2} and row["bindings"] == 1
        assert [i["aor"] for i in api.get("/api/v1/presentities?q=dav")["items"]] == ["dave@example.com"]
        one = api.get("/api/v1/presentities?limit=1&offset=1")
        assert len(one["items"]) == 1 and one["total"] == page["total"] and one["items"][0]["aor"] == names[1]
        assert api.get("/api/v1/presentities?event=dialog")["total"] == 0
        show = api.get(f"/api/v1/presentities/{quote(ALICE)}")
        doc = show["packages"]["presence"]
        assert doc["watchers"] == 2 and "registrar" in doc["sources"]
        assert parse_pidf(doc["document"].encode()).basics == ["open"]
        assert show["bindings"][0]["contact"] == alice.contact_uri
        top = api.get("/api/v1/top")["top"]
        assert top[0] == {"aor": "alice@example.com", "watchers": 2}
    finally:
        for c in (alice, bob, carol):
            c.close()


def test_admin_watchers_subscriptions_bindings_and_terminate(server_factory: Factory) -> None:
    srv, api = start_admin_server(server_factory)
    alice = SipClient(srv.addr, user="alice")
    bob = SipClient(srv.addr, user="bob")
    try:
        assert register(alice).status == 200
        ok, _ = subscribe(bob)
        watchers = api.get("/api/v1/presentities/alice@example.com/watchers")["watchers"]
        assert len(watchers) == 1
        w = watchers[0]
        assert w["watcher"] == "bob@example.com" and w["state"] == "active" and w["event"] == "presence"
        assert 590 <= w["expires_in"] <= 600 and w["flow"] == f"udp:127.0.0.1:{bob.local_port}"
        assert wait_until(lambda: api.get(
            "/api/v1/presentities/alice@example.com/watchers")["watchers"][0]["last_notify_status"] == 200)
        mine = api.get("/api/v1/watchers/sip:bob@example.com/subscriptions")["subscriptions"]
        assert [s["presentity"] for s in mine] == ["alice@example.com"]
        assert api.get(f"/api/v1/subscriptions/{quote(w['id'], safe='')}")["id"] == w["id"]
        b = api.get("/api/v1/bindings/alice@example.com")["bindings"]
        assert [x["contact"] for x in b] == [alice.contact_uri] and b[0]["flow"].startswith("udp:")
        # The operator ends it: bob gets a terminated NOTIFY with the reason, the dialog is gone.
        done = api.call("DELETE", f"/api/v1/subscriptions/{quote(w['id'], safe='')}?reason=noresource")
        assert done["terminated"]["id"] == w["id"]
        final = bob.expect_request("NOTIFY")
        assert final.call_id == ok.call_id and state(final) == "terminated;reason=noresource"
        assert wait_until(lambda: api.get("/api/v1/status")["counts"]["subscriptions"] == 0)
        r = bob.request("SUBSCRIBE", ALICE, dialog=bob.dialog(ok), headers={"Event": "presence"})
        assert r.status == 481
        assert api.call("DELETE", f"/api/v1/subscriptions/{quote(w['id'], safe='')}", expect=404)["error"]
    finally:
        alice.close()
        bob.close()


def test_admin_delete_binding_and_publication_reach_watchers(server_factory: Factory) -> None:
    srv, api = start_admin_server(server_factory)
    alice = SipClient(srv.addr, user="alice")
    bob = SipClient(srv.addr, user="bob")
    try:
        assert register(alice).status == 200
        _, first = subscribe(bob)
        assert parse_pidf(first.body).basics == ["open"]
        assert api.call("DELETE", "/api/v1/bindings/alice@example.com?contact=sip:nobody@x",
                        expect=404)["error"]
        assert api.call("DELETE", "/api/v1/bindings/alice@example.com")["removed"] == 1
        n = bob.expect_request("NOTIFY")
        assert parse_pidf(n.body).basics == ["closed"]
        assert api.get("/api/v1/bindings/alice@example.com")["bindings"] == []
        body = (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
                b'entity="pres:alice@example.com"><tuple id="t1"><status><basic>open</basic>'
                b'</status></tuple></presence>')
        r = alice.request("PUBLISH", ALICE, headers={"Event": "presence", "Expires": "600",
                                                    "Content-Type": "application/pidf+xml"}, body=body)
        assert r.status == 200
        etag = str(r.headers.get("SIP-ETag"))
        assert parse_pidf(bob.expect_request("NOTIFY").body).basics == ["open"]
        pubs = api.get("/api/v1/presentities/alice@example.com")["publications"]
        assert [p["etag"] for p in pubs] == [etag] and pubs[0]["size"] == len(body)
        assert api.call("DELETE", f"/api/v1/publications/{etag}")["removed"] == etag
        assert parse_pidf(bob.expect_request("NOTIFY").body).basics == ["closed"]
        assert api.call("DELETE", f"/api/v1/publications/{etag}", expect=404)["error"]
        # The publication is gone for its publisher too (RFC 3903 §6: 412 for an unknown tag).
        r = alice.request("PUBLISH", ALICE, headers={"Event": "presence", "Expires": "600",
                                                    "SIP-If-Match": etag})
        assert r.status == 412
    finally:
        alice.close()
        bob.close()


def test_admin_bad_input_is_4xx_json_never_500(server_factory: Factory) -> None:
    srv, api = start_admin_server(server_factory)
    for path in ("/api/v1/presentities?limit=abc", "/api/v1/presentities?limit=0",
                 "/api/v1/presentities?limit=100000", "/api/v1/presentities?offset=-1",
                 "/api/v1/presentities?event=nope", "/api/v1/presentities?watched=maybe",
                 "/api/v1/presentities/alice@example.com/watchers?event=nope",
                 "/api/v1/presentities/%20", "/api/v1/failures?limit=x"):
        status, doc = api.call("GET", path, expect=None)
        assert status == 400 and doc["error"], (path, status, doc)
    assert api.call("GET", "/api/v1/presentities/nobody@example.com", expect=404)["error"]
    assert api.call("GET", "/api/v1/subscriptions/no;such;dialog", expect=404)["error"]
    assert api.call("DELETE", "/api/v1/subscriptions/x?reason=because", expect=400)["error"]
    assert api.call("DELETE", "/api/v1/publications/nope", expect=404)["error"]
    assert api.call("GET", "/api/v1/nothing-here", expect=404)["error"]
    assert api.call("PUT", "/api/v1/status", expect=405)["error"]
    assert api.call("POST", "/api/v1/reload", body={"what": ["kernel"]}, expect=400)["error"]
    assert api.call("POST", "/api/v1/reload", body={"what": "users"}, expect=400)["error"]
    assert api.call("POST", "/api/v1/reload", body=[1, 2], expect=400)["error"]
    status, _, raw = api.raw("POST", "/api/v1/reload", body=b"{not json",
                             headers={"Content-Type": "application/json"})
    assert status == 400 and json.loads(raw)["error"]
    status, _, raw = api.raw("POST", "/api/v1/reload", body=b"x" * 100_000)
    assert status == 413 and json.loads(raw)["error"]
    assert srv.tracebacks() == []


def test_admin_reload_users_file_and_log_level(server_factory: Factory, tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("alice:plain:alice-secret\n")
    users.chmod(0o600)
    srv, api = start_admin_server(server_factory, sections={"auth": {"users_file": str(users)}})
    erin = SipClient(srv.addr, user="erin")
    try:
        def register_erin(password: str) -> int:
            first = register(erin)
            assert first.status == 401
            auth = digest_authorization(str(first.headers.get("WWW-Authenticate")), "REGISTER",
                                        "sip:example.com", "erin", password)
            return register(erin, headers={"Authorization": auth}).status

        assert register_erin("erin-secret") != 200  # unknown yet: challenged again
        users.write_text("alice:plain:alice-secret\nerin:plain:erin-secret\n")
        done = api.call("POST", "/api/v1/reload", body={"what": ["users", "log_level"]})["reloaded"]
        assert set(done) == {"users", "log_level"}
        assert register_erin("erin-secret") == 200
        # A broken file is refused as a whole: nothing changes, the error names the key.
        users.write_text("erin\n")
        err = api.call("POST", "/api/v1/reload", expect=400)["error"]
        assert "users_file" in err
        assert register_erin("erin-secret") == 200
    finally:
        erin.close()


def ctl(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "presenced", "ctl", "--config", str(srv.config_path),
                           *args], capture_output=True, text=True, timeout=30,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})


def test_ctl_against_a_running_server(server_factory: Factory) -> None:
    srv, _ = start_admin_server(server_factory)
    alice = SipClient(srv.addr, user="alice")
    bob = SipClient(srv.addr, user="bob")
    try:
        assert register(alice).status == 200
        subscribe(bob)
        out = ctl(srv, "status")
        assert out.returncode == 0, out.stderr
        assert "storage memory: ok" in out.stdout and "subscriptions" in out.stdout
        print(out.stdout)
        out = ctl(srv, "watchers", "alice@example.com")
        assert out.returncode == 0 and "bob@example.com" in out.stdout and "active" in out.stdout
        out = ctl(srv, "--json", "subscriptions", "bob@example.com")
        subs = json.loads(out.stdout)["subscriptions"]
        assert [s["presentity"] for s in subs] == ["alice@example.com"]
        out = ctl(srv, "presentities", "--filter", "ali")
        assert out.returncode == 0 and "alice@example.com" in out.stdout
        out = ctl(srv, "bindings", "alice@example.com")
        assert alice.contact_uri in out.stdout
        out = ctl(srv, "show", "alice@example.com")
        assert "[presence]" in out.stdout and "<basic>open</basic>" in out.stdout
        out = ctl(srv, "terminate", subs[0]["id"])
        assert out.returncode == 0 and "terminated" in out.stdout
        assert state(bob.expect_request("NOTIFY")) == "terminated;reason=deactivated"
        out = ctl(srv, "terminate", subs[0]["id"])
        assert out.returncode == 1 and "404" in out.stderr
        out = ctl(srv, "unbind", "alice@example.com")
        assert out.returncode == 0 and "removed 1" in out.stdout
        out = ctl(srv, "reload", "log_level")
        assert out.returncode == 0 and "log_level" in out.stdout
        assert ctl(srv, "failures").returncode == 0
        srv.stop()
        out = ctl(srv, "status")
        assert out.returncode == 3 and "cannot reach" in out.stderr
    finally:
        alice.close()
        bob.close()


def test_admin_and_ctl_set_presence_rules_that_live_watchers_follow(server_factory: Factory) -> None:
    """PUT /api/v1/rules/{aor} (and `presenced ctl rules set`) is the operator's way to the
    same rules XCAP writes: a pending watcher is activated at once, a block ends it."""
    srv, api = start_admin_server(server_factory, sections={
        "pa": {"default_policy": "confirm"}, "limits": {"exempt": ["127.0.0.0/8"]}})
    alice = SipClient(srv.addr, user="alice")
    bob = SipClient(srv.addr, user="bob")
    try:
        assert register(alice).status == 200
        _, first = subscribe(bob)
        assert state(first).startswith("pending") and not first.body
        assert api.call("GET", "/api/v1/rules/alice@example.com", expect=404)
        out = ctl(srv, "rules", "set", "alice@example.com", "allow", "bob@example.com")
        assert out.returncode == 0 and "etag" in out.stdout, out.stderr
        n = bob.expect_request("NOTIFY")
        assert state(n).startswith("active") and parse_pidf(n.body).basics == ["open"]
        got = api.get("/api/v1/rules/sip:alice@example.com")
        assert "bob@example.com" in got["document"] and got["etag"]
        assert "bob@example.com" in ctl(srv, "rules", "get", "alice@example.com").stdout
        # Bad input: an invalid document 400, a stale entity tag 412, neither applied.
        st, doc = api.call("PUT", "/api/v1/rules/alice@example.com",
                           {"document": "<not-rules/>"}, expect=None)
        assert st == 400 and "invalid rules" in doc["error"]
        st, doc = api.call("PUT", "/api/v1/rules/alice@example.com",
                           {"handling": "block", "expect": "stale"}, expect=None)
        assert st == 412
        bob.expect_no_request("NOTIFY", timeout=0.5)
        # A block rule with the current tag ends bob's subscription with reason=rejected.
        api.call("PUT", "/api/v1/rules/alice@example.com",
                 {"handling": "block", "identities": ["bob@example.com"], "expect": got["etag"]})
        end = bob.expect_request("NOTIFY")
        assert state(end).startswith("terminated") and "reason=rejected" in state(end)
        assert "deleted" in ctl(srv, "rules", "delete", "alice@example.com").stdout
        assert ctl(srv, "rules", "delete", "alice@example.com").returncode == 1
    finally:
        alice.close()
        bob.close()
