"""``streamproc validate`` and ``streamproc config``: check a pipeline config, print its JSON Schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from streamproc.cli.common import out, run_config
from streamproc.config import PipelineConfig

config_app = typer.Typer(help="Inspect the configuration format.", no_args_is_help=True)


def validate_command(config: Annotated[Path, typer.Argument(help="Pipeline YAML config.")]) -> None:
    """Check a pipeline config: every problem is reported with its key path; exit 2 if any."""
    cfg = run_config(config)
    out.print(f"{config}: OK ({len(cfg.sources)} source(s): {', '.join(s.id for s in cfg.sources)})")


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the pipeline config (every key, type, bound and description)."""
    sys.stdout.write(json.dumps(PipelineConfig.model_json_schema(), indent=2) + "\n")
