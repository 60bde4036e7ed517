"""Storage backends and the factory that picks one from a configuration URL.

`open_storage` only builds the backend; the caller awaits `storage.open()` before use and
`storage.close()` at shutdown. Backends are imported lazily so `memory:` never loads sqlite3.
"""

from __future__ import annotations

from pathlib import Path

from presenced.storage.base import Binding, Publication, Storage, Subscription

__all__ = [
    "Binding",
    "Publication",
    "Storage",
    "StorageClosedError",
    "StorageError",
    "Subscription",
    "open_storage",
]


class StorageError(Exception):
    """The backend cannot do what was asked: unusable file, failed migration, failed write."""


class StorageClosedError(StorageError):
    """An operation was submitted to a backend that is not open (never opened, or closed)."""


_SQLITE_PREFIX = "sqlite:///"


def open_storage(url: str, base_dir: Path) -> Storage:
    """Build the backend named by `url` (not yet opened).

    - ``memory:`` -- in-process dicts, lost at exit.
    - ``sqlite:///rel/path.db`` -- a file relative to `base_dir`.
    - ``sqlite:////abs/path.db`` -- an absolute path.
    - ``redis://[:PASSWORD@]HOST[:PORT][/DB][?prefix=KEYPREFIX]`` (also ``rediss://``,
      ``redis+unix://``) -- a Redis server; keys under "presenced:" unless `prefix` says otherwise.
    """
    if url == "memory:" or url == "memory://":
        from presenced.storage.memory import MemoryStorage

        return MemoryStorage()
    if url.startswith(_SQLITE_PREFIX):
        rest = url[len(_SQLITE_PREFIX) :]
        if not rest or rest.endswith("/") or "?" in rest or "#" in rest:
            raise ValueError(
                f"storage url {url!r}: expected sqlite:///relative/file.db or sqlite:////absolute/file.db"
            )
        from presenced.storage.sqlite import SqliteStorage

        path = Path(rest)
        # "sqlite:////abs" leaves "/abs": Path keeps it absolute and `/` below ignores base_dir.
        return SqliteStorage(base_dir / path)
    if url.startswith("sqlite:"):
        raise ValueError(
            f"storage url {url!r}: expected sqlite:///relative/file.db or sqlite:////absolute/file.db"
        )
    if url.startswith(("redis://", "rediss://", "redis+unix://")):
        from presenced.storage.redis import RedisStorage

        # redis-py is imported by open(), so a missing `presenced[redis]` extra is a clear error.
        return RedisStorage(url)
    raise ValueError(f"storage url {url!r}: unknown scheme; use memory: or sqlite:///path.db")
