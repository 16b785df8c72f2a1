"""Match and review events: the models downstream services consume, their ids and their JSON Schema files.

A match event says "this track is a candidate for human review", never "this is that person": every event
carries ``review: "pending"`` and a fixed notice, and the schema refuses any other value. What a person then
decides travels separately as a :class:`ReviewEvent` (see :mod:`streamproc.govern.review`), so the match event stays
an unaltered record of what the machine proposed.

``streamproc/data/event.schema.json`` and ``review-event.schema.json`` are the same schemas for non-Python
consumers; :func:`write_json_schemas` regenerates them. How events travel: :mod:`streamproc.feed.codec`
(the two-frame message), :mod:`streamproc.feed.publish` and :mod:`streamproc.feed.subscribe` (the sockets).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION: Final = "1.2"
"""Major.minor. Minor: fields added (optional, so old JSON stays valid); major: anything that breaks readers."""

READABLE_VERSIONS: Final = ("1.0", "1.1", "1.2")
"""Match-event versions :func:`~streamproc.feed.codec.decode` accepts: journals and subscribers outlive a publisher
upgrade."""

ADDED_IN_1_1: Final = ("template_label", "gallery_size")
"""Top-level fields a 1.0 body lacks (and ``calibration.fpir``); they read as null there."""

SCHEMA_ID: Final = f"urn:streamproc:match-event:{SCHEMA_VERSION}"
NOTICE: Final = "Candidate for human review; not an identification."
TOPIC_PREFIX: Final = "match."
SCHEMA_PATH: Final = Path(__file__).resolve().parents[1] / "data" / "event.schema.json"

REVIEW_SCHEMA_VERSION: Final = "1.1"
"""Version of :class:`ReviewEvent`, versioned on its own: a review consumer need not follow match changes.
1.1 added the decision ``reopen`` (a supervisor sends a decided candidate back to review)."""

REVIEW_READABLE_VERSIONS: Final = ("1.0", "1.1")

REVIEW_SCHEMA_ID: Final = f"urn:streamproc:review-event:{REVIEW_SCHEMA_VERSION}"
REVIEW_TOPIC_PREFIX: Final = "review."
REVIEW_SCHEMA_PATH: Final = Path(__file__).resolve().parents[1] / "data" / "review-event.schema.json"

ReviewDecision = Literal["confirm", "reject", "reopen"]
ReviewStatus = Literal["pending", "confirmed", "rejected"]

LatencyStage = Literal[
    "decode",
    "detect",
    "track",
    "align",
    "embed",
    "search",
    "policy",
    "publish",
    "best_shot_wait",
    "decision",
    "end_to_end",
]
"""Keys of ``MatchEvent.latency_ms``; a stage not measured on the way to an event is simply absent."""

_STREAM_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"  # the same rule as SourceConfig.id: topics stay plain ASCII
_JPEG_B64_PATTERN = r"^/9j/[A-Za-z0-9+/]*={0,2}$"  # base64 of a JPEG starts with its FF D8 FF marker
_MAX_JPEG_B64 = 4 * 1024 * 1024
_HEX32_PATTERN = r"^[0-9a-f]{32}$"
REVIEWER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$"
"""Reviewer ids: a login or badge id, plain ASCII so audit lines and tables stay unambiguous."""
MAX_NOTE: Final = 2000


class _Wire(BaseModel):
    # Frozen: an event is a record of what happened. No NaN/inf: JSON cannot carry them faithfully.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CalibrationInfo(_Wire):
    """Where the threshold came from, so a reviewer can weigh the candidate."""

    # fpir is always sent (null when unknown), so the schema lists it as required like every MatchEvent field.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    fmr_target: float = Field(
        ge=0.0,
        lt=1.0,
        description="Per-comparison false-match rate the threshold was calibrated for; 0 when there is none.",
    )
    source: str = Field(description="File name of the calibration the threshold came from (empty when none).")
    uncalibrated: bool = Field(
        description="True when the threshold was set by hand (policy.threshold) rather than taken from a "
        "calibration: its false-match rate is unknown."
    )
    fpir: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Predicted per-track false-positive identification rate at this gallery size, from the "
        "calibration's impostor-track measurement; null when not measured. (Added in 1.1.)",
    )
    fair_map: bool = Field(
        False,
        description="True when distance, distances and threshold are the calibration's fair score map's "
        "calibrated distances (both faces' clusters; docs/fair-scores.md), false when raw distances. (Added in 1.2.)",
    )


class QualityInfo(_Wire):
    """Quality of the probe's best shot: why this face was fit to compare."""

    score: float = Field(ge=0.0, le=1.0, description="Overall quality in [0, 1]; higher is better.")
    face_px: float = Field(ge=0.0, description="Shorter side of the face box in pixels.")
    sharpness: float = Field(ge=0.0, description="Variance of the Laplacian of the grey 112-px chip (blur measure).")
    yaw: float | None = Field(
        description="Nose offset from the eye midline over the inter-ocular distance (0 = frontal, signed); "
        "null when the eyes coincide and pose is undefined."
    )
    detector_score: float = Field(ge=0.0, le=1.0, description="Face detector confidence in [0, 1].")

    @field_validator("yaw", mode="before")
    @classmethod
    def _undefined_pose(cls, value: Any) -> Any:
        # quality.pose() reports an undefined pose as inf; JSON has no inf, and null says it better.
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value


class MatchEvent(_Wire):
    """A track's face agreed with a watchlist subject under the threshold: a candidate for human review.

    Beyond the per-field rules, an event is consistent: distance is the smallest of distances and at most
    threshold; k <= n; there are 1 to n distances; latency_ms has end_to_end; the box has x2 >= x1, y2 >= y1.
    """

    # Every field is always sent, defaults included, so the schema lists them all as required.
    model_config = ConfigDict(title="streamproc match event", json_schema_serialization_defaults_required=True)

    schema_version: Literal["1.0", "1.1", "1.2"] = Field(
        SCHEMA_VERSION, description="Schema version (major.minor); readers refuse a version they do not know."
    )
    event_id: str = Field(
        pattern=r"^[0-9a-f]{32}$",
        description="Deterministic id (see make_event_id): the same flag re-sent after a restart has the same "
        "id, so consumers can de-duplicate.",
    )
    seq: int | None = Field(
        None,
        ge=1,
        description="Sequence number assigned by the publisher's durable journal (1, 2, 3, ... per publisher): a "
        "subscriber that was away asks for everything after the last seq it saw. Null when no journal is kept.",
    )
    type: Literal["match"] = Field("match", description="Event kind; always 'match' in this schema.")
    stream_id: str = Field(pattern=_STREAM_ID_PATTERN, description="Configured id of the video stream.")
    track_id: int = Field(ge=0, description="Face track id, unique within the stream for this run.")
    subject_id: str = Field(min_length=1, description="Watchlist subject id of the candidate.")
    subject_name: str = Field(description="Display name of the candidate, as enrolled, for the reviewer.")
    template_label: int | None = Field(
        None,
        ge=0,
        description="Watchlist template label (never reused within a watchlist) of the subject's enrolled template "
        "nearest the best shot, so the reviewer compares against that image; null when unknown. (Added in 1.1.)",
    )
    gallery_size: int | None = Field(
        None,
        ge=0,
        description="Active watchlist subjects searched for this event (false alarms grow with it); null when "
        "unknown. (Added in 1.1.)",
    )
    distance: float = Field(
        ge=0.0, description="Best (smallest) agreeing distance between the probe and the subject, in `metric` units."
    )
    distances: tuple[float, ...] = Field(
        min_length=1, description="Distances of the agreeing shots to the subject, in `metric` units."
    )
    threshold: float = Field(gt=0.0, description="Distance threshold in force: a shot agrees when distance <= it.")
    metric: Literal["l2", "cosine"] = Field(
        description="Distance unit: 'l2' (Euclidean, dlib) or 'cosine' (1 - cosine similarity)."
    )
    calibration: CalibrationInfo | None = Field(
        description="Where the threshold came from; null when no calibration applies (treat as uncalibrated)."
    )
    k: int = Field(ge=1, description="The rule that fired: k of the last n shots of the track agreed ...")
    n: int = Field(ge=1, description="... out of n.")
    frame_pts_s: float = Field(description="Presentation time of the best shot's frame, in seconds into the stream.")
    captured_at: float = Field(gt=0.0, description="UNIX time (s, wall clock) the best shot's frame was decoded.")
    published_at: float = Field(gt=0.0, description="UNIX time (s, wall clock) the event was published.")
    latency_ms: dict[LatencyStage, float] = Field(
        description="Per-stage latency in milliseconds; 'end_to_end' is published_at - captured_at (wall clock, "
        "so a clock step can make it slightly off)."
    )
    box: tuple[float, float, float, float] = Field(
        description="Face box x1, y1, x2, y2 in pixels of the decoded frame (may extend past its edges)."
    )
    quality: QualityInfo = Field(description="Quality of the best shot.")
    face_jpeg_b64: str | None = Field(
        None,
        pattern=_JPEG_B64_PATTERN,
        max_length=_MAX_JPEG_B64,
        description="Base64 JPEG of the aligned face chip of the best shot, for the reviewer; null if omitted.",
    )
    review: Literal["pending"] = Field(
        "pending", description="Always 'pending': a human must review every candidate before anyone acts."
    )
    notice: Literal["Candidate for human review; not an identification."] = Field(
        NOTICE, description="Fixed notice carried with every event; it travels with copies of the event."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) exceeds n ({self.n})")
        if len(self.distances) > self.n:
            raise ValueError(f"{len(self.distances)} distances for a k-of-n rule with n={self.n}")
        if self.distance != min(self.distances):
            raise ValueError("distance must be the smallest of distances")
        if self.distance > self.threshold:
            raise ValueError(f"distance {self.distance} is above the threshold {self.threshold}")
        if "end_to_end" not in self.latency_ms:
            raise ValueError("latency_ms must include end_to_end")
        x1, y1, x2, y2 = self.box
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box {self.box} is not x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
        if self.schema_version == "1.0":
            fpir = self.calibration.fpir if self.calibration is not None else None
            if self.template_label is not None or self.gallery_size is not None or fpir is not None:
                raise ValueError("template_label, gallery_size and calibration.fpir are not part of schema 1.0")
        if self.schema_version in ("1.0", "1.1") and self.calibration is not None and self.calibration.fair_map:
            raise ValueError(f"calibration.fair_map is not part of schema {self.schema_version}")
        return self

    @property
    def topic(self) -> bytes:
        """The ZeroMQ topic this event is published under."""
        return f"{TOPIC_PREFIX}{self.stream_id}".encode("ascii")

    @property
    def uncalibrated(self) -> bool:
        """True when the threshold's false-match rate is unknown: show this to the reviewer."""
        return self.calibration is None or self.calibration.uncalibrated

    def face_jpeg(self) -> bytes | None:
        """The best shot as JPEG bytes, if the event carries it."""
        return None if self.face_jpeg_b64 is None else base64.b64decode(self.face_jpeg_b64, validate=True)


class ReviewEvent(_Wire):
    """One person's decision on a match event, and the status it leaves the candidate in.

    Consistent by construction: a confirm lists its reviewer among ``confirmations``; a reject leaves the status
    ``rejected``; ``confirmed`` means at least ``required_confirmations`` distinct confirms, ``pending`` fewer.
    """

    model_config = ConfigDict(title="streamproc review event", json_schema_serialization_defaults_required=True)

    schema_version: Literal["1.0", "1.1"] = Field(
        REVIEW_SCHEMA_VERSION,
        description="Review schema version (major.minor); readers refuse a version they do not know.",
    )
    type: Literal["review"] = Field("review", description="Event kind; always 'review' in this schema.")
    review_id: str = Field(pattern=_HEX32_PATTERN, description="Random id of this decision (32 hex chars).")
    seq: int | None = Field(
        None,
        ge=1,
        description="Journal sequence number: the same sequence as match events, so a replay from a seq returns "
        "matches and decisions in the order they were stored. Null only before the decision is stored.",
    )
    event_id: str = Field(pattern=_HEX32_PATTERN, description="event_id of the match event decided on.")
    stream_id: str = Field(pattern=_STREAM_ID_PATTERN, description="Stream of the match event (also in the topic).")
    subject_id: str = Field(min_length=1, description="Watchlist subject id the match event proposed.")
    decision: ReviewDecision = Field(
        description="'confirm': the reviewer judges probe and subject the same person; 'reject': not, or unsure; "
        "'reopen' (1.1): a supervisor sends a confirmed or rejected candidate back to review (status 'pending', "
        "no confirmations: a new round begins)."
    )
    reviewer: str = Field(pattern=REVIEWER_PATTERN, description="Id of the person who decided.")
    note: str = Field(min_length=1, max_length=MAX_NOTE, description="The reviewer's reason, in their words.")
    decided_at: float = Field(gt=0.0, description="UNIX time (s, wall clock) the decision was stored.")
    status: ReviewStatus = Field(
        description="Status of the match event after this decision: 'rejected' after any reject, 'confirmed' "
        "once required_confirmations distinct reviewers confirmed, else 'pending'."
    )
    confirmations: tuple[str, ...] = Field(
        description="Reviewers who have confirmed so far, this decision included, in the order they decided."
    )
    required_confirmations: int = Field(
        ge=1, description="Distinct confirmations needed for 'confirmed' (2: the two-person rule)."
    )

    @field_validator("note")
    @classmethod
    def _note_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("note must not be blank")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.confirmations)) != len(self.confirmations):
            raise ValueError("confirmations must name distinct reviewers")
        confirmed = len(self.confirmations) >= self.required_confirmations
        if self.decision == "reopen":
            if self.schema_version == "1.0":
                raise ValueError("reopen is not part of review schema 1.0")
            if self.status != "pending" or self.confirmations:
                raise ValueError("a reopen leaves the status 'pending' with no confirmations")
        elif self.decision == "reject":
            if self.status != "rejected" or self.reviewer in self.confirmations:
                raise ValueError("a reject leaves the status 'rejected' and is not a confirmation")
        elif self.reviewer not in self.confirmations:
            raise ValueError("a confirm must list its reviewer in confirmations")
        elif self.status != ("confirmed" if confirmed else "pending"):
            raise ValueError(
                f"{len(self.confirmations)} of {self.required_confirmations} confirmations give status "
                f"{'confirmed' if confirmed else 'pending'}, not {self.status}"
            )
        return self

    @property
    def topic(self) -> bytes:
        """The ZeroMQ topic this decision is published under."""
        return f"{REVIEW_TOPIC_PREFIX}{self.stream_id}".encode("ascii")


FeedEvent = MatchEvent | ReviewEvent
"""Anything the feed, the journal and the replay endpoint carry."""


def make_event_id(stream_id: str, track_id: int, subject_id: str, window_start_s: float) -> str:
    """Deterministic event id: 32 hex chars of sha256 over the fields that identify one flag.

    ``window_start_s`` is the stream time of the first shot in the k-of-n window that fired. The same flag
    re-sent (e.g. replayed from a journal after a restart) gets the same id, so consumers can de-duplicate.
    The fields are JSON-encoded as a list, so no two different tuples hash the same input.
    """
    key = json.dumps([stream_id, int(track_id), subject_id, float(window_start_s)], ensure_ascii=True)
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:32]


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the match-event body as this version sends it, for any language.

    It describes 1.2 bodies (``schema_version`` is the constant "1.2"); 1.0 and 1.1 bodies lack the fields added
    since (1.1: ``template_label``, ``gallery_size``, ``calibration.fpir``; 1.2: ``calibration.fair_map``) and are
    described by the schema files of earlier releases.
    """
    schema = MatchEvent.model_json_schema(mode="serialization")
    version = schema["properties"]["schema_version"]
    schema["properties"]["schema_version"] = {
        "const": SCHEMA_VERSION,
        "default": SCHEMA_VERSION,
        "description": version["description"],
        "title": version["title"],
        "type": "string",
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "streamproc match event",
        "version": SCHEMA_VERSION,
    }


def review_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the review-event body as this version sends it (``schema_version`` "1.1")."""
    schema = ReviewEvent.model_json_schema(mode="serialization")
    version = schema["properties"]["schema_version"]
    schema["properties"]["schema_version"] = {
        "const": REVIEW_SCHEMA_VERSION,
        "default": REVIEW_SCHEMA_VERSION,
        "description": version["description"],
        "title": version["title"],
        "type": "string",
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": REVIEW_SCHEMA_ID,
        **schema,
        "title": "streamproc review event",
        "version": REVIEW_SCHEMA_VERSION,
    }


def _schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def json_schema_text() -> str:
    """The match schema as committed: 2-space indent, sorted keys, trailing newline (stable diffs)."""
    return _schema_text(json_schema())


def review_json_schema_text() -> str:
    """The review schema as committed, in the same layout."""
    return _schema_text(review_json_schema())


def write_json_schema(path: Path = SCHEMA_PATH) -> Path:
    """Regenerate the committed match schema file (run after changing :class:`MatchEvent`)."""
    path.write_text(json_schema_text(), encoding="utf-8")
    return path


def write_json_schemas() -> list[Path]:
    """Regenerate both committed schema files (run after changing either event model)."""
    REVIEW_SCHEMA_PATH.write_text(review_json_schema_text(), encoding="utf-8")
    return [write_json_schema(), REVIEW_SCHEMA_PATH]
