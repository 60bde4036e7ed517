"""Three presenced nodes on one Redis behave like one server (issue 12, docs/design.md
"Running a cluster"): exactly one NOTIFY per change per watcher, whichever node took the
change and whichever node holds the watcher; in-dialog requests at any node; expiry once;
a SIGKILLed node's dialogs adopted; Redis restarted without losing what it acknowledged.

NOTIFYs are counted over a quiet window after each change; the node that sent one is read
from its Via (each node has its own address).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_env import NODE_HOSTS, NodeFactory, RedisServer
from harness import ClientDialog, ServerProcess, SipClient, parse_pidf, register, token

from presenced.sip.message import Request, Response

Client = Callable[..., SipClient]
ALICE = "sip:alice@example.com"
WINDOW = 1.5  # seconds of silence that prove "no second NOTIFY"

PIDF = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">
  <tuple id="t%d"><status><basic>%s</basic></status><note>%s</note></tuple>
</presence>"""

DIALOG_INFO = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="%d" state="full"
             entity="sip:alice@example.com">
  <dialog id="d1" call-id="c%d" direction="initiator"><state>%s</state></dialog>
</dialog-info>"""

ACCEPT = {"presence": "application/pidf+xml", "dialog": "application/dialog-info+xml"}


def subscribe(w: SipClient, node: ServerProcess, event: str = "presence",
              expires: int = 600) -> tuple[Response, Request]:
    w.server = node.addr
    r = w.request("SUBSCRIBE", ALICE, headers={"Event": event, "Accept": ACCEPT[event],
                                               "Expires": str(expires)})
    assert r.status == 200, r
    return r, w.expect_request("NOTIFY")


def sender(n: Request) -> str:
    """The host of the node that sent a NOTIFY (its Via sent-by)."""
    return n.top_via.host


def exactly_one(w: SipClient, timeout: float = 5.0) -> Request:
    n = w.expect_request("NOTIFY", timeout=timeout)
    w.expect_no_request("NOTIFY", timeout=WINDOW)
    return n


def publish(c: SipClient, node: ServerProcess, event: str, body: bytes) -> Response:
    c.server = node.addr
    ctype = ACCEPT[event]
    return c.request("PUBLISH", ALICE, headers={"Event": event, "Expires": "600",
                                                "Content-Type": ctype}, body=body)


def reg(c: SipClient, node: ServerProcess, expires: int) -> Response:
    c.server = node.addr
    return register(c, expires=expires)


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def cseq(n: Request) -> int:
    return n.cseq.seq


def same_dialog(n: Request, r: Response) -> bool:
    return n.call_id == r.call_id and n.from_.tag == r.to.tag and n.to.tag == r.from_.tag


def test_one_notify_per_change_per_watcher_across_three_nodes(
        node_factory: NodeFactory, client: Client) -> None:
    nodes = [node_factory(i) for i in range(3)]
    presence = [client(nodes[i], user=f"w{i}") for i in range(3)]
    dialog = [client(nodes[i], user=f"d{i}") for i in range(3)]
    firsts = {}
    for i in range(3):
        firsts[("p", i)] = subscribe(presence[i], nodes[i], "presence")
        firsts[("d", i)] = subscribe(dialog[i], nodes[i], "dialog")
    for w in (*presence, *dialog):
        w.expect_no_request("NOTIFY", timeout=0.3)
    alice = client(nodes[0])
    # REGISTER at n0: every presence watcher, on every node, gets one NOTIFY from its owner.
    assert reg(alice, nodes[0], 600).status == 200
    for i, w in enumerate(presence):
        n = exactly_one(w)
        assert sender(n) == NODE_HOSTS[i] and same_dialog(n, firsts[("p", i)][0])
        assert parse_pidf(n.body).basics == ["open"]
    # PUBLISH presence at n2: again one each.
    assert publish(alice, nodes[2], "presence", PIDF % (1, b"closed", b"away")).status == 200
    for i, w in enumerate(presence):
        n = exactly_one(w)
        assert sender(n) == NODE_HOSTS[i]
        assert b"away" in n.body
    # PUBLISH dialog state at n1: each dialog watcher gets one NOTIFY; presence ones none.
    assert publish(alice, nodes[1], "dialog", DIALOG_INFO % (1, 1, b"early")).status == 200
    for i, w in enumerate(dialog):
        n = exactly_one(w)
        assert sender(n) == NODE_HOSTS[i] and n.headers.get("Event") == "dialog"
        assert b"early" in n.body
    for w in presence:
        w.expect_no_request("NOTIFY", timeout=0.2)
    for w in (*presence, *dialog):
        assert not w.errors


def _in_dialog(w: SipClient, node: ServerProcess, dlg: ClientDialog, event: str,
               expires: int) -> Response:
    w.server = node.addr  # the Request-URI stays the owner's Contact (another node's address)
    return w.request("SUBSCRIBE", dialog=dlg, headers={"Event": event, "Accept": ACCEPT[event],
                                                       "Expires": str(expires)})


@pytest.mark.parametrize("event", ["presence", "dialog"])
def test_refresh_and_unsubscribe_at_other_nodes_move_the_dialog(
        node_factory: NodeFactory, client: Client, event: str) -> None:
    nodes = [node_factory(i) for i in range(3)]
    w = client(nodes[0], user="bob")
    r, first = subscribe(w, nodes[0], event)
    assert sender(first) == NODE_HOSTS[0]
    dlg = w.dialog(r)
    assert NODE_HOSTS[0] in dlg.remote_target
    # Refresh at n1, Request-URI still n0's Contact: n1 takes the dialog over.
    r2 = _in_dialog(w, nodes[1], dlg, event, 300)
    assert r2.status == 200, r2
    n = exactly_one(w)
    assert sender(n) == NODE_HOSTS[1] and same_dialog(n, r) and cseq(n) > cseq(first)
    # A change at n2 now reaches the watcher once, from n1 only.
    alice = client(nodes[2])
    if event == "presence":
        assert reg(alice, nodes[2], 600).status == 200
    else:
        assert publish(alice, nodes[2], event, DIALOG_INFO % (1, 7, b"confirmed")).status == 200
    n2 = exactly_one(w)
    assert sender(n2) == NODE_HOSTS[1] and cseq(n2) > cseq(n)
    # Unsubscribe at n2: 200 and the final NOTIFY from n2, then nothing from anyone.
    r3 = _in_dialog(w, nodes[2], dlg, event, 0)
    assert r3.status == 200, r3
    final = exactly_one(w)
    assert sender(final) == NODE_HOSTS[2] and cseq(final) > cseq(n2)
    assert final.headers.get("Subscription-State", "").startswith("terminated")
    if event == "presence":
        assert reg(alice, nodes[0], 0).status == 200
    else:
        assert publish(alice, nodes[0], event, DIALOG_INFO % (2, 7, b"terminated")).status == 200
    w.expect_no_request("NOTIFY", timeout=WINDOW)
    # The dialog is gone cluster-wide.
    assert _in_dialog(w, nodes[0], dlg, event, 300).status == 481


def test_binding_expiry_gives_one_closed_notify_per_watcher(
        node_factory: NodeFactory, client: Client) -> None:
    nodes = [node_factory(i) for i in range(3)]
    watchers = [client(nodes[i], user=f"w{i}") for i in range(3)]
    for i, w in enumerate(watchers):
        subscribe(w, nodes[i])
    alice = client(nodes[1])
    assert reg(alice, nodes[1], 2).status == 200
    for w in watchers:
        assert parse_pidf(w.expect_request("NOTIFY").body).basics == ["open"]
    for i, w in enumerate(watchers):
        n = w.expect_request("NOTIFY", timeout=6)
        assert parse_pidf(n.body).basics == ["closed"] and sender(n) == NODE_HOSTS[i]
    for w in watchers:
        w.expect_no_request("NOTIFY", timeout=WINDOW)
    # Deleted once: every node's log shows a local expiry, but Redis holds no binding.
    query = client(nodes[2])
    r = reg(query, nodes[2], 600)  # a fresh binding: the AOR had none left
    assert r.status == 200 and len(r.contacts) == 1


@pytest.mark.parametrize("event", ["presence", "dialog"])
def test_sigkill_of_the_owner_hands_its_watchers_to_a_survivor(
        node_factory: NodeFactory, client: Client, event: str) -> None:
    nodes = [node_factory(i) for i in range(3)]
    w = client(nodes[0], user="bob")
    r, first = subscribe(w, nodes[0], event)
    nodes[0].kill9()
    started = time.monotonic()
    # The adopter NOTIFYs the current state at once (same dialog, CSeq from the lease).
    n = w.expect_request("NOTIFY", timeout=20)
    took = time.monotonic() - started
    print(f"adopted after {took:.1f} s")
    assert sender(n) in NODE_HOSTS[1:] and same_dialog(n, r) and cseq(n) > cseq(first)
    w.expect_no_request("NOTIFY", timeout=WINDOW)
    adopter = nodes[NODE_HOSTS.index(sender(n))]
    alice = client(nodes[1])
    if event == "presence":
        assert reg(alice, nodes[1], 600).status == 200
    else:
        assert publish(alice, nodes[1], event, DIALOG_INFO % (1, 3, b"early")).status == 200
    n2 = exactly_one(w)
    assert sender(n2) == adopter.host and cseq(n2) > cseq(n)
    # The node comes back: it does not NOTIFY the adopted dialog (no duplicates).
    nodes[0].start()
    if event == "presence":
        assert reg(alice, nodes[2], 0).status == 200
    else:
        assert publish(alice, nodes[2], event, DIALOG_INFO % (2, 3, b"terminated")).status == 200
    n3 = exactly_one(w)
    assert sender(n3) == adopter.host and cseq(n3) > cseq(n2)
    # A refresh aimed at the adopter keeps working.
    dlg = w.dialog(r)
    dlg.remote_target = str(n.contacts[0].uri)
    assert _in_dialog(w, adopter, dlg, event, 300).status == 200


def test_redis_restart_gives_503_then_service_resumes_with_nothing_lost(
        node_factory: NodeFactory, client: Client, redis_server: RedisServer) -> None:
    nodes = [node_factory(i) for i in range(2)]
    w = client(nodes[1], user="bob")
    subscribe(w, nodes[1])
    alice = client(nodes[0])
    assert reg(alice, nodes[0], 600).status == 200
    assert parse_pidf(exactly_one(w).body).basics == ["open"]
    redis_server.stop()
    carol = client(nodes[0], user="carol")
    r = reg(carol, nodes[0], 600)
    assert r.status == 503 and r.headers.get("Retry-After"), r
    s = carol.request("SUBSCRIBE", ALICE, headers={"Event": "presence", "Expires": "600"})
    assert s.status == 503, s
    p = publish(carol, nodes[1], "presence", PIDF % (2, b"open", b"x"))
    assert p.status == 503, p
    w.expect_no_request("NOTIFY", timeout=0.5)
    redis_server.start()
    deadline = time.monotonic() + 20
    while True:
        r = reg(carol, nodes[0], 600)
        if r.status == 200:
            break
        assert r.status == 503 and time.monotonic() < deadline, r
        time.sleep(0.5)
    wait_for(lambda: "feed reconnected" in nodes[1].log_text())
    # Acknowledged before the outage: alice's binding, bob's subscription.
    q = client(nodes[1])
    q.server = nodes[1].addr
    req = q.build_request("REGISTER", "sip:example.com", from_=f"<{ALICE}>;tag={token(4)}",
                          to=f"<{ALICE}>")
    req.headers.remove("Contact")
    q.send(req)
    listed = q.wait_response(req)
    assert listed.status == 200 and [str(c.uri) for c in listed.contacts] == [alice.contact_uri]
    # The feed is back too: a change at n0 reaches the watcher held by n1, once.
    deadline = time.monotonic() + 10
    assert reg(alice, nodes[0], 0).status == 200
    n = exactly_one(w, timeout=max(1.0, deadline - time.monotonic()))
    assert parse_pidf(n.body).basics == ["closed"] and sender(n) == NODE_HOSTS[1]
    for node in nodes:
        node.allow_tracebacks = True  # the outage is logged with its exception


def test_a_rules_change_reaches_the_watchers_on_every_node(
        node_factory: NodeFactory, client: Client) -> None:
    """Presence rules are cluster state too: `presenced rules set` writes through the cluster
    store, the change is announced on the feed, and the node holding a pending watcher
    activates it at once (docs/presence.md "Authorization")."""
    pa = {"min_expires": 1, "default_policy": "confirm"}
    nodes = [node_factory(i, sections={"pa": pa}) for i in range(2)]
    bob = client(nodes[1], user="bob")
    r, first = subscribe(bob, nodes[1])
    assert first.headers.get("Subscription-State", "").startswith("pending")
    assert not first.body
    alice = client(nodes[0])
    assert reg(alice, nodes[0], 600).status == 200
    # Pending: no NOTIFY for alice's change (its timing alone would tell bob something).
    bob.expect_no_request("NOTIFY", timeout=WINDOW)
    done = subprocess.run(
        [sys.executable, "-m", "presenced", "rules", "set", "--config", str(nodes[0].config_path),
         "alice@example.com", "allow", "bob@example.com"],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})
    assert done.returncode == 0, done.stderr
    assert "every node applies them now" in done.stdout
    n = exactly_one(bob)
    assert sender(n) == NODE_HOSTS[1] and same_dialog(n, r)
    assert n.headers.get("Subscription-State", "").startswith("active")
    assert parse_pidf(n.body).basics == ["open"]


def test_admin_status_shows_the_cluster(node_factory: NodeFactory, client: Client) -> None:
    """`GET /api/v1/status` on a node names it and the other nodes with their leases."""
    from admin_http import TOKEN, Admin
    from harness import free_port_pair

    port = free_port_pair(NODE_HOSTS[0])
    nodes = [node_factory(0, sections={"admin": {"listen": f"{NODE_HOSTS[0]}:{port}",
                                                  "token": TOKEN}}),
             node_factory(1)]
    api = Admin(port)
    api.base = f"http://{NODE_HOSTS[0]}:{port}"
    api.wait_up()
    alice = client(nodes[1])
    assert reg(alice, nodes[1], 600).status == 200
    wait_for(lambda: api.get("/api/v1/status")["cluster"]["nodes"] == [{"node": "n1", "alive": True}])
    st = api.get("/api/v1/status")["cluster"]
    assert st["node"] == "n0" and st["lease_held"] is True and st["redis_scripts"] >= 0
    assert NODE_HOSTS[0] in st["hosts"]
    nodes[1].kill9()
    wait_for(lambda: api.get("/api/v1/status")["cluster"]["nodes"] == [{"node": "n1", "alive": False}]
             or api.get("/api/v1/status")["cluster"]["nodes"] == [])
