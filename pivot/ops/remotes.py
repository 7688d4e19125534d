"""Remote configuration edits: add, remove, default, and the listing."""

from __future__ import annotations

from dataclasses import dataclass

from pivot import remote_config
from pivot.config import load_config
from pivot.project import find_root
from pivot.remote_config import RemoteSpec


@dataclass(frozen=True)
class Added:
    files: list[str]  # the files that now hold the remote
    secret_keys: list[str]  # options that went to config.local.yaml


@dataclass(frozen=True)
class Listing:
    remotes: list[RemoteSpec]
    default: str | None


def add_remote(name: str, url: str, options: tuple[str, ...], default: bool = False, local: bool = False,
               force: bool = False) -> Added:
    parsed = dict(remote_config.parse_option(o) for o in options)
    files = remote_config.add(find_root(), name, url, parsed, default=default, local=local, force=force)
    return Added(files, sorted(k for k in parsed if k in remote_config.SECRET_KEYS))


def list_remotes() -> Listing:
    config = load_config(find_root())
    return Listing([remote_config.resolve(config, n) for n in sorted(config.remotes)], config.default_remote)


def remove_remote(name: str, local: bool = False) -> None:
    remote_config.remove(find_root(), name, local=local)


def default_remote() -> str | None:
    return load_config(find_root()).default_remote


def set_default_remote(name: str | None, local: bool = False) -> None:
    root = find_root()
    remote_config.set_default(root, load_config(root), name, local=local)
