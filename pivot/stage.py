"""The @stage decorator, the Stage record, and discovery of the pipeline module."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pivot.errors import PipelineError
from pivot.limits import DEFAULT, Limits, stage_limits
from pivot.outputs import Out
from pivot.records import assemble

F = TypeVar("F", bound=Callable[..., Any])

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Stage:
    name: str
    func: Callable[..., Any]
    deps: tuple[str, ...]
    outs: tuple[Out, ...]
    params: type | None
    exclusive: bool = False
    run_cache: bool = True  # False: always run when stale, never restored from a run record
    limits: Limits = DEFAULT  # resources, timeout, retries (pivot/limits.py); not fingerprinted
    matrix: Any = None  # @stage(matrix=...) as declared; pivot.sweep expands it into variants
    variant: tuple[tuple[str, Any], ...] = ()  # a sweep variant's matrix values, in key order

    @property
    def sweep(self) -> str | None:
        """The name the sweep was declared with (`train` for `train@model=tree`), or None."""
        return self.name.partition("@")[0] if self.variant else None

    @property
    def where(self) -> str:
        return _where(self.func)


def _where(func: Callable[..., Any]) -> str:
    code = getattr(func, "__code__", None)
    if code is None:
        return func.__module__
    return f"{os.path.relpath(code.co_filename)}:{code.co_firstlineno}"


_REGISTRY: list[Stage] = []


def stage(
    deps: Sequence[str] = (),
    outs: Sequence[str | Out] = (),
    params: type | None = None,
    name: str | None = None,
    exclusive: bool = False,
    run_cache: bool = True,
    resources: dict[str, Any] | None = None,
    timeout: float | str | None = None,
    retries: int = 0,
    matrix: Mapping[str, Sequence[Any]] | None = None,
) -> Callable[[F], F]:
    """Mark a module-level function as a pipeline stage.

    exclusive=True: the stage never runs alongside another stage (a GPU job, say).
    run_cache=False: its result is not a function of its inputs (clock, network, unseeded
    randomness), so it is never restored from a run record (docs/run-cache.md).
    resources={"cpus": 4, "memory": "32GB", "gpus": 1}, timeout="2h", retries=2: docs/stages.md.
    matrix={"model": ["linear", "tree"], "seed": [0, 1]}: a sweep, one stage per combination
    (`train@model=tree,seed=1`), each with those params fields set (docs/stages.md#sweeps)."""
    if isinstance(deps, str):
        deps = [deps]
    if isinstance(outs, (str, Out)):
        outs = [outs]

    def decorate(func: F) -> F:
        stage_name = name or func.__name__
        record = assemble(  # Stage(...), three times faster: every stage of the pipeline, on every command
            Stage,
            name=stage_name,
            func=func,
            deps=tuple(deps),
            outs=tuple(o if isinstance(o, Out) else Out(o) for o in outs),
            params=params,
            exclusive=bool(exclusive),
            run_cache=bool(run_cache),
            # Checked only when declared: naming the stage's place costs more than the check.
            limits=DEFAULT if resources is None and timeout is None and retries == 0 else
            stage_limits(f"stage '{stage_name}' ({_where(func)})", resources, timeout, retries),
            matrix=matrix,
            variant=(),
        )
        _REGISTRY.append(record)
        func.__pivot_stage__ = record  # type: ignore[attr-defined]
        return func

    return decorate


def _check_definition(s: Stage) -> None:
    if not isinstance(s.name, str) or not _NAME_RE.match(s.name):
        raise PipelineError(f"{_named(s)}: invalid stage name {s.name!r}; use letters, digits, '_', '-' or '.'")
    if "<locals>" in getattr(s.func, "__qualname__", "") or s.func.__name__ == "<lambda>":
        raise PipelineError(f"{_named(s)}: a stage must be a module-level function (def at the top of a module)")
    for dep in s.deps:
        if not isinstance(dep, str):
            raise PipelineError(f"{_named(s)}: deps must be path strings, got {dep!r}")
    for out in s.outs:
        if not isinstance(out.path, str):
            raise PipelineError(f"{_named(s)}: output paths must be strings, got {out.path!r}")
    if s.params is not None:
        from pydantic import BaseModel

        if not (isinstance(s.params, type) and issubclass(s.params, BaseModel)):
            raise PipelineError(f"{_named(s)}: params= must be a pydantic BaseModel subclass, got {s.params!r}")


def _named(s: Stage) -> str:
    """How an error names a stage: `stage 'train' (pipeline.py:12)` (only on the way to an error:
    the relative path costs more than the checks)."""
    return f"stage '{s.name}' ({s.where})"


def _import_error(exc: BaseException, root: Path, target: str) -> PipelineError:
    place = target
    if isinstance(exc, SyntaxError) and exc.filename and _is_user_file(exc.filename, root):
        place = _rel(exc.filename, root) + (f":{exc.lineno}" if exc.lineno else "")
        detail = f"SyntaxError: {exc.msg}"
    else:
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if _is_user_file(frame.filename, root):
                place = f"{_rel(frame.filename, root)}:{frame.lineno}"
                break
        detail = f"{type(exc).__name__}: {exc}"
    return PipelineError(f"could not import the pipeline ({target}): {place}: {detail}")


def _rel(filename: str, root: Path) -> str:
    try:
        return os.path.relpath(filename, root)
    except ValueError:
        return filename


def _is_user_file(filename: str, root: Path) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>: not a file
        return False
    full = os.path.abspath(filename)
    return full.startswith(str(root) + os.sep) and "site-packages" not in full


def discover(root: Path, pipeline: str) -> list[Stage]:
    """Import the pipeline module and return its stages, in definition order."""
    from pivot.importing import install, loader_for

    _REGISTRY.clear()
    install(str(root))
    try:
        if pipeline.endswith(".py"):
            path = root / pipeline
            if not path.is_file():
                raise PipelineError(
                    f"pipeline file {pipeline} not found in {root}; create it or set 'pipeline:' in .pivot/config.yaml"
                )
            mod_name = Path(pipeline).with_suffix("").as_posix().replace("/", ".")
            loader = loader_for(str(root), mod_name, str(path))
            spec = importlib.util.spec_from_file_location(mod_name, path, loader=loader)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(pipeline)
    except PipelineError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name == pipeline:
            raise PipelineError(
                f"pipeline module '{pipeline}' not found; check 'pipeline:' in .pivot/config.yaml"
            ) from None
        raise _import_error(exc, root, pipeline) from None
    except Exception as exc:
        raise _import_error(exc, root, pipeline) from None
    stages = list(_REGISTRY)
    seen: dict[str, Stage] = {}
    for s in stages:
        _check_definition(s)
        if s.name in seen:
            raise PipelineError(
                f"two stages are named '{s.name}' ({seen[s.name].where} and {s.where}); "
                "rename one or pass @stage(name=...)"
            )
        seen[s.name] = s
    return stages
