"""What a listing of a folder found, remembered by the folder's stat.

Before deciding anything, a run looks through folders that hold one file per stage or per
output (.pivot/stages, .pivot/logs, a folder of outputs) for what is almost never there: the
lock file of a stage no longer defined, a killed run's temporaries, a symbolic link. At 10,000
stages each listing costs milliseconds, on every command. So does reading the project's
.gitignore to see that its block lists every cached output (one line per output).

Adding, removing or renaming an entry in a folder (a link put in place of a file, too) changes
the folder's mtime and ctime, and a ctime cannot be set back. So while a folder's stat is the
one taken just before a listing, what that listing found still holds. A folder changed less
than RACY_NS before that stat is not remembered: a second change in the same timestamp tick
would leave the same stat (as `Cache.holds_all` does for the cache's folders); the same holds
for a file, whose writes move its mtime and ctime. All answers are one checksummed row of the
state database; a damaged row is forgotten.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pivot.hashing import RACY_NS
from pivot.state import State

T = TypeVar("T")

KEY = "listings1"  # the state key of the answers

FolderKey = tuple[int, int, int, int]  # mtime_ns, ctime_ns, inode, device


class Listings:
    """Answers found by listing folders, by (what was asked, folder) (see the module's doc)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._rows: dict[str, tuple[Any, ...]] | None = None
        self._changed = False

    def _all(self) -> dict[str, tuple[Any, ...]]:
        if self._rows is None:
            rows = self.state.get_sealed(KEY)
            ok = isinstance(rows, dict) and all(isinstance(r, tuple) and len(r) == 3 for r in rows.values())
            self._rows = rows if ok else {}
        return self._rows

    def answer(self, what: str, folder: str, find: Callable[[], T], context: str = "") -> T:
        """What `find` (which lists `folder`) answers, or answered when the folder was last as it
        is now. `what` names the question; `context`: what else the answer depends on (the
        stages defined, say): a different one asks again. The answer must be what marshal
        writes (strings, tuples, lists, frozensets)."""
        now = time.time_ns()
        try:
            st = os.stat(folder)
        except OSError:
            return find()  # missing or unreadable: `find` says what that means
        key: FolderKey = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        rows = self._all()
        name = f"{what}\n{folder}"
        row = rows.get(name)
        if row is not None and row[0] == key and row[1] == context:
            found: T = row[2]
            return found
        found = find()
        if now - max(key[0], key[1]) >= RACY_NS:
            rows[name] = (key, context, found)
            self._changed = True
        return found

    def save(self) -> None:
        """Write the answers remembered by this command (nothing when none are new)."""
        if self._changed:
            self.state.put_sealed(KEY, self._all())
            self._changed = False
