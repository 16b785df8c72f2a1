"""Configuration as data: pydantic models that mirror the YAML 1:1.

Nothing here builds runtime objects; :mod:`streamproc.build` does that in one place. Every model forbids
unknown keys so a typo is an error with its key path, never a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from streamproc.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelsConfig(_Strict):
    cache_dir: Path | None = Field(
        None,
        description="Where built default models live. Default: $STREAMPROC_CACHE_DIR, else "
        "$XDG_CACHE_HOME/streamproc/models, else ~/.cache/streamproc/models.",
    )
    auto_prepare: bool = Field(
        True, description="Build missing default models on first use (offline, from installed packages)."
    )


class RuntimeConfig(_Strict):
    device: Literal["auto", "cpu", "cuda", "tensorrt"] = Field(
        "auto",
        description="onnxruntime execution provider. 'auto' uses CUDA when onnxruntime-gpu and a GPU are "
        "present, else CPU. 'cuda'/'tensorrt' demand that provider and fail at start-up when it is missing.",
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="Intra-op CPU threads per model session; default: onnxruntime's."
    )


class RetinaFaceConfig(_Strict):
    type: Literal["retinaface"] = "retinaface"
    model: Path | None = Field(None, description="ONNX file; default: the built-in RetinaFace MobileNet-0.25 (MIT).")
    score_threshold: float = Field(0.6, gt=0.0, lt=1.0, description="Minimum face score kept.")
    nms_iou: float = Field(0.4, gt=0.0, lt=1.0, description="IoU above which overlapping boxes merge.")
    min_face_px: float = Field(
        12.0, ge=0.0, le=4096, description="Drop faces whose shorter box side is below this (pixels)."
    )
    max_side: int | None = Field(
        1280,
        ge=64,
        le=8192,
        description="Input size policy: downscale images whose longer side exceeds this before detection "
        "(boxes are mapped back; faces larger than ~500 px, beyond the largest anchor, are found again, and "
        "1080p runs at 720p cost). None: detect at native size.",
    )
    min_side: int | None = Field(
        None,
        ge=64,
        le=8192,
        description="Upscale images whose shorter side is below this before detection (small stills).",
    )


def _type_or(default: str) -> Callable[[Any], str]:
    """Discriminator that reads ``type`` and falls back to the default kind when the key is omitted."""

    def kind(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get("type", default))
        return str(getattr(value, "type", default))

    return kind


# One detector kind today; a union with a ``type`` discriminator (as for embedders) when a second lands.
DetectorConfig = RetinaFaceConfig


class DlibResnetConfig(_Strict):
    type: Literal["dlib-resnet"] = "dlib-resnet"
    model: Path | None = Field(
        None, description="ONNX file; default: dlib ResNet v1 converted by `streamproc models prepare`."
    )
    max_batch: int = Field(32, ge=1, le=1024, description="Largest batch sent to the model at once.")
    flip_average: bool = Field(
        True, description="Average the descriptors of each chip and its mirror (more robust, 2x cost)."
    )


class ArcFaceConfig(_Strict):
    type: Literal["arcface"] = "arcface"
    model: Path = Field(description="Your ONNX model on a 112x112 chip (standard ArcFace 5-point template).")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Pin the model file: refuse it if the hash differs."
    )
    input_name: str | None = Field(None, description="Model input to feed; default: its first input.")
    color: Literal["rgb", "bgr"] = Field("rgb", description="Channel order the model expects.")
    mean: float = Field(127.5, description="Subtracted from every pixel value (0..255).")
    std: float = Field(128.0, gt=0.0, description="Divides every pixel value after the mean.")
    output_dim: int | None = Field(None, ge=2, le=8192, description="Descriptor length; default: read from the model.")
    max_batch: int = Field(
        32, ge=1, le=1024, description="Largest batch; models with a fixed batch of 1 run one chip at a time."
    )
    flip_average: bool = Field(
        True, description="Average the descriptors of each chip and its mirror (more robust, 2x cost)."
    )


EmbedderConfig = Annotated[
    Annotated[DlibResnetConfig, Tag("dlib-resnet")] | Annotated[ArcFaceConfig, Tag("arcface")],
    Discriminator(_type_or("dlib-resnet")),
]


class QualityConfig(_Strict):
    """Gates a face must pass to be embedded (enrolment) or kept as a best shot (streams)."""

    min_face_px: float = Field(40.0, ge=0.0, description="Shorter box side in pixels.")
    min_sharpness: float = Field(
        25.0, ge=0.0, description="Variance of the Laplacian of the grey 112-px chip (blur measure)."
    )
    max_yaw: float = Field(
        0.6, gt=0.0, description="Nose offset from the eye midline over inter-ocular distance (0 = frontal)."
    )
    max_roll_deg: float = Field(45.0, gt=0.0, le=180.0, description="Eye-line tilt in degrees.")
    min_detector_score: float = Field(0.8, ge=0.0, le=1.0, description="Detector confidence.")


class RecognitionConfig(_Strict):
    """Everything needed to turn images into comparable descriptors."""

    models: ModelsConfig = ModelsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    detector: DetectorConfig = RetinaFaceConfig()
    embedder: EmbedderConfig = DlibResnetConfig()
    quality: QualityConfig = QualityConfig()


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, each with its dotted key path."""
    lines = []
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<root>"
        lines.append(f"{source}: {path}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> RecognitionConfig:
    try:
        return RecognitionConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: Path) -> RecognitionConfig:
    """Read a YAML file; every error names the file and key path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return parse_config(data, str(path))
