"""Which track rule ships? k-of-n on single shots vs a track template (mean of the shots' normalised embeddings),
alone or combined, and best vs mean of several enrolment templates, on mated and impostor tracks of LFW.

Tracks: 3 photos of one LFW person (persons with >= 5 photos: photos 3-5 after a seeded shuffle, photos 1-2
enrolled; persons with 3-4 photos: impostor tracks only). Galleries of G subjects: the track person's templates
(mated) plus random distractors (LFW persons with 1-2 photos, first photo; UTKFace faces, byte duplicates
dropped), or distractors only (impostor), drawn anew for every track. Rules are compared at equal impostor-track
rates (thresholds read off the impostor tracks themselves: for comparing rules, not for claiming a rate) and at
the shipped per-comparison thresholds. LFW photos carry no stream quality score: the template weights are equal.
Last line (one enrolment template per subject, gallery 2,500, thresholds at 1% of impostor tracks flagged):
``tar_2of3=<x> tar_template=<x> tar_combined=<x> impostor_tracks=<n> mated_tracks=<n> gallery=2500``.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamproc.cli.common import eval_cache, recognition_config
from streamproc.eval.embedding import embed_images
from streamproc.runtime.build import build_analyzer
from streamproc.search.calibration import shipped_calibration

Vec = NDArray[np.float64]
RULES = ("2of3", "template", "template+2of3")


def _order(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}/{key}".encode()).digest()


def _unit(v: Vec) -> Vec:
    return np.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True))


def track_scores(shots: Vec, gallery: list[Vec], scoring: str) -> dict[str, tuple[float, int]]:
    """Per rule: (score, rank-1 subject index) of one track of (n, d) unit shots against subjects' templates.

    ``gallery[s]`` is (m, d) unit templates of subject s; a subject's distance is its best template's
    (``best``) or the distance to the normalised mean of its templates (``mean``)."""
    if scoring == "best":
        shot_d = np.stack([(1.0 - shots @ g.T).min(axis=1) for g in gallery], axis=1)  # (n, G)
    else:
        means = _unit(np.stack([g.mean(axis=0) for g in gallery]))
        shot_d = 1.0 - shots @ means.T
    # k-of-n: a subject's score is the 2nd-best distance among shots that rank it first (inf if < 2 such shots).
    top = shot_d.argmin(axis=1)
    kofn = np.full(shot_d.shape[1], np.inf)
    for s in set(top.tolist()):
        d = np.sort(shot_d[top == s, s])
        if len(d) >= 2:
            kofn[s] = d[1]
    template = _unit(shots.mean(axis=0))
    by_template = [(1.0 - g @ template).min() for g in gallery] if scoring == "best" else 1.0 - means @ template
    tmpl_d = np.asarray(by_template, dtype=np.float64)
    both = np.maximum(kofn, tmpl_d)
    out = {}
    for rule, d in zip(RULES, (kofn, tmpl_d, both), strict=True):
        s = int(np.argmin(d))
        out[rule] = (float(d[s]), s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", default="100,1000,2500,10000")
    args = parser.parse_args()
    cfg = recognition_config(None)
    analyzer = build_analyzer(cfg)
    lfw = args.data / "identity" / "lfw"
    persons = {d.name: sorted(d.glob("*.jpg")) for d in sorted(lfw.iterdir()) if d.is_dir()}
    utk, seen = [], set()
    for f in sorted((args.data / "demographic" / "utkface").iterdir()):
        h = hashlib.sha256(f.read_bytes()).digest()
        if h not in seen:
            seen.add(h)
            utk.append(f)
    paths = [f for fs in persons.values() for f in fs] + utk
    cache = eval_cache(analyzer, False, cfg.models.cache_dir)
    try:
        vecs = dict(zip(paths, embed_images(paths, analyzer, cache), strict=True))
    finally:
        if cache is not None:
            cache.close()
    by_person: dict[str, list[Vec]] = {}
    for name, fs in persons.items():
        vs = [np.asarray(vecs[f], np.float64) for f in sorted(fs, key=lambda f: _order(args.seed, str(f.name)))]
        by_person[name] = [v for v in vs if v is not None]
    mated = {p: vs for p, vs in by_person.items() if len(vs) >= 5}
    impostor_only = {p: vs for p, vs in by_person.items() if 3 <= len(vs) < 5}
    distractors = [np.asarray(vs[0]) for p, vs in by_person.items() if 1 <= len(vs) < 3]
    distractors += [np.asarray(vecs[f], np.float64) for f in utk if vecs[f] is not None]
    pool = _unit(np.stack(distractors))
    tracks = [(p, _unit(np.stack(vs[2:5]))) for p, vs in mated.items()]
    tracks += [(p, _unit(np.stack(vs[:3]))) for p, vs in impostor_only.items()]
    print(f"tracks: {len(mated)} mated (persons with >= 5 photos), {len(tracks)} impostor; pool {len(pool)}")
    cal = shipped_calibration(analyzer.embedder.identity, analyzer.detector.kind)
    points = [(p.fmr_target, p.distance_threshold) for p in cal[0].points] if cal else []
    rng = np.random.default_rng(args.seed)
    headline: dict[str, float] = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        if size > len(pool):
            print(f"gallery {size}: cannot be measured (the public data has {len(pool)} distractor identities)")
            continue
        for n_templates, scoring in ((1, "best"), (2, "best"), (2, "mean")):
            imp: dict[str, list[float]] = {r: [] for r in RULES}
            mat: dict[str, list[tuple[float, bool]]] = {r: [] for r in RULES}
            for p, shots in tracks:
                picks = pool[rng.choice(len(pool), size=size, replace=False)]
                gal = [g[None, :] for g in picks]
                for rule, (d, _) in track_scores(shots, gal, scoring).items():
                    imp[rule].append(d)
                if p in mated:
                    own = _unit(np.stack(mated[p][:n_templates]))
                    for rule, (d, s) in track_scores(shots, [own, *gal[1:]], scoring).items():
                        mat[rule].append((d, s == 0))
            label = f"G={size} templates={n_templates} {scoring}"
            for rule in RULES:
                i = np.sort(np.array(imp[rule]))
                m = mat[rule]
                row = []
                for name, t in [("0 flagged", i[0] - 1e-9), ("1% flagged", i[int(0.01 * len(i))] - 1e-9)]:
                    tar = sum(ok and d <= t for d, ok in m) / len(m)
                    row.append(f"TAR@{name} {tar:.3f}")
                    if name == "1% flagged" and size == 2500 and n_templates == 1:
                        headline[rule] = tar
                for fmr, t in points:
                    tar = sum(ok and d <= t for d, ok in m) / len(m)
                    row.append(f"FMR{fmr:g}: {int((i <= t).sum())}/{len(i)} flagged TAR {tar:.3f}")
                print(f"{label:28s} {rule:14s} " + "; ".join(row), flush=True)
    print(
        f"tar_2of3={headline.get('2of3', float('nan')):.3f} tar_template={headline.get('template', float('nan')):.3f} "
        f"tar_combined={headline.get('template+2of3', float('nan')):.3f} impostor_tracks={len(tracks)} "
        f"mated_tracks={len(mated)} gallery=2500"
    )


if __name__ == "__main__":
    main()
