"""Per-machine state in .pivot/state.db: remembered file and folder hashes and fingerprint
summaries.

Nothing here is committed; deleting the file only costs re-hashing. A folder is remembered as
one `folders` row (the signature of a walk, when, and the hash) and its files in `folder_chunks`
of up to 1024 (see hashing.py), so that one changed file rewrites one chunk, not the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pivot.errors import StateError
from pivot.records import FileMemo, FileMemoRow, FolderChunk, FolderMemo

T = TypeVar("T")

# Bump when the way a stored value is computed changes: old rows are then ignored.
SCHEMA = 1

_TABLES = (
    "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER,"
    " inode INTEGER, checked INTEGER, hash TEXT)",
    "CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, signature TEXT, checked INTEGER,"
    " hash TEXT, manifest TEXT)",
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS folders (path TEXT PRIMARY KEY, signature TEXT, checked INTEGER,"
    " hash TEXT, chunks BLOB, sum TEXT)",
    "CREATE TABLE IF NOT EXISTS folder_chunks (path TEXT, idx INTEGER, data BLOB, text BLOB, sums TEXT,"
    " PRIMARY KEY (path, idx))",
)


# A table as this version reads it: opening checks each, so a schema from another version (a
# table with other columns) is caught at once rather than by the first query that needs it.
_COLUMNS = {"hashes": "path, size, mtime, inode, checked, hash",
            "dirs": "path, signature, checked, hash, manifest",
            "kv": "key, value",
            "folders": "path, signature, checked, hash, chunks, sum",
            "folder_chunks": "path, idx, data, text, sums"}

# sqlite's primary result codes meaning "this is not a state database we can use": SQLITE_ERROR
# (tables of another shape), SQLITE_IOERR (a short read), SQLITE_CORRUPT, SQLITE_CANTOPEN (a
# folder in its place), SQLITE_NOTADB. Busy and locked (another process) are not among them.
_UNREADABLE = {1, 10, 11, 14, 26}


def _unreadable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and (code is None or code & 0xFF in _UNREADABLE)


class State:
    """A small sqlite store. Writes are batched and committed by `commit()` or `close()`.

    It only remembers what can be computed again, so an unreadable database (damaged, truncated,
    a folder in its place, written by another version) is deleted and rebuilt, with one warning
    on stderr naming it, and the command goes on."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._rebuilt = False

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = self._open()
            except sqlite3.Error as exc:
                if not _unreadable(exc):
                    raise
                self._rebuild(exc)
                self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, timeout=30, isolation_level="DEFERRED")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA:  # a newer Pivot's: its rows may mean something else
                raise sqlite3.DatabaseError(f"schema {version} of a newer Pivot; this one reads {SCHEMA}")
            if version != SCHEMA:
                for table in _COLUMNS:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                db.execute(f"PRAGMA user_version={SCHEMA}")
            for sql in _TABLES:
                db.execute(sql)
            for table, columns in _COLUMNS.items():
                db.execute(f"SELECT {columns} FROM {table} LIMIT 1").fetchall()
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _rebuild(self, exc: sqlite3.Error) -> None:
        """Delete the unreadable database (and its journal files) so the next use starts afresh.
        Raises StateError when even that fails, or when it was rebuilt once already."""
        where = self._path.name if self._path.parent.name != ".pivot" else f".pivot/{self._path.name}"
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._rebuilt:
            raise StateError(f"{where}: unreadable even after rebuilding it ({exc}); "
                             "check that .pivot/ is writable and the disk is not full")
        self._rebuilt = True
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                path = self._path.with_name(self._path.name + suffix)
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        except OSError as err:
            raise StateError(f"{where} is unreadable ({exc}) and cannot be removed ({err.strerror}); "
                             f"delete it by hand (it only remembers hashes)") from None
        sys.stderr.write(f"warning: {where} was unreadable ({exc}); rebuilt it (it only remembers "
                         "file hashes, which are computed again)\n")
        sys.stderr.flush()

    def _do(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run `query` on the database; an unreadable one is rebuilt and the query run again."""
        try:
            return query(self.db)
        except sqlite3.Error as exc:
            if not _unreadable(exc):
                raise
            self._rebuild(exc)
            return query(self.db)

    # -- file hashes -------------------------------------------------------
    def get_file(self, path: str) -> FileMemo | None:
        row = self._do(lambda db: db.execute(
            "SELECT size, mtime, inode, checked, hash FROM hashes WHERE path=?", (path,)
        ).fetchone())
        return FileMemo(*row) if row else None

    def get_files_under(self, prefix: str) -> dict[str, FileMemo]:
        rows = self._do(lambda db: db.execute(
            "SELECT path, size, mtime, inode, checked, hash FROM hashes WHERE path >= ? AND path < ?",
            (prefix + "/", prefix + "0"),  # '0' sorts right after '/'
        ).fetchall())
        return {r[0]: FileMemo(*r[1:]) for r in rows}

    def put_files(self, rows: list[FileMemoRow]) -> None:
        self._do(lambda db: db.executemany("INSERT OR REPLACE INTO hashes VALUES (?,?,?,?,?,?)", rows))

    # -- folder hashes -----------------------------------------------------
    # (The `dirs` table of earlier versions is left as it is and no longer read.)
    def get_folder(self, path: str) -> FolderMemo | None:
        """The remembered hash of a folder, without its chunks (what an unchanged folder needs)."""
        row = self._do(lambda db: db.execute(
            "SELECT signature, checked, hash FROM folders WHERE path=?", (path,)).fetchone())
        return FolderMemo(*row) if row else None

    def get_folder_index(self, path: str) -> tuple[bytes, str] | None:
        """The folder's list of chunks, as stored, and its checksum."""
        row = self._do(lambda db: db.execute("SELECT chunks, sum FROM folders WHERE path=?", (path,)).fetchone())
        return (bytes(row[0]), row[1]) if row and row[0] is not None else None

    def get_folder_chunks(self, path: str, idxs: list[int] | None = None) -> dict[int, FolderChunk]:
        """Chunks of a folder by index (all of them without `idxs`)."""
        def query(db: sqlite3.Connection) -> list[Any]:
            sql = "SELECT idx, data, text, sums FROM folder_chunks WHERE path=?"
            if idxs is None:
                return db.execute(sql, (path,)).fetchall()
            return [r for i in idxs for r in db.execute(sql + " AND idx=?", (path, i))]

        return {r[0]: FolderChunk(bytes(r[1]), bytes(r[2]), r[3]) for r in self._do(query)}

    def get_folder_texts(self, path: str, idxs: list[int]) -> dict[int, tuple[bytes, str]]:
        """Only the manifest parts (and checksums) of chunks of a folder."""
        def query(db: sqlite3.Connection) -> list[Any]:
            sql = "SELECT idx, text, sums FROM folder_chunks WHERE path=? AND idx=?"
            return [r for i in idxs for r in db.execute(sql, (path, i))]

        return {r[0]: (bytes(r[1]), r[2]) for r in self._do(query)}

    def put_folder(self, path: str, memo: FolderMemo, index: tuple[bytes, str],
                   chunks: dict[int, FolderChunk], count: int) -> None:
        """Remember a folder: its row, the chunks that changed, and no chunk at or past `count`."""
        def put(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO folders VALUES (?,?,?,?,?,?)", (path, *memo, *index))
            db.executemany("INSERT OR REPLACE INTO folder_chunks VALUES (?,?,?,?,?)",
                           [(path, i, *c) for i, c in chunks.items()])
            db.execute("DELETE FROM folder_chunks WHERE path=? AND idx>=?", (path, count))

        self._do(put)

    # -- generic values ----------------------------------------------------
    def get_json(self, key: str) -> Any:
        row = self._do(lambda db: db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone())
        try:
            return json.loads(row[0]) if row else None
        except (TypeError, ValueError):  # a damaged value is a forgotten one
            return None

    def put_json(self, key: str, value: Any) -> None:
        text = json.dumps(value)
        self._do(lambda db: db.execute("INSERT OR REPLACE INTO kv VALUES (?,?)", (key, text)))

    def drop_json(self, prefix: str, keep: set[str]) -> int:
        """Delete the values whose key starts with `prefix`, except those in `keep`."""
        def drop(db: sqlite3.Connection) -> int:
            keys = [k for (k,) in db.execute("SELECT key FROM kv WHERE key >= ? AND key < ?",
                                             (prefix, prefix + "\U0010ffff")) if k not in keep]
            db.executemany("DELETE FROM kv WHERE key=?", ((k,) for k in keys))
            return len(keys)

        return self._do(drop)

    def drop_missing(self, root: Path) -> int:
        """Forget the hashes of files and folders (relative to root) that no longer exist."""
        def drop(db: sqlite3.Connection) -> int:
            gone = 0
            for table in ("hashes", "dirs", "folders"):
                paths = [p for (p,) in db.execute(f"SELECT path FROM {table}")
                         if not os.path.lexists(os.path.join(root, p))]
                db.executemany(f"DELETE FROM {table} WHERE path=?", ((p,) for p in paths))
                gone += len(paths)
            db.execute("DELETE FROM folder_chunks WHERE path NOT IN (SELECT path FROM folders)")
            return gone

        return self._do(drop)

    def commit(self) -> None:
        if self._db is not None:
            self._do(lambda db: db.commit())

    def close(self) -> None:
        if self._db is not None:
            self.commit()
            if self._db is not None:
                self._db.close()
                self._db = None
