"""``streamproc evaluate demographics``: false-match rate per demographic group, with a deployment gate.

Kept out of :mod:`streamproc.cli.app` so the command can be mounted (``evaluate_app.command("demographics")``)
without this module importing the CLI; the few lines of option handling it needs are repeated here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamproc.cli.common import (
    ConfigOpt,
    DeviceOpt,
    EmbedderModelOpt,
    EmbedderOpt,
    NoCacheOpt,
    eval_cache,
    recognition_config,
)
from streamproc.errors import ConfigError

if TYPE_CHECKING:
    from streamproc.eval.demographics import FmrRatio
    from streamproc.vision.faces import FaceAnalyzer


def _default_threshold(analyzer: FaceAnalyzer) -> tuple[float, str]:
    """The shipped calibration's FMR 1e-3 distance threshold; a user mistake when the model has none."""
    from streamproc.search.calibration import shipped_calibration

    shipped = shipped_calibration(analyzer.embedder.identity)
    if shipped is None:
        raise ConfigError("no shipped calibration for this embedder model: give --threshold (a distance in its metric)")
    calibration, name = shipped
    return calibration.threshold_for(1e-3).distance_threshold, f"shipped calibration {name}, FMR 1e-3 point"


def demographics_command(
    labels: Annotated[Path, typer.Option("--labels", help="Labels CSV: file, age, sex, race, source, sha1_dup.")],
    images: Annotated[
        Path | None, typer.Option("--images", help="Directory the CSV's file paths are relative to (default: its own).")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", help="Distance threshold in the embedder's metric (default: shipped FMR 1e-3 point)."
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write report.json/.md and a chart here.")] = None,
    max_ratio: Annotated[
        float | None,
        typer.Option("--max-ratio", min=1.0, help="Exit 1 when the max/min FMR ratio across groups exceeds this."),
    ] = None,
    no_cache: NoCacheOpt = False,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """False-match rate per demographic group, with 95% intervals and an optional deployment gate.

    Every pair within a UTKFace race/sex group is an impostor pair; identity-labelled (LFW) groups also give
    false-non-match rates where they have enough mated pairs. Reports faces not detected per group and
    near-duplicate impostor pairs. The last line is ``max_min_fmr_ratio=<value|not_estimable> groups=<n>``."""
    from rich.console import Console
    from rich.progress import Progress

    from streamproc.eval.demographics import (
        format_ratio,
        headline,
        run_demographics,
        summary_lines,
        write_demographics_report,
    )
    from streamproc.runtime.build import build_analyzer
    from streamproc.sysinfo import machine_description

    if threshold is not None and not threshold > 0:
        raise ConfigError(f"--threshold must be a positive distance, got {threshold}")
    cfg = recognition_config(config, embedder, embedder_model, device)
    analyzer = build_analyzer(cfg)
    if threshold is None:
        threshold, source = _default_threshold(analyzer)
    else:
        source = "--threshold"
    ident = analyzer.embedder.identity
    extra = {
        "embedder": ident.kind,
        "model_sha256": ident.model_sha256,
        "detector": analyzer.detector.cache_key,
        "labels": str(labels),
        "threshold_source": source,
        "machine": machine_description(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    cache = eval_cache(analyzer, no_cache, cfg.models.cache_dir)
    try:
        with Progress(transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task("embedding images", total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = run_demographics(
                labels,
                images if images is not None else labels.parent,
                analyzer,
                cache,
                threshold,
                progress=update,
                extra=extra,
            )
    finally:
        if cache is not None:
            cache.close()
    for line in summary_lines(result):
        typer.echo(line)
    if report is not None:
        write_demographics_report(result, report)
        typer.echo(f"report written to {report}")
    gate_failure = _gate(result.ratio, max_ratio, format_ratio(result.ratio)) if max_ratio is not None else None
    typer.echo(headline(result))
    if gate_failure is not None:
        typer.echo(gate_failure, err=True)
        raise typer.Exit(1)


def _gate(ratio: FmrRatio, max_ratio: float, text: str) -> str | None:
    """The stderr line when the differential exceeds ``max_ratio`` (or cannot be measured at all), else None."""
    value = ratio.gate_value
    if value is None:
        return f"demographic gate: cannot measure the FMR differential ({text}); failing closed"
    if value > max_ratio:
        basis = "max/min FMR ratio" if ratio.estimable else "interval-based bound (point ratio not estimable)"
        return f"demographic gate: {basis} {value:.3f} exceeds --max-ratio {max_ratio:g}"
    return None
