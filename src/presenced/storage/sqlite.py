"""SQLite backend: stdlib sqlite3 on one dedicated writer thread, with group commit.

Theory of operation
-------------------
Every call becomes an op -- a function to run against the connection, its arguments and an
asyncio future -- put on a `queue.SimpleQueue`. The writer thread blocks for the first op, drains
whatever else is queued (up to `max_batch`), runs them all in ONE transaction and COMMITs; only
then does it hand every outcome back to the event loop in a single `call_soon_threadsafe`, which
resolves the futures. So `await put_x(...)` returns after the row is committed, and N concurrent
writers share one commit (and, with synchronous=FULL, one fsync) instead of paying for N.

When an op fails, the batch is rolled back and replayed one op per transaction, so the error
reaches that op's awaiter only and the other writes still commit. Startup loads run on the same
thread as ordinary ops. Cancelling an awaiter does not withdraw its write: it may still commit.

The backend is bound to the event loop that called `open()`.

Two writers (`writer=`), one contract: "inline" (the default with synchronous NORMAL or OFF)
runs the batch on the event loop itself. A COMMIT there is a write(2) into the WAL, tens of
microseconds, which costs less than handing each op to a thread and its answer back
(a queue wake-up, a GIL hand-over, a self-pipe write and a loop wake-up per batch: measured
~60 µs of CPU per write, docs/performance.md). Ops submitted during one loop iteration share
one transaction (the flush is one `call_soon` away), so group commit stays. Checkpoints, which
fsync, run on a checkpointer thread with its own connection (`wal_checkpoint(PASSIVE)` never
blocks the writer), never on the loop. "thread" (the default with FULL or EXTRA, whose
per-commit fsync must not block the loop) is the writer thread described above.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import logging
import os
import queue
import re
import sqlite3
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from presenced.pa.records import Binding, EndedWatchers, Publication, RulesDocument, Subscription
from presenced.storage import StorageClosedError, StorageError

log = logging.getLogger(__name__)

DATA_DIR_MODE = 0o700  # the directory we create for the database (issue 9 #8)
DB_FILE_MODE = 0o600  # the database and its -wal / -shm files


def _tighten(path: Path, mode: int) -> None:
    """Take group and other permissions away from one of our files (absent files are fine)."""
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
        if current & ~mode:
            os.chmod(path, mode)
            log.info("sqlite storage: %s was mode %o, now %o", path, current, mode)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("sqlite storage: cannot restrict %s to mode %o: %s", path, mode, exc)

# Durability: in WAL mode a COMMIT appends the transaction's pages and a commit frame to the -wal
# file with write(2). Once write() returns, the bytes are in the kernel's page cache, which
# outlives the process: kill -9, a segfault or the OOM killer lose nothing that was committed.
# With synchronous=NORMAL only an OS crash or power cut before the next checkpoint's fsync can
# drop the latest commits -- and even then the database stays consistent, because the WAL frame
# checksums stop recovery at the last intact commit. Surviving a process crash is what presenced
# promises, so NORMAL is the default; FULL (one fsync per commit, shared by a whole group-commit
# batch) buys power-loss durability for those who want it.
_SYNCHRONOUS_MODES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

_MIGRATION_FILE = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema step; `version` becomes PRAGMA user_version once it has run."""

    version: int
    name: str
    sql: str


@functools.cache
def bundled_migrations() -> tuple[Migration, ...]:
    """The migrations/NNN_*.sql files shipped with the package, in order, numbered 1..N."""
    root = importlib.resources.files("presenced.storage").joinpath("migrations")
    found: list[Migration] = []
    for entry in root.iterdir():
        m = _MIGRATION_FILE.fullmatch(entry.name)
        if m is not None:
            found.append(Migration(int(m[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    _check_numbering(found)
    return tuple(found)


def _check_numbering(migrations: Sequence[Migration]) -> None:
    for expected, mig in enumerate(migrations, start=1):
        if mig.version != expected:
            raise StorageError(
                f"migration {mig.name}: expected number {expected:03d} (gaps or duplicates)"
            )


def _split_statements(sql: str) -> list[str]:
    """Split a script into single statements (sqlite3's execute() takes one at a time).

    executescript() would do it, but it COMMITs any open transaction first, and a migration must
    run inside the transaction that also bumps user_version. complete_statement() knows about
    string literals, comments and trigger bodies, so a ';' inside them does not split.
    """
    statements: list[str] = []
    buf = ""
    pieces = sql.split(";")
    for piece in pieces[:-1]:
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            statements.append(buf)
            buf = ""
    buf += pieces[-1]
    if buf.strip():
        # Trailing comments (a no-op for execute()) or a last statement without its ';'.
        statements.append(buf)
    return statements


# --- SQL --------------------------------------------------------------------------------------
# Column lists follow the record field order; tests check them against the structs and the schema.

_BINDING_COLS = Binding.__struct_fields__
_SUBSCRIPTION_COLS = Subscription.__struct_fields__
_PUBLICATION_COLS = Publication.__struct_fields__


def _upsert(table: str, cols: Sequence[str], key: Sequence[str]) -> str:
    # Built once at import from the constant names above; values are always bound parameters.
    # UPSERT updates the row in place, where INSERT OR REPLACE would delete and re-insert it.
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


_PUT_BINDING = _upsert("bindings", _BINDING_COLS, ("aor", "contact"))
_DELETE_BINDING = "DELETE FROM bindings WHERE aor = ? AND contact = ?"
_SELECT_BINDINGS = f"SELECT {', '.join(_BINDING_COLS)} FROM bindings"

_PUT_SUBSCRIPTION = _upsert("subscriptions", _SUBSCRIPTION_COLS, ("id",))
_DELETE_SUBSCRIPTION = "DELETE FROM subscriptions WHERE id = ?"
_SELECT_SUBSCRIPTIONS = f"SELECT {', '.join(_SUBSCRIPTION_COLS)} FROM subscriptions"
_ROUTE_SET_INDEX = _SUBSCRIPTION_COLS.index("route_set")

_PUT_PUBLICATION = _upsert("publications", _PUBLICATION_COLS, ("etag",))
_DELETE_PUBLICATION = "DELETE FROM publications WHERE etag = ?"
# A modify or refresh that replaces the entity-tag rewrites the old row, key included: one
# statement where DELETE + INSERT took two and a transaction around them. OR REPLACE: should the
# new tag exist already, that row gives way, as the upsert would have overwritten it.
_REPLACE_PUBLICATION = (
    f"UPDATE OR REPLACE publications SET {', '.join(f'{c} = ?' for c in _PUBLICATION_COLS)} "
    "WHERE etag = ?"
)
_SELECT_PUBLICATIONS = f"SELECT {', '.join(_PUBLICATION_COLS)} FROM publications"

_RULES_COLS = RulesDocument.__struct_fields__
_PUT_RULES = _upsert("rules", _RULES_COLS, ("aor",))
_DELETE_RULES = "DELETE FROM rules WHERE aor = ?"
_SELECT_RULES = f"SELECT {', '.join(_RULES_COLS)} FROM rules"

_ENDED_COLS = EndedWatchers.__struct_fields__
_PUT_ENDED = _upsert("ended_watchers", _ENDED_COLS, ("presentity",))
_DELETE_ENDED = "DELETE FROM ended_watchers WHERE presentity = ?"
_SELECT_ENDED = f"SELECT {', '.join(_ENDED_COLS)} FROM ended_watchers"

_encode_json = msgspec.json.Encoder().encode
_decode_ended = msgspec.json.Decoder(tuple[tuple[str, str, str, str], ...]).decode
_decode_route_set = msgspec.json.Decoder(tuple[str, ...]).decode
_astuple = msgspec.structs.astuple


# --- operations: run on the writer thread, inside a transaction --------------------------------


def _op_put_binding(conn: sqlite3.Connection, binding: Binding) -> None:
    conn.execute(_PUT_BINDING, _astuple(binding))


def _op_delete_binding(conn: sqlite3.Connection, aor: str, contact: str) -> None:
    conn.execute(_DELETE_BINDING, (aor, contact))


def _op_load_bindings(conn: sqlite3.Connection) -> list[Binding]:
    return [Binding(*row) for row in conn.execute(_SELECT_BINDINGS)]


def _op_put_subscription(conn: sqlite3.Connection, sub: Subscription) -> None:
    values = list(_astuple(sub))
    values[_ROUTE_SET_INDEX] = _encode_json(sub.route_set).decode()
    conn.execute(_PUT_SUBSCRIPTION, values)


def _op_delete_subscription(conn: sqlite3.Connection, sub_id: str) -> None:
    conn.execute(_DELETE_SUBSCRIPTION, (sub_id,))


# Columns with few distinct values (a presentity has many watchers, a package many dialogs):
# one shared string each instead of one per row. At a million rows that is ~300 bytes a row.
_SHARED_COLS = tuple(_SUBSCRIPTION_COLS.index(c) for c in
                     ("presentity", "event", "source", "local_uri", "content_type", "state"))


def _op_load_subscriptions(conn: sqlite3.Connection) -> list[Subscription]:
    i = _ROUTE_SET_INDEX
    subs: list[Subscription] = []
    append = subs.append
    shared: dict[str, str] = {}
    share = shared.setdefault
    for row in conn.execute(_SELECT_SUBSCRIPTIONS):
        values = list(row)
        for c in _SHARED_COLS:
            v = values[c]
            values[c] = share(v, v)
        raw = values[i]
        values[i] = () if raw == "[]" else _decode_route_set(raw)
        append(Subscription(*values))
    return subs


def _op_put_publication(conn: sqlite3.Connection, pub: Publication, replaces: str | None) -> None:
    # The old ETag never outlives the new one (RFC 3903 §4.4 -- a refresh or modify replaces the
    # entity-tag): the UPDATE turns the old row into the new one. Only when no old row is left
    # (it expired, or was never stored) is the new one inserted, and then nothing else changes.
    values = _astuple(pub)
    if (replaces is not None and replaces != pub.etag
            and conn.execute(_REPLACE_PUBLICATION, (*values, replaces)).rowcount):
        return
    conn.execute(_PUT_PUBLICATION, values)


def _op_delete_publication(conn: sqlite3.Connection, etag: str) -> None:
    conn.execute(_DELETE_PUBLICATION, (etag,))


def _op_load_publications(conn: sqlite3.Connection) -> list[Publication]:
    return [Publication(*row) for row in conn.execute(_SELECT_PUBLICATIONS)]


def _op_put_rules(conn: sqlite3.Connection, rules: RulesDocument) -> None:
    conn.execute(_PUT_RULES, _astuple(rules))


def _op_delete_rules(conn: sqlite3.Connection, aor: str) -> None:
    conn.execute(_DELETE_RULES, (aor,))


def _op_load_rules(conn: sqlite3.Connection) -> list[RulesDocument]:
    return [RulesDocument(aor, bytes(doc), etag, updated)
            for aor, doc, etag, updated in conn.execute(_SELECT_RULES)]


def _op_put_ended(conn: sqlite3.Connection, ended: EndedWatchers) -> None:
    conn.execute(_PUT_ENDED, (ended.presentity, _encode_json(ended.watchers).decode(),
                              ended.updated))


def _op_delete_ended(conn: sqlite3.Connection, presentity: str) -> None:
    conn.execute(_DELETE_ENDED, (presentity,))


def _op_load_ended(conn: sqlite3.Connection) -> list[EndedWatchers]:
    return [EndedWatchers(p, _decode_ended(w), updated)
            for p, w, updated in conn.execute(_SELECT_ENDED)]


# Ops that run exactly one statement, which autocommit makes atomic by itself.
# Ops that write with one statement, or (a publication that replaces a tag no longer stored) a
# no-op UPDATE and then one INSERT: each is its own transaction in autocommit mode.
_ONE_STATEMENT = frozenset({_op_put_binding, _op_delete_binding, _op_put_subscription,
                            _op_delete_subscription, _op_put_publication,
                            _op_delete_publication})


def _one_statement(op: tuple[Callable[..., Any] | None, tuple[Any, ...], Any]) -> bool:
    return op[0] in _ONE_STATEMENT


# --- the backend --------------------------------------------------------------------------------

# (function, arguments, future); function None is the stop request, its future resolves on close.
_Op = tuple[Callable[..., Any] | None, tuple[Any, ...], "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", BaseException | None, Any]


def _settle(outcomes: list[_Outcome]) -> None:
    """On the loop: resolve the futures of one committed batch."""
    for fut, exc, value in outcomes:
        if fut.done():  # the awaiter was cancelled
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("sqlite rollback failed")


class SqliteStorage:
    """`Storage` on one SQLite file. Writes are committed (WAL) when their awaitable returns."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        max_batch: int = 1024,
        migrations: Sequence[Migration] | None = None,
        writer: str | None = None,
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS_MODES)}")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if writer is None:
            writer = "thread" if mode in ("FULL", "EXTRA") else "inline"
        if writer not in ("inline", "thread"):
            raise ValueError('writer must be "inline" or "thread"')
        self.writer = writer
        self.path = Path(path)
        self._synchronous = mode
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._max_batch = max_batch
        if migrations is not None:
            _check_numbering(migrations)
        self._migrations = migrations
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._accepting = False
        # inline writer: the connection, the ops of this loop iteration, the checkpointer
        self._conn: sqlite3.Connection | None = None
        self._pending: list[_Op] = []
        self._commits = 0
        self._checkpointer: _Checkpointer | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the file and its directory if needed, switch to WAL, apply pending migrations."""
        if self._thread is not None or self._conn is not None:
            raise StorageError(f"sqlite storage {self.path} is already open")
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.writer == "inline":
            try:
                conn = self._connect()
            except StorageError:
                raise
            except Exception as exc:
                raise StorageError(f"cannot open SQLite database {self.path}: {exc}") from exc
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's job, off the loop
            self._conn = conn
            self._pending = []
            self._checkpointer = _Checkpointer(self.path, self._busy_timeout_ms)
            self._accepting = True
            return
        self._queue = queue.SimpleQueue()
        ready: asyncio.Future[None] = loop.create_future()
        thread = threading.Thread(
            target=self._thread_main,
            args=(loop, self._queue, ready),
            name=f"sqlite-writer:{self.path.name}",
            daemon=True,  # never hold up interpreter exit; WAL makes an abrupt stop safe
        )
        self._thread = thread
        thread.start()
        try:
            await ready
        except BaseException:
            self._thread = None
            # If we were cancelled the thread may still come up: tell it to go away again.
            self._queue.put((None, (), loop.create_future()))
            raise
        self._accepting = True

    async def close(self) -> None:
        """Commit everything already submitted, then stop the writer thread. Idempotent."""
        conn = self._conn
        if conn is not None:
            self._accepting = False
            self._flush()
            await asyncio.sleep(0)  # the awaiters of that last batch resume before we return
            self._conn = None
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            try:
                conn.close()  # the last connection: SQLite checkpoints the WAL into the file
            except sqlite3.Error:
                log.exception("closing %s failed", self.path)
            return
        thread = self._thread
        if thread is None or self._loop is None:
            return
        self._accepting = False
        if not thread.is_alive():  # only after a writer-thread crash, already logged
            self._thread = None
            return
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((None, (), done))
        await done
        self._thread = None

    # --- the Storage protocol --------------------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if not self._accepting:
            raise StorageClosedError(
                f"sqlite storage {self.path} is not open (closed or never opened)"
            )
        assert self._loop is not None
        fut = self._loop.create_future()
        if self._conn is not None:
            pending = self._pending
            if not pending:
                self._loop.call_soon(self._flush)
            pending.append((fn, args, fut))
            if len(pending) >= self._max_batch:
                self._flush()
        else:
            self._queue.put((fn, args, fut))
        return fut

    def _flush(self) -> None:
        """Inline writer: commit the ops submitted since the last flush, then resolve them."""
        batch = self._pending
        conn = self._conn
        if not batch or conn is None:
            return
        self._pending = []
        _settle(self._run_batch(conn, batch))
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and self._checkpointer is not None:
            self._checkpointer.poke()

    async def put_binding(self, binding: Binding) -> None:
        await self._submit(_op_put_binding, (binding,))

    async def delete_binding(self, aor: str, contact: str) -> None:
        await self._submit(_op_delete_binding, (aor, contact))

    async def load_bindings(self) -> list[Binding]:
        result: list[Binding] = await self._submit(_op_load_bindings, ())
        return result

    async def put_subscription(self, sub: Subscription) -> None:
        await self._submit(_op_put_subscription, (sub,))

    async def delete_subscription(self, sub_id: str) -> None:
        await self._submit(_op_delete_subscription, (sub_id,))

    async def load_subscriptions(self) -> list[Subscription]:
        result: list[Subscription] = await self._submit(_op_load_subscriptions, ())
        return result

    async def put_publication(self, pub: Publication, replaces: str | None = None) -> None:
        await self._submit(_op_put_publication, (pub, replaces))

    async def delete_publication(self, etag: str) -> None:
        await self._submit(_op_delete_publication, (etag,))

    async def load_publications(self) -> list[Publication]:
        result: list[Publication] = await self._submit(_op_load_publications, ())
        return result

    async def put_rules(self, rules: RulesDocument) -> None:
        await self._submit(_op_put_rules, (rules,))

    async def delete_rules(self, aor: str) -> None:
        await self._submit(_op_delete_rules, (aor,))

    async def load_rules(self) -> list[RulesDocument]:
        result: list[RulesDocument] = await self._submit(_op_load_rules, ())
        return result

    async def put_ended_watchers(self, ended: EndedWatchers) -> None:
        await self._submit(_op_put_ended, (ended,))

    async def delete_ended_watchers(self, presentity: str) -> None:
        await self._submit(_op_delete_ended, (presentity,))

    async def load_ended_watchers(self) -> list[EndedWatchers]:
        result: list[EndedWatchers] = await self._submit(_op_load_ended, ())
        return result

    # --- writer thread ---------------------------------------------------------------------------

    def _thread_main(
        self,
        loop: asyncio.AbstractEventLoop,
        ops: queue.SimpleQueue[_Op],
        ready: asyncio.Future[None],
    ) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            if not isinstance(exc, StorageError):
                wrapped = StorageError(f"cannot open SQLite database {self.path}: {exc}")
                wrapped.__cause__ = exc
                exc = wrapped
            self._deliver(loop, [(ready, exc, None)])
            return
        self._deliver(loop, [(ready, None, None)])
        stop_fut: asyncio.Future[Any] | None = None
        try:
            stop_fut = self._serve(conn, loop, ops)
        except BaseException as exc:  # a bug, not a failed write: fail everyone, loudly
            log.exception("sqlite writer thread for %s died", self.path)
            self._accepting = False
            self._fail_pending(loop, ops, exc)
        finally:
            try:
                conn.close()
            except sqlite3.Error:
                log.exception("closing %s failed", self.path)
            if stop_fut is not None:
                self._deliver(loop, [(stop_fut, None, None)])

    def _fail_pending(
        self, loop: asyncio.AbstractEventLoop, ops: queue.SimpleQueue[_Op], exc: BaseException
    ) -> None:
        err = StorageError(f"sqlite writer thread for {self.path} died: {exc!r}")
        outcomes: list[_Outcome] = []
        while True:
            try:
                fn, _, fut = ops.get_nowait()
            except queue.Empty:
                break
            # A close() waiting on its stop request just completes; writes get the error.
            outcomes.append((fut, None, None) if fn is None else (fut, err, None))
        self._deliver(loop, outcomes)

    def _connect(self) -> sqlite3.Connection:
        self._prepare_files()
        conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=32)
        try:
            # PRAGMA values cannot be bound parameters; both are validated in __init__.
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(
                    f"SQLite database {self.path}: cannot switch to WAL mode (got {mode!r})"
                )
            # Files an older presenced (or SQLite before the db file was ours) left readable.
            for suffix in ("", "-wal", "-shm"):
                _tighten(Path(f"{self.path}{suffix}"), DB_FILE_MODE)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            version = self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        log.info("sqlite storage %s open, schema version %d", self.path, version)
        return conn

    def _prepare_files(self) -> None:
        """The directory 0700 when we create it, the database file 0600 before SQLite opens it.

        SQLite creates the -wal and -shm files with the database file's permissions, so the
        first file's mode covers all three. A directory that already exists is not changed
        (it may be shared, e.g. the parent of ``sqlite:////var/lib/x.db``): a warning says
        when others can read it.
        """
        parent = self.path.parent
        try:
            if not parent.is_dir():
                parent.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
                os.chmod(parent, DATA_DIR_MODE)  # mkdir's mode passes through the umask
            elif stat.S_IMODE(parent.stat().st_mode) & 0o077:
                log.warning(
                    "data directory %s is accessible to other users (mode %o); "
                    "chmod 700 it to keep presence data private",
                    parent,
                    stat.S_IMODE(parent.stat().st_mode),
                )
        except OSError as exc:
            raise StorageError(
                f"cannot create directory {parent} for SQLite database: {exc}"
            ) from exc
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, DB_FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot open SQLite database {self.path}: {exc}") from exc
        os.close(fd)

    def _migrate(self, conn: sqlite3.Connection) -> int:
        migrations = self._migrations if self._migrations is not None else bundled_migrations()
        latest = migrations[-1].version if migrations else 0
        current: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > latest:
            raise StorageError(
                f"SQLite database {self.path} has schema version {current}, newer than the "
                f"{latest} this presenced knows; refusing to touch it"
            )
        for mig in migrations:
            if mig.version <= current:
                continue
            try:
                conn.execute("BEGIN IMMEDIATE")
                # Re-read under the write lock: another process may have migrated meanwhile.
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                if current >= mig.version:
                    conn.execute("ROLLBACK")
                    continue
                for statement in _split_statements(mig.sql):
                    conn.execute(statement)
                # user_version lives in the database header and is part of this transaction.
                conn.execute(f"PRAGMA user_version = {mig.version:d}")
                conn.execute("COMMIT")
            except Exception as exc:
                _rollback(conn)
                raise StorageError(
                    f"SQLite database {self.path}: migration {mig.name} failed: {exc}"
                ) from exc
            log.info("sqlite storage %s: applied migration %s", self.path, mig.name)
            current = mig.version
        return current

    def _serve(
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        ops: queue.SimpleQueue[_Op],
    ) -> asyncio.Future[Any]:
        """Run batches until the stop request; return its future."""
        get = ops.get
        get_nowait = ops.get_nowait
        max_batch = self._max_batch
        while True:
            op = get()
            stop: asyncio.Future[Any] | None = None
            batch: list[_Op] = []
            while True:
                if op[0] is None:
                    stop = op[2]
                    break
                batch.append(op)
                if len(batch) >= max_batch:
                    break
                try:
                    op = get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._deliver(loop, self._run_batch(conn, batch))
            if stop is not None:
                return stop

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Op]) -> list[_Outcome]:
        if len(batch) == 1 and _one_statement(batch[0]):
            # One statement is its own transaction in autocommit mode: the same commit with
            # two round trips through sqlite3 fewer than BEGIN ... COMMIT around it.
            return [self._run_one(conn, batch[0], autocommit=True)]
        values: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, _ in batch:
                assert fn is not None
                values.append(fn(conn, *args))
            conn.execute("COMMIT")
        except Exception:
            _rollback(conn)
            if len(batch) > 1:
                log.warning("sqlite batch of %d failed; retrying one by one", len(batch))
            return [self._run_one(conn, op) for op in batch]
        return [(op[2], None, value) for op, value in zip(batch, values, strict=True)]

    def _run_one(self, conn: sqlite3.Connection, op: _Op, autocommit: bool = False) -> _Outcome:
        fn, args, fut = op
        assert fn is not None
        try:
            if autocommit:
                value = fn(conn, *args)
            else:
                conn.execute("BEGIN IMMEDIATE")
                value = fn(conn, *args)
                conn.execute("COMMIT")
        except Exception as exc:
            _rollback(conn)
            err = StorageError(f"SQLite database {self.path}: {fn.__name__[4:]} failed: {exc}")
            err.__cause__ = exc
            return (fut, err, None)
        return (fut, None, value)

    def _deliver(self, loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
        try:
            loop.call_soon_threadsafe(_settle, outcomes)
        except RuntimeError:  # the loop is closed; nobody is waiting any more
            log.warning("sqlite storage %s: event loop closed before results arrived", self.path)


CHECKPOINT_EVERY = 256  # inline writer: commits between checkpoint requests


class _Checkpointer:
    """A thread with its own connection that copies the WAL into the database file when poked,
    so the fsyncs of a checkpoint never block the event loop (inline writer only)."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._wake = threading.Event()
        self._stopping = False
        self.runs = 0  # checkpoints done
        self._thread = threading.Thread(target=self._main, name=f"sqlite-checkpoint:{path.name}",
                                        daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(30)

    def _main(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error:
            log.exception("sqlite checkpointer for %s cannot open it", self._path)
            return
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                except sqlite3.Error as exc:
                    log.warning("sqlite checkpoint of %s failed: %s", self._path, exc)
        finally:
            conn.close()
