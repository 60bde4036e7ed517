"""Shutdown drains the services before the storage closes (`Server.stop`).

The real composition root runs in this process over a real UDP socket on 127.0.0.1; only its
storage is a `FailingStorage` (a real `MemoryStorage`) whose writes can be held back, like a
slow disk. A REGISTER whose write is held when the server is told to stop either completes
(write, then its 200 goes out, then the storage closes) or, past the bounded wait, is cancelled
cleanly: no write reaches a closed storage, no task is left pending.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_fakes import FailingStorage

import presenced.server as server_module
from presenced.config import parse_config
from presenced.server import Server
from presenced.sip.message import Response, parse_message


def _register(port: int) -> bytes:
    return (
        f"REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKshutdown1\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=s1\r\n"
        "To: <sip:alice@example.com>\r\n"
        "Call-ID: shutdown1@127.0.0.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:alice@127.0.0.1:{port}>;expires=600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[FailingStorage]:
    """The server's storage, and the process-wide tuning Server.start applies put back."""
    store = FailingStorage()
    monkeypatch.setattr(server_module, "open_storage", lambda url, data_dir: store)
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    yield store
    gc.unfreeze()
    gc.set_threshold(*threshold)
    sys.setswitchinterval(interval)


async def _start_and_hold_a_register(store: FailingStorage) -> tuple[Server, socket.socket]:
    config = parse_config('[server]\nlisten = ["udp:127.0.0.1:0"]\ndomains = ["example.com"]\n'
                          '[storage]\nurl = "memory:"\n', Path("/nonexistent-presenced-test"))
    server = Server(config)
    await server.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    store.gate = asyncio.Event()  # the disk stalls
    (transport,) = server.transports
    client.sendto(_register(client.getsockname()[1]), ("127.0.0.1", transport.port))
    while not len(server.dispatcher.background):  # the datagram reached the handler
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    assert store.writes == [] and len(server.dispatcher.background) == 1
    return server, client


async def test_stop_lets_a_handler_blocked_on_a_slow_write_finish_before_storage_closes(
        storage: FailingStorage) -> None:
    server, client = await _start_and_hold_a_register(storage)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done() and not storage.closed  # stop waits for the write
    storage.gate.set()  # type: ignore[union-attr]
    await stopping
    assert storage.writes == ["put_binding"] and storage.after_close == []
    assert storage.closed
    # The answer went out before the transports stopped.
    data = await asyncio.get_running_loop().sock_recv(client, 65535)
    answer = parse_message(data)
    assert isinstance(answer, Response) and answer.status == 200
    client.close()


async def test_stop_cancels_a_handler_that_overstays_the_bound_cleanly(
        storage: FailingStorage, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(server_module, "SHUTDOWN_DRAIN_TIMEOUT", 0.05)
    server, client = await _start_and_hold_a_register(storage)
    with caplog.at_level(logging.WARNING):
        await server.stop()  # the disk never comes back
    assert "did not finish within" in caplog.text
    assert len(server.dispatcher.background) == 0  # cancelled and unwound, none pending
    storage.gate.set()  # type: ignore[union-attr]
    await asyncio.sleep(0.01)
    assert storage.writes == [] and storage.after_close == []  # nothing written once closed
    # A request after shutdown starts nothing (the handler set refuses new tasks).
    server.dispatcher.background.spawn(asyncio.sleep(0))
    assert len(server.dispatcher.background) == 0
    gc.collect()
    assert "Task was destroyed" not in caplog.text
    client.close()


def test_a_background_follows_a_new_loop_once_the_old_one_closed() -> None:
    """Background and Alarm remember their loop (asking asyncio costs a system call on 3.11);
    a loop that has closed is not reused: the next one runs the tasks."""
    from presenced.services.alarm import Alarm, Background

    bg = Background("test")
    ran: list[str] = []

    async def job(name: str) -> None:
        ran.append(name)

    async def round_(name: str) -> None:
        bg.spawn(job(name))
        fired = asyncio.Event()

        async def action() -> None:
            fired.set()

        Alarm(action, bg).arm(0.0)
        await asyncio.wait_for(fired.wait(), 5)

    asyncio.run(round_("first"))
    asyncio.run(round_("second"))
    assert ran == ["first", "second"]


async def test_where_names_a_task_and_every_coroutine_it_awaits() -> None:
    from presenced.tasks import where

    gate = asyncio.Event()

    async def inner() -> None:
        await gate.wait()

    async def outer() -> None:
        await inner()

    task = asyncio.get_running_loop().create_task(outer(), name="stuck-one")
    await asyncio.sleep(0)
    shown = where(task)
    assert shown.startswith("stuck-one: test_services_shutdown.py:")
    assert " outer > " in shown and " inner > " in shown and shown.endswith(" wait > FutureIter")
    gate.set()
    await task


_HANGING_STOP = """
import asyncio, os, signal, sys
import presenced.server as server_module
from presenced.config import parse_config
from pathlib import Path

import time

async def stuck_on_something(self):
    await asyncio.Event().wait()  # a step of stop() that never returns

async def blocking_the_loop(self):
    time.sleep(60)  # a call that blocks the event loop itself

server_module.Server.stop = {stop}

server_module.SHUTDOWN_TIMEOUT = 0.5
config = parse_config('[server]\\nlisten = ["udp:127.0.0.1:0"]\\ndomains = ["example.com"]\\n'
                      '[storage]\\nurl = "memory:"\\n', Path("/nonexistent-presenced-test"))

async def main():
    asyncio.get_running_loop().call_later(0.3, os.kill, os.getpid(), signal.SIGTERM)
    return await server_module.serve(config)

import logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
sys.exit(asyncio.run(main()))
"""


def test_a_shutdown_that_overstays_its_bound_logs_where_it_waits_and_exits_1() -> None:
    """SIGTERM always ends the process: a stop that hangs is reported, task by task, and the
    process exits with 1 after SHUTDOWN_TIMEOUT instead of waiting forever."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _HANGING_STOP.replace("{stop}", "stuck_on_something")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "shutting down" in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "shutdown did not finish" in x)
    assert "within 0.5 s; exiting anyway" in line, line
    assert "shutdown: " in line and "stuck_on_something" in line, line


def test_a_shutdown_that_blocks_the_event_loop_still_ends_with_every_stack_shown() -> None:
    """The asyncio bound cannot fire while a call blocks the loop: faulthandler's thread dumps
    the stacks and exits 2 s after it."""
    import subprocess

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _HANGING_STOP.replace("{stop}", "blocking_the_loop")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 20  # not the 60 s the call would block
    assert "Timeout (0:00:02.500000)!" in proc.stderr, proc.stderr
    assert "in blocking_the_loop" in proc.stderr, proc.stderr


async def test_cancel_and_wait_stops_a_loop_whose_cancel_wait_for_swallowed() -> None:
    """On Python 3.11 `asyncio.wait_for` returns the inner result when a cancel arrives as the
    inner call completes (redis-py awaits through it): one cancel is lost and a lease loop
    ran on, so a cluster node's stop waited forever. Cancelling again until it ends stops it."""
    from presenced.tasks import cancel_and_wait

    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = []

    async def lease_loop() -> None:
        while True:
            futures.append(loop.create_future())
            await asyncio.wait_for(futures[-1], 30)

    task = loop.create_task(lease_loop())
    await asyncio.sleep(0)
    futures[-1].set_result(None)
    task.cancel()  # in the same turn as the inner call's completion
    await asyncio.sleep(0.01)
    if sys.version_info < (3, 12):
        assert not task.done() and len(futures) == 2  # the cancel was lost: it loops on
    started = loop.time()
    assert await cancel_and_wait([task]) == 0
    assert task.cancelled() and loop.time() - started < 1


async def test_cancel_and_wait_gives_up_on_a_task_that_refuses_at_its_bound() -> None:
    from presenced.tasks import cancel_and_wait

    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=0.3) == 1 and not task.done()
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.done()
