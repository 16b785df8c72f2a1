"""False-match (and, where identities allow, false-non-match) rates per demographic group.

Why per group: one overall FMR can hide a group that is falsely matched ten times as often, and in a
watchlist search every false match puts an innocent person in front of an operator. Protocol:

* Labels come from a CSV (``file, age, sex, race, source, sha1_dup``); ``file`` is relative to the images
  directory. Rows with ``sha1_dup=1`` are byte duplicates and are dropped (and counted).
* UTKFace rows carry no person ids: any two images are taken to be different people, so every pair within a
  ``race/sex`` group is an impostor pair. Rows under an ``lfw/<person>/`` folder do have identities (the
  folder name), so those groups also give false-non-match rates from their mated pairs.
* Every image is embedded once (central face, no quality gate). Images where no face is found are counted
  per group (failure to detect is itself a differential) and take no part in any pair, so a group's FMR is
  not lowered by comparisons that never happened.
* A pair is a match when its distance is ``<= threshold`` (the pipeline's rule). Rates carry 95%
  Clopper-Pearson intervals.
* Near-duplicates: an impostor pair closer than ``near_duplicate_fraction * threshold`` is almost certainly
  the same photo (or person) under two labels. Such pairs are listed and each group's FMR is given with and
  without them; the headline keeps them, so nothing is dropped silently.

The max/min FMR ratio (see :func:`fmr_ratio`) is the differential a deployment gate can check.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamproc.errors import StreamprocError
from streamproc.eval.cache import EmbeddingCache
from streamproc.eval.embedding import embed_images
from streamproc.eval.intervals import clopper_pearson
from streamproc.types import Metric
from streamproc.vision.faces import FaceAnalyzer

REQUIRED_COLUMNS = ("file", "sex", "race", "sha1_dup")
MIN_MATED_PAIRS = 50
NEAR_DUPLICATE_FRACTION = 0.2
CONFIDENCE = 0.95


class LabelsError(StreamprocError):
    """The labels CSV is missing, malformed or names images that do not exist."""


@dataclass(frozen=True)
class Rate:
    """``errors`` out of ``trials`` with its 95% Clopper-Pearson interval."""

    errors: int
    trials: int
    lower: float
    upper: float

    @property
    def point(self) -> float | None:
        return self.errors / self.trials if self.trials else None


def binomial_rate(errors: int, trials: int) -> Rate:
    lower, upper = clopper_pearson(errors, trials, CONFIDENCE)
    return Rate(errors, trials, lower, upper)


@dataclass(frozen=True)
class NearDuplicate:
    left: str
    right: str
    distance: float


@dataclass(frozen=True)
class PairCounts:
    """Within-group pair outcomes at one threshold (detected images only)."""

    fmr: Rate
    fmr_without_near_duplicates: Rate
    near_duplicates: tuple[NearDuplicate, ...]
    fnmr: Rate  # trials == 0 when the group has no mated pairs


@dataclass(frozen=True)
class GroupResult:
    name: str  # "black/female", or "lfw:caucasian/male"
    source: str  # "utkface" or "lfw"
    n_images: int
    failed_to_detect: Rate  # images without a detected face, out of n_images
    pairs: PairCounts
    fnmr_reported: bool  # False: fewer than MIN_MATED_PAIRS mated pairs


@dataclass(frozen=True)
class FmrRatio:
    """The max/min FMR differential across groups.

    ``point``: max FMR / min FMR, only when every group has at least one false match (otherwise the minimum
    is 0 and the ratio is infinite, which says more about sample size than about the system).
    ``bound``: max over groups of the upper 95% limit / min over groups with >= 1 false match of the lower
    95% limit — the widest differential the per-group intervals allow among groups whose FMR is measurable.
    Groups with no false match are excluded from the denominator (their lower limit is 0: no finite sample
    bounds their FMR away from zero) but their upper limits count in the numerator. None when no group has a
    false match. ``gate_value``: ``point`` when estimable, else ``bound`` — conservative, since the bound is
    never below the point ratio of the measurable groups.
    """

    point: float | None
    bound: float | None
    n_groups: int
    zero_groups: tuple[str, ...]

    @property
    def estimable(self) -> bool:
        return self.point is not None

    @property
    def gate_value(self) -> float | None:
        return self.point if self.point is not None else self.bound


@dataclass(frozen=True)
class DemographicsResult:
    threshold: float
    metric: Metric
    near_duplicate_distance: float
    n_rows: int
    n_byte_duplicates_dropped: int
    groups: tuple[GroupResult, ...]  # UTKFace race/sex groups: the FMR differential
    lfw_groups: tuple[GroupResult, ...]  # identity-labelled groups: FMR and FNMR
    ratio: FmrRatio
    ratio_without_near_duplicates: FmrRatio
    extra: dict[str, str]


@dataclass(frozen=True)
class _Row:
    file: str
    group: str
    source: str
    person: str


def fmr_ratio(names: Sequence[str], rates: Sequence[Rate]) -> FmrRatio:
    """See :class:`FmrRatio`; groups without any pair are ignored."""
    used = [(name, r) for name, r in zip(names, rates, strict=True) if r.trials > 0]
    zero = tuple(name for name, r in used if r.errors == 0)
    nonzero = [r for _, r in used if r.errors > 0]
    point = None
    if used and not zero:
        points = [r.errors / r.trials for _, r in used]
        point = max(points) / min(points)
    bound = max(r.upper for _, r in used) / min(r.lower for r in nonzero) if nonzero else None
    return FmrRatio(point, bound, len(used), zero)


def pairwise_distances(vectors: NDArray[np.float32], metric: Metric) -> NDArray[np.float64]:
    """(n, n) distances in the embedder's metric: Euclidean for l2, 1 - cosine for cosine."""
    x = vectors.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return np.asarray(1.0 - x @ x.T, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    return np.asarray(np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)), dtype=np.float64)


def count_pairs(
    files: Sequence[str],
    persons: Sequence[str],
    vectors: NDArray[np.float32],
    metric: Metric,
    threshold: float,
    near_duplicate_distance: float,
) -> PairCounts:
    """False matches and non-matches among all unordered pairs of one group's detected images."""
    n = len(files)
    if n < 2:
        empty = binomial_rate(0, 0)
        return PairCounts(empty, empty, (), empty)
    dist = pairwise_distances(vectors, metric)
    i, j = np.triu_indices(n, k=1)
    d = dist[i, j]
    ids = np.unique(np.asarray(persons), return_inverse=True)[1].reshape(-1)
    mated = ids[i] == ids[j]
    accepted = d <= threshold
    impostor_accepted = int(np.count_nonzero(accepted & ~mated))
    n_impostor = int(np.count_nonzero(~mated))
    near = np.flatnonzero(~mated & (d <= near_duplicate_distance))
    near_dups = tuple(
        NearDuplicate(files[int(i[p])], files[int(j[p])], float(d[p])) for p in near[np.argsort(d[near], kind="stable")]
    )
    n_mated = int(np.count_nonzero(mated))
    return PairCounts(
        fmr=binomial_rate(impostor_accepted, n_impostor),
        # near-duplicates are always accepted (their distance is below the threshold's fraction)
        fmr_without_near_duplicates=binomial_rate(impostor_accepted - len(near_dups), n_impostor - len(near_dups)),
        near_duplicates=near_dups,
        fnmr=binomial_rate(int(np.count_nonzero(mated & ~accepted)), n_mated),
    )


def read_labels(labels_csv: Path) -> tuple[list[_Row], int, int]:
    """(rows kept, rows read, byte duplicates dropped). LFW rows: person = the parent folder."""
    try:
        with labels_csv.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise LabelsError(f"{labels_csv}: missing column(s) {', '.join(missing)}")
            raw = list(reader)
    except OSError as err:
        raise LabelsError(f"cannot read labels {labels_csv}: {err.strerror or err}") from None
    rows: list[_Row] = []
    dropped = 0
    for n, rec in enumerate(raw, start=2):
        if rec["sha1_dup"].strip() == "1":
            dropped += 1
            continue
        file = rec["file"].strip()
        if not file:
            raise LabelsError(f"{labels_csv}:{n}: empty file name")
        parts = Path(file).parts
        race = rec["race"].strip() or "unlabelled"
        sex = rec["sex"].strip() or "unlabelled"
        if "lfw" in parts[:-1]:
            rows.append(_Row(file, f"lfw:{race}/{sex}", "lfw", parts[-2]))
        else:
            rows.append(_Row(file, f"{race}/{sex}", "utkface", file))
    if not any(r.source == "utkface" for r in rows):
        raise LabelsError(f"{labels_csv}: no rows without person ids (UTKFace-style) to measure FMR by group")
    return rows, len(raw), dropped


def run_demographics(
    labels_csv: Path,
    images_dir: Path,
    analyzer: FaceAnalyzer,
    cache: EmbeddingCache | None,
    threshold: float,
    progress: Callable[[int, int], None] | None = None,
    near_duplicate_fraction: float = NEAR_DUPLICATE_FRACTION,
    min_mated_pairs: int = MIN_MATED_PAIRS,
    extra: dict[str, str] | None = None,
) -> DemographicsResult:
    """Embed every labelled image once and count within-group pair errors at a distance ``threshold``."""
    if not (math.isfinite(threshold) and threshold > 0):
        raise LabelsError(f"threshold must be a positive distance, got {threshold}")
    rows, n_rows, dropped = read_labels(labels_csv)
    paths = [images_dir / r.file for r in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise LabelsError(f"{len(missing)} labelled image(s) not found under {images_dir}, e.g. {missing[0]}")
    vectors = embed_images(paths, analyzer, cache, progress)
    metric = analyzer.embedder.identity.metric
    near_distance = near_duplicate_fraction * threshold
    by_group: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        by_group.setdefault(r.group, []).append(k)
    groups: list[GroupResult] = []
    for name in sorted(by_group):
        members = by_group[name]
        found = [k for k in members if vectors[k] is not None]
        emb = np.stack([v for k in found if (v := vectors[k]) is not None]) if found else np.zeros((0, 1), np.float32)
        counts = count_pairs(
            [rows[k].file for k in found], [rows[k].person for k in found], emb, metric, threshold, near_distance
        )
        groups.append(
            GroupResult(
                name=name,
                source=rows[members[0]].source,
                n_images=len(members),
                failed_to_detect=binomial_rate(len(members) - len(found), len(members)),
                pairs=counts,
                fnmr_reported=counts.fnmr.trials >= min_mated_pairs,
            )
        )
    utk = tuple(g for g in groups if g.source == "utkface")
    names = [g.name for g in utk]
    return DemographicsResult(
        threshold=threshold,
        metric=metric,
        near_duplicate_distance=near_distance,
        n_rows=n_rows,
        n_byte_duplicates_dropped=dropped,
        groups=utk,
        lfw_groups=tuple(g for g in groups if g.source == "lfw"),
        ratio=fmr_ratio(names, [g.pairs.fmr for g in utk]),
        ratio_without_near_duplicates=fmr_ratio(names, [g.pairs.fmr_without_near_duplicates for g in utk]),
        extra=dict(extra or {}),
    )


# --------------------------------------------------------------------------------------------- report


def format_ratio(ratio: FmrRatio) -> str:
    """One line a reader (and a grep) can take at face value: never 'inf', never a silent 0."""
    if ratio.point is not None:
        return f"{ratio.point:.3f} (interval-based bound {_num(ratio.bound)})"
    zeros = ", ".join(ratio.zero_groups)
    if ratio.bound is None:
        return f"not estimable: no group has a false match ({zeros})"
    return f"not estimable: no false match in {zeros}; interval-based bound {ratio.bound:.3f}"


def headline(result: DemographicsResult) -> str:
    """The last stdout line of the command."""
    value = f"{result.ratio.point:.3f}" if result.ratio.point is not None else "not_estimable"
    return f"max_min_fmr_ratio={value} groups={result.ratio.n_groups}"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _rate_cell(r: Rate) -> str:
    if r.trials == 0:
        return "no pairs"
    return f"{r.errors}/{r.trials} = {r.errors / r.trials:.2e} [{r.lower:.2e}, {r.upper:.2e}]"


def summary_lines(result: DemographicsResult) -> list[str]:
    """Per-group lines for the terminal (the Markdown report has the full tables)."""
    lines = [
        f"{result.n_rows} labelled rows, {result.n_byte_duplicates_dropped} byte duplicate(s) dropped; "
        f"match = {result.metric} distance <= {result.threshold:.4f} ({result.extra.get('threshold_source', '')})"
    ]
    for g in result.groups:
        ftd = g.failed_to_detect
        lines.append(
            f"{g.name:<16} FMR {_rate_cell(g.pairs.fmr)}  near-dup {len(g.pairs.near_duplicates)}  "
            f"no face {ftd.errors}/{ftd.trials}"
        )
    for g in result.lfw_groups:
        if g.fnmr_reported:
            lines.append(f"{g.name:<16} FNMR {_rate_cell(g.pairs.fnmr)}  FMR {_rate_cell(g.pairs.fmr)}")
    few = [f"{g.name} ({g.pairs.fnmr.trials})" for g in result.lfw_groups if not g.fnmr_reported]
    if few:
        lines.append(f"FNMR not reported, too few mated pairs (n < {MIN_MATED_PAIRS}): {', '.join(few)}")
    lines.append(f"max/min FMR ratio: {format_ratio(result.ratio)}")
    lines.append(f"without near-duplicates: {format_ratio(result.ratio_without_near_duplicates)}")
    return lines


def _jsonable(result: DemographicsResult) -> dict[str, Any]:
    def group(g: GroupResult) -> dict[str, Any]:
        body = asdict(g)
        for key in ("fmr", "fmr_without_near_duplicates", "fnmr"):
            body["pairs"][key]["point"] = getattr(g.pairs, key).point
        body["failed_to_detect"]["point"] = g.failed_to_detect.point
        return body

    def ratio(r: FmrRatio) -> dict[str, Any]:
        return {**asdict(r), "estimable": r.estimable, "gate_value": r.gate_value, "text": format_ratio(r)}

    return {
        "threshold": result.threshold,
        "metric": result.metric,
        "near_duplicate_distance": result.near_duplicate_distance,
        "n_rows": result.n_rows,
        "n_byte_duplicates_dropped": result.n_byte_duplicates_dropped,
        "confidence": CONFIDENCE,
        "groups": [group(g) for g in result.groups],
        "lfw_groups": [group(g) for g in result.lfw_groups],
        "max_min_fmr_ratio": ratio(result.ratio),
        "max_min_fmr_ratio_without_near_duplicates": ratio(result.ratio_without_near_duplicates),
        "extra": result.extra,
    }


def _markdown(result: DemographicsResult) -> str:
    t = result.threshold
    out = [
        "# False-match rate by demographic group",
        "",
        f"Match rule: {result.metric} distance <= **{t:.4f}** ({result.extra.get('threshold_source', 'given')}). "
        f"Intervals: {CONFIDENCE:.0%} Clopper-Pearson. {result.n_rows} labelled rows; "
        f"{result.n_byte_duplicates_dropped} byte duplicate(s) (`sha1_dup=1`) dropped.",
        "",
        "UTKFace has no person ids: every within-group pair counts as an impostor pair. Images without a detected "
        "face take part in no pair; their share is shown per group.",
        "",
        "| group | images | no face | impostor pairs | false matches | FMR | 95% CI | near-dup pairs | "
        "FMR without near-dups |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for g in result.groups:
        f, ftd = g.pairs.fmr, g.failed_to_detect
        out.append(
            f"| {g.name} | {g.n_images} | {ftd.errors} ({ftd.errors / max(ftd.trials, 1):.1%}) | {f.trials} | "
            f"{f.errors} | {_num(f.point, '.2e')} | [{f.lower:.2e}, {f.upper:.2e}] | "
            f"{len(g.pairs.near_duplicates)} | {_rate_cell(g.pairs.fmr_without_near_duplicates)} |"
        )
    out += [
        "",
        f"**max/min FMR ratio:** {format_ratio(result.ratio)}",
        "",
        f"Without near-duplicate pairs: {format_ratio(result.ratio_without_near_duplicates)}",
        "",
        "Definition: the point ratio is max FMR / min FMR and is given only when every group has at least one "
        "false match. The interval-based bound is the largest upper 95% limit over the smallest lower 95% "
        "limit among groups with a false match (a group with none has lower limit 0 and cannot bound the "
        "ratio); a deployment gate uses the point ratio when estimable, else this bound.",
        "",
        "![FMR by group](fmr_by_group.png)",
        "",
        f"## Near-duplicate impostor pairs (distance <= {result.near_duplicate_distance:.4f})",
        "",
        "Kept in the headline FMR; most are one photo or one person under two labels.",
        "",
    ]
    dups = [(g.name, d) for g in (*result.groups, *result.lfw_groups) for d in g.pairs.near_duplicates]
    out += [f"- {name}: `{d.left}` ~ `{d.right}` (distance {d.distance:.4f})" for name, d in dups] or ["None."]
    if result.lfw_groups:
        out += [
            "",
            "## Identity-labelled groups (LFW): false non-matches",
            "",
            f"FNMR is given where a group has at least {MIN_MATED_PAIRS} mated pairs.",
            "",
            "| group | images | no face | mated pairs | FNMR [95% CI] | FMR [95% CI] |",
            "|---|---:|---:|---:|---|---|",
        ]
        for g in result.lfw_groups:
            fn = g.pairs.fnmr
            fnmr = _rate_cell(fn) if g.fnmr_reported else f"too few mated pairs ({fn.trials})"
            out.append(
                f"| {g.name} | {g.n_images} | {g.failed_to_detect.errors} | {fn.trials} | {fnmr} | "
                f"{_rate_cell(g.pairs.fmr)} |"
            )
    if result.extra:
        out += ["", "## Run", ""] + [f"- {k}: {v}" for k, v in sorted(result.extra.items())]
    return "\n".join(out) + "\n"


def _plot(result: DemographicsResult, path: Path) -> None:
    """Per-group FMR with CI error bars on a log axis; a zero-count group shows its upper limit only."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = result.groups
    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ys = np.arange(len(groups))
    for y, g in zip(ys, groups, strict=True):
        f = g.pairs.fmr
        if f.trials == 0:
            continue
        if f.errors > 0:
            p = f.errors / f.trials
            ax.errorbar([p], [y], xerr=[[p - f.lower], [f.upper - p]], fmt="o", color="C0", capsize=3)
        else:
            ax.plot([f.upper], [y], marker="<", color="C3", linestyle="none")
    ax.set_yticks(ys, [g.name for g in groups])
    ax.set_xscale("log")
    ax.set_xlabel("false-match rate (95% Clopper-Pearson; red: no false match, upper limit)")
    ax.set_title(f"FMR by group at {result.metric} distance <= {result.threshold:.4f}")
    ax.grid(True, which="both", axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_demographics_report(result: DemographicsResult, out_dir: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``fmr_by_group.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "chart": out_dir / "fmr_by_group.png"}
    paths["json"].write_text(json.dumps(_jsonable(result), indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(_markdown(result), encoding="utf-8")
    _plot(result, paths["chart"])
    return paths
