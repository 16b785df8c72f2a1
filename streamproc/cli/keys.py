"""``streamproc keys``: create the CURVE keypairs that encrypt and authenticate the event feed.

Mounted by :mod:`streamproc.cli` as ``app.add_typer(keys_app, name="keys")``. User mistakes raise
:class:`~streamproc.errors.StreamprocError`, which ``cli.main`` prints as one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamproc.feed.security import PUBLIC_SUFFIX, generate_keypair, load_public_key

keys_app = typer.Typer(
    help="Create CURVE keypairs for the encrypted, authenticated event feed.",
    no_args_is_help=True,
    add_completion=False,
)


@keys_app.callback()
def _keys() -> None:
    """Create CURVE keypairs for the encrypted, authenticated event feed."""
    # A callback keeps `generate` a subcommand even while it is the group's only command.


@keys_app.command("generate")
def generate(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory to write NAME.key and NAME.key_secret into (created if missing).")
    ],
    name: Annotated[str, typer.Option("--name", help="Key name, e.g. 'pipeline' or 'review-1'.")],
) -> None:
    """Write a keypair: NAME.key (public, shareable) and NAME.key_secret (secret, mode 0600). Never overwrites.

    Give the server's (pipeline's) public NAME.key to every client. Copy each client's public NAME.key into the
    server's allowed-clients directory. Secret .key_secret files never leave the machine they were made for."""
    public_path, secret_path = generate_keypair(directory, name)
    typer.echo(f"public key file: {public_path}")
    typer.echo(f"public key (Z85): {load_public_key(public_path).decode('ascii')}")
    typer.echo(f"secret key file: {secret_path} (mode 0600; keep it private, never copy it elsewhere)")
    typer.echo(
        f"Server key: give {public_path.name} to every client (their --server-key). Client key: copy "
        f"{public_path.name} into the server's allowed-clients directory (only {PUBLIC_SUFFIX} files count there)."
    )


__all__ = ["keys_app"]
