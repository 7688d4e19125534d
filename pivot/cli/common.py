"""Helpers shared by the command modules."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    pass


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
stages_argument = click.argument("stages", nargs=-1)
