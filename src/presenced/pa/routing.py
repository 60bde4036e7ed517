"""Which presence source serves a subscription: SER's `handle_subscription(domain)`.

A subscription is bound to one source for its whole life: "registrar" (presence from
registrations and PUBLISH on this server) or "jabber" (presence of an XMPP user, through the
gateway). The default rule: a Request-URI host equal to the jabber gateway domain goes to
"jabber", every other served domain to "registrar".

Operators can decide themselves with a routing script, as ser.cfg did. The script is a Python
file that defines `route(request)`; it calls `handle_subscription(request, "jabber")` (or
"registrar") and returns the result, or returns None to fall back to the default rule. The
request it gets is the parsed SUBSCRIBE (`request.ruri.user`, `request.ruri.host`,
`request.headers.get(...)`, `request.from_.uri` ...). Example:

    def route(request):
        if request.ruri.user and request.ruri.user.startswith("xmpp."):
            return handle_subscription(request, "jabber")
        return None
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from presenced.sip.message import Request

SOURCES = ("registrar", "jabber")


# Records made for every message write their __init__ out (init=False): mypyc compiles it,
# where the one @dataclass generates stays interpreted: 0.25-0.77 us a call against 0.1-0.17
# (docs/performance.md, "Sixth pass"). Frozen ones set fields as @dataclass does.
@dataclass(frozen=True, slots=True, init=False)
class Route:
    source: str

    def __init__(self, source: str) -> None:
        object.__setattr__(self, "source", source)


class RoutingError(Exception):
    """The routing script misbehaved (raised, or returned something that is not a Route)."""


def handle_subscription(request: Request, domain: str) -> Route:
    """Bind this subscription to the presence source named `domain` ("registrar" | "jabber")."""
    if domain not in SOURCES:
        raise ValueError(f"handle_subscription: unknown domain {domain!r}, expected one of {SOURCES}")
    return Route(domain)


def default_route(request: Request, gateway_domain: str | None) -> Route:
    if gateway_domain is not None and request.ruri.host_key == gateway_domain:
        return Route("jabber")
    return Route("registrar")


class Router:
    def __init__(self, gateway_domain: str | None,
                 script: Callable[[Request], object] | None = None) -> None:
        self.gateway_domain = gateway_domain
        self.script = script

    def route(self, request: Request) -> Route:
        """Raises RoutingError when the script fails; the caller answers 500."""
        if self.script is not None:
            try:
                decision = self.script(request)
            except Exception as exc:
                raise RoutingError(f"routing script raised {type(exc).__name__}: {exc}") from exc
            if isinstance(decision, Route):
                return decision
            if decision is not None:
                raise RoutingError(f"routing script returned {decision!r}, not handle_subscription(...)")
        return default_route(request, self.gateway_domain)


def compile_script(source: str, filename: str) -> Callable[[Request], object]:
    """Compile an operator's routing script; it must define `route(request)`."""
    namespace: dict[str, object] = {"handle_subscription": handle_subscription, "__name__": "routing_script"}
    try:
        exec(compile(source, filename, "exec"), namespace)
    except Exception as exc:  # a SyntaxError or a failing top level: the operator's fault
        detail = f"{type(exc).__name__}: {exc}"
        raise RoutingError(f"{filename}: the routing script failed to load: {detail}") from exc
    fn = namespace.get("route")
    if not callable(fn):
        raise RoutingError(f"{filename}: the routing script must define route(request)")
    return fn
