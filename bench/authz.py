"""Authorization cost in the notifier (in-process, no sockets): prints figures only.

1. Subscribe cycles (initial SUBSCRIBE + its first NOTIFY) against 1,000 presentities with
   100 rules each, beside the same cycles without a policy.
2. One presence change fanned out to 1,000 watchers that hold 3 different transformations
   (bodies are encoded per transformation, not per watcher).

    PYTHONPATH=src python bench/authz.py [--presentities 1000] [--rules 100] [--cycles 5000]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))

from test_notifier import contact_for, counter, subscribe_req

from presenced.pa.model import PresenceDoc, Tuple
from presenced.pa.packages.presence import presentity_tuple_id
from presenced.pa.policy.evaluate import Policy
from presenced.pa.policy.rules import parse_rules, simple_rules
from presenced.pa.subscription import Notifier, PaPolicy, SendNotify

T0 = 1_700_000_000.0


def cycles(n: int, presentities: int, policy: Policy | None) -> float:
    a = Notifier(PaPolicy(max_subscriptions_per_watcher=10**9), counter("lt"), contact_for)
    a.authz = policy
    reqs = [subscribe_req(to_user=f"u{i % presentities}", watcher=f"w{i % 50}")
            for i in range(n)]
    start = time.perf_counter()
    for i, req in enumerate(reqs):
        for eff in a.subscribe(req, f"u{i % presentities}@example.com", "registrar",
                               "udp:192.0.2.20:5070", T0):
            if isinstance(eff, SendNotify):
                a.notify_result(eff.sub_id, 200, T0)
    return (time.perf_counter() - start) / n * 1e6


def fanout(watchers: int) -> tuple[float, int]:
    a = Notifier(PaPolicy(max_subscriptions_per_watcher=10**9), counter("lt"), contact_for)
    p = Policy("polite-block")
    # Three views: w0.. allowed with everything, w1.. allowed with nothing, others polite-block.
    p.set_rules("alice@example.com", parse_rules(simple_rules([
        ("full", "allow", [f"w{i}@example.com" for i in range(0, watchers, 3)])]) .replace(
            b"</cp:ruleset>",
            b'<cp:rule id="bare"><cp:conditions><cp:identity>' + b"".join(
                b'<cp:one id="sip:w%d@example.com"/>' % i for i in range(1, watchers, 3))
            + b"</cp:identity></cp:conditions><cp:actions><pr:sub-handling>allow"
              b"</pr:sub-handling></cp:actions></cp:rule></cp:ruleset>")))
    a.authz = p
    for i in range(watchers):
        for eff in a.subscribe(subscribe_req(watcher=f"w{i}"), "alice@example.com", "registrar",
                               "udp:192.0.2.20:5070", T0):
            if isinstance(eff, SendNotify):
                a.notify_result(eff.sub_id, 200, T0)
    doc = PresenceDoc("pres:alice@example.com", (
        Tuple(presentity_tuple_id("alice@example.com"), "open", "sip:alice@192.0.2.9"),))
    start = time.perf_counter()
    effects = a.set_part("alice@example.com", "registrar", doc, T0)
    took = time.perf_counter() - start
    bodies = {id(e.request.body) for e in effects if isinstance(e, SendNotify)}
    return took * 1e3, len(bodies)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presentities", type=int, default=1000)
    ap.add_argument("--rules", type=int, default=100)
    ap.add_argument("--cycles", type=int, default=5000)
    ap.add_argument("--watchers", type=int, default=1000)
    args = ap.parse_args()
    policy = Policy("confirm")
    names = itertools.count()
    for i in range(args.presentities):
        entries = [(f"r{next(names)}", "allow", [f"x{j}@example.com"]) for j in range(
            args.rules - 1)]
        entries.append(("w", "allow", ["*@example.com"]))
        policy.set_rules(f"u{i}@example.com", parse_rules(simple_rules(entries)))  # type: ignore[arg-type]
    base = cycles(args.cycles, args.presentities, None)
    ruled = cycles(args.cycles, args.presentities, policy)
    print(f"subscribe cycle, no policy:                      {base:8.1f} µs")
    print(f"subscribe cycle, {args.rules} rules x {args.presentities} presentities: {ruled:8.1f} µs")
    ms, bodies = fanout(args.watchers)
    print(f"change fanned out to {args.watchers} watchers, 3 views: {ms:8.1f} ms, "
          f"{bodies} distinct bodies")


if __name__ == "__main__":
    main()
