"""One redaction job per clip: analyse, (optionally) keep an authorised subject, plan, render, report, audit.

The original is opened read-only and never written; the output, its report and contact sheet are each
written under a temporary name and renamed when complete. One ``redaction`` audit record per finished job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamproc import __version__
from streamproc.config_recognition import RetinaFaceConfig, YuNetConfig
from streamproc.errors import ConfigError, SourceError
from streamproc.fsutil import sha256_file
from streamproc.models.providers import create_session
from streamproc.models.registry import RETINAFACE, YUNET, ModelStore
from streamproc.records.audit import AuditLog
from streamproc.redact.analyse import Detector, Detectors, analyse, probe
from streamproc.redact.plan import plan_regions
from streamproc.redact.render import render
from streamproc.redact.report import lowest_regions, write_contact_sheet, write_json
from streamproc.redact.settings import Method, RedactConfig
from streamproc.vision.detect import RetinaFaceDetector
from streamproc.vision.detect_yunet import YuNetDetector

if TYPE_CHECKING:  # --keep-subject only: recognition (0.05 s of imports) stays out of plain redaction
    from streamproc.redact.keep import KeepDecision, KeepRequest

Progress = Callable[[str, int, int], None]
"""Called as ``(phase, frames done, frames in the clip)``; phase is ``detect`` or ``render``."""


def build_detectors(config: RedactConfig) -> Detectors:
    """``detection.detector`` with redaction's low score floor: at the clip's own size plus, for adaptive
    upscaling, the same session on frames upscaled to ``detection.min_side`` (upscale ``always``: that pass alone)."""
    d = config.detection
    floor = min(d.low_score, config.regions.fallback_floor) if config.regions.fallback_heads else d.low_score
    common = {
        "score_threshold": floor,
        "nms_iou": d.nms_iou,
        "min_face_px": d.min_face_px,
        "max_side": d.max_side,
        "min_side": d.min_side,
        "max_batch": d.max_batch,
    }
    store = ModelStore(config.models.cache_dir)
    native: Detector
    upscaled: Detector
    if d.detector == "yunet":
        path, sha = store.path(YUNET, config.models.auto_prepare)
        session = create_session(path, config.runtime, "detector")
        yunet = YuNetConfig.model_validate(common)
        upscaled = YuNetDetector(session, yunet, sha)
        native = YuNetDetector(session, yunet.model_copy(update={"min_side": None}), sha)
    else:
        path, sha = store.path(RETINAFACE, config.models.auto_prepare)
        session = create_session(path, config.runtime, "detector")
        retina = RetinaFaceConfig.model_validate(common)
        upscaled = RetinaFaceDetector(session, retina, sha)
        native = RetinaFaceDetector(session, retina.model_copy(update={"min_side": None}), sha)
    if d.upscale == "always" or d.min_side is None:
        return Detectors(upscaled)
    return Detectors(native, upscaled)


def output_paths(clip: Path, out_dir: Path, suffix: str) -> tuple[Path, Path, Path]:
    """(redacted clip, JSON report, contact-sheet PNG) for ``clip`` in ``out_dir``."""
    base = clip.name[: -len(clip.suffix)] if clip.suffix else clip.name
    return out_dir / f"{base}{suffix}", out_dir / f"{base}.redaction.json", out_dir / f"{base}.contact.png"


@dataclass(frozen=True)
class JobResult:
    output: Path
    report: Path
    contact_sheet: Path
    frames: int
    regions: int
    tracks: int
    interpolation_only_frames: int
    seconds: float


@dataclass(frozen=True)
class Job:
    """One clip to redact. ``operator`` and ``reason`` go into the audit record and the report."""

    clip: Path
    out_dir: Path
    method: Method
    operator: str
    reason: str
    keep: KeepRequest | None = None
    overwrite: bool = False


def check_job(job: Job, suffix: str) -> None:
    """Refuse, before any work, what would overwrite the original or an earlier release."""
    if not job.clip.is_file():
        raise SourceError(f"{job.clip}: no such file")
    for path in output_paths(job.clip, job.out_dir, suffix):
        if path.exists() and path.resolve() == job.clip.resolve():
            raise ConfigError(f"{path} is the input itself; choose another --out")
        if path.exists() and not job.overwrite:
            raise ConfigError(f"{path} already exists; remove it or pass --overwrite")


def run_job(
    job: Job,
    config: RedactConfig,
    detectors: Detectors,
    audit: AuditLog,
    progress: Progress | None = None,
) -> JobResult:
    """Redact one clip; nothing is left under the final names if it fails."""
    check_job(job, config.render.suffix)
    started = time.perf_counter()
    input_sha = sha256_file(job.clip)
    total = probe(job.clip).declared_frames
    # Before the long first pass, so a watchlist that cannot be used is refused at once.
    embedder = None
    if job.keep is not None:
        from streamproc.redact.keep import watchlist_embedder

        if config.detection.detector != "retinaface":  # the subject's shots need the calibrated detector
            raise ConfigError("--keep-subject needs detection.detector: retinaface (the shipped calibration's)")

        embedder = watchlist_embedder(job.keep.watchlist, config.models, config.runtime)
    analysis = analyse(
        job.clip,
        detectors,
        config.detection,
        config.tracking,
        None if progress is None else lambda k: progress("detect", k, total),
    )
    n = len(analysis.frames)
    decision: KeepDecision | None = None
    if job.keep is not None and embedder is not None:
        from streamproc.redact.keep import find_subject_tracks

        decision = find_subject_tracks(job.clip, analysis, job.keep, embedder, config.keep_subject)
    del embedder
    plan = plan_regions(
        analysis,
        config.detection,
        config.tracking,
        config.regions,
        frozenset(decision.tracks_kept) if decision else frozenset(),
    )
    video, report_path, sheet = output_paths(job.clip, job.out_dir, config.render.suffix)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    render(
        job.clip,
        video,
        plan,
        config.render,
        job.method,
        None if progress is None else lambda k: progress("render", k, n),
    )
    try:
        decoded = write_contact_sheet(video, sheet, plan, config.report)
        if decoded != n:
            raise SourceError(f"{video}: the written clip decodes to {decoded} frames, expected {n}")
        output_sha = sha256_file(video)
        seconds = time.perf_counter() - started
        held_only = plan.interpolation_only_frames()
        times = [f.t_s for f in analysis.frames]
        regions = sum(len(rs) for rs in plan.regions)
        settings = {"method": job.method, **config.model_dump(mode="json", exclude={"audit", "models"})}
        keep = (
            None
            if decision is None
            else {
                "subject_id": decision.subject_id,
                "authorisation": decision.authorisation,
                "max_distance": decision.threshold,
                "tracks_kept": list(decision.tracks_kept),
                "tracks_compared": decision.tracks_compared,
            }
        )
        info = analysis.info
        report: dict[str, Any] = {
            "tool": f"streamproc {__version__} redact",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "operator": job.operator,
            "reason": job.reason,
            "input": {
                "path": str(job.clip),
                "sha256": input_sha,
                "width": info.width,
                "height": info.height,
                "fps": round(info.fps, 4),
                "frames": n,
                "duration_s": round(info.duration_s, 3),
                "audio_streams": info.audio_streams,
            },
            "output": {"path": str(video), "sha256": output_sha, "frames": decoded, "contact_sheet": sheet.name},
            "settings": settings,
            "keep_subject": keep,
            "faces": {
                "regions_hidden": regions,
                "by_kind": plan.counts,
                "frames_with_faces": sum(1 for rs in plan.regions if rs),
                "max_faces_in_a_frame": max(plan.faces_per_frame(), default=0),
                "tracks": plan.tracks,
            },
            "upscaled_frames": analysis.upscaled_frames,
            "interpolation_only_frames": {
                "count": len(held_only),
                "frames": held_only[:500],
                "times_s": [round(times[i], 3) for i in held_only[:500]],
            },
            "lowest_confidence_regions": lowest_regions(plan, times, config.report.lowest_regions),
            "seconds": round(seconds, 2),
            "fps": round(n / seconds, 2) if seconds > 0 else None,
        }
        write_json(report_path, report)
        audit.append(
            job.operator,
            "redaction",
            subject_id=None if decision is None else decision.subject_id,
            reason=job.reason,
            details={
                "input": str(job.clip),
                "input_sha256": input_sha,
                "output": str(video),
                "output_sha256": output_sha,
                "report": report_path.name,
                "frames": n,
                "regions_hidden": regions,
                "tracks": plan.tracks,
                "method": job.method,
                "keep_subject": keep,
                "settings": settings,
            },
        )
    except BaseException:
        for path in (video, report_path, sheet):
            path.unlink(missing_ok=True)
        raise
    return JobResult(video, report_path, sheet, n, regions, plan.tracks, len(held_only), seconds)


def default_audit_dir(configured: Path | None) -> Path:
    """The configured directory, else $XDG_STATE_HOME/streamproc/audit (never the release folder)."""
    if configured is not None:
        return configured
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "streamproc" / "audit"
