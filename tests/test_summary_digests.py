"""Fingerprint digests are pinned: a change in how summaries are computed (here: module by
module groups of statements instead of one syntax tree) must not change a single digest, or
every user's stages would run again after an upgrade. The expected values were computed by the
summarise of December 2026 (one `ast.parse` and `ast.dump` of the whole module)."""

from __future__ import annotations

import hashlib
import json
import textwrap
from typing import Any

import pytest

from pivot.fingerprint.summary import summarise

SMALL = textwrap.dedent('''\
    """A pipeline."""
    from __future__ import annotations

    import json
    import os.path as osp
    from pivot import stage, Out
    from .helpers import *

    SCALE = 2  # a constant
    NAMES = [n.upper() for n in ("a", "b")]
    counter = 0


    def double(x: int) -> int:
        """Doubles."""
        return x * SCALE


    class Model:
        rate: float = 0.1
        def fit(self, data):
            return [double(d) for d in data if d]


    @stage(deps=["in.txt"], outs=["out.txt"])
    def train() -> None:
        global counter
        counter += 1
        f = lambda v: v + 1
        def inner(y=SCALE):
            nonlocal f
            return json.dumps(osp.join("a", str(f(y))))
        data = getattr(os, "environ")
        eval("1")
        import math
        from . import sibling
        open("out.txt", "w").write(inner())
    ''')


def big_module(late_import: bool = False) -> str:
    """Over 64 KiB, so that it is read in groups: every kind of top-level statement, the clauses
    that continue one at column 0, strings and brackets spanning column-0 lines."""
    head = textwrap.dedent('''\
        """Module docstring."""
        from __future__ import annotations
        import pivot as pv
        from pivot import stage
        ''')
    block = textwrap.dedent('''\
        @stage(deps=["in{i}.txt"],
        outs=["out{i}.txt"])
        @other
        def s{i}():
            x = open("in{i}.txt").read()
            open("out{i}.txt", "w").write(x + "{i}")

        "a bare string at module level"
        TEXT{i} = """
        def not_code():
        pass
        """
        if FLAG:
            pass
        elif OTHER:
            y{i} = 1
        else:
            y{i} = 2
        try:
            import missing{i}
        except ImportError:
            missing{i} = None
        finally:
            pass
        total{i} = (1 +
        2)
        value{i} = 1 + \\
        2
        class Same:
            v = {i}
        handler{i} = lambda e: e; other{i} = lambda: 0
        @pv.stage(deps=[], outs=[])
        async def a{i}(p=TEXT{i}):
            return [z for z in range({i}) if (w := z)]
        r"""raw string statement"""
        ''')
    body = head + "".join(block.format(i=i) for i in range(120))
    if late_import:
        body += "import pivot.stage as ps\n"
    assert len(body.encode()) > 65536
    return body


def pin(summary: dict[str, Any] | None) -> str:
    return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()[:16]


CASES = {
    "small": (SMALL, "0bff64341351c944"),
    "big": (big_module(), "ae32fee41dfb648a"),
    "big_late_import": (big_module(late_import=True), "530fef3d2c8a8ade"),
    "only_strings": ('"""doc"""\n"more"\n' * 4000, "e352acb3e47f42dc"),
    "empty": ("", "e352acb3e47f42dc"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_summary_digests_are_those_of_earlier_versions(name: str) -> None:
    source, expected = CASES[name]
    assert pin(summarise(source, f"/project/{name}.py")) == expected
