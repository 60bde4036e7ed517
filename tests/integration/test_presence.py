"""The presence agent of the real server process: SUBSCRIBE/NOTIFY (RFC 6665, RFC 3856).

Watchers are `SipClient`s on real sockets; the presentity's state comes from REGISTERs of
another client (the registrar source). Behaviour under test is docs/presence.md. Tests that
need a subscription to run out use `[pa] min_expires = 1` and Expires: 2.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    CPIM_PIDF_NS,
    LOOPBACK_UNLIMITED,
    ServerProcess,
    SipClient,
    parse_pidf,
    parse_xpidf,
    register,
    run_sipp,
    xpidf_presentity,
)

from presenced.sip.message import Request, Response

Client = Callable[..., SipClient]
Factory = Callable[..., ServerProcess]

ALICE = "sip:alice@example.com"
FAST_PA = {"pa": {"min_expires": 1}, "registrar": {"min_expires": 1}}


def subscribe(
    w: SipClient,
    uri: str = ALICE,
    *,
    expires: int | None = 600,
    headers: dict[str, str | None] | None = None,
) -> tuple[Response, Request]:
    """An initial SUBSCRIBE that must succeed; returns the 200 and the first NOTIFY."""
    h: dict[str, str | None] = {"Event": "presence"}
    if expires is not None:
        h["Expires"] = str(expires)
    h.update(headers or {})
    r = w.request("SUBSCRIBE", uri, headers=h)
    assert r.status == 200, r
    return r, w.expect_request("NOTIFY")


def state(notify: Request) -> str:
    value = notify.headers.get("Subscription-State")
    assert value is not None, "NOTIFY without Subscription-State (RFC 6665 §8.2.3)"
    return str(value).replace(" ", "")


def basics(notify: Request) -> list[str]:
    assert notify.content_type == "application/pidf+xml"
    return parse_pidf(notify.body).basics


def in_dialog(n: Request, r: Response) -> bool:
    """`n` is a NOTIFY of the dialog the 200 `r` to our SUBSCRIBE created (RFC 6665 §4.4.1)."""
    return bool(n.call_id == r.call_id and n.from_.tag == r.to.tag and n.to.tag == r.from_.tag)


# --- sipp --------------------------------------------------------------------------------------


def test_sipp_subscribe_errors_489_423_406_481(
    server_factory: Factory, sipp: str, tmp_path: Path
) -> None:
    server = server_factory(sections=LOOPBACK_UNLIMITED)
    result = run_sipp(sipp, "subscribe_errors.xml", server.addr, tmp_path / "sipp", calls=20)
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (20, 0), result.describe()


def test_sipp_subscription_timeout(server_factory: Factory, sipp: str, tmp_path: Path) -> None:
    srv = server_factory(sections=FAST_PA)
    result = run_sipp(sipp, "subscribe_timeout.xml", srv.addr, tmp_path / "sipp", calls=10)
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (10, 0), result.describe()


# --- the subscription dialog (RFC 6665 §4.1, §4.2) ------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_subscribe_gets_200_then_notify_active_with_closed_pidf(
    sip_client: Client, transport: str
) -> None:
    w = sip_client(transport, user="bob")
    r, n = subscribe(w, expires=600)
    assert r.to.tag  # RFC 6665 §4.2.1.1: the 200 makes the dialog
    assert r.contacts and r.contacts[0].uri.is_sip  # RFC 6665 §4.1.2.1
    assert r.headers.get("Expires") == "600"
    assert in_dialog(n, r)
    assert n.uri == w.contact_uri  # the remote target is our Contact
    assert n.headers.get("Event") == "presence"
    st = state(n)
    assert st.startswith("active;expires=")
    assert 590 <= int(st.split("=")[1]) <= 600
    doc = parse_pidf(n.body)
    assert doc.entity == "pres:alice@example.com"  # RFC 3863 §4.1.1
    assert doc.basics == ["closed"]  # no registration, no publication: a valid closed document
    assert not w.errors


def test_registration_opens_refresh_does_not_flap_unregistration_closes(
    sip_client: Client,
) -> None:
    w = sip_client(user="bob")
    alice = sip_client()
    r, n = subscribe(w)
    closed_id = parse_pidf(n.body).tuples[0][0]
    assert register(alice, expires=600).status == 200
    n = w.expect_request("NOTIFY")
    assert in_dialog(n, r) and state(n).startswith("active")
    doc = parse_pidf(n.body)
    assert doc.basics == ["open"] and doc.contacts == ["sip:alice@example.com"]  # device privacy: the AOR
    assert doc.tuples[0][0] == closed_id  # one service going open and closed (RFC 3863 §4.1.2)
    assert register(alice, expires=900).status == 200  # a refresh: nothing a watcher sees
    w.expect_no_request("NOTIFY", timeout=0.7)
    assert register(alice, expires=0).status == 200
    n = w.expect_request("NOTIFY")
    assert basics(n) == ["closed"]
    assert parse_pidf(n.body).tuples[0][0] == closed_id


def test_binding_expiry_makes_the_notify_say_closed(
    server_factory: Factory, sip_client: Client
) -> None:
    srv = server_factory(sections=FAST_PA)
    w = sip_client(server=srv, user="bob")
    subscribe(w)
    assert register(sip_client(server=srv), expires=2).status == 200
    assert basics(w.expect_request("NOTIFY")) == ["open"]
    started = time.monotonic()
    assert basics(w.expect_request("NOTIFY", timeout=5)) == ["closed"]
    assert 1.0 < time.monotonic() - started < 4.0


def test_refresh_gets_200_and_an_immediate_notify(sip_client: Client) -> None:
    w = sip_client(user="bob")
    r, _ = subscribe(w, expires=600)
    dlg = w.dialog(r)
    r2 = w.request("SUBSCRIBE", dialog=dlg, headers={"Event": "presence", "Expires": "300"})
    assert r2.status == 200 and r2.headers.get("Expires") == "300"
    n = w.expect_request("NOTIFY")
    assert in_dialog(n, r)
    assert state(n).startswith("active;expires=")
    assert 290 <= int(state(n).split("=")[1]) <= 300


def test_unsubscribe_gets_200_and_final_notify_then_nothing(sip_client: Client) -> None:
    w = sip_client(user="bob")
    r, _ = subscribe(w)
    dlg = w.dialog(r)
    r2 = w.request("SUBSCRIBE", dialog=dlg, headers={"Event": "presence", "Expires": "0"})
    assert r2.status == 200
    n = w.expect_request("NOTIFY")
    assert in_dialog(n, r)
    assert state(n).startswith("terminated")  # RFC 6665 §4.2.1.4
    assert basics(n) == ["closed"]  # the final NOTIFY still carries the state
    assert register(sip_client(), expires=600).status == 200
    w.expect_no_request("NOTIFY", timeout=0.7)
    again = w.request("SUBSCRIBE", dialog=dlg, headers={"Event": "presence", "Expires": "600"})
    assert again.status == 481  # the dialog is gone


def test_subscription_runs_out_with_terminated_reason_timeout(
    server_factory: Factory, sip_client: Client
) -> None:
    srv = server_factory(sections=FAST_PA)
    w = sip_client(server=srv, user="bob")
    r, n = subscribe(w, expires=2)
    assert r.headers.get("Expires") == "2"
    started = time.monotonic()
    n = w.expect_request("NOTIFY", timeout=5)
    assert in_dialog(n, r)
    assert state(n) == "terminated;reason=timeout"  # RFC 6665 §4.2.2
    assert 1.0 < time.monotonic() - started < 4.0
    refresh = w.request(
        "SUBSCRIBE", dialog=w.dialog(r), headers={"Event": "presence", "Expires": "600"}
    )
    assert refresh.status == 481


def test_expires_absent_gets_default_and_above_max_is_capped(
    server_factory: Factory, sip_client: Client
) -> None:
    srv = server_factory(sections={"pa": {"default_expires": 200, "max_expires": 300}})
    w = sip_client(server=srv, user="bob")
    r, _ = subscribe(w, expires=None)
    assert r.headers.get("Expires") == "200"
    r, _ = subscribe(w, expires=100_000)
    assert r.headers.get("Expires") == "300"  # RFC 6665 §4.2.1.1: the notifier may shorten


def test_one_shot_fetch_gets_one_notify_and_no_dialog(sip_client: Client) -> None:
    alice = sip_client()
    assert register(alice, expires=600).status == 200
    w = sip_client(user="bob")
    r, n = subscribe(w, expires=0)  # RFC 6665 §4.4.3: a fetch
    assert r.headers.get("Expires") == "0"
    assert in_dialog(n, r)
    assert state(n).startswith("terminated")
    assert basics(n) == ["open"]  # the current state, once
    assert register(alice, expires=0).status == 200
    w.expect_no_request("NOTIFY", timeout=0.7)
    again = w.request(
        "SUBSCRIBE", dialog=w.dialog(r), headers={"Event": "presence", "Expires": "600"}
    )
    assert again.status == 481


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"Event": "conference"}, 489, id="event-unknown"),
        pytest.param({"Event": None}, 489, id="no-event"),
        pytest.param({"Expires": "5"}, 423, id="expires-below-min"),
        pytest.param({"Accept": "text/html"}, 406, id="accept-html"),
        pytest.param({"Accept": "application/pidf+xml;q=0, text/html"}, 406, id="accept-q0"),
    ],
)
def test_subscribe_errors(sip_client: Client, headers: dict[str, str | None], status: int) -> None:
    w = sip_client(user="bob")
    h: dict[str, str | None] = {"Event": "presence", "Expires": "600"}
    h.update(headers)
    r = w.request("SUBSCRIBE", ALICE, headers=h)
    assert r.status == status
    if status == 489:  # RFC 6665 §8.2.2 / §4.1.2.1
        assert "presence" in [v.strip() for v in r.headers.get_list("Allow-Events")]
    if status == 423:  # RFC 6665 §4.2.1.1, [pa] min_expires defaults to 60
        assert r.headers.get("Min-Expires") == "60"
    if status == 406:  # RFC 3261 §21.4.7: say what we can produce
        assert "application/pidf+xml" in r.headers.get_list("Accept")
    w.expect_no_request("NOTIFY", timeout=0.3)


def test_in_dialog_subscribe_for_an_unknown_dialog_gets_481(sip_client: Client) -> None:
    w = sip_client(user="bob")
    r = w.request(
        "SUBSCRIBE",
        ALICE,
        to=f"<{ALICE}>;tag=no-such-dialog",
        headers={"Event": "presence", "Expires": "600"},
    )
    assert r.status == 481  # RFC 6665 §4.1.2.2, RFC 3261 §12.2.2


def test_subscribe_error_responses_carry_a_to_tag(sip_client: Client) -> None:
    # RFC 3261 §8.2.6.2: the UAS MUST add a To-tag when the request had none.
    w = sip_client(user="bob")
    r = w.request("SUBSCRIBE", ALICE, headers={"Event": "conference", "Expires": "600"})
    assert r.status == 489 and r.to.tag


# --- document formats chosen by Accept (RFC 3856 §6.7, docs/presence.md) ----------------------------


def test_accept_xpidf_gets_xpidf_bodies(sip_client: Client) -> None:
    w = sip_client(user="bob")
    _, n = subscribe(w, headers={"Accept": "application/xpidf+xml"})
    assert n.content_type == "application/xpidf+xml"
    assert (xpidf_presentity(n.body) or "").startswith("sip:alice@example.com")
    assert [s for s, _, _ in parse_xpidf(n.body)] == ["closed"]
    alice = sip_client()
    assert register(alice, expires=600).status == 200
    n = w.expect_request("NOTIFY")
    assert n.content_type == "application/xpidf+xml"
    # Device privacy: the address is the presentity's URI, not the registered contact.
    assert parse_xpidf(n.body) == [("open", "online", "sip:alice@example.com")]


def test_accept_lpidf_gets_lpidf_bodies(sip_client: Client) -> None:
    w = sip_client(user="bob")
    _, n = subscribe(w, headers={"Accept": "text/lpidf"})
    assert n.content_type == "text/lpidf"
    lines = n.body.decode().splitlines()
    assert lines[0] == "To: <sip:alice@example.com>"
    alice = sip_client()
    assert register(alice, expires=600).status == 200
    n = w.expect_request("NOTIFY")
    lines = n.body.decode().splitlines()
    assert lines[0] == "To: <sip:alice@example.com>"
    assert lines[1].startswith("Contact: <sip:alice@example.com>;q=")  # device privacy
    assert float(lines[1].rsplit("q=", 1)[1]) > 0  # open: a non-zero priority


def test_accept_cpim_pidf_gets_cpim_pidf_bodies(sip_client: Client) -> None:
    w = sip_client(user="bob")
    _, n = subscribe(w, headers={"Accept": "application/cpim-pidf+xml"})
    assert n.content_type == "application/cpim-pidf+xml"
    assert parse_pidf(n.body, CPIM_PIDF_NS).basics == ["closed"]
    alice = sip_client()
    assert register(alice, expires=600).status == 200
    n = w.expect_request("NOTIFY")
    doc = parse_pidf(n.body, CPIM_PIDF_NS)
    assert doc.basics == ["open"] and doc.contacts == ["sip:alice@example.com"]  # device privacy: the AOR


def test_accept_list_picks_a_format_we_produce(sip_client: Client) -> None:
    w = sip_client(user="bob")
    _, n = subscribe(w, headers={"Accept": "text/html, application/xpidf+xml;q=0.5"})
    assert n.content_type == "application/xpidf+xml"


# --- NOTIFY discipline (RFC 6665 §4.2.2) ---------------------------------------------------------


def test_notify_cseq_strictly_increases_within_the_dialog(sip_client: Client) -> None:
    w = sip_client(user="bob")
    alice = sip_client()
    r, first = subscribe(w)
    seqs = [first.cseq.seq]
    for expires in (600, 0, 600, 0):
        assert register(alice, expires=expires).status == 200
        seqs.append(w.expect_request("NOTIFY").cseq.seq)
    dlg = w.dialog(r)
    for sub_expires in ("600", "0"):
        refresh = w.request(
            "SUBSCRIBE", dialog=dlg, headers={"Event": "presence", "Expires": sub_expires}
        )
        assert refresh.status == 200
        seqs.append(w.expect_request("NOTIFY").cseq.seq)
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs  # RFC 3261 §12.2.1.1


def test_changes_while_a_notify_is_unanswered_coalesce_into_the_latest_state(
    sip_client: Client,
) -> None:
    w = sip_client(user="bob", auto_answer=())
    alice = sip_client()
    r, first = subscribe(w)
    # The first NOTIFY stays unanswered (its retransmissions too) while alice changes 3 times.
    assert register(alice, expires=600).status == 200
    assert register(alice, expires=0).status == 200
    late = "<sip:alice@192.0.2.99:5060>"
    assert register(alice, contacts=[late], expires=600).status == 200
    time.sleep(0.5)
    assert w.pending_requests() == [], "a second NOTIFY while the first was outstanding"
    w.reply(first, 200)
    n = w.expect_request("NOTIFY", timeout=5)
    w.reply(n, 200)
    assert in_dialog(n, r) and n.cseq.seq > first.cseq.seq
    doc = parse_pidf(n.body)
    # Device privacy: the registered contact shows as the AOR.
    assert doc.basics == ["open"] and doc.contacts == ["sip:alice@example.com"]
    w.expect_no_request("NOTIFY", timeout=1.0)  # nothing older follows the newest state


@pytest.mark.parametrize("status", [481, 408])
def test_watcher_answering_notify_with_error_is_dropped_others_keep_receiving(
    sip_client: Client, status: int
) -> None:
    good = sip_client(user="bob")
    bad = sip_client(user="carol", auto_answer=())
    alice = sip_client()
    subscribe(good)
    rb = bad.request("SUBSCRIBE", ALICE, headers={"Event": "presence", "Expires": "600"})
    assert rb.status == 200
    bad.reply(bad.expect_request("NOTIFY"), 200)
    assert register(alice, expires=600).status == 200
    bad.reply(bad.expect_request("NOTIFY"), status)  # RFC 6665 §4.2.2: this ends it
    assert basics(good.expect_request("NOTIFY")) == ["open"]
    time.sleep(0.3)
    assert register(alice, expires=0).status == 200
    assert basics(good.expect_request("NOTIFY")) == ["closed"]
    bad.expect_no_request("NOTIFY", timeout=1.0)
    refresh = bad.request(
        "SUBSCRIBE", dialog=bad.dialog(rb), headers={"Event": "presence", "Expires": "600"}
    )
    assert refresh.status == 481  # gone from the agent (and from storage)


# --- routing of NOTIFYs (RFC 3261 §12.1.1, §12.2.1.1) ----------------------------------------------


def test_record_route_becomes_the_route_set_of_notifies(sip_client: Client) -> None:
    w = sip_client(user="bob")
    # The first hop is the watcher itself, so the NOTIFY sent to it reaches us.
    rr = [f"<sip:127.0.0.1:{w.local_port};lr>", "<sip:proxy2.example.net;lr>"]
    _r, n = subscribe(w, headers={"Record-Route": ", ".join(rr)})
    assert n.headers.get_list("Route") == rr  # the UAS keeps Record-Route order
    assert n.uri == w.contact_uri  # loose routing: the Request-URI is the remote target
    assert register(sip_client(), expires=600).status == 200
    n = w.expect_request("NOTIFY")
    assert n.headers.get_list("Route") == rr and basics(n) == ["open"]


def test_strict_router_in_record_route_goes_into_the_request_uri(sip_client: Client) -> None:
    w = sip_client(user="bob")
    rr = [f"<sip:127.0.0.1:{w.local_port}>", "<sip:proxy2.example.net;lr>"]
    _, n = subscribe(w, headers={"Record-Route": ", ".join(rr)})
    # §12.2.1.1: the strict router's URI is the Request-URI; the remote target goes last.
    assert n.uri == f"sip:127.0.0.1:{w.local_port}"
    assert n.headers.get_list("Route") == [rr[1], f"<{w.contact_uri}>"]


def test_200_to_subscribe_copies_record_route(sip_client: Client) -> None:
    # RFC 3261 §12.1.1: the UAS MUST copy all Record-Route values into the dialog's 2xx.
    w = sip_client(user="bob")
    rr = [f"<sip:127.0.0.1:{w.local_port};lr>", "<sip:proxy2.example.net;lr>"]
    r, _ = subscribe(w, headers={"Record-Route": ", ".join(rr)})
    assert r.headers.get_list("Record-Route") == rr


# --- persistence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["restart", "kill9"])
def test_subscriptions_survive_restart_and_kill9(
    sqlite_server: ServerProcess, sip_client: Client, how: str
) -> None:
    w = sip_client(server=sqlite_server, user="bob")
    alice = sip_client(server=sqlite_server)
    r, n = subscribe(w)
    seqs = [n.cseq.seq]
    assert register(alice, expires=600).status == 200
    seqs.append(w.expect_request("NOTIFY").cseq.seq)
    if how == "kill9":
        sqlite_server.kill9()
        sqlite_server.start_again()
    else:
        sqlite_server.restart()
    assert register(alice, expires=0).status == 200
    n = w.expect_request("NOTIFY", timeout=5)
    assert in_dialog(n, r)  # the old dialog, from storage
    assert basics(n) == ["closed"]
    assert n.cseq.seq > max(seqs)  # CSeq keeps increasing across the restart
    dlg = w.dialog(r)
    dlg.local_cseq = 10  # our own CSeq space: above the 1 the SUBSCRIBE used
    refresh = w.request("SUBSCRIBE", dialog=dlg, headers={"Event": "presence", "Expires": "600"})
    assert refresh.status == 200
    assert w.expect_request("NOTIFY").cseq.seq > n.cseq.seq


def test_subscription_expired_while_down_gets_final_notify_at_startup(
    server_factory: Factory, sip_client: Client
) -> None:
    srv = server_factory(storage="sqlite:///presenced.db", sections=FAST_PA)
    w = sip_client(server=srv, user="bob")
    r, n = subscribe(w, expires=2)
    srv.stop()
    time.sleep(2.5)
    srv.start_again()
    final = w.expect_request("NOTIFY", timeout=5)
    assert in_dialog(final, r)
    assert state(final) == "terminated;reason=timeout"
    assert final.cseq.seq > n.cseq.seq
    w.expect_no_request("NOTIFY", timeout=0.5)


# --- routing script ([routing] script, handle_subscription) -----------------------------------------


def test_routing_script_that_raises_gets_500_and_the_server_keeps_serving(
    server_factory: Factory, sip_client: Client, tmp_path: Path
) -> None:
    script = tmp_path / "route.py"
    script.write_text(
        "def route(request):\n"
        "    if request.ruri.user == 'boom':\n"
        "        raise RuntimeError('operator mistake')\n"
        "    return None\n"
    )
    srv = server_factory(sections={"routing": {"script": str(script)}})
    w = sip_client(server=srv, user="bob")
    r = w.request(
        "SUBSCRIBE", "sip:boom@example.com", headers={"Event": "presence", "Expires": "600"}
    )
    assert r.status == 500
    w.expect_no_request("NOTIFY", timeout=0.3)
    assert "operator mistake" in srv.log_text()  # and a log line says why
    subscribe(w)  # other requests are still served
    assert w.request("OPTIONS", "sip:example.com").status == 200
    srv.assert_running()


def test_routing_script_routes_by_user_prefix(
    server_factory: Factory, sip_client: Client, tmp_path: Path
) -> None:
    script = tmp_path / "route.py"
    script.write_text(
        "def route(request):\n"
        "    user = request.ruri.user or ''\n"
        "    if user.startswith('xmpp.'):\n"
        "        return handle_subscription(request, 'jabber')\n"
        "    if user.startswith('local.'):\n"
        "        return handle_subscription(request, 'registrar')\n"
        "    return None\n"
    )
    srv = server_factory(sections={"routing": {"script": str(script)}})  # no [jabber]
    w = sip_client(server=srv, user="bob")
    # Routed to "jabber", which this server does not run: refused, not served by the registrar.
    r = w.request(
        "SUBSCRIBE", "sip:xmpp.carol@example.com", headers={"Event": "presence", "Expires": "600"}
    )
    assert r.status == 404
    w.expect_no_request("NOTIFY", timeout=0.3)
    # Routed to "registrar" by the script, and by the default rule: both served from REGISTERs.
    for user in ("local.dave", "erin"):
        r, n = subscribe(w, f"sip:{user}@example.com")
        assert basics(n) == ["closed"]
        assert register(sip_client(server=srv, user=user), expires=600).status == 200
        assert basics(w.expect_request("NOTIFY")) == ["open"]


def test_with_auth_a_watcher_subscribes_only_as_itself(
    server_factory: Factory, sip_client: Client
) -> None:
    """With [auth], SUBSCRIBE is challenged (RFC 3261 §22) and its From must name the
    authenticated user: nobody reads presence, or uses another's quota, under another name."""
    from harness import digest_authorization, parse_auth_params

    srv = server_factory(
        sections={"auth": {"realm": "example.com", "users": {"alice": "secret", "bob": "pw"}}}
    )
    bob = sip_client(server=srv, user="bob")
    h: dict[str, str | None] = {"Event": "presence", "Expires": "600"}
    r = bob.request("SUBSCRIBE", ALICE, headers=h)
    assert r.status == 401, r
    challenge = parse_auth_params(r.headers.get("WWW-Authenticate") or "")

    def with_auth(nc: int, **extra: str) -> dict[str, str | None]:
        # One nonce, so the nonce-count goes up with each use (RFC 7616 §3.4).
        auth = digest_authorization(challenge, "SUBSCRIBE", ALICE, "bob", "pw", nc=nc)
        return {**h, "Authorization": auth, **extra}

    spoofed = bob.request(
        "SUBSCRIBE", ALICE, headers=with_auth(1), from_="<sip:carol@example.com>;tag=c1"
    )
    assert spoofed.status == 403, spoofed
    ok = bob.request("SUBSCRIBE", ALICE, headers=with_auth(2))
    assert ok.status == 200, ok
    note = bob.expect_request("NOTIFY", timeout=5)
    assert parse_pidf(note.body).basics == ["closed"]
