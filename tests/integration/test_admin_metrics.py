"""/metrics of the real server process, parsed with prometheus-client's own parser: the values
move with real SIP traffic (a SUBSCRIBE raises the active subscriptions gauge, a NOTIFY
answered 481 counts a failure), labels stay bounded, and `metrics_public` opens only /metrics."""

from __future__ import annotations

from collections.abc import Callable

from admin_http import Admin, start_admin_server
from harness import ServerProcess, SipClient, register, wait_until
from prometheus_client.parser import text_string_to_metric_families

Factory = Callable[..., ServerProcess]
ALICE = "sip:alice@example.com"


def scrape(api: Admin, token: str | None = "default") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = api.raw("GET", "/metrics", token=token)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_sip_traffic(server_factory: Factory) -> None:
    srv, api = start_admin_server(server_factory)
    before = scrape(api)
    assert value(before, "presenced_subscriptions", event="presence", state="active") == 0
    alice = SipClient(srv.addr, user="alice")
    bob = SipClient(srv.addr, user="bob", auto_answer=())
    try:
        assert register(alice).status == 200
        r = bob.request("SUBSCRIBE", ALICE, headers={"Event": "presence", "Expires": "600"})
        assert r.status == 200
        first = bob.expect_request("NOTIFY")
        bob.reply(first, 200)
        m = scrape(api)
        assert value(m, "presenced_subscriptions", event="presence", state="active") == 1
        assert value(m, "presenced_bindings") == 1 and value(m, "presenced_registered_aors") == 1
        assert value(m, "presenced_sip_requests_total", method="SUBSCRIBE") >= 1
        assert value(m, "presenced_sip_requests_total", method="REGISTER") >= 1
        assert value(m, "presenced_sip_responses_total", method="SUBSCRIBE", **{"class": "2xx"}) >= 1
        assert value(m, "presenced_notify_sent_total") >= 1
        assert wait_until(lambda: value(scrape(api), "presenced_notify_latency_seconds_count") >= 1)
        assert value(m, "presenced_storage_writes_total", op="put_subscription") >= 1
        # A change while bob answers nothing: one NOTIFY in flight; bob answers it 481.
        assert register(alice, expires=0).status == 200
        n = bob.expect_request("NOTIFY")
        failed = value(scrape(api), "presenced_notify_failed_total")
        bob.reply(n, 481)
        assert wait_until(lambda: value(scrape(api), "presenced_notify_failed_total") == failed + 1)
        m = scrape(api)
        assert value(m, "presenced_subscriptions", event="presence", state="active") == 0
        assert value(m, "presenced_fanout_seconds_count") >= 1
        assert value(m, "presenced_fanout_notifies_count") >= 1
        failures = api.get("/api/v1/failures")["failures"]
        assert failures[0]["status"] == 481 and failures[0]["watcher"] == "bob@example.com"
        # Unknown methods count as OTHER: the label set stays bounded.
        alice.request("FROBNICATE", "sip:example.com")
        m = scrape(api)
        assert value(m, "presenced_sip_requests_total", method="OTHER") >= 1
        methods = {dict(k[1]).get("method") for k in m if k[0] == "presenced_sip_requests_total"}
        assert "FROBNICATE" not in methods
        assert value(m, "presenced_transactions", kind="server") >= 0
        assert value(m, "presenced_overloaded") == 0  # nothing queued: nothing shed
    finally:
        alice.close()
        bob.close()


def test_metrics_count_sqlite_storage_writes(server_factory: Factory) -> None:
    srv, api = start_admin_server(server_factory, storage="sqlite:///presenced.db")
    alice = SipClient(srv.addr, user="alice")
    try:
        assert register(alice).status == 200
        m = scrape(api)
        assert value(m, "presenced_storage_writes_total", op="put_binding") == 1
        assert value(m, "presenced_storage_errors_total", op="put_binding") == 0
        assert value(m, "presenced_storage_write_seconds_count", op="put_binding") == 1
        assert api.get("/api/v1/status")["storage"] == {
            "backend": "sqlite", "ok": True, "writes": 1, "errors": 0, "last_error": None,
            "last_error_at": None}
    finally:
        alice.close()


def test_metrics_public_opens_only_metrics(server_factory: Factory) -> None:
    _, api = start_admin_server(server_factory, metrics_public=True)
    assert value(scrape(api, token=None), "presenced_uptime_seconds") > 0
    assert api.raw("GET", "/api/v1/status", token=None)[0] == 401
