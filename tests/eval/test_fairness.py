"""Fair-map measurement: the label-free split, cross-fitting, and what the report says, on synthetic faces."""

from __future__ import annotations

import re

import numpy as np

from streamproc.eval.fairness import Face, crossfit, folds, headline, summary_lines

DIM = 16


def _population(seed: int) -> tuple[list[Face], np.ndarray]:
    """Two unlabelled-identity groups (one tight, one spread) and 60 identity-labelled persons of 4 photos."""
    rng = np.random.default_rng(seed)
    faces, vecs = [], []
    for g, spread in enumerate((0.35, 0.7)):
        centre = np.zeros(DIM, np.float32)
        centre[g] = 1.0
        for k in range(160):
            faces.append(Face(f"utk/{g}_{k}.jpg", f"group{g}", "utkface", f"utk/{g}_{k}.jpg"))
            vecs.append(centre + spread * rng.standard_normal(DIM))
    for p in range(60):
        anchor = rng.standard_normal(DIM)
        for k in range(4):
            faces.append(Face(f"lfw/p{p}/{k}.jpg", "lfw:x/male", "lfw", f"p{p}"))
            vecs.append(anchor + 0.3 * rng.standard_normal(DIM))
    x = np.asarray(vecs, np.float32)
    return faces, x / np.linalg.norm(x, axis=1, keepdims=True)


def test_folds_keep_persons_and_near_duplicates_together() -> None:
    faces, x = _population(0)
    x[1] = x[0]  # a re-saved copy of one photo under another name
    fold = folds(faces, x)
    assert fold[0] == fold[1]
    by_person: dict[str, set[int]] = {}
    for f, k in zip(faces, fold, strict=True):
        by_person.setdefault(f.person, set()).add(int(k))
    assert all(len(v) == 1 for v in by_person.values())
    assert 0.3 < fold.mean() < 0.7


def test_crossfit_reports_both_sides_and_the_headline() -> None:
    faces, x = _population(1)
    result = crossfit(faces, x, "cosine", 1e-2, n_clusters=4, lookalike=0.2)
    assert [g.name for g in result.groups] == ["group0", "group1"]
    raw, fair = result.groups[0].raw, result.groups[0].fair
    assert raw.trials == fair.trials > 0 and raw.errors > fair.errors  # the tight group is helped
    assert result.worst_x(True) < result.worst_x(False)
    assert result.n_genuine > 0 and result.tar and 0.0 <= result.tar[0].fair <= 1.0
    assert re.fullmatch(
        r"max_min_fmr_ratio=(\d+\.\d{3}|not_estimable) groups=2 worst_group_fmr_x=\d+\.\d{3}", headline(result)
    )
    text = "\n".join(summary_lines(result))
    assert "2-fold cross-fit" in text and "TAR at global FMR" in text and "worst group" in text
