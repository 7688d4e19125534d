"""The error hierarchy. Every user-facing failure is a PivotError; the CLI prints one line."""

from __future__ import annotations


class PivotError(Exception):
    """A problem the user can fix. Rendered as one line, exit code 1."""

    exit_code = 1


class ProjectError(PivotError):
    """No project, no git work tree, bad configuration."""


class PipelineError(PivotError):
    """The pipeline module could not be loaded, or a stage definition is wrong."""


class TrackError(PivotError):
    """`pivot track` / `pivot untrack` refused a path, or a tracked-data record is unreadable."""


class GetError(PivotError):
    """`pivot get` could not find a path at a revision, or could not write or fetch its content."""


class GraphError(PivotError):
    """The stage graph is invalid: cycles, duplicate or nested outputs, missing deps."""


class ParamsError(PivotError):
    """params.yaml is malformed or does not fit a stage's parameter model."""


class StageFailed(PivotError):
    """One or more stages raised or did not produce their declared outputs."""


class CacheError(PivotError):
    """An object is missing from the cache, or the cache could not be written."""


class Escaped(PivotError):
    """A path Pivot was about to write or cache leads outside the project, or into .pivot/,
    through a symbolic link made after the graph was checked."""


class LockError(PivotError):
    """A lock file is unreadable, or another pivot process holds the project.

    `detail`: what is wrong, without the file's name or the fix (`line 2: duplicate key 'a'`)."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail if detail is not None else message


class StateError(PivotError):
    """The per-machine state database (.pivot/state.db) cannot be rebuilt."""


class GitError(PivotError):
    """Not a git repository, an unknown revision, or git hooks that cannot be installed."""


class VerifyFailed(PivotError):
    """`pivot verify` (or the pre-commit hook) found stale stages or files that do not match."""


class RemoteError(PivotError):
    """A remote is unknown or misconfigured, could not be reached, refused access, or holds bad data."""


class NeedsConfirmation(PivotError):
    """A command that deletes (gc) was not confirmed: no terminal to ask on, and no --yes."""


class YamlError(PivotError):
    """A YAML file Pivot reads is not valid YAML, or not the shape it should be."""


class PlotError(PivotError):
    """A plot file that cannot be drawn, or plotly is missing."""


class PlotDataError(ValueError):
    """A file does not fit its Plot; the caller says where (workspace error, or revision note)."""


class MetricsError(PivotError):
    """A metric file that is not a JSON or YAML mapping."""


class DaskError(PivotError):
    """`--executor dask` cannot be used: distributed missing, no scheduler, no remote."""


class ResourceError(PivotError):
    """A stage that must run needs resources no place of this run has (checked before it starts)."""


class WorkerRefused(PivotError):
    """A remote worker refused a stage (its package versions differ from this machine's)."""


class NotFound(Exception):
    """A remote answered that an object does not exist: an answer, not a failure (no PivotError)."""


class Corrupt(Exception):
    """An object's bytes do not hash to its name."""

    def __init__(self, digest: str, actual: str) -> None:
        super().__init__(f"object {digest} hashes to {actual}")
        self.digest = digest


# -- raised and caught inside Pivot; never shown as they are ------------------------------------


class BadPack(Exception):
    """A pack or pack index on a remote does not parse or does not match its name."""

    def __init__(self, rel: str, reason: str) -> None:
        super().__init__(f"{rel}: {reason}")
        self.rel = rel
        self.reason = reason


class Unhashable(Exception):
    """The value cannot be hashed soundly (a lock, a generator, too deep...): the message says why."""


class BadRunRecord(Exception):
    """A run record that cannot be used (unparsable, altered, not for this stage): it is ignored
    with a warning and the stage runs. The message says why."""


class YamlDuplicateKey(ValueError):
    """A mapping in a YAML file names one key twice (the reader refuses, rather than keep the last)."""

    def __init__(self, key: object, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.line = line


class YamlProblem(ValueError):
    """Why a YAML text cannot be read, and the line (1-based) when the parser knows it."""

    def __init__(self, problem: str, line: int | None = None, fix: str = "fix the file and try again") -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line
        self.fix = fix


class FlagMisuse(ProjectError):
    """A dask-only flag given for a local run (the CLI shows it as a usage error)."""


class WatchError(PivotError):
    """pivot run --watch cannot watch the project (the system's file watches ran out, say)."""
