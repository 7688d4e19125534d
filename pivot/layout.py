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
PLOTS_PAGE = f"{PIVOT_DIR}/plots/index.html"
PARAMS_FILE = "params.yaml"
LOCK_SUFFIX = ".lock"
TRACKED_SUFFIX = ".yaml"
