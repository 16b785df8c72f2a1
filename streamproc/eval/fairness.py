"""False-match rates by group with and without the fair score map (:mod:`streamproc.search.fairscore`).

Protocol (labels measure, they never fit):

* Faces: the rows of a demographics labels CSV (:func:`streamproc.eval.demographics.read_labels`) that have a
  face. UTKFace rows (no person ids) give the within-group impostor pairs of each race/sex group;
  identity-labelled rows (LFW) give genuine and impostor pairs for the overall TAR at one global FMR.
* A map is never measured on faces it was fitted on. ``crossfit`` splits the faces in two folds, by file
  for UTKFace (near-duplicate files, similarity >= :data:`NEAR_DUPLICATE_SIMILARITY`, stay together, as the
  same photo or person would) and by person for LFW, both by a hash of the name, so the split is fixed and
  needs no labels. For each fold a map is fitted on the *other* fold's faces (UTKFace + LFW, no group label)
  with the other fold's LFW impostor pairs as its reference, and the fold's own pairs are measured at the
  threshold that reference sets for the nominal FMR. Counts are pooled over both folds; pairs across folds
  are not used.
* ``given``: one map (a calibration file's) measured on all faces at the file's threshold; only honest when
  the labelled faces took no part in fitting it (say so).

Rates carry 95% Clopper-Pearson intervals; the ratio is max/min over groups (not estimable when a group has
no false match); ``worst_x`` is the worst group's FMR over the nominal FMR.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from streamproc.eval.demographics import Rate, binomial_rate, fmr_ratio, read_labels
from streamproc.eval.embedding import embed_images
from streamproc.search.fairscore import FairScoreMap, fit_fair_map
from streamproc.types import Metric

if TYPE_CHECKING:
    from streamproc.eval.cache import EmbeddingCache
    from streamproc.search.calibration import Calibration
    from streamproc.vision.faces import FaceAnalyzer

NEAR_DUPLICATE_SIMILARITY = 0.85  # cosine: two files this close are one photo (or one person) for the split
TAR_FMRS = (1e-3, 1e-4, 1e-5)
DEFAULT_CLUSTERS = 16  # what streamproc calibrate --fair-faces fits; see docs/models.md (Fair scores)
DEFAULT_LOOKALIKE = 0.05
# k-means partitions averaged and faces per person in the fit: cross-fitted over 5 seed sets, 4 partitions
# uncapped left the worst group at 2.3-3.1x and cost 0.7-1.2 TAR points at FMR 1e-5; 8 partitions with <= 2
# faces per person 1.9-2.2x and 0.05-0.26 points (docs/fair-scores.md, "Run 2")
DEFAULT_MEMBERS = 8
DEFAULT_MAX_PER_PERSON = 2


@dataclass(frozen=True)
class Face:
    """One labelled face: ``person`` is the file itself for UTKFace rows."""

    file: str
    group: str
    source: str  # "utkface" or "lfw"
    person: str


@dataclass(frozen=True)
class GroupRates:
    name: str
    raw: Rate
    fair: Rate


@dataclass(frozen=True)
class TarPoint:
    """TAR on identity-labelled genuine pairs at the threshold giving ``fmr`` on their impostor pairs."""

    fmr: float
    raw: float
    fair: float


@dataclass(frozen=True)
class FairnessResult:
    nominal_fmr: float
    protocol: str
    groups: tuple[GroupRates, ...]
    fnmr: tuple[GroupRates, ...]  # identity-labelled groups with enough mated pairs
    tar: tuple[TarPoint, ...]
    n_genuine: int
    n_impostor: int
    tar_at_threshold: tuple[float, float]  # (raw, fair) at the nominal threshold itself
    global_fmr_at_threshold: tuple[float, float]

    def ratio(self, fair: bool) -> float | None:
        rates = [g.fair if fair else g.raw for g in self.groups]
        return fmr_ratio([g.name for g in self.groups], rates).point

    def worst_x(self, fair: bool) -> float:
        """The worst group's FMR over the nominal FMR."""
        rates = [g.fair if fair else g.raw for g in self.groups]
        return max(r.errors / r.trials for r in rates if r.trials) / self.nominal_fmr


def folds(faces: Sequence[Face], vectors: NDArray[np.float32]) -> NDArray[np.int64]:
    """0/1 per face: UTKFace by file (near-duplicates together), identity-labelled by person; see module doc."""
    fold = np.array([_hash(f.person) % 2 for f in faces], dtype=np.int64)
    utk = np.array([i for i, f in enumerate(faces) if f.source == "utkface"], dtype=np.int64)
    if utk.size:
        u = _unit(vectors[utk])
        parent = np.arange(utk.size)

        def root(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = int(parent[a])
            return a

        for a, b in zip(*np.nonzero(np.triu(u @ u.T >= NEAR_DUPLICATE_SIMILARITY, 1)), strict=True):
            parent[root(int(a))] = root(int(b))
        for k in range(utk.size):
            fold[utk[k]] = _hash(faces[int(utk[root(k)])].file) % 2
    return fold


def crossfit(
    faces: Sequence[Face],
    vectors: NDArray[np.float32],
    metric: Metric,
    nominal_fmr: float,
    n_clusters: int,
    lookalike: float,
    seed: int = 0,
    min_mated_pairs: int = 50,
    members: int = DEFAULT_MEMBERS,
    max_per_person: int | None = DEFAULT_MAX_PER_PERSON,
) -> FairnessResult:
    """Two-fold cross-fitted measurement (module docstring); ``vectors`` (n, dim), one per face. The fit
    caps faces per person (``max_per_person``); the reference impostors are all of the fitting fold's."""
    fold = folds(faces, vectors)
    parts = []
    for f in (0, 1):
        fit = np.flatnonzero(fold != f)
        ref = _identity_pairs(faces, vectors, fit, metric)[1]
        if ref.size == 0:
            raise ValueError("cross-fitting needs identity-labelled (LFW) faces in both folds for the reference")
        fmap = fit_fair_map(
            vectors[fit],
            [faces[int(i)].person for i in fit],
            metric,
            ref,
            n_clusters=n_clusters,
            lookalike=lookalike,
            members=members,
            seed=seed,
            max_per_person=max_per_person,
            data=f"fold {1 - f} of the labelled faces",
        )
        parts.append(_measure(faces, vectors, np.flatnonzero(fold == f), metric, fmap, _threshold(ref, nominal_fmr)))
    return _combine(parts, nominal_fmr, "2-fold cross-fit (map fitted on the other fold)", min_mated_pairs)


def given(
    faces: Sequence[Face],
    vectors: NDArray[np.float32],
    fmap: FairScoreMap,
    distance_threshold: float,
    nominal_fmr: float,
    min_mated_pairs: int = 50,
) -> FairnessResult:
    """One map measured on every face at ``distance_threshold`` (set for ``nominal_fmr``)."""
    sim_threshold = -distance_threshold if fmap.metric == "l2" else 1.0 - distance_threshold
    part = _measure(faces, vectors, np.arange(len(faces)), fmap.metric, fmap, sim_threshold)
    return _combine([part], nominal_fmr, "given map on all faces", min_mated_pairs)


# ------------------------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class _Part:
    counts: dict[str, tuple[int, int, int]]  # group -> raw false matches, fair false matches, impostor pairs
    mated: dict[str, tuple[int, int, int]]  # identity group -> raw misses, fair misses, mated pairs
    genuine: tuple[NDArray[np.float64], NDArray[np.float64]]  # raw, fair similarities
    impostor: tuple[NDArray[np.float64], NDArray[np.float64]]
    threshold: float


def _measure(
    faces: Sequence[Face],
    vectors: NDArray[np.float32],
    idx: NDArray[np.int64],
    metric: Metric,
    fmap: FairScoreMap,
    sim_threshold: float,
) -> _Part:
    t = sim_threshold
    clusters = fmap.assign(vectors[idx])
    by_group: dict[str, list[int]] = {}
    for k, i in enumerate(idx):
        by_group.setdefault(faces[int(i)].group, []).append(k)
    counts: dict[str, tuple[int, int, int]] = {}
    mated: dict[str, tuple[int, int, int]] = {}
    for name, ks in sorted(by_group.items()):
        sel = np.asarray(ks)
        a, b = np.triu_indices(sel.size, 1)
        s = _sims(vectors[idx[sel]], metric)[a, b]
        fair = _fair_similarity(fmap, clusters[sel][a], clusters[sel][b], s)
        persons = np.array([faces[int(idx[k])].person for k in sel])
        same = persons[a] == persons[b]
        if faces[int(idx[sel[0]])].source == "utkface":
            imp = ~same
            counts[name] = (int(np.sum(s[imp] >= t)), int(np.sum(fair[imp] >= t)), int(imp.sum()))
        elif same.any():
            mated[name] = (int(np.sum(s[same] < t)), int(np.sum(fair[same] < t)), int(same.sum()))
    lfw = np.array([k for k, i in enumerate(idx) if faces[int(i)].source == "lfw"], dtype=np.int64)
    cl = clusters[lfw]
    (gs, ga, gb), (is_, ia, ib) = _identity_pairs(faces, vectors, idx[lfw], metric, keep_index=True)
    genuine = (gs, _fair_similarity(fmap, cl[ga], cl[gb], gs))
    impostor = (is_, _fair_similarity(fmap, cl[ia], cl[ib], is_))
    return _Part(counts, mated, genuine, impostor, t)


def _identity_pairs(
    faces: Sequence[Face],
    vectors: NDArray[np.float32],
    idx: NDArray[np.int64],
    metric: Metric,
    keep_index: bool = False,
) -> Any:
    """Genuine and impostor similarities among the identity-labelled faces of ``idx`` (with pair indices)."""
    lfw = np.array([i for i in idx if faces[int(i)].source == "lfw"], dtype=np.int64)
    a, b = np.triu_indices(lfw.size, 1)
    s = _sims(vectors[lfw], metric)[a, b] if lfw.size > 1 else np.zeros(0)
    persons = np.array([faces[int(i)].person for i in lfw])
    same = persons[a] == persons[b] if lfw.size > 1 else np.zeros(0, bool)
    if keep_index:
        return (s[same], a[same], b[same]), (s[~same], a[~same], b[~same])
    return s[same], s[~same]


def _combine(parts: list[_Part], nominal_fmr: float, protocol: str, min_mated_pairs: int) -> FairnessResult:
    names = sorted({n for p in parts for n in p.counts})
    groups = []
    for n in names:
        raw = sum(p.counts[n][0] for p in parts if n in p.counts)
        fair = sum(p.counts[n][1] for p in parts if n in p.counts)
        trials = sum(p.counts[n][2] for p in parts if n in p.counts)
        groups.append(GroupRates(n, binomial_rate(raw, trials), binomial_rate(fair, trials)))
    fnmr = []
    for n in sorted({n for p in parts for n in p.mated}):
        raw = sum(p.mated[n][0] for p in parts if n in p.mated)
        fair = sum(p.mated[n][1] for p in parts if n in p.mated)
        trials = sum(p.mated[n][2] for p in parts if n in p.mated)
        if trials >= min_mated_pairs:
            fnmr.append(GroupRates(n, binomial_rate(raw, trials), binomial_rate(fair, trials)))
    gen = [np.concatenate([p.genuine[k] for p in parts]) for k in (0, 1)]
    imp = [np.concatenate([p.impostor[k] for p in parts]) for k in (0, 1)]
    tar = []
    for fmr in TAR_FMRS:
        if imp[0].size * fmr >= 1:
            tar.append(TarPoint(fmr, _tar(gen[0], _threshold(imp[0], fmr)), _tar(gen[1], _threshold(imp[1], fmr))))
    at = [np.concatenate([(p.genuine[k] >= p.threshold) for p in parts]) for k in (0, 1)]
    fa = [np.concatenate([(p.impostor[k] >= p.threshold) for p in parts]) for k in (0, 1)]
    return FairnessResult(
        nominal_fmr,
        protocol,
        tuple(groups),
        tuple(fnmr),
        tuple(tar),
        int(gen[0].size),
        int(imp[0].size),
        (float(at[0].mean()) if at[0].size else 0.0, float(at[1].mean()) if at[1].size else 0.0),
        (float(fa[0].mean()) if fa[0].size else 0.0, float(fa[1].mean()) if fa[1].size else 0.0),
    )


def _tar(genuine: NDArray[np.float64], threshold: float) -> float:
    return float(np.mean(genuine >= threshold)) if genuine.size else 0.0


def _threshold(impostor: NDArray[np.float64], fmr: float) -> float:
    """Similarity threshold admitting at most floor(fmr * n) impostor pairs (ties above it are excluded)."""
    desc = np.sort(impostor)[::-1]
    k = int(fmr * desc.size)
    return float(np.nextafter(desc[k], np.inf)) if k < desc.size else float(desc[-1])


def _fair_similarity(fmap: FairScoreMap, a: NDArray[np.int64], b: NDArray[np.int64], s: NDArray[np.float64]) -> Any:
    d = fmap.calibrate(a, b, -s if fmap.metric == "l2" else 1.0 - s)
    return -d if fmap.metric == "l2" else 1.0 - d


def _sims(x: NDArray[np.float32], metric: Metric) -> NDArray[np.float64]:
    xd = x.astype(np.float64)
    if metric == "cosine":
        u = xd / np.maximum(np.linalg.norm(xd, axis=1, keepdims=True), 1e-12)
        return np.asarray(u @ u.T, dtype=np.float64)
    sq = np.einsum("ij,ij->i", xd, xd)
    return np.asarray(-np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (xd @ xd.T), 0.0)), dtype=np.float64)


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float32)


def _hash(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


# ------------------------------------------------------------------------------------------------ command


def labelled_faces(
    labels_csv: Path, images_dir: Path, analyzer: FaceAnalyzer, cache: EmbeddingCache | None
) -> tuple[list[Face], NDArray[np.float32]]:
    """The labelled rows with a detected face and their embeddings (cached: the same as the raw report's)."""
    rows = read_labels(labels_csv)[0]
    vectors = embed_images([images_dir / r.file for r in rows], analyzer, cache)
    kept = [(Face(r.file, r.group, r.source, r.person), v) for r, v in zip(rows, vectors, strict=True) if v is not None]
    return [f for f, _ in kept], np.stack([v for _, v in kept]).astype(np.float32)


def _rate(r: Rate, nominal: float) -> str:
    if r.trials == 0:
        return "no pairs"
    x = r.errors / r.trials / nominal
    return f"{r.errors}/{r.trials} = {x:.2f}x [{r.lower / nominal:.2f}, {r.upper / nominal:.2f}]"


def summary_lines(result: FairnessResult) -> list[str]:
    """Per-group FMR (as multiples of the nominal FMR, 95% CI), FNMR, TAR, without and with the map."""
    f = result.nominal_fmr
    lines = [f"fair score map, {result.protocol}; FMR as multiples of the nominal {f:g} [95% CI]:"]
    lines += [f"  {g.name:<16} without {_rate(g.raw, f):<34} with {_rate(g.fair, f)}" for g in result.groups]
    for g in result.fnmr:
        lines.append(
            f"  FNMR {g.name:<32} without {g.raw.errors}/{g.raw.trials} = {g.raw.errors / g.raw.trials:.4f}"
            f"  with {g.fair.errors}/{g.fair.trials} = {g.fair.errors / g.fair.trials:.4f}"
        )
    for t in result.tar:
        lines.append(
            f"  TAR at global FMR {t.fmr:g} ({result.n_genuine} genuine / {result.n_impostor} impostor LFW pairs): "
            f"without {t.raw:.4f}, with {t.fair:.4f} ({100 * (t.fair - t.raw):+.2f} points)"
        )
    (tar_raw, tar_fair), (fmr_raw, fmr_fair) = result.tar_at_threshold, result.global_fmr_at_threshold
    lines.append(
        f"  at the nominal threshold itself: TAR without {tar_raw:.4f}, with {tar_fair:.4f}; "
        f"LFW all-pairs FMR without {fmr_raw:.2e}, with {fmr_fair:.2e}"
    )
    for fair in (False, True):
        ratio = result.ratio(fair)
        lines.append(
            f"  {'with' if fair else 'without'} the map: max/min FMR ratio "
            f"{'not estimable (a group has no false match)' if ratio is None else f'{ratio:.2f}'}, "
            f"worst group {result.worst_x(fair):.2f}x nominal"
        )
    return lines


def headline(result: FairnessResult, fair: bool = True) -> str:
    """``max_min_fmr_ratio=… groups=… worst_group_fmr_x=…`` (with the map unless ``fair`` is False)."""
    ratio = result.ratio(fair)
    value = "not_estimable" if ratio is None else f"{ratio:.3f}"
    return f"max_min_fmr_ratio={value} groups={len(result.groups)} worst_group_fmr_x={result.worst_x(fair):.3f}"


def run_fairness(
    labels_csv: Path,
    images_dir: Path,
    analyzer: FaceAnalyzer,
    cache: EmbeddingCache | None,
    nominal_fmr: float,
    crossfit_map: bool,
    calibration_file: Path | None,
) -> FairnessResult | None:
    """The fair-map measurement the demographics command prints: cross-fitted, a given file's map, or the
    shipped calibration's map; None when none of those applies (no map to measure)."""
    from streamproc.errors import ConfigError
    from streamproc.search.calibration import load_calibration, shipped_calibration

    ident = analyzer.embedder.identity
    if crossfit_map:
        faces, vectors = labelled_faces(labels_csv, images_dir, analyzer, cache)
        return crossfit(faces, vectors, ident.metric, nominal_fmr, DEFAULT_CLUSTERS, DEFAULT_LOOKALIKE)
    if calibration_file is not None:
        calibration = load_calibration(calibration_file, ident, analyzer.detector.kind)
    else:
        shipped = shipped_calibration(ident, analyzer.detector.kind)
        if shipped is None or shipped[0].fair_map is None:
            return None
        calibration = shipped[0]
    if calibration.fair_map is None:
        raise ConfigError(f"{calibration_file} has no fair score map: make one with streamproc calibrate --fair-faces")
    faces, vectors = labelled_faces(labels_csv, images_dir, analyzer, cache)
    threshold = calibration.threshold_for(nominal_fmr).distance_threshold
    return given(faces, vectors, calibration.fair_map, threshold, nominal_fmr)


def fit_calibration_map(
    calib_vectors: NDArray[np.float32],
    calib_persons: list[str],
    reference_impostors: NDArray[np.floating[Any]],
    faces_dir: Path,
    analyzer: FaceAnalyzer,
    cache: EmbeddingCache | None,
    n_clusters: int,
    lookalike: float,
    seed: int,
) -> FairScoreMap:
    """``streamproc calibrate --fair-faces``: the map fitted on the calibration persons (at most
    :data:`DEFAULT_MAX_PER_PERSON` faces each) plus every face in ``faces_dir`` (a flat folder, each image its
    own person; byte duplicates once), :data:`DEFAULT_MEMBERS` partitions, on the scale of the calibration's own
    impostor pairs (``reference_impostors``, similarities: all of them, uncapped)."""
    from streamproc.errors import ConfigError
    from streamproc.eval.openset import IMAGE_SUFFIXES

    if not faces_dir.is_dir():
        raise ConfigError(f"--fair-faces {faces_dir}: not a folder")
    seen: dict[str, Path] = {}
    for f in sorted(faces_dir.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            seen.setdefault(hashlib.sha256(f.read_bytes()).hexdigest(), f)
    paths = list(seen.values())
    found = [v for v in embed_images(paths, analyzer, cache) if v is not None]
    x = np.concatenate([calib_vectors, np.asarray(found, np.float32).reshape(-1, calib_vectors.shape[1])])
    persons = [*calib_persons, *(f"fair-face:{k}" for k in range(len(found)))]
    capped = sum(min(n, DEFAULT_MAX_PER_PERSON) for n in Counter(calib_persons).values())
    data = (
        f"{capped} of {len(calib_persons)} calibration faces (at most {DEFAULT_MAX_PER_PERSON} per person) and "
        f"{len(found)} of {len(paths)} distinct images of {faces_dir} (each its own person); {n_clusters} clusters, "
        f"look-alikes = nearest {lookalike:g}; {DEFAULT_MEMBERS} partitions, seeds {seed}-{seed + DEFAULT_MEMBERS - 1}"
    )
    try:
        return fit_fair_map(
            x,
            persons,
            analyzer.embedder.identity.metric,
            np.asarray(reference_impostors),
            n_clusters=n_clusters,
            lookalike=lookalike,
            members=DEFAULT_MEMBERS,
            seed=seed,
            max_per_person=DEFAULT_MAX_PER_PERSON,
            data=data,
        )
    except ValueError as err:
        raise ConfigError(f"cannot fit the fair score map: {err}") from None


def with_fair_map(
    calibration: Calibration,
    faces: tuple[NDArray[np.float32], list[str], NDArray[np.floating[Any]]],
    faces_dir: Path,
    analyzer: FaceAnalyzer,
    open_cache: Callable[[], EmbeddingCache | None],
    seed: int,
) -> Calibration:
    """``calibration`` with a fair map (:func:`fit_calibration_map`) fitted on ``faces`` (the calibration
    embeddings, their persons, and the impostor similarities that set its thresholds) plus ``faces_dir``;
    an earlier map and its note are replaced."""
    emb, persons, impostor = faces
    cache = open_cache()
    try:
        fair = fit_calibration_map(
            emb, persons, impostor, faces_dir, analyzer, cache, DEFAULT_CLUSTERS, DEFAULT_LOOKALIKE, seed
        )
    finally:
        if cache is not None:
            cache.close()
    note = "fair_map: thresholds apply to its calibrated distances (FMR among look-alikes); docs/fair-scores.md"
    return replace(
        calibration, fair_map=fair, notes=(*(n for n in calibration.notes if not n.startswith("fair_map:")), note)
    )
