"""Installing and removing Pivot's git hooks: the shell shims from pivot/resources/hooks.

An installed hook is a small shell script with a marker line. It calls back into the pivot that
installed it (`pivot hooks run HOOK`), else the `pivot` on PATH. A hook the user already had is
moved aside to `<hook>.pre-pivot`; `pivot hooks run` runs it first (its exit code counts) and
uninstall puts it back. Hooks go to the repository's common git dir, so every linked work tree
(`git worktree add`) shares them. What each hook then does is in pivot/ops/hooks.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pivot.errors import GitError

HOOK_TYPES = ("pre-commit", "post-checkout", "post-merge", "pre-push")
GUARDS = ("pre-commit", "pre-push")  # hooks whose exit code can stop git
MARKER = "pivot-hook-marker"
LEGACY_SUFFIX = ".pre-pivot"


# -- the scripts ----------------------------------------------------------------------------------


def script(hook_type: str) -> str:
    """The hook script shipped in the package (identical to the repository's hooks/ folder)."""
    from importlib.resources import files

    return files("pivot").joinpath("resources", "hooks", hook_type).read_text()


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def render(hook_type: str, pivot: str | None, project: str) -> str:
    """The script with the installing pivot and the project folder filled in."""
    lines = script(hook_type).splitlines(keepends=True)
    values = {"PIVOT": pivot or "", "PROJECT": project}
    for i, line in enumerate(lines):
        name = line.partition("=")[0]
        if name in values and not line.startswith(" "):
            lines[i] = f"{name}={_sh_quote(values.pop(name))}\n"
    assert not values, f"hook script {hook_type} lacks {sorted(values)}"
    return "".join(lines)


def is_ours(path: Path) -> bool:
    try:
        return path.is_file() and MARKER.encode() in path.read_bytes()
    except OSError:
        return False


def installing_pivot() -> str | None:
    """The `pivot` executable running now, so hooks call the same installation."""
    candidates = [sys.argv[0], str(Path(sys.executable).parent / "pivot"), shutil.which("pivot") or ""]
    for c in candidates:
        if c and os.path.basename(c) == "pivot" and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None


# -- where hooks go ---------------------------------------------------------------------------------


def hooks_dir(start: Path, refuse_hooks_path: bool = True) -> Path:
    from pivot import git

    default = git.common_dir(start) / "hooks"
    configured = git.config_value(start, "core.hooksPath")
    if configured and refuse_hooks_path:
        where = Path(os.path.expanduser(configured))
        where = where if where.is_absolute() else git.toplevel(start) / where
        if os.path.realpath(where) != os.path.realpath(default):
            raise GitError(
                f"core.hooksPath is set (to '{configured}'), so git would not run hooks installed in {default}; "
                "run 'git config --unset-all core.hooksPath' and then 'pivot hooks install', or call "
                "'pivot hooks run <hook> -- \"$@\"' from the hooks in that folder"
            )
    return default


@dataclass(frozen=True)
class HookChange:
    hook: str
    path: Path
    action: str  # installed | updated | unchanged | removed | absent | foreign
    chained: Path | None = None  # the user's previous hook, kept and run first
    restored: bool = False  # uninstall put the previous hook back


def _legacy(path: Path) -> Path:
    return path.with_name(path.name + LEGACY_SUFFIX)


def install(start: Path, hook_types: tuple[str, ...] = HOOK_TYPES) -> list[HookChange]:
    """Install (or update) the hooks; installing again changes nothing."""
    from pivot import atomic, git
    from pivot.project import find_root

    root = find_root(start)
    project = git.project_prefix(git.toplevel(root), root) or "."
    directory = hooks_dir(root)
    for hook in hook_types:
        path = directory / hook
        if os.path.lexists(path) and not is_ours(path) and os.path.lexists(_legacy(path)):
            raise GitError(
                f"{path} is not pivot's, and {_legacy(path).name} already holds a hook pivot chained before; "
                "merge the two into one file (or remove one), then run 'pivot hooks install' again"
            )
    pivot = installing_pivot()
    changes = []
    for hook in hook_types:
        path = directory / hook
        content = render(hook, pivot, project)
        if is_ours(path):
            same = path.read_text() == content and os.access(path, os.X_OK)
            action = "unchanged" if same else "updated"
        else:
            if os.path.lexists(path):
                os.replace(path, _legacy(path))
            action = "installed"
        if action != "unchanged":
            atomic.write_text(path, content)
            os.chmod(path, 0o755)
        chained = _legacy(path) if os.path.lexists(_legacy(path)) else None
        changes.append(HookChange(hook, path, action, chained))
    return changes


def uninstall(start: Path, hook_types: tuple[str, ...] = HOOK_TYPES) -> list[HookChange]:
    """Remove pivot's hooks and put back the hooks they had chained."""
    directory = hooks_dir(start, refuse_hooks_path=False)
    changes = []
    for hook in hook_types:
        path, legacy = directory / hook, _legacy(directory / hook)
        if os.path.lexists(path) and not is_ours(path):
            changes.append(HookChange(hook, path, "foreign"))
            continue
        action = "removed" if os.path.lexists(path) else "absent"
        if action == "removed":
            path.unlink()
        restored = os.path.lexists(legacy)
        if restored:
            os.replace(legacy, path)
        changes.append(HookChange(hook, path, action, restored=restored))
    return changes
