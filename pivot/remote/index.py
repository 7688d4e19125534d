"""What this clone knows a network remote holds, so a push with nothing new asks (almost) nothing.

Asking S3 whether 10,000 objects are there means listing them: ten requests of 1,000 names each,
which costs seconds on a busy endpoint. Instead, every object this clone pushed, or saw on the
remote, is remembered in `.pivot/tmp/remotes.db`, under the remote's *generation*: a small random
token stored at `pivot-generation` in the remote's root. Whatever could make a remembered object
disappear changes the token first:

- `pivot gc --remote` (from any clone) writes a new token before it deletes anything;
- emptying the remote's folder or bucket removes the token with everything else.

A push reads the token (one request) and trusts what it remembers only if the token is the one it
remembered it under; otherwise it forgets everything about that remote and asks. Packs (pivot/remote/packfile.py) are
remembered the same way: which pack indexes were read under the token, and where each packed
object sits, so a pull reads byte ranges without reading the indexes again. `pivot verify
--remote` never trusts the memory, and forgets whatever it finds missing, so deleting single
objects by hand is mended by running it once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

from pivot.remote.packfile import Entry

MARKER = "pivot-generation"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generation (remote TEXT PRIMARY KEY, token TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS object (remote TEXT NOT NULL, digest TEXT NOT NULL,
                                   PRIMARY KEY (remote, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pack (remote TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
                                 PRIMARY KEY (remote, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packed (remote TEXT NOT NULL, digest TEXT NOT NULL, pack TEXT NOT NULL,
                                   offset INTEGER NOT NULL, length INTEGER NOT NULL,
                                   PRIMARY KEY (remote, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS complete (remote TEXT NOT NULL, digest TEXT NOT NULL, objects INTEGER NOT NULL,
                                     PRIMARY KEY (remote, digest)) WITHOUT ROWID;
"""
_TABLES = ("object", "pack", "packed", "complete")


class RemoteIndex:
    def __init__(self, path: Path, remote: str) -> None:
        self.path = path
        self.remote = remote
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def known(self, token: str) -> set[str]:
        """The objects remembered under `token`; if the remote's token changed, forget them all."""
        try:
            db = self._conn()
            row = db.execute("SELECT token FROM generation WHERE remote = ?", (self.remote,)).fetchone()
            if row is None or row[0] != token:
                self.clear()
                return set()
            return {d for (d,) in db.execute("SELECT digest FROM object WHERE remote = ?", (self.remote,))}
        except sqlite3.Error:
            return set()  # the memory is an optimisation: without it, the remote is asked

    def remembered(self) -> set[str]:
        """The objects remembered under whatever token was last seen, without asking the remote
        (a hint for `pivot status`: a fetch still verifies every object)."""
        try:
            return {d for (d,) in self._conn().execute("SELECT digest FROM object WHERE remote = ?", (self.remote,))}
        except sqlite3.Error:
            return set()

    def add(self, token: str, digests: Iterable[str]) -> None:
        """Remember `digests` as present under `token` (which replaces any other token)."""
        self._under(token, lambda db: db.executemany("INSERT OR IGNORE INTO object VALUES (?, ?)",
                                                     ((self.remote, d) for d in digests)))

    def _under(self, token: str, change: Callable[[sqlite3.Connection], object]) -> None:
        """`change` in one transaction, under `token` (which replaces any other token)."""
        if not token:
            return
        try:
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                self._adopt(db, token)
                change(db)
        except sqlite3.Error:
            pass  # the memory is an optimisation: without it, the remote is asked

    def _adopt(self, db: sqlite3.Connection, token: str) -> None:
        """Inside a transaction: make `token` the remembered one, forgetting all if it changed."""
        row = db.execute("SELECT token FROM generation WHERE remote = ?", (self.remote,)).fetchone()
        if row is None or row[0] != token:
            for table in _TABLES:
                db.execute(f"DELETE FROM {table} WHERE remote = ?", (self.remote,))
            db.execute("INSERT OR REPLACE INTO generation VALUES (?, ?)", (self.remote, token))

    def complete(self, token: str) -> dict[str, int]:
        """Outputs (hash -> number of objects) all of whose objects are remembered as present
        under `token` (none if it changed): a push of only these asks nothing more."""
        try:
            db = self._conn()
            row = db.execute("SELECT token FROM generation WHERE remote = ?", (self.remote,)).fetchone()
            if row is None or row[0] != token:
                return {}
            return dict(db.execute("SELECT digest, objects FROM complete WHERE remote = ?", (self.remote,)).fetchall())
        except sqlite3.Error:
            return {}

    def add_complete(self, token: str, outputs: dict[str, int]) -> None:
        self._under(token, lambda db: db.executemany("INSERT OR REPLACE INTO complete VALUES (?, ?, ?)",
                                                     ((self.remote, d, n) for d, n in outputs.items())))

    def packs(self, token: str) -> dict[str, int]:
        """The packs (name -> size) whose index was read under `token` (none if it changed)."""
        try:
            db = self._conn()
            row = db.execute("SELECT token FROM generation WHERE remote = ?", (self.remote,)).fetchone()
            if row is None or row[0] != token:
                return {}
            return dict(db.execute("SELECT name, size FROM pack WHERE remote = ?", (self.remote,)).fetchall())
        except sqlite3.Error:
            return {}

    def add_pack(self, token: str, name: str, size: int, entries: list[Entry]) -> None:
        """Remember a pack whose index was read or written, and where each of its objects sits."""
        def change(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO pack VALUES (?, ?, ?)", (self.remote, name, size))
            db.executemany("INSERT OR IGNORE INTO packed VALUES (?, ?, ?, ?, ?)",
                           ((self.remote, e.digest, e.pack, e.offset, e.length) for e in entries))
            db.executemany("INSERT OR IGNORE INTO object VALUES (?, ?)", ((self.remote, e.digest) for e in entries))

        self._under(token, change)

    def located(self) -> dict[str, Entry]:
        """Where each remembered packed object sits (trusted only after `packs(token)` agreed)."""
        try:
            rows = self._conn().execute("SELECT digest, pack, offset, length FROM packed WHERE remote = ?",
                                        (self.remote,))
            return {d: Entry(d, p, o, n) for d, p, o, n in rows}
        except sqlite3.Error:
            return {}

    def forget(self, digests: Iterable[str]) -> None:
        try:
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                gone = [(self.remote, d) for d in digests]
                db.executemany("DELETE FROM object WHERE remote = ? AND digest = ?", gone)
                db.executemany("DELETE FROM packed WHERE remote = ? AND digest = ?", gone)
                if gone:  # which outputs held them is not recorded: none counts as complete now
                    db.execute("DELETE FROM complete WHERE remote = ?", (self.remote,))
        except sqlite3.Error:
            pass

    def clear(self) -> None:
        try:
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                for table in (*_TABLES, "generation"):
                    db.execute(f"DELETE FROM {table} WHERE remote = ?", (self.remote,))
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
