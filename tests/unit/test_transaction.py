"""Non-INVITE transactions (RFC 3261 §17.1.2, §17.2.2) driven by a fake clock (plain floats)."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presenced.sip.transaction import (
    ABSORBED,
    CLIENT_INPUTS,
    CLIENT_TABLE,
    NEW,
    SERVER_INPUTS,
    SERVER_TABLE,
    STATES,
    ClientAction,
    ClientInput,
    ClientResult,
    ClientTimeout,
    Retransmit,
    ServerAction,
    ServerInput,
    ServerReceive,
    ServerTimeout,
    State,
    TransactionError,
    TransactionLayer,
    TxnEvent,
    _live,
    client_transition,
    key_method,
    server_key,
    server_transition,
    with_method,
)

NOTIFY = b"NOTIFY sip:bob@192.0.2.1:5060 SIP/2.0\r\nCSeq: 1 NOTIFY\r\n\r\n"
KEY = server_key("z9hG4bKabc", "192.0.2.1:5060", "SUBSCRIBE")
PEER = ("udp", "192.0.2.1", 5060)


def assert_heap_accounting(layer: TransactionLayer) -> None:
    """White-box: the stale-entry count that drives compaction matches the heap exactly."""
    stale = sum(1 for entry in layer._heap if not _live(entry))
    assert layer._stale == stale


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, TxnEvent]]:
    """Fire every timer due up to `until`, as a driver would, recording when each event came."""
    seen: list[tuple[float, TxnEvent]] = []
    while (deadline := layer.get_timer()) is not None and deadline <= until:
        seen.extend((deadline, event) for event in layer.handle_timer(deadline))
    return seen


# --- client transactions (§17.1.2) ---------------------------------------------------------------


def test_client_udp_retransmits_from_t1_doubling_to_t2_until_timer_f() -> None:
    """§17.1.2.2: E fires at T1, 2*T1, 4*T1, then every T2; F ends it at 64*T1 = 32 s."""
    layer = TransactionLayer()
    layer.start_client("z9hG4bK1", NOTIFY, reliable=False, now=0.0, context=PEER)

    seen = run_timers(layer, until=100.0)

    retransmits = [t for t, e in seen if isinstance(e, Retransmit)]
    assert retransmits == pytest.approx(
        [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5], abs=1e-3
    )
    assert all(e == Retransmit(NOTIFY, PEER) for _, e in seen[:-1])
    assert seen[-1][0] == pytest.approx(32.0, abs=1e-3)
    assert seen[-1][1] == ClientTimeout("z9hG4bK1", PEER)
    assert len(layer.clients) == 0
    assert layer.get_timer() is None


def test_client_schedule_is_relative_to_start_time() -> None:
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=False, now=1000.25)
    assert layer.get_timer() == pytest.approx(1000.75, abs=1e-3)
    times = [t for t, _ in run_timers(layer, until=2000.0)]
    assert times[:3] == pytest.approx([1000.75, 1001.75, 1003.75], abs=1e-3)
    assert times[-1] == pytest.approx(1032.25, abs=1e-3)


def test_client_proceeding_retransmits_every_t2() -> None:
    """§17.1.2.2: once a provisional arrived, Timer E is reset to T2 each time it fires."""
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=False, now=0.0, context="ctx")
    assert [t for t, _ in run_timers(layer, until=0.6)] == [0.5]

    assert layer.receive_response("b", "NOTIFY", 180, now=0.6) == ClientResult("ctx", False)
    assert layer.clients["b"].state == "proceeding"
    # a second provisional is passed up too and changes nothing
    assert layer.receive_response("b", "NOTIFY", 183, now=0.7) == ClientResult("ctx", False)

    seen = run_timers(layer, until=100.0)
    retransmits = [t for t, e in seen if isinstance(e, Retransmit)]
    # the E already armed (1.5) still fires; from then on every T2
    assert retransmits == pytest.approx([1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5], abs=1e-3)
    assert seen[-1][0] == pytest.approx(32.0, abs=1e-3)
    assert seen[-1][1] == ClientTimeout("b", "ctx")


def test_client_timeout_fires_at_exactly_64_t1() -> None:
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=True, now=10.0, context=7)
    assert layer.get_timer() == 42.0
    assert layer.handle_timer(41.999) == []
    assert layer.handle_timer(42.0) == [ClientTimeout("b", 7)]
    assert layer.clients == {}


def test_client_final_response_stops_timers_and_timer_k_absorbs_retransmissions() -> None:
    """§17.1.2.2: Completed absorbs retransmitted responses for T4, then terminates."""
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=False, now=0.0, context="ctx")
    assert layer.receive_response("b", "NOTIFY", 200, now=1.0) == ClientResult("ctx", True)
    assert layer.get_timer() == pytest.approx(6.0)  # Timer K = T4 after the response

    assert layer.receive_response("b", "NOTIFY", 200, now=3.0) is None
    assert layer.receive_response("b", "NOTIFY", 180, now=3.0) is None
    assert layer.receive_response("b", "NOTIFY", 481, now=3.0) is None
    assert layer.handle_timer(5.999) == []
    # Completed is an entry, not an object (transaction.py's docstring)
    assert "b" not in layer.clients and layer.completed_clients == {"b": "NOTIFY"}
    with pytest.raises(TransactionError):  # the branch is still taken
        layer.start_client("b", NOTIFY, reliable=False, now=5.0)

    assert layer.handle_timer(6.0) == []  # no retransmission or timeout ever fired
    assert layer.clients == {} and layer.completed_clients == {}
    assert layer.get_timer() is None
    assert layer.receive_response("b", "NOTIFY", 200, now=7.0) is None


def test_client_final_response_in_proceeding_completes() -> None:
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=False, now=0.0)
    layer.receive_response("b", "NOTIFY", 100, now=0.1)
    assert layer.receive_response("b", "NOTIFY", 404, now=0.2) == ClientResult(None, True)
    assert "b" in layer.completed_clients and layer.client_count == 1
    assert run_timers(layer, until=100.0) == []
    assert layer.clients == {} and layer.completed_clients == {}


def test_client_over_reliable_transport_never_retransmits() -> None:
    """§17.1.2.2: Timer E only for unreliable transports; Timer K is zero when reliable."""
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=True, now=0.0)
    assert layer.get_timer() == 32.0  # Timer F only
    assert layer.handle_timer(31.9) == []
    assert layer.receive_response("b", "NOTIFY", 100, now=1.0) == ClientResult(None, False)
    assert layer.handle_timer(31.9) == []
    assert layer.receive_response("b", "NOTIFY", 200, now=2.0) == ClientResult(None, True)
    assert layer.clients == {}
    assert layer.get_timer() is None


def test_client_reliable_timeout_emits_only_the_timeout() -> None:
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=True, now=0.0, context="c")
    assert run_timers(layer, until=100.0) == [(32.0, ClientTimeout("b", "c"))]


def test_client_response_matches_on_branch_and_cseq_method() -> None:
    """§17.1.3: a response to a CANCEL with the same branch is not this transaction's."""
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=False, now=0.0)
    assert layer.receive_response("b", "CANCEL", 200, now=0.1) is None
    assert layer.receive_response("other", "NOTIFY", 200, now=0.1) is None
    assert layer.clients["b"].state == "trying"


def test_client_timers_are_injectable() -> None:
    layer = TransactionLayer(t1=0.1, t2=0.4, t4=1.0)
    layer.start_client("b", NOTIFY, reliable=False, now=0.0)
    seen = run_timers(layer, until=100.0)
    assert [t for t, _ in seen][:5] == pytest.approx([0.1, 0.3, 0.7, 1.1, 1.5], abs=1e-6)
    assert seen[-1][0] == pytest.approx(6.4, abs=1e-6)
    layer.start_client("c", NOTIFY, reliable=False, now=10.0)
    layer.receive_response("c", "NOTIFY", 200, now=10.0)
    assert layer.get_timer() == pytest.approx(11.0)


def test_client_late_driver_fires_each_timer_once_per_call() -> None:
    """E is reset from when it fires (§17.1.2.2), so a late tick yields one retransmission."""
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=False, now=0.0)
    assert layer.handle_timer(3.0) == [Retransmit(NOTIFY, None)]
    assert layer.get_timer() == pytest.approx(4.0)


def test_client_misuse_raises_transaction_error() -> None:
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        layer.start_client("b", NOTIFY, reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        layer.start_client("i", b"INVITE sip:x SIP/2.0\r\n\r\n", reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        layer.start_client("g", b"garbage", reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        layer.receive_response("b", "NOTIFY", 99, now=0.0)
    assert list(layer.clients) == ["b"]


def test_client_unknown_3digit_status_is_final() -> None:
    """Status-Code is any 3DIGIT (§25.1); the peer cannot make the layer raise."""
    layer = TransactionLayer()
    layer.start_client("b", NOTIFY, reliable=True, now=0.0)
    assert layer.receive_response("b", "NOTIFY", 799, now=0.0) == ClientResult(None, True)


def test_server_keys_are_strings_that_keep_their_parts_apart() -> None:
    """§17.2.3's (branch, sent-by, method) as one string; a branch may hold spaces (RFC 2543)."""
    key = server_key("call-1|1|tag|SIP/2.0/UDP h:5060", "h:5060", "PUBLISH")
    assert isinstance(key, str)
    assert key_method(key) == "PUBLISH"
    assert with_method(key, "CANCEL") == server_key("call-1|1|tag|SIP/2.0/UDP h:5060", "h:5060",
                                                   "CANCEL")
    assert len({server_key("b", "h:5060", "SUBSCRIBE"), server_key("b", "h:5061", "SUBSCRIBE"),
                server_key("b", "h:5060", "PUBLISH"), server_key("c", "h:5060", "SUBSCRIBE")}) == 4


# --- server transactions (§17.2.2) ---------------------------------------------------------------


def test_server_absorbs_retransmissions_until_the_tu_answers() -> None:
    layer = TransactionLayer()
    assert layer.receive_request(KEY, reliable=False, now=0.0) is NEW
    assert layer.receive_request(KEY, reliable=False, now=0.5) is ABSORBED
    assert layer.receive_request(KEY, reliable=False, now=1.5) is ABSORBED
    assert len(layer.servers) == 1


def test_server_resends_the_last_response() -> None:
    """§17.2.2: retransmissions get the last provisional, then the final response."""
    layer = TransactionLayer()
    layer.receive_request(KEY, reliable=False, now=0.0)
    layer.send_response(KEY, 100, b"SIP/2.0 100 Trying\r\n\r\n", now=0.1)
    assert layer.receive_request(KEY, False, 0.5) == ServerReceive(
        "resend", b"SIP/2.0 100 Trying\r\n\r\n"
    )
    layer.send_response(KEY, 183, b"183", now=0.6)
    assert layer.receive_request(KEY, False, 0.7) == ServerReceive("resend", b"183")
    layer.send_response(KEY, 200, b"200", now=1.0)
    assert layer.servers == {} and layer.completed == {KEY: b"200"}
    assert layer.has_server(KEY) and layer.server_count == 1
    with pytest.raises(TransactionError):  # §17.2.2: no second final response
        layer.send_response(KEY, 500, b"500", now=1.2)
    assert layer.receive_request(KEY, False, 1.5) == ServerReceive("resend", b"200")
    assert layer.receive_request(KEY, False, 2.5) == ServerReceive("resend", b"200")


def test_server_timer_j_removes_the_transaction_after_64_t1() -> None:
    layer = TransactionLayer()
    layer.receive_request(KEY, reliable=False, now=0.0)
    layer.send_response(KEY, 202, b"202", now=5.0)
    assert layer.get_timer() == 37.0
    assert layer.handle_timer(36.999) == []
    assert layer.receive_request(KEY, False, 36.999).data == b"202"
    assert layer.handle_timer(37.0) == []  # expiry emits nothing
    assert layer.servers == {} and layer.completed == {} and not layer.has_server(KEY)
    assert layer.get_timer() is None
    # a request arriving afterwards is a new transaction
    assert layer.receive_request(KEY, reliable=False, now=40.0) is NEW


def test_server_reliable_final_response_terminates_at_once() -> None:
    """§17.2.2: Timer J is zero for reliable transports."""
    layer = TransactionLayer()
    layer.receive_request(KEY, reliable=True, now=0.0)
    layer.send_response(KEY, 100, b"100", now=0.0)
    assert layer.receive_request(KEY, True, 0.1) == ServerReceive("resend", b"100")
    layer.send_response(KEY, 200, b"200", now=0.2)
    assert layer.servers == {} and layer.completed == {}
    assert layer.get_timer() is None


def test_server_unanswered_request_is_dropped_by_the_guard() -> None:
    layer = TransactionLayer()
    layer.receive_request(KEY, reliable=False, now=1.0)
    layer.send_response(KEY, 100, b"100", now=1.0)
    assert layer.get_timer() == 33.0
    assert layer.handle_timer(33.0) == [ServerTimeout(KEY)]
    assert layer.servers == {}
    with pytest.raises(TransactionError):
        layer.send_response(KEY, 200, b"200", now=34.0)


def test_server_guard_is_injectable() -> None:
    layer = TransactionLayer(server_guard=3.0)
    layer.receive_request(KEY, reliable=True, now=0.0)
    assert layer.get_timer() == 3.0


def test_server_misuse_raises_transaction_error() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError):
        layer.send_response(KEY, 200, b"200", now=0.0)  # no such transaction
    with pytest.raises(TransactionError):
        layer.receive_request(server_key("z9hG4bKx", "h:5060", "INVITE"), False, 0.0)
    with pytest.raises(TransactionError):
        layer.receive_request(server_key("z9hG4bKx", "h:5060", "ACK"), False, 0.0)
    layer.receive_request(KEY, reliable=False, now=0.0)
    with pytest.raises(TransactionError):
        layer.send_response(KEY, 700, b"700", now=0.0)
    layer.send_response(KEY, 200, b"200", now=0.0)
    # §17.2.2: a second final response is discarded; we make the endpoint's bug loud
    with pytest.raises(TransactionError):
        layer.send_response(KEY, 500, b"500", now=0.1)
    with pytest.raises(TransactionError):
        layer.send_response(KEY, 180, b"180", now=0.1)
    assert layer.receive_request(KEY, False, 0.2) == ServerReceive("resend", b"200")


def test_server_keys_differ_by_method_and_sent_by() -> None:
    """§17.2.3: branch, sent-by and method together identify the transaction."""
    layer = TransactionLayer()
    assert layer.receive_request(KEY, False, 0.0) is NEW
    assert layer.receive_request(with_method(KEY, "CANCEL"), False, 0.0) is NEW
    assert layer.receive_request(server_key("z9hG4bKabc", "192.0.2.9:5060", "SUBSCRIBE"), False,
                                 0.0) is NEW
    assert len(layer.servers) == 3


# --- the tables ----------------------------------------------------------------------------------


def test_state_and_input_lists_match_their_types() -> None:
    assert set(STATES) == set(get_args(State))
    assert set(CLIENT_INPUTS) == set(get_args(ClientInput))
    assert set(SERVER_INPUTS) == set(get_args(ServerInput))


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", CLIENT_INPUTS)
def test_client_table_is_complete(state: State, event: ClientInput) -> None:
    """Every (state, input) pair of figure 6 is either a transition or a TransactionError."""
    if (state, event) in CLIENT_TABLE:
        actions, next_state = client_transition(state, event)
        assert next_state in STATES
        assert set(actions) <= set(get_args(ClientAction))
    else:
        with pytest.raises(TransactionError):
            client_transition(state, event)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", SERVER_INPUTS)
def test_server_table_is_complete(state: State, event: ServerInput) -> None:
    """Every (state, input) pair of figure 8 is either a transition or a TransactionError."""
    if (state, event) in SERVER_TABLE:
        actions, next_state = server_transition(state, event)
        assert next_state in STATES
        assert set(actions) <= set(get_args(ServerAction))
    else:
        with pytest.raises(TransactionError):
            server_transition(state, event)


def test_tables_follow_figures_6_and_8() -> None:
    assert not any(s == "terminated" for s, _ in CLIENT_TABLE)
    assert not any(s == "terminated" for s, _ in SERVER_TABLE)
    # responses and request retransmissions come from the peer: valid in every live state
    for state in ("trying", "proceeding", "completed"):
        assert (state, "provisional") in CLIENT_TABLE
        assert (state, "final") in CLIENT_TABLE
        assert (state, "request") in SERVER_TABLE
    assert ("completed", "timer_e") not in CLIENT_TABLE
    assert ("completed", "send_final") not in SERVER_TABLE


# --- memory -------------------------------------------------------------------------------------


def test_cancelled_timers_do_not_accumulate_in_the_heap() -> None:
    """Final responses cancel E and F; the stale entries must not pile up."""
    layer = TransactionLayer()
    now = 0.0
    for round_ in range(50):
        for i in range(400):
            branch = f"b{round_}.{i}"
            layer.start_client(branch, NOTIFY, reliable=False, now=now)
            layer.receive_response(branch, "NOTIFY", 200, now=now)
            key = server_key(branch, "h:5060", "PUBLISH")
            layer.receive_request(key, reliable=True, now=now)
            layer.send_response(key, 200, b"200", now=now)
        live = layer.client_count  # each holds exactly one live timer (K)
        assert layer.timer_entries <= 2 * live + 70
        assert_heap_accounting(layer)
        now += 1.0
        layer.handle_timer(now)
    run_timers(layer, until=now + 100)
    assert layer.client_count == 0 and layer.server_count == 0
    assert layer.timer_entries == 0


def test_compaction_while_timers_fire_keeps_the_heap_consistent() -> None:
    """Timer F cancelling Timer E inside handle_timer can trigger a compaction mid-loop."""
    layer = TransactionLayer()
    for i in range(400):
        layer.start_client(f"b{i}", NOTIFY, reliable=False, now=0.0)
    run_timers(layer, until=31.9)
    assert_heap_accounting(layer)
    events = layer.handle_timer(32.0)
    assert len(events) == 400
    assert all(isinstance(e, ClientTimeout) for e in events)
    assert layer.clients == {}
    assert_heap_accounting(layer)
    assert layer.get_timer() is None
    assert layer.timer_entries == 0


def test_timers_j_and_k_interleave_with_the_heap_in_deadline_order() -> None:
    """J and K are FIFO queues beside the heap: get_timer() is the earliest of all three."""
    layer = TransactionLayer()
    layer.receive_request(KEY, reliable=False, now=0.0)
    layer.send_response(KEY, 200, b"200", now=0.0)  # Timer J at 32
    layer.start_client("b", NOTIFY, reliable=False, now=1.0)
    layer.receive_response("b", "NOTIFY", 200, now=2.0)  # Timer K at 7
    layer.start_client("c", NOTIFY, reliable=False, now=3.0)  # Timer E at 3.5, F at 35
    assert [t for t, _ in run_timers(layer, until=3.5)] == [3.5]  # E fired once
    assert layer.get_timer() == pytest.approx(4.5)
    run_timers(layer, until=6.9)
    assert layer.completed_clients == {"b": "NOTIFY"}
    run_timers(layer, until=7.0)
    assert layer.completed_clients == {}
    run_timers(layer, until=31.9)
    assert layer.completed == {KEY: b"200"}
    run_timers(layer, until=32.0)
    assert layer.completed == {}
    assert [(t, type(e)) for t, e in run_timers(layer, until=35.0)][-2:] == [
        (34.5, Retransmit), (35.0, ClientTimeout)]  # every T2, then Timer F
    assert layer.get_timer() is None and layer.timer_entries == 0


# --- random interleavings ------------------------------------------------------------------------

BRANCHES = ("b1", "b2", "b3")
KEYS = tuple(server_key(b, "h:5060", m) for b in BRANCHES for m in ("SUBSCRIBE", "PUBLISH"))
STATUSES = st.sampled_from([100, 180, 200, 202, 404, 481, 500])

ops = st.one_of(
    st.tuples(st.just("start"), st.sampled_from(BRANCHES), st.booleans()),
    st.tuples(st.just("response"), st.sampled_from(BRANCHES), STATUSES),
    st.tuples(st.just("request"), st.sampled_from(KEYS), st.booleans()),
    st.tuples(st.just("respond"), st.sampled_from(KEYS), STATUSES),
    st.tuples(st.just("tick"), st.floats(0, 40, allow_nan=False), st.none()),
    st.tuples(st.just("next_timer"), st.none(), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=60), st.floats(0.05, 1.0), st.booleans())
def test_random_interleavings_only_raise_transaction_error_and_drain(
    steps: list[tuple[str, object, object]], t1: float, short_guard: bool
) -> None:
    layer = TransactionLayer(t1=t1, t2=max(t1, 4 * t1), server_guard=1.0 if short_guard else None)
    now = 0.0
    sent: dict[object, bytes] = {}  # model: the last response recorded per server key
    contexts: dict[str, object] = {}

    def check_events(events: list[TxnEvent]) -> None:
        for event in events:
            if isinstance(event, ClientTimeout):
                assert event.context == contexts[event.branch]
                assert event.branch not in layer.clients
            elif isinstance(event, ServerTimeout):
                assert event.key not in layer.servers

    for op, a, b in steps:
        if op == "start":
            assert isinstance(a, str) and isinstance(b, bool)
            try:
                layer.start_client(a, NOTIFY, b, now, context=(a, now))
            except TransactionError:
                assert a in layer.clients or a in layer.completed_clients  # a duplicate
            else:
                contexts[a] = (a, now)
        elif op == "response":
            assert isinstance(a, str) and isinstance(b, int)
            result = layer.receive_response(a, "NOTIFY", b, now)  # the peer: never raises
            if result is not None:
                assert result.context == contexts[a]
                assert result.final == (b >= 200)
        elif op == "request":
            assert isinstance(a, str) and isinstance(b, bool)
            received = layer.receive_request(a, b, now)  # the peer: never raises
            if received is NEW:
                sent.pop(a, None)
            elif received is ABSORBED:
                assert a not in sent
            else:
                assert received.data == sent[a]
        elif op == "respond":
            assert isinstance(a, str) and isinstance(b, int)
            data = f"{b} at {now}".encode()
            try:
                layer.send_response(a, b, data, now)
            except TransactionError:
                assert a not in layer.servers  # gone, never created, or Completed
            else:
                sent[a] = data
        elif op == "tick":
            assert isinstance(a, float)
            now += a
            check_events(layer.handle_timer(now))
        else:
            deadline = layer.get_timer()
            if deadline is not None:
                now = max(now, deadline)
                check_events(layer.handle_timer(now))
        assert layer.timer_entries <= 3 * (layer.client_count + layer.server_count) + 70
        assert_heap_accounting(layer)

    # every transaction holds a timer, so firing them all leaves nothing behind
    for _ in range(10_000):
        deadline = layer.get_timer()
        if deadline is None:
            break
        now = max(now, deadline)
        check_events(layer.handle_timer(now))
    assert layer.client_count == 0
    assert layer.server_count == 0
    assert layer.timer_entries == 0
