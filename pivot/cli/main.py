"""The `pivot` command. Subcommands are imported only when they run, so `pivot --help` stays fast."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

# name -> (module, short help). The short help lives here so listing commands imports nothing.
# A module's `command`, or "module:name" for another click command of that module.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("pivot.cli.init", "Create .pivot/ in a git work tree."),
    "run": ("pivot.cli.run", "Run stages that changed (and what they need)."),
    "status": ("pivot.cli.status", "Show which stages are stale and why."),
    "list": ("pivot.cli.listing", "List the stages with their deps and outputs."),
    "dag": ("pivot.cli.dag", "Draw the stage graph."),
    "checkout": ("pivot.cli.checkout", "Make workspace outputs match the lock files, from the cache."),
    "logs": ("pivot.cli.logs", "Show what a stage printed the last time it ran."),
    "verify": ("pivot.cli.verify", "Fail when a stage is stale or a metric differs from its lock (for CI)."),
    "metrics": ("pivot.cli.metrics", "Show metric values, or diff them between git revisions."),
    "params": ("pivot.cli.params", "Show recorded params, or diff them between git revisions."),
    "hooks": ("pivot.cli.hooks", "Install or remove the git hooks that keep lock files honest."),
    "remote": ("pivot.cli.remote", "Add, list, remove remotes and choose the default."),
    "push": ("pivot.cli.push", "Upload the cache objects the lock files need to a remote."),
    "fetch": ("pivot.cli.fetch", "Download the cache objects the lock files need (verified)."),
    "pull": ("pivot.cli.pull", "fetch, then checkout the outputs."),
    "get": ("pivot.cli.get", "Write an output or tracked path as of any git revision to a file or folder."),
    "gc": ("pivot.cli.gc", "Remove cache (or remote) objects no kept lock file refers to."),
    "plots": ("pivot.cli.plots", "Draw the Plot outputs on one offline HTML page; overlay git revisions."),
    "track": ("pivot.cli.track", "Keep data files or folders in the cache, recorded in git instead of committed."),
    "untrack": ("pivot.cli.track:untrack", "Stop tracking data (the data stays; its record goes)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, _, attribute = COMMANDS[name][0].partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attribute or "command")  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_mod, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pivot", message="pivot %(version)s")
def cli() -> None:
    """Pivot: run only what changed in a Python pipeline."""


def _crash_report(exc: BaseException) -> str:
    from pivot.remote_config import SECRET_KEYS, scrub  # lazy: only on a crash

    # -o key=value options that are credentials, and any url's user:password@, are not written.
    args = [f"{a.split('=', 1)[0]}=***" if a.split("=", 1)[0] in SECRET_KEYS and "=" in a else a
            for a in sys.argv[1:]]
    import tempfile  # lazy: only on a crash (tempfile imports random, shutil: start-up time)

    fd, path = tempfile.mkstemp(prefix="pivot-crash-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(scrub(f"pivot {' '.join(args)}\n\n"))
        f.write(scrub("".join(traceback.format_exception(exc))))
    return path


# Exit codes: 0 ok, 1 a user-facing error (PivotError) or a failed stage, 2 a command-line usage
# error (click's convention), INTERNAL_ERROR a bug in pivot, 130 Ctrl-C. docs/cli.md lists them.
INTERNAL_ERROR = 70  # EX_SOFTWARE in sysexits.h: "an internal software error has been detected"


def main(argv: list[str] | None = None) -> Any:
    from pivot.errors import PivotError

    try:
        code = cli.main(args=argv, prog_name="pivot", standalone_mode=False)
    except PivotError as exc:
        click.echo(f"error: {exc}", err=True)
        code = exc.exit_code
    except click.exceptions.Abort:  # click's form of Ctrl-C
        click.echo("interrupted: nothing half-written was kept", err=True)
        code = 130
    except KeyboardInterrupt:
        click.echo("interrupted: nothing half-written was kept", err=True)
        code = 130
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except BrokenPipeError:
        code = 0
    except Exception as exc:  # a bug in pivot: short message, full report in a file
        path = _crash_report(exc)
        from pivot.remote_config import scrub  # lazy: only on a crash

        click.echo(f"internal error: {type(exc).__name__}: {scrub(str(exc))} "
                   f"(this is a bug in pivot; report: {path})", err=True)
        code = INTERNAL_ERROR
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
