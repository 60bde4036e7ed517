"""Many deadlines, one heap: the structure behind subscription, binding and publication expiry.

Setting a key's deadline again (a refresh) or discarding it leaves a stale heap entry behind;
stale entries are skipped when popped and the heap is rebuilt when they dominate, so memory stays
proportional to the number of live keys.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

K = TypeVar("K")


class DeadlineHeap(Generic[K]):
    __slots__ = ("_current", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, K]] = []
        self._current: dict[K, float] = {}

    def set(self, key: K, deadline: float) -> None:
        self._current[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 2 * len(self._current) + 64:
            self._heap = [(d, k) for k, d in self._current.items()]
            heapq.heapify(self._heap)

    def discard(self, key: K) -> None:
        self._current.pop(key, None)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, key = heap[0]
            if self._current.get(key) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[K]:
        due: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            if self._current.get(key) == deadline:
                del self._current[key]
                due.append(key)
        return due

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, key: object) -> bool:
        return key in self._current
