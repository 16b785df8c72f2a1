"""``streamproc models``: build, verify and list the default models (offline, from installed packages)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streamproc.cli.common import err_console, out
from streamproc.errors import ConfigError, StreamprocError

models_app = typer.Typer(help="Build, verify and list the default models (offline).", no_args_is_help=True)

CacheDirOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Model cache directory (default: XDG cache).")]


def _check_cache_dir(cache_dir: Path | None) -> None:
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise ConfigError(f"--cache-dir {cache_dir} is a file, not a directory")


@models_app.command("prepare")
def models_prepare(
    cache_dir: CacheDirOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if present.")] = False,
) -> None:
    """Build the default detector and embedder from installed packages and record their sha256."""
    from streamproc.models.registry import ModelStore

    _check_cache_dir(cache_dir)
    store = ModelStore(cache_dir)
    records = store.prepare(force=force, progress=lambda msg: err_console.print(f"[dim]{msg}…[/dim]"))
    for rec in records:
        out.print(f"{rec.name}: {store.cache_dir / rec.path} sha256={rec.sha256}")


@models_app.command("list")
def models_list(cache_dir: CacheDirOpt = None) -> None:
    """Show built models, their hashes and licences (verifying each file's hash)."""
    from streamproc.models.registry import DEFAULT_MODELS, ModelStore

    _check_cache_dir(cache_dir)
    store = ModelStore(cache_dir)
    table = Table(title=f"models in {store.cache_dir}")
    for col in ("name", "status", "sha256", "size", "built", "licence"):
        table.add_column(col)
    known = {r.name: r for r in store.records()}
    for spec in DEFAULT_MODELS:
        rec = known.get(spec.name)
        if rec is None:
            table.add_row(spec.name, "not built", "", "", "", spec.licence)
            continue
        try:
            store.verify(spec)
            status = "ok"
        except StreamprocError as err:
            status = f"[red]{err}[/red]"
        table.add_row(
            spec.name, status, rec.sha256[:16], f"{rec.size:,}", rec.built_at[:10], rec.licence.split(" (")[0]
        )
    out.print(table)
