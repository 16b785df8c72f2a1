"""The one place configuration becomes runtime objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from streamproc.config import PipelineConfig
from streamproc.config_recognition import ArcFaceConfig, DlibResnetConfig, RecognitionConfig, SFaceConfig, YuNetConfig
from streamproc.errors import ConfigError, ModelError
from streamproc.fsutil import sha256_file
from streamproc.models.providers import create_session
from streamproc.models.registry import DLIB_RESNET, RETINAFACE, SFACE, YUNET, ModelStore
from streamproc.runtime.selfcheck import check_embedder
from streamproc.search.calibration import Threshold, load_calibration, shipped_calibration
from streamproc.stream.authorisation import check_authorisation
from streamproc.types import Frame
from streamproc.vision.detect import RetinaFaceDetector
from streamproc.vision.detect_yunet import YuNetDetector
from streamproc.vision.embed import OnnxEmbedder, embedder_spec
from streamproc.vision.faces import FaceAnalyzer
from streamproc.vision.quality import QualityGate

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from streamproc.records.audit import AuditLog
    from streamproc.runtime.pipeline import Pipeline


def model_store(config: RecognitionConfig) -> ModelStore:
    return ModelStore(config.models.cache_dir)


def build_detector(config: RecognitionConfig) -> RetinaFaceDetector | YuNetDetector:
    det = config.detector
    if det.model is not None:
        path = det.model
        if not path.is_file():
            raise ModelError(f"detector.model {path} does not exist")
        sha = sha256_file(path)
    else:
        spec = YUNET if isinstance(det, YuNetConfig) else RETINAFACE
        path, sha = model_store(config).path(spec, config.models.auto_prepare)
    session = create_session(path, config.runtime, "detector")
    if isinstance(det, YuNetConfig):
        return YuNetDetector(session, det, sha)
    return RetinaFaceDetector(session, det, sha)


def build_embedder(config: RecognitionConfig) -> OnnxEmbedder:
    emb = config.embedder
    if isinstance(emb, DlibResnetConfig | SFaceConfig) and emb.model is None:
        spec = SFACE if isinstance(emb, SFaceConfig) else DLIB_RESNET
        path, sha = model_store(config).path(spec, config.models.auto_prepare)
    else:
        assert emb.model is not None
        path = emb.model
        if not path.is_file():
            raise ModelError(f"embedder.model {path} does not exist")
        sha = sha256_file(path)
        pinned = emb.sha256 if isinstance(emb, ArcFaceConfig) else None
        if pinned is not None and sha != pinned:
            raise ModelError(f"embedder.model {path} has sha256 {sha[:16]}…, config pins {pinned[:16]}…")
    return OnnxEmbedder(create_session(path, config.runtime, "embedder"), embedder_spec(emb), sha)


def build_analyzer(config: RecognitionConfig) -> FaceAnalyzer:
    """Detector, embedder and quality gate; the embedder has passed its self-check."""
    detector, embedder = build_detector(config), build_embedder(config)
    check_embedder(detector, embedder)
    return FaceAnalyzer(detector=detector, embedder=embedder, quality=QualityGate(config.quality))


def resolve_threshold(config: PipelineConfig, embedder: OnnxEmbedder) -> Threshold:
    """The distance threshold the pipeline flags at: calibrated unless the config explicitly says otherwise."""
    policy = config.policy
    if policy.threshold is not None:
        if not policy.allow_uncalibrated:
            raise ConfigError(
                "policy.threshold is set but policy.allow_uncalibrated is false: an uncalibrated threshold "
                "has no known false-match rate; use a calibration file, or set allow_uncalibrated: true "
                "(every event is then marked uncalibrated)"
            )
        return Threshold(distance=policy.threshold, calibration=None, source="explicit (uncalibrated)", fmr_target=None)
    ident = embedder.identity
    if policy.calibration is not None:
        calibration, source = load_calibration(policy.calibration, ident, config.detector.type), policy.calibration.name
    else:
        shipped = shipped_calibration(ident, config.detector.type)
        if shipped is None:
            raise ConfigError(
                f"no calibration for {ident.kind} model {ident.model_sha256[:12]}: measure one with "
                "`streamproc evaluate verification --calibration-out FILE` and set policy.calibration"
            )
        calibration, source = shipped
    point = calibration.threshold_for(policy.target_fmr)
    return Threshold(
        distance=point.distance_threshold, calibration=calibration, source=source, fmr_target=policy.target_fmr
    )


def pipeline_detector_config(config: PipelineConfig) -> PipelineConfig:
    """The tracker extends tracks with low-score detections, so the detector must report them."""
    low = min(config.detector.score_threshold, config.tracker.low_score)
    detector = config.detector.model_copy(update={"score_threshold": low})
    return config.model_copy(update={"detector": detector})


def build_pipeline(
    config: PipelineConfig,
    registry: CollectorRegistry,
    on_frame: Callable[[str, Frame], None] | None = None,
    audit: AuditLog | None = None,
) -> Pipeline:
    """Everything `streamproc run` needs, validated before any stream starts (use policy first)."""
    check_authorisation(config)
    from streamproc.feed.event_feed import EventFeed
    from streamproc.metrics import PipelineMetrics
    from streamproc.runtime.pipeline import Pipeline
    from streamproc.search.watchlist_handle import WatchlistHandle

    embedder = build_embedder(config)
    threshold = resolve_threshold(config, embedder)
    detector = build_detector(pipeline_detector_config(config))
    check_embedder(detector, embedder)
    watchlist = WatchlistHandle(config.watchlist.path, embedder.identity, config.watchlist.reload_s)
    metrics = PipelineMetrics(registry)
    feed = None
    try:
        feed = EventFeed(config.events, metrics)
        return Pipeline(config, detector, embedder, watchlist, threshold, feed, metrics, on_frame, audit)
    except BaseException:
        if feed is not None:
            feed.close()
        watchlist.close()
        raise
