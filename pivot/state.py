"""Per-machine state in .pivot/state.db: remembered file and folder hashes and fingerprint
summaries.

Nothing here is committed; deleting the file only costs re-hashing. A folder is remembered as
one `folders` row (the signature of a walk, when, the hash, and an index of its parts) and its
`folder_parts`: the walk in chunks of 1,024 files ("walk") and the manifest in parts of 1,024
entries ("text"), each with a checksum, so that one changed file rewrites two parts, not the
folder (see hashing.py).
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import xxhash

from pivot.errors import StateError
from pivot.records import FileMemo, FileMemoRow, FolderMemo

T = TypeVar("T")

# Bump when the way a stored value is computed changes: old rows are then ignored.
SCHEMA = 2

# The tables to empty when opening a database of an older schema (by its version), when not all
# of them: 1 -> 2 added the ctime to the file memo and to folder walks, so remembered hashes are
# forgotten (taken again once) while parsed locks and fingerprint summaries (`kv`) are kept.
_DROPPED_SINCE = {1: ("hashes", "folders", "folder_parts")}

_TABLES = (
    "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER,"
    " inode INTEGER, ctime INTEGER, checked INTEGER, hash TEXT)",
    "CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, signature TEXT, checked INTEGER,"
    " hash TEXT, manifest TEXT)",
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS folders (path TEXT PRIMARY KEY, signature TEXT, checked INTEGER,"
    " hash TEXT, parts BLOB, sum TEXT)",
    "CREATE TABLE IF NOT EXISTS folder_parts (path TEXT, kind TEXT, idx INTEGER, data BLOB, sum TEXT,"
    " PRIMARY KEY (path, kind, idx))",
)


# A table as this version reads it: opening checks each, so a schema from another version (a
# table with other columns) is caught at once rather than by the first query that needs it.
_COLUMNS = {"hashes": "path, size, mtime, inode, ctime, checked, hash",
            "dirs": "path, signature, checked, hash, manifest",
            "kv": "key, value",
            "folders": "path, signature, checked, hash, parts, sum",
            "folder_parts": "path, kind, idx, data, sum"}

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
        # Rows read ahead by preload_files: path -> its row (None: no row). A fact "this stat had
        # this hash" stays true, so a row read ahead is as good as one read now; put_files drops
        # the paths it writes, which are then read from the database again.
        self._ahead: dict[str, FileMemo | None] = {}

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
            # A new database turns to WAL in a rollback-journal transaction, then writes its
            # tables as the first transaction of a new WAL: six fsyncs (20-30 ms of a first run on
            # a busy disk) for an empty database, which is rebuilt if lost (`_rebuild`). Nothing
            # is written here to a database that exists; its writes are synced as before (NORMAL).
            db.execute("PRAGMA synchronous=OFF")
            db.execute("PRAGMA journal_mode=WAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA:  # a newer Pivot's: its rows may mean something else
                raise sqlite3.DatabaseError(f"schema {version} of a newer Pivot; this one reads {SCHEMA}")
            if version != SCHEMA:
                for table in _DROPPED_SINCE.get(version, tuple(_COLUMNS)):
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                db.execute(f"PRAGMA user_version={SCHEMA}")
            for sql in _TABLES:
                db.execute(sql)
            for table, columns in _COLUMNS.items():
                db.execute(f"SELECT {columns} FROM {table} LIMIT 1").fetchall()
            db.commit()
            db.execute("PRAGMA synchronous=NORMAL")
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
        import shutil  # lazy: only when rebuilding a damaged database (start-up time)

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
        if path in self._ahead:
            return self._ahead[path]
        row = self._do(lambda db: db.execute(
            "SELECT size, mtime, inode, ctime, checked, hash FROM hashes WHERE path=?", (path,)
        ).fetchone())
        return FileMemo(*row) if row else None

    def get_files_under(self, prefix: str) -> dict[str, FileMemo]:
        rows = self._do(lambda db: db.execute(
            "SELECT path, size, mtime, inode, ctime, checked, hash FROM hashes WHERE path >= ? AND path < ?",
            (prefix + "/", prefix + "0"),  # '0' sorts right after '/'
        ).fetchall())
        return {r[0]: FileMemo(*r[1:]) for r in rows}

    def preload_files(self, paths: list[str]) -> None:
        """Read the rows of many paths in a few queries (a plan of thousands of stages asks for
        each of their deps and outputs)."""
        wanted = [p for p in dict.fromkeys(paths) if p not in self._ahead]
        for i in range(0, len(wanted), 500):
            self._ahead.update(self._rows_of(wanted[i:i + 500]))

    def _rows_of(self, paths: list[str]) -> dict[str, FileMemo | None]:
        sql = ("SELECT path, size, mtime, inode, ctime, checked, hash FROM hashes"
               f" WHERE path IN ({','.join('?' * len(paths))})")
        found: dict[str, FileMemo | None] = dict.fromkeys(paths)
        found.update({r[0]: FileMemo(*r[1:]) for r in self._do(lambda db: db.execute(sql, paths).fetchall())})
        return found

    def put_files(self, rows: list[FileMemoRow]) -> None:
        for r in rows:
            self._ahead.pop(r[0], None)
        self._do(lambda db: db.executemany("INSERT OR REPLACE INTO hashes VALUES (?,?,?,?,?,?,?)", rows))

    # -- folder hashes -----------------------------------------------------
    # (The `dirs` table of earlier versions is left as it is and no longer read.)
    def get_folder(self, path: str) -> FolderMemo | None:
        """The remembered hash of a folder, without its chunks (what an unchanged folder needs)."""
        row = self._do(lambda db: db.execute(
            "SELECT signature, checked, hash FROM folders WHERE path=?", (path,)).fetchone())
        return FolderMemo(*row) if row else None

    def get_folder_index(self, path: str) -> tuple[bytes, str] | None:
        """The folder's index of parts, as stored, and its checksum."""
        row = self._do(lambda db: db.execute("SELECT parts, sum FROM folders WHERE path=?", (path,)).fetchone())
        return (bytes(row[0]), row[1]) if row and row[0] is not None and row[1] is not None else None

    def get_folder_parts(self, path: str, kind: str, idxs: list[int]) -> dict[int, tuple[bytes, str]]:
        """Parts of one kind of a folder, by index: (data, checksum)."""
        def query(db: sqlite3.Connection) -> list[Any]:
            sql = "SELECT idx, data, sum FROM folder_parts WHERE path=? AND kind=? AND idx=?"
            return [r for i in idxs for r in db.execute(sql, (path, kind, i))]

        return {r[0]: (bytes(r[1]), r[2]) for r in self._do(query) if r[1] is not None and r[2] is not None}

    def put_folder(self, path: str, memo: FolderMemo, index: tuple[bytes, str],
                   parts: dict[str, tuple[dict[int, tuple[bytes, str]], int]]) -> None:
        """Remember a folder: its row and, of each kind, the parts that changed (index: data and
        checksum) and how many there are now (those past the count are dropped)."""
        def put(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO folders VALUES (?,?,?,?,?,?)", (path, *memo, *index))
            for kind, (changed, count) in parts.items():
                db.executemany("INSERT OR REPLACE INTO folder_parts VALUES (?,?,?,?,?)",
                               [(path, kind, i, *part) for i, part in changed.items()])
                db.execute("DELETE FROM folder_parts WHERE path=? AND kind=? AND idx>=?", (path, kind, count))

        self._do(put)

    # -- generic values ----------------------------------------------------
    def get_json(self, key: str) -> Any:
        row = self._do(lambda db: db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone())
        try:
            return json.loads(row[0]) if row else None
        except (TypeError, ValueError):  # a damaged value is a forgotten one
            return None

    def values_under(self, prefix: str) -> dict[str, str]:
        """The stored text of every value whose key starts with `prefix`, by key (one query)."""
        return dict(self._do(lambda db: db.execute(
            "SELECT key, value FROM kv WHERE key >= ? AND key < ?", (prefix, prefix + "\U0010ffff")).fetchall()))

    def blobs_under(self, prefix: str) -> dict[str, bytes]:
        """The stored bytes of every value whose key starts with `prefix`, by key (one query)."""
        return dict(self._do(lambda db: db.execute(
            "SELECT key, value FROM kv WHERE key >= ? AND key < ? AND typeof(value) = 'blob'",
            (prefix, prefix + "\U0010ffff")).fetchall()))

    def get_blob(self, key: str) -> bytes | None:
        row = self._do(lambda db: db.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone())
        return row[0] if row and isinstance(row[0], bytes) else None

    def put_blob(self, key: str, value: bytes) -> None:
        self._do(lambda db: db.execute("INSERT OR REPLACE INTO kv VALUES (?,?)", (key, value)))

    def get_sealed(self, key: str) -> Any:
        """The value `put_sealed` stored under `key`; None when there is none or it is damaged."""
        return unseal(self.get_blob(key))

    def put_sealed(self, key: str, value: Any) -> None:
        self.put_blob(key, seal(value))

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
            db.execute("DELETE FROM folder_parts WHERE path NOT IN (SELECT path FROM folders)")
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


_SEAL = 8  # bytes of checksum before a sealed value


def seal(value: Any) -> bytes:
    """`value` (what marshal writes) as bytes with a checksum: a damaged row reads as none."""
    payload = marshal.dumps(value)
    return xxhash.xxh3_64_digest(payload) + payload


def unseal(blob: bytes | None) -> Any:
    """The value `seal` made `blob` from; None when it is missing or damaged."""
    if not isinstance(blob, bytes) or xxhash.xxh3_64_digest(blob[_SEAL:]) != blob[:_SEAL]:
        return None
    try:
        return marshal.loads(blob[_SEAL:])
    except (ValueError, TypeError, EOFError):
        return None
