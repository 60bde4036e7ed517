"""Storage backends: record round-trips on both backends, SQLite durability, migrations, errors.

SQLite tests use real files under tmp_path; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from storage_records import binding, publication, subscription

from presenced.storage import StorageClosedError, StorageError, open_storage
from presenced.storage.base import Binding, Publication, Storage, Subscription
from presenced.storage.memory import MemoryStorage
from presenced.storage.sqlite import Migration, SqliteStorage, bundled_migrations


@pytest.fixture(params=["memory", "sqlite", "sqlite-thread"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store: Storage = (
        MemoryStorage() if request.param == "memory"
        else SqliteStorage(tmp_path / "p.db", writer="thread") if request.param == "sqlite-thread"
        else SqliteStorage(tmp_path / "p.db")
    )
    await store.open()
    yield store
    await store.close()


@pytest.fixture(params=["inline", "thread"])
def writer(request: pytest.FixtureRequest) -> str:
    """The SQLite writer: on the event loop (the default) or on its own thread."""
    return str(request.param)


async def reopened(path: Path, writer: str = "inline") -> SqliteStorage:
    store = SqliteStorage(path, writer=writer)
    await store.open()
    return store


# --- records, both backends ---------------------------------------------------------------------


async def test_binding_put_replace_delete_load(storage: Storage) -> None:
    first = binding()
    await storage.put_binding(first)
    assert await storage.load_bindings() == [first]

    # Same (aor, contact): a re-REGISTER replaces the binding (RFC 3261 §10.3 step 7).
    refreshed = binding(cseq=8, expires_at=1_900_000_900.0, q=None, instance=None)
    await storage.put_binding(refreshed)
    assert await storage.load_bindings() == [refreshed]

    other = binding("sip:alice@192.0.2.2:5060")
    await storage.put_binding(other)
    assert sorted(await storage.load_bindings(), key=lambda b: b.contact) == [refreshed, other]

    await storage.delete_binding("alice@example.com", "sip:alice@192.0.2.1:5060")
    await storage.delete_binding("alice@example.com", "sip:nobody@192.0.2.9")  # absent: no error
    assert await storage.load_bindings() == [other]


async def test_subscription_put_replace_delete_load_keeps_every_field(storage: Storage) -> None:
    sub = subscription()
    no_routes = subscription("cid-2;a;b", route_set=(), event_id=None, state="active")
    await storage.put_subscription(sub)
    await storage.put_subscription(no_routes)
    loaded = sorted(await storage.load_subscriptions(), key=lambda s: s.id)
    assert loaded == [sub, no_routes]
    assert loaded[0].route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert isinstance(loaded[1].route_set, tuple)

    bumped = msgspec.structs.replace(sub, local_cseq=4, version=5, state="active")
    await storage.put_subscription(bumped)
    assert sorted(await storage.load_subscriptions(), key=lambda s: s.id) == [bumped, no_routes]

    await storage.delete_subscription(sub.id)
    await storage.delete_subscription("absent")
    assert await storage.load_subscriptions() == [no_routes]


async def test_publication_put_replace_delete_load_keeps_binary_body(storage: Storage) -> None:
    pub = publication()
    await storage.put_publication(pub)
    loaded = await storage.load_publications()
    assert loaded == [pub]
    assert type(loaded[0].body) is bytes

    modified = publication(body=b"<presence>v2</presence>", expires_at=1_900_000_300.0)
    await storage.put_publication(modified)
    assert await storage.load_publications() == [modified]

    await storage.delete_publication("etag-1")
    await storage.delete_publication("absent")
    assert await storage.load_publications() == []


async def test_put_publication_with_replaces_swaps_the_etag(storage: Storage) -> None:
    # RFC 3903 §4.4: a refresh/modify answers with a new entity-tag; the old one is gone.
    await storage.put_publication(publication("old"))
    await storage.put_publication(publication("bystander", presentity="bob@example.com"))
    await storage.put_publication(publication("new"), replaces="old")
    assert sorted(p.etag for p in await storage.load_publications()) == ["bystander", "new"]


async def test_put_publication_replacing_itself_keeps_it(storage: Storage) -> None:
    await storage.put_publication(publication("same"))
    await storage.put_publication(publication("same", body=b"v2"), replaces="same")
    assert await storage.load_publications() == [publication("same", body=b"v2")]


async def test_load_returns_a_copy(storage: Storage) -> None:
    await storage.put_binding(binding())
    first = await storage.load_bindings()
    first.clear()
    assert len(await storage.load_bindings()) == 1


async def test_thousand_gathered_puts_all_land(storage: Storage) -> None:
    await asyncio.gather(
        *(storage.put_binding(binding(f"sip:alice@192.0.2.1:{5000 + i}")) for i in range(1000))
    )
    await asyncio.gather(
        *(storage.put_subscription(subscription(f"cid-{i};l;r")) for i in range(1000))
    )
    assert len(await storage.load_bindings()) == 1000
    assert len(await storage.load_subscriptions()) == 1000


async def test_write_after_close_raises_closed_error(storage: Storage) -> None:
    await storage.close()
    with pytest.raises(StorageClosedError, match="not open"):
        await storage.put_binding(binding())
    with pytest.raises(StorageClosedError):
        await storage.load_publications()


# --- SQLite durability and error isolation --------------------------------------------------------


async def test_sqlite_records_survive_close_and_reopen(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "p.db"
    store = await reopened(path, writer)
    await store.put_binding(binding())
    await store.put_subscription(subscription())
    await store.put_publication(publication())
    await store.close()

    store = await reopened(path, writer)
    try:
        assert await store.load_bindings() == [binding()]
        assert await store.load_subscriptions() == [subscription()]
        assert await store.load_publications() == [publication()]
    finally:
        await store.close()


async def test_sqlite_close_commits_writes_already_submitted(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "p.db"
    store = await reopened(path, writer)
    tasks = [
        asyncio.create_task(store.put_binding(binding(f"sip:a@192.0.2.1:{i}"))) for i in range(200)
    ]
    await asyncio.sleep(0)  # let every task submit its write
    await store.close()
    assert all(t.done() and t.exception() is None for t in tasks)

    store = await reopened(path, writer)
    try:
        assert len(await store.load_bindings()) == 200
    finally:
        await store.close()


async def test_sqlite_failed_write_reaches_only_its_awaiter(tmp_path: Path, writer: str) -> None:
    store = await reopened(tmp_path / "p.db", writer)
    try:
        good = [binding(f"sip:a@192.0.2.1:{i}") for i in range(50)]
        bad = binding("sip:bad@192.0.2.1", cseq=2**70)  # too big for an SQLite INTEGER
        results = await asyncio.gather(
            *(store.put_binding(b) for b in good[:25]),
            store.put_binding(bad),
            *(store.put_binding(b) for b in good[25:]),
            return_exceptions=True,
        )
        errors = [r for r in results if r is not None]
        assert len(errors) == 1
        assert isinstance(errors[0], StorageError)
        assert "put_binding" in str(errors[0])
        assert sorted(b.contact for b in await store.load_bindings()) == sorted(
            b.contact for b in good
        )
        # The writer is still serving.
        await store.put_binding(binding("sip:after@192.0.2.1"))
        assert len(await store.load_bindings()) == 51
    finally:
        await store.close()


async def test_sqlite_publication_replace_is_atomic(tmp_path: Path, writer: str) -> None:
    # If inserting the new entity fails, the old ETag must survive (no window without state).
    store = await reopened(tmp_path / "p.db", writer)
    try:
        await store.put_publication(publication("old"))
        broken = publication("new", body=None)  # violates body NOT NULL
        with pytest.raises(StorageError):
            await store.put_publication(broken, replaces="old")
        assert [p.etag for p in await store.load_publications()] == ["old"]
    finally:
        await store.close()


_KILL_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from presenced.pa.records import Binding
    from presenced.storage.sqlite import SqliteStorage

    async def main() -> None:
        store = SqliteStorage(Path(sys.argv[1]))
        await store.open()
        await store.put_binding(Binding(aor="k@example.com", contact="sip:k@192.0.2.5",
                                        expires_at=2e9, call_id="c", cseq=1))
        print("committed", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_sqlite_binding_survives_kill_9_after_await(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    with subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "committed"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
    store = await reopened(path)
    try:
        assert [(b.aor, b.contact) for b in await store.load_bindings()] == [
            ("k@example.com", "sip:k@192.0.2.5")
        ]
    finally:
        await store.close()


# --- SQLite schema and migrations -----------------------------------------------------------------


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


async def test_sqlite_reopen_does_not_reapply_migrations(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "p.db"  # parent directories are created
    store = await reopened(path)
    await store.put_binding(binding())
    await store.close()
    store = await reopened(path)  # CREATE TABLE would fail if 001 ran again
    await store.close()
    assert user_version(path) == len(bundled_migrations()) >= 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM bindings").fetchone()[0] == 1


def test_bundled_migrations_are_numbered_from_one() -> None:
    migrations = bundled_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "001_initial.sql"


@pytest.mark.parametrize(
    ("table", "record"),
    [("bindings", Binding), ("subscriptions", Subscription), ("publications", Publication)],
)
async def test_sqlite_schema_columns_match_record_fields(
    tmp_path: Path, table: str, record: type[msgspec.Struct]
) -> None:
    path = tmp_path / "p.db"
    await (await reopened(path)).close()
    with sqlite3.connect(path) as conn:
        columns = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))
    assert columns == record.__struct_fields__


async def test_sqlite_new_migration_applies_on_top_of_existing_schema(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    m1 = Migration(1, "001_a.sql", "CREATE TABLE a (x TEXT); -- trailing comment; with ';'\n")
    m2 = Migration(
        2,
        "002_b.sql",
        "ALTER TABLE a ADD COLUMN y TEXT DEFAULT 'semi;colon';\n"
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET y = 'z'; END;\n"
        "INSERT INTO a (x) VALUES ('1')",  # last statement without ';'
    )
    store = SqliteStorage(path, migrations=[m1])
    await store.open()
    await store.close()
    assert user_version(path) == 1

    store = SqliteStorage(path, migrations=[m1, m2])
    await store.open()
    await store.close()
    assert user_version(path) == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT x, y FROM a").fetchall() == [("1", "z")]


async def test_sqlite_schema_4_rows_survive_the_move_to_without_rowid(tmp_path: Path) -> None:
    # A database an earlier presenced left at schema 4 (rowid tables), with one row of each kind.
    path = tmp_path / "p.db"
    store = SqliteStorage(path, migrations=bundled_migrations()[:4])
    await store.open()
    sub, pub = subscription("s1"), publication("e1")  # every field set
    await store.put_subscription(sub)
    await store.put_publication(pub)
    await store.close()
    assert user_version(path) == 4

    store = await reopened(path)
    try:
        assert await store.load_subscriptions() == [sub]
        assert await store.load_publications() == [pub]
    finally:
        await store.close()
    assert user_version(path) == 5
    with sqlite3.connect(path) as conn:
        for table in ("subscriptions", "publications"):
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
            assert sql[0].rstrip().endswith("WITHOUT ROWID"), sql
        # No key index beside the table any more (a rowid table with a TEXT key has one).
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert not any(n.startswith("sqlite_autoindex_subscriptions") for n in names), names


async def test_sqlite_a_subscription_write_appends_one_wal_frame(tmp_path: Path) -> None:
    # The point of schema 5: one leaf page per write, so one 4 KiB frame per commit (two, and
    # five for a 900-byte publication, with rowid tables and their key index).
    path = tmp_path / "p.db"
    store = await reopened(path)
    wal = Path(f"{path}-wal")
    try:
        for i in range(200):
            await store.put_subscription(subscription(f"warm{i:04d}"))
        before = wal.stat().st_size
        for i in range(100):
            await store.put_subscription(subscription(f"new{i:04d}"))
            await store.delete_subscription(f"new{i:04d}")
        frames = (wal.stat().st_size - before) / (4096 + 24) / 200
    finally:
        await store.close()
    assert 0.9 < frames < 1.3, frames


async def test_sqlite_failed_migration_rolls_back_entirely(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    broken = Migration(1, "001_broken.sql", "CREATE TABLE a (x); CREATE TABLE oops (;")
    store = SqliteStorage(path, migrations=[broken])
    with pytest.raises(StorageError, match=r"migration 001_broken\.sql failed"):
        await store.open()
    assert user_version(path) == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'a'").fetchall() == []


def test_sqlite_migration_numbering_gap_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="expected number 002"):
        SqliteStorage(tmp_path / "p.db", migrations=[Migration(1, "a", ""), Migration(3, "c", "")])


async def test_sqlite_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StorageError, match="schema version 99, newer"):
        await SqliteStorage(path).open()


# --- SQLite: unusable files give clear errors ----------------------------------------------------


async def test_sqlite_corrupt_file_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not an SQLite database, just junk\n" * 200)
    store = SqliteStorage(path)
    with pytest.raises(StorageError, match=r"corrupt\.db.*not a database"):
        await store.open()
    with pytest.raises(StorageClosedError):
        await store.put_binding(binding())


async def test_sqlite_path_under_a_regular_file_gives_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plainfile").write_text("x")
    with pytest.raises(StorageError, match=r"cannot create directory .*plainfile"):
        await SqliteStorage(tmp_path / "plainfile" / "p.db").open()


async def test_sqlite_path_that_is_a_directory_gives_clear_error(tmp_path: Path) -> None:
    (tmp_path / "adir.db").mkdir()
    with pytest.raises(StorageError, match=r"cannot open SQLite database .*adir\.db"):
        await SqliteStorage(tmp_path / "adir.db").open()


# --- factory ------------------------------------------------------------------------------------


def test_open_storage_memory(tmp_path: Path) -> None:
    assert isinstance(open_storage("memory:", tmp_path), MemoryStorage)


def test_open_storage_sqlite_relative_path_is_under_base_dir(tmp_path: Path) -> None:
    store = open_storage("sqlite:///data/presence.db", tmp_path)
    assert isinstance(store, SqliteStorage)
    assert store.path == tmp_path / "data" / "presence.db"


def test_open_storage_sqlite_four_slashes_is_absolute(tmp_path: Path) -> None:
    store = open_storage("sqlite:////var/lib/presenced/p.db", tmp_path)
    assert isinstance(store, SqliteStorage)
    assert store.path == Path("/var/lib/presenced/p.db")


def test_open_storage_builds_the_redis_backend_for_a_redis_url(tmp_path: Path) -> None:
    from presenced.storage.redis import RedisStorage

    storage = open_storage("redis://localhost:6379/0", tmp_path)
    assert isinstance(storage, RedisStorage)  # built, not yet connected


@pytest.mark.parametrize("url", ["sqlite://host/p.db", "sqlite:///", "postgres://x/y", "p.db"])
def test_open_storage_rejects_bad_urls(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="storage url"):
        open_storage(url, tmp_path)


# --- the inline writer (issue 11) ------------------------------------------------------------------


async def test_sqlite_inline_writes_of_one_loop_iteration_share_one_commit(tmp_path: Path) -> None:
    store = await reopened(tmp_path / "p.db")
    try:
        before = store._commits
        await asyncio.gather(*(store.put_binding(binding(f"sip:a@192.0.2.1:{i}"))
                               for i in range(100)))
        assert store._commits == before + 1  # group commit: one transaction for the burst
        assert len(await store.load_bindings()) == 100
    finally:
        await store.close()


def test_sqlite_writer_follows_the_durability_mode(tmp_path: Path) -> None:
    """A per-commit fsync (FULL, EXTRA) would stall the loop: those keep the writer thread."""
    assert SqliteStorage(tmp_path / "a.db").writer == "inline"
    assert SqliteStorage(tmp_path / "a.db", synchronous="full").writer == "thread"
    assert SqliteStorage(tmp_path / "a.db", synchronous="full", writer="inline").writer == "inline"
    with pytest.raises(ValueError):
        SqliteStorage(tmp_path / "a.db", writer="process")


async def test_sqlite_inline_checkpointer_moves_the_wal_into_the_database(tmp_path: Path) -> None:
    from presenced.storage.sqlite import CHECKPOINT_EVERY

    path = tmp_path / "p.db"
    store = await reopened(path)
    try:
        for i in range(CHECKPOINT_EVERY):
            await store.put_binding(binding(f"sip:a@192.0.2.1:{i}"))
        # The checkpointer thread was asked to checkpoint, and the loop never checkpoints
        # itself (wal_autocheckpoint is 0 on its connection).
        checkpointer = store._checkpointer
        assert checkpointer is not None
        for _ in range(400):
            if checkpointer.runs:
                break
            await asyncio.sleep(0.05)
        assert checkpointer.runs >= 1
        assert store._conn is not None
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        await store.close()
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM bindings").fetchone()[0] == CHECKPOINT_EVERY


async def test_sqlite_a_lone_single_statement_write_autocommits(tmp_path: Path) -> None:
    """One statement is its own transaction; a burst gets BEGIN..COMMIT. A publication that
    replaces an entity-tag is one UPDATE of the old row; with the old row gone, an INSERT."""
    store = await reopened(tmp_path / "p.db")
    try:
        assert store._conn is not None
        seen: list[str] = []
        store._conn.set_trace_callback(seen.append)
        await store.put_binding(binding("sip:a@192.0.2.1:1"))
        assert [s.split()[0] for s in seen] == ["INSERT"]
        seen.clear()
        await asyncio.gather(store.put_binding(binding("sip:a@192.0.2.1:2")),
                             store.delete_binding("alice@example.com", "sip:a@192.0.2.1:1"))
        assert [s.split()[0] for s in seen] == ["BEGIN", "INSERT", "DELETE", "COMMIT"]
        seen.clear()
        await store.put_publication(publication("e1"))
        await store.put_publication(publication("e2"), replaces="e1")
        assert [s.split()[0] for s in seen] == ["INSERT", "UPDATE"]
        seen.clear()
        await store.put_publication(publication("e3"), replaces="gone")  # e.g. expired meanwhile
        assert [s.split()[0] for s in seen] == ["UPDATE", "INSERT"]
        store._conn.set_trace_callback(None)
        assert sorted(p.etag for p in await store.load_publications()) == ["e2", "e3"]
    finally:
        await store.close()
