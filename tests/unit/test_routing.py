"""Routing a subscription to its presence source (SER's handle_subscription, docs/design.md)."""

from __future__ import annotations

import pytest

from presenced.pa.routing import (
    Route,
    Router,
    RoutingError,
    compile_script,
    default_route,
    handle_subscription,
)
from presenced.sip.message import Request, parse_message

GATEWAY = "xmpp.example.com"


def subscribe(uri: str) -> Request:
    msg = parse_message(
        (
            f"SUBSCRIBE {uri} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK1\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:bob@example.com>;tag=ft\r\n"
            f"To: <{uri}>\r\n"
            "Call-ID: r1@192.0.2.20\r\n"
            "CSeq: 1 SUBSCRIBE\r\n"
            "Event: presence\r\n"
            "Contact: <sip:bob@192.0.2.20:5070>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(msg, Request)
    return msg


def test_default_route_sends_the_gateway_domain_to_jabber() -> None:
    assert default_route(subscribe(f"sip:juliet@{GATEWAY}"), GATEWAY) == Route("jabber")
    # Host comparison ignores case and a trailing dot (RFC 3261 §19.1.4).
    assert default_route(subscribe("sip:juliet@XMPP.Example.COM."), GATEWAY) == Route("jabber")


def test_default_route_sends_other_domains_to_the_registrar() -> None:
    assert default_route(subscribe("sip:alice@example.com"), GATEWAY) == Route("registrar")
    assert default_route(subscribe(f"sip:alice@{GATEWAY}"), None) == Route("registrar")


def test_router_without_script_uses_the_default_rule() -> None:
    router = Router(GATEWAY)
    assert router.route(subscribe(f"sip:juliet@{GATEWAY}")) == Route("jabber")
    assert router.route(subscribe("sip:alice@example.com")) == Route("registrar")


SCRIPT = """
def route(request):
    if request.ruri.user and request.ruri.user.startswith("xmpp."):
        return handle_subscription(request, "jabber")
    return None
"""


def test_script_decides_and_none_falls_back_to_the_default() -> None:
    router = Router(GATEWAY, compile_script(SCRIPT, "route.py"))
    assert router.route(subscribe("sip:xmpp.juliet@example.com")) == Route("jabber")
    assert router.route(subscribe("sip:alice@example.com")) == Route("registrar")
    assert router.route(subscribe(f"sip:romeo@{GATEWAY}")) == Route("jabber")


def test_script_can_send_the_gateway_domain_to_the_registrar() -> None:
    script = compile_script(
        "def route(r):\n    return handle_subscription(r, 'registrar')\n", "r.py"
    )
    assert Router(GATEWAY, script).route(subscribe(f"sip:romeo@{GATEWAY}")) == Route("registrar")


def test_script_that_raises_is_a_routing_error() -> None:
    script = compile_script("def route(r):\n    raise KeyError('boom')\n", "r.py")
    with pytest.raises(RoutingError, match="KeyError"):
        Router(GATEWAY, script).route(subscribe("sip:alice@example.com"))


def test_script_that_names_an_unknown_source_is_a_routing_error() -> None:
    script = compile_script("def route(r):\n    return handle_subscription(r, 'smtp')\n", "r.py")
    with pytest.raises(RoutingError, match="ValueError"):
        Router(GATEWAY, script).route(subscribe("sip:alice@example.com"))


@pytest.mark.parametrize("junk", ["'jabber'", "42", "True", "{'source': 'jabber'}"])
def test_script_returning_junk_is_a_routing_error(junk: str) -> None:
    script = compile_script(f"def route(r):\n    return {junk}\n", "r.py")
    with pytest.raises(RoutingError, match="not handle_subscription"):
        Router(GATEWAY, script).route(subscribe("sip:alice@example.com"))


def test_handle_subscription_rejects_an_unknown_domain() -> None:
    req = subscribe("sip:alice@example.com")
    assert handle_subscription(req, "jabber") == Route("jabber")
    assert handle_subscription(req, "registrar") == Route("registrar")
    with pytest.raises(ValueError, match="unknown domain"):
        handle_subscription(req, "smtp")


@pytest.mark.parametrize(
    "source", ["x = 1\n", "route = 3\n", "def other(request):\n    return None\n"]
)
def test_script_without_route_function_is_rejected(source: str) -> None:
    with pytest.raises(RoutingError, match=r"route\.py"):
        compile_script(source, "route.py")


def test_script_with_a_syntax_error_is_rejected() -> None:
    with pytest.raises(RoutingError, match=r"bad\.py"):
        compile_script("def route(r)\n    return None\n", "bad.py")


def test_script_whose_top_level_raises_is_rejected() -> None:
    with pytest.raises(RoutingError, match="ZeroDivisionError"):
        compile_script("x = 1 / 0\ndef route(r):\n    return None\n", "bad.py")
