"""Per-source limits for the endpoint (sans-IO): a pike-like rate limiter and an
anti-amplification byte budget.

Theory of operation
-------------------
`SourceLimiter` keeps two token buckets per source IP: every request, and requests that create
state (an initial SUBSCRIBE, a REGISTER, an initial PUBLISH). A request that finds a bucket empty
blocks the source: that request gets ONE 503 with Retry-After, every later one is dropped without
an answer. The block lasts `block_time` seconds and is extended by every request that arrives
while the source is still over the rate, so a source unblocks only after `block_time` spent
below it (the behaviour of SER/Kamailio's pike module). Exempt sources are never counted.

`AmplificationGuard` applies QUIC's address validation (RFC 9000 §8.1) to UDP SIP: until an
address has shown it receives what we send, we send it at most `factor` times the bytes it sent
us. Credit is kept per IP (a response may go to the Via port rather than the source port, RFC
3261 §18.2.2, always at the source IP); proof is per (IP, port) and comes from a response that
matches one of our client transactions: it carries our random branch, so whoever sent it read
our request. Stream transports are proven by their handshake and never enter the guard.

Both tables are bounded LRU maps (OrderedDict): one flood of forged source addresses evicts the
oldest entries instead of growing memory; every operation is O(1).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["allow", "refuse", "drop"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """IPs or CIDRs ("10.0.0.0/8", "::1") as networks; raises ValueError for anything else."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)


def in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


@dataclass(frozen=True, slots=True)
class RateLimits:
    requests_per_second: float = 100.0
    request_burst: float = 200.0
    dialogs_per_second: float = 10.0
    dialog_burst: float = 50.0
    block_time: float = 10.0
    max_sources: int = 100_000
    exempt: tuple[Network, ...] = ()


class _Source:
    __slots__ = ("blocked_until", "dialogs", "exempt", "last", "requests")

    def __init__(self, limits: RateLimits, now: float, exempt: bool) -> None:
        self.requests = limits.request_burst
        self.dialogs = limits.dialog_burst
        self.last = now
        self.blocked_until = 0.0
        self.exempt = exempt


class SourceLimiter:
    """Token buckets per source IP; `check()` says whether to serve, refuse (503) or drop."""

    def __init__(self, limits: RateLimits | None = None) -> None:
        self.limits = limits or RateLimits()
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self.refused = 0  # 503s sent (one per block)
        self.dropped = 0  # requests dropped while blocked
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sources)

    def blocked(self, host: str, now: float) -> bool:
        src = self._sources.get(host)
        return src is not None and src.blocked_until > now

    def check(self, host: str, dialog: bool, now: float) -> Verdict:
        limits = self.limits
        sources = self._sources
        src = sources.get(host)
        if src is None:
            src = _Source(limits, now, in_networks(host, limits.exempt))
            sources[host] = src
            if len(sources) > limits.max_sources:
                sources.popitem(last=False)  # the least recently seen source
                self.evicted += 1
        else:
            sources.move_to_end(host)
        if src.exempt:
            return "allow"
        elapsed = now - src.last
        if elapsed > 0:
            src.last = now
            src.requests = min(limits.request_burst, src.requests + elapsed * limits.requests_per_second)
            src.dialogs = min(limits.dialog_burst, src.dialogs + elapsed * limits.dialogs_per_second)
        over = src.requests < 1.0 or (dialog and src.dialogs < 1.0)
        if not over:
            src.requests -= 1.0
            if dialog:
                src.dialogs -= 1.0
        if src.blocked_until > now:
            if over:  # still above the rate: the block runs on from now
                src.blocked_until = now + limits.block_time
            self.dropped += 1
            return "drop"
        if over:
            src.blocked_until = now + limits.block_time
            self.refused += 1
            return "refuse"
        return "allow"


@dataclass(frozen=True, slots=True)
class AmplificationLimits:
    factor: int = 10  # bytes sent <= factor x bytes received, until proven (RFC 9000 §8.1)
    credit_ttl: float = 64.0  # unproven credit is forgotten this long after the last datagram
    proven_ttl: float = 3600.0  # proof lasts this long after the last response that gave it
    max_addresses: int = 100_000


class _Credit:
    __slots__ = ("last", "received", "sent")

    def __init__(self, now: float) -> None:
        self.received = 0
        self.sent = 0
        self.last = now


class AmplificationGuard:
    """Bytes we may send to unproven UDP addresses (sans-IO, O(1) per datagram)."""

    def __init__(self, limits: AmplificationLimits | None = None) -> None:
        self.limits = limits or AmplificationLimits()
        self._credit: OrderedDict[str, _Credit] = OrderedDict()
        self._proven: OrderedDict[tuple[str, int], float] = OrderedDict()  # -> proven until
        self.dropped = 0
        self.dropped_bytes = 0

    def received(self, host: str, nbytes: int, now: float) -> None:
        credit = self._credit.get(host)
        if credit is None or now - credit.last > self.limits.credit_ttl:
            credit = _Credit(now)
            self._credit[host] = credit
            if len(self._credit) > self.limits.max_addresses:
                self._credit.popitem(last=False)
        self._credit.move_to_end(host)
        credit.received += nbytes
        credit.last = now

    def prove(self, host: str, port: int, now: float) -> None:
        key = (host, port)
        self._proven[key] = now + self.limits.proven_ttl
        self._proven.move_to_end(key)
        if len(self._proven) > self.limits.max_addresses:
            self._proven.popitem(last=False)

    def is_proven(self, host: str, port: int, now: float) -> bool:
        until = self._proven.get((host, port))
        if until is None:
            return False
        if until <= now:
            del self._proven[(host, port)]
            return False
        return True

    def allow(self, host: str, port: int, nbytes: int, now: float) -> bool:
        """May `nbytes` go to (host, port) now? Debits the budget when they may."""
        if self.is_proven(host, port, now):
            return True
        credit = self._credit.get(host)
        if (
            credit is not None
            and now - credit.last <= self.limits.credit_ttl
            and credit.sent + nbytes <= credit.received * self.limits.factor
        ):
            credit.sent += nbytes
            return True
        self.dropped += 1
        self.dropped_bytes += nbytes
        return False
