"""pivot checkout: workspace outputs to match the lock files, from the cache."""

from __future__ import annotations

from pivot.checkout import CheckoutResult, Modified, checkout
from pivot.workspace import Workspace

__all__ = ["CheckoutResult", "Modified", "checkout_outputs"]


def checkout_outputs(stages: tuple[str, ...], force: bool, action: str = "checkout") -> CheckoutResult:
    """Restore the outputs of `stages` (default: all); a modified output whose content is in no
    cache object is kept, unless `force`."""
    with Workspace.find() as ws:
        repo = ws.repo
        with ws.lock(action):
            return checkout(repo, stages, Modified.OVERWRITE if force else Modified.KEEP)
