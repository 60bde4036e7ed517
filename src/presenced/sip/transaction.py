"""Non-INVITE SIP transactions (RFC 3261 §17.1.2, §17.2.2) as explicit state tables.

Theory of operation
-------------------
This layer never parses SIP. The endpoint extracts the matching keys (RFC 3261 §17.1.3, §17.2.3)
and hands over the encoded bytes; the layer remembers what must be retransmitted and when, and
tells the endpoint what to do with each message it sees. Time is an input (`now`, seconds) and
every timer is a deadline in one heap: the driver asks `get_timer()` for the earliest one and calls
`handle_timer(now)` when it is due, which returns `Retransmit` / `ClientTimeout` events.

Each transaction kind has one table, `(state, input) -> (actions, next_state)`, transcribed from
figure 6 (client) and figure 8 (server). A pair missing from a table is a `TransactionError`: the
endpoint fed an input that cannot happen in that state (our bug, never the peer's). Inputs caused
by the peer (a retransmitted request or response) are all in the tables, so the peer can never
trigger that error. "Terminated" has no row: reaching it deletes the transaction.

Client (we sent a request): Timer E retransmits over unreliable transports, first after T1 and
then doubling up to T2; once a provisional arrived it retransmits every T2. Timer F (64*T1) gives
up. A final response moves to Completed, where Timer K (T4; zero when reliable) absorbs
retransmitted responses before the transaction goes away.

Server (we received a request): retransmissions are absorbed until the TU answers, then answered
with the last response sent. A final response moves to Completed, where Timer J (64*T1; zero when
reliable) keeps answering retransmissions. RFC 3261 gives a server transaction no timer before
the TU answers; we add a guard (default 64*T1, when the client's Timer F has surely fired) so a
request the TU never answers cannot hold memory forever. It emits `ServerTimeout`.

Cancelled timers stay in the heap and are skipped when popped (each transaction remembers the
sequence number of its live heap entry per timer); the heap is rebuilt when stale entries
outnumber live ones, so memory stays proportional to live transactions.

Completed transactions are not objects. A UDP server transaction spends almost all of its life
in Completed (Timer J is 32 s, the TU answers in milliseconds), so at thousands of requests a
second the Completed ones are nearly all the transactions alive. All one of them needs is the
final response to resend, so Completed is an entry `key -> response bytes` in `completed`, and a
client's is `branch -> method` in `completed_clients`: no object the cyclic garbage collector
has to walk (docs/performance.md, "The cyclic garbage collector"), and the key is a string,
which the collector never tracks. Timers J and K have one
fixed duration each, so with `now` never going backwards their deadlines come in the order they
were armed: each is a FIFO queue, not heap entries.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, TypeVar

# What the transaction user hands in with a client transaction and gets back with its result:
# opaque here. An alias, not `object` on the dataclass fields, so that mypyc compiles them.
Context: TypeAlias = object

__all__ = [
    "ABSORBED",
    "CLIENT_TABLE",
    "NEW",
    "SERVER_TABLE",
    "ClientResult",
    "ClientTimeout",
    "ClientTransaction",
    "Retransmit",
    "ServerReceive",
    "ServerTimeout",
    "ServerTransaction",
    "ServerTransactionKey",
    "TransactionError",
    "TransactionLayer",
    "TxnEvent",
    "client_transition",
    "key_method",
    "server_key",
    "server_transition",
    "with_method",
]

T1: Final = 0.5  # RFC 3261 Appendix A: RTT estimate
T2: Final = 4.0  # maximum retransmit interval for non-INVITE requests
T4: Final = 5.0  # maximum duration a message remains in the network

# "METHOD sent-by branch": see server_key().
ServerTransactionKey = str


def server_key(branch: str, sent_by: str, method: str) -> ServerTransactionKey:
    """The key that matches a request to its server transaction (§17.2.3): top Via branch,
    sent-by ("host:port") and method, as one string rather than a tuple. A Completed
    transaction's key is kept for Timer J's 32 s; a tuple stays tracked by the cyclic garbage
    collector until a collection has walked it once, a string is never tracked. The method and
    the sent-by hold no space; the branch, last, may (RFC 2543 peers, see the endpoint)."""
    return f"{method} {sent_by} {branch}"


def key_method(key: ServerTransactionKey) -> str:
    return key[: key.find(" ")]


def with_method(key: ServerTransactionKey, method: str) -> ServerTransactionKey:
    """The key of the same branch and sent-by for another method (what a CANCEL targets, §9.1)."""
    return method + key[key.find(" ") :]


class TransactionError(Exception):
    """The endpoint used the transaction layer wrongly (a bug on our side, never the peer's)."""


# --- state tables -------------------------------------------------------------------------------

State = Literal["trying", "proceeding", "completed", "terminated"]
ClientInput = Literal["provisional", "final", "timer_e", "timer_f", "timer_k"]
ServerInput = Literal["request", "send_provisional", "send_final", "timer_j", "guard"]
ClientAction = Literal[
    "pass_up",  # hand the response to the TU (receive_response returns a ClientResult)
    "retransmit",  # emit Retransmit and re-arm Timer E with the doubled interval (capped at T2)
    "retransmit_t2",  # emit Retransmit and re-arm Timer E with T2 (§17.1.2.2, Proceeding)
    "stop_timers",  # cancel Timers E and F
    "start_k",  # arm Timer K (T4, or zero when reliable)
    "timeout",  # emit ClientTimeout
]
ServerAction = Literal[
    "absorb",  # drop the retransmitted request
    "resend",  # resend the last response
    "store",  # remember the response for later resends
    "stop_guard",  # cancel the guard timer
    "start_j",  # arm Timer J (64*T1, or zero when reliable)
    "abandon",  # emit ServerTimeout
]

STATES: Final[tuple[State, ...]] = ("trying", "proceeding", "completed", "terminated")
CLIENT_INPUTS: Final[tuple[ClientInput, ...]] = (
    "provisional",
    "final",
    "timer_e",
    "timer_f",
    "timer_k",
)
SERVER_INPUTS: Final[tuple[ServerInput, ...]] = (
    "request",
    "send_provisional",
    "send_final",
    "timer_j",
    "guard",
)

_TO_COMPLETED: Final[tuple[ClientAction, ...]] = ("pass_up", "stop_timers", "start_k")

# RFC 3261 figure 6.
CLIENT_TABLE: Final[dict[tuple[State, ClientInput], tuple[tuple[ClientAction, ...], State]]] = {
    ("trying", "provisional"): (("pass_up",), "proceeding"),
    ("trying", "final"): (_TO_COMPLETED, "completed"),
    ("trying", "timer_e"): (("retransmit",), "trying"),
    ("trying", "timer_f"): (("timeout",), "terminated"),
    ("proceeding", "provisional"): (("pass_up",), "proceeding"),
    ("proceeding", "final"): (_TO_COMPLETED, "completed"),
    ("proceeding", "timer_e"): (("retransmit_t2",), "proceeding"),
    ("proceeding", "timer_f"): (("timeout",), "terminated"),
    # §17.1.2.2: "any retransmissions of the final response ... are absorbed"; a late
    # provisional is equally meaningless here.
    ("completed", "provisional"): ((), "completed"),
    ("completed", "final"): ((), "completed"),
    ("completed", "timer_k"): ((), "terminated"),
}

# RFC 3261 figure 8, plus the guard timer (see the module docstring). There is deliberately no
# ("completed", "send_*") row: §17.2.2 says the transaction discards such responses, and since the
# endpoint transmits them itself, raising is the only way to stop a second final response.
SERVER_TABLE: Final[dict[tuple[State, ServerInput], tuple[tuple[ServerAction, ...], State]]] = {
    ("trying", "request"): (("absorb",), "trying"),
    ("trying", "send_provisional"): (("store",), "proceeding"),
    ("trying", "send_final"): (("store", "stop_guard", "start_j"), "completed"),
    ("trying", "guard"): (("abandon",), "terminated"),
    ("proceeding", "request"): (("resend",), "proceeding"),
    ("proceeding", "send_provisional"): (("store",), "proceeding"),
    ("proceeding", "send_final"): (("store", "stop_guard", "start_j"), "completed"),
    ("proceeding", "guard"): (("abandon",), "terminated"),
    ("completed", "request"): (("resend",), "completed"),
    ("completed", "timer_j"): ((), "terminated"),
}


def client_transition(state: State, event: ClientInput) -> tuple[tuple[ClientAction, ...], State]:
    """Look up figure 6; a pair that cannot happen raises `TransactionError`."""
    try:
        return CLIENT_TABLE[state, event]
    except KeyError:
        raise TransactionError(f"client transaction: {event!r} in state {state!r}") from None


def server_transition(state: State, event: ServerInput) -> tuple[tuple[ServerAction, ...], State]:
    """Look up figure 8 (plus guard); a pair that cannot happen raises `TransactionError`."""
    try:
        return SERVER_TABLE[state, event]
    except KeyError:
        raise TransactionError(f"server transaction: {event!r} in state {state!r}") from None


# --- results and events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerReceive:
    """What to do with a received request: pass it up, drop it, or resend `data`."""

    action: Literal["new", "absorbed", "resend"]
    data: bytes = b""


NEW: Final = ServerReceive("new")  # a new transaction exists: pass the request to the TU
ABSORBED: Final = ServerReceive("absorbed")  # retransmission before any response: drop it


# Records made for every message write their __init__ out (init=False): mypyc compiles it,
# where the one @dataclass generates stays interpreted: 0.25-0.77 us a call against 0.1-0.17
# (docs/performance.md, "Sixth pass"). Frozen ones set fields as @dataclass does.
@dataclass(frozen=True, slots=True, init=False)
class ClientResult:
    """A response matched a client transaction: hand it to the TU with this context."""

    context: Context
    final: bool

    def __init__(self, context: Context, final: bool) -> None:
        object.__setattr__(self, "context", context)
        object.__setattr__(self, "final", final)


@dataclass(frozen=True, slots=True)
class Retransmit:
    """Timer E fired: send `data` again to wherever `context` says."""

    data: bytes
    context: Context


@dataclass(frozen=True, slots=True)
class ClientTimeout:
    """Timer F fired: the request got no final response (the TU acts as if it got a 408)."""

    branch: str
    context: Context


@dataclass(frozen=True, slots=True)
class ServerTimeout:
    """The TU never answered this request within the guard time; the transaction is gone."""

    key: ServerTransactionKey


TxnEvent = Retransmit | ClientTimeout | ServerTimeout

# --- transactions -------------------------------------------------------------------------------

# Heap entry kinds. An entry (deadline, seq, txn, kind) is live while the transaction's slot for
# that timer still holds `seq`; cancelling a timer or removing a transaction zeroes the slot.
_E: Final = 0
_F: Final = 1
_GUARD: Final = 2


class _Timed:
    """Slots for the live heap entries of a transaction's timers (0: none armed)."""

    __slots__ = ("e_seq", "end_seq")

    def __init__(self) -> None:
        self.e_seq = 0  # Timer E (clients only)
        self.end_seq = 0  # Timer F (client) or the guard (server)


class ClientTransaction(_Timed):
    """One non-INVITE client transaction until its final response; owned by
    `TransactionLayer.clients` (Completed ones are `TransactionLayer.completed_clients` entries)."""

    __slots__ = ("branch", "context", "data", "interval", "method", "reliable", "state")

    def __init__(
        self, branch: str, method: str, data: bytes, reliable: bool, context: object
    ) -> None:
        super().__init__()
        self.branch = branch
        self.method = method
        self.data = data
        self.reliable = reliable
        self.context = context
        self.state: State = "trying"
        self.interval = 0.0  # Timer E's current interval


class ServerTransaction(_Timed):
    """One non-INVITE server transaction until its final response; owned by
    `TransactionLayer.servers` (Completed ones are `TransactionLayer.completed` entries)."""

    __slots__ = ("key", "last", "reliable", "resend", "state")

    def __init__(self, key: ServerTransactionKey, reliable: bool) -> None:
        super().__init__()
        self.key = key
        self.reliable = reliable
        self.state: State = "trying"
        self.last = b""  # last response sent
        self.resend: ServerReceive | None = None  # cached RESEND result for `last`


_HeapEntry = tuple[float, int, _Timed, int]

_COMPACT_MIN: Final = 64  # don't bother compacting tiny heaps


class TransactionLayer:
    """All non-INVITE transactions of one endpoint, and their timers in one heap."""

    def __init__(
        self,
        t1: float = T1,
        t2: float = T2,
        t4: float = T4,
        server_guard: float | None = None,
    ) -> None:
        if not 0 < t1 <= t2:
            raise ValueError("need 0 < t1 <= t2")
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.timer_f = 64 * t1  # also Timer J (§17.2.2)
        self.server_guard = 64 * t1 if server_guard is None else server_guard
        self.clients: dict[str, ClientTransaction] = {}  # Trying, Proceeding
        self.completed_clients: dict[str, str] = {}  # Completed: branch -> method (Timer K)
        self.servers: dict[ServerTransactionKey, ServerTransaction] = {}  # Trying, Proceeding
        self.completed: dict[ServerTransactionKey, bytes] = {}  # Completed: final response (J)
        # Timers J and K: deadlines and keys side by side, so that arming one allocates nothing
        # the collector tracks (a (deadline, key) tuple would be one more per transaction).
        self._j_at: deque[float] = deque()
        self._j_keys: deque[ServerTransactionKey] = deque()
        self._k_at: deque[float] = deque()
        self._k_branches: deque[str] = deque()
        self._heap: list[_HeapEntry] = []
        self._seq = 0
        self._stale = 0  # heap entries whose timer was cancelled

    # --- server side (§17.2.2) ------------------------------------------------------------------

    def receive_request(
        self, key: ServerTransactionKey, reliable: bool, now: float
    ) -> ServerReceive:
        """Match a received non-INVITE request (§17.2.3) and say what to do with it."""
        txn = self.servers.get(key)
        if txn is None:
            last = self.completed.get(key)
            if last is not None:  # ("completed", "request") -> resend
                return ServerReceive("resend", last)
            method = key_method(key)
            if method == "INVITE" or method == "ACK":
                raise TransactionError(f"{method} is not a non-INVITE transaction")
            txn = ServerTransaction(key, reliable)
            self.servers[key] = txn
            txn.end_seq = self._push(now + self.server_guard, txn, _GUARD)
            return NEW
        actions, txn.state = server_transition(txn.state, "request")
        if actions[0] == "absorb":
            return ABSORBED
        resend = txn.resend
        if resend is None:  # build once per response, however many retransmissions arrive
            resend = txn.resend = ServerReceive("resend", txn.last)
        return resend

    def send_response(
        self, key: ServerTransactionKey, status: int, data: bytes, now: float
    ) -> None:
        """Record the response the endpoint is about to transmit for this transaction.

        Raises `TransactionError` when there is no such transaction (never created, or already
        gone after Timer J or the guard) or it already sent a final response: the endpoint must
        then not transmit (§17.2.2 discards further final responses).
        """
        txn = self.servers.get(key)
        if txn is None:  # never created, gone, or Completed (§17.2.2: no second final)
            raise TransactionError(f"no server transaction {key!r}")
        if not 100 <= status <= 699:
            raise TransactionError(f"bad status {status}")
        event: ServerInput = "send_provisional" if status < 200 else "send_final"
        actions, state = server_transition(txn.state, event)
        for action in actions:
            if action == "store":
                txn.last = data
                txn.resend = None
            elif action == "stop_guard":
                self._cancel_end(txn)
            elif action == "start_j":  # the object ends here: Completed is an entry, if anything
                del self.servers[key]
                if not txn.reliable:  # else Timer J is zero: terminate now (§17.2.2)
                    self.completed[key] = data
                    self._j_at.append(now + self.timer_f)
                    self._j_keys.append(key)
                return
            else:  # pragma: no cover - the table has no other actions for these inputs
                raise TransactionError(f"unexpected action {action!r}")
        txn.state = state

    # --- client side (§17.1.2) ------------------------------------------------------------------

    def start_client(
        self, branch: str, data: bytes, reliable: bool, now: float, context: object = None
    ) -> None:
        """Track a request the endpoint has just transmitted for the first time.

        `data` is the encoded request; its method (the first token of the request line, §7.1)
        is kept for response matching (§17.1.3). `context` comes back with every event.
        """
        if branch in self.clients or branch in self.completed_clients:
            raise TransactionError(f"client transaction {branch!r} exists")
        space = data.find(b" ")
        if space <= 0:
            raise TransactionError("data is not an encoded request")
        method = data[:space].decode("ascii", "replace")
        if method == "INVITE" or method == "ACK":
            raise TransactionError(f"{method} is not a non-INVITE transaction")
        txn = ClientTransaction(branch, method, data, reliable, context)
        self.clients[branch] = txn
        if not reliable:  # §17.1.2.2: Timer E only for unreliable transports
            txn.interval = self.t1
            txn.e_seq = self._push(now + self.t1, txn, _E)
        txn.end_seq = self._push(now + self.timer_f, txn, _F)

    def receive_response(
        self, branch: str, method: str, status: int, now: float
    ) -> ClientResult | None:
        """Match a response (§17.1.3: top Via branch and CSeq method).

        Returns None when it matches no transaction or is absorbed (Completed): drop it.
        """
        txn = self.clients.get(branch)
        if txn is None or txn.method != method:
            # No match, or Completed: ("completed", "final" | "provisional") absorbs it.
            return None
        # Any 3-digit code the parser let through counts: a 7xx-9xx is final, not our error.
        if not 100 <= status <= 999:
            raise TransactionError(f"bad status {status}")
        final = status >= 200
        actions, state = client_transition(txn.state, "final" if final else "provisional")
        txn.state = state
        result = None
        for action in actions:
            if action == "pass_up":
                result = ClientResult(txn.context, final)
            elif action == "stop_timers":
                self._cancel_e(txn)
                self._cancel_end(txn)
            elif action == "start_k":  # the object ends here: Completed is an entry, if anything
                del self.clients[branch]
                if not txn.reliable:  # else Timer K is zero: terminate now (§17.1.2.2)
                    self.completed_clients[branch] = method
                    self._k_at.append(now + self.t4)
                    self._k_branches.append(branch)
            else:  # pragma: no cover - the table has no other actions for responses
                raise TransactionError(f"unexpected action {action!r}")
        return result

    # --- timers ---------------------------------------------------------------------------------

    @property
    def timer_entries(self) -> int:
        """Timer entries, live and stale: stays proportional to the live transactions."""
        return len(self._heap) + len(self._j_at) + len(self._k_at)

    @property
    def server_count(self) -> int:
        """Server transactions alive, Completed included."""
        return len(self.servers) + len(self.completed)

    @property
    def client_count(self) -> int:
        """Client transactions alive, Completed included."""
        return len(self.clients) + len(self.completed_clients)

    def has_server(self, key: ServerTransactionKey) -> bool:
        return key in self.servers or key in self.completed

    def get_timer(self) -> float | None:
        """The earliest live deadline, or None when no timer is armed."""
        heap = self._heap
        earliest: float | None = None
        while heap:
            entry = heap[0]
            if _live(entry):
                earliest = entry[0]
                break
            heapq.heappop(heap)
            self._stale -= 1
        j_at, k_at = self._j_at, self._k_at
        if j_at and (earliest is None or j_at[0] < earliest):
            earliest = j_at[0]
        if k_at and (earliest is None or k_at[0] < earliest):
            earliest = k_at[0]
        return earliest

    def handle_timer(self, now: float) -> list[TxnEvent]:
        """Fire every timer due at `now`, in deadline order; return what the endpoint must do."""
        # Timers J and K end a Completed transaction, with nothing to do (figures 6 and 8).
        if self._j_at:
            _forget_due(self._j_at, self._j_keys, self.completed, now)
        if self._k_at:
            _forget_due(self._k_at, self._k_branches, self.completed_clients, now)
        heap = self._heap
        events: list[TxnEvent] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not _live(entry):
                self._stale -= 1
                continue
            txn = entry[2]
            if isinstance(txn, ClientTransaction):
                self._fire_client(txn, entry[3], now, events)
            else:
                assert isinstance(txn, ServerTransaction)
                self._fire_server(txn, events)
        return events

    def _fire_client(
        self, txn: ClientTransaction, kind: int, now: float, events: list[TxnEvent]
    ) -> None:
        event: ClientInput = "timer_e" if kind == _E else "timer_f"
        if kind == _E:
            txn.e_seq = 0
        else:
            txn.end_seq = 0
        actions, state = client_transition(txn.state, event)
        txn.state = state
        for action in actions:
            if action == "retransmit" or action == "retransmit_t2":
                events.append(Retransmit(txn.data, txn.context))
                # §17.1.2.2: reset from when it fired: MIN(2*E, T2) while Trying, T2 afterwards
                interval = self.t2
                if action == "retransmit":
                    interval = min(2 * txn.interval, interval)
                txn.interval = interval
                txn.e_seq = self._push(now + interval, txn, _E)
            elif action == "timeout":
                events.append(ClientTimeout(txn.branch, txn.context))
            else:  # pragma: no cover - the table has no other actions for timers
                raise TransactionError(f"unexpected action {action!r}")
        if state == "terminated":
            self._cancel_e(txn)
            del self.clients[txn.branch]

    def _fire_server(self, txn: ServerTransaction, events: list[TxnEvent]) -> None:
        txn.end_seq = 0  # the guard: a Completed transaction has no heap entry
        actions, state = server_transition(txn.state, "guard")
        txn.state = state
        if actions:  # ("abandon",)
            events.append(ServerTimeout(txn.key))
        if state == "terminated":
            del self.servers[txn.key]

    def _push(self, deadline: float, txn: ClientTransaction | ServerTransaction, kind: int) -> int:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, txn, kind))
        return self._seq

    def _cancel_e(self, txn: _Timed) -> None:
        if txn.e_seq:
            txn.e_seq = 0
            self._went_stale()

    def _cancel_end(self, txn: _Timed) -> None:
        if txn.end_seq:
            txn.end_seq = 0
            self._went_stale()

    def _went_stale(self) -> None:
        """Count one more dead heap entry; rebuild the heap once they are two thirds of it."""
        self._stale += 1
        # Two thirds, not half: every final response cancels a client's E and F (a server's
        # guard), and with Completed transactions out of the heap nothing live pads it; at one
        # half a 10,000-NOTIFY fan-out rebuilt it a dozen times (~1 µs per response). Each
        # rebuild now removes twice the entries it keeps, so its cost per cancel is constant.
        if self._stale > _COMPACT_MIN and 3 * self._stale > 2 * len(self._heap):
            # in place: handle_timer holds a reference to the list while timers cancel
            self._heap[:] = [e for e in self._heap
                             if (e[2].e_seq if e[3] == _E else e[2].end_seq) == e[1]]
            heapq.heapify(self._heap)
            self._stale = 0


_V = TypeVar("_V")


def _forget_due(at: deque[float], keys: deque[str], table: dict[str, _V], now: float) -> None:
    """Pop a FIFO timer queue's due entries and remove their keys from `table`."""
    while at and at[0] <= now:
        at.popleft()
        del table[keys.popleft()]


def _live(entry: _HeapEntry) -> bool:
    if entry[3] == _E:
        return entry[2].e_seq == entry[1]
    return entry[2].end_seq == entry[1]
