"""Requests inside a dialog (RFC 3261 §12.2.1.1): the Request-URI, the Route headers and the next
hop, from the dialog's route set and remote target (sans-IO).

The route set is the Record-Route of the request that made the dialog, in the order requests
use it. A first route with `lr` is a loose router: the Request-URI is the remote target and
every route goes in Route headers. Without `lr` it is a strict router: it goes in the
Request-URI, the remaining routes and then the remote target go in Route headers.

`hop_of` turns the next hop's URI into an address the way RFC 3263 would, without DNS: an IP
literal with its port (5060, 5061 for sips) and transport parameter. A host name gives the
flow the dialog came on, since we resolve nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from presenced.sip.endpoint import Peer
from presenced.sip.errors import ParseError
from presenced.sip.headers import parse_name_addr
from presenced.sip.uri import parse_uri


# Records made for every message write their __init__ out (init=False): mypyc compiles it,
# where the one @dataclass generates stays interpreted: 0.25-0.77 us a call against 0.1-0.17
# (docs/performance.md, "Sixth pass"). Frozen ones set fields as @dataclass does.
@dataclass(frozen=True, slots=True, init=False)
class InDialogRoute:
    request_uri: str
    routes: tuple[str, ...]  # Route header values, in order
    next_hop: str  # the URI the request is sent toward: the first route, or the remote target

    def __init__(self, request_uri: str, routes: tuple[str, ...], next_hop: str) -> None:
        object.__setattr__(self, "request_uri", request_uri)
        object.__setattr__(self, "routes", routes)
        object.__setattr__(self, "next_hop", next_hop)


def in_dialog_route(route_set: Sequence[str], remote_target: str) -> InDialogRoute:
    """Where an in-dialog request goes (RFC 3261 §12.2.1.1). Raises ParseError for a route
    that is no name-addr."""
    if not route_set:
        return InDialogRoute(remote_target, (), remote_target)
    first = parse_name_addr(route_set[0]).uri
    hop = str(first)
    if "lr" in first.params:
        return InDialogRoute(remote_target, tuple(route_set), hop)
    return InDialogRoute(hop, (*route_set[1:], f"<{remote_target}>"), hop)


def hop_of(uri_text: str, flow: Peer) -> Peer:
    """The address a URI names (RFC 3263 without DNS: an IP literal, port 5060 by default, the
    transport parameter or the flow's); `flow` itself when it names the same address (its TCP
    connection is reused), or when it names no IP address (no DNS lookups here)."""
    try:
        uri = parse_uri(uri_text)
    except ParseError:
        return flow
    host = uri.host.strip("[]")
    if not host or not _is_ip(host):
        return flow
    transport = (uri.params.get("transport") or flow.transport).lower()
    if uri.scheme == "sips":
        # RFC 5630 §3.1.3 / RFC 7118 §5.2: a sips: URI is reached over TLS, or WSS for "ws".
        transport = {"tcp": "tls", "udp": "tls", "ws": "wss"}.get(transport, transport)
    port = uri.port or (5061 if uri.scheme == "sips" else 5060)
    if transport == flow.transport and host == flow.host and port == flow.port:
        return flow
    # Leave through the flow's own listener when it can reach the hop (same transport and
    # address family); otherwise the driver picks one of the hop's family.
    same_family = (":" in host) == (":" in flow.host)
    local = flow.local if transport == flow.transport and same_family else None
    return Peer(transport, host, port, local=local)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
