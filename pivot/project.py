"""Finding the project root and reading its configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivot.errors import ProjectError

PIVOT_DIR = ".pivot"
LINK_MODES = ("auto", "reflink", "copy", "hardlink", "symlink")


@dataclass(frozen=True)
class Config:
    pipeline: str = "pipeline.py"
    link: str = "auto"
    # name -> options (url, endpoint_url, …), config.yaml and config.local.yaml merged per remote
    remotes: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    default_remote: str | None = None


@dataclass(frozen=True)
class Project:
    root: Path
    config: Config

    @property
    def pivot_dir(self) -> Path:
        return self.root / PIVOT_DIR

    @property
    def stages_dir(self) -> Path:
        return self.pivot_dir / "stages"

    @property
    def cache_dir(self) -> Path:
        return self.pivot_dir / "cache"

    @property
    def tmp_dir(self) -> Path:
        return self.pivot_dir / "tmp"

    @property
    def state_path(self) -> Path:
        return self.pivot_dir / "state.db"


def find_root(start: Path | None = None) -> Path:
    here = Path(os.path.abspath(start or os.getcwd()))
    for folder in (here, *here.parents):
        if (folder / PIVOT_DIR).is_dir():
            return folder
    raise ProjectError(
        f"not inside a Pivot project (no {PIVOT_DIR}/ in {here} or any parent); "
        "run 'pivot init' at the root of your git repository"
    )


def load_project(start: Path | None = None) -> Project:
    root = find_root(start)
    return Project(root=root, config=load_config(root))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ProjectError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProjectError(f"{path}: expected a mapping at the top level")
    return data


def load_config(root: Path) -> Config:
    merged: dict[str, Any] = {}
    remotes: dict[str, dict[str, Any]] = {}
    for name in ("config.yaml", "config.local.yaml"):
        path = root / PIVOT_DIR / name
        for key, value in _read_yaml(path).items():
            if key == "remotes":
                _merge_remotes(remotes, value, path)
            elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    pipeline = merged.get("pipeline", Config.pipeline)
    if not isinstance(pipeline, str) or not pipeline:
        raise ProjectError(f"{root / PIVOT_DIR / 'config.yaml'}: 'pipeline' must be a file path or module name")
    cache = merged.get("cache") or {}
    if not isinstance(cache, dict):
        raise ProjectError(f"{root / PIVOT_DIR / 'config.yaml'}: 'cache' must be a mapping")
    link = cache.get("link", Config.link)
    if link not in LINK_MODES:
        raise ProjectError(
            f"{root / PIVOT_DIR / 'config.yaml'}: cache.link is {link!r}; use one of {', '.join(LINK_MODES)}"
        )
    default_remote = (merged.get("remote") or {}).get("default") if isinstance(merged.get("remote"), dict) else None
    if default_remote is not None and not isinstance(default_remote, str):
        raise ProjectError(f"{root / PIVOT_DIR / 'config.yaml'}: remote.default must be a remote's name")
    return Config(pipeline=pipeline, link=link, remotes=remotes, default_remote=default_remote)


def _merge_remotes(into: dict[str, dict[str, Any]], value: Any, path: Path) -> None:
    """config.local.yaml adds options (credentials) to a remote of config.yaml, key by key."""
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ProjectError(f"{path}: 'remotes' must map each remote's name to its options (url: …)")
    for name, options in value.items():
        into[str(name)] = {**into.get(str(name), {}), **options}
