"""Per-source limits (sip/limits.py) through `Endpoint.receive`, with a fake clock.

The pike-like limiter: two token buckets per source IP, one 503 with Retry-After, then silence
until the source has spent `block_time` below the rate. The anti-amplification budget (RFC 9000
§8.1 applied to UDP SIP): bytes to an unproven address <= factor x bytes received from it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from presenced.config import ConfigError, load_default_config, parse_config
from presenced.sip.endpoint import (
    Endpoint,
    EndpointConfig,
    Event,
    Peer,
    RequestReceived,
    Transmit,
)
from presenced.sip.headers import Headers
from presenced.sip.limits import (
    AmplificationGuard,
    AmplificationLimits,
    RateLimits,
    SourceLimiter,
    in_networks,
    parse_networks,
)
from presenced.sip.message import Request, Response, make_response, parse_message

ATTACKER = Peer("udp", "192.0.2.66", 5060)
OTHER = Peer("udp", "198.51.100.7", 5060)


def make_endpoint(rate: RateLimits | None = None, amp: AmplificationLimits | None = None,
                  **kw: object) -> Endpoint:
    counter = itertools.count(1)
    cfg = EndpointConfig(
        domains=frozenset({"example.com"}),
        via_hosts={"udp": "127.0.0.1:5060", "tcp": "127.0.0.1:5060"},
        rate_limits=rate or RateLimits(),
        amplification=amp or AmplificationLimits(),
        **kw,  # type: ignore[arg-type]
    )
    return Endpoint(cfg, make_token=lambda: f"tok{next(counter)}")


_branches = itertools.count(1)


def request(method: str = "SUBSCRIBE", *, peer: Peer = ATTACKER, branch: str | None = None,
            to_tag: str | None = None, extra: tuple[str, ...] = ()) -> bytes:
    b = branch or f"z9hG4bK{next(_branches)}"
    to = "<sip:alice@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:alice@example.com SIP/2.0",
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch={b};rport",
        "From: <sip:bob@example.com>;tag=f1",
        f"To: {to}",
        f"Call-ID: {b}@x",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
        "Event: presence",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def responses(events: list[Event]) -> list[Response]:
    out = []
    for ev in events:
        if isinstance(ev, Transmit):
            msg = parse_message(ev.data)
            assert isinstance(msg, Response)
            out.append(msg)
    return out


# --- token buckets --------------------------------------------------------------------------


def test_bucket_allows_the_burst_then_refuses_once_then_drops() -> None:
    lim = SourceLimiter(RateLimits(requests_per_second=1, request_burst=3, block_time=10))
    assert [lim.check("a", False, 0.0) for _ in range(3)] == ["allow"] * 3
    assert lim.check("a", False, 0.0) == "refuse"
    assert lim.check("a", False, 0.1) == "drop"
    assert lim.refused == 1 and lim.dropped == 1


def test_bucket_refills_at_the_rate() -> None:
    lim = SourceLimiter(RateLimits(requests_per_second=2, request_burst=2))
    assert lim.check("a", False, 0.0) == "allow"
    assert lim.check("a", False, 0.0) == "allow"
    assert lim.check("a", False, 0.5) == "allow"  # one token back after 0.5 s at 2/s


def test_dialog_bucket_is_separate_and_smaller() -> None:
    lim = SourceLimiter(RateLimits(request_burst=100, dialog_burst=2))
    assert lim.check("a", True, 0.0) == "allow"
    assert lim.check("a", True, 0.0) == "allow"
    assert lim.check("a", True, 0.0) == "refuse"


def test_block_lasts_until_block_time_passes_below_the_rate() -> None:
    lim = SourceLimiter(RateLimits(requests_per_second=1, request_burst=1, block_time=10))
    assert lim.check("a", False, 0.0) == "allow"
    assert lim.check("a", False, 0.0) == "refuse"  # blocked until 10
    # Still flooding at 9 s (the bucket is empty after one more): the block runs on to 19.
    assert lim.check("a", False, 9.0) == "drop"
    assert lim.check("a", False, 9.0) == "drop"
    assert lim.check("a", False, 18.0) == "drop"  # below the rate now, but the block holds
    assert lim.check("a", False, 19.5) == "allow"


def test_sources_are_independent() -> None:
    lim = SourceLimiter(RateLimits(requests_per_second=1, request_burst=1))
    lim.check("a", False, 0.0)
    assert lim.check("a", False, 0.0) == "refuse"
    assert lim.check("b", False, 0.0) == "allow"


def test_exempt_networks_are_never_limited() -> None:
    nets = parse_networks(["10.0.0.0/8", "::1"])
    lim = SourceLimiter(RateLimits(requests_per_second=1, request_burst=1, exempt=nets))
    assert all(lim.check("10.1.2.3", True, 0.0) == "allow" for _ in range(100))
    assert in_networks("::1", nets) and in_networks("::ffff:10.0.0.1", nets)
    assert not in_networks("11.0.0.1", nets) and not in_networks("not-an-ip", nets)


def test_table_is_bounded_and_evicts_the_least_recently_seen() -> None:
    lim = SourceLimiter(RateLimits(max_sources=100))
    lim.check("keep", False, 0.0)
    for i in range(1000):
        lim.check(f"forged{i}", False, 0.0)
        if i % 10 == 0:
            lim.check("keep", False, 0.0)
    assert len(lim) == 100
    assert lim.evicted == 901
    assert "keep" in lim._sources  # an active source stays


# --- through the endpoint -------------------------------------------------------------------


def test_endpoint_floods_get_one_503_with_retry_after_then_silence() -> None:
    ep = make_endpoint(RateLimits(dialog_burst=5, dialogs_per_second=1, block_time=7))
    answered: list[Response] = []
    apps = 0
    for _ in range(50):
        events = ep.receive(request(), ATTACKER, 0.0)
        apps += sum(isinstance(e, RequestReceived) for e in events)
        answered += responses(events)
    assert apps == 5  # only the burst reaches the application
    assert [r.status for r in answered] == [503]
    assert answered[0].headers.get("Retry-After") == "7"
    assert ep.stats.rate_refused == 1 and ep.stats.rate_dropped == 44
    # Another source is served meanwhile.
    assert any(isinstance(e, RequestReceived) for e in ep.receive(request(peer=OTHER), OTHER, 0.0))


def test_in_dialog_requests_are_not_dialogs() -> None:
    ep = make_endpoint(RateLimits(dialog_burst=1, request_burst=100))
    ep.receive(request(), ATTACKER, 0.0)
    for _ in range(20):  # refreshes carry the To-tag; a PUBLISH with SIP-If-Match modifies
        ep.receive(request(to_tag="t1"), ATTACKER, 0.0)
        ep.receive(request("PUBLISH", extra=("SIP-If-Match: e1",)), ATTACKER, 0.0)
    assert ep.stats.rate_refused == 0
    ep.receive(request("REGISTER"), ATTACKER, 0.0)
    assert ep.stats.rate_refused == 1


def test_retransmissions_of_a_live_transaction_are_not_counted_again() -> None:
    ep = make_endpoint(RateLimits(dialog_burst=2, request_burst=2))
    data = request(branch="z9hG4bKsame")
    (ev,) = ep.receive(data, ATTACKER, 0.0)
    assert isinstance(ev, RequestReceived)
    for _ in range(10):
        assert ep.receive(data, ATTACKER, 0.1) == []  # absorbed, never refused
    assert ep.stats.rate_refused == 0
    assert ep.stats.retransmissions_absorbed == 10


def test_rate_limited_request_creates_no_transaction() -> None:
    ep = make_endpoint(RateLimits(dialog_burst=1))
    ep.receive(request(), ATTACKER, 0.0)
    before = len(ep.txns.servers)
    for _ in range(100):
        ep.receive(request(), ATTACKER, 0.0)
    assert len(ep.txns.servers) == before


def test_limits_off_when_none() -> None:
    counter = itertools.count(1)
    ep = Endpoint(EndpointConfig(domains=frozenset({"example.com"}), rate_limits=None,
                                 amplification=None), lambda: f"t{next(counter)}")
    for _ in range(500):
        ep.receive(request(), ATTACKER, 0.0)
    assert ep.stats.rate_refused == 0 and ep.stats.rate_dropped == 0


# --- anti-amplification ---------------------------------------------------------------------


def test_guard_budget_is_factor_times_received() -> None:
    g = AmplificationGuard(AmplificationLimits(factor=3))
    g.received("v", 100, 0.0)
    assert g.allow("v", 1, 200, 0.0)
    assert g.allow("v", 2, 100, 0.0)  # credit is per IP, whatever the port
    assert not g.allow("v", 1, 1, 0.0)
    assert g.dropped == 1 and g.dropped_bytes == 1
    assert not g.allow("never-heard", 1, 1, 0.0)


def test_guard_credit_expires() -> None:
    g = AmplificationGuard(AmplificationLimits(factor=10, credit_ttl=64))
    g.received("v", 100, 0.0)
    assert not g.allow("v", 1, 10, 65.0)


def test_guard_proof_lifts_the_bound_and_expires() -> None:
    g = AmplificationGuard(AmplificationLimits(factor=1, proven_ttl=600))
    g.prove("v", 5060, 0.0)
    assert g.allow("v", 5060, 10**6, 1.0)
    assert not g.allow("v", 5061, 1, 1.0)  # proof is per (IP, port)
    assert not g.allow("v", 5060, 1, 601.0)


def test_guard_tables_are_bounded() -> None:
    g = AmplificationGuard(AmplificationLimits(max_addresses=50))
    for i in range(500):
        g.received(f"h{i}", 10, 0.0)
        g.prove(f"h{i}", 1, 0.0)
    assert len(g._credit) == 50 and len(g._proven) == 50


def notify_to(ep: Endpoint, peer: Peer, now: float, body: bytes = b"",
              validated: bool = False) -> list[Event]:
    req = Request("NOTIFY", f"sip:bob@{peer.host}:{peer.port}", Headers())
    h = req.headers
    h.add("From", "<sip:alice@example.com>;tag=a1")
    h.add("To", "<sip:bob@example.com>;tag=f1")
    h.add("Call-ID", "n1@x")
    h.add("CSeq", "1 NOTIFY")
    h.add("Event", "presence")
    req.body = body
    return ep.send_request(req, peer, now, "ctx", validated)


def test_endpoint_bounds_notify_and_retransmissions_to_a_forged_source() -> None:
    """A forged SUBSCRIBE draws a 200 and a NOTIFY with ten retransmissions: the victim gets
    at most 10x the attacker's bytes, the rest is dropped and counted."""
    ep = make_endpoint()
    victim = Peer("udp", "203.0.113.9", 5060)
    data = request(peer=victim)
    (ev,) = ep.receive(data, victim, 0.0)
    assert isinstance(ev, RequestReceived)
    sent = 0
    for out in ep.respond(ev.txn, make_response(ev.request, 200), victim, 0.0):
        assert isinstance(out, Transmit)
        sent += len(out.data)
    for out in notify_to(ep, victim, 0.0, body=b"x" * 1500):
        assert isinstance(out, Transmit)
        sent += len(out.data)
    now = 0.0
    while (deadline := ep.get_timer()) is not None and deadline < 100:
        now = deadline
        for out in ep.handle_timer(now):
            if isinstance(out, Transmit):
                sent += len(out.data)
    assert sent <= 10 * len(data)
    assert ep.stats.amplification_dropped > 0


def test_endpoint_a_watcher_that_answers_is_proven() -> None:
    ep = make_endpoint(amp=AmplificationLimits(factor=1))
    watcher = Peer("udp", "203.0.113.10", 5070)
    ep.receive(request(peer=watcher), watcher, 0.0)
    (tx,) = notify_to(ep, watcher, 0.0)  # fits the budget: about the SUBSCRIBE's size
    assert isinstance(tx, Transmit)
    notify = parse_message(tx.data)
    assert isinstance(notify, Request)
    ok = make_response(notify, 200).encode()
    ep.receive(ok, watcher, 0.1)
    assert ep.guard is not None and ep.guard.is_proven(watcher.host, watcher.port, 0.1)
    # Now far more than the budget goes through.
    for i in range(5):
        assert notify_to(ep, watcher, 1.0 + i, body=b"y" * 4000)


def test_a_response_from_another_ip_does_not_prove_the_destination() -> None:
    ep = make_endpoint(amp=AmplificationLimits(factor=100))
    victim = Peer("udp", "203.0.113.11", 5060)
    ep.receive(request(peer=victim), victim, 0.0)
    (tx,) = notify_to(ep, victim, 0.0)
    assert isinstance(tx, Transmit)
    notify = parse_message(tx.data)
    assert isinstance(notify, Request)
    ep.receive(make_response(notify, 200).encode(), Peer("udp", "192.0.2.99", 5060), 0.1)
    assert ep.guard is not None and not ep.guard.is_proven(victim.host, victim.port, 0.1)


def test_tcp_is_never_bounded() -> None:
    ep = make_endpoint(amp=AmplificationLimits(factor=1))
    peer = Peer("tcp", "203.0.113.12", 40000, conn_id=1)
    assert notify_to(ep, peer, 0.0, body=b"z" * 10000)


def test_config_limits_section_defaults_and_bad_exempt() -> None:
    cfg = load_default_config()
    assert (cfg.limits.requests_per_second, cfg.limits.request_burst) == (100, 200)
    assert (cfg.limits.dialogs_per_second, cfg.limits.dialog_burst) == (10, 50)
    assert (cfg.limits.block_time, cfg.limits.amplification_factor) == (10, 10)
    assert cfg.server.max_connections_per_source == 32
    assert cfg.server.connection_idle_timeout == 300
    assert cfg.registrar.max_bindings == 100_000
    assert (cfg.pa.max_publications, cfg.pa.max_presentity_bytes) == (100_000, 65536)
    with pytest.raises(ConfigError, match=r"limits\.exempt\[1\]"):
        parse_config('[limits]\nexempt = ["10.0.0.0/8", "bogus"]\n', Path("."))


def test_a_dialog_the_application_vouches_for_bypasses_the_budget_retransmissions_too() -> None:
    """A NOTIFY of a dialog whose watcher answered before (the agent's `validated`), e.g. one
    restored after a restart, goes whole with every retransmission though no credit exists."""
    ep = make_endpoint(amp=AmplificationLimits(factor=1))
    watcher = Peer("udp", "203.0.113.13", 5070)
    (tx,) = notify_to(ep, watcher, 0.0, body=b"v" * 4000, validated=True)
    assert isinstance(tx, Transmit)
    resent = 0
    while (deadline := ep.get_timer()) is not None and deadline < 100:
        resent += sum(isinstance(o, Transmit) for o in ep.handle_timer(deadline))
    assert resent >= 9  # Timer E's retransmissions until Timer F (RFC 3261 §17.1.2.2)
    assert ep.stats.amplification_dropped == 0
    assert notify_to(ep, Peer("udp", "203.0.113.14", 5070), 0.0, body=b"v" * 4000) == []
