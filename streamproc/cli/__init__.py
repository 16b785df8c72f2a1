"""The command line: one module per command group; this package only assembles them.

May use every other package; nothing outside ``cli`` imports it. Commands are thin: they parse options, build
objects through :mod:`streamproc.runtime.build`, call library functions and print. User mistakes (any
:class:`~streamproc.errors.StreamprocError`) print one line on stderr and exit 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import logging
import sys

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from streamproc.cli.audit import audit_app
from streamproc.cli.calibrate import calibrate_command
from streamproc.cli.common import err_console
from streamproc.cli.config import config_app, validate_command
from streamproc.cli.demo import demo_command
from streamproc.cli.evaluate import evaluate_app
from streamproc.cli.events import events_app
from streamproc.cli.identify import identify_command
from streamproc.cli.keys import keys_app
from streamproc.cli.models import models_app
from streamproc.cli.redact import redact_command
from streamproc.cli.reenrol import reenroll_command
from streamproc.cli.review import review_app
from streamproc.cli.run import child_command, run_command
from streamproc.cli.usage import hide_flag_types, usage_error_line
from streamproc.cli.watchlist import watchlist_app
from streamproc.errors import StreamprocError

app = typer.Typer(
    name="streamproc",
    help="Accountable face search for body-camera video. A match is a candidate for human review, "
    "never an identification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("calibrate")(calibrate_command)
app.command("child", hidden=True)(child_command)
app.command("validate")(validate_command)
app.command("run")(run_command)
app.command("redact")(redact_command)
app.command("identify")(identify_command)
app.command("demo")(demo_command)
app.add_typer(models_app, name="models")
watchlist_app.command("reenroll")(reenroll_command)
app.add_typer(watchlist_app, name="watchlist")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(config_app, name="config")
app.add_typer(events_app, name="events", help="Subscribe to the match event feed.")
app.add_typer(keys_app, name="keys", help="CURVE key pairs for the secured event feed.")
app.add_typer(audit_app, name="audit", help="Tamper-evident audit log of the watchlist and its use.")
app.add_typer(review_app, name="review", help="Human review of match events (confirm / reject).")


def main() -> None:
    """Console entry point: one-line errors for user mistakes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = typer.main.get_command(app)
    hide_flag_types(command)
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
