"""Redaction settings as data: pydantic models that mirror ``redact.yaml`` 1:1 (unknown keys are errors).

Defaults lean towards hiding too much: a blurred shoulder costs nothing, a visible face cannot be unreleased.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamproc.config_io import format_validation_error, read_yaml
from streamproc.config_recognition import ModelsConfig, RuntimeConfig
from streamproc.errors import ConfigError

Method = Literal["blur", "pixelate", "box"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedactDetectionConfig(_Strict):
    """Pass one: a face detector on every frame of the clip."""

    detector: Literal["yunet", "retinaface"] = Field(
        "yunet",
        description="yunet (OpenCV Zoo YuNet 2023mar, MIT): ~2.5x faster than retinaface at the same input size, "
        "with the same measured coverage (bench/RESULTS.md, redaction run 6); retinaface: the recognition "
        "detector. --keep-subject always uses retinaface: the subject's shots are aligned on its landmarks and the "
        "shipped calibration was measured with it.",
    )
    score_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="A detection at or above this is hidden on its own and may start a track."
    )
    low_score: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Detections between low_score and score_threshold are hidden only when they extend a track "
        "(or, with fallback_heads, as a head region).",
    )
    nms_iou: float = Field(0.4, gt=0.0, lt=1.0, description="IoU above which overlapping detections merge.")
    min_side: int | None = Field(
        540,
        ge=64,
        le=4320,
        description="Upscale frames whose shorter side is below this before detection, so small and distant "
        "faces reach the detector's smallest anchors (a 360p clip is detected at 540p). Null: never upscale.",
    )
    upscale: Literal["adaptive", "always"] = Field(
        "adaptive",
        description="adaptive: detect each frame at the clip's own size and use the min_side pass instead at least "
        "every discovery_s and for discovery_s after a frame where a tracked face went undetected or a weak "
        "detection belongs to no confirmed track; always: every frame at min_side (2-4x the detection time on "
        "270p-360p clips).",
    )
    discovery_s: float | None = Field(
        None,
        ge=0.0,
        le=10.0,
        description="adaptive upscale: the longest gap between upscaled frames, at most tracking.extend_s so a face "
        "only the upscaled pass sees is found within the pre-roll that hides it before its first detection. "
        "Null: tracking.extend_s.",
    )
    max_side: int | None = Field(
        None,
        ge=64,
        le=8192,
        description="Downscale frames whose longer side exceeds this. Null (default): detect at full resolution, "
        "so 15-20 px faces in a 1080p crowd are seen.",
    )
    min_face_px: float = Field(4.0, ge=0.0, le=4096, description="Ignore detections smaller than this (pixels).")
    max_batch: int = Field(4, ge=1, le=64, description="Frames per detector call.")

    @model_validator(mode="after")
    def _low_below_threshold(self) -> RedactDetectionConfig:
        if self.low_score > self.score_threshold:
            raise ValueError(f"low_score ({self.low_score}) must not exceed score_threshold ({self.score_threshold})")
        return self


class RedactTrackingConfig(_Strict):
    """How boxes are held through the detector's misses."""

    match_iou: float = Field(0.2, gt=0.0, lt=1.0, description="Minimum IoU to associate a detection with a track.")
    max_gap_s: float = Field(
        1.5, gt=0.0, le=60.0, description="Interpolate a track's box across missed frames for gaps up to this long."
    )
    extend_s: float = Field(
        0.5, ge=0.0, le=10.0, description="Keep hiding a track this long before its first and after its last detection."
    )
    hold_frames: int = Field(
        2, ge=0, le=100, description="Every detection is also hidden this many frames before and after its own."
    )


class RedactRegionConfig(_Strict):
    """Shape of the hidden region around each face box."""

    padding: float = Field(
        0.3, ge=0.0, le=3.0, description="Grow each box by this fraction of its width/height on every side."
    )
    extend_padding: float = Field(
        0.3,
        ge=0.0,
        le=3.0,
        description="Extra growth per second of extension or interpolation distance from a detection (faces move).",
    )
    fallback_heads: bool = Field(
        True,
        description="Also hide a whole head region where the detector is unsure (score below low_score but at or "
        "above fallback_floor). Over-redaction is the explicit price; on by default because without it 2.5% of "
        "the reference faces on the Hamilton clip stayed visible (bench/RESULTS.md).",
    )
    fallback_floor: float = Field(0.05, gt=0.0, lt=1.0, description="Lowest detector score hidden as a head region.")
    head_padding: float = Field(
        0.8, ge=0.0, le=5.0, description="Padding (fraction of box size per side) of a fallback head region."
    )


class RedactRenderConfig(_Strict):
    """Pass two: how faces are hidden and how the clip is written."""

    method: Method = Field("blur", description="blur (strong Gaussian), pixelate (coarse mosaic) or box (solid black).")
    blocks: int = Field(
        8,
        ge=2,
        le=64,
        description="pixelate: blocks across the region's width (fewer = coarser); blur: kernel ~ side / blocks.",
    )
    crf: int = Field(18, ge=0, le=51, description="H.264 constant rate factor (lower = better quality, larger file).")
    preset: str = Field(
        "superfast",
        pattern=r"^[a-z]+$",
        description="libx264 speed preset (superfast: same quality at crf 18 as veryfast, 1.6x faster, ~1.8x larger).",
    )
    suffix: str = Field(".redacted.mp4", pattern=r"^[\w.-]+\.mp4$", description="Output name: input stem + this.")


class RedactReportConfig(_Strict):
    lowest_regions: int = Field(20, ge=0, le=1000, description="How many lowest-confidence regions the report lists.")
    thumb_width: int = Field(192, ge=32, le=1920, description="Contact-sheet thumbnail width in pixels.")
    columns: int = Field(6, ge=1, le=20, description="Contact-sheet thumbnails per row.")


class RedactAuditConfig(_Strict):
    dir: Path | None = Field(
        None,
        description="Directory of audit.log (created on first use); null: --audit-dir, else $XDG_STATE_HOME/"
        "streamproc/audit (~/.local/state/streamproc/audit). Never put it in the release folder.",
    )


class KeepSubjectConfig(_Strict):
    """--keep-subject only: when a track is the enrolled subject (computed only with an authorisation)."""

    max_distance: float | None = Field(
        None,
        gt=0.0,
        description="Embedding distance at or under which a track's shot matches the subject; null: the "
        "embedder's shipped calibration at target_fmr.",
    )
    target_fmr: float = Field(1e-4, gt=0.0, lt=0.1, description="False-match rate the default threshold is set at.")
    min_votes: int = Field(2, ge=1, le=20, description="Shots of a track that must match before it is kept visible.")
    shots: int = Field(3, ge=1, le=20, description="Highest-scoring detections per track that are embedded.")


class RedactConfig(_Strict):
    """A whole ``redact.yaml``."""

    models: ModelsConfig = ModelsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    detection: RedactDetectionConfig = RedactDetectionConfig()
    tracking: RedactTrackingConfig = RedactTrackingConfig()
    regions: RedactRegionConfig = RedactRegionConfig()
    render: RedactRenderConfig = RedactRenderConfig()
    report: RedactReportConfig = RedactReportConfig()
    audit: RedactAuditConfig = RedactAuditConfig()
    keep_subject: KeepSubjectConfig = KeepSubjectConfig()

    @model_validator(mode="after")
    def _discovery_within_preroll(self) -> RedactConfig:
        every = self.detection.discovery_s
        if every is not None and every > self.tracking.extend_s:
            raise ValueError(
                f"detection.discovery_s ({every}) must not exceed tracking.extend_s ({self.tracking.extend_s}): "
                "a face first found by the upscaled pass would be visible before the pre-roll that hides it"
            )
        return self


def load_redact_config(path: Path | None) -> RedactConfig:
    """Defaults when ``path`` is None; every error names the file and key path."""
    if path is None:
        return RedactConfig()
    try:
        config = RedactConfig.model_validate(read_yaml(path))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path)).replace("\n", "; ")) from None
    if config.audit.dir is not None and not config.audit.dir.is_absolute():
        config = config.model_copy(update={"audit": RedactAuditConfig(dir=path.parent / config.audit.dir)})
    return config
