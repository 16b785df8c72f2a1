"""``streamproc calibrate``: a threshold set as a false-alarm budget for a gallery size, or a per-comparison FMR.

Mounted by :mod:`streamproc.cli` as ``app.command("calibrate")``. The file written is the standard calibration
file with one operating point: its ``fmr_target`` is the per-comparison FMR measured at the threshold, which is
the value ``policy.target_fmr`` must name; the FPIR target, gallery size, searches and bound travel in ``data``
and ``notes``.

With ``--tracks`` (or ``--tracks-only`` on an existing file) the file also gets the per-track false-flag
rate of the k-of-n rule at each operating point, measured on impostor tracks
(:mod:`streamproc.eval.tracks`): what the pipeline turns into predicted false alerts per hour.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, replace
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
    eval_cache,
    recognition_config,
)
from streamproc.errors import ConfigError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from streamproc.eval.openset import Repeats
    from streamproc.search.calibration import Calibration, TrackFalseFlags
    from streamproc.types import Metric
    from streamproc.vision.faces import FaceAnalyzer


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
    pairs: Annotated[
        Path | None,
        typer.Option("--pairs", help="Use only the --images named in this LFW pairs file as the calibration set."),
    ] = None,
    tracks: Annotated[
        bool, typer.Option("--tracks", help="Also measure the per-track false-flag rate of the k-of-n rule.")
    ] = False,
    tracks_only: Annotated[
        bool,
        typer.Option(
            "--tracks-only",
            help="Keep the thresholds of the existing --out file (same model); add the per-track measurement.",
        ),
    ] = False,
    track_images: Annotated[
        Path | None,
        typer.Option(
            "--track-images",
            help="<person>/<photo> folders: persons with >= n photos make impostor tracks, persons with one "
            "photo gallery distractors (default: --images).",
        ),
    ] = None,
    track_distractors: Annotated[
        Path | None,
        typer.Option("--track-distractors", help="Folder of face images, each its own gallery person (UTKFace)."),
    ] = None,
    fair_faces: Annotated[
        Path | None,
        typer.Option(
            "--fair-faces",
            help="Also fit the fair score map: on the --images faces plus this folder's (each its own person).",
        ),
    ] = None,
    track_gallery_sizes: Annotated[
        str, typer.Option("--track-gallery-sizes", help="Comma-separated gallery sizes to measure.")
    ] = "100,300,1000,2500",
    track_k: Annotated[int, typer.Option("--track-k", min=1, help="k of the k-of-n rule measured.")] = 2,
    track_n: Annotated[int, typer.Option("--track-n", min=1, help="n of the k-of-n rule (shots per track).")] = 3,
    track_folds: Annotated[int, typer.Option("--track-folds", min=2, help="Cross-fitting folds of persons.")] = 2,
    track_max_per_person: Annotated[
        int, typer.Option("--track-max-per-person", min=1, help="Disjoint tracks per person at most.")
    ] = 1,
    no_cache: NoCacheOpt = False,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Calibrate a threshold for a false-alarm budget (--target-fpir with --gallery-size) or a --target-fmr.

    FPIR: every image is searched against a seeded random gallery of --gallery-size other persons (one photo
    each, no person twice; when the set has fewer, all of them, with the target carried to that size as if
    persons were independent, which errs on the strict side); the threshold lets at most floor(target x
    searches) of those top-1 scores through, and the 95% upper bound on FPIR that count supports is reported,
    with a plain warning when there are too few searches to show the target. Labels whose images score at or
    above the set's typical same-person similarity are searched as one person and listed (one person filed
    twice would set the threshold alone). FMR: all impostor pairs among the images. Images without a face are
    left out. Prints the YAML to paste.

    --tracks / --tracks-only: per operating point, the share of impostor tracks (n photos of one person who is
    in no gallery) that the k-of-n rule flags against random galleries of each --track-gallery-sizes; each
    track is judged at a threshold set at the same FMR on the calibration persons of the other folds."""
    import numpy as np

    from streamproc.eval.intervals import clopper_pearson
    from streamproc.eval.metrics import all_pairs_scores, threshold_at_fmr
    from streamproc.eval.openset import calibrate_fpir, merge_repeats, sufficiency_message
    from streamproc.runtime.build import build_analyzer
    from streamproc.search.calibration import Calibration, OperatingPoint, save_calibration, similarity_to_distance

    if tracks_only:
        if target_fpir is not None or target_fmr is not None:
            raise ConfigError("--tracks-only keeps the thresholds of --out: give no --target-fpir/--target-fmr")
        opts = _TrackOptions.parse(locals())
        _tracks_only(out_file, images, pairs, opts, fair_faces, config, embedder, embedder_model, device)
        return
    if (target_fpir is None) == (target_fmr is None):
        raise ConfigError("give exactly one of --target-fpir or --target-fmr")
    track_opts = _TrackOptions.parse(locals()) if tracks else None
    if target_fpir is not None and gallery_size is None:
        raise ConfigError("--target-fpir needs --gallery-size (false alarms grow with the watchlist)")
    target = target_fpir if target_fpir is not None else target_fmr
    assert target is not None
    if not 0.0 < target < 1.0:
        raise ConfigError(f"the target rate must be in (0, 1), got {target}")
    cfg = recognition_config(config, embedder, embedder_model, device)
    analyzer = build_analyzer(cfg)
    ident = analyzer.embedder.identity
    items = _calibration_items(images, pairs)
    vectors = _embed([p for _, p in items], analyzer, no_cache, cfg.models.cache_dir)
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
    notes: list[str] = []
    if target_fpir is not None:
        assert gallery_size is not None
        repeats = merge_repeats(emb, persons, metric)
        if repeats.pairs:
            typer.echo(_repeats_message(repeats, [items[i][1] for i in kept]))
            notes.append(
                f"{repeats.joined} label(s) joined to another: {len(repeats.pairs)} image pairs under different "
                f"labels score at or above the typical same-person similarity {repeats.bar:.4f} and were taken "
                "for one person (a person under two labels would set an FPIR threshold by itself)"
            )
            if len(set(repeats.persons)) < 2:
                raise ConfigError(f"{images}: every label scores as one person; need faces of two persons")
            persons = list(repeats.persons)  # one person from here on: pair stats, fair map, tracks
        genuine, impostor = all_pairs_scores(emb, persons, metric)
        point = calibrate_fpir(emb, persons, gallery_size, target_fpir, metric, seed)
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
            f"fpir_target={target_fpir:g} gallery_size={gallery_size} searched_size={point.searched_size} "
            f"n_searches={point.n_searches} false_alarms={point.false_alarms} "
            f"fpir_upper95={point.fpir_upper95:.6g}",
            verdict,
            "fmr_target is the per-comparison FMR measured at this threshold (all impostor pairs), "
            "the value policy.target_fmr must name",
        ]
        if point.extrapolated:
            notes.append(
                f"only {point.searched_size} other persons per search: each search held to FPIR "
                f"{point.search_target:.6g} = 1 - (1 - {target_fpir:g})^({point.searched_size}/{gallery_size}), "
                "which bounds the FPIR at the gallery size from above if persons are independent draws"
            )
        typer.echo(verdict)
    else:
        assert target_fmr is not None
        genuine, impostor = all_pairs_scores(emb, persons, metric)
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
        detector=analyzer.detector.kind,
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
    if fair_faces is not None:
        from streamproc.eval.fairness import with_fair_map

        opener = functools.partial(eval_cache, analyzer, no_cache, cfg.models.cache_dir)
        calibration = with_fair_map(calibration, (emb, persons, impostor), fair_faces, analyzer, opener, seed)
        typer.echo(f"fair score map fitted: {calibration.fair_map.data if calibration.fair_map else '?'}")
    if track_opts is not None:
        sections = _measure_tracks(calibration, analyzer, emb, persons, track_opts, no_cache, cfg.models.cache_dir)
        calibration = replace(calibration, track_false_flags=sections)
    save_calibration(calibration, out_file)
    _print_summary(calibration, out_file)


def _repeats_message(repeats: Repeats, paths: list[Path], show: int = 5) -> str:
    """What was joined, with the strongest pairs' files, so the operator can fix the labels."""
    lines = [
        f"{len(repeats.pairs)} image pairs under different labels are more alike than a typical person's own photos "
        f"(similarity >= {repeats.bar:.4f}); {repeats.joined} label(s) joined to another and searched as one "
        "person. "
        "Check these labels:"
    ]
    lines += [f"  {paths[i]}  {paths[j]}  ({sim:.4f})" for i, j, sim in repeats.pairs[:show]]
    if len(repeats.pairs) > show:
        lines.append(f"  ... and {len(repeats.pairs) - show} more")
    return "\n".join(lines)


@dataclass(frozen=True)
class _TrackOptions:
    """The --track-* options, checked once."""

    images: Path | None
    distractors: Path | None
    gallery_sizes: tuple[int, ...]
    k: int
    n: int
    folds: int
    max_per_person: int
    seed: int

    @staticmethod
    def parse(opts: dict[str, Any]) -> _TrackOptions:
        try:
            sizes = tuple(sorted({int(x) for x in str(opts["track_gallery_sizes"]).split(",") if x.strip()}))
        except ValueError:
            raise ConfigError(
                f"--track-gallery-sizes: expected comma-separated integers, got {opts['track_gallery_sizes']!r}"
            ) from None
        if not sizes or sizes[0] < 1:
            raise ConfigError("--track-gallery-sizes: need at least one size >= 1")
        if opts["track_k"] > opts["track_n"]:
            raise ConfigError(f"--track-k ({opts['track_k']}) must be <= --track-n ({opts['track_n']})")
        return _TrackOptions(
            images=opts["track_images"] or opts["images"],
            distractors=opts["track_distractors"],
            gallery_sizes=sizes,
            k=opts["track_k"],
            n=opts["track_n"],
            folds=opts["track_folds"],
            max_per_person=opts["track_max_per_person"],
            seed=opts["seed"],
        )


def _calibration_items(images: Path, pairs: Path | None) -> list[tuple[str, Path]]:
    """``(person, photo)`` of the calibration set: every photo under ``images``, or only those ``pairs`` names."""
    from streamproc.eval.openset import person_folders

    items = person_folders(images)
    if pairs is None:
        return items
    from streamproc.eval.pairs import parse_pairs

    named = {key for pair in parse_pairs(pairs) for key in (pair.left, pair.right)}
    chosen = [(person, path) for person, path in items if f"{person}/{path.name}" in named]
    if len(chosen) < len(named):
        raise ConfigError(f"{pairs} names {len(named)} images; only {len(chosen)} are under {images}")
    return chosen


def _embed(paths: list[Path], analyzer: FaceAnalyzer, no_cache: bool, cache_dir: Path | None) -> list[Any]:
    """One embedding per path (None where no face was found), through the evaluation cache unless ``no_cache``."""
    from streamproc.eval.embedding import embed_images

    with embedding_images(analyzer, no_cache, cache_dir) as (cache, progress):
        return embed_images(paths, analyzer, cache, progress)


def _tracks_only(
    out_file: Path,
    images: Path,
    pairs: Path | None,
    opts: _TrackOptions,
    fair_faces: Path | None,
    config: Path | None,
    embedder: str | None,
    embedder_model: Path | None,
    device: str | None,
) -> None:
    """Keep --out's thresholds; with ``fair_faces`` also (re)fit its fair map, on the scale of the impostor
    pairs among the same --images/--pairs faces the thresholds were set on; then measure tracks."""
    import numpy as np

    from streamproc.runtime.build import build_analyzer
    from streamproc.search.calibration import load_calibration, save_calibration

    cfg = recognition_config(config, embedder, embedder_model, device)
    analyzer = build_analyzer(cfg)
    calibration = load_calibration(out_file, analyzer.embedder.identity, analyzer.detector.kind)
    items = _calibration_items(images, pairs)
    vectors = _embed([p for _, p in items], analyzer, False, cfg.models.cache_dir)
    persons = [items[i][0] for i, v in enumerate(vectors) if v is not None]
    emb = np.stack([v for v in vectors if v is not None])
    if fair_faces is not None:
        from streamproc.eval.fairness import with_fair_map
        from streamproc.eval.metrics import all_pairs_scores

        faces = (emb, persons, all_pairs_scores(emb, persons, calibration.metric)[1])
        opener = functools.partial(eval_cache, analyzer, False, cfg.models.cache_dir)
        calibration = with_fair_map(calibration, faces, fair_faces, analyzer, opener, opts.seed)
        typer.echo(f"fair score map fitted: {calibration.fair_map.data if calibration.fair_map else '?'}")
    sections = _measure_tracks(calibration, analyzer, emb, persons, opts, False, cfg.models.cache_dir)
    note = f"track_false_flags measured by: {' '.join(sys.argv[1:])}"
    notes = (*(n for n in calibration.notes if not n.startswith("track_false_flags measured by:")), note)
    save_calibration(replace(calibration, track_false_flags=sections, notes=notes), out_file)
    typer.echo(f"per-track false-flag rates added to {out_file}")


def _measure_tracks(
    calibration: Calibration,
    analyzer: FaceAnalyzer,
    calib_emb: NDArray[Any],
    calib_persons: list[str],
    opts: _TrackOptions,
    no_cache: bool,
    cache_dir: Path | None,
) -> tuple[TrackFalseFlags, ...]:
    """Impostor tracks and a distractor pool from the --track-* folders, measured at every operating point."""
    import hashlib

    import numpy as np

    from streamproc.eval.openset import IMAGE_SUFFIXES, person_folders
    from streamproc.eval.tracks import crossfit_thresholds, make_tracks, person_fold, track_false_flags
    from streamproc.search.calibration import TrackFalseFlags

    assert opts.images is not None
    by_person: dict[str, list[Path]] = {}
    for person, path in person_folders(opts.images):
        by_person.setdefault(person, []).append(path)
    track_paths = [(p, f) for p, fs in by_person.items() if len(fs) >= opts.n for f in fs]
    pool_paths = [(f"single:{p}", fs[0]) for p, fs in by_person.items() if len(fs) == 1]
    if opts.distractors is not None:
        seen: set[bytes] = set()
        for f in sorted(opts.distractors.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                digest = hashlib.sha256(f.read_bytes()).digest()
                if digest not in seen:  # a byte duplicate is the same face, not another person
                    seen.add(digest)
                    pool_paths.append((f"distractor:{f.name}", f))
    vectors = _embed([f for _, f in track_paths + pool_paths], analyzer, no_cache, cache_dir)
    shots: dict[str, list[Any]] = {}
    for (person, _), v in zip(track_paths, vectors[: len(track_paths)], strict=True):
        if v is not None:
            shots.setdefault(person, []).append(v)
    pool = [(pid, v) for (pid, _), v in zip(pool_paths, vectors[len(track_paths) :], strict=True) if v is not None]
    track_set = make_tracks(shots, opts.n, opts.seed, opts.max_per_person)
    sizes = [s for s in opts.gallery_sizes if s <= len(pool)]
    if len(sizes) < len(opts.gallery_sizes):
        typer.echo(f"gallery sizes above the {len(pool)} distractors with a face are left out")
    if not sizes:
        raise ConfigError(f"only {len(pool)} distractor faces: no gallery size can be drawn")
    pool_emb = np.stack([v for _, v in pool])
    metric = analyzer.embedder.identity.metric
    folds = [person_fold(p, opts.folds, opts.seed) for p in track_set.persons]
    sections = []
    for point in calibration.points:
        fold_t = crossfit_thresholds(calib_emb, calib_persons, point.fmr_target, metric, opts.folds, opts.seed)
        rows = track_false_flags(
            track_set,
            pool_emb,
            [pid for pid, _ in pool],
            np.array([fold_t[f] for f in folds]),
            metric,
            opts.k,
            opts.n,
            sizes,
            opts.seed,
        )
        data = (
            f"{len(track_set.persons)} impostor tracks of {opts.n} photos ({len(set(track_set.persons))} persons "
            f"with >= {opts.n} photos of {opts.images}, at most {opts.max_per_person} per person), each against "
            f"its own random gallery drawn from {len(pool)} one-photo persons (single-photo persons"
            f"{' and ' + str(opts.distractors) if opts.distractors else ''}); thresholds cross-fitted over "
            f"{opts.folds} person folds of the calibration set at FMR {point.fmr_target:g}; seed {opts.seed}"
        )
        sections.append(
            TrackFalseFlags(
                fmr_target=point.fmr_target,
                distance_threshold=point.distance_threshold,
                k=opts.k,
                n=opts.n,
                fold_thresholds=tuple(fold_t),
                data=data,
                rows=tuple(rows),
            )
        )
        typer.echo(f"FMR {point.fmr_target:g} (distance <= {point.distance_threshold:.4f}), {opts.k}-of-{opts.n}:")
        for r in rows:
            typer.echo(
                f"  gallery {r.gallery_size:>5}: {r.flagged}/{r.tracks} tracks flagged, rate {r.rate:.4f} "
                f"[95% upper {r.upper95:.4f}]; per shot {r.shot_fpir:.4f}, independence would say "
                f"{r.independent_rate:.4f}"
            )
    return tuple(sections)


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
