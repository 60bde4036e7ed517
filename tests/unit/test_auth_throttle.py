"""AuthThrottle: password guessing refused per (source, user@domain) and per source, with a
growing lockout that never locks the real user out from another address. A fake clock."""

from __future__ import annotations

import pytest

from presenced.sip.auth import AuthThrottle, ThrottlePolicy

ALICE = "alice@example.com"
EVE = "10.0.0.66"
HOME = "10.0.0.1"


def fail(t: AuthThrottle, times: int, now: float, source: str = EVE, user: str = ALICE) -> bool:
    locked = False
    for _ in range(times):
        locked = t.failed(source, user, now)
    return locked


def test_pair_is_refused_after_max_failures_for_lockout_seconds() -> None:
    t = AuthThrottle(ThrottlePolicy(max_failures=5, lockout=30))
    assert not fail(t, 4, now=0)
    assert t.refused(EVE, ALICE, 0) == 0.0
    assert t.failed(EVE, ALICE, 1)  # the 5th failure starts the lockout
    assert t.refused(EVE, ALICE, 1) == pytest.approx(30)
    assert t.refused(EVE, ALICE, 30.9) > 0
    assert t.refused(EVE, ALICE, 31) == 0.0


def test_the_real_user_at_another_address_is_not_locked_out() -> None:
    t = AuthThrottle()
    fail(t, 5, now=0)
    assert t.refused(EVE, ALICE, 1) > 0
    assert t.refused(HOME, ALICE, 1) == 0.0
    assert t.refused(EVE, "bob@example.com", 1) == 0.0  # 5 failures: below the source limit


def test_each_further_lockout_doubles_up_to_max_lockout() -> None:
    t = AuthThrottle(ThrottlePolicy(max_failures=2, max_source_failures=1000, lockout=30,
                                    max_lockout=100))
    now = 0.0
    seen = []
    for _ in range(4):
        fail(t, 2, now)
        wait = t.refused(EVE, ALICE, now)
        seen.append(wait)
        now += wait
    assert seen == [30, 60, 100, 100]


def test_success_resets_the_pair_and_its_lockout_level() -> None:
    t = AuthThrottle(ThrottlePolicy(max_failures=3, lockout=10))
    fail(t, 3, now=0)
    assert t.refused(EVE, ALICE, 0) == 10
    t.succeeded(EVE, ALICE)
    assert t.refused(EVE, ALICE, 0) == 0.0
    fail(t, 2, now=1)
    assert t.refused(EVE, ALICE, 1) == 0.0
    fail(t, 1, now=2)
    assert t.refused(EVE, ALICE, 2) == 10  # back at the first lockout length


def test_spraying_many_users_refuses_the_source_for_every_user() -> None:
    t = AuthThrottle(ThrottlePolicy(max_failures=5, max_source_failures=20, lockout=30))
    for i in range(19):
        assert not t.failed(EVE, f"user{i}@example.com", 1)
    assert t.source_refused(EVE, 1) == 0.0
    assert t.failed(EVE, "user19@example.com", 2)
    assert t.source_refused(EVE, 2) == 30
    assert t.refused(EVE, "never-tried@example.com", 2) == 30
    assert t.refused(HOME, "user1@example.com", 2) == 0.0


def test_source_failures_count_within_one_lockout_window() -> None:
    t = AuthThrottle(ThrottlePolicy(max_failures=5, max_source_failures=20, lockout=30))
    for i in range(19):
        t.failed(EVE, f"user{i}@example.com", 0)
    for i in range(19):
        t.failed(EVE, f"other{i}@example.com", 31)  # a new window
    assert t.source_refused(EVE, 31) == 0.0


def test_a_success_does_not_reset_the_source_count() -> None:
    t = AuthThrottle(ThrottlePolicy(max_failures=5, max_source_failures=4, lockout=30))
    for i in range(3):
        t.failed(EVE, f"user{i}@example.com", 0)
    t.succeeded(EVE, "eve@example.com")  # one valid account of its own
    t.failed(EVE, "user3@example.com", 0)
    assert t.source_refused(EVE, 0) == 30


def test_quiet_entries_are_forgotten_after_max_lockout() -> None:
    t = AuthThrottle(ThrottlePolicy(max_failures=2, max_source_failures=1000, lockout=10,
                                    max_lockout=100))
    fail(t, 2, now=0)  # locked until 10, next lockout would be 20
    fail(t, 1, now=10 + 101)  # quiet for longer than max_lockout: starts over
    assert t.refused(EVE, ALICE, 111) == 0.0
    fail(t, 1, now=112)
    assert t.refused(EVE, ALICE, 112) == 10


def test_tables_are_bounded() -> None:
    t = AuthThrottle(ThrottlePolicy(max_pairs=50, max_sources=10, max_source_failures=10**6))
    for i in range(1000):
        t.failed(f"10.1.{i // 250}.{i % 250}", f"u{i}@example.com", i * 0.001)
    assert len(t) <= 60


@pytest.mark.parametrize(
    "policy",
    [
        {"max_failures": 0},
        {"max_source_failures": 0},
        {"lockout": 0},
        {"lockout": 100, "max_lockout": 50},
    ],
)
def test_policy_is_validated(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AuthThrottle(ThrottlePolicy(**policy))  # type: ignore[arg-type]


def test_a_trusted_proxy_counts_failures_per_user_only() -> None:
    """Behind a trusted proxy every user shares its address: one user guessing locks out
    that user only, never the proxy's other users."""
    t = AuthThrottle(ThrottlePolicy(max_failures=3, max_source_failures=5, lockout=30))
    for i in range(20):
        t.failed("10.0.0.1", f"u{i}@example.com", 0.0, per_source=False)
    assert t.source_refused("10.0.0.1", 1.0) == 0.0
    assert t.refused("10.0.0.1", "someone@example.com", 1.0) == 0.0
    for _ in range(3):
        t.failed("10.0.0.1", "mallory@example.com", 2.0, per_source=False)
    assert t.refused("10.0.0.1", "mallory@example.com", 3.0) > 0
