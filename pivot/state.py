"""Per-machine state in .pivot/state.db: remembered file hashes and fingerprint summaries.

Nothing here is committed; deleting the file only costs re-hashing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from pivot.records import DirMemo, FileMemo, FileMemoRow

# Bump when the way a stored value is computed changes: old rows are then ignored.
SCHEMA = 1

_TABLES = (
    "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER,"
    " inode INTEGER, checked INTEGER, hash TEXT)",
    "CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, signature TEXT, checked INTEGER,"
    " hash TEXT, manifest TEXT)",
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT)",
)


class State:
    """A small sqlite store. Writes are batched and committed by `commit()` or `close()`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, timeout=30, isolation_level="DEFERRED")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA:
                for table in ("hashes", "dirs", "kv"):
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                db.execute(f"PRAGMA user_version={SCHEMA}")
            for sql in _TABLES:
                db.execute(sql)
            db.commit()
            self._db = db
        return self._db

    # -- file hashes -------------------------------------------------------
    def get_file(self, path: str) -> FileMemo | None:
        row = self.db.execute(
            "SELECT size, mtime, inode, checked, hash FROM hashes WHERE path=?", (path,)
        ).fetchone()
        return FileMemo(*row) if row else None

    def get_files_under(self, prefix: str) -> dict[str, FileMemo]:
        rows = self.db.execute(
            "SELECT path, size, mtime, inode, checked, hash FROM hashes WHERE path >= ? AND path < ?",
            (prefix + "/", prefix + "0"),  # '0' sorts right after '/'
        )
        return {r[0]: FileMemo(*r[1:]) for r in rows}

    def put_files(self, rows: list[FileMemoRow]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO hashes VALUES (?,?,?,?,?,?)", rows)

    # -- directory hashes --------------------------------------------------
    def get_dir(self, path: str) -> DirMemo | None:
        row = self.db.execute(
            "SELECT signature, checked, hash, manifest FROM dirs WHERE path=?", (path,)
        ).fetchone()
        return DirMemo(*row) if row else None

    def put_dir(self, path: str, signature: str, checked: int, hash_: str, manifest: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO dirs VALUES (?,?,?,?,?)", (path, signature, checked, hash_, manifest)
        )

    # -- generic values ----------------------------------------------------
    def get_json(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_json(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?,?)", (key, json.dumps(value)))

    def drop_json(self, prefix: str, keep: set[str]) -> int:
        """Delete the values whose key starts with `prefix`, except those in `keep`."""
        keys = [k for (k,) in self.db.execute("SELECT key FROM kv WHERE key >= ? AND key < ?",
                                              (prefix, prefix + "\U0010ffff")) if k not in keep]
        self.db.executemany("DELETE FROM kv WHERE key=?", ((k,) for k in keys))
        return len(keys)

    def drop_missing(self, root: Path) -> int:
        """Forget the hashes of files and folders (relative to root) that no longer exist."""
        gone = 0
        for table in ("hashes", "dirs"):
            paths = [p for (p,) in self.db.execute(f"SELECT path FROM {table}")
                     if not os.path.lexists(os.path.join(root, p))]
            self.db.executemany(f"DELETE FROM {table} WHERE path=?", ((p,) for p in paths))
            gone += len(paths)
        return gone

    def commit(self) -> None:
        if self._db is not None:
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.commit()
            self._db.close()
            self._db = None
