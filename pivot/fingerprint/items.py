"""What the walk over a stage's code visits (`Item`) and what each visited thing yields (`Node`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Item:
    """Something reached: code ("obj"), a bound value ("const"/"closure"), a whole user module
    ("file", obj = module name), or an installed package ("pkg", obj = module name)."""

    __slots__ = ("key", "kind", "label", "module", "name", "obj")

    def __init__(self, kind: str, label: str, obj: Any, module: str = "", name: str = "") -> None:
        self.kind = kind
        self.label = label
        self.obj = obj
        self.module = module  # values: the module of the binding; files: who uses the module
        self.name = name  # values: the binding's name; closures: the qualname of the function holding it
        # identity for the memo and the walk (computed once: the walk is the hot loop)
        self.key = (kind, label, id(obj), module, name)


@dataclass
class Node:
    """An item's manifest entries, the items it reaches in turn, and its notes."""

    entries: dict[str, str]
    children: list[Item]
    notes: list[str]
