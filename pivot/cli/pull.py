"""pivot pull (defined in pivot/cli/transfer.py with push/fetch/pull)."""

from pivot.cli.transfer import pull_command as command

__all__ = ["command"]
