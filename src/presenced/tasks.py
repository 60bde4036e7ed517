"""Stopping asyncio tasks, and saying where a stuck one waits (the cluster's loops, the
services' background tasks and the shutdown bound in server.py use these)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], timeout: float = 5.0) -> int:
    """Cancel the tasks and wait until they end, cancelling again every 0.1 s while one still
    runs: on Python 3.11 a cancel can be lost (`asyncio.wait_for` returns the inner result when
    the cancel arrives as the inner call completes, CPython gh-86296; redis-py uses it), and a
    loop whose cancel was lost runs on. Bounded by `timeout`; returns how many still run."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    deadline = asyncio.get_running_loop().time() + timeout
    while pending:
        for t in pending:
            t.cancel()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(0.1, remaining))
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: a loop that failed as it stopped logs nothing more
    return len(pending)


def where(task: asyncio.Task[Any]) -> str:
    """Where a pending task waits: its name and the chain of coroutines it is awaiting, each as
    file:line function (what a shutdown that overstays logs; `Task.get_stack` shows only the
    outermost frame of a suspended coroutine)."""
    steps: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(steps) < 30:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:  # a future (FutureIter), or a mypyc-compiled coroutine (no frame)
            steps.append(type(coro).__name__)
            break
        code = frame.f_code
        steps.append(f"{code.co_filename.rpartition('/')[2]}:{frame.f_lineno} {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return f"{task.get_name()}: {' > '.join(steps)}"
