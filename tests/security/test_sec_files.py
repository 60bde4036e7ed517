"""File permissions (issue 9 finding 8): the SQLite files were created 0644, readable by every
local user. After start the data directory is 0700 and the database and its -wal / -shm 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from harness import ServerProcess, SipClient

ServerFactory = Callable[..., ServerProcess]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_data_dir_0700_and_database_files_0600_after_start(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    old = os.umask(0o022)  # the usual umask, which gave 0644 files before
    try:
        data = tmp_path / "fresh" / "state"
        srv = server_factory(
            "fresh", storage="sqlite:///presence.db", sections={"server": {"data_dir": str(data)}}
        )
    finally:
        os.umask(old)
    client = SipClient(srv.addr, "udp", user="alice", domain=srv.domain)
    try:
        r = client.request(
            "REGISTER", srv.uri(), to=f"<{srv.uri('alice')}>", headers={"Expires": "60"}
        )
        assert r.status == 200  # a write: the -wal file holds it
    finally:
        client.close()
    assert _mode(data) == 0o700
    db = data / "presence.db"
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert path.exists(), path
        assert _mode(path) == 0o600, (path, oct(_mode(path)))


def test_loose_database_files_are_tightened_and_a_loose_directory_is_reported(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data = tmp_path / "old" / "state"
    data.mkdir(parents=True)
    os.chmod(data, 0o755)
    db = data / "presence.db"
    db.touch()
    os.chmod(db, 0o644)
    srv = server_factory(
        "old", storage="sqlite:///presence.db", sections={"server": {"data_dir": str(data)}}
    )
    assert _mode(db) == 0o600
    # An existing directory may be shared (the parent of an absolute path): reported, not changed.
    assert _mode(data) == 0o755
    assert "is accessible to other users" in srv.log_text()
