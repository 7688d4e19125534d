"""Answers for stages that ran speculatively on a worker after another stage in one round trip
(pivot/speculate.py says which), kept until the runner submits those stages itself.

The client sends the first stage's WorkerTask and its followers' (a follower's deps that the
stage before it produces have an empty hash); the worker (dask_worker.run_chain) runs them in
order, fills those hashes from what the stage before produced, stops at the first failure,
and answers for each one it ran. When the runner later submits a follower, its answer is used
if the task the client builds then is the one the worker ran (same code, fingerprint, versions,
deps and their hashes, outputs): otherwise it is dropped and the stage goes to the cluster.

A follower that failed before its code ran (a dep it could not fetch, the remote failing) is
not used either: sent on its own, it would not have met the same trouble.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from pivot.executor.dask_worker import WorkerReply, WorkerTask


class Answered:
    """Stands for a finished Dask future whose result is a reply already at hand."""

    def __init__(self, reply: WorkerReply) -> None:
        self.reply = reply

    def result(self) -> WorkerReply:
        return self.reply


class Speculated:
    """stage name -> (the WorkerTask as the worker ran it, its reply)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[WorkerTask, WorkerReply]] = {}

    def unpack(self, dfut: Any, followers: tuple[WorkerTask, ...]) -> Any:
        """A chain's Dask future -> something whose result() is the first stage's reply; the
        followers' replies are kept. A failed future is returned as it is."""
        try:
            first, rest = dfut.result()
        except BaseException:  # the first stage's answer carries the failure
            return dfut
        self.keep(followers, rest)
        return Answered(first)

    def keep(self, followers: Iterable[WorkerTask],
             rest: Iterable[tuple[tuple[Any, ...], WorkerReply]]) -> None:
        with self._lock:
            for wt, (deps, reply) in zip(followers, rest, strict=False):
                self._answers[wt.name] = (replace(wt, deps=tuple(deps)), reply)

    def claim(self, wt: WorkerTask) -> WorkerReply | None:
        """The kept reply for the stage `wt` is, if the worker ran exactly `wt` and the answer
        stands; it is forgotten either way."""
        with self._lock:
            kept = self._answers.pop(wt.name, None)
        if kept is None:
            return None
        ran, reply = kept
        result = reply.result
        if not (result.ok or result.refused or any(step == "run" for step, _s in result.timings)):
            return None
        return reply if same_inputs(ran, wt) else None

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


def same_inputs(ran: WorkerTask, wt: WorkerTask) -> bool:
    def deps(t: WorkerTask) -> set[tuple[str, str, bool]]:
        return {(r.path, r.hash, r.is_dir) for r in t.deps}

    return (ran.code_digest == wt.code_digest and ran.fingerprint == wt.fingerprint and ran.versions == wt.versions
            and ran.outs == wt.outs and deps(ran) == deps(wt) and not ran.inputs and not wt.inputs
            and ran.download == wt.download and ran.remote == wt.remote)
