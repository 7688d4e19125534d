"""The project configuration: `.pivot/config.yaml` (committed) merged with `.pivot/config.local.yaml`
(this machine: credentials, a scheduler address), one loader and one writer.

Reading goes through `pivot.yamlio` (errors name the file and line). Writing goes through
ruamel.yaml's round-trip mode, so a file the user annotated keeps its comments and key order;
only the keys an edit touches change. Nothing else reads or writes these two files.

The model is plain frozen dataclasses validated here, not pydantic: importing pydantic and
defining the model costs about 125 ms, which `pivot push`/`pull` (that read the configuration and
nothing of the pipeline) would pay on every call; validation by hand costs nothing measurable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivot import atomic, yamlio
from pivot.errors import ProjectError
from pivot.layout import CONFIG, CONFIG_LOCAL, CONFIG_MEMO

LINK_MODES = ("auto", "reflink", "copy", "hardlink", "symlink")
EXECUTOR_HINT = "(kind: dask, scheduler: tcp://HOST:8786)"


@dataclass(frozen=True)
class Config:
    """The merged configuration. `remotes`: name -> options (url, endpoint_url, …), the two files
    merged per remote key by key; `executor`: the `executor:` mapping, merged key by key."""

    pipeline: str = "pipeline.py"
    link: str = "auto"
    remotes: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    default_remote: str | None = None
    executor: dict[str, Any] = field(default_factory=dict, hash=False)


def config_paths(root: Path) -> tuple[Path, Path]:
    """(committed config.yaml, this machine's config.local.yaml)."""
    return root / CONFIG, root / CONFIG_LOCAL


def read_file(path: Path) -> dict[str, Any]:
    """One configuration file's top-level mapping ({} when absent or empty)."""
    return yamlio.load_mapping(path, ProjectError)


# The settings `pivot init` writes (pivot/cli/init.py), and what they read as: a project's first
# command after `pivot init`, or in a clone of a project that kept them, reads them without
# importing PyYAML (tests/test_config.py checks that the two agree).
INIT_CONFIG = """\
# Pivot project settings (committed). Per-machine settings go in config.local.yaml.
pipeline: pipeline.py   # the file (or dotted module) that defines the stages
cache:
  link: auto            # auto (reflink, else copy) | reflink | copy | hardlink | symlink
"""


def init_settings() -> dict[str, Any]:
    """INIT_CONFIG's top-level mapping (a new one each time: callers may change it)."""
    return {"pipeline": "pipeline.py", "cache": {"link": "auto"}}


def read_files(root: Path) -> list[dict[str, Any]]:
    """Both files' top-level mappings. They are remembered in CONFIG_MEMO by the files' exact
    bytes, so an unchanged configuration is read without importing PyYAML (10 ms idle, up to
    ~100 ms on a loaded machine: a good part of a no-op `pivot status`). Only mappings that JSON
    holds exactly (str keys; str, int, finite float, bool, None, list, dict values) are
    remembered; anything else is parsed every time."""
    paths = config_paths(root)
    try:
        data = [yamlio.read_limited(path, ProjectError) for path in paths]
    except ProjectError:  # one file cannot be read: report the errors in the order they always were
        return [read_file(path) for path in paths]
    if data[1] is None and data[0] == INIT_CONFIG.encode():
        return [init_settings(), {}]
    return yamlio.remembered(root / CONFIG_MEMO, data, lambda: [
        yamlio.mapping_of(d, path, ProjectError) for d, path in zip(data, paths, strict=True)],
        shape=lambda parsed: all(isinstance(p, dict) for p in parsed))


def load_config(root: Path) -> Config:
    """The two files merged: config.local.yaml overrides config.yaml key by key in each section."""
    merged: dict[str, Any] = {}
    remotes: dict[str, dict[str, Any]] = {}
    executor: dict[str, Any] = {}
    for path, mapping in zip(config_paths(root), read_files(root), strict=True):
        for key, value in mapping.items():
            if key == "remotes":
                _merge_remotes(remotes, value, path)
            elif key == "executor":
                _merge_executor(executor, value, path)
            elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    where = root / CONFIG
    return Config(pipeline=_pipeline(merged, where), link=_link(merged, where), remotes=remotes,
                  default_remote=_default_remote(merged, where), executor=executor)


def _pipeline(merged: dict[str, Any], where: Path) -> str:
    pipeline = merged.get("pipeline", Config.pipeline)
    if not isinstance(pipeline, str) or not pipeline:
        raise ProjectError(f"{where}: 'pipeline' must be a file path or module name")
    return pipeline


def _link(merged: dict[str, Any], where: Path) -> str:
    cache = merged.get("cache") or {}
    if not isinstance(cache, dict):
        raise ProjectError(f"{where}: 'cache' must be a mapping")
    link = cache.get("link", Config.link)
    if link not in LINK_MODES:
        raise ProjectError(f"{where}: cache.link is {link!r}; use one of {', '.join(LINK_MODES)}")
    return str(link)


def _default_remote(merged: dict[str, Any], where: Path) -> str | None:
    section = merged.get("remote")
    default = section.get("default") if isinstance(section, dict) else None
    if default is not None and not isinstance(default, str):
        raise ProjectError(f"{where}: remote.default must be a remote's name")
    return default


def _merge_remotes(into: dict[str, dict[str, Any]], value: Any, path: Path) -> None:
    """config.local.yaml adds options (credentials) to a remote of config.yaml, key by key."""
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ProjectError(f"{path}: 'remotes' must map each remote's name to its options (url: …)")
    for name, options in value.items():
        into[str(name)] = {**into.get(str(name), {}), **options}


def _merge_executor(into: dict[str, Any], value: Any, path: Path) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise ProjectError(f"{path}: 'executor' must be a mapping {EXECUTOR_HINT}")
    into.update(value)


# -- the writer ------------------------------------------------------------------------------------

# Sections an edit may leave empty; an empty one is dropped rather than written as `remotes: {}`.
_PRUNED = ("remotes", "remote")


class ConfigFile:
    """One configuration file opened for editing. `data` is the top-level mapping (a ruamel
    CommentedMap: a dict that remembers comments and key order); `save` writes it back only when
    something changed, so a file an edit does not concern is never rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path
        read_file(path)  # validates first, so a broken file is named with its line
        self._before = path.read_text(encoding="utf-8") if path.exists() else None
        self.data: dict[str, Any] = _round_trip_load(self._before or "", path)
        self._loaded = _plain(self.data)

    def section(self, key: str) -> dict[str, Any]:
        """The mapping under `key`, created (at the end of the file) when absent."""
        value = self.data.get(key)
        if not isinstance(value, dict):
            value = self.data[key] = _new_map()
        return value

    def get_section(self, key: str) -> dict[str, Any]:
        """The mapping under `key`, or an empty dict (not attached) when absent."""
        value = self.data.get(key)
        return value if isinstance(value, dict) else {}

    def save(self) -> bool:
        """Write the file if the edit changed it; True when written."""
        if _plain(self.data) == self._loaded:
            return False  # nothing changed: never rewrite (a rewrite could only lose formatting)
        for key in _PRUNED:
            if key in self.data and not self.data[key]:
                del self.data[key]
        text = _round_trip_dump(self.data) if self.data else ""
        if self._before is None and not text:
            return False
        if text == self._before or (self._before is not None and not text and not self._before.strip()):
            return False
        atomic.write_text(self.path, text)
        self._before = text
        return True


def _yaml() -> Any:
    from ruamel.yaml import YAML  # lazy: ruamel costs ~30 ms, only edits need it

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 1000
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _new_map() -> dict[str, Any]:
    from ruamel.yaml.comments import CommentedMap  # lazy: see _yaml

    return CommentedMap()


def _round_trip_load(text: str, path: Path) -> dict[str, Any]:
    from ruamel.yaml.error import YAMLError  # lazy: see _yaml

    try:
        data = _yaml().load(text) if text.strip() else None
    except (YAMLError, ValueError, RecursionError) as exc:  # the safe reader accepted it; ruamel did not
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProjectError(f"{path}: cannot be edited while keeping its comments ({problem}); "
                           "edit it by hand") from None
    return data if isinstance(data, dict) else _new_map()


def _plain(value: Any) -> Any:
    """A comparable copy of a loaded document (ruamel's commented containers as dicts and lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _round_trip_dump(data: dict[str, Any]) -> str:
    import io

    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()
