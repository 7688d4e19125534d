"""Run events go to a reporter; console and JSON output implement the same calls."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Summary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # stale, restored from the run cache (docs/run-cache.md)
    attempts: dict[str, int] = field(default_factory=dict)  # stages that took more than one attempt (retries=)
    timed_out: list[str] = field(default_factory=list)  # failed stages whose last attempt timed out
    rescheduled: list[str] = field(default_factory=list)  # ran again elsewhere after a worker was lost


class Reporter:
    def running(self, stage: str, reasons: tuple[str, ...]) -> None: ...
    def done(self, stage: str, seconds: float, worker: str = "",
             timings: tuple[tuple[str, float], ...] = ()) -> None: ...
    def skipped(self, stage: str, restored: list[str], reasons: tuple[str, ...] = (),
                remote: str | None = None, from_remote: list[str] | None = None) -> None: ...
    def would_run(self, stage: str, reasons: tuple[str, ...]) -> None: ...
    def restored(self, stage: str, where: str, remote: str | None, paths: list[str]) -> None: ...
    def run_cache_lookup(self, keys: int, hits: int, remote: str, seconds: float, opening: float = 0.0) -> None: ...
    def failed(self, stage: str, error: str) -> None: ...
    def not_run(self, stage: str, why: str) -> None: ...
    def note(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def output(self, stage: str, text: str) -> None: ...
    def progress(self, done: int, total: int, running: list[str], elapsed: float) -> None: ...
    def summary(self, s: Summary, dry_run: bool = False) -> None: ...
    # pivot run --watch (docs/watch.md): a run's events come between watch_run and watching.
    def watch_run(self, run: int, changes: list[str]) -> None: ...
    def watching(self, run: int) -> None: ...
    def unaffected(self, changes: list[str]) -> None: ...
    def watch_error(self, error: str, changes: list[str]) -> None: ...


def _saved(changes: list[str]) -> str:
    return ", ".join(changes[:3]) + (f" (+{len(changes) - 3} more)" if len(changes) > 3 else "")


class ConsoleReporter(Reporter):
    def __init__(self, explain: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.explain = explain
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        # A live status line only when both streams are a terminal; plain lines otherwise.
        self.live = self.err.isatty() and self.out.isatty()
        self._status = ""

    def _line(self, text: str, stream: TextIO | None = None) -> None:
        stream = stream or self.out
        if self._status:
            self.err.write("\r\x1b[K")
        stream.write(text + "\n")
        stream.flush()
        if self._status:
            self.err.write(self._status)
            self.err.flush()

    def progress(self, done: int, total: int, running: list[str], elapsed: float) -> None:
        if not self.live:
            return
        names = ", ".join(running[:4]) + (f" +{len(running) - 4}" if len(running) > 4 else "")
        status = f"[{done}/{total}] {elapsed:5.1f}s" + (f"  running: {names}" if names else "")
        self._status = status[:120]
        self.err.write("\r\x1b[K" + self._status)
        self.err.flush()

    def output(self, stage: str, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            self._line(f"[{stage}] {line}")

    def _reasons(self, reasons: tuple[str, ...]) -> None:
        for r in reasons:
            self._line(f"    - {r}")

    def running(self, stage: str, reasons: tuple[str, ...]) -> None:
        if self.explain:
            self._line(f"{stage}: running")
            self._reasons(reasons)
        else:
            more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
            self._line(f"{stage}: running ({reasons[0]}{more})" if reasons else f"{stage}: running")

    def done(self, stage: str, seconds: float, worker: str = "",
             timings: tuple[tuple[str, float], ...] = ()) -> None:
        self._line(f"{stage}: done in {seconds:.2f}s")

    def skipped(self, stage: str, restored: list[str], reasons: tuple[str, ...] = (),
                remote: str | None = None, from_remote: list[str] | None = None) -> None:
        pulled = from_remote or []
        local = [p for p in restored if p not in pulled]
        if local:
            self._line(f"{stage}: up to date; restored {', '.join(local)} from the cache")
        if pulled:
            self._line(f"{stage}: up to date; restored {', '.join(pulled)} from remote '{remote}'")
        if not restored and self.explain:
            self._line(f"{stage}: up to date")

    def would_run(self, stage: str, reasons: tuple[str, ...]) -> None:
        self._line(f"{stage}: would run")
        self._reasons(reasons)

    def restored(self, stage: str, where: str, remote: str | None, paths: list[str]) -> None:
        self._line(f"{stage}: restored from run cache ({where})")

    def run_cache_lookup(self, keys: int, hits: int, remote: str, seconds: float, opening: float = 0.0) -> None:
        if self.live:
            self._status = f"run cache: {hits} of {keys} stage(s) found on remote '{remote}'"[:120]
            self.err.write("\r\x1b[K" + self._status)
            self.err.flush()

    def failed(self, stage: str, error: str) -> None:
        self._line(f"{stage}: FAILED", self.err)
        for line in error.splitlines():
            self._line(f"  {line}", self.err)

    def not_run(self, stage: str, why: str) -> None:
        self._line(f"{stage}: not run ({why})")

    def note(self, text: str) -> None:
        self._line(text)

    def warning(self, text: str) -> None:
        self._line(f"warning: {text}", self.err)

    def summary(self, s: Summary, dry_run: bool = False) -> None:
        if self._status:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._status = ""
        if dry_run:
            hits = f", {len(s.restored)} would be restored from run cache" if s.restored else ""
            self._line(f"dry run: {len(s.ran)} would run{hits}, {len(s.skipped)} up to date")
            return
        if not s.ran and not s.failed and not s.not_run and not s.restored:
            self._line(f"nothing to run: {len(s.skipped)} stage(s) up to date")
            return
        parts = [f"{len(s.ran)} ran", f"{len(s.skipped)} up to date", f"{len(s.failed)} failed"]
        if s.restored:
            parts.insert(1, f"{len(s.restored)} restored from run cache")
        if s.not_run:
            parts.append(f"{len(s.not_run)} not run")
        line = ", ".join(parts)
        if s.failed:
            line += f" (failed: {', '.join(n + (' (timed out)' if n in s.timed_out else '') for n in s.failed)})"
        if s.attempts:
            line += f"; attempts: {', '.join(f'{n} took {k}' for n, k in s.attempts.items())}"
        if s.rescheduled:
            line += f"; rescheduled after a worker was lost: {', '.join(s.rescheduled)}"
        self._line(line)

    def watch_run(self, run: int, changes: list[str]) -> None:
        if changes:
            self._line(f"watch: {_saved(changes)} changed")

    def watching(self, run: int) -> None:
        self._line("watch: watching for changes (Ctrl-C to stop)")

    def unaffected(self, changes: list[str]) -> None:
        self._line(f"watch: {_saved(changes)} changed; no stage affected")

    def watch_error(self, error: str, changes: list[str]) -> None:
        self._line(f"error: {error}", self.err)


class JsonReporter(Reporter):
    """One JSON object per line on stdout."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def _emit(self, **event: object) -> None:
        self.out.write(json.dumps(event, sort_keys=True) + "\n")
        self.out.flush()

    def running(self, stage: str, reasons: tuple[str, ...]) -> None:
        self._emit(event="running", stage=stage, reasons=list(reasons))

    def done(self, stage: str, seconds: float, worker: str = "",
             timings: tuple[tuple[str, float], ...] = ()) -> None:
        extra: dict[str, object] = {}
        if worker:  # a stage run on a cluster: where, and how its time was spent there
            extra = {"worker": worker, "timings": {step: round(t, 6) for step, t in timings}}
        self._emit(event="done", stage=stage, seconds=round(seconds, 6), **extra)

    def skipped(self, stage: str, restored: list[str], reasons: tuple[str, ...] = (),
                remote: str | None = None, from_remote: list[str] | None = None) -> None:
        if from_remote:
            self._emit(event="skipped", stage=stage, restored=restored, remote=remote, from_remote=from_remote)
        else:
            self._emit(event="skipped", stage=stage, restored=restored)

    def would_run(self, stage: str, reasons: tuple[str, ...]) -> None:
        self._emit(event="would_run", stage=stage, reasons=list(reasons))

    def restored(self, stage: str, where: str, remote: str | None, paths: list[str]) -> None:
        self._emit(event="restored", stage=stage, run_cache="remote" if remote else "local", remote=remote,
                   restored=paths)

    def run_cache_lookup(self, keys: int, hits: int, remote: str, seconds: float, opening: float = 0.0) -> None:
        # seconds: the lookup's requests; opening: connecting to the remote first (its client)
        self._emit(event="run_cache_lookup", remote=remote, keys=keys, hits=hits, seconds=round(seconds, 6),
                   opening=round(opening, 6))

    def failed(self, stage: str, error: str) -> None:
        self._emit(event="failed", stage=stage, error=error)

    def not_run(self, stage: str, why: str) -> None:
        self._emit(event="not_run", stage=stage, why=why)

    def note(self, text: str) -> None:
        self._emit(event="note", text=text)

    def warning(self, text: str) -> None:
        self._emit(event="warning", text=text)

    def output(self, stage: str, text: str) -> None:
        self._emit(event="output", stage=stage, text=text)

    def progress(self, done: int, total: int, running: list[str], elapsed: float) -> None:
        pass

    def summary(self, s: Summary, dry_run: bool = False) -> None:
        self._emit(event="summary", ran=s.ran, skipped=s.skipped, failed=s.failed, not_run=s.not_run,
                   restored=s.restored, dry_run=dry_run, attempts=s.attempts, timed_out=s.timed_out,
                   rescheduled=s.rescheduled)

    def watch_run(self, run: int, changes: list[str]) -> None:
        self._emit(event="watch_run", run=run, changes=changes)

    def watching(self, run: int) -> None:
        self._emit(event="watching", run=run)

    def unaffected(self, changes: list[str]) -> None:
        self._emit(event="unaffected", changes=changes)

    def watch_error(self, error: str, changes: list[str]) -> None:
        sys.stderr.write(f"error: {error}\n")  # as every error of pivot run --json
        sys.stderr.flush()
        self._emit(event="watch_error", error=error, changes=changes)
