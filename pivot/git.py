"""Git, two ways.

- GitHistory (pygit2): read files (params.yaml, metrics, the blobs of a folder) at any revision
  straight from git objects, without touching the work tree, and walk commits. It knows nothing
  of lock files: `pivot.history.History` parses those on top of it.
- The work tree and index (the git CLI, which honours GIT_INDEX_FILE while a hook runs): what
  is staged, and setting unstaged changes aside while the pre-commit check looks at exactly what
  is being committed.

pygit2 is imported only inside the functions that need it, so `pivot --help` stays fast.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from pivot.errors import GitError

ZERO_SHA = "0" * 40


# -- the git command line ---------------------------------------------------------------------


def run_git(cwd: Path, *args: str, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, env=env)
    except FileNotFoundError:
        raise GitError("git is not installed (or not on PATH); install git and try again") from None
    if check and proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"'git {' '.join(args[:2])}' failed in {cwd}: {detail[-1] if detail else proc.returncode}")
    return proc


def git_text(cwd: Path, *args: str) -> str:
    return run_git(cwd, *args).stdout.decode().strip()


def toplevel(start: Path) -> Path:
    """The top folder of the work tree holding `start`."""
    proc = run_git(start, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise GitError(f"{start} is not inside a git work tree; run 'git init' first")
    return Path(proc.stdout.decode().strip())


def common_dir(start: Path) -> Path:
    """The git dir shared by every linked work tree (`git worktree add`): hooks live there."""
    out = git_text(start, "rev-parse", "--git-common-dir")
    return Path(os.path.abspath(os.path.join(start, out)))


def config_value(start: Path, key: str) -> str | None:
    proc = run_git(start, "config", "--get", key, check=False)
    value = proc.stdout.decode().strip() if proc.returncode == 0 else ""
    return value or None


def project_prefix(top: Path, root: Path) -> str:
    """`root` relative to the work tree's top, POSIX, '' when they are the same folder."""
    rel = os.path.relpath(os.path.realpath(root), os.path.realpath(top))
    if rel == ".":
        return ""
    if rel.startswith(".."):
        raise GitError(f"the Pivot project {root} is not inside the git work tree {top}")
    return rel.replace(os.sep, "/")


@dataclass(frozen=True)
class WorkTreeChanges:
    """Paths (relative to the project root) whose work-tree content differs from the index."""

    unstaged: dict[str, str] = field(default_factory=dict)  # path -> git's work-tree status letter
    # Files, and folders ending in '/' (wholly untracked), among the paths asked about.
    untracked: frozenset[str] = frozenset()

    def is_untracked(self, path: str) -> bool:
        if path in self.untracked:
            return True
        if not self.untracked:
            return False  # asked for every lock file of a large pipeline
        parts = path.split("/")
        return any("/".join(parts[:i]) + "/" in self.untracked for i in range(1, len(parts)))


def worktree_changes(top: Path, prefix: str, untracked_in: tuple[str, ...] = ()) -> WorkTreeChanges:
    """`git status` of the project folder: unstaged modifications, and the untracked (not
    ignored) files among `untracked_in` (paths relative to the project; see `untracked`)."""
    out = run_git(top, "status", "--porcelain=v1", "-z", "--no-renames", "--ignore-submodules=all",
                  "--untracked-files=no", "--", prefix or ".", env=_no_optional_locks()).stdout
    unstaged: dict[str, str] = {}
    strip = f"{prefix}/" if prefix else ""
    for entry in out.decode(errors="surrogateescape").split("\0"):
        if len(entry) >= 4 and entry[3:].startswith(strip) and entry[1] not in (" ", "!", "?"):
            unstaged[entry[3 + len(strip):]] = entry[1]
    return WorkTreeChanges(unstaged, untracked(top, prefix, untracked_in))


def untracked(top: Path, prefix: str, paths: tuple[str, ...] | list[str]) -> frozenset[str]:
    """The untracked, not ignored, files among `paths` (files or folders relative to the project),
    and the folders among or above them that are wholly untracked (as 'folder/'). Only these
    paths are looked through: listing the whole project would match every output against
    .gitignore, which names each cached output (0.6 s of CPU at 10,000 stages)."""
    if not paths:
        return frozenset()
    strip = f"{prefix}/" if prefix else ""
    out = run_git(top, "--literal-pathspecs", "ls-files", "-z", "--others", "--exclude-standard", "--directory",
                  "--no-empty-directory", "--", *(strip + p for p in paths), env=_no_optional_locks()).stdout
    return frozenset(p[len(strip):] for p in out.decode(errors="surrogateescape").split("\0")
                     if p.startswith(strip) and len(p) > len(strip))


def _no_optional_locks() -> dict[str, str]:
    return {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # the index is locked while `git commit` runs hooks


@contextmanager
def unstaged_changes_set_aside(top: Path, prefix: str, patch_dir: Path) -> Iterator[bool]:
    """Make the project's tracked files match the index while the block runs, then put the
    unstaged changes back (the pre-commit framework's method: a binary patch against the
    index's tree, `git checkout`, `git apply`). Yields whether anything was set aside."""
    spec = prefix or "."
    tree = git_text(top, "write-tree")
    proc = run_git(top, "diff-index", "--ignore-submodules", "--binary", "--exit-code", "--no-color",
                   "--no-ext-diff", tree, "--", spec, check=False)
    if proc.returncode not in (0, 1):
        raise GitError(f"'git diff-index' failed: {proc.stderr.decode(errors='replace').strip()}")
    if proc.returncode == 0 or not proc.stdout:
        yield False
        return
    patch_dir.mkdir(parents=True, exist_ok=True)
    patch = patch_dir / f"unstaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.patch"
    patch.write_bytes(proc.stdout)
    run_git(top, "-c", "submodule.recurse=0", "checkout", "--", spec)
    try:
        yield True
    finally:
        _reapply(top, spec, patch)


def _reapply(top: Path, spec: str, patch: Path) -> None:
    if run_git(top, "apply", "--whitespace=nowarn", str(patch), check=False).returncode != 0:
        run_git(top, "-c", "submodule.recurse=0", "checkout", "--", spec)
        if run_git(top, "apply", "--whitespace=nowarn", str(patch), check=False).returncode != 0:
            raise GitError(f"could not put your unstaged changes back; they are saved in {patch} "
                           f"(apply them with 'git apply {patch}')")
    patch.unlink()


# -- pushing: what git passes to a pre-push hook ----------------------------------------------


@dataclass(frozen=True)
class RefUpdate:
    """One line of a pre-push hook's stdin."""

    local_ref: str
    local_sha: str
    remote_ref: str
    remote_sha: str

    @property
    def deletes(self) -> bool:
        return self.local_sha == ZERO_SHA

    @property
    def creates(self) -> bool:
        return self.remote_sha == ZERO_SHA


def parse_push_refs(text: str) -> list[RefUpdate]:
    """`<local ref> <local sha> <remote ref> <remote sha>` per line (githooks(5), pre-push)."""
    updates = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=3)
        if len(parts) != 4 or not all(_is_sha(p) for p in (parts[1], parts[3])):
            raise GitError(f"pre-push: unexpected line from git: {line!r}")
        updates.append(RefUpdate(*parts))
    return updates


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


# -- history (pygit2) ---------------------------------------------------------------------------


class GitHistory:
    """Read-only access to a project's files at any revision. Paths are relative to the
    project root, which may be a subfolder of the repository."""

    def __init__(self, root: Path) -> None:
        import pygit2

        found = pygit2.discover_repository(str(root))
        if found is None:
            raise GitError(f"{root} is not inside a git repository; run 'git init' first")
        self._pygit2 = pygit2
        self.repo = pygit2.Repository(found)
        if self.repo.workdir is None:
            raise GitError(f"{found} is a bare repository; run pivot inside a work tree")
        self.root = root
        self.prefix = project_prefix(Path(self.repo.workdir), root)
        self._blobs_by_tree: dict[Any, list[Any]] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.repo.free()

    # -- revisions -----------------------------------------------------------------------
    def commit(self, rev: str) -> Any:
        """The commit a revision names (branch, tag, sha, HEAD~2, …)."""
        pygit2 = self._pygit2
        try:
            obj = self.repo.revparse_single(rev)
            return obj.peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            raise GitError(f"unknown git revision '{rev}'; use a branch, tag or commit "
                           "(see 'git log --oneline')") from None

    def _commit_or_none(self, sha: str) -> Any:
        try:
            return self.repo.get(sha).peel(self._pygit2.Commit)  # type: ignore[union-attr]
        except (AttributeError, ValueError, KeyError, self._pygit2.GitError, self._pygit2.InvalidSpecError):
            return None

    def revisions(self, all_branches: bool = False, all_commits: bool = False,
                  local_history: bool = False) -> list[str]:
        """Commit ids to consider, HEAD first: HEAD; with `all_branches` every local branch tip;
        with `local_history` every commit reachable from HEAD, local branches and tags; with
        `all_commits` every commit reachable from HEAD, branches, tags and remote-tracking
        branches."""
        tips: list[Any] = []
        if not self.repo.head_is_unborn:
            tips.append(self.repo.head.peel(self._pygit2.Commit))
        if all_branches or all_commits or local_history:
            prefixes: tuple[str, ...] = ("refs/heads/",)
            if all_commits:
                prefixes = ("refs/heads/", "refs/tags/", "refs/remotes/")
            elif local_history:
                prefixes = ("refs/heads/", "refs/tags/")
            for name in sorted(self.repo.references):
                if name.startswith(prefixes):
                    commit = self._commit_or_none(str(self.repo.references[name].resolve().target))
                    if commit is not None:
                        tips.append(commit)
        if not (all_commits or local_history):
            return list(dict.fromkeys(str(c.id) for c in tips))
        return self._walk([c.id for c in tips], hide=[])

    def _walk(self, tips: list[Any], hide: list[Any]) -> list[str]:
        if not tips:
            return []
        from pygit2.enums import SortMode

        walker = self.repo.walk(tips[0], SortMode.TOPOLOGICAL)
        for tip in tips[1:]:
            walker.push(tip)
        for h in hide:
            walker.hide(h)
        return [str(c.id) for c in walker]

    # -- files at a revision -------------------------------------------------------------
    def _full(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _entry(self, commit: Any, path: str) -> Any:
        try:
            return commit.tree[self._full(path)]
        except KeyError:
            return None

    def read_blob(self, rev: str, path: str) -> bytes | None:
        """The bytes of file `path` (relative to the project root) at `rev`; None when absent."""
        obj = self._entry(self.commit(rev), path)
        return obj.data if isinstance(obj, self._pygit2.Blob) else None

    def blobs_in(self, commit: Any, folder: str) -> list[Any]:
        """The blobs (pygit2 objects: .id, .name, .data) directly inside `folder` at `commit`,
        remembered per tree so that commits sharing the folder read it once."""
        tree = self._entry(commit, folder)
        if not isinstance(tree, self._pygit2.Tree):
            return []
        if tree.id not in self._blobs_by_tree:
            self._blobs_by_tree[tree.id] = [e for e in tree if isinstance(e, self._pygit2.Blob)]
        return self._blobs_by_tree[tree.id]

    def where(self, commit: Any, folder: str, name: str) -> str:
        """How a file at a commit is named in messages: `<short sha>:<path in the repository>`."""
        return f"{str(commit.id)[:10]}:{self._full(folder)}/{name}"

    def commit_or_none(self, sha: str) -> Any:
        """The commit `sha` names, or None when this repository does not have it."""
        return self._commit_or_none(sha)

    # -- what a push needs ----------------------------------------------------------------
    def commits_to_push(self, updates: list[RefUpdate], remote: str) -> list[str]:
        """Commits that `git push` is about to send: reachable from each pushed sha, minus what
        the remote already has (its old sha when we know it, else its remote-tracking refs)."""
        tips, hide = [], []
        for u in updates:
            tip = None if u.deletes else self._commit_or_none(u.local_sha)
            if tip is None:
                continue
            tips.append(tip.id)
            old = None if u.creates else self._commit_or_none(u.remote_sha)
            if old is not None:
                hide.append(old.id)
        if not tips:
            return []
        if len(hide) < len(tips):  # a new branch, or the remote moved to something we lack
            for name in self.repo.references:
                if name.startswith(f"refs/remotes/{remote}/"):
                    commit = self._commit_or_none(str(self.repo.references[name].resolve().target))
                    if commit is not None:
                        hide.append(commit.id)
        return self._walk(tips, hide)


# -- conveniences for callers that need one answer ----------------------------------------------


def read_blob(root: Path, rev: str, path: str) -> bytes | None:
    with GitHistory(root) as h:
        return h.read_blob(rev, path)


def revisions(root: Path, all_branches: bool = False, all_commits: bool = False) -> list[str]:
    with GitHistory(root) as h:
        return h.revisions(all_branches, all_commits)
