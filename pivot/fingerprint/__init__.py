"""Code fingerprints: what a stage's code is, as a manifest of everything it reaches.

A stage's fingerprint covers its own normalised AST and, recursively, the user functions,
classes, constants and modules it reaches; third-party and standard-library code count by
distribution version, never by their source. Each entry is keyed by kind, module and
qualified name, so helpers with the same name in different modules never collide:

    func:helpers.normalise     "<hash of the normalised def> helpers.py"
    class:models.Net           "<hash of the normalised class body> models.py"
    const:pipeline.THRESHOLD   "<hash of the value> pipeline.py"
    closure:pipeline.scale.k   "<hash of a closure variable (or nested function's defaults)> pipeline.py"
    module:helpers             "<hash of the whole file> helpers.py"   (conservative rules, see below)
    pkg:numpy                  "1.26.4"   (the distribution's version)
    python:stdlib              "3.11"     (the Python version; always present)

User-code values are "<digest> <file relative to the root>" so `status --explain` can name
the file. The fingerprint is the hash of the sorted manifest.

A stage's params model counts by its members (methods, validators, computed fields, class
attributes), not its fields, whose values the params record compares.

What a definition reaches is found statically, with Python's scoping rules (parameters and
assigned names are local; class bodies are not visible from methods; comprehensions have
their own scope): free names and dotted chains (`helpers.fn`, `pkg.sub.scale`). They are
then resolved against the live module globals and closures, walking attribute chains through
user modules only. Module-level values are hashed canonically (plain data directly; other
objects through their pickle reduction, but with sets sorted and code referenced by name).

Conservative rules, each reported as a note in the lock and by `status --explain`:
- a value that cannot be hashed counts by the module-level statement that assigns it;
  a closure variable that cannot be hashed counts by the function that created the closure;
  with neither, the stage is treated as changed every time;
- a user module imported inside a function, or used as a value (passed around, `getattr`
  with a computed name), counts as its whole file plus the user modules it imports;
- `eval`/`exec`/`__import__`/`globals()`/computed `getattr` are reported, not followed.

Per-module summaries (AST hashes and references) are cached in the state database by the
source file's (size, mtime). See docs/fingerprints.md.

Modules, in the order data flows (each imports only modules above it):

    manifest       the Fingerprint record; entry digests, merging clashing values, the final hash
    scopes         Python's scoping rules on the AST: the names a scope binds, dotted chains
    normalise      drops what never changes behaviour (docstrings, @stage, annotations)
    summary        summarise(): one source file's definitions, digests and references
    objects        inspecting live functions, classes and closures (names, cells, bytecode)
    items          Item (something reached) and Node (what it yields) of the walk
    modules        ModuleIndex: user files and modules, cached summaries, import origins, edits
    packages       PackageVersions: installed code by distribution version, cached
    values         ValueHasher: canonical hashes of module-level values
    fingerprinter  Fingerprinter: the walk from a stage function over all it reaches
"""

from pivot.fingerprint.fingerprinter import Fingerprinter
from pivot.fingerprint.manifest import Fingerprint
from pivot.fingerprint.summary import summarise

__all__ = ["Fingerprint", "Fingerprinter", "summarise"]
