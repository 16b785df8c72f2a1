"""Open-set replay with repeat persons removed: is the false-flag budget broken by SFace or by the labels?

``bench/open_set.py`` treats every UTKFace image as its own person and every LFW folder as a distinct
person. Neither is true: UTKFace is scraped from the web and holds many celebrities several times (and some
LFW celebrities too), and LFW has a few people under two names. A "false" flag of the same person under
another label is the model being right. This bench asks two *other* models to judge who is the same person,
so SFace does not grade itself: the two embedders in ``../shared/models`` (stand-ins, never shipped), each at
its own FMR 1e-5 threshold measured on LFW's cross-folder pairs; a pair of images is the same person only
when both agree, and persons joined by such pairs are one person (connected components).

Then ``open_set.py``'s split and calibration for ``--seed``, with one change: images of a person who is
also in the gallery under another label are removed from the calibration set and the non-enrolled probes
(they are not non-enrolled); calibration labels are merged. No demographic label is used.

Last lines as ``open_set.py``'s: ``track_false_flags=… tracks=… track_tar=…`` then
``false_flags=… nonenrolled_probes=… tar=… threshold=…``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from open_set import _mated_tracks, _track_level, _track_tar, calibrate, embed_split

from streamproc.cli.common import eval_cache, recognition_config
from streamproc.config_recognition import ArcFaceConfig, RecognitionConfig
from streamproc.eval.embedding import embed_images
from streamproc.eval.intervals import clopper_pearson
from streamproc.eval.openset import (
    IMAGE_SUFFIXES,
    join_labels,
    person_folders,
    similarity_matrix,
    split_open_set,
    sufficiency_message,
)
from streamproc.eval.openset_metrics import open_set_at_threshold, rank1_split
from streamproc.runtime.build import build_analyzer
from streamproc.search.calibration import similarity_to_distance

JUDGES = (("mobilefacenet192_expo.onnx", 127.5), ("arcface_mbf512_faceplugin.onnx", 127.0))
"""The two stand-in embedders of ../shared/models and their input mean (README there); std 128, RGB."""
JUDGE_FMR = 1e-5


def _images(data: Path) -> list[tuple[str, Path]]:
    """(person, image) for every LFW photo and every UTKFace image, labelled as ``split_open_set`` labels them."""
    items = [(f"lfw:{name}", f) for name, f in person_folders(data / "identity" / "lfw")]
    utk = data / "demographic" / "utkface"
    items += [(f"utk:{f.name}", f) for f in sorted(utk.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    return items


def _judge(models: Path, items: list[tuple[str, Path]]) -> NDArray[np.bool_]:
    """(n, n) bool: both judges put images i and j above their own LFW cross-folder FMR 1e-5 threshold."""
    persons = np.asarray([p for p, _ in items])
    lfw = np.flatnonzero(np.char.startswith(persons, "lfw:"))
    iu = np.triu_indices(len(lfw), 1)
    impostor = persons[lfw][iu[0]] != persons[lfw][iu[1]]
    agree = np.ones((len(items), len(items)), dtype=bool)
    for name, mean in JUDGES:
        cfg = RecognitionConfig().model_copy(
            update={"embedder": ArcFaceConfig(model=models / name, mean=mean, std=128.0)}
        )
        analyzer = build_analyzer(cfg)
        cache = eval_cache(analyzer, False, cfg.models.cache_dir)
        try:
            vectors = embed_images([f for _, f in items], analyzer, cache)
        finally:
            if cache is not None:
                cache.close()
        dim = next(v for v in vectors if v is not None).shape[0]
        emb = np.stack([np.zeros(dim, np.float32) if v is None else v for v in vectors]).astype(np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)
        sims = emb @ emb.T
        scores = np.sort(sims[np.ix_(lfw, lfw)][iu][impostor])
        threshold = scores[-int(JUDGE_FMR * scores.size) - 1]
        print(f"judge {name}: LFW cross-folder FMR {JUDGE_FMR:g} at cosine {threshold:.4f} ({scores.size} pairs)")
        agree &= sims >= threshold
    return agree


def same_person_map(data: Path, models: Path) -> dict[str, str]:
    """Each label's representative: labels joined by a pair both judges call the same person share one."""
    items = _images(data)
    agree = _judge(models, items)
    rows, cols = np.nonzero(np.triu(agree, 1))
    labels = [p for p, _ in items]
    merged, joined = join_labels(labels, list(zip(rows.tolist(), cols.tolist(), strict=True)))
    print(f"same person under two labels: {joined} labels joined to another ({len(items)} images)")
    return dict(zip(labels, merged, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--models", type=Path, default=Path("../shared/models"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    same = same_person_map(args.data, args.models)
    cfg = recognition_config(None)
    analyzer = build_analyzer(cfg)
    metric = analyzer.embedder.identity.metric
    split = split_open_set(args.data / "identity" / "lfw", args.data / "demographic" / "utkface", args.seed)
    calib, gallery, enrolled, nonenrolled = embed_split(split, analyzer, False, cfg.models.cache_dir)
    in_gallery = {same[p] for p, _ in gallery}
    calib = [(same[p], v) for p, v in calib if same[p] not in in_gallery]
    n_before = len(nonenrolled)
    nonenrolled = [(p, v) for p, v in nonenrolled if same[p] not in in_gallery]
    print(f"non-enrolled probes: {n_before} -> {len(nonenrolled)} (the rest are a gallery person under another label)")

    persons = len({p for p, _ in calib})
    point = calibrate(calib, len(gallery), metric, args.seed)
    distance = similarity_to_distance(point.threshold, metric)
    print(
        f"calibration: {persons} persons, gallery size {len(gallery)}; distance <= "
        f"{distance:.4f}; {sufficiency_message(point)}"
    )

    gal_emb = np.stack([v for _, v in gallery])
    ids = [p for p, _ in gallery]
    probes = enrolled + nonenrolled
    sims = similarity_matrix(np.stack([v for _, v in probes]), gal_emb, metric)
    correct, mated_score, nonmated_score = rank1_split(sims, ids, [p for p, _ in probes])
    at = open_set_at_threshold(correct, mated_score, nonmated_score, point.threshold)
    flagged = round(at.fpir * at.n_nonmated)
    upper = clopper_pearson(flagged, at.n_nonmated)[1]
    print(
        f"replay: {flagged} of {at.n_nonmated} non-enrolled probes flagged (FPIR {at.fpir:.5f}, 95% upper "
        f"{upper:.5f}); {at.false_candidates - flagged} enrolled probes with the wrong person; TAR {1 - at.fnir:.4f}"
    )
    row = _track_level("at the calibrated threshold", nonenrolled, gal_emb, ids, distance, metric, args.seed)
    mated = _mated_tracks(set(ids), dict(split.gallery), analyzer, cfg.models.cache_dir, False)
    track_tar, n_mated = _track_tar(mated, gal_emb, ids, distance, metric)
    print(f"  track TAR at the calibrated threshold: {track_tar:.4f} of {n_mated} mated tracks")
    print(f"track_false_flags={row.flagged} tracks={row.tracks} track_tar={track_tar:.2f}")
    print(
        f"false_flags={at.false_candidates} nonenrolled_probes={at.n_nonmated} tar={1 - at.fnir:.2f} "
        f"threshold={distance:.4f}"
    )


if __name__ == "__main__":
    main()
