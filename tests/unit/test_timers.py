"""DeadlineHeap: many deadlines in one heap, stale entries skipped, memory bounded by live keys."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from presenced.pa.timers import DeadlineHeap


def test_empty_heap_has_no_deadline_and_nothing_due() -> None:
    h: DeadlineHeap[str] = DeadlineHeap()
    assert h.next_deadline() is None
    assert h.pop_due(1e18) == []
    assert len(h) == 0


def test_pop_due_returns_due_keys_in_deadline_order_and_removes_them() -> None:
    h: DeadlineHeap[str] = DeadlineHeap()
    h.set("c", 30.0)
    h.set("a", 10.0)
    h.set("b", 20.0)
    assert h.next_deadline() == 10.0
    assert h.pop_due(9.9) == []
    assert h.pop_due(20.0) == ["a", "b"]  # a deadline equal to now is due
    assert "a" not in h and "b" not in h and "c" in h
    assert len(h) == 1
    assert h.next_deadline() == 30.0
    assert h.pop_due(100.0) == ["c"]
    assert h.next_deadline() is None


def test_refresh_replaces_the_deadline_earlier_or_later() -> None:
    h: DeadlineHeap[str] = DeadlineHeap()
    h.set("a", 10.0)
    h.set("a", 50.0)  # later: the old entry is stale
    assert h.next_deadline() == 50.0
    assert h.pop_due(10.0) == []
    h.set("a", 5.0)  # earlier again
    assert h.next_deadline() == 5.0
    assert h.pop_due(100.0) == ["a"]  # once, although three entries were pushed
    assert h.pop_due(100.0) == []


def test_discard_removes_a_key_and_unknown_keys_are_fine() -> None:
    h: DeadlineHeap[str] = DeadlineHeap()
    h.set("a", 10.0)
    h.set("b", 20.0)
    h.discard("a")
    h.discard("nope")
    assert "a" not in h and len(h) == 1
    assert h.next_deadline() == 20.0
    assert h.pop_due(100.0) == ["b"]


def test_set_after_discard_with_the_same_deadline_fires_once() -> None:
    h: DeadlineHeap[str] = DeadlineHeap()
    h.set("a", 10.0)
    h.discard("a")
    h.set("a", 10.0)
    assert h.pop_due(10.0) == ["a"]
    assert h.pop_due(10.0) == []
    assert h.next_deadline() is None


def test_many_refreshes_keep_the_heap_small() -> None:
    h: DeadlineHeap[int] = DeadlineHeap()
    for i in range(100_000):
        h.set(i % 10, float(i))
    assert len(h) == 10
    assert len(h._heap) <= 2 * 10 + 64 + 1
    assert h.pop_due(1e9) == list(range(10))


def test_discarded_keys_do_not_keep_memory_once_refreshing_resumes() -> None:
    h: DeadlineHeap[int] = DeadlineHeap()
    for i in range(10_000):
        h.set(i, float(i))
    for i in range(10_000):
        h.discard(i)
    for i in range(1_000):
        h.set(-1, float(i))
    assert len(h) == 1
    assert len(h._heap) <= 2 * 1 + 64 + 1


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 7), st.integers(0, 50)),
        st.tuples(st.just("discard"), st.integers(0, 7), st.just(0)),
        st.tuples(st.just("pop"), st.just(0), st.integers(0, 50)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_behaves_like_a_dict_of_deadlines(ops: list[tuple[str, int, int]]) -> None:
    h: DeadlineHeap[int] = DeadlineHeap()
    model: dict[int, float] = {}
    for op, key, t in ops:
        if op == "set":
            h.set(key, float(t))
            model[key] = float(t)
        elif op == "discard":
            h.discard(key)
            model.pop(key, None)
        else:
            expected = sorted((d, k) for k, d in model.items() if d <= t)
            assert h.pop_due(float(t)) == [k for _, k in expected]
            for _, k in expected:
                del model[k]
        assert len(h) == len(model)
        assert h.next_deadline() == (min(model.values()) if model else None)
        assert all(k in h for k in model)
        assert len(h._heap) <= 2 * 8 + 64 + 1  # bounded by the live keys, never by the ops
