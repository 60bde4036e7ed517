"""Timing helpers shared by the services: one timer per service, and background tasks kept alive.

Each service keeps all its deadlines in one `DeadlineHeap`; an `Alarm` is the single asyncio
timer armed for the earliest of them. Deadlines are wall-clock epoch seconds (they are
persisted), converted to a delay on the loop when armed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from presenced.tasks import cancel_and_wait

log = logging.getLogger("presenced.services")


class Background:
    """Runs coroutines as tasks, holding a reference until they finish and logging failures
    (asyncio keeps only weak references to tasks). `drain()` at shutdown lets them finish
    (bounded), cancels the rest, and refuses new ones from then on."""

    def __init__(self, name: str = "background") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            # Shut down: the storage may be closed already; the work is dropped unstarted.
            coro.close()
            log.debug("%s: shut down, task dropped", self.name)
            return
        task = self.loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop this runs on, asked of asyncio once: `asyncio.get_running_loop()` makes a
        getpid() system call each time on CPython 3.11 (its fork check), and a request spawns a
        task and arms a timer or two (py-spy: ~2 % of a subscribe cycle). A closed loop is asked
        again (tests run one loop after another); one Background never serves two live loops."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, deadline: float) -> int:
        """Wait until every task (those started while waiting too) finished, or until the
        loop time `deadline`; cancel what is left and wait for it to unwind. Then refuse new
        tasks. Returns how many had to be cancelled."""
        loop = asyncio.get_running_loop()
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)
        self._closed = True
        left = set(self._tasks)
        if left:
            log.warning("%s: %d task(s) still running at shutdown, cancelled", self.name,
                        len(left))
            await cancel_and_wait(left)
        return len(left)


async def drain_all(backgrounds: Iterable[Background], timeout: float) -> int:
    """Drain several `Background`s against one shared deadline, in order (a task of an
    earlier one may spawn into a later one: the notifier's NOTIFY runs after a handler)."""
    deadline = asyncio.get_running_loop().time() + timeout
    return sum([await b.drain(deadline) for b in backgrounds])


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
            self._timer = self._background.loop().call_later(delay, self._fire)

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
