"""`python -m streamproc`: the CLI (the supervisor starts its child processes this way)."""

from streamproc.cli import main

main()
