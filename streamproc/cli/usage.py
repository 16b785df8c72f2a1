"""Command-line usage mistakes as one ``error: …`` line, and help that does not show flags as taking a value.

Click reports a usage mistake (unknown option, bad value, missing option) as a usage block and a boxed message
over several lines, and stops at the first missing option; :func:`usage_error_line` makes it one line that
names every missing required option and where to find help.
"""

from __future__ import annotations

from collections.abc import Sequence

# Typer (>= 0.29) ships its own copy of click, which its commands and exceptions come from.
from typer._click.core import Command
from typer._click.exceptions import MissingParameter, UsageError
from typer.core import TyperGroup, TyperOption


def hide_flag_types(command: Command) -> None:
    """Flags (``--confirm``, ``--quiet``) take no value: show no ``<bool>`` type beside them in help."""
    for param in command.params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            hide_flag_types(sub)


def _missing_options(err: MissingParameter, argv: Sequence[str]) -> list[str]:
    """Every required parameter of the failing command that the command line lacks, in help order."""
    ctx = err.ctx
    if ctx is None:
        return []
    path = ctx.command_path.split()[1:]  # after the program name
    rest = list(argv)
    for name in path:  # the command's own arguments follow its name (groups here take no options)
        rest = rest[rest.index(name) + 1 :] if name in rest else rest
    try:
        opts, _, _ = ctx.command.make_parser(ctx).parse_args(args=rest)
    except UsageError:
        return []
    missing = []
    for param in ctx.command.get_params(ctx):
        if param.required and opts.get(param.name) in (None, ()) and param.name is not None:
            missing.append(param.opts[0] if isinstance(param, TyperOption) else param.name.upper())
    return missing


def usage_error_line(err: UsageError, argv: Sequence[str]) -> str:
    """The mistake in one line, without the ``error:`` prefix."""
    message = " ".join(err.format_message().split())
    if isinstance(err, MissingParameter):
        missing = _missing_options(err, argv)
        if len(missing) > 1:
            message = f"missing required: {', '.join(missing)}"
    where = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
    return f"{message}{where}"
