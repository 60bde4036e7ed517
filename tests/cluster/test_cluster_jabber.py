"""The XMPP gateway in a cluster (issue 12): three nodes on one Redis and a real Prosody.

One node at a time holds the component (the leader lease in Redis); the others hand it their
SIP watchers' XMPP subscriptions on the feed and get the XMPP users' presence back from it. A
SIP watcher on a non-leader node sees an XMPP user's presence; an XMPP user sees a SIP user who
registered at a non-leader node; SIGKILL of the leader -> another node takes the component and
the next change still reaches the watcher.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster_env import NodeFactory
from harness import ServerProcess, SipClient, register
from prosody import ProsodyServer, available
from xmpp_client import XmppUser

from presenced.pa.documents.pidf import decode_pidf
from presenced.sip.message import Request

COMPONENT = "gw.jabber.test"
GATEWAY = "gw.example.com"
DOMAIN = "example.com"
ROMEO_JID = f"romeo*{DOMAIN}@{COMPONENT}"
ALICE_JID = f"alice*{DOMAIN}@{COMPONENT}"
LEADER = re.compile(r"node (n\d) holds the XMPP component \(epoch (\d+)\)")


@pytest.fixture
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    assert available(), "prosody is not installed (apt-get install prosody)"
    server = ProsodyServer(tmp_path_factory.mktemp("prosody-cluster"), component=COMPONENT)
    server.start()
    for user in ("juliet", "tybalt"):
        server.create_user(user, "pw")
    try:
        yield server
    finally:
        server.stop()


def _leaders(nodes: list[ServerProcess]) -> list[tuple[int, int]]:
    """(epoch, node index) of every take-over logged, oldest first."""
    found = []
    for i, n in enumerate(nodes):
        for m in LEADER.finditer(n.log_text()):
            assert m.group(1) == f"n{i}"
            found.append((int(m.group(2)), i))
    return sorted(found)


async def _wait_leader(nodes: list[ServerProcess], after_epoch: int = 0,
                       timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newer = [(e, i) for e, i in _leaders(nodes) if e > after_epoch and nodes[i].running]
        if newer:
            index = newer[-1][1]
            await nodes[index].wait_log(f"xmpp component {COMPONENT}: connected", timeout=15.0)
            return index
        await asyncio.sleep(0.1)
    raise AssertionError(f"no leader after epoch {after_epoch}: {_leaders(nodes)}")


def _notify_doc(c: SipClient, pred: Callable[[Any], bool], timeout: float = 10.0) -> Request:
    deadline = time.monotonic() + timeout
    while True:
        n = c.expect_request("NOTIFY", timeout=max(0.05, deadline - time.monotonic()))
        if n.body and pred(decode_pidf(n.body)):
            return n


def _activities(doc: Any) -> set[str]:
    out = {a for p in doc.persons for a in p.activities}
    out.update(a for t in doc.tuples for a in t.activities)
    return out


async def test_gateway_leader_serves_other_nodes_and_another_takes_over_after_sigkill(
    node_factory: NodeFactory, client: Callable[..., SipClient], prosody: ProsodyServer
) -> None:
    jabber = prosody.jabber_section(GATEWAY)
    nodes = [node_factory(i, start=False, sections={"jabber": jabber}) for i in range(3)]
    for n in nodes:
        await asyncio.to_thread(n.start)
    leader = await _wait_leader(nodes)
    first_epoch = _leaders(nodes)[-1][0]
    others = [i for i in range(3) if i != leader]
    watcher_node, register_node = nodes[others[0]], nodes[others[1]]

    juliet, tybalt = XmppUser(prosody, "juliet"), XmppUser(prosody, "tybalt")
    romeo = client(watcher_node, user="romeo")
    alice = client(register_node, user="alice")
    try:
        await juliet.connect(initial_presence=False)
        juliet.send(show="away", statuses=(("Am Fenster", "de"),))
        # A SIP watcher on a non-leader node: pending, the leader asks juliet from romeo's JID.
        r = await asyncio.to_thread(romeo.request, "SUBSCRIBE", f"sip:juliet*jabber.test@{GATEWAY}",
                                    headers={"Event": "presence", "Expires": "600",
                                             "Accept": "application/pidf+xml"})
        assert r.status == 200, r
        n = await asyncio.to_thread(romeo.expect_request, "NOTIFY", 5.0)
        assert str(n.headers.get("Subscription-State")).startswith("pending")
        await juliet.wait(lambda p: p["type"] == "subscribe" and p["from"].bare == ROMEO_JID)
        juliet.send("subscribed", to=ROMEO_JID)
        n = await asyncio.to_thread(
            _notify_doc, romeo, lambda d: d.basic == "open" and "away" in _activities(d))
        assert b"Am Fenster" in n.body

        # An XMPP user sees a SIP user who registered at another non-leader node.
        await tybalt.connect()
        tybalt.client.send_presence_subscription(pto=ALICE_JID, ptype="subscribe")
        await tybalt.wait(lambda p: p["from"].bare == ALICE_JID and p["type"] == "subscribed")
        assert (await asyncio.to_thread(register, alice, expires=600)).status == 200
        await tybalt.wait(lambda p: p["from"].bare == ALICE_JID and p["type"] == "available")

        # SIGKILL of the leader: a survivor takes the lease, reconnects the component and
        # re-announces romeo's approved subscription (a probe from his JID).
        await asyncio.to_thread(nodes[leader].kill9)
        successor = await _wait_leader(nodes, after_epoch=first_epoch, timeout=30.0)
        assert successor != leader
        juliet.send(show="dnd", statuses=(("Nicht stören", "de"),))
        n = await asyncio.to_thread(
            _notify_doc, romeo, lambda d: "busy" in _activities(d), 20.0)
        assert str(n.headers.get("Subscription-State")).startswith("active")
        nodes[leader].allow_tracebacks = True  # killed: its log ends wherever it ended
    finally:
        await juliet.close()
        await tybalt.close()
