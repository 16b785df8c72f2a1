"""The command line: one module per command group; this package only assembles them.

May use every other package; nothing outside ``cli`` imports it. Commands are thin: they parse options, build
objects through :mod:`streamproc.runtime.build`, call library functions and print. User mistakes (any
:class:`~streamproc.errors.StreamprocError`) print one line on stderr and exit 2; anything else is a bug and
keeps its traceback.

Each command's module is imported only when that command runs (or a help page lists it): importing them all cost
about 0.5 s of every command's start-up, a third of a short ``redact`` job.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, NamedTuple

import typer
import typer.main
from typer._click.core import Command
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from streamproc.cli.common import err_console
from streamproc.cli.usage import hide_flag_types, usage_error_line
from streamproc.errors import StreamprocError


class _Entry(NamedTuple):
    """Where a top-level command lives: ``streamproc.cli.<module>.<attr>``, a function or a Typer sub-app."""

    module: str
    attr: str
    group: bool = False
    hidden: bool = False
    help: str | None = None  # a sub-app's help, where it is given here rather than by the sub-app
    extra: tuple[tuple[str, str, str], ...] = ()  # (name, module, attr): commands added to a sub-app


# Help order. Only names are known up front; a module is imported when its command is looked up.
_COMMANDS: Mapping[str, _Entry] = {
    "calibrate": _Entry("calibrate", "calibrate_command"),
    "child": _Entry("run", "child_command", hidden=True),
    "validate": _Entry("config", "validate_command"),
    "run": _Entry("run", "run_command"),
    "redact": _Entry("redact", "redact_command"),
    "identify": _Entry("identify", "identify_command"),
    "demo": _Entry("demo", "demo_command"),
    "models": _Entry("models", "models_app", group=True),
    "watchlist": _Entry("watchlist", "watchlist_app", group=True, extra=(("reenroll", "reenrol", "reenroll_command"),)),
    "evaluate": _Entry("evaluate", "evaluate_app", group=True),
    "config": _Entry("config", "config_app", group=True),
    "events": _Entry("events", "events_app", group=True, help="Subscribe to the match event feed."),
    "keys": _Entry("keys", "keys_app", group=True, help="CURVE key pairs for the secured event feed."),
    "audit": _Entry("audit", "audit_app", group=True, help="Tamper-evident audit log of the watchlist and its use."),
    "review": _Entry("review", "review_app", group=True, help="Human review of match events (confirm / reject)."),
}


def _load(name: str, entry: _Entry) -> Command:
    """The click command for ``name``, built exactly as registering it on the root app would build it."""
    target = getattr(importlib.import_module(f"streamproc.cli.{entry.module}"), entry.attr)
    holder = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    if entry.group and entry.help is not None:  # help= given at all overrides the sub-app's own, even as None
        holder.add_typer(target, name=name, help=entry.help)
    elif entry.group:
        holder.add_typer(target, name=name)
    else:
        holder.command(name, hidden=entry.hidden)(target)
    command = typer.main.get_group(holder).commands[name]
    if isinstance(command, TyperGroup):
        for sub_name, module, attr in entry.extra:
            command.add_command(_load(sub_name, _Entry(module, attr)), sub_name)
    hide_flag_types(command)
    return command


class _LazyCommands(MutableMapping[str, Command]):
    """The root's commands by name, in help order; each is loaded on its first lookup and kept."""

    def __init__(self, entries: Mapping[str, _Entry]) -> None:
        self._entries = entries
        self._loaded: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        command = self._loaded.get(name)
        if command is None:
            command = self._loaded[name] = _load(name, self._entries[name])
        return command

    def __setitem__(self, name: str, command: Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"the command line's commands are fixed; {name!r} cannot be removed")

    def __iter__(self) -> Iterator[str]:
        yield from self._entries
        yield from (name for name in self._loaded if name not in self._entries)

    def __len__(self) -> int:
        return len(self._entries.keys() | self._loaded.keys())


class _LazyGroup(TyperGroup):
    """The root group: knows every command's name (help order, unknown-command suggestions) without importing it."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LazyCommands(_COMMANDS)


def _root() -> None:
    """Nothing runs before a command; Typer builds a group (not a single command) only for an app with a callback."""


app = typer.Typer(
    name="streamproc",
    cls=_LazyGroup,
    callback=_root,
    help="Accountable face search for body-camera video. A match is a candidate for human review, "
    "never an identification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main() -> None:
    """Console entry point: one-line errors for user mistakes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = typer.main.get_command(app)
    argv = sys.argv[1:]
    try:
        code = command.main(args=argv, prog_name="streamproc", standalone_mode=False)
    except NoArgsIsHelpError as err:  # the help was printed: a group named without a command
        sys.exit(err.exit_code)
    except UsageError as err:
        err_console.print(f"[red]error:[/red] {usage_error_line(err, argv)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except StreamprocError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as err:  # files and sockets the user pointed at: unwritable, missing, not a directory
        where = f": {err.filename}" if err.filename else ""
        err_console.print(f"[red]error:[/red] {err.strerror or err}{where}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
