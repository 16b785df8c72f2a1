"""``streamproc calibrate``: a threshold set as a false-alarm budget for a gallery size, or a per-comparison FMR.

Kept out of :mod:`streamproc.cli` so the command can be mounted (``app.command("calibrate")``) without this
module importing the CLI. The file written is the standard calibration file with one operating point: its
``fmr_target`` is the per-comparison FMR measured at the threshold, which is the value ``policy.target_fmr``
must name; the FPIR target, gallery size, searches and bound travel in ``data`` and ``notes``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streamproc.cli_common import (
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
    from numpy.typing import NDArray

    from streamproc.calibration import Calibration
    from streamproc.types import Metric


@dataclass(frozen=True)
class _PairStats:
    """Per-comparison rates at a threshold over all pairs among the calibration images."""

    accepted: int
    n_impostor: int
    tar: float
    n_genuine: int


def _pair_stats(genuine: NDArray[Any], impostor: NDArray[Any], threshold: float) -> _PairStats:
    import numpy as np

    t = np.float64(threshold)
    n_gen = int(genuine.size)
    tar = float(np.count_nonzero(genuine >= t)) / n_gen if n_gen else 0.0
    return _PairStats(int(np.count_nonzero(impostor >= t)), int(impostor.size), tar, n_gen)


def _label(fmr: float) -> float:
    """The FMR rounded to 4 significant digits: the exact float an operator's YAML ``1.234e-05`` parses to."""
    return float(f"{fmr:.3e}")


def calibrate_command(
    images: Annotated[
        Path, typer.Option("--images", help="Calibration set: <person>/<photo> folders (persons never enrolled).")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="Calibration file to write (JSON).")],
    gallery_size: Annotated[
        int | None, typer.Option("--gallery-size", min=1, help="Watchlist size the FPIR target is for.")
    ] = None,
    target_fpir: Annotated[
        float | None,
        typer.Option("--target-fpir", min=0.0, max=1.0, help="False alarms per non-enrolled face searched."),
    ] = None,
    target_fmr: Annotated[
        float | None, typer.Option("--target-fmr", min=0.0, max=1.0, help="Per-comparison false-match rate.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random impostor galleries.")] = 0,
    no_cache: NoCacheOpt = False,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Calibrate a threshold for a false-alarm budget (--target-fpir with --gallery-size) or a --target-fmr.

    FPIR: every image is searched against a seeded random gallery of --gallery-size other persons (one photo
    each; drawn with replacement when the set has fewer persons); the threshold lets at most
    floor(target x searches) of those top-1 scores through, and the 95% upper bound on FPIR that count
    supports is reported, with a plain warning when there are too few searches to show the target. FMR: all
    impostor pairs among the images. Images without a face are left out. Prints the YAML to paste."""
    import numpy as np
    from rich.console import Console
    from rich.progress import Progress

    from streamproc.build import build_analyzer
    from streamproc.calibration import Calibration, OperatingPoint, save_calibration, similarity_to_distance
    from streamproc.eval.embedding import embed_images
    from streamproc.eval.metrics import all_pairs_scores, clopper_pearson, threshold_at_fmr
    from streamproc.eval.openset import fpir_point, nonmated_top1, person_folders, sufficiency_message

    if (target_fpir is None) == (target_fmr is None):
        raise ConfigError("give exactly one of --target-fpir or --target-fmr")
    if target_fpir is not None and gallery_size is None:
        raise ConfigError("--target-fpir needs --gallery-size (false alarms grow with the watchlist)")
    target = target_fpir if target_fpir is not None else target_fmr
    assert target is not None
    if not 0.0 < target < 1.0:
        raise ConfigError(f"the target rate must be in (0, 1), got {target}")
    cfg = recognition_config(config, embedder, embedder_model, device)
    analyzer = build_analyzer(cfg)
    ident = analyzer.embedder.identity
    items = person_folders(images)
    cache = eval_cache(analyzer, no_cache, cfg.models.cache_dir)
    try:
        with Progress(transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task("embedding images", total=None)
            vectors = embed_images(
                [p for _, p in items],
                analyzer,
                cache,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        if cache is not None:
            cache.close()
    kept = [i for i, v in enumerate(vectors) if v is not None]
    persons = [items[i][0] for i in kept]
    if len(set(persons)) < 2:
        raise ConfigError(f"{images}: need faces of at least two persons to measure impostor scores")
    emb = np.stack([v for v in vectors if v is not None])
    metric: Metric = ident.metric
    typer.echo(
        f"{len(kept)} of {len(items)} images with a face, {len(set(persons))} persons "
        f"({len(items) - len(kept)} without a face left out)"
    )
    genuine, impostor = all_pairs_scores(emb, persons, metric)
    notes: list[str] = []
    if target_fpir is not None:
        assert gallery_size is not None
        top1, replaced = nonmated_top1(emb, persons, gallery_size, metric, seed)
        point = fpir_point(top1, target_fpir)
        threshold = point.threshold
        verdict = sufficiency_message(point)
        data = (
            f"FPIR {target_fpir:g} at gallery size {gallery_size}: {point.n_searches} non-mated searches of "
            f"{images} (seed {seed}); {point.false_alarms} at or above the threshold; FPIR 95% upper bound "
            f"{point.fpir_upper95:.6g}"
        )
        notes += [
            f"threshold set for FPIR {target_fpir:g} (false alarms per non-enrolled face searched) against a "
            f"gallery of {gallery_size}; it does not hold for a larger watchlist",
            f"fpir_target={target_fpir:g} gallery_size={gallery_size} n_searches={point.n_searches} "
            f"false_alarms={point.false_alarms} fpir_upper95={point.fpir_upper95:.6g}",
            verdict,
            "fmr_target is the per-comparison FMR measured at this threshold (all impostor pairs), "
            "the value policy.target_fmr must name",
        ]
        if replaced:
            notes.append(
                f"only {len(set(persons)) - 1} other persons per search: galleries drawn with replacement "
                "(bootstrap), so the searches share impostors and the bound is optimistic"
            )
        typer.echo(verdict)
    else:
        assert target_fmr is not None
        threshold = threshold_at_fmr(impostor, target_fmr)
        data = f"all impostor pairs among the images of {images}"
        notes.append(
            "each threshold admits at most floor(fmr * n_impostor) impostor pairs; impostor_accepted counts them"
        )
        notes.append("FMR is per comparison; a watchlist's false alarm rate grows with its size")
    stats = _pair_stats(genuine, impostor, threshold)
    fmr_upper = clopper_pearson(stats.accepted, stats.n_impostor)[1]
    if target_fmr is not None:
        fmr_label = target_fmr
    elif stats.accepted:
        fmr_label = _label(stats.accepted / stats.n_impostor)
    else:
        fmr_label = _label(fmr_upper)
        notes.append("no impostor pair reached the threshold: fmr_target is the 95% upper bound instead")
    distance = similarity_to_distance(threshold, metric)
    calibration = Calibration(
        embedder=ident.kind,
        model_sha256=ident.model_sha256,
        metric=metric,
        data=data,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        command=" ".join(sys.argv[1:]),
        points=(
            OperatingPoint(
                fmr_target=fmr_label,
                distance_threshold=distance,
                impostor_accepted=stats.accepted,
                n_impostor=stats.n_impostor,
                fmr_upper95=fmr_upper,
                tar=stats.tar,
                n_genuine=stats.n_genuine,
            ),
        ),
        notes=tuple(notes),
    )
    save_calibration(calibration, out_file)
    _print_summary(calibration, out_file)


def _print_summary(calibration: Calibration, out_file: Path) -> None:
    point = calibration.points[0]
    typer.echo(
        f"threshold: {calibration.metric} distance <= {point.distance_threshold:.4f}; per comparison "
        f"{point.impostor_accepted}/{point.n_impostor} impostor pairs (FMR upper95 {point.fmr_upper95:.3g}), "
        f"TAR {point.tar:.4f} on {point.n_genuine} genuine pairs"
    )
    typer.echo(f"calibration written to {out_file}")
    typer.echo("paste into the pipeline config:")
    typer.echo("policy:")
    typer.echo(f"  calibration: {out_file.resolve()}")
    typer.echo(f"  target_fmr: {_yaml_float(point.fmr_target)}")


def _yaml_float(x: float) -> str:
    """``repr`` with a decimal point: YAML 1.1 (PyYAML) reads ``1e-05`` as a string, ``1.0e-05`` as a float."""
    text = repr(x)
    mantissa, sep, exponent = text.partition("e")
    return f"{mantissa}.0e{exponent}" if sep and "." not in mantissa else text
