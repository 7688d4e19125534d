"""The workspace an operation works on: root, configuration, cache, state, remote storage and the
pipeline, each made on first use.

Only `repo` imports the user's pipeline (and with it the fingerprinting, params and graph code),
so an operation that needs the cache and a remote — push, fetch, gc, a git hook's upload — pays
for nothing else. `close()` (or `with`) releases what was opened.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from pivot.config import load_config
from pivot.project import Project, find_root

if TYPE_CHECKING:
    from pivot.cache import Cache
    from pivot.config import Config
    from pivot.remote import Storage
    from pivot.remote_config import RemoteSpec
    from pivot.repo import Repo
    from pivot.runlock import ProjectLock
    from pivot.state import State


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._state: State | None = None
        self._repo: Repo | None = None

    @classmethod
    def find(cls, start: Path | None = None) -> Workspace:
        """The project holding `start` (default: the working folder)."""
        return cls(find_root(start))

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None
        if self._state is not None:
            self._state.close()
            self._state = None

    # -- settings and stores ------------------------------------------------------------------
    @cached_property
    def config(self) -> Config:
        return load_config(self.root)

    @cached_property
    def project(self) -> Project:
        return Project(self.root, self.config)

    @cached_property
    def cache(self) -> Cache:
        from pivot.cache import Cache  # lazy: start-up

        return Cache(self.project.cache_dir, self.config.link)

    @property
    def state(self) -> State:
        """The per-machine state database (the pipeline's, when it is loaded)."""
        if self._repo is not None:
            return self._repo.state
        if self._state is None:
            from pivot.state import State  # lazy: start-up

            self._state = State(self.project.state_path)
        return self._state

    def remote(self, name: str | None) -> RemoteSpec:
        """Remote `name`, else the default one (errors say how to configure one)."""
        from pivot.remote_config import resolve  # lazy: start-up

        return resolve(self.config, name)

    def storage(self, spec: RemoteSpec, jobs: int) -> Storage:
        from pivot.remote import open_storage  # lazy: fsspec and friends only when a remote is used

        return open_storage(spec, self.root, jobs)

    def lock(self, action: str) -> AbstractContextManager[ProjectLock]:
        """Hold the project against other pivot processes while `action` changes it."""
        from pivot.runlock import ProjectLock  # lazy: start-up

        return ProjectLock(self.project.pivot_dir, action)

    # -- the pipeline --------------------------------------------------------------------------
    @property
    def repo(self) -> Repo:
        """The loaded pipeline (imports the user's code; moves to the project root)."""
        if self._repo is None:
            from pivot.repo import Repo  # lazy: imports user code, fingerprinting, pydantic

            if self._state is not None:  # the pipeline opens its own connection
                self._state.close()
                self._state = None
            self._repo = Repo(self.project)
        return self._repo
