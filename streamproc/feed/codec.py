"""The feed's wire format: a two-frame ZeroMQ multipart message ``[topic, json]``, and its strict reader.

The topic is ``match.<stream_id>`` or ``review.<stream_id>`` so a subscriber filters by prefix; the body is UTF-8
JSON validated against :class:`~streamproc.feed.schema.MatchEvent` or :class:`~streamproc.feed.schema.ReviewEvent`.
JSON only, never pickle: a subscriber must not execute what arrives on a socket.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import ValidationError

from streamproc.errors import StreamprocError
from streamproc.feed.schema import (
    ADDED_IN_1_1,
    READABLE_VERSIONS,
    REVIEW_READABLE_VERSIONS,
    REVIEW_TOPIC_PREFIX,
    TOPIC_PREFIX,
    FeedEvent,
    MatchEvent,
    ReviewEvent,
)


class EventFormatError(StreamprocError):
    """A message on the event feed is not a valid match or review event of a schema version this reader knows."""


class EventEndpointError(StreamprocError):
    """An event endpoint cannot be bound or connected (malformed address, port in use, ...)."""


def encode(event: FeedEvent) -> tuple[bytes, bytes]:
    """(topic, UTF-8 JSON body) for a two-frame ZeroMQ message."""
    return event.topic, event.model_dump_json().encode("utf-8")


def _one_line(err: ValidationError, accepted: Sequence[str]) -> str:
    errors = err.errors()
    for item in errors:
        # Another version's body differs in many ways; the version is the one thing worth saying.
        if item["loc"] == ("schema_version",) and item["type"] != "missing":
            return (
                f"schema_version {repr(item['input'])[:20]} is not supported "
                f"(this reader accepts {', '.join(accepted)})"
            )
    parts = [f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}" for item in errors[:3]]
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more")
    return "; ".join(parts).replace("\n", " ")


def _missing(event: FeedEvent) -> list[str]:
    """Fields the body left out: defaults are for building events in Python; a publisher sends every field."""
    if isinstance(event, ReviewEvent):
        return [name for name in ReviewEvent.model_fields if name not in event.model_fields_set]
    optional = set(ADDED_IN_1_1) if event.schema_version == "1.0" else set()
    missing = [name for name in MatchEvent.model_fields if name not in event.model_fields_set | optional]
    calibration = event.calibration
    if event.schema_version != "1.0" and calibration is not None and "fpir" not in calibration.model_fields_set:
        missing.append("calibration.fpir")
    if event.schema_version not in ("1.0", "1.1") and calibration is not None:
        missing += [] if "fair_map" in calibration.model_fields_set else ["calibration.fair_map"]
    return missing


def decode(frames: Sequence[bytes]) -> FeedEvent:
    """Validate a received ``[topic, json]`` message: a match event (1.0, 1.1 or 1.2) or a review event by topic.

    Anything else raises :class:`EventFormatError`. Validation is strict (no string-to-number coercion, every
    field of the body's version present) and the topic must name the event's own kind and stream, so a message
    that passes is exactly what a publisher of that schema version sent.
    """
    if len(frames) != 2:
        raise EventFormatError(f"malformed event: expected 2 frames [topic, json], got {len(frames)}")
    topic, body = frames
    model: type[MatchEvent] | type[ReviewEvent]
    accepted: Sequence[str]
    if topic.startswith(TOPIC_PREFIX.encode("ascii")):
        model, kind, accepted = MatchEvent, "match", READABLE_VERSIONS
    elif topic.startswith(REVIEW_TOPIC_PREFIX.encode("ascii")):
        model, kind, accepted = ReviewEvent, "review", REVIEW_READABLE_VERSIONS
    else:
        raise EventFormatError(
            f"malformed event: topic {topic[:80]!r} does not start with {TOPIC_PREFIX!r} or {REVIEW_TOPIC_PREFIX!r}"
        )
    try:
        event: FeedEvent = model.model_validate_json(body, strict=True)
    except ValidationError as err:
        raise EventFormatError(f"malformed {kind} event on {topic[:80]!r}: {_one_line(err, accepted)}") from None
    missing = _missing(event)
    if missing:
        raise EventFormatError(f"malformed {kind} event on {topic[:80]!r}: {', '.join(missing)}: Field required")
    if event.topic != topic:
        raise EventFormatError(f"malformed {kind} event: topic {topic[:80]!r} but stream_id {event.stream_id!r}")
    return event


def decode_body(body: bytes) -> FeedEvent:
    """Validate a stored or replayed body (no topic travels with it) with the same strict reader as :func:`decode`.

    The topic is rebuilt from the body's ``type`` and ``stream_id``; a 1.0 match body has ``type: "match"`` too.
    """
    try:
        data = json.loads(body)
    except ValueError:
        raise EventFormatError("malformed event: not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("stream_id"), str):
        raise EventFormatError("malformed event: not a JSON object with a stream_id")
    prefix = REVIEW_TOPIC_PREFIX if data.get("type") == "review" else TOPIC_PREFIX
    return decode([f"{prefix}{data['stream_id']}".encode("utf-8", errors="replace"), body])
