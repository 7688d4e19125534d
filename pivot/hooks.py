"""The git hooks' entry point: what an installed hook script runs (`pivot hooks run HOOK`).

It runs the user's chained hook first, then Pivot's action (pivot/ops/hooks.py), and prints the
result. Installing and removing the scripts is pivot/ops/githooks.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pivot.ops.githooks import GUARDS, LEGACY_SUFFIX

if TYPE_CHECKING:
    from pivot.ops.hooks import HookOutcome

_RUNNING_LEGACY = "PIVOT_RUNNING_LEGACY_HOOK"


# -- running a hook -----------------------------------------------------------------------------


def run_hook(hook_type: str, args: tuple[str, ...], hook_dir: Path | None, project: str) -> int:
    """What an installed hook runs: the chained hook first, then pivot's action. The exit code
    of a guard hook (pre-commit, pre-push) is non-zero when either failed; post-checkout and
    post-merge return the chained hook's code, as pivot never fails a checkout."""
    if os.environ.get(_RUNNING_LEGACY):
        return 0  # the chained hook is itself a pivot hook: it must not run pivot twice
    _absolute_git_env()
    stdin = sys.stdin.buffer.read() if hook_type == "pre-push" and not sys.stdin.isatty() else b""
    chained = _run_chained(hook_type, hook_dir, args, stdin)
    root = Path(os.getcwd()) / project  # git runs hooks at the top of the work tree
    ours = ACTIONS[hook_type](root.resolve(), args, stdin)
    if hook_type in GUARDS:
        return chained or ours
    return chained


def _absolute_git_env() -> None:
    """Git may export relative GIT_DIR / GIT_INDEX_FILE to hooks; pivot changes directory."""
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY"):
        value = os.environ.get(var)
        if value and not os.path.isabs(value):
            os.environ[var] = os.path.abspath(value)


def _run_chained(hook_type: str, hook_dir: Path | None, args: tuple[str, ...], stdin: bytes) -> int:
    if hook_dir is None:
        return 0
    legacy = hook_dir / (hook_type + LEGACY_SUFFIX)
    if not os.access(legacy, os.X_OK):
        return 0
    env = {**os.environ, _RUNNING_LEGACY: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return subprocess.run([str(legacy), *args], input=stdin, env=env).returncode
    except OSError as exc:
        _say(f"could not run your chained hook {legacy}: {exc}")
        return 1


def _say(text: str) -> None:
    print(f"pivot: {text}", file=sys.stderr, flush=True)


def _print(outcome: HookOutcome) -> int:
    for line in outcome.lines:
        print(line, file=sys.stderr)
    for line in outcome.said:
        _say(line)
    return outcome.code


def _pre_commit(root: Path, args: tuple[str, ...], stdin: bytes) -> int:
    from pivot.ops.hooks import pre_commit

    return _print(pre_commit(root))


def _post_checkout(root: Path, args: tuple[str, ...], stdin: bytes) -> int:
    from pivot.ops.hooks import post_checkout

    previous, new, branch_switch = (*args, "", "", "")[:3]
    return _print(post_checkout(root, previous, new, branch_switch))


def _post_merge(root: Path, args: tuple[str, ...], stdin: bytes) -> int:
    from pivot.ops.hooks import post_merge

    return _print(post_merge(root))


def _pre_push(root: Path, args: tuple[str, ...], stdin: bytes) -> int:
    from pivot.ops.hooks import pre_push

    return _print(pre_push(root, args[0] if args else "origin", stdin.decode(errors="replace")))


ACTIONS: dict[str, Callable[[Path, tuple[str, ...], bytes], int]] = {
    "pre-commit": _pre_commit,
    "post-checkout": _post_checkout,
    "post-merge": _post_merge,
    "pre-push": _pre_push,
}
