"""ACLU-style replay: how many innocent people does a calibrated watchlist flag?

Three person-disjoint sets from ``--data`` (see :func:`streamproc.eval.openset.split_open_set`): a
calibration set, a gallery of >= 2,500 persons (LFW enrolled persons + LFW/UTKFace distractors) and probes
(another photo of each enrolled person; every photo of persons in neither the gallery nor the calibration
set). The threshold is calibrated for FPIR 1e-3 at the gallery's size on the calibration set only, then
applied to the probes. Track level: every non-enrolled person with >= 3 probe photos becomes one impostor
track of 3 shots, run through the real 2-of-3 policy against the real gallery at that threshold; the share
flagged is the per-track false-flag rate at this gallery size (:mod:`streamproc.eval.tracks`), shown next to
what independent shots would predict. Last line:
``false_flags=<n> nonenrolled_probes=<n> tar=<x.xx> threshold=<distance>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamproc.cli.common import eval_cache, recognition_config
from streamproc.config import PolicyConfig
from streamproc.eval.embedding import embed_images
from streamproc.eval.intervals import clopper_pearson
from streamproc.eval.openset import (
    BenchSplit,
    FpirPoint,
    calibrate_fpir,
    merge_repeats,
    similarity_matrix,
    split_open_set,
    sufficiency_message,
    threshold_at_tar,
)
from streamproc.eval.openset_metrics import open_set_at_threshold, rank1_split
from streamproc.eval.tracks import make_tracks, track_false_flags
from streamproc.runtime.build import build_analyzer
from streamproc.search.calibration import TrackRow, similarity_to_distance
from streamproc.search.policy import MatchPolicy, ShotResult
from streamproc.types import Metric
from streamproc.vision.faces import FaceAnalyzer

TARGET_FPIR = 1e-3


Embedded = list[tuple[str, NDArray[np.float32]]]
"""(person, embedding) pairs of one set, images without a face left out."""


def embed_split(
    split: BenchSplit, analyzer: FaceAnalyzer, no_cache: bool, cache_dir: Path | None
) -> tuple[Embedded, Embedded, Embedded, Embedded]:
    """The split's calibration set, gallery, enrolled and non-enrolled probes, embedded (through the evaluation
    cache unless ``no_cache``). An enrolled person whose gallery photo has no face is not enrolled at all, so
    their probe is dropped, not reclassified. Shared by the open-set benches so they replay the same sets."""
    sets = [split.calibration, split.gallery, split.enrolled_probes, split.nonenrolled_probes]
    cache = eval_cache(analyzer, no_cache, cache_dir)
    try:
        vectors = embed_images([p for s in sets for _, p in s], analyzer, cache)
    finally:
        if cache is not None:
            cache.close()
    found: list[Embedded] = []
    start = 0
    for s in sets:
        found.append([(s[i][0], v) for i, v in enumerate(vectors[start : start + len(s)]) if v is not None])
        start += len(s)
    calib, gallery, enrolled, nonenrolled = found
    enrolled_ids = {p for p, _ in gallery}
    return calib, gallery, [item for item in enrolled if item[0] in enrolled_ids], nonenrolled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gallery-size", type=int, default=2500)
    parser.add_argument("--enrolled", type=int, default=300)
    parser.add_argument("--embedder", default=None)
    parser.add_argument("--embedder-model", type=Path, default=None)
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args()

    cfg = recognition_config(None, args.embedder, args.embedder_model, None)
    analyzer = build_analyzer(cfg)
    metric = analyzer.embedder.identity.metric
    split = split_open_set(
        args.data / "identity" / "lfw",
        args.data / "demographic" / "utkface",
        args.seed,
        args.gallery_size,
        args.enrolled,
    )
    sets = [split.calibration, split.gallery, split.enrolled_probes, split.nonenrolled_probes]
    found = embed_split(split, analyzer, args.no_cache, cfg.models.cache_dir)
    calib, gallery, enrolled, nonenrolled = found
    print(f"embedder {analyzer.embedder.identity.kind} ({analyzer.embedder.identity.model_sha256[:12]}), {metric}")
    for name, s, f in zip(
        ("calibration", "gallery", "enrolled probes", "non-enrolled probes"), sets, found, strict=True
    ):
        print(f"{name:>20}: {len(f)} images with a face of {len(s)}, {len({p for p, _ in f})} persons")

    # Calibrate on the calibration set only, for the gallery as it actually is (faces found).
    n_gallery = len(gallery)
    point = calibrate(calib, n_gallery, metric, args.seed)
    distance = similarity_to_distance(point.threshold, metric)
    print(f"calibration: FPIR {TARGET_FPIR:g} at gallery size {n_gallery}, {point.n_searches} searches")
    print(f"  threshold {metric} distance <= {distance:.4f}; {sufficiency_message(point)}")

    # Replay the probes against the real gallery at that threshold.
    gal_emb = np.stack([v for _, v in gallery])
    probes = enrolled + nonenrolled
    sims = similarity_matrix(np.stack([v for _, v in probes]), gal_emb, metric)
    correct, mated_score, nonmated_score = rank1_split(sims, [p for p, _ in gallery], [p for p, _ in probes])
    at = open_set_at_threshold(correct, mated_score, nonmated_score, point.threshold)
    flagged_nonenrolled = round(at.fpir * at.n_nonmated)
    wrong_enrolled = at.false_candidates - flagged_nonenrolled
    tar = 1.0 - at.fnir
    upper = clopper_pearson(flagged_nonenrolled, at.n_nonmated)[1]
    print(f"replay at distance <= {distance:.4f} (gallery {n_gallery}):")
    print(
        f"  non-enrolled probes flagged: {flagged_nonenrolled} of {at.n_nonmated} "
        f"(FPIR {at.fpir:.5f}, 95% upper bound {upper:.5f})"
    )
    print(f"  enrolled probes flagged with the wrong person: {wrong_enrolled} of {at.n_mated}")
    print(f"  false flags in all: {at.false_candidates}; true match rate of enrolled probes: {tar:.4f}")
    t90 = threshold_at_tar(correct, mated_score, 0.90)
    if t90 is None:
        print("  descriptive, not a calibration: 90% TAR is out of reach (rank-1 accuracy below 90%)")
    else:
        d90 = open_set_at_threshold(correct, mated_score, nonmated_score, t90)
        k90 = round(d90.fpir * d90.n_nonmated)
        print(
            f"  descriptive, measured on these probes, not a calibration: at 90% TAR (distance <= "
            f"{similarity_to_distance(t90, metric):.4f}) FPIR is {d90.fpir:.4f} "
            f"({k90} of {d90.n_nonmated} non-enrolled probes), {d90.false_candidates} false flags"
        )
        print(
            f"  plainly: to find 90% of enrolled people this model needs a false-flag budget of FPIR {d90.fpir:.2f} "
            f"at a gallery of {n_gallery} (about {k90} of {d90.n_nonmated} non-enrolled people flagged); at the "
            f"calibrated budget it finds {tar:.0%} of them"
        )
    flags = _track_level(
        "at the calibrated threshold", nonenrolled, gal_emb, [p for p, _ in gallery], distance, metric, args.seed
    )
    if t90 is not None:
        d = similarity_to_distance(t90, metric)
        _track_level("at the 90% TAR threshold", nonenrolled, gal_emb, [p for p, _ in gallery], d, metric, args.seed)
    gallery_paths = dict(split.gallery)
    mated_tracks = _mated_tracks({p for p, _ in gallery}, gallery_paths, analyzer, cfg.models.cache_dir, args.no_cache)
    track_tar, n_mated = _track_tar(mated_tracks, gal_emb, [p for p, _ in gallery], distance, metric)
    print(
        f"  track TAR at the calibrated threshold (2-of-3; photos 2-4 of each enrolled LFW person with >= 4 photos, "
        f"photo 1 enrolled): {track_tar:.4f} of {n_mated} mated tracks"
    )
    print(f"track_false_flags={flags.flagged} tracks={flags.tracks} track_tar={track_tar:.2f}")
    print(
        f"false_flags={at.false_candidates} nonenrolled_probes={at.n_nonmated} tar={tar:.2f} threshold={distance:.4f}"
    )


def calibrate(calib: Embedded, gallery_size: int, metric: Metric, seed: int) -> FpirPoint:
    """The threshold ``streamproc calibrate --target-fpir`` sets on this calibration set (repeats joined)."""
    emb, persons = np.stack([v for _, v in calib]), [p for p, _ in calib]
    repeats = merge_repeats(emb, persons, metric)
    print(
        f"  calibration: {len(repeats.pairs)} cross-label pairs at or above the typical same-person similarity "
        f"{repeats.bar:.4f}: {repeats.joined} labels joined (as `streamproc calibrate` does)"
    )
    return calibrate_fpir(emb, repeats.persons, gallery_size, TARGET_FPIR, metric, seed)


def _track_level(
    label: str,
    nonenrolled: list[tuple[str, np.ndarray]],
    gal_emb: np.ndarray,
    gallery_ids: list[str],
    distance: float,
    metric: Metric,
    seed: int,
) -> TrackRow:
    """Per-track false-flag rate of the 2-of-3 rule on non-enrolled persons' photos, against the real gallery."""
    by_person: dict[str, list[np.ndarray]] = {}
    for person, vector in nonenrolled:
        by_person.setdefault(person, []).append(vector)
    tracks = make_tracks(by_person, n=3, seed=seed)
    (row,) = track_false_flags(tracks, gal_emb, gallery_ids, distance, metric, 2, 3, [len(gallery_ids)], seed)
    print(
        f"  track level {label} (distance <= {distance:.4f}; 2-of-3, one track of 3 photos per non-enrolled "
        f"person with >= 3 photos): "
        f"{row.flagged} of {row.tracks} tracks flagged (rate {row.rate:.4f}, 95% upper bound {row.upper95:.4f}); "
        f"per shot {row.shot_fpir:.4f}, independent shots would predict {row.independent_rate:.4f}"
    )
    return row


def _mated_tracks(
    enrolled_ids: set[str],
    gallery_paths: dict[str, Path],
    analyzer: FaceAnalyzer,
    cache_dir: Path | None,
    no_cache: bool,
) -> list[tuple[str, list[np.ndarray]]]:
    """(person, 3 embeddings) for every enrolled LFW person with >= 4 photos: photos 2-4 (photo 1 is enrolled)."""
    wanted = []
    for person in sorted(enrolled_ids):
        folder = gallery_paths[person].parent
        photos = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if person.startswith("lfw:") and len(photos) >= 4 and photos[0] == gallery_paths[person]:
            wanted.append((person, photos[1:4]))
    cache = eval_cache(analyzer, no_cache, cache_dir)
    try:
        vectors = embed_images([f for _, fs in wanted for f in fs], analyzer, cache)
    finally:
        if cache is not None:
            cache.close()
    out = []
    for i, (person, _) in enumerate(wanted):
        shots = vectors[3 * i : 3 * i + 3]
        if all(v is not None for v in shots):
            out.append((person, [v for v in shots if v is not None]))
    return out


def _track_tar(
    tracks: list[tuple[str, list[np.ndarray]]],
    gal_emb: np.ndarray,
    gallery_ids: list[str],
    distance: float,
    metric: Metric,
) -> tuple[float, int]:
    """Share of mated tracks the real 2-of-3 policy flags for their own person against the real gallery."""
    policy = MatchPolicy(PolicyConfig(k=2, n=3, cooldown_s=0.0), distance)
    hits = 0
    for t, (person, shots) in enumerate(tracks):
        sims = similarity_matrix(np.stack(shots), gal_emb, metric)
        flags = []
        for j, row in enumerate(sims):
            best = int(np.argmax(row))
            d = float(similarity_to_distance(float(row[best]), metric))
            flags += policy.observe(t, ShotResult(float(j), ((gallery_ids[best], d),)))
        hits += any(f.subject_id == person for f in flags)
    return (hits / len(tracks) if tracks else float("nan")), len(tracks)


if __name__ == "__main__":
    main()
