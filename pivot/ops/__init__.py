"""The use cases: one typed function per operation, each returning a result record.

`pivot/cli/*` and the git-hook entry point (`pivot/hooks.py`) parse their arguments, call one
operation and render its result; nothing else. Every module here imports what it needs lazily
where that keeps `pivot --help`, `push` and `pull` fast: importing `pivot.ops` costs nothing.
"""
