"""The runner: decide each stage in order, restore or run it, then cache its outputs and lock it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pivot import gitignore
from pivot import lock as lockfile
from pivot.executor import Executor, InProcessExecutor, StageTask
from pivot.hashing import DirEntry, _walk, manifest_bytes
from pivot.lock import PathRecord, StageLock
from pivot.outputs import Out
from pivot.repo import Prepared, Repo
from pivot.reporter import Reporter, Summary
from pivot.status import Decision, decide


@dataclass(frozen=True)
class RunOptions:
    targets: tuple[str, ...] = ()
    force: bool = False
    dry_run: bool = False
    single_stage: bool = False
    keep_going: bool = False


@dataclass(frozen=True)
class Planned:
    name: str
    decision: Decision
    notes: tuple[str, ...] = ()


def plan(repo: Repo, targets: tuple[str, ...] = (), single: bool = False, force: bool = False) -> list[Planned]:
    """What `pivot run` would do, without changing anything. Downstream of a stage that would run
    is reported as running too, since its deps are about to change."""
    names = repo.graph.select(list(targets), single)
    repo.check_params(names)
    will_run: set[str] = set()
    expected: dict[str, str] = {}
    result: list[Planned] = []
    for name in names:
        ups = tuple(sorted(u for u in repo.graph.upstream[name] if u in will_run))
        prep = repo.prepare(name, upstream_running=ups, forced=force, expected=expected)
        decision = decide(prep.current, prep.lock)
        if decision.run:
            will_run.add(name)
        elif prep.lock is not None:
            expected.update({r.path: r.hash for r in prep.lock.outs})
        result.append(Planned(name, decision, prep.current.notes))
    return result


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Runner:
    def __init__(self, repo: Repo, reporter: Reporter, executor: Executor | None = None) -> None:
        self.repo = repo
        self.root = repo.root
        self.reporter = reporter
        self.executor = executor or InProcessExecutor()
        self.backup_root = repo.project.tmp_dir / "backup"

    # -- the whole run -----------------------------------------------------
    def run(self, opts: RunOptions) -> Summary:
        summary = Summary()
        if opts.dry_run:
            for p in plan(self.repo, opts.targets, opts.single_stage, opts.force):
                if p.decision.run:
                    self.reporter.would_run(p.name, p.decision.reasons)
                    summary.ran.append(p.name)
                else:
                    restored = [r.path for r in p.decision.restore]
                    if restored:
                        self.reporter.note(f"{p.name}: would restore {', '.join(restored)} from the cache")
                    summary.skipped.append(p.name)
            self.reporter.summary(summary, dry_run=True)
            return summary
        graph = self.repo.graph
        names = graph.select(list(opts.targets), opts.single_stage)
        self.repo.check_params(names)
        self._recover_backups()
        self._update_gitignore()
        bad: set[str] = set()
        for name in names:
            blocked = sorted(u for u in graph.upstream[name] if u in bad)
            if blocked:
                self.reporter.not_run(name, f"upstream stage '{blocked[0]}' failed")
                summary.not_run.append(name)
                bad.add(name)
                continue
            if summary.failed and not opts.keep_going:
                self.reporter.not_run(name, "stopped after a failure; use --keep-going to run independent stages")
                summary.not_run.append(name)
                continue
            prep = self.repo.prepare(name, forced=opts.force)
            decision = decide(prep.current, prep.lock)
            if not decision.run:
                for rec in decision.restore:
                    self.repo.restore(rec)
                self.reporter.skipped(name, [r.path for r in decision.restore])
                summary.skipped.append(name)
                continue
            self.reporter.running(name, decision.reasons)
            if self._run_stage(prep):
                summary.ran.append(name)
            else:
                summary.failed.append(name)
                bad.add(name)
            self.repo.state.commit()
        self.reporter.summary(summary)
        return summary

    def _update_gitignore(self) -> None:
        paths = [p for s in self.repo.stages for o, p in zip(s.outs, self.repo.graph.outs[s.name]) if o.cached]
        gitignore.update(self.root, paths)

    # -- one stage ---------------------------------------------------------
    def _run_stage(self, prep: Prepared) -> bool:
        name = prep.stage.name
        missing = [d for d, h in prep.dep_hashes.items() if h is None]
        if missing:
            self.reporter.failed(name, f"dep '{missing[0]}' is missing; create it or run the stage that produces it")
            return False
        outs = list(zip(prep.stage.outs, self.repo.graph.outs[name]))
        backups: list[str] = []
        try:
            self._prepare_incremental(prep, outs)
            backups = self._move_aside(name, outs)
            for _o, p in outs:
                (self.root / p).parent.mkdir(parents=True, exist_ok=True)
            result = self.executor.run(StageTask(name, prep.stage.func, prep.params, self.root))
            if not result.ok:
                self._roll_back(name, outs, backups)
                self.reporter.failed(name, result.error or "failed")
                return False
            absent = [p for _o, p in outs if not os.path.lexists(self.root / p)]
            if absent:
                self._roll_back(name, outs, backups)
                self.reporter.failed(
                    name, f"stage '{name}' did not produce declared output '{absent[0]}'; "
                    "write it in the stage or remove it from outs")
                return False
            records = [self._save_output(o, p) for o, p in outs]
            deps = [PathRecord(d, h.hash, h.is_dir) for d, h in prep.dep_hashes.items() if h is not None]
            lock = StageLock(prep.fingerprint.digest, prep.fingerprint.manifest, prep.current.params,
                             tuple(deps), tuple(records), prep.fingerprint.notes)
            lockfile.write(self.repo.project.stages_dir, name, lock)
        except BaseException:
            self._roll_back(name, outs, backups)
            raise
        self._drop_backups(name)
        self.reporter.done(name, result.duration)
        return True

    def _prepare_incremental(self, prep: Prepared, outs: list[tuple[Out, str]]) -> None:
        """An IncrementalOut starts from its last locked version, as a writable copy."""
        locked = {r.path: r for r in prep.lock.outs} if prep.lock else {}
        for o, p in outs:
            if not o.incremental:
                continue
            rec = locked.get(p)
            full = self.root / p
            if rec is None or not self.repo.in_cache(rec):
                continue
            current = self.repo.hasher.hash_path(p)
            if current is not None and current.hash == rec.hash and not _shares_cache(full):
                continue
            saved_link = self.repo.cache.link
            self.repo.cache.link = "copy" if saved_link in ("hardlink", "symlink") else saved_link
            try:
                self.repo.restore(rec)
            finally:
                self.repo.cache.link = saved_link

    def _save_output(self, out: Out, path: str) -> PathRecord:
        full = self.root / path
        if not out.cached:
            h = self.repo.hasher.hash_path(path)
            assert h is not None
            return PathRecord(path, h.hash, h.is_dir, out.kind)
        cache = self.repo.cache
        if full.is_dir():
            entries = [DirEntry(rel, cache.add_file(full / rel), st.st_size) for rel, st in _walk(str(full))]
            digest = cache.add_bytes(manifest_bytes(entries))
            if cache.link in ("hardlink", "symlink"):
                cache.checkout_dir(digest, full)
            return PathRecord(path, digest, True, out.kind)
        digest = cache.add_file(full)
        if cache.link in ("hardlink", "symlink"):
            cache.checkout_file(digest, full)
        self.repo.hasher.remember(path, digest)
        return PathRecord(path, digest, False, out.kind)

    # -- backups: previous outputs are moved aside, and come back if the stage fails ----
    def _move_aside(self, stage: str, outs: list[tuple[Out, str]]) -> list[str]:
        """Move previous outputs to the backup folder; an IncrementalOut is copied, as the stage
        starts from it."""
        moved = []
        for o, p in outs:
            src = self.root / p
            if os.path.lexists(src):
                dest = self.backup_root / stage / p
                dest.parent.mkdir(parents=True, exist_ok=True)
                _remove(dest)
                if not o.incremental:
                    os.replace(src, dest)
                elif src.is_dir():
                    shutil.copytree(src, dest, symlinks=True)
                else:
                    shutil.copy2(src, dest)
                moved.append(p)
        return moved

    def _roll_back(self, stage: str, outs: list[tuple[Out, str]], backups: list[str]) -> None:
        """Remove what a failed stage wrote and put the previous outputs back."""
        for _o, p in outs:
            _remove(self.root / p)
        for p in backups:
            src = self.backup_root / stage / p
            if os.path.lexists(src):
                (self.root / p).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, self.root / p)
        self._drop_backups(stage)

    def _drop_backups(self, stage: str) -> None:
        _remove(self.backup_root / stage)

    def _recover_backups(self) -> None:
        """Outputs moved aside by a run that was killed come back where nothing replaced them."""
        if not self.backup_root.is_dir():
            return
        for stage_dir in self.backup_root.iterdir():
            outs = self.repo.graph.outs.get(stage_dir.name, ())
            for p in outs:
                src = stage_dir / p
                if os.path.lexists(src) and not os.path.lexists(self.root / p):
                    (self.root / p).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, self.root / p)
            _remove(stage_dir)


def _shares_cache(path: Path) -> bool:
    """True when a workspace file is a link into the cache (hardlink or symlink)."""
    try:
        return path.is_symlink() or (path.is_file() and os.stat(path).st_nlink > 1)
    except OSError:
        return False
