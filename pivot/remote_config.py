"""Remotes in the project configuration: `remotes:` in .pivot/config.yaml (committed) and
.pivot/config.local.yaml (this machine: credentials), `remote: {default: NAME}`.

Options that are secrets never go to the committed file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pivot import atomic
from pivot.errors import RemoteError
from pivot.project import PIVOT_DIR, Config, _read_yaml

# Option names (as typed after -o) that are credentials: written to config.local.yaml only.
SECRET_KEYS = frozenset({
    "key", "secret", "token", "access_key_id", "secret_access_key", "session_token",
    "password", "passphrase", "account_key", "sas_token", "connection_string", "client_secret",
    "credentials",
})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RemoteSpec:
    name: str
    url: str
    options: dict[str, Any]

    def public(self) -> dict[str, Any]:
        """The options without secrets (for listings)."""
        return {k: ("***" if k in SECRET_KEYS else v) for k, v in sorted(self.options.items())}


def resolve(config: Config, name: str | None) -> RemoteSpec:
    """The remote `name`, else the default one, with a message saying how to fix each mistake."""
    if not config.remotes:
        raise RemoteError("no remote is configured; add one with 'pivot remote add NAME URL --default' "
                          "(for example: pivot remote add store s3://bucket/prefix --default)")
    if name is None:
        name = config.default_remote
        if name is None:
            if len(config.remotes) == 1:
                name = next(iter(config.remotes))
            else:
                raise RemoteError(f"no default remote; name one with -r ({', '.join(sorted(config.remotes))}) "
                                  "or set it with 'pivot remote default NAME'")
    if name not in config.remotes:
        known = ", ".join(sorted(config.remotes)) or "none"
        raise RemoteError(f"unknown remote '{name}' (configured: {known}); see 'pivot remote list'")
    options = dict(config.remotes[name])
    url = options.pop("url", None)
    if not isinstance(url, str) or not url:
        raise RemoteError(f"remote '{name}' has no url in .pivot/config.yaml; "
                          f"run 'pivot remote add {name} URL --force'")
    return RemoteSpec(name, url, options)


def parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RemoteError(f"option '{text}' must look like key=value (for example -o endpoint_url=http://…)")
    import yaml

    try:  # numbers and booleans keep their type: retries=2, use_ssl=false
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    if not isinstance(parsed, (str, int, float, bool)):
        parsed = value
    return key.strip(), parsed


def _paths(root: Path) -> tuple[Path, Path]:
    return root / PIVOT_DIR / "config.yaml", root / PIVOT_DIR / "config.local.yaml"


def _write(path: Path, data: dict[str, Any]) -> None:
    import yaml

    for key in ("remotes", "remote"):
        if key in data and not data[key]:
            del data[key]
    atomic.write_text(path, yaml.safe_dump(data, sort_keys=True, default_flow_style=False) if data else "")


def add(root: Path, name: str, url: str, options: dict[str, Any], default: bool = False,
        local: bool = False, force: bool = False) -> list[str]:
    """Add (or with `force` replace) a remote; returns the files written."""
    if not _NAME.match(name):
        raise RemoteError(f"'{name}' is not a valid remote name; use letters, digits, '.', '-' and '_'")
    check_url(url)
    shared_path, local_path = _paths(root)
    shared, private = _read_yaml(shared_path), _read_yaml(local_path)
    exists = name in (shared.get("remotes") or {}) or name in (private.get("remotes") or {})
    if exists and not force:
        raise RemoteError(f"remote '{name}' already exists; use --force to replace it, "
                          f"or 'pivot remote remove {name}'")
    for data in (shared, private):
        (data.get("remotes") or {}).pop(name, None)
    public = {k: v for k, v in options.items() if k not in SECRET_KEYS}
    secret = {k: v for k, v in options.items() if k in SECRET_KEYS}
    if local:
        private.setdefault("remotes", {})[name] = {"url": url, **public, **secret}
    else:
        shared.setdefault("remotes", {})[name] = {"url": url, **public}
        if secret:
            private.setdefault("remotes", {})[name] = secret
    if default:
        (private if local else shared).setdefault("remote", {})["default"] = name
    written = []
    _write(shared_path, shared)
    written.append(str(shared_path.relative_to(root)))
    if secret or local or private:
        _write(local_path, private)
        written.append(str(local_path.relative_to(root)))
    return written


def remove(root: Path, name: str) -> None:
    found = False
    for path in _paths(root):
        data = _read_yaml(path)
        if name in (data.get("remotes") or {}):
            del data["remotes"][name]
            found = True
        if (data.get("remote") or {}).get("default") == name:
            del data["remote"]["default"]
        if path.exists():
            _write(path, data)
    if not found:
        raise RemoteError(f"unknown remote '{name}'; see 'pivot remote list'")


def set_default(root: Path, config: Config, name: str | None) -> None:
    """Make `name` the default remote (None: no default)."""
    if name is not None and name not in config.remotes:
        raise RemoteError(f"unknown remote '{name}'; see 'pivot remote list'")
    shared_path, local_path = _paths(root)
    private = _read_yaml(local_path)
    if (private.get("remote") or {}).get("default") is not None:  # the local file would override
        del private["remote"]["default"]
        _write(local_path, private)
    shared = _read_yaml(shared_path)
    if name is None:
        (shared.get("remote") or {}).pop("default", None)
    else:
        shared.setdefault("remote", {})["default"] = name
    _write(shared_path, shared)


def check_url(url: str) -> None:
    """A local folder, or a URL whose protocol fsspec knows (and whose package is installed)."""
    if "://" not in url:
        return
    protocol = url.split("://", 1)[0]
    if protocol == "file":
        return
    from fsspec.registry import known_implementations, registry

    if protocol not in registry and protocol not in known_implementations:
        raise RemoteError(f"unknown storage protocol '{protocol}://' in {url}; use a local folder, s3://bucket/prefix "
                          "or another fsspec URL")
