"""The Fingerprinter: the walk from a stage function over everything it reaches at run time.

Each reached thing is an `Item`; it is classified (user code, a value, a whole module, an
installed package), turned into a `Node` (its manifest entries, notes and the items it reaches
in turn) once per Fingerprinter, and the entries of all nodes reached from the stage function
make its manifest. Free names and dotted chains from the static summaries are resolved here
against the live module globals and closures, walking attribute chains through user modules only.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pivot.errors import Unhashable
from pivot.fingerprint.items import Item, Node
from pivot.fingerprint.manifest import (
    CHANGED,
    DIGEST_CHARS,
    PYTHON_VERSION,
    Fingerprint,
    build_fingerprint,
    entry_digest,
    exception_note,
)
from pivot.fingerprint.modules import ModuleIndex
from pivot.fingerprint.objects import (
    all_names,
    cells,
    code_text,
    identity,
    importable,
    is_plain,
    member_code,
    shallow_code,
    split_label,
    wraps_code,
)
from pivot.fingerprint.packages import PackageVersions
from pivot.fingerprint.summary import DYNAMIC_CALLS
from pivot.fingerprint.values import ValueHasher
from pivot.hashing import hash_file
from pivot.state import State


class Fingerprinter:
    def __init__(self, root: Path, state: State | None = None) -> None:
        self.root = str(root)
        self.state = state
        # Created before the pipeline is imported (Repo does so): the module index notes the time,
        # and files modified after it count as changed.
        self.modules = ModuleIndex(self.root, state)
        self.packages = PackageVersions(state, self.modules.is_user_file)
        self._memo: dict[tuple[str, str, int, str, str], Node] = {}
        self._keep: list[Any] = []  # objects whose id() is in _memo stay alive
        # The project's absolute path in a value (ROOT = Path(__file__).parent) differs per clone,
        # and the home directory per user: both are hashed as placeholders. Longest first: the
        # root is usually inside the home directory.
        forms = {self.root: "<root>", os.path.realpath(self.root): "<root>"}
        home = os.path.expanduser("~")
        if len(home) > 1 and home not in forms:
            forms[home] = "<home>"
        self.portable_forms = sorted(forms.items(), key=lambda f: len(f[0]), reverse=True)

    # -- public ------------------------------------------------------------
    def fingerprint(self, func: Callable[..., Any], params: type | None = None) -> Fingerprint:
        """The manifest of everything `func` reaches; with `params` (the stage's params model),
        also of what the model's methods, validators and computed fields reach (its fields are
        not: their values are compared as params). Without params, nothing is added."""
        found: dict[str, str] = {"python:stdlib": PYTHON_VERSION}
        clashes: dict[str, set[str]] = {}  # keys reached with different values
        notes: set[str] = set()
        seen: set[tuple[str, str, int, str, str]] = set()
        if isinstance(func, types.FunctionType) and importable(func):  # (a stage: classify's answer, quicker)
            stack = [Item("obj", "", func)]
        else:
            stack = [self.classify(func, ".".join(identity(func)), "const", "", "", "")]
        if params is not None:
            stack.append(Item("params", "", params))
        while stack:
            item = stack.pop()
            if item.key in seen:
                continue
            seen.add(item.key)
            node = self.node(item)
            for k, v in node.entries.items():
                old = found.setdefault(k, v)
                if old != v:
                    clashes.setdefault(k, {old}).add(v)
            if node.notes:
                notes.update(node.notes)
            stack.extend(node.children)
        self.packages.save()
        return build_fingerprint(found, clashes, notes)

    def is_user_file(self, filename: str | None) -> bool:
        """Code in the project (under the root, not in a virtualenv inside it)."""
        return self.modules.is_user_file(filename)

    def owns(self, obj: Any) -> bool:
        """The object's code is in the project."""
        return self.modules.owns(obj)

    # -- classification -------------------------------------------------------
    def _pkg_item(self, module_name: str) -> Item:
        """Installed code by its distribution; code in the project (an extension module) by its file."""
        if module_name and self.modules.is_user_module(module_name):
            return Item("file", module_name, module_name, "")
        top = module_name.split(".")[0] or "builtins"
        return Item("pkg", top, top)

    def classify(self, obj: Any, label: str, kind: str, module: str, name: str, owner: str) -> Item:
        """What kind of thing a reached object is; data becomes a value item named `label`."""
        if isinstance(obj, types.ModuleType):
            if self.modules.is_user_module(obj.__name__):
                return Item("file", obj.__name__, obj.__name__, owner)
            return self._pkg_item(obj.__name__)
        if isinstance(obj, (types.FunctionType, type)):
            return Item("obj", "" if importable(obj) else label, obj)
        if isinstance(obj, (types.BuiltinFunctionType, types.WrapperDescriptorType,
                            types.MethodDescriptorType, types.ClassMethodDescriptorType)):
            owner_obj = getattr(obj, "__self__", None)
            if owner_obj is None or isinstance(owner_obj, types.ModuleType):
                return self._pkg_item(getattr(obj, "__module__", None) or "builtins")
        if wraps_code(obj):
            return Item("obj", label, obj)  # a decorator's wrapper object (lru_cache, ...)
        return Item(kind, label, obj, module, name)

    def _resolve(self, ref: str, globals_: dict[str, Any], closure: dict[str, Any], module: str,
                 owner: str, holder: str = "") -> list[Item]:
        """What a free name or dotted chain in `owner`'s code refers to (`holder`: the qualname of
        the function whose closure is given)."""
        modules = self.modules
        head, _, tail = ref.partition(".")
        if head not in closure and head not in globals_:
            return []  # a builtin (counted by the Python version) or an unbound name
        if head in closure:
            obj, label, kind, where, name = closure[head], f"{owner}.{head}", "closure", module, holder
        else:
            obj, (where, name) = globals_[head], modules.origin(module, head)
            if not modules.is_user_module(where):
                if not modules.is_user_code(obj):
                    return [self._pkg_item(where)]
                where, name = module, head  # try: from mine import x / except: from theirs import x
            label, kind = f"{where}.{name}" if name else where, "const"
        for attr in tail.split(".") if tail else ():
            if not isinstance(obj, types.ModuleType) or not modules.is_user_module(obj.__name__) \
                    or attr.startswith("__"):
                break
            try:
                nxt = getattr(obj, attr)
            except Exception:
                break
            where, name = modules.origin(obj.__name__, attr)
            if not modules.is_user_module(where):
                if not modules.is_user_code(nxt):
                    return [self._pkg_item(where)]
                where, name = obj.__name__, attr
            obj, label, kind = nxt, f"{where}.{name}" if name else where, "const"
        return [self.classify(obj, label, kind, where, name, owner)]

    # -- nodes ------------------------------------------------------------------
    def node(self, item: Item) -> Node:
        """What an item yields (computed once per Fingerprinter)."""
        key = item.key
        node = self._memo.get(key)
        if node is None:
            try:
                node = self._compute(item)
            except Exception as exc:  # a bug, or an object too strange to inspect: visible, conservative
                what = item.label or getattr(item.obj, "__qualname__", None) or type(item.obj).__qualname__
                node = self._residual(f"error:{what}", what, f"could not be fingerprinted ({exception_note(exc)})",
                                      None, [])
            self._memo[key] = node
            self._keep.append(item.obj)
        return node

    def _compute(self, item: Item) -> Node:
        if item.kind == "pkg":
            key, version = self.packages.entry(item.obj)
            return Node({key: version}, [], [])
        if item.kind == "file":
            return self._file_node(item.obj, item.module)
        if item.kind in ("const", "closure"):
            return self._value_node(item)
        if item.kind == "params":
            return self._params_node(item.obj)
        obj = item.obj
        if isinstance(obj, types.FunctionType):
            return self._function_node(obj, item.label)
        if isinstance(obj, type):
            return self._class_node(obj, item.label)
        return self._wrapper_node(obj, item.label)

    def _file_node(self, name: str, owner: str) -> Node:
        """Conservative rule: a whole user module (and the user modules it imports) counts."""
        modules = self.modules
        filename = modules.module_file(name)
        summary = modules.module_summary(name)
        if summary is None or not filename:
            if filename and os.path.isfile(filename):  # an extension module in the project
                return Node({f"module:{name}": f"{hash_file(filename)[:DIGEST_CHARS]} {modules.relpath(filename)}"},
                            [], [])
            return Node({f"module:{name}": "namespace"}, [], [])
        children: list[Item] = []
        for level, src, attr in [*summary["imports"].values(), *([*s, ""] for s in summary["stars"])]:
            absolute = modules.absolute(level, src, name)
            for cand in (f"{absolute}.{attr}" if attr else "", absolute):
                if cand and modules.module_file(cand) is not None:
                    children.append(self._pkg_item(cand))  # a user module: its file, without a note
                    break
            else:
                children.append(self._pkg_item(absolute))
        rel = modules.relpath(filename)
        notes = [f"{owner}: uses module {name} as a whole (imported in a function, or as a value); "
                 f"all of {rel} counts"] if owner else []
        digest = modules.unless_edited(filename, summary["file"], notes)
        return Node({f"module:{name}": f"{digest} {rel}"}, children, notes)

    def _function_node(self, func: types.FunctionType, label: str) -> Node:
        modules = self.modules
        code = func.__code__
        module, qualname = identity(func)
        user = modules.is_user_file(code.co_filename)
        if not user and not (modules.is_user_module(module) and not os.path.isfile(code.co_filename)):
            return self._foreign_function(func, module)
        key = f"{module}.{qualname}" if "<" not in qualname or not label else label
        summary = modules.summary(code.co_filename) if user else None
        found = summary["defs"].get(f"f:{code.co_firstlineno}") if summary else None
        notes: list[str] = []
        if found is None:
            digest, refs, flags = entry_digest(code_text(code)), sorted(all_names(code)), []
            notes.append(f"{key}: source not found; fingerprinted by its bytecode (specific to this Python version)")
            filename = modules.module_file(module) or code.co_filename
        else:
            digest, refs, flags = found
            filename = code.co_filename
        digest = modules.unless_edited(filename, digest, notes)
        closure = cells(func) if func.__closure__ else {}
        children: list[Item] = []
        for ref in refs:
            children.extend(self._resolve(ref, func.__globals__, closure, module, key, qualname))
        if "<" in qualname and (func.__defaults__ or func.__kwdefaults__):
            # defaults of a nested function are evaluated where it is created, like a closure
            children.append(Item("closure", f"{key}.<defaults>", (func.__defaults__, func.__kwdefaults__),
                                 module, qualname))
        if flags:
            flag_children, flag_notes = self._flags(flags, func, key)
            children.extend(flag_children)
            notes.extend(flag_notes)
        rel = modules.relpath(filename) if (user if filename is code.co_filename else modules.is_user_file(filename)) \
            else filename
        return Node({f"func:{key}": f"{digest} {rel}"}, children, notes)

    def _foreign_function(self, func: types.FunctionType, module: str) -> Node:
        """Installed code counts by version; user code it holds still counts: what a decorator
        wraps, and registries in its closure or attributes (functools.singledispatch)."""
        key, version = self.packages.entry(module or "builtins")
        held = [getattr(func, "__wrapped__", None), *cells(func).values(), *vars(func).values()]
        children = [Item("obj", "", obj) for obj in shallow_code(held) if self.modules.owns(obj)]
        return Node({key: version}, children, [])

    def _flags(self, flags: list[str], func: types.FunctionType, key: str) -> tuple[list[Item], list[str]]:
        """Dynamic features found in the code: conservative rules and notes."""
        children: list[Item] = []
        notes: list[str] = []
        for flag in flags:
            kind, _, rest = flag.partition(":")
            if kind == "import":
                level, src, names = rest.split(":", 2)
                children.extend(self._local_import(int(level), src, names, identity(func)[0], key))
            elif kind == "call" and (rest not in DYNAMIC_CALLS or rest not in func.__globals__):
                notes.append(f"{key}: calls {rest}(); code reached that way is not fingerprinted")
            elif kind == "getattr":
                notes.append(f"{key}: getattr() with a computed name; what it reaches is not fingerprinted")
        return children, notes

    def _local_import(self, level: int, src: str, names: str, module: str, key: str) -> list[Item]:
        """A module imported inside a function: user modules count whole, others by version."""
        modules = self.modules
        absolute = modules.absolute(level, src, module)
        found = [f"{absolute}.{n}" for n in names.split(",") if n and modules.module_file(f"{absolute}.{n}")]
        out: list[Item] = []
        for cand in [absolute, *found]:
            out.append(Item("file", cand, cand, key) if modules.is_user_module(cand) else self._pkg_item(cand))
        return out

    def _class_node(self, cls: type, label: str) -> Node:
        modules = self.modules
        module = cls.__module__
        filename = modules.module_file(module)
        if filename is None or not modules.is_user_file(filename):
            key, version = self.packages.entry(module)
            return Node({key: version}, [], [])
        key = f"{module}.{cls.__qualname__}" if importable(cls) or not label else label
        summary = modules.summary(filename)
        found = summary["defs"].get(f"c:{cls.__qualname__}") if summary else None
        globals_ = vars(sys.modules[module]) if module in sys.modules else {}
        children: list[Item] = [self.classify(b, "", "const", "", "", key) for b in cls.__bases__
                                if b is not object]
        if type(cls) is not type:
            children.append(self.classify(type(cls), "", "const", "", "", key))
        notes: list[str] = []
        if found is not None:
            digest, refs, _flags = found
        else:  # made by a call (namedtuple, Enum("C", ...), make_dataclass): the statement counts
            stmt = modules.statement(module, cls.__name__) or modules.statement(*split_label(label))
            if stmt is None:
                return self._residual(f"class:{key}", key, f"the source of class {cls.__qualname__} "
                                      "was not found", filename, children)
            digest, refs = stmt
        for ref in refs:
            children.extend(self._resolve(ref, globals_, {}, module, key))
        extra = self._class_runtime(cls, key, children)
        if extra:
            digest = entry_digest(f"{digest}|{extra}")
        digest = modules.unless_edited(filename, digest, notes)
        return Node({f"class:{key}": f"{digest} {modules.relpath(filename)}"}, children, notes)

    def _class_runtime(self, cls: type, key: str, children: list[Item]) -> str:
        """The class's attributes as they are after import, so assignments made outside its body
        (`Model.layers = 5`, `Model.fit = fast_fit`) count: plain data by value, user functions
        not defined in the body by reference (their code is followed)."""
        parts: list[str] = []
        own = f"{cls.__qualname__}."
        for name, value in vars(cls).items():
            if name.startswith("__") and name.endswith("__"):
                continue
            raw = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if isinstance(raw, types.FunctionType):
                module, qualname = identity(raw)
                if (module != cls.__module__ or not qualname.startswith(own)) and self.modules.owns(raw):
                    parts.append(f"{name}=fn:{module}.{qualname}")
                    children.append(Item("obj", "" if "<" not in qualname else f"{key}.{name}", raw))
            elif is_plain(raw):
                parts.append(f"{name}={ValueHasher(self, key).digest(raw)}")
        return entry_digest(";".join(parts)) if parts else ""

    def _params_node(self, model: type) -> Node:
        """A stage's params model: the code of its members, and of its bases' (methods,
        validators, computed fields and properties, as functions, so `--explain` names each), and
        the values of its other class attributes (`model_config` when set, class variables);
        installed bases by version. Field declarations are left out, and so is pydantic itself:
        the params record compares the values they give. A model with fields only adds nothing."""
        children: list[Item] = []
        for cls in model.__mro__:
            if cls is object or cls.__module__.partition(".")[0] == "pydantic":
                continue
            if not self.modules.owns(cls):
                children.append(self._pkg_item(cls.__module__))
                continue
            if type(cls).__module__.partition(".")[0] not in ("builtins", "pydantic"):  # a metaclass
                children.append(self.classify(type(cls), "", "const", "", "", ""))
            children.extend(self._params_members(cls))
        return Node({}, children, [])

    def _params_members(self, cls: type) -> list[Item]:
        """One params model class's own members (see _params_node)."""
        label = f"{cls.__module__}.{cls.__qualname__}"
        out: list[Item] = []
        # private attributes' defaults (`_seen: int = PrivateAttr(0)`) are not in the params record
        private = vars(cls).get("__private_attributes__")
        private = private if isinstance(private, dict) else {}
        members = [*vars(cls).items(), *private.items()]
        for name, value in members:
            if (name.startswith("__") and name.endswith("__")) or (name == "model_config" and not value):
                continue
            code = member_code(value)
            if code:
                out.extend(self.classify(c, f"{label}.{name}", "const", "", "", label) for c in code)
            elif is_plain(value) or not name.startswith("_") or name in private:  # not abc's state
                out.append(Item("const", f"{label}.{name}", value, cls.__module__, f"{cls.__qualname__}.{name}"))
        # validators given in a field's annotation: `x: Annotated[int, AfterValidator(check)]`
        fields = vars(cls).get("__pydantic_fields__")
        for name, field in (fields.items() if isinstance(fields, dict) else ()):
            for meta in getattr(field, "metadata", ()):
                func = getattr(meta, "func", None)
                if callable(func):
                    out.append(self.classify(func, f"{label}.{name}", "const", "", "", label))
        return out

    def _wrapper_node(self, obj: Any, label: str) -> Node:
        """A callable wrapping user code (functools.lru_cache, ...): the wrapped function counts,
        and the wrapper by its package."""
        wrapped = obj.__wrapped__
        children = [Item("obj", "" if importable(wrapped) else label, wrapped)]
        children.append(self._pkg_item(type(obj).__module__))
        return Node({}, children, [])

    def _residual(self, key: str, label: str, why: str, filename: str | None, children: list[Item]) -> Node:
        """Nothing sound to hash: treated as changed on every run, and said so."""
        rel = self.modules.relpath(filename) if filename and self.modules.is_user_file(filename) else ""
        note = (f"{label}: {why}; the stage is treated as changed on every run "
                "(see docs/fingerprints.md)")
        return Node({key: f"{CHANGED} {rel}".rstrip()}, children, [note])

    def _value_node(self, item: Item) -> Node:
        value = item.obj
        key = f"{item.kind}:{item.label}"
        filename = self.modules.module_file(item.module) if item.module else None
        rel = self.modules.relpath(filename) if filename and self.modules.is_user_file(filename) else ""
        hasher = ValueHasher(self, item.label)
        try:
            digest = hasher.digest(value)
        except Unhashable as exc:
            return self._unhashable(item, value, str(exc), filename, rel)
        if type(value).__module__ != "builtins":
            hasher.children.append(self.classify(type(value), "", "const", "", "", item.label))
        return Node({key: f"{digest} {rel}".rstrip()}, hasher.children, [])

    def _unhashable(self, item: Item, value: Any, why: str, filename: str | None, rel: str) -> Node:
        key = f"{item.kind}:{item.label}"
        what = f"a {type(value).__module__}.{type(value).__qualname__} value cannot be hashed ({why})"
        children = [self.classify(type(value), "", "const", "", "", item.label)]
        if item.kind == "const":
            # a class attribute (`Params.model_config`): the class statement assigns it
            stmt = self.modules.statement(item.module, item.name.split(".")[0])
            if stmt is not None:
                digest, refs = stmt
                globals_ = vars(sys.modules[item.module]) if item.module in sys.modules else {}
                for ref in refs:
                    children.extend(self._resolve(ref, globals_, {}, item.module, item.label))
                notes = [f"{item.label}: {what}; the statement assigning it in {rel} counts instead"]
                if filename:
                    digest = self.modules.unless_edited(filename, digest, notes)
                return Node({key: f"stmt-{digest} {rel}"}, children, notes)
        elif item.kind == "closure":
            creator = self._creator(item)
            if creator is not None:
                children.append(creator)
                note = (f"{item.label}: {what}; the function that created the closure, "
                        f"{'.'.join(identity(creator.obj))}, counts instead")
                return Node({key: f"creator {rel}".rstrip()}, children, [note])
        return self._residual(key, item.label, what, filename, children)

    def _creator(self, item: Item) -> Item | None:
        """The function whose call made a closure: `outer` for `outer.<locals>.inner`."""
        if ".<locals>." not in item.name:
            return None
        target: Any = sys.modules.get(item.module)
        for part in item.name.rsplit(".<locals>.", 1)[0].split("."):
            target = getattr(target, part, None)
        return Item("obj", "", target) if isinstance(target, types.FunctionType) else None
