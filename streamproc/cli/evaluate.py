"""``streamproc evaluate``: accuracy on labelled data (verification, open-set identification, demographics).

Every number comes with its sample size; faces the detector misses count against the model, never rescued.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streamproc.cli.common import (
    ConfigOpt,
    DeviceOpt,
    EmbedderModelOpt,
    EmbedderOpt,
    NoCacheOpt,
    embedding_images,
    out,
    recognition_config,
)
from streamproc.errors import ConfigError

if TYPE_CHECKING:
    from streamproc.eval.demographics import FmrRatio
    from streamproc.vision.faces import FaceAnalyzer

evaluate_app = typer.Typer(help="Measure accuracy on labelled data.", no_args_is_help=True)


def _default_threshold(analyzer: FaceAnalyzer) -> tuple[float, str]:
    """The shipped calibration's FMR 1e-3 distance threshold; a user mistake when the model has none."""
    from streamproc.search.calibration import shipped_calibration

    shipped = shipped_calibration(analyzer.embedder.identity, analyzer.detector.kind)
    if shipped is None:
        raise ConfigError("no shipped calibration for this embedder model: give --threshold (a distance in its metric)")
    calibration, name = shipped
    return calibration.threshold_for(1e-3).distance_threshold, f"shipped calibration {name}, FMR 1e-3 point"


@evaluate_app.command("demographics")
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
    fair_crossfit: Annotated[
        bool,
        typer.Option(
            "--fair-crossfit",
            help="Fit the fair score map on one half of these faces (no label used) and measure it on the other.",
        ),
    ] = False,
    fair_calibration: Annotated[
        Path | None,
        typer.Option("--fair-calibration", help="Measure this calibration file's fair score map at its threshold."),
    ] = None,
    nominal_fmr: Annotated[
        float, typer.Option("--nominal-fmr", min=0.0, max=1.0, help="The FMR the threshold is set for.")
    ] = 1e-3,
    no_cache: NoCacheOpt = False,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """False-match rate per demographic group, with 95% intervals and an optional deployment gate.

    Every pair within a UTKFace race/sex group is an impostor pair; identity-labelled (LFW) groups also give
    false-non-match rates where they have enough mated pairs. Reports faces not detected per group and
    near-duplicate impostor pairs. With a fair score map (``--fair-calibration``, the shipped calibration's, or
    ``--fair-crossfit``) the rates are also given with it, FNMR and TAR at one global FMR included, and the
    headline is for the map. The last line is
    ``max_min_fmr_ratio=<value|not_estimable> groups=<n> worst_group_fmr_x=<worst FMR / nominal FMR>``."""
    from streamproc.eval.demographics import (
        format_ratio,
        headline,
        run_demographics,
        summary_lines,
        write_demographics_report,
    )
    from streamproc.eval.fairness import run_fairness
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
    with embedding_images(analyzer, no_cache, cfg.models.cache_dir) as (cache, progress):
        result = run_demographics(
            labels,
            images if images is not None else labels.parent,
            analyzer,
            cache,
            threshold,
            progress=progress,
            extra=extra,
        )
        fair = run_fairness(
            labels, images or labels.parent, analyzer, cache, nominal_fmr, fair_crossfit, fair_calibration
        )
    for line in summary_lines(result):
        typer.echo(line)
    if report is not None:
        write_demographics_report(result, report)
        typer.echo(f"report written to {report}")
    gate_failure = _gate(result.ratio, max_ratio, format_ratio(result.ratio)) if max_ratio is not None else None
    if fair is None:
        worst = max(g.pairs.fmr.errors / g.pairs.fmr.trials for g in result.groups if g.pairs.fmr.trials)
        typer.echo(f"{headline(result)} worst_group_fmr_x={worst / nominal_fmr:.3f}")
        _exit_on(gate_failure)
        return
    from streamproc.eval.fairness import headline as fair_headline
    from streamproc.eval.fairness import summary_lines as fair_lines

    for line in fair_lines(fair):
        typer.echo(line)
    typer.echo(f"without the map: {fair_headline(fair, fair=False)}")
    if max_ratio is not None:
        value = fair.ratio(True)
        gate_failure = (
            f"demographic gate: max/min FMR ratio with the fair map {'not estimable' if value is None else value}"
            f" exceeds --max-ratio {max_ratio:g}"
            if value is None or value > max_ratio
            else None
        )
    typer.echo(fair_headline(fair))
    _exit_on(gate_failure)


def _exit_on(gate_failure: str | None) -> None:
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


@evaluate_app.command("verification")
def evaluate_verification(
    pairs: Annotated[Path, typer.Option("--pairs", help="LFW View-2 style pairs file.")],
    images: Annotated[Path, typer.Option("--images", help="Directory of <person>/<person>_NNNN.jpg images.")],
    report: Annotated[Path | None, typer.Option("--report", help="Write report.json/.md and plots here.")] = None,
    calibration_out: Annotated[
        Path | None, typer.Option("--calibration-out", help="Write all-pairs thresholds as a calibration file.")
    ] = None,
    all_pairs: Annotated[
        bool, typer.Option("--all-pairs/--no-all-pairs", help="Also score every pair among the images.")
    ] = True,
    no_cache: NoCacheOpt = False,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """1:1 verification (LFW View-2 protocol).

    k-fold accuracy and TAR at FMR 1e-2/1e-3 on the pairs; TAR at FMR 1e-3/1e-4/1e-5 over all pairs among the
    images. Undetected faces count as non-matches (failure to detect is reported separately, never rescued
    by a crop)."""
    from streamproc.eval.report import format_headline_lines, write_verification_report
    from streamproc.eval.verification import run_verification
    from streamproc.runtime.build import build_analyzer
    from streamproc.sysinfo import machine_description

    cfg = recognition_config(config, embedder, embedder_model, device)
    analyzer = build_analyzer(cfg)
    ident = analyzer.embedder.identity
    extra = {
        "embedder": ident.kind,
        "model_sha256": ident.model_sha256,
        "detector": analyzer.detector.cache_key,
        "pairs": str(pairs),
        "machine": machine_description(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with embedding_images(analyzer, no_cache, cfg.models.cache_dir) as (cache, progress):
        result = run_verification(
            pairs,
            images,
            analyzer,
            cache,
            name=f"{ident.kind} on {pairs.name}",
            extra=extra,
            progress=progress,
            all_pairs=all_pairs,
        )
    if report is not None:
        write_verification_report(result.report, result.genuine, result.impostor, report)
        out.print(f"report written to {report}")
    if calibration_out is not None:
        _write_pairs_calibration(result, calibration_out, pairs, analyzer.detector.kind)
        out.print(f"calibration written to {calibration_out}")
    for line in format_headline_lines(result.report):
        out.print(line, highlight=False)


@evaluate_app.command("identification")
def evaluate_identification(
    images: Annotated[Path, typer.Option("--images", help="Directory of <person>/<photo> folders.")],
    enrolled_fraction: Annotated[
        float, typer.Option("--enrolled-fraction", min=0.05, max=0.95, help="Share of persons enrolled.")
    ] = 0.5,
    max_probes: Annotated[int, typer.Option("--max-probes", min=1, help="Mated probes per enrolled person.")] = 2,
    max_persons: Annotated[
        int | None, typer.Option("--max-persons", min=2, help="Use a seeded sample of this many persons.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the enrolled/non-enrolled split.")] = 0,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Distance threshold to count false candidates at (default: calibrated)."),
    ] = None,
    no_cache: NoCacheOpt = False,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Open-set 1:N identification.

    FNIR at FPIR 1e-1/1e-2/1e-3, and the false candidates at a distance threshold (the shipped calibration's
    FMR 1e-3 threshold unless --threshold is given)."""
    from streamproc.eval.identification import run_identification, split_persons
    from streamproc.runtime.build import build_analyzer
    from streamproc.search.calibration import shipped_calibration

    analyzer = build_analyzer(recognition_config(config, embedder, embedder_model, device))
    if threshold is None:
        shipped = shipped_calibration(analyzer.embedder.identity, analyzer.detector.kind)
        if shipped is not None:
            threshold = shipped[0].threshold_for(1e-3).distance_threshold
    split = split_persons(images, enrolled_fraction, seed, max_probes, max_persons)
    with embedding_images(analyzer, no_cache, None) as (cache, progress):
        result = run_identification(
            split, analyzer, cache, {"1e-1": 1e-1, "1e-2": 1e-2, "1e-3": 1e-3}, threshold, progress=progress
        )
    counts = result.split_counts
    out.print(
        f"gallery {counts['gallery']} persons, {counts['mated_probes']} mated probes, "
        f"{counts['nonmated_probes']} non-mated probes; {result.failed_images} image(s) without a face"
    )
    for key, point in result.at_fpir.items():
        out.print(f"FNIR@FPIR{key}: {point.fnir:.4f} (threshold similarity {point.threshold:.4f})", highlight=False)
    headline = [f"fnir_at_fpir_1e-2={result.at_fpir['1e-2'].fnir:.4f}"]
    if result.at_threshold is not None:
        t = result.at_threshold
        out.print(
            f"at distance <= {result.distance_threshold:.4f}: FPIR {t.fpir:.4f} ({round(t.fpir * t.n_nonmated)}"
            f"/{t.n_nonmated} non-mated probes flagged), FNIR {t.fnir:.4f}, {t.false_candidates} false candidate(s)",
            highlight=False,
        )
        headline += [f"fpir={t.fpir:.4f}", f"fnir={t.fnir:.4f}", f"false_candidates={t.false_candidates}"]
    out.print(" ".join(headline), highlight=False)


def _write_pairs_calibration(result: Any, path: Path, pairs: Path, detector: str) -> None:
    from streamproc.eval.intervals import clopper_pearson
    from streamproc.search.calibration import Calibration, OperatingPoint, save_calibration, similarity_to_distance

    rep = result.report
    if rep.all_pairs is None:
        raise ConfigError("--calibration-out needs --all-pairs (thresholds come from all impostor pairs)")
    points = []
    for key, t in result.all_thresholds.items():
        n_imp = result.all_n_impostor
        accepted = result.all_accepted[key]
        points.append(
            OperatingPoint(
                fmr_target=float(key),
                distance_threshold=similarity_to_distance(t, result.metric),
                impostor_accepted=accepted,
                n_impostor=n_imp,
                fmr_upper95=clopper_pearson(accepted, n_imp)[1],
                tar=rep.all_pairs[f"TAR@FMR{key}"],
                n_genuine=int(rep.all_pairs["n_genuine"]),
            )
        )
    save_calibration(
        Calibration(
            embedder=rep.extra["embedder"],
            model_sha256=rep.extra["model_sha256"],
            detector=detector,
            metric=result.metric,
            data=f"all pairs among the images of {pairs.name} (LFW deep-funneled, public half)",
            created=rep.extra["date"],
            command=" ".join(sys.argv[1:]),
            points=tuple(points),
            notes=(
                "each threshold admits at most floor(fmr * n_impostor) impostor pairs; impostor_accepted counts them",
                "FMR is per comparison; a watchlist's false alarm rate grows with its size",
            ),
        ),
        path,
    )
