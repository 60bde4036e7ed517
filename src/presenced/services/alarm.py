"""Timing helpers shared by the services: one timer per service, and background tasks kept alive.

Each service keeps all its deadlines in one `DeadlineHeap`; an `Alarm` is the single asyncio
timer armed for the earliest of them. Deadlines are wall-clock epoch seconds (they are
persisted), converted to a delay on the loop when armed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("presenced.services")


class Background:
    """Runs coroutines as tasks, holding a reference until they finish and logging failures
    (asyncio keeps only weak references to tasks)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)


class Alarm:
    """A timer for a moving deadline; when it fires, `action()` runs as a background task."""

    def __init__(self, action: Callable[[], Awaitable[None]], background: Background,
                 clock: Callable[[], float] = time.time) -> None:
        self._action = action
        self._background = background
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None

    def arm(self, deadline: float | None) -> None:
        if deadline == self._deadline:
            return
        self.cancel()
        self._deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._deadline = None
        self._background.spawn(self._run())

    async def _run(self) -> None:
        await self._action()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = None
