"""Recognition settings as data: the model cache, the onnxruntime runtime, the detector, the embedder, the
quality gate and the face tracker (the YAML sections every command that turns images or video into faces
reads: the pipeline, enrolment, evaluation, redaction).

Shared vocabulary beside :mod:`streamproc.config`, which adds the pipeline sections (sources, watchlist, events,
...) and reads YAML files. Every model forbids unknown keys (:class:`StrictConfig`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


class StrictConfig(BaseModel):
    """Base of every config section: unknown keys are errors (a typo names its key path), values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelsConfig(StrictConfig):
    cache_dir: Path | None = Field(
        None,
        description="Where built default models live. Default: $STREAMPROC_CACHE_DIR, else "
        "$XDG_CACHE_HOME/streamproc/models, else ~/.cache/streamproc/models.",
    )
    auto_prepare: bool = Field(
        True, description="Build missing default models on first use (offline, from installed packages)."
    )


class RuntimeConfig(StrictConfig):
    device: Literal["auto", "cpu", "cuda", "tensorrt"] = Field(
        "auto",
        description="onnxruntime execution provider. 'auto' uses CUDA when onnxruntime-gpu and a GPU are "
        "present, else CPU. 'cuda'/'tensorrt' demand that provider and fail at start-up when it is missing.",
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="Intra-op CPU threads per model session; default: onnxruntime's."
    )
    allow_spinning: bool = Field(
        False,
        description="Let onnxruntime's idle worker threads spin: lower latency for a lone model, but it "
        "starves the decode and embed threads sharing the cores.",
    )
    precision: Literal["fp32", "fp16"] = Field(
        "fp32",
        description="GPU arithmetic: fp16 enables TensorRT's FP16 kernels (use only where the calibration was "
        "measured at fp16: thresholds move with precision). Ignored on CPU.",
    )


class ScheduleConfig(StrictConfig):
    """``detector.schedule``: streams detect in regions of each frame (windows around live tracks, a downscaled
    whole frame every few frames, native tiles in turn) instead of the whole frame every frame; see
    :mod:`streamproc.stream.schedule`."""

    enabled: bool = Field(
        False,
        description="Use the schedule (windows + downscaled whole frame + native tiles); off: whole frame "
        "every frame at detector.max_side.",
    )
    full_side: int = Field(640, ge=64, le=8192, description="Longer side of the downscaled whole-frame pass.")
    full_face_px: float = Field(
        24.0,
        ge=0.0,
        le=1024.0,
        description="A whole-frame pass that shows a face of quality.min_face_px at this many network pixels "
        "finds every face worth embedding (RetinaFace finds 96% of faces from 24 px up); where it costs no more "
        "than the full_side pass plus the native tiles it replaces both (640x360: 384x216; 1280x720: 768x432, "
        "no tiles). 0: full_side and the tiles only.",
    )
    interval: int = Field(3, ge=1, le=100, description="Whole-frame pass every this many frames (at least).")
    max_interval: int = Field(8, ge=1, le=100, description="Longest interval the load controller may stretch to.")
    window_px: int = Field(96, ge=32, le=1024, description="Network size of the window around each live track.")
    window_context: float = Field(2.0, ge=1.2, le=8.0, description="Window side over the track box's longer side.")
    max_windows: int = Field(24, ge=0, le=256, description="At most this many track windows a frame (the rest rotate).")
    window_stride: int = Field(
        2,
        ge=1,
        le=30,
        description="A confirmed track matched on each of the last window_stride - 1 frames gets no window on "
        "this one (1: a window every frame); new tracks get one every frame until confirmed.",
    )
    small_face_px: float = Field(
        80.0,
        ge=0.0,
        le=1024.0,
        description="Tracks whose face (longer side, frame pixels) is below this, and whose shorter side is at "
        "least 3/4 of quality.min_face_px, get a native-size window of small_window_px instead of the "
        "window_px one, in layouts with native tiles (1080p and up): a soft small face the downscaled window "
        "misses stays tracked between tile visits (0: none).",
    )
    small_window_px: int = Field(
        192, ge=32, le=1024, description="Side of the native-size window around a small face (frame pixels)."
    )
    overlap_windows: bool = Field(
        True,
        description="Each pair of live tracks whose boxes overlap gets a native region of a tile's size around "
        "it on every frame, in layouts with tiles (1080p and up): a face half hidden behind a nearer one is "
        "found only at native size with its surroundings. Load takes them away first, before small_face_px.",
    )
    tile_px: int = Field(640, ge=64, le=4096, description="Tile width at native size (height: 9/16 of it, x32).")
    tile_overlap_px: int = Field(64, ge=0, le=1024, description="Neighbouring tiles overlap by at least this much.")
    tile_stride: int = Field(2, ge=1, le=1000, description="One native tile every this many frames (at least).")
    max_tile_cycle_s: float = Field(
        4.0, gt=0.0, le=600.0, description="Longest time the controller may take to cover the frame natively."
    )
    budget: float = Field(
        0.8, gt=0.0, le=1.0, description="Share of the frame period processing may use before the schedule coarsens."
    )
    adapt_files: bool = Field(
        False,
        description="Files read as fast as possible (not `realtime`) coarsen under load too: faster through dense "
        "crowds, but fewer faces found. false: a file keeps the configured schedule however long it takes "
        "(nothing live falls behind).",
    )

    @model_validator(mode="after")
    def _interval_range(self) -> ScheduleConfig:
        if self.max_interval < self.interval:
            raise ValueError(f"max_interval ({self.max_interval}) must not be below interval ({self.interval})")
        return self


class DetectorSettings(StrictConfig):
    """What every detector kind shares (the stream front, the schedule and the tracker read these)."""

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
    max_batch: int = Field(
        4,
        ge=1,
        le=64,
        description="Streams detect up to this many frames per network call, taking only frames already "
        "waiting in the buffer (never waiting for more): ~9 ms instead of ~13 ms a 640x360 frame on 2 cores.",
    )
    schedule: ScheduleConfig = Field(
        ScheduleConfig(), description="Streams only: which regions of each frame to detect in (real time at 1080p)."
    )


class RetinaFaceConfig(DetectorSettings):
    type: Literal["retinaface"] = "retinaface"
    model: Path | None = Field(None, description="ONNX file; default: the built-in RetinaFace MobileNet-0.25 (MIT).")


class YuNetConfig(DetectorSettings):
    """OpenCV Zoo's YuNet 2023mar (MIT), as built by `streamproc models prepare`: faster than RetinaFace at the same
    input size, documented for faces of ~10-300 px (see docs/models.md for the measured trade-off)."""

    type: Literal["yunet"] = "yunet"
    model: Path | None = Field(
        None, description="ONNX file; default: YuNet 2023mar converted to fp32 by `streamproc models prepare`."
    )
    nms_iou: float = Field(0.3, gt=0.0, lt=1.0, description="IoU above which overlapping boxes merge.")


def _type_or(default: str) -> Callable[[Any], str]:
    """Discriminator that reads ``type`` and falls back to the default kind when the key is omitted."""

    def kind(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get("type", default))
        return str(getattr(value, "type", default))

    return kind


DetectorConfig = Annotated[
    Annotated[RetinaFaceConfig, Tag("retinaface")] | Annotated[YuNetConfig, Tag("yunet")],
    Discriminator(_type_or("retinaface")),
]


class DlibResnetConfig(StrictConfig):
    type: Literal["dlib-resnet"] = "dlib-resnet"
    model: Path | None = Field(
        None, description="ONNX file; default: dlib ResNet v1 converted by `streamproc models prepare`."
    )
    max_batch: int = Field(32, ge=1, le=1024, description="Largest batch sent to the model at once.")
    flip_average: bool = Field(
        True, description="Average the descriptors of each chip and its mirror (more robust, 2x cost)."
    )


class ArcFaceConfig(StrictConfig):
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


class SFaceConfig(StrictConfig):
    """The default embedder: OpenCV Zoo's SFace (Apache-2.0) as built by `streamproc models prepare`."""

    type: Literal["sface"] = "sface"
    model: Path | None = Field(
        None, description="ONNX file; default: SFace 2021dec converted to fp32 by `streamproc models prepare`."
    )
    max_batch: int = Field(32, ge=1, le=1024, description="Largest batch sent to the model at once.")
    flip_average: bool = Field(
        True, description="Average the descriptors of each chip and its mirror (more robust, 2x cost)."
    )


EmbedderConfig = Annotated[
    Annotated[SFaceConfig, Tag("sface")]
    | Annotated[DlibResnetConfig, Tag("dlib-resnet")]
    | Annotated[ArcFaceConfig, Tag("arcface")],
    Discriminator(_type_or("sface")),
]


class QualityConfig(StrictConfig):
    """Gates a face must pass to be embedded (enrolment) or kept as a best shot (streams)."""

    min_face_px: float = Field(40.0, ge=0.0, description="Shorter box side in pixels.")
    min_sharpness: float = Field(
        25.0, ge=0.0, description="Variance of the Laplacian of the grey 112-px chip (blur measure)."
    )
    max_yaw: float = Field(
        0.6, gt=0.0, description="Nose offset from the eye midline over inter-ocular distance (0 = frontal)."
    )
    max_roll_deg: float = Field(45.0, gt=0.0, le=180.0, description="Eye-line tilt in degrees.")
    min_eye_span: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Inter-ocular distance over eye-to-mouth height, as a share of a frontal face's (about "
        "cos yaw; 0.5 ~ 60 degrees): rejects full profiles, where the nose offset is unreliable. 0: off.",
    )
    min_detector_score: float = Field(0.8, ge=0.0, le=1.0, description="Detector confidence.")


class RecognitionConfig(StrictConfig):
    """Everything needed to turn images into comparable descriptors."""

    models: ModelsConfig = ModelsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    detector: DetectorConfig = RetinaFaceConfig()
    embedder: EmbedderConfig = SFaceConfig()
    quality: QualityConfig = QualityConfig()


class TrackerConfig(StrictConfig):
    """ByteTrack-style association of detections into face tracks (per stream, own id counter)."""

    high_score: float = Field(0.6, gt=0.0, lt=1.0, description="Detections at or above start and extend tracks.")
    low_score: float = Field(
        0.3, gt=0.0, lt=1.0, description="Detections between low and high only extend existing tracks."
    )
    match_iou: float = Field(0.3, gt=0.0, lt=1.0, description="Minimum IoU to associate a detection with a track.")
    min_hits: int = Field(2, ge=1, le=100, description="Matched frames before a track is confirmed.")
    max_lost_s: float = Field(1.0, gt=0.0, le=60.0, description="A track unmatched this long (media time) ends.")

    @model_validator(mode="after")
    def _low_below_high(self) -> TrackerConfig:
        if self.low_score > self.high_score:
            raise ValueError(f"low_score ({self.low_score}) must not exceed high_score ({self.high_score})")
        return self
