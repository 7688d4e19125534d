"""What a run does before its first stage, apart from deciding: warnings about unreadable
locks, orphan locks removed, .gitignore brought up to date, the stages up to date by their
proofs, and the names of the modules the local workers import ahead of the first stage; and
what a dry run says (split from pivot/run.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

from pivot import gitignore, tracked
from pivot.backups import Backups, clear_leftovers
from pivot.graph import Graph
from pivot.hashing import hash_bytes
from pivot.planning import Planned
from pivot.repo import Repo, gc_paused
from pivot.reporter import Reporter, Summary


def before_run(repo: Repo, reporter: Reporter, backups: Backups, logs_dir: Path) -> None:
    """What a run does before deciding anything: outputs a killed run moved aside put back, its
    temporaries cleared, orphan locks removed, .gitignore updated."""
    backups.recover(repo.graph.outs)
    clear_leftovers(repo.cache.dir, repo.project.stages_dir, logs_dir, repo.listings)
    tidy(repo, reporter)


def proven(repo: Repo, names: list[str], force: bool) -> tuple[list[str], list[str]]:
    """The stages of a run, in run order, whose proofs hold (pivot/uptodate.py) and whose
    upstream in the run all are proven too: up to date whatever else the run does, settled
    before it starts; and the others. Checked as one moment (each file stat-ed once): nothing
    runs meanwhile."""
    if force:
        return [], names
    selected, found = set(names), set()
    with repo.uptodate.steady(), gc_paused(keep=True):  # fingerprints and proofs, kept to the end
        for name in names:
            if all(u in found for u in repo.graph.upstream[name] if u in selected) and repo.proven(name):
                found.add(name)
    return [n for n in names if n in found], [n for n in names if n not in found]


def warn_unreadable_locks(repo: Repo, reporter: Reporter, names: list[str]) -> None:
    """A lock is derived data: an unreadable one is rewritten when its stage runs. Asked of the
    stages not proven up to date (a proof holds only for the lock file it was taken with)."""
    for name in names:
        if repo.uptodate.lock_unchanged(name):
            continue  # read without a problem when its stage was last found up to date
        problem = repo.lock_problem(name)
        if problem is not None:
            reporter.warning(f"{problem}; stage '{name}' runs and rewrites it")


def remove_orphans(repo: Repo, reporter: Reporter, dry_run: bool = False) -> None:
    """Lock files of stages the pipeline no longer defines go (a dry run only says so)."""
    for orphan in repo.orphan_locks():
        if not dry_run:
            repo.remove_orphan(orphan)
        reporter.note(f"{'would remove' if dry_run else 'removed'} orphan lock {orphan.path} ({orphan.why})")


def tidy(repo: Repo, reporter: Reporter) -> None:
    """Orphan locks removed and .gitignore brought up to date, before a run."""
    remove_orphans(repo, reporter)
    update_gitignore(repo)


def update_gitignore(repo: Repo) -> None:
    """The managed block lists every cached output and tracked path. Not read again while the
    file's stat is the one taken before it was last found listing these very paths."""
    paths = [o.path for s in repo.stages for o in s.outs if o.cached] + tracked.paths(repo.root)
    repo.listings.answer("lists cached outputs", str(repo.root / ".gitignore"),
                         lambda: gitignore.update(repo.root, paths), hash_bytes("\0".join(paths).encode()))


def first_run_modules(repo: Repo, names: list[str], force: bool) -> list[str] | None:
    """On a first run (a selected stage without a readable lock) or with --force, the modules that define
    the stages, for the workers to import while this process prepares the first stages; else
    None (most stages are likely up to date: no worker may be needed)."""
    if not force and all(repo.uptodate.lock_unchanged(n)
                         or (repo.lock_problem(n) is None and repo.read_lock(n) is not None) for n in names):
        return None
    return sorted({repo.graph.stages[n].func.__module__ for n in names})


def workers(graph: Graph, state: dict[str, str], jobs: int) -> int:
    """How many worker processes to start for the stages left to run (`state` pending or running):
    at most `jobs` and no more than those stages, each one an interpreter to start; one when they
    form a chain (each needs the one before it, so one runs at a time: in run order, each depends
    on the one just before)."""
    left = [n for n in graph.order if state.get(n) in ("pending", "running")]
    if all(before in graph.upstream[after] for before, after in itertools.pairwise(left)):
        return 1
    return max(1, min(jobs, len(left)))


def report_dry_run(reporter: Reporter, planned: list[Planned], remote: str | None) -> Summary:
    """What `pivot run --dry-run` says of a plan (`remote`: the remote it would fetch from)."""
    summary = Summary()
    for p in planned:
        if p.hit is not None:
            reporter.note(f"{p.name}: would restore from run cache ({p.hit.label}) instead of running")
            summary.restored.append(p.name)
        elif p.decision.run:
            reporter.would_run(p.name, p.decision.reasons)
            summary.ran.append(p.name)
        else:
            pulled = [r.path for r in p.decision.fetch]
            restored = [r.path for r in p.decision.restore if r.path not in pulled]
            if restored:
                reporter.note(f"{p.name}: would restore {', '.join(restored)} from the cache")
            if pulled and remote is not None:
                reporter.note(f"{p.name}: would restore {', '.join(pulled)} from remote '{remote}'")
            summary.skipped.append(p.name)
    reporter.summary(summary, dry_run=True)
    return summary
