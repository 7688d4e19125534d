"""What this clone knows a network remote holds, so a push with nothing new asks (almost) nothing.

Asking S3 whether 10,000 objects are there means listing them: ten requests of 1,000 names each,
which costs seconds on a busy endpoint. Instead, every object this clone pushed, or saw on the
remote, is remembered in `.pivot/tmp/remotes.db`, under the remote's *generation*: a small random
token stored at `pivot-generation` in the remote's root. Whatever could make a remembered object
disappear changes the token first:

- `pivot gc --remote` (from any clone) writes a new token before it deletes anything;
- emptying the remote's folder or bucket removes the token with everything else.

A push reads the token (one request) and trusts what it remembers only if the token is the one it
remembered it under; otherwise it forgets everything about that remote and asks. `pivot verify
--remote` never trusts the memory, and forgets whatever it finds missing, so deleting single
objects by hand is mended by running it once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

MARKER = "pivot-generation"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generation (remote TEXT PRIMARY KEY, token TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS object (remote TEXT NOT NULL, digest TEXT NOT NULL,
                                   PRIMARY KEY (remote, digest)) WITHOUT ROWID;
"""


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
        if not token:
            return
        try:
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("SELECT token FROM generation WHERE remote = ?", (self.remote,)).fetchone()
                if row is None or row[0] != token:
                    db.execute("DELETE FROM object WHERE remote = ?", (self.remote,))
                    db.execute("INSERT OR REPLACE INTO generation VALUES (?, ?)", (self.remote, token))
                db.executemany("INSERT OR IGNORE INTO object VALUES (?, ?)", ((self.remote, d) for d in digests))
        except sqlite3.Error:
            pass

    def forget(self, digests: Iterable[str]) -> None:
        try:
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("DELETE FROM object WHERE remote = ? AND digest = ?",
                               ((self.remote, d) for d in digests))
        except sqlite3.Error:
            pass

    def clear(self) -> None:
        try:
            db = self._conn()
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM object WHERE remote = ?", (self.remote,))
                db.execute("DELETE FROM generation WHERE remote = ?", (self.remote,))
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
