"""ZeroMQ framing of :mod:`streamproc.messages` between stream workers and the embed service.

A message is one or two frames: a small UTF-8 JSON header (``{"v": 1, "kind": ..., ...}``), and for a best shot
the chip's raw bytes (C order, uint8, shape in the header). Never pickle: a peer can only make us parse JSON and
copy bytes, and either side can be rewritten in another language from this docstring.

Decoding checks everything (version, kind, field types, chip shape against the byte count) and raises
:class:`WireError` in one line; the receiver counts and drops such messages.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streamproc.errors import StreamprocError
from streamproc.messages import BestShot, Message, StreamOpened, TrackEnded
from streamproc.types import Quality

VERSION = 1
MAX_CHIP_SIDE = 1024


class WireError(StreamprocError):
    """A malformed message from a peer."""


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    v: Literal[1]
    stream_id: str = Field(min_length=1, max_length=64)
    session: str = Field(pattern=r"^(\d{1,12}\.\d{1,9})?$")  # "" (files) or a start time (live)


class _OpenHeader(_Header):
    kind: Literal["open"]


class _EndHeader(_Header):
    kind: Literal["end"]
    track_id: int = Field(ge=0)


class _QualityWire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    score: float
    face_px: float
    sharpness: float
    yaw: float
    roll_deg: float
    detector_score: float
    reasons: tuple[str, ...] = ()


class _ShotHeader(_Header):
    kind: Literal["shot"]
    track_id: int = Field(ge=0)
    track_start_s: float
    t_s: float
    box: tuple[float, float, float, float]
    captured_at: float
    sent_at: float
    quality: _QualityWire
    timings_ms: dict[str, float]
    chip_shape: tuple[int, int, Literal[3]]


_ANY = TypeAdapter(Annotated[_OpenHeader | _EndHeader | _ShotHeader, Field(discriminator="kind")])


def encode(message: Message) -> list[bytes]:
    """The frames of one message (send them with ``send_multipart``; the chip buffer is not copied again)."""
    if isinstance(message, BestShot):
        chip = np.ascontiguousarray(message.chip, dtype=np.uint8)
        header = _ShotHeader(
            v=VERSION,
            kind="shot",
            stream_id=message.stream_id,
            session=message.session,
            track_id=message.track_id,
            track_start_s=message.track_start_s,
            t_s=message.t_s,
            box=message.box,
            captured_at=message.captured_at,
            sent_at=message.sent_at,
            quality=_QualityWire(**dataclasses.asdict(message.quality)),
            timings_ms=message.timings_ms,
            chip_shape=(int(chip.shape[0]), int(chip.shape[1]), 3),
        )
        return [header.model_dump_json().encode(), chip.tobytes()]
    if isinstance(message, TrackEnded):
        end = _EndHeader(
            v=VERSION, kind="end", stream_id=message.stream_id, session=message.session, track_id=message.track_id
        )
        return [end.model_dump_json().encode()]
    opened = _OpenHeader(v=VERSION, kind="open", stream_id=message.stream_id, session=message.session)
    return [opened.model_dump_json().encode()]


def decode(frames: list[bytes]) -> Message:
    """Parse one received message; raises :class:`WireError` on anything malformed."""
    if not frames:
        raise WireError("empty message")
    try:
        header = _ANY.validate_python(json.loads(frames[0]))
    except (ValueError, ValidationError) as err:
        first = str(err).splitlines()[0]
        raise WireError(f"bad message header: {first}") from None
    if isinstance(header, _OpenHeader):
        _expect_frames(frames, 1)
        return StreamOpened(stream_id=header.stream_id, session=header.session)
    if isinstance(header, _EndHeader):
        _expect_frames(frames, 1)
        return TrackEnded(stream_id=header.stream_id, session=header.session, track_id=header.track_id)
    _expect_frames(frames, 2)
    h, w, c = header.chip_shape
    if not (0 < h <= MAX_CHIP_SIDE and 0 < w <= MAX_CHIP_SIDE) or len(frames[1]) != h * w * c:
        raise WireError(f"chip of {len(frames[1])} bytes does not match shape {header.chip_shape}")
    chip = np.frombuffer(frames[1], np.uint8).reshape(h, w, c)
    return BestShot(
        stream_id=header.stream_id,
        session=header.session,
        track_id=header.track_id,
        track_start_s=header.track_start_s,
        t_s=header.t_s,
        box=header.box,
        captured_at=header.captured_at,
        sent_at=header.sent_at,
        quality=Quality(**header.quality.model_dump()),
        timings_ms=header.timings_ms,
        chip=chip,
    )


def _expect_frames(frames: list[bytes], n: int) -> None:
    if len(frames) != n:
        raise WireError(f"expected {n} frame(s), got {len(frames)}")
