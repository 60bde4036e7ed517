"""RequestLog (services/reqlog.py) between a fake driver and a recording application: one
line per final outcome, NOTIFY outcomes matched to the NOTIFY sent, everything passed on."""

from __future__ import annotations

import logging

import pytest
from service_fakes import FakeNetwork, register, subscribe

from presenced.services.reqlog import RequestLog
from presenced.sip.endpoint import ClientTimedOut, Peer, ResponseReceived
from presenced.sip.message import Request, make_response, parse_message

WATCHER = Peer("tcp", "2001:db8::7", 5070, 3)


class App:
    def __init__(self) -> None:
        self.events: list[object] = []

    def on_request(self, event: object) -> None:
        self.events.append(event)

    on_response = on_timeout = on_request


def notify(call_id: str = "sub1") -> Request:
    msg = parse_message((
        "NOTIFY sip:watcher@192.0.2.10:5070 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKn1\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=p1\r\n"
        "To: <sip:watcher@example.com>;tag=w1\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 2 NOTIFY\r\n"
        "Event: presence\r\n"
        "Subscription-State: terminated;reason=timeout\r\n"
        "Content-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "presenced.requests"]


def test_final_answers_are_logged_once_with_fields_and_passed_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = FakeNetwork()
    rl = RequestLog(net, logging.INFO).wrap(App())
    caplog.set_level(logging.INFO, "presenced.requests")
    reg = register(call_id="r-1")
    rl.respond(reg, make_response(reg.request, 100))  # provisional: no line
    rl.respond(reg, make_response(reg.request, 200))
    sub = subscribe(call_id="s-1")
    resp = make_response(sub.request, 403, "Forbidden (not your AOR)")
    rl.respond(sub, resp)
    assert net.statuses == [100, 200, 403]
    recs = lines(caplog)
    assert [r.getMessage() for r in recs] == [
        "REGISTER alice@example.com 200 OK call-id=r-1 source=udp:192.0.2.20:5060",
        "SUBSCRIBE alice@example.com 403 Forbidden (not your AOR) call-id=s-1 "
        "source=udp:192.0.2.10:5070 event=presence watcher=watcher@example.com",
    ]
    assert recs[1].presenced_fields["status"] == 403  # type: ignore[attr-defined]


def test_a_notify_is_logged_at_its_answer_or_as_408_at_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net, app = FakeNetwork(), App()
    rl = RequestLog(net, logging.DEBUG).wrap(app)
    caplog.set_level(logging.DEBUG, "presenced.requests")
    rl.send_request(notify("a"), WATCHER, ("notify", "d1"))
    rl.send_request(notify("b"), WATCHER, ("notify", "d2"))
    assert len(net.requests) == 2
    gone = make_response(notify("a"), 481, "Call Does Not Exist")
    rl.on_response(ResponseReceived(gone, ("notify", "d1")))
    rl.on_timeout(ClientTimedOut(("notify", "d2")))
    rl.on_timeout(ClientTimedOut(("notify", "d2")))  # nothing pending any more: no line
    assert len(app.events) == 3  # all passed on
    msgs = [r.getMessage() for r in lines(caplog)]
    assert msgs == [
        "NOTIFY alice@example.com 481 Call Does Not Exist call-id=a "
        "destination=tcp:[2001:db8::7]:5070 event=presence watcher=watcher@example.com "
        "state=terminated",
        "NOTIFY alice@example.com 408 Request Timeout (no answer) call-id=b "
        "destination=tcp:[2001:db8::7]:5070 event=presence watcher=watcher@example.com "
        "state=terminated",
    ]
    assert all(r.levelno == logging.DEBUG for r in lines(caplog))


def test_pending_notifies_are_bounded() -> None:
    net = FakeNetwork()
    rl = RequestLog(net, max_pending=2).wrap(App())
    for i in range(5):
        rl.send_request(notify(str(i)), WATCHER, ("notify", f"d{i}"))
    assert len(net.requests) == 5 and len(rl._pending) == 2
