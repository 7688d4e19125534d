"""Where things live inside a project: every `.pivot/...` path, defined once.

Paths are relative to the project root, POSIX, so they serve both the file system and git trees.
"""

from __future__ import annotations

PIVOT_DIR = ".pivot"
STAGES_DIR = f"{PIVOT_DIR}/stages"  # one <stage>.lock per stage, committed
TRACKED_DIR = f"{PIVOT_DIR}/tracked"  # one record per path tracked with `pivot track`, committed
CACHE_DIR = f"{PIVOT_DIR}/cache"  # the content-addressed store, git-ignored
RUN_RECORDS = "runs"  # run records, runs/ab/<key>: in the cache folder and on a remote (pivot/runrecord.py)
TMP_DIR = f"{PIVOT_DIR}/tmp"  # scratch: logs, the run lock, compiled modules, remote indexes
STATE_DB = f"{PIVOT_DIR}/state.db"  # remembered hashes, per machine
CONFIG = f"{PIVOT_DIR}/config.yaml"  # committed settings
CONFIG_LOCAL = f"{PIVOT_DIR}/config.local.yaml"  # this machine's settings (credentials), git-ignored
# Both config files parsed, by their exact bytes (pivot/config.py): kept with the compiled user code
# (pivot/importing.py), a memo of the same kind, which a command that changes nothing may write.
CONFIG_MEMO = f"{TMP_DIR}/pycache/config.json"
PARAMS_MEMO = f"{TMP_DIR}/pycache/params.json"  # params.yaml parsed, by its exact bytes
# The large folders the last `pivot status` of the whole pipeline walked, which the next walks
# ahead while it loads the pipeline (pivot/walk.py, `ahead`): their paths, each ended by a NUL.
WALK_AHEAD = f"{TMP_DIR}/walk-ahead"
PLOTS_PAGE = f"{PIVOT_DIR}/plots/index.html"
PARAMS_FILE = "params.yaml"
LOCK_SUFFIX = ".lock"
TRACKED_SUFFIX = ".yaml"

# Characters a stage name keeps in its file names (lock, log); any other is written %XX (its UTF-8
# bytes), so a sweep variant such as `train@path=a/b` still has one safe file name on every system.
# An ordinary stage name (letters, digits, '_', '.', '-') and a variant's '@', '=' and ',' are kept.
_FILE_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-@=,+")


def stage_file(stage: str, suffix: str) -> str:
    """The file name of stage `stage`'s lock (`suffix` ".lock") or log (".log")."""
    if _FILE_SAFE.issuperset(stage):  # every ordinary name: once per stage on every command
        return stage + suffix
    return "".join(c if c in _FILE_SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in stage) + suffix


def stage_of_file(name: str, suffix: str) -> str | None:
    """The stage whose file (from `stage_file`) is named `name`; None for another file."""
    if not name.endswith(suffix) or name.startswith("."):
        return None
    stem = name[: -len(suffix)]
    if "%" not in stem:  # nothing was encoded
        return stem
    from urllib.parse import unquote  # lazy: foundations import nothing heavy at start-up

    return unquote(stem, errors="replace")
