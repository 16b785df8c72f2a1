"""The command line: one module per command group; this package only assembles them.

May use every other package; nothing outside ``cli`` imports it.
"""

from streamproc.cli.app import main

__all__ = ["main"]
