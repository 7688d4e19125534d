"""Helpers shared by the command modules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pivot.repo import Repo


@contextmanager
def open_repo() -> Iterator[Repo]:
    from pivot.repo import Repo

    repo = Repo.load()
    try:
        yield repo
    finally:
        repo.close()


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
stages_argument = click.argument("stages", nargs=-1)
