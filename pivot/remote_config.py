"""Remotes in the project configuration: `remotes:` in .pivot/config.yaml (committed) and
.pivot/config.local.yaml (this machine: credentials), `remote: {default: NAME}`. Both files are
read and written through `pivot.config` (its writer keeps comments and key order).

Options that are secrets never go to the committed file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pivot import yamlio
from pivot.config import Config, ConfigFile, config_paths
from pivot.errors import RemoteError

# Option names (as typed after -o) that are credentials: written to config.local.yaml only.
SECRET_KEYS = frozenset({
    "key", "secret", "token", "access_key_id", "secret_access_key", "session_token",
    "password", "passphrase", "account_key", "sas_token", "connection_string", "client_secret",
    "credentials",
})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_USERINFO = re.compile(r"(?<=://)[^/@\s'\"]+@")  # user:password@ in a url


def masked(value: Any) -> Any:
    """A url with its user:password@ part shown as ***@; anything else unchanged."""
    return _USERINFO.sub("***@", value) if isinstance(value, str) else value


def secret_values(options: dict[str, Any]) -> list[str]:
    """The strings a message must never show: secret options and the user:password of urls."""
    found = [str(v) for k, v in options.items() if k in SECRET_KEYS and v not in (None, "")]
    for value in options.values():
        if isinstance(value, str):
            found += [m.group(0)[:-1] for m in _USERINFO.finditer(value)]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def scrub(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """`text` with the given secrets and any url's user:password@ replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return _USERINFO.sub("***@", text)


@dataclass(frozen=True)
class RemoteSpec:
    name: str
    url: str
    options: dict[str, Any]

    def public(self) -> dict[str, Any]:
        """The options without secrets (for listings)."""
        return {k: ("***" if k in SECRET_KEYS else masked(v)) for k, v in sorted(self.options.items())}

    def without_secrets(self) -> RemoteSpec:
        """This remote as another machine may be told it (a Dask worker, which uses its own
        environment's credentials): no secret options, at any depth, and no user:password@ in
        the url (a user name alone stays)."""
        return RemoteSpec(self.name, _no_password(self.url), _no_secrets(self.options))


def _no_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_secrets(v) for k, v in value.items()
                if not (isinstance(k, str) and (k in SECRET_KEYS or k.removeprefix("aws_") in SECRET_KEYS))}
    if isinstance(value, (list, tuple)):
        return type(value)(_no_secrets(v) for v in value)
    return _no_password(value) if isinstance(value, str) else value


def _no_password(url: str) -> str:
    return _USERINFO.sub(lambda m: m.group(0).split(":", 1)[0] + "@" if ":" in m.group(0) else m.group(0), url)


def resolve(config: Config, name: str | None) -> RemoteSpec:
    """The remote `name`, else the default one, with a message saying how to fix each mistake."""
    if name is not None and name not in config.remotes:
        raise RemoteError(unknown_remote(config, name))
    if not config.remotes:
        raise RemoteError("no remote is configured; add one with 'pivot remote add NAME URL --default' "
                          "(for example: pivot remote add store s3://bucket/prefix --default; with --local it "
                          "stays in .pivot/config.local.yaml and applies at every commit)")
    if name is None:
        name = config.default_remote
        if name is None:
            if len(config.remotes) == 1:
                name = next(iter(config.remotes))
            else:
                raise RemoteError(f"no default remote; name one with -r ({', '.join(sorted(config.remotes))}) "
                                  "or set it with 'pivot remote default NAME'")
    if name not in config.remotes:  # the default names a remote that is not configured
        raise RemoteError(unknown_remote(config, name))
    options = dict(config.remotes[name])
    url = options.pop("url", None)
    if not isinstance(url, str) or not url:
        raise RemoteError(f"remote '{name}' has no url in .pivot/config.yaml; "
                          f"run 'pivot remote add {name} URL --force'")
    return RemoteSpec(name, url, options)


def unknown_remote(config: Config, name: str) -> str:
    """The message for a remote that neither config.yaml (as it is at this commit) nor
    config.local.yaml (which applies at every commit) names, with the fix."""
    known = ", ".join(sorted(config.remotes)) or "none"
    return (f"unknown remote '{name}' at this commit (known here: {known}; .pivot/config.yaml as committed here "
            f"and .pivot/config.local.yaml); if it was added in a later commit, add it for every commit with "
            f"'pivot remote add {name} URL --local' (see 'pivot remote list')")


def parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RemoteError(f"option '{text}' must look like key=value (for example -o endpoint_url=http://…)")
    try:  # numbers and booleans keep their type: retries=2, use_ssl=false
        parsed = yamlio.loads(value, f"-o {key}", RemoteError) if value else ""
    except RemoteError:
        parsed = value
    if not isinstance(parsed, (str, int, float, bool)):
        parsed = value
    return key.strip(), parsed


def add(root: Path, name: str, url: str, options: dict[str, Any], default: bool = False,
        local: bool = False, force: bool = False) -> list[str]:
    """Add (or with `force` replace) a remote; returns the files that hold it. With `local`, only
    config.local.yaml is edited (a remote of the same name in config.yaml is left there, and the
    local one overrides it key by key)."""
    if not _NAME.match(name):
        raise RemoteError(f"'{name}' is not a valid remote name; use letters, digits, '.', '-' and '_'")
    if not url.strip():
        raise RemoteError(f"the URL of remote '{name}' is empty; give a folder or a URL such as s3://bucket/prefix")
    check_url(url)
    shared_path, local_path = config_paths(root)
    shared, private = ConfigFile(shared_path), ConfigFile(local_path)
    exists = name in shared.get_section("remotes") or name in private.get_section("remotes")
    if exists and not force:
        raise RemoteError(f"remote '{name}' already exists; use --force to replace it, "
                          f"or 'pivot remote remove {name}'")
    public = {k: v for k, v in options.items() if k not in SECRET_KEYS}
    secret = {k: v for k, v in options.items() if k in SECRET_KEYS}
    private.get_section("remotes").pop(name, None)
    if local:
        private.section("remotes")[name] = {"url": url, **public, **secret}
    else:
        shared.section("remotes")[name] = {"url": url, **public}
        if secret:
            private.section("remotes")[name] = secret
    if default:
        (private if local else shared).section("remote")["default"] = name
    holders = ([] if local else [shared]) + ([private] if local or secret else [])
    for edited in (shared, private):
        edited.save()
    return [str(f.path.relative_to(root)) for f in holders]


def remove(root: Path, name: str, local: bool = False) -> None:
    """Remove remote `name` (and the default naming it) from both files, or with `local` from
    config.local.yaml only."""
    shared_path, local_path = config_paths(root)
    found = False
    for path in (local_path,) if local else (shared_path, local_path):
        edited = ConfigFile(path)
        if name in edited.get_section("remotes"):
            del edited.data["remotes"][name]
            found = True
        if edited.get_section("remote").get("default") == name:
            del edited.data["remote"]["default"]
        edited.save()
    if not found:
        where = " in .pivot/config.local.yaml" if local else ""
        raise RemoteError(f"unknown remote '{name}'{where}; see 'pivot remote list'")


def set_default(root: Path, config: Config, name: str | None, local: bool = False) -> None:
    """Make `name` the default remote (None: no default). Without `local`, a default set in
    config.local.yaml (which would override) is dropped and config.yaml says it; with `local`,
    only config.local.yaml changes."""
    if name is not None and name not in config.remotes:
        raise RemoteError(f"unknown remote '{name}'; see 'pivot remote list'")
    shared_path, local_path = config_paths(root)
    private = ConfigFile(local_path)
    if local:
        _set(private, name)
        private.save()
        return
    if private.get_section("remote").get("default") is not None:  # the local file would override
        del private.data["remote"]["default"]
        private.save()
    shared = ConfigFile(shared_path)
    _set(shared, name)
    shared.save()


def _set(edited: ConfigFile, name: str | None) -> None:
    if name is None:
        edited.get_section("remote").pop("default", None)
    else:
        edited.section("remote")["default"] = name


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
