"""--keep-subject: find the tracks of one enrolled subject so they stay visible (authorised jobs only).

This is the only part of redaction that recognises anyone, and it runs only when a job names a subject and
an authorisation reference. It embeds a few of the best detections of each track, compares them with the
subject's templates in the watchlist, and returns the track ids whose shots match. Embeddings live in memory
for the duration of the call and are never written.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamproc.config_recognition import DlibResnetConfig, ModelsConfig, RuntimeConfig, SFaceConfig
from streamproc.errors import ConfigError, WatchlistError
from streamproc.models.providers import create_session
from streamproc.models.registry import DLIB_RESNET, SFACE, ModelStore
from streamproc.redact.analyse import Analysis, decode_bgr, probe
from streamproc.redact.settings import KeepSubjectConfig
from streamproc.search.calibration import shipped_calibration
from streamproc.search.watchlist import Watchlist
from streamproc.vision.align import align
from streamproc.vision.embed import OnnxEmbedder, embedder_spec


@dataclass(frozen=True)
class KeepRequest:
    """Who stays visible and on whose authority (both are recorded in the audit log and the report)."""

    subject_id: str
    watchlist: Path
    authorisation: str

    def __post_init__(self) -> None:
        if len(self.authorisation.strip()) < 3:
            raise ConfigError("--keep-subject needs --authorisation REF (a case or approval reference)")
        if not self.subject_id.strip():
            raise ConfigError("--keep-subject needs a subject id")


@dataclass(frozen=True)
class KeepDecision:
    subject_id: str
    authorisation: str
    threshold: float
    tracks_kept: tuple[int, ...]
    tracks_compared: int


def watchlist_embedder(watchlist: Path, models: ModelsConfig, runtime: RuntimeConfig) -> OnnxEmbedder:
    """The built-in embedder the watchlist's templates were made with: SFace (the project's default) or dlib
    ResNet. Another model's templates are refused (their embedder is not something redaction can rebuild)."""
    with Watchlist.open(watchlist) as wl:
        kind = wl.embedder.kind
    if kind in ("sface", "dlib-resnet"):
        emb: SFaceConfig | DlibResnetConfig = SFaceConfig() if kind == "sface" else DlibResnetConfig()
        model = SFACE if kind == "sface" else DLIB_RESNET
    else:
        raise WatchlistError(
            f"{watchlist}: templates made with the {kind!r} embedder; --keep-subject needs a watchlist enrolled "
            "with a built-in embedder (sface, the default, or dlib-resnet)"
        )
    path, sha = ModelStore(models.cache_dir).path(model, models.auto_prepare)
    return OnnxEmbedder(create_session(path, runtime, "embedder"), embedder_spec(emb), sha)


def find_subject_tracks(
    clip: Path, analysis: Analysis, request: KeepRequest, embedder: OnnxEmbedder, config: KeepSubjectConfig
) -> KeepDecision:
    """Track ids of ``request.subject_id`` in ``analysis`` (a track needs ``min_votes`` matching shots)."""
    with Watchlist.open(request.watchlist, embedder.identity) as wl:
        if request.subject_id not in {s.subject_id for s in wl.subjects()}:
            raise WatchlistError(f"subject {request.subject_id!r} is not enrolled in {request.watchlist}")
        threshold = config.max_distance
        if threshold is None:
            shipped = shipped_calibration(embedder.identity, "retinaface")  # redaction always detects with it
            if shipped is None:
                raise ConfigError("no shipped calibration for this embedder: set keep_subject.max_distance")
            threshold = shipped[0].threshold_for(config.target_fmr).distance_threshold
        # The best few detections of every track, by detector score: (frame, row) pairs.
        shots: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
        for i, f in enumerate(analysis.frames):
            for row, (tid, score) in enumerate(zip(f.track_ids.tolist(), f.scores.tolist(), strict=True)):
                if tid:
                    shots[tid].append((score, i, row))
        wanted: dict[int, list[tuple[int, int]]] = defaultdict(list)  # frame -> [(row, track)]
        for tid, rows in shots.items():
            for _, i, row in sorted(rows, reverse=True)[: config.shots]:
                wanted[i].append((row, tid))
        chips, owners = [], []
        for i, (_, image) in enumerate(decode_bgr(clip, probe(clip))):
            for row, tid in wanted.get(i, []):
                chips.append(align(image, analysis.frames[i].landmarks[row], embedder.chip_template))
                owners.append(tid)
        votes: dict[int, int] = defaultdict(int)
        if chips:
            vectors = embedder.embed(np.stack(chips))
            for tid, hits in zip(owners, wl.search(vectors, k=5), strict=True):
                if any(c.subject_id == request.subject_id and c.distance <= threshold for c in hits):
                    votes[tid] += 1
            del vectors
        kept = tuple(sorted(t for t, v in votes.items() if v >= min(config.min_votes, len(shots[t]))))
    return KeepDecision(request.subject_id, request.authorisation, float(threshold), kept, len(shots))
