"""Busy-lamp fields fed by a real Kamailio: pua_dialoginfo -> presenced -> `dialog` watchers.

Debian's kamailio (with kamailio-presence-modules) relays a call between two sipp user agents
(alice, the caller, on 127.0.0.4; bob, the callee, on 127.0.0.5). Its dialog module tracks the
call (`dlg_manage()`), and pua_dialoginfo PUBLISHes each state change of it as RFC 4235
dialog-info, for alice and for bob, to presenced (pua's outbound proxy). Watchers SUBSCRIBE
`Event: dialog` to presenced and must see the call ring, get answered and end, in documents
whose `entity` is the AOR watched and whose `version` counts that watcher's NOTIFYs (0, 1,
2, ...: RFC 4235 §4.1; kamailio #448 gave later watchers a wrong one).

What Kamailio 5.6 actually sends, and what presenced makes of it (on its defaults):
- `<state>Trying</state>` (capital T, pua_dialoginfo's dialog-created callback) is outside the
  RFC 4235 schema's enumeration; presenced reads states case-insensitively and writes them
  lower case, so watchers see "trying".
- The terminated state goes out with `Expires: 11` (a lifetime hard-coded to 10 s in
  pua_dialoginfo), and pua ignores a 423: `[pa] min_publish_expires` (5) lets it in, so the
  lamp goes dark at the BYE instead of after the confirmed dialog's 12-hour lifetime.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import SCENARIOS, SipClient, free_udp_port, sipp_path
from kamailio import DialogInfoProxy, kamailio_path

from presenced.pa.packages.dialog_info import DialogInfo, parse_dialog_info
from presenced.sip.message import Request

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CALLER_HOST = "127.0.0.4"
CALLEE_HOST = "127.0.0.5"
RING_MS = 1500  # the callee rings this long before it answers
HOLD_MS = 4000  # the caller keeps the answered call this long, then sends BYE



@pytest.fixture
def peers() -> tuple[str, str]:
    kam, sipp = kamailio_path(), sipp_path()
    if kam is None or sipp is None:
        missing = "kamailio" if kam is None else "sipp"
        if _IN_CI:
            pytest.fail(f"{missing} is not installed; CI must run these")
        pytest.skip(f"{missing} is not installed")
    return kam, sipp


class Call:
    """One ring-answer-hangup call between two sipp UAs through the proxy (scenarios/dialog_*)."""

    def __init__(self, sipp: str, workdir: Path) -> None:
        self.sipp = sipp
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.callee_port = free_udp_port(CALLEE_HOST)
        self.procs: list[subprocess.Popen[bytes]] = []

    def _start(self, scenario: str, remote: tuple[str, int], host: str, port: int,
               pause_ms: int) -> subprocess.Popen[bytes]:
        name = Path(scenario).stem
        args = [
            self.sipp, "-sf", str(SCENARIOS / scenario), f"{remote[0]}:{remote[1]}",
            "-i", host, "-p", str(port), "-m", "1", "-s", "bob", "-key", "domain", "example.com",
            "-d", str(pause_ms), "-nostdin", "-timeout", "30s", "-timeout_error",
            "-trace_err", "-error_file", str(self.workdir / f"{name}-errors.log"),
        ]
        out = open(self.workdir / f"{name}-out.log", "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(args, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        out.close()
        self.procs.append(proc)
        return proc

    def place(self, proxy: tuple[str, int]) -> None:
        """Start the callee, then the caller (its INVITE is retransmitted if it comes early)."""
        self._start("dialog_uas.xml", proxy, CALLEE_HOST, self.callee_port, RING_MS)
        self._start("dialog_uac.xml", proxy, CALLER_HOST, free_udp_port(CALLER_HOST), HOLD_MS)

    def wait(self, timeout: float = 40.0) -> list[int]:
        return [p.wait(timeout) for p in self.procs]

    def errors(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-1500:]
                         for p in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


@pytest.fixture
def call(peers, tmp_path) -> Iterator[Call]:
    c = Call(peers[1], tmp_path / "sipp")
    yield c
    c.stop()


@pytest.fixture
def dialog_proxy(tmp_path, server_factory, call, peers) -> Iterator[DialogInfoProxy]:
    srv = server_factory("srv")  # the defaults take what pua_dialoginfo sends
    proxy = DialogInfoProxy(tmp_path / "kamailio", target=srv.addr,
                            callee=(CALLEE_HOST, call.callee_port)).start()
    yield proxy
    proxy.stop()


def subscribe_dialog(client: SipClient, aor: str) -> None:
    resp = client.request("SUBSCRIBE", f"sip:{aor}", headers={
        "Event": "dialog", "Accept": "application/dialog-info+xml", "Expires": "600",
    })
    assert resp.status == 200, resp.status


def next_document(client: SipClient, timeout: float = 10.0) -> tuple[Request, DialogInfo]:
    notify = client.expect_request("NOTIFY", timeout)
    assert notify.headers.get("Event") == "dialog"
    assert notify.headers.get("Content-Type") == "application/dialog-info+xml"
    return notify, parse_dialog_info(notify.body, accept_partial=True)


def documents_until(client: SipClient, state: str, limit: int = 8) -> list[DialogInfo]:
    """Every document up to the first whose dialogs are all in `state`."""
    docs: list[DialogInfo] = []
    while len(docs) < limit:
        _, doc = next_document(client)
        docs.append(doc)
        if doc.dialogs and all(d.state == state for d in doc.dialogs):
            return docs
    raise AssertionError(f"no {state} document in {[states(d) for d in docs]}")


def states(doc: DialogInfo) -> list[str]:
    return [d.state for d in doc.dialogs]


def check_watcher_view(docs: list[DialogInfo], aor: str, direction: str, first: int = 0) -> None:
    assert [d.version for d in docs] == list(range(first, first + len(docs))), "one +1 per NOTIFY"
    assert {d.entity for d in docs} == {f"sip:{aor}"}
    assert {d.state for d in docs} == {"full"}
    for doc in docs:
        assert len(doc.dialogs) <= 1, "one call, one dialog (per side)"
        assert all(d.direction == direction for d in doc.dialogs)


def ordered(seen: list[str], expected: list[str]) -> bool:
    """`expected` appears in `seen` in this order (coalescing may drop states in between)."""
    it = iter(seen)
    return all(any(s == e for s in it) for e in expected)


def test_pua_dialoginfo_drives_both_sides_busy_lamps(dialog_proxy, call):
    alice_lamp = SipClient(dialog_proxy.target, "udp", user="lamp1")
    bob_lamp = SipClient(dialog_proxy.target, "udp", user="lamp2")
    try:
        subscribe_dialog(alice_lamp, "alice@example.com")
        subscribe_dialog(bob_lamp, "bob@example.com")
        for lamp in (alice_lamp, bob_lamp):
            _, empty = next_document(lamp)
            assert empty.version == 0 and empty.dialogs == (), "idle: a valid empty document"
        call.place(dialog_proxy.addr)
        alice = [*documents_until(alice_lamp, "confirmed"), *documents_until(alice_lamp, "terminated")]
        bob = [*documents_until(bob_lamp, "confirmed"), *documents_until(bob_lamp, "terminated")]
        assert call.wait() == [0, 0], call.errors()
    finally:
        alice_lamp.close()
        bob_lamp.close()
    log = dialog_proxy.log_text()
    assert "<state>Trying</state>" in log, "what Kamailio 5.6 publishes first"
    check_watcher_view(alice, "alice@example.com", "initiator", first=1)
    check_watcher_view(bob, "bob@example.com", "recipient", first=1)
    alice_states = [s for doc in alice for s in states(doc)]
    bob_states = [s for doc in bob for s in states(doc)]
    assert ordered(alice_states, ["trying", "early", "confirmed", "terminated"]), alice_states
    assert ordered(bob_states, ["early", "confirmed", "terminated"]), bob_states
    # Both sides describe the same call: the dialog id and Call-ID pua_dialoginfo gave it.
    ids = {d.id for doc in alice + bob for d in doc.dialogs}
    call_ids = {d.call_id for doc in alice + bob for d in doc.dialogs}
    assert len(ids) == 1 and len(call_ids) == 1, (ids, call_ids)
    early_alice = next(d for doc in alice for d in doc.dialogs if d.state == "early")
    early_bob = next(d for doc in bob for d in doc.dialogs if d.state == "early")
    assert early_alice.local_tag == early_bob.remote_tag and early_alice.local_tag
    assert b"<identity>sip:bob@example.com</identity>" in early_alice.xml, "copied verbatim"


def test_a_watcher_joining_mid_call_starts_at_version_zero(dialog_proxy, call):
    """kamailio #448: a second watcher's first document is its version 0, not the first's N."""
    first = SipClient(dialog_proxy.target, "udp", user="lamp1")
    late = SipClient(dialog_proxy.target, "udp", user="lamp3")
    try:
        subscribe_dialog(first, "alice@example.com")
        next_document(first)
        call.place(dialog_proxy.addr)
        before = documents_until(first, "confirmed")
        assert before[-1].version >= 2
        subscribe_dialog(late, "alice@example.com")  # the call is up for another HOLD_MS
        _, joined = next_document(late)
        assert joined.version == 0
        assert states(joined) == ["confirmed"], "the new watcher gets the call's state at once"
        assert joined.entity == "sip:alice@example.com"
        after_late = documents_until(late, "terminated")
        after_first = documents_until(first, "terminated")
        assert call.wait() == [0, 0], call.errors()
    finally:
        first.close()
        late.close()
    check_watcher_view([joined, *after_late], "alice@example.com", "initiator", first=0)
    check_watcher_view([*before, *after_first], "alice@example.com", "initiator", first=1)
