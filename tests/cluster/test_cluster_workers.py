"""`[server] workers = 2`: two processes on one address (SO_REUSEPORT), each its own cluster
node on the test's Redis; together they behave like one server (issue 12)."""

from __future__ import annotations

import time

import redis
from cluster_env import NodeFactory, RedisServer
from harness import SipClient, parse_pidf, register

ALICE = "sip:alice@example.com"


def test_two_workers_share_one_address_and_notify_each_watcher_once(
        node_factory: NodeFactory, redis_server: RedisServer) -> None:
    srv = node_factory(0, sections={"server": {"workers": 2}}, cluster={"node_id": "w"})
    deadline = time.monotonic() + 15
    # Joined the cluster, then listening: each worker joins before it binds its sockets, and
    # until both are bound the kernel hands every datagram to the one that is.
    while not ("node w-0 joined" in srv.log_text() and "node w-1 joined" in srv.log_text()
               and srv.log_text().count("serving domains") >= 2):
        assert time.monotonic() < deadline, srv.log_tail()
        time.sleep(0.1)
    watchers: list[SipClient] = []
    alice = SipClient(srv.addr, domain=srv.domain)
    try:
        # The kernel spreads the watchers' flows over both workers by a hash of their
        # addresses: 8 flows all land on one worker once in 128 runs, so watchers are added
        # until both own some (at most 32: one in two billion, if both really listen).
        owners: set[bytes] = set()
        while len(watchers) < 8 or (owners != {b"w-0", b"w-1"} and len(watchers) < 32):
            w = SipClient(srv.addr, user=f"w{len(watchers)}", domain=srv.domain)
            watchers.append(w)
            r = w.request("SUBSCRIBE", ALICE, headers={"Event": "presence", "Expires": "600"})
            assert r.status == 200, r
            w.expect_request("NOTIFY")
            owners = set(redis.Redis(port=redis_server.port).hvals("presenced:owner"))
        assert owners == {b"w-0", b"w-1"}, owners
        assert register(alice, expires=600).status == 200
        for w in watchers:
            n = w.expect_request("NOTIFY")
            assert parse_pidf(n.body).basics == ["open"]
        for w in watchers:
            w.expect_no_request("NOTIFY", timeout=0.5)
    finally:
        for c in (*watchers, alice):
            c.close()
