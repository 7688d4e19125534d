"""Before/after pairs of user code, each with the stages whose *code* must count as changed.

Every case is a tiny project: `pipeline.py` defines its stages, other files are user modules.
`rerun` names the stages (by function name) expected to report a code change after the
`after` edit; every other stage of the case must report none. `after` maps a path to its new
text, or to None to delete it.

test_fingerprint.py runs all cases at once in one git repository through the real CLI: each
case's modules are renamed with a per-case suffix (`helpers` -> `helpers_c07`, whole words)
and its `pipeline.py` becomes `case_c07.py`, so module names used here must not also be used
as ordinary identifiers. Stage bodies really run, so they must work before and after.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    before: dict[str, str]
    after: dict[str, str | None]
    rerun: frozenset[str]
    volatile: bool = False  # stale on every run by design: a stated conservative rule


CASES: list[Case] = []


def case(name: str, before: dict[str, str], after: dict[str, str | None], rerun: tuple[str, ...] = (),
         volatile: bool = False) -> None:
    assert all(c.name != name for c in CASES), name
    CASES.append(Case(
        name,
        {p: textwrap.dedent(t) for p, t in before.items()},
        {p: (textwrap.dedent(t) if t is not None else None) for p, t in after.items()},
        frozenset(rerun),
        volatile,
    ))


# == The stage's own code, cosmetic edits ============================================================

BASIC = '''
from pivot import stage

THRESHOLD = 3


def normalise(xs):
    return [x / THRESHOLD for x in xs]


def unused(x):
    return x * 2


@stage()
def train():
    return normalise([1, 2, 3])


@stage()
def report():
    return sum([1, 2])
'''

case("stage body changed", {"pipeline.py": BASIC},
     {"pipeline.py": BASIC.replace("return normalise([1, 2, 3])", "return normalise([1, 2, 3, 4])")},
     ("train",))

case("helper in the same module changed", {"pipeline.py": BASIC},
     {"pipeline.py": BASIC.replace("[x / THRESHOLD for x in xs]", "[x / THRESHOLD + 1 for x in xs]")},
     ("train",))

case("constant changed", {"pipeline.py": BASIC},
     {"pipeline.py": BASIC.replace("THRESHOLD = 3", "THRESHOLD = 4")}, ("train",))

case("function no stage reaches changed", {"pipeline.py": BASIC},
     {"pipeline.py": BASIC.replace("return x * 2", "return x * 3")})

case("comments added everywhere", {"pipeline.py": BASIC}, {"pipeline.py": '''
from pivot import stage  # the decorator

# the cut-off
THRESHOLD = 3  # keep small


def normalise(xs):
    # divide everything
    return [x / THRESHOLD for x in xs]  # a list


def unused(x):
    return x * 2


@stage()  # a stage
def train():
    # train it
    return normalise([1, 2, 3])


@stage()
def report():
    return sum([1, 2])  # add
'''})

case("docstrings added and edited", {"pipeline.py": '''
"""Module docstring."""
from pivot import stage


def helper(x):
    """Old text."""
    return x + 1


class Thing:
    """A thing."""

    def go(self):
        """Go."""
        return helper(1)


@stage()
def train():
    return Thing().go()
'''}, {"pipeline.py": '''
"""A different module docstring."""
from pivot import stage


def helper(x):
    """New text, longer.

    With a second paragraph.
    """
    return x + 1


class Thing:
    def go(self):
        "Go, now with single quotes."
        return helper(1)


@stage()
def train():
    """Now the stage has a docstring too."""
    return Thing().go()
'''})

case("formatting changed", {"pipeline.py": BASIC}, {"pipeline.py": '''
from pivot import (
    stage,
)

THRESHOLD = (3)


def normalise(
    xs,
):
    return [
        x / THRESHOLD
        for x in xs
    ]


def unused(x): return x * 2


@stage(
)
def train():
    return normalise([1, 2, 3,])



@stage()
def report():
    return sum(
        [1, 2]
    )
'''})

case("lines inserted above and functions reordered", {"pipeline.py": BASIC}, {"pipeline.py": '''
from pivot import stage

import os
import sys


@stage()
def report():
    return sum([1, 2])


@stage()
def train():
    return normalise([1, 2, 3])


def unused(x):
    return x * 2


def normalise(xs):
    return [x / THRESHOLD for x in xs]


THRESHOLD = 3
'''})

case("unrelated stage added", {"pipeline.py": BASIC}, {"pipeline.py": BASIC + '''

@stage()
def extra():
    return unused(normalise([5]))
'''})

case("unrelated stage removed", {"pipeline.py": BASIC}, {"pipeline.py": BASIC.split("@stage()\ndef report")[0]})

case("stage decorator arguments changed", {"pipeline.py": BASIC, "data.txt": "x\n"},
     {"pipeline.py": BASIC.replace("@stage()\ndef train", '@stage(deps=["data.txt"])\ndef train')})

case("string quote style and number spelling", {"pipeline.py": '''
from pivot import stage

NAME = 'model'
RATE = 1.0


@stage()
def train():
    return f"{NAME}-{RATE}" + 'x'
'''}, {"pipeline.py": '''
from pivot import stage

NAME = "model"
RATE = 1.00


@stage()
def train():
    return f'{NAME}-{RATE}' + "x"
'''})

case("constant respelled with the same value", {"pipeline.py": '''
from pivot import stage

SIZE = 1024


@stage()
def train():
    return SIZE
'''}, {"pipeline.py": '''
from pivot import stage

SIZE = 2 * 512


@stage()
def train():
    return SIZE
'''})

case("unrelated constant changed", {"pipeline.py": '''
from pivot import stage

USED = 1
OTHER = 2


@stage()
def train():
    return USED
'''}, {"pipeline.py": '''
from pivot import stage

USED = 1
OTHER = 3


@stage()
def train():
    return USED
'''})

case("annotations changed", {"pipeline.py": '''
from pivot import stage


def helper(x: int) -> int:
    y: int = x + 1
    return y


@stage()
def train():
    return helper(1)
'''}, {"pipeline.py": '''
from pivot import stage


def helper(x: float) -> "float | None":
    y: float = x + 1
    return y


@stage()
def train():
    return helper(1)
'''})

case("helper shared by two stages changed", {"pipeline.py": '''
from pivot import stage


def shared(x):
    return x + 1


@stage()
def first():
    return shared(1)


@stage()
def second():
    return shared(2)


@stage()
def third():
    return 3
'''}, {"pipeline.py": '''
from pivot import stage


def shared(x):
    return x + 2


@stage()
def first():
    return shared(1)


@stage()
def second():
    return shared(2)


@stage()
def third():
    return 3
'''}, ("first", "second"))

case("downstream stage has no code change of its own", {"pipeline.py": '''
from pivot import stage


def make(x):
    return str(x)


@stage(outs=["a.txt"])
def produce():
    open("a.txt", "w").write(make(1))


@stage(deps=["a.txt"], outs=["b.txt"])
def consume():
    open("b.txt", "w").write(open("a.txt").read())
'''}, {"pipeline.py": '''
from pivot import stage


def make(x):
    return str(x * 10)


@stage(outs=["a.txt"])
def produce():
    open("a.txt", "w").write(make(1))


@stage(deps=["a.txt"], outs=["b.txt"])
def consume():
    open("b.txt", "w").write(open("a.txt").read())
'''}, ("produce",))

# == Other modules: module.attr, packages, from-imports, aliases, relative imports ====================

HELPERS = '''
def normalise(xs):
    return [x / 2 for x in xs]


def unrelated(x):
    return x
'''

case("module.attr helper changed", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage
import helpers


@stage()
def train():
    return helpers.normalise([1, 2])


@stage()
def other():
    return 1
'''}, {"helpers.py": HELPERS.replace("x / 2", "x / 3")}, ("train",))

case("another function in the imported module changed", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage
import helpers


@stage()
def train():
    return helpers.normalise([1, 2])
'''}, {"helpers.py": HELPERS.replace("return x\n", "return x + 1\n")})

case("from-import helper changed", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage
from helpers import normalise


@stage()
def train():
    return normalise([1, 2])
'''}, {"helpers.py": HELPERS.replace("x / 2", "x / 3")}, ("train",))

case("from-import under an alias changed", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage
from helpers import normalise as norm


@stage()
def train():
    return norm([1, 2])
'''}, {"helpers.py": HELPERS.replace("x / 2", "x / 3")}, ("train",))

case("module imported under an alias", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage
import helpers as h


@stage()
def train():
    return h.normalise([1, 2])
'''}, {"helpers.py": HELPERS.replace("x / 2", "x / 3")}, ("train",))

PKG_SUB = '''
def scale(x):
    return x * 2


def shift(x):
    return x + 1
'''

case("pkg.sub.fn through import pkg.sub", {
    "pkg/__init__.py": "",
    "pkg/sub.py": PKG_SUB,
    "pipeline.py": '''
from pivot import stage
import pkg.sub


@stage()
def train():
    return pkg.sub.scale(1)
'''}, {"pkg/sub.py": PKG_SUB.replace("x * 2", "x * 3")}, ("train",))

case("import pkg.sub as s", {
    "pkg/__init__.py": "",
    "pkg/sub.py": PKG_SUB,
    "pipeline.py": '''
from pivot import stage
import pkg.sub as s


@stage()
def train():
    return s.scale(1)


@stage()
def moves():
    return s.shift(1)
'''}, {"pkg/sub.py": PKG_SUB.replace("x * 2", "x * 3")}, ("train",))

case("from pkg import sub", {
    "pkg/__init__.py": "",
    "pkg/sub.py": PKG_SUB,
    "pipeline.py": '''
from pivot import stage
from pkg import sub


@stage()
def train():
    return sub.scale(1)
'''}, {"pkg/sub.py": PKG_SUB.replace("x * 2", "x * 3")}, ("train",))

case("relative import inside a user package", {
    "mypkg/__init__.py": "",
    "mypkg/util.py": '''
def clean(x):
    return x.strip()
''',
    "mypkg/core.py": '''
from .util import clean


def process(text):
    return clean(text).upper()
''',
    "pipeline.py": '''
from pivot import stage
from mypkg import core


@stage()
def train():
    return core.process(" a ")
'''}, {"mypkg/util.py": '''
def clean(x):
    return x.strip().lower()
'''}, ("train",))

case("relative import of a constant", {
    "mypkg/__init__.py": "",
    "mypkg/settings.py": "RATE = 0.1\nOTHER = 5\n",
    "mypkg/core.py": '''
from .settings import RATE


def step(x):
    return x * RATE
''',
    "pipeline.py": '''
from pivot import stage
from mypkg.core import step


@stage()
def train():
    return step(2)
'''}, {"mypkg/settings.py": "RATE = 0.2\nOTHER = 5\n"}, ("train",))

case("transitive helper in a third module", {
    "helpers.py": '''
import other


def outer(x):
    return other.inner(x) + 1
''',
    "other.py": '''
def inner(x):
    return x * 2
''',
    "pipeline.py": '''
from pivot import stage
from helpers import outer


@stage()
def train():
    return outer(1)
'''}, {"other.py": '''
def inner(x):
    return x * 3
'''}, ("train",))

case("same helper name in two modules", {
    "a_mod.py": "def normalise(x):\n    return x / 2\n",
    "b_mod.py": "def normalise(x):\n    return x / 4\n",
    "pipeline.py": '''
from pivot import stage
import a_mod
import b_mod


@stage()
def uses_a():
    return a_mod.normalise(1)


@stage()
def uses_b():
    return b_mod.normalise(1)
'''}, {"b_mod.py": "def normalise(x):\n    return x / 8\n"}, ("uses_b",))

case("same constant name in two modules", {
    "a_mod.py": "LIMIT = 1\n",
    "b_mod.py": "LIMIT = 2\n",
    "pipeline.py": '''
from pivot import stage
from a_mod import LIMIT
import b_mod


@stage()
def uses_a():
    return LIMIT


@stage()
def uses_b():
    return b_mod.LIMIT
'''}, {"a_mod.py": "LIMIT = 10\n"}, ("uses_a",))

case("constant from another module via module.attr", {
    "config.py": "THRESHOLD = 0.5\nUNUSED = 1\n",
    "pipeline.py": '''
from pivot import stage
import config


@stage()
def train():
    return config.THRESHOLD
'''}, {"config.py": "THRESHOLD = 0.6\nUNUSED = 1\n"}, ("train",))

case("unused constant in the imported module changed", {
    "config.py": "THRESHOLD = 0.5\nUNUSED = 1\n",
    "pipeline.py": '''
from pivot import stage
import config


@stage()
def train():
    return config.THRESHOLD
'''}, {"config.py": "THRESHOLD = 0.5\nUNUSED = 2\n"})

case("re-exported constant changed at its origin", {
    "config.py": "THRESHOLD = 0.5\n",
    "helpers.py": "from config import THRESHOLD\n\n\ndef cut(x):\n    return x > THRESHOLD\n",
    "pipeline.py": '''
from pivot import stage
import helpers


@stage()
def train():
    return helpers.cut(1)
'''}, {"config.py": "THRESHOLD = 0.7\n"}, ("train",))

case("getattr with a constant name", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage
import helpers


@stage()
def train():
    return getattr(helpers, "normalise")([2])


@stage()
def calm():
    return getattr(helpers, "unrelated")(1)
'''}, {"helpers.py": HELPERS.replace("x / 2", "x / 3")}, ("train",))

case("module imported inside the function (whole file counts)", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage


@stage()
def train():
    import helpers
    return helpers.normalise([2])


@stage()
def calm():
    return 1
'''}, {"helpers.py": HELPERS.replace("x / 2", "x / 3")}, ("train",))

case("module imported inside the function, unrelated edit (conservative)", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage


@stage()
def train():
    from helpers import normalise
    return normalise([2])
'''}, {"helpers.py": HELPERS.replace("return x\n", "return x + 1\n")}, ("train",))

case("edit in a module nothing imports", {
    "helpers.py": HELPERS,
    "other.py": "def lonely():\n    return 1\n",
    "pipeline.py": '''
from pivot import stage
import helpers


@stage()
def train():
    return helpers.normalise([2])
'''}, {"other.py": "def lonely():\n    return 2\n"})

# == Scoping: names that shadow globals are not references ==========================================

SHADOW = '''
from pivot import stage


def data():
    return [1, 2, 3]


def helper(data):
    return sum(data)


@stage()
def train():
    return helper([1])


@stage()
def assigns():
    data = [4, 5]
    return len(data)


@stage()
def loops():
    total = 0
    for data in range(3):
        total += data
    return total


@stage()
def comprehends():
    return [data for data in range(3)]


@stage()
def excepts():
    try:
        raise ValueError
    except ValueError as data:
        return str(data)


@stage()
def withs():
    import contextlib
    with contextlib.nullcontext(5) as data:
        return data


@stage()
def lambdas():
    f = lambda data: data + 1
    return f(1)


@stage()
def nested():
    def inner(data=1):
        return data
    return inner()


@stage()
def really_calls():
    return data()
'''

case("parameters, locals and comprehension variables shadow a global", {"pipeline.py": SHADOW},
     {"pipeline.py": SHADOW.replace("return [1, 2, 3]", "return [1, 2, 3, 4]")}, ("really_calls",))

case("class body names are not visible in methods", {"pipeline.py": '''
from pivot import stage

rate = 1


class Model:
    rate = 100

    def go(self):
        return rate


@stage()
def train():
    return Model().go()
'''}, {"pipeline.py": '''
from pivot import stage

rate = 2


class Model:
    rate = 100

    def go(self):
        return rate


@stage()
def train():
    return Model().go()
'''}, ("train",))

case("global statement", {"pipeline.py": '''
from pivot import stage

COUNTER = 0


def bump():
    global COUNTER
    COUNTER += 1
    return COUNTER


@stage()
def train():
    return bump()
'''}, {"pipeline.py": '''
from pivot import stage

COUNTER = 10


def bump():
    global COUNTER
    COUNTER += 1
    return COUNTER


@stage()
def train():
    return bump()
'''}, ("train",))

case("attribute named like a global is not the global", {"pipeline.py": '''
from pivot import stage


def normalise(x):
    return x


class Box:
    def normalise(self, x):
        return x * 2


@stage()
def train():
    b = Box()
    return b.normalise(1)
'''}, {"pipeline.py": '''
from pivot import stage


def normalise(x):
    return x + 1


class Box:
    def normalise(self, x):
        return x * 2


@stage()
def train():
    b = Box()
    return b.normalise(1)
'''})

# == Recursion ==========================================================================================

case("recursive helper changed", {"pipeline.py": '''
from pivot import stage


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


@stage()
def train():
    return fact(5)
'''}, {"pipeline.py": '''
from pivot import stage


def fact(n):
    return 1 if n < 2 else n * fact(n - 1)


@stage()
def train():
    return fact(5)
'''}, ("train",))

MUTUAL = '''
from pivot import stage
import other


def even(n):
    return n == 0 or other.odd(n - 1)


@stage()
def train():
    return even(4)
'''

case("mutual recursion across modules", {
    "pipeline.py": MUTUAL,
    "other.py": "import case_self\n\n\ndef odd(n):\n    return n != 0 and case_self.even(n - 1)\n",
}, {"other.py": "import case_self\n\n\ndef odd(n):\n    return n > 0 and case_self.even(n - 1)\n"},
    ("train",))

# == Closures, defaults, decorators, partials, lambdas ==================================================

CLOSURE = '''
from pivot import stage


def make_scaler(k):
    unused = "factory detail"
    def scale(x):
        return x * k
    return scale


triple = make_scaler(3)


@stage()
def train():
    return triple(2)
'''

case("closure variable changed", {"pipeline.py": CLOSURE},
     {"pipeline.py": CLOSURE.replace("make_scaler(3)", "make_scaler(4)")}, ("train",))

case("closure's inner function changed", {"pipeline.py": CLOSURE},
     {"pipeline.py": CLOSURE.replace("return x * k", "return x * k + 1")}, ("train",))

case("factory code that does not reach the closure", {"pipeline.py": CLOSURE},
     {"pipeline.py": CLOSURE.replace('"factory detail"', '"another detail"')})

case("closure returning a lambda", {"pipeline.py": '''
from pivot import stage


def adder(n):
    return lambda x: x + n


add2 = adder(2)


@stage()
def train():
    return add2(1)
'''}, {"pipeline.py": '''
from pivot import stage


def adder(n):
    return lambda x: x + n + 0


add2 = adder(2)


@stage()
def train():
    return add2(1)
'''}, ("train",))

case("two closures from one factory, one changed", {"pipeline.py": '''
from pivot import stage


def power(p):
    def f(x):
        return x ** p
    return f


square = power(2)
cube = power(3)


@stage()
def train():
    return square(2) + cube(2)
'''}, {"pipeline.py": '''
from pivot import stage


def power(p):
    def f(x):
        return x ** p
    return f


square = power(2)
cube = power(4)


@stage()
def train():
    return square(2) + cube(2)
'''}, ("train",))

case("default argument literal changed", {"pipeline.py": '''
from pivot import stage


def helper(x, k=2):
    return x * k


@stage()
def train():
    return helper(1)
'''}, {"pipeline.py": '''
from pivot import stage


def helper(x, k=3):
    return x * k


@stage()
def train():
    return helper(1)
'''}, ("train",))

case("default argument from a constant", {"pipeline.py": '''
from pivot import stage

RATE = 2


def helper(x, k=RATE):
    return x * k


@stage()
def train():
    return helper(1)
'''}, {"pipeline.py": '''
from pivot import stage

RATE = 5


def helper(x, k=RATE):
    return x * k


@stage()
def train():
    return helper(1)
'''}, ("train",))

case("default argument of a nested function", {"pipeline.py": '''
from pivot import stage


def make(n):
    def f(x, m=n * 2):
        return x + m
    return f


g = make(1)


@stage()
def train():
    return g(1)
'''}, {"pipeline.py": '''
from pivot import stage


def make(n):
    def f(x, m=n * 2):
        return x + m
    return f


g = make(7)


@stage()
def train():
    return g(1)
'''}, ("train",))

DECOS = '''
import functools


def twice(f):
    @functools.wraps(f)
    def wrapper(*args):
        return f(f(*args))
    return wrapper
'''

case("decorator in another module changed", {
    "decos.py": DECOS,
    "pipeline.py": '''
from pivot import stage
from decos import twice


@twice
def inc(x):
    return x + 1


@stage()
def train():
    return inc(1)


@stage()
def calm():
    return 1
'''}, {"decos.py": DECOS.replace("return f(f(*args))", "return f(f(f(*args)))")}, ("train",))

case("decorated function changed", {
    "decos.py": DECOS,
    "pipeline.py": '''
from pivot import stage
from decos import twice


@twice
def inc(x):
    return x + 1


@stage()
def train():
    return inc(1)
'''}, {"pipeline.py": '''
from pivot import stage
from decos import twice


@twice
def inc(x):
    return x + 2


@stage()
def train():
    return inc(1)
'''}, ("train",))

case("decorator added to a helper", {"pipeline.py": '''
from pivot import stage
import functools


def helper(x):
    return x + 1


@stage()
def train():
    return helper(1)
'''}, {"pipeline.py": '''
from pivot import stage
import functools


@functools.lru_cache(maxsize=None)
def helper(x):
    return x + 1


@stage()
def train():
    return helper(1)
'''}, ("train",))

case("lru_cache-wrapped helper changed", {"pipeline.py": '''
from pivot import stage
import functools


@functools.lru_cache(maxsize=None)
def helper(x):
    return x + 1


@stage()
def train():
    return helper(1)
'''}, {"pipeline.py": '''
from pivot import stage
import functools


@functools.lru_cache(maxsize=None)
def helper(x):
    return x + 2


@stage()
def train():
    return helper(1)
'''}, ("train",))

PARTIAL = '''
from pivot import stage
import functools


def scale(x, factor):
    return x * factor


double = functools.partial(scale, factor=2)


@stage()
def train():
    return double(3)
'''

case("functools.partial argument changed", {"pipeline.py": PARTIAL},
     {"pipeline.py": PARTIAL.replace("factor=2)", "factor=3)")}, ("train",))

case("function behind a partial changed", {"pipeline.py": PARTIAL},
     {"pipeline.py": PARTIAL.replace("return x * factor", "return x * factor + 1")}, ("train",))

case("module-level lambda changed", {"pipeline.py": '''
from pivot import stage

square = lambda x: x * x
cube = lambda x: x * x * x


@stage()
def train():
    return square(3)
'''}, {"pipeline.py": '''
from pivot import stage

square = lambda x: x ** 2 + 0
cube = lambda x: x * x * x


@stage()
def train():
    return square(3)
'''}, ("train",))

case("unused module-level lambda changed", {"pipeline.py": '''
from pivot import stage

square = lambda x: x * x
cube = lambda x: x * x * x


@stage()
def train():
    return square(3)
'''}, {"pipeline.py": '''
from pivot import stage

square = lambda x: x * x
cube = lambda x: x * x * x * 1


@stage()
def train():
    return square(3)
'''})

case("lambdas in a dict swapped", {"pipeline.py": '''
from pivot import stage

OPS = {"inc": lambda x: x + 1, "dec": lambda x: x - 1}


@stage()
def train():
    return OPS["inc"](1)
'''}, {"pipeline.py": '''
from pivot import stage

OPS = {"inc": lambda x: x - 1, "dec": lambda x: x + 1}


@stage()
def train():
    return OPS["inc"](1)
'''}, ("train",))

case("registry dict of functions, registered function changed", {"pipeline.py": '''
from pivot import stage


def relu(x):
    return max(x, 0)


def ident(x):
    return x


ACTIVATIONS = {"relu": relu, "ident": ident}


@stage()
def train():
    return ACTIVATIONS["relu"](-1)
'''}, {"pipeline.py": '''
from pivot import stage


def relu(x):
    return max(x, 0.0)


def ident(x):
    return x


ACTIVATIONS = {"relu": relu, "ident": ident}


@stage()
def train():
    return ACTIVATIONS["relu"](-1)
'''}, ("train",))

case("nested function inside the stage changed", {"pipeline.py": '''
from pivot import stage


@stage()
def train():
    def inner(x):
        return x + 1
    return inner(1)
'''}, {"pipeline.py": '''
from pivot import stage


@stage()
def train():
    def inner(x):
        return x + 2
    return inner(1)
'''}, ("train",))

case("async helper and generator changed", {"pipeline.py": '''
from pivot import stage
import asyncio


async def fetch(x):
    return x


def gen(n):
    yield from range(n)


@stage()
def train():
    return asyncio.run(fetch(1))


@stage()
def counts():
    return list(gen(3))
'''}, {"pipeline.py": '''
from pivot import stage
import asyncio


async def fetch(x):
    return x + 1


def gen(n):
    yield from range(n + 1)


@stage()
def train():
    return asyncio.run(fetch(1))


@stage()
def counts():
    return list(gen(3))
'''}, ("train", "counts"))

# == Classes ==============================================================================================

MODELS = '''
def helper(x):
    return x + 1


class Base:
    def prepare(self, x):
        return x * 2


class Model(Base):
    layers = 2

    def __init__(self, width=4):
        self.width = width

    def fit(self, x):
        return helper(self.prepare(x)) * self.layers

    @classmethod
    def create(cls):
        return cls(8)


class Unrelated:
    def go(self):
        return 1
'''

MODELS_PIPELINE = '''
from pivot import stage
from models import Model


@stage()
def train():
    return Model().fit(1)


@stage()
def build():
    return Model.create()


@stage()
def unrelated():
    return 1
'''

case("method changed", {"models.py": MODELS, "pipeline.py": MODELS_PIPELINE},
     {"models.py": MODELS.replace("* self.layers", "* self.layers + 1")}, ("train", "build"))

case("class attribute changed", {"models.py": MODELS, "pipeline.py": MODELS_PIPELINE},
     {"models.py": MODELS.replace("layers = 2", "layers = 3")}, ("train", "build"))

case("base class method changed", {"models.py": MODELS, "pipeline.py": MODELS_PIPELINE},
     {"models.py": MODELS.replace("return x * 2", "return x * 3")}, ("train", "build"))

case("helper called from a method changed", {"models.py": MODELS, "pipeline.py": MODELS_PIPELINE},
     {"models.py": MODELS.replace("return x + 1", "return x + 2")}, ("train", "build"))

case("unrelated class changed", {"models.py": MODELS, "pipeline.py": MODELS_PIPELINE},
     {"models.py": MODELS.replace("def go(self):\n        return 1", "def go(self):\n        return 2")})

# The params model (`@stage(params=Hparams)`): its methods, validators and computed fields count for
# every stage taking it, called or not (`params.scaled()` is a call on a local), and what they reach.
# Its fields do not: their values are compared as params.
TUNING = '''
def boost(x):
    return x + 1
'''

PARAMS_MODEL = '''
from pivot import stage
import pydantic
from tuning import boost


class Hparams(pydantic.BaseModel):
    lr: float = 0.5
    depth: int = 3

    def scaled(self):
        return boost(self.lr) * 2

    @pydantic.field_validator("depth")
    @classmethod
    def check_depth(cls, v):
        if v < 1:
            raise ValueError("depth must be at least 1")
        return v

    @pydantic.computed_field
    @property
    def area(self) -> int:
        return self.depth * 2


class Oparams(pydantic.BaseModel):
    lr: float = 0.5

    def scaled(self):
        return self.lr * 3


class Unrelated:
    def scaled(self):
        return 1


@stage(params=Hparams)
def train(params):
    return params.scaled()


@stage(params=Hparams)
def fit(params):
    return params.area


@stage(params=Oparams)
def other(params):
    return params.scaled()


@stage()
def plain():
    return 1
'''

case("params model method changed", {"tuning.py": TUNING, "pipeline.py": PARAMS_MODEL},
     {"pipeline.py": PARAMS_MODEL.replace("return boost(self.lr) * 2", "return boost(self.lr) * 4")},
     ("train", "fit"))

case("params model validator changed", {"tuning.py": TUNING, "pipeline.py": PARAMS_MODEL},
     {"pipeline.py": PARAMS_MODEL.replace("if v < 1:", "if v < 2:")}, ("train", "fit"))

case("params model computed field changed", {"tuning.py": TUNING, "pipeline.py": PARAMS_MODEL},
     {"pipeline.py": PARAMS_MODEL.replace("return self.depth * 2", "return 2 * self.depth")}, ("train", "fit"))

case("helper called from a params model method changed", {"tuning.py": TUNING, "pipeline.py": PARAMS_MODEL},
     {"tuning.py": TUNING.replace("return x + 1", "return x + 2")}, ("train", "fit"))

case("another stage's params model method changed", {"tuning.py": TUNING, "pipeline.py": PARAMS_MODEL},
     {"pipeline.py": PARAMS_MODEL.replace("return self.lr * 3", "return self.lr * 5")}, ("other",))

case("method of a class that is no params model changed", {"tuning.py": TUNING, "pipeline.py": PARAMS_MODEL},
     {"pipeline.py": PARAMS_MODEL.replace("        return 1\n", "        return 2\n")})

case("params model field default changed (a params change, not a code one)",
     {"tuning.py": TUNING, "pipeline.py": PARAMS_MODEL},
     {"pipeline.py": PARAMS_MODEL.replace("depth: int = 3", "depth: int = 4")})

case("class attribute read as Cls.attr", {"pipeline.py": '''
from pivot import stage


class Settings:
    rate = 0.1
    name = "x"


@stage()
def train():
    return Settings.rate
'''}, {"pipeline.py": '''
from pivot import stage


class Settings:
    rate = 0.2
    name = "x"


@stage()
def train():
    return Settings.rate
'''}, ("train",))

DATACLASS = '''
from pivot import stage
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    lr: float = 0.1
    tags: list = field(default_factory=list)


@stage()
def train():
    return Config().lr
'''

case("dataclass field default changed", {"pipeline.py": DATACLASS},
     {"pipeline.py": DATACLASS.replace("lr: float = 0.1", "lr: float = 0.01")}, ("train",))

case("dataclass field added", {"pipeline.py": DATACLASS},
     {"pipeline.py": DATACLASS.replace("    tags: list", "    epochs: int = 3\n    tags: list")}, ("train",))

PYDANTIC = '''
from pivot import stage
import pydantic


class Hyper(pydantic.BaseModel):
    lr: float = 0.1
    depth: int = pydantic.Field(default=3, ge=1)


@stage()
def train():
    return Hyper().lr
'''

case("pydantic field default changed", {"pipeline.py": PYDANTIC},
     {"pipeline.py": PYDANTIC.replace("default=3", "default=4")}, ("train",))

ENUM = '''
from pivot import stage
import enum


class Mode(enum.Enum):
    FAST = 1
    SLOW = 2


DEFAULT_MODE = Mode.FAST


@stage()
def train():
    return Mode.FAST.value


@stage()
def by_alias():
    return DEFAULT_MODE.value
'''

case("enum value changed", {"pipeline.py": ENUM},
     {"pipeline.py": ENUM.replace("FAST = 1", "FAST = 10")}, ("train", "by_alias"))

case("module-level alias to another enum member", {"pipeline.py": ENUM},
     {"pipeline.py": ENUM.replace("DEFAULT_MODE = Mode.FAST", "DEFAULT_MODE = Mode.SLOW")}, ("by_alias",))

OBJECT = '''
from pivot import stage


class Net:
    def __init__(self, layers, names=("a",)):
        self.layers = layers
        self.names = set(names)

    def run(self):
        return self.layers


NET = Net(3)


@stage()
def train():
    return NET.run()
'''

case("module-level object of a user class: argument changed", {"pipeline.py": OBJECT},
     {"pipeline.py": OBJECT.replace("Net(3)", "Net(4)")}, ("train",))

case("module-level object of a user class: class changed", {"pipeline.py": OBJECT},
     {"pipeline.py": OBJECT.replace("return self.layers", "return self.layers * 2")}, ("train",))

case("module-level object imported from another module", {
    "models.py": '''
class Net:
    def __init__(self, layers):
        self.layers = layers


NET = Net(3)
''', "pipeline.py": '''
from pivot import stage
from models import NET


@stage()
def train():
    return NET.layers
'''}, {"models.py": '''
class Net:
    def __init__(self, layers):
        self.layers = layers


NET = Net(5)
'''}, ("train",))

case("namedtuple made by a call", {"pipeline.py": '''
from pivot import stage
from collections import namedtuple

Point = namedtuple("Point", "x y")


@stage()
def train():
    return Point(1, 2).x
'''}, {"pipeline.py": '''
from pivot import stage
from collections import namedtuple

Point = namedtuple("Point", "x y z", defaults=(0,))


@stage()
def train():
    return Point(1, 2).x
'''}, ("train",))

case("pydantic instance at module level", {"pipeline.py": '''
from pivot import stage
import pydantic


class Opts(pydantic.BaseModel):
    lr: float = 0.1


OPTS = Opts(lr=0.5)


@stage()
def train():
    return OPTS.lr
'''}, {"pipeline.py": '''
from pivot import stage
import pydantic


class Opts(pydantic.BaseModel):
    lr: float = 0.1


OPTS = Opts(lr=0.25)


@stage()
def train():
    return OPTS.lr
'''}, ("train",))

# == Module-level data ==================================================================================

DATA = '''
from pivot import stage

NUM = 3
TEXT = "abc"
RAW = b"\\x00\\x01"
PAIR = (1, "two")
ITEMS = [1, 2, 3]
TABLE = {"a": 1, "b": [2, 3]}
TAGS = {"x", "y", "z"}
NESTED = {"k": ({"deep": [1, {2, 3}]},)}


@stage()
def uses_num():
    return NUM


@stage()
def uses_text():
    return TEXT


@stage()
def uses_raw():
    return RAW


@stage()
def uses_pair():
    return PAIR


@stage()
def uses_items():
    return ITEMS


@stage()
def uses_table():
    return TABLE


@stage()
def uses_tags():
    return sorted(TAGS)


@stage()
def uses_nested():
    return NESTED
'''

for _old, _new, _stage in [
    ("NUM = 3", "NUM = 3.5", "uses_num"),
    ('TEXT = "abc"', 'TEXT = "abd"', "uses_text"),
    ('RAW = b"\\x00\\x01"', 'RAW = b"\\x00\\x02"', "uses_raw"),
    ('PAIR = (1, "two")', 'PAIR = (1, "three")', "uses_pair"),
    ("ITEMS = [1, 2, 3]", "ITEMS = [1, 2, 3, 4]", "uses_items"),
    ('"b": [2, 3]}', '"b": [2, 4]}', "uses_table"),
    ('TAGS = {"x", "y", "z"}', 'TAGS = {"x", "y"}', "uses_tags"),
    ("[1, {2, 3}]", "[1, {2, 4}]", "uses_nested"),
]:
    assert _old in DATA, _old
    case(f"data constant changed: {_stage}", {"pipeline.py": DATA},
         {"pipeline.py": DATA.replace(_old, _new)}, (_stage,))

case("set literal reordered", {"pipeline.py": DATA},
     {"pipeline.py": DATA.replace('TAGS = {"x", "y", "z"}', 'TAGS = {"z", "x", "y"}')})

case("dict literal reordered (iteration order counts)", {"pipeline.py": DATA},
     {"pipeline.py": DATA.replace('{"a": 1, "b": [2, 3]}', '{"b": [2, 3], "a": 1}')}, ("uses_table",))

case("int and float are different values", {"pipeline.py": DATA},
     {"pipeline.py": DATA.replace("NUM = 3", "NUM = 3.0")}, ("uses_num",))

# == Values that cannot be hashed: the assigning statement counts ===========================================

UNHASHABLE = '''
from pivot import stage
import threading

GUARD = threading.Lock()


@stage()
def train():
    with GUARD:
        return 1
'''

case("unhashable value: its statement changed", {"pipeline.py": UNHASHABLE},
     {"pipeline.py": UNHASHABLE.replace("threading.Lock()", "threading.RLock()")}, ("train",))

case("unhashable value: statement unchanged", {"pipeline.py": UNHASHABLE},
     {"pipeline.py": UNHASHABLE.replace("return 1", "return 1  # same")})

# == Third-party and standard library code =================================================================

case("standard library and third-party calls, unrelated edit", {"pipeline.py": '''
from pivot import stage
import json
import os.path
import yaml
from pydantic import BaseModel


def unrelated():
    return 1


@stage()
def train():
    return json.dumps(yaml.safe_load("a: 1")) + os.path.join("a", "b") + str(BaseModel)
'''}, {"pipeline.py": '''
from pivot import stage
import json
import os.path
import yaml
from pydantic import BaseModel


def unrelated():
    return 2


@stage()
def train():
    return json.dumps(yaml.safe_load("a: 1")) + os.path.join("a", "b") + str(BaseModel)
'''})

# == More ways to reach code ================================================================================

case("star import", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage
from helpers import *


@stage()
def train():
    return normalise([4])
'''}, {"helpers.py": HELPERS.replace("x / 2", "x / 3")}, ("train",))

case("bound method of a module-level object", {"pipeline.py": '''
from pivot import stage


class Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return x * self.k


apply = Scaler(2).apply


@stage()
def train():
    return apply(3)
'''}, {"pipeline.py": '''
from pivot import stage


class Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return x * self.k


apply = Scaler(5).apply


@stage()
def train():
    return apply(3)
'''}, ("train",))

case("staticmethod calling a module helper", {"pipeline.py": '''
from pivot import stage


def base(x):
    return x + 1


class Tools:
    @staticmethod
    def run(x):
        return base(x)


@stage()
def train():
    return Tools.run(1)
'''}, {"pipeline.py": '''
from pivot import stage


def base(x):
    return x + 100


class Tools:
    @staticmethod
    def run(x):
        return base(x)


@stage()
def train():
    return Tools.run(1)
'''}, ("train",))

case("__main__ block edited", {"pipeline.py": BASIC + '''

if __name__ == "__main__":
    print(train())
'''}, {"pipeline.py": BASIC + '''

if __name__ == "__main__":
    print(train(), report())
'''})

case("import only used for type checking changed", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from __future__ import annotations
from typing import TYPE_CHECKING
from pivot import stage

if TYPE_CHECKING:
    from helpers import normalise


def helper(f: normalise) -> list[int]:
    return [1]


@stage()
def train():
    return helper(None)
'''}, {"helpers.py": HELPERS.replace("x / 2", "x / 3")})

case("constant used only in a method default", {"pipeline.py": '''
from pivot import stage

WIDTH = 4


class Layer:
    def size(self, w=WIDTH):
        return w


@stage()
def train():
    return Layer().size()
'''}, {"pipeline.py": '''
from pivot import stage

WIDTH = 8


class Layer:
    def size(self, w=WIDTH):
        return w


@stage()
def train():
    return Layer().size()
'''}, ("train",))

case("getattr with a computed name on a module (whole file counts)", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage
import helpers

WHICH = "normalise"


@stage()
def train():
    return getattr(helpers, WHICH)([2])
'''}, {"helpers.py": HELPERS.replace("return x\n", "return x + 1\n")}, ("train",))

case("class attribute reassigned after the class", {"pipeline.py": '''
from pivot import stage


class Model:
    layers = 2

    def depth(self):
        return self.layers


Model.layers = 5


@stage()
def train():
    return Model().depth()
'''}, {"pipeline.py": '''
from pivot import stage


class Model:
    layers = 2

    def depth(self):
        return self.layers


Model.layers = 6


@stage()
def train():
    return Model().depth()
'''}, ("train",))

ATTACHED = '''
from pivot import stage


class Model:
    def fit(self):
        return 1


def fast_fit(self):
    return 2


Model.fit = fast_fit


@stage()
def train():
    return Model().fit()
'''

case("method attached to a class from outside changed", {"pipeline.py": ATTACHED},
     {"pipeline.py": ATTACHED.replace("return 2", "return 3")}, ("train",))

SINGLEDISPATCH = '''
from pivot import stage
import functools


@functools.singledispatch
def describe(x):
    return "thing"


@describe.register
def _(x: int):
    return "int"


@stage()
def train():
    return describe(1)
'''

case("singledispatch implementation changed", {"pipeline.py": SINGLEDISPATCH},
     {"pipeline.py": SINGLEDISPATCH.replace('return "int"', 'return "integer"')}, ("train",))

case("fallback import picks the project's module", {
    "helpers.py": HELPERS,
    "pipeline.py": '''
from pivot import stage

try:
    from helpers import normalise
except ImportError:
    from json import dumps as normalise


@stage()
def train():
    return normalise([2])
'''}, {"helpers.py": HELPERS.replace("x / 2", "x / 3")}, ("train",))
