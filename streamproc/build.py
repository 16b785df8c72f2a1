"""The one place configuration becomes runtime objects."""

from __future__ import annotations

from streamproc.align import ARCFACE_112, DLIB_150
from streamproc.config import ArcFaceConfig, DlibResnetConfig, RecognitionConfig
from streamproc.detect import RetinaFaceDetector
from streamproc.embed import EmbedderSpec, OnnxEmbedder
from streamproc.errors import ModelError
from streamproc.faces import FaceAnalyzer
from streamproc.fsutil import sha256_file
from streamproc.models.registry import DLIB_RESNET, RETINAFACE, ModelStore
from streamproc.quality import QualityGate
from streamproc.runtime import create_session


def model_store(config: RecognitionConfig) -> ModelStore:
    return ModelStore(config.models.cache_dir)


def build_detector(config: RecognitionConfig) -> RetinaFaceDetector:
    det = config.detector
    if det.model is not None:
        path = det.model
        if not path.is_file():
            raise ModelError(f"detector.model {path} does not exist")
        sha = sha256_file(path)
    else:
        path, sha = model_store(config).path(RETINAFACE, config.models.auto_prepare)
    return RetinaFaceDetector(create_session(path, config.runtime, "detector"), det, sha)


def embedder_spec(config: DlibResnetConfig | ArcFaceConfig) -> EmbedderSpec:
    if isinstance(config, DlibResnetConfig):
        # Mean subtraction and dlib's 1/256 scaling are inside the converted graph.
        return EmbedderSpec(
            kind="dlib-resnet",
            template=DLIB_150,
            color="rgb",
            mean=0.0,
            std=1.0,
            normalize=False,
            metric="l2",
            max_batch=config.max_batch,
            flip_average=config.flip_average,
        )
    return EmbedderSpec(
        kind="arcface",
        template=ARCFACE_112,
        color=config.color,
        mean=config.mean,
        std=config.std,
        normalize=True,
        metric="cosine",
        max_batch=config.max_batch,
        flip_average=config.flip_average,
        input_name=config.input_name,
        output_dim=config.output_dim,
    )


def build_embedder(config: RecognitionConfig) -> OnnxEmbedder:
    emb = config.embedder
    if isinstance(emb, DlibResnetConfig) and emb.model is None:
        path, sha = model_store(config).path(DLIB_RESNET, config.models.auto_prepare)
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
    return FaceAnalyzer(
        detector=build_detector(config),
        embedder=build_embedder(config),
        quality=QualityGate(config.quality),
    )
