"""Match events: the wire format, the JSON schema, real PUB/SUB sockets and the `events tail` command.

Sockets bind to tcp://127.0.0.1:* (a free port chosen by the OS). PUB/SUB delivers nothing until a
subscription has reached the publisher, so exchanges first publish marked warm-up events until every subscriber
has seen one, then skip any warm-up still in flight: deterministic, without fixed sleeps.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from support import make_event
from typer.testing import CliRunner

from streamproc.cli.events import events_app
from streamproc.errors import StreamprocError
from streamproc.feed.codec import EventEndpointError, EventFormatError, decode, decode_body, encode
from streamproc.feed.publish import EventPublisher
from streamproc.feed.schema import (
    NOTICE,
    REVIEW_SCHEMA_PATH,
    SCHEMA_PATH,
    SCHEMA_VERSION,
    CalibrationInfo,
    MatchEvent,
    QualityInfo,
    ReviewEvent,
    json_schema,
    json_schema_text,
    make_event_id,
    review_json_schema,
    review_json_schema_text,
)
from streamproc.feed.subscribe import EventSubscriber

ANY_PORT = "tcp://127.0.0.1:*"
WARMUP = "warmup"


def body_dict(event: MatchEvent | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(encode(event or make_event())[1])
    return data


def frames_of(data: dict[str, Any], topic: bytes = b"match.cam1") -> list[bytes]:
    return [topic, json.dumps(data).encode()]


def make_review(**over: Any) -> ReviewEvent:
    """A valid first confirm of the two-person rule; ``over`` replaces any field."""
    fields: dict[str, Any] = {
        "review_id": "ab" * 16,
        "seq": 7,
        "event_id": make_event().event_id,
        "stream_id": "cam1",
        "subject_id": "s-001",
        "decision": "confirm",
        "reviewer": "alice",
        "note": "same scar over the left eye",
        "decided_at": 1_800_000_100.0,
        "status": "pending",
        "confirmations": ("alice",),
        "required_confirmations": 2,
    }
    fields.update(over)
    return ReviewEvent(**fields)


# ------------------------------------------------------------------------------------------ model rules
def test_constants_travel_with_every_event() -> None:
    data = body_dict()
    assert data["schema_version"] == SCHEMA_VERSION
    assert SCHEMA_VERSION == "1.2"
    assert data["type"] == "match"
    assert data["review"] == "pending"
    assert data["notice"] == NOTICE == "Candidate for human review; not an identification."


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"review": "confirmed"}, "review"),
        ({"notice": "Identified."}, "notice"),
        ({"distance": 0.45}, "smallest"),
        ({"distance": 0.6, "distances": [0.6], "threshold": 0.5}, "above the threshold"),
        ({"k": 4}, "exceeds n"),
        ({"distances": [0.41, 0.42, 0.43, 0.44]}, "distances for a k-of-n"),
        ({"latency_ms": {"detect": 1.0}}, "end_to_end"),
        ({"latency_ms": {"end_to_end": 1.0, "teleport": 1.0}}, "latency_ms"),
        ({"box": (10.0, 10.0, 5.0, 20.0)}, "box"),
        ({"stream_id": "cam 1"}, "stream_id"),
        ({"event_id": "not-hex"}, "event_id"),
        ({"face_jpeg_b64": base64.b64encode(b"\x89PNG").decode()}, "face_jpeg_b64"),
        ({"distance": float("nan")}, "distance"),
        ({"metric": "manhattan"}, "metric"),
    ],
)
def test_inconsistent_events_are_refused_at_construction(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        make_event(**change)


def test_undefined_pose_travels_as_null() -> None:
    event = make_event(quality=QualityInfo(score=0.1, face_px=50, sharpness=30, yaw=float("inf"), detector_score=0.9))
    assert event.quality.yaw is None
    assert decode(list(encode(event))) == event


def test_uncalibrated_and_face_jpeg_helpers() -> None:
    assert not make_event().uncalibrated
    assert make_event(calibration=None).uncalibrated
    hand = CalibrationInfo(fmr_target=0.0, source="", uncalibrated=True)
    assert make_event(calibration=hand).uncalibrated
    jpeg = make_event().face_jpeg()
    assert jpeg is not None
    assert jpeg.startswith(b"\xff\xd8\xff")
    assert make_event(face_jpeg_b64=None).face_jpeg() is None


def test_events_are_frozen() -> None:
    event = make_event()
    with pytest.raises(ValueError, match="frozen"):
        event.distance = 0.1  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- wire format
def test_encode_gives_topic_and_json() -> None:
    topic, body = encode(make_event(stream="cam-7.front"))
    assert topic == b"match.cam-7.front"
    assert json.loads(body)["stream_id"] == "cam-7.front"


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
nonneg = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


@st.composite
def events(draw: st.DrawFn) -> MatchEvent:
    n = draw(st.integers(1, 10))
    k = draw(st.integers(1, n))
    distances = draw(st.lists(nonneg, min_size=1, max_size=n))
    threshold = max(min(distances), 1e-9) * draw(st.floats(1.0, 10.0))
    x1, y1 = draw(finite), draw(finite)
    w, h = draw(nonneg), draw(nonneg)
    stream = draw(st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z"))
    stages = draw(st.lists(st.sampled_from(["decode", "detect", "track", "align", "embed", "search"]), unique=True))
    latency = {s: draw(nonneg) for s in stages} | {"end_to_end": draw(finite)}
    jpeg = draw(st.none() | st.binary(max_size=64).map(lambda b: base64.b64encode(b"\xff\xd8\xff" + b).decode()))
    calibration = draw(
        st.none()
        | st.builds(
            CalibrationInfo,
            fmr_target=st.floats(0.0, 0.999),
            source=text,
            uncalibrated=st.booleans(),
            fpir=st.none() | st.floats(0.0, 1.0),
        )
    )
    quality = QualityInfo(
        score=draw(st.floats(0.0, 1.0)),
        face_px=draw(nonneg),
        sharpness=draw(nonneg),
        yaw=draw(st.none() | finite),
        detector_score=draw(st.floats(0.0, 1.0)),
    )
    return MatchEvent(
        event_id=make_event_id(stream, 3, "x", 1.0),
        stream_id=stream,
        track_id=draw(st.integers(0, 2**53)),
        subject_id=draw(text.filter(bool)),
        subject_name=draw(text),
        distance=min(distances),
        distances=distances,
        threshold=threshold,
        metric=draw(st.sampled_from(["l2", "cosine"])),
        calibration=calibration,
        k=k,
        n=n,
        frame_pts_s=draw(finite),
        captured_at=draw(st.floats(1e-3, 4e9)),
        published_at=draw(st.floats(1e-3, 4e9)),
        latency_ms=latency,
        box=(x1, y1, x1 + w, y1 + h),
        quality=quality,
        face_jpeg_b64=jpeg,
        template_label=draw(st.none() | st.integers(0, 2**40)),
        gallery_size=draw(st.none() | st.integers(0, 10**6)),
    )


@settings(max_examples=200, deadline=None)
@given(events())
def test_encode_decode_round_trip(event: MatchEvent) -> None:
    topic, body = encode(event)
    assert decode([topic, body]) == event
    assert b"\n" not in body


def test_a_1_0_event_still_decodes_with_the_new_evidence_null() -> None:
    data = body_dict()
    for added in ("template_label", "gallery_size"):
        del data[added]
    del data["calibration"]["fpir"]
    data["schema_version"] = "1.0"
    event = decode(frames_of(data))
    assert isinstance(event, MatchEvent)
    assert event.schema_version == "1.0"
    assert (event.template_label, event.gallery_size, event.calibration and event.calibration.fpir) == (
        None,
        None,
        None,
    )
    assert decode_body(json.dumps(data).encode()) == event


def test_a_1_1_event_still_decodes_without_the_fair_map_flag() -> None:
    data = body_dict(make_event(calibration=CalibrationInfo(fmr_target=1e-3, source="c.json", uncalibrated=False)))
    del data["calibration"]["fair_map"]
    data["schema_version"] = "1.1"
    event = decode(frames_of(data))
    assert isinstance(event, MatchEvent)
    assert event.calibration is not None
    assert (event.schema_version, event.calibration.fair_map) == ("1.1", False)


def test_1_2_fair_map_flag_travels() -> None:
    cal = CalibrationInfo(fmr_target=1e-3, source="sface-v1.json", uncalibrated=False, fair_map=True)
    event = make_event(calibration=cal)
    assert decode(list(encode(event))) == event
    assert body_dict(event)["calibration"]["fair_map"] is True


def test_1_1_evidence_travels() -> None:
    cal = CalibrationInfo(fmr_target=1e-3, source="c.json", uncalibrated=False, fpir=0.02)
    event = make_event(template_label=17, gallery_size=250, calibration=cal)
    assert decode(list(encode(event))) == event
    data = body_dict(event)
    assert (data["template_label"], data["gallery_size"], data["calibration"]["fpir"]) == (17, 250, 0.02)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"decision": "reject"}, "a reject leaves the status 'rejected'"),
        ({"confirmations": ()}, "must list its reviewer"),
        ({"status": "confirmed"}, "1 of 2 confirmations give status pending"),
        ({"confirmations": ("bob", "alice"), "status": "pending"}, "give status confirmed"),
        ({"confirmations": ("alice", "alice")}, "distinct"),
        ({"note": "   "}, "blank"),
        ({"note": ""}, "note"),
        ({"reviewer": ""}, "reviewer"),
        ({"reviewer": "al ice"}, "reviewer"),
        ({"decision": "maybe"}, "decision"),
        ({"required_confirmations": 0}, "required_confirmations"),
    ],
)
def test_inconsistent_reviews_are_refused(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        make_review(**change)


def test_review_events_round_trip_on_their_own_topic() -> None:
    review = make_review()
    topic, body = encode(review)
    assert topic == b"review.cam1"
    assert decode([topic, body]) == review
    assert decode_body(body) == review
    reject = make_review(decision="reject", status="rejected", confirmations=(), reviewer="bob")
    assert decode(list(encode(reject))) == reject
    data = json.loads(body)
    with pytest.raises(EventFormatError, match="malformed match event"):
        decode([b"match.cam1", body])
    with pytest.raises(EventFormatError, match="stream_id 'cam1'"):
        decode([b"review.cam2", body])
    with pytest.raises(EventFormatError, match="note: Field required"):
        decode([topic, json.dumps(_without(data, "note")).encode()])
    with pytest.raises(EventFormatError, match=r"schema_version '9\.0' is not supported"):
        decode([topic, json.dumps(data | {"schema_version": "9.0"}).encode()])


def test_whole_numbers_decode_as_floats() -> None:
    data = body_dict()
    data["frame_pts_s"] = 13
    event = decode(frames_of(data))
    assert isinstance(event, MatchEvent)
    assert event.frame_pts_s == 13.0


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize(
    ("frames", "fragment"),
    [
        ([b"match.cam1", b"{not json"], "Invalid JSON"),
        ([b"match.cam1", b"\xff\xfe"], "Invalid JSON"),
        ([b"match.cam1", b"[1, 2]"], "object"),
        (frames_of(body_dict() | {"schema_version": "2.0"}), "schema_version '2.0' is not supported"),
        (frames_of(body_dict() | {"schema_version": 1.0}), "schema_version"),
        (frames_of(_without(body_dict(), "subject_id")), "subject_id: Field required"),
        (frames_of(_without(body_dict(), "schema_version")), "schema_version: Field required"),
        (frames_of(body_dict() | {"operator": "x"}), "operator: Extra inputs are not permitted"),
        (frames_of(body_dict() | {"track_id": "7"}), "track_id"),
        (frames_of(body_dict() | {"distance": "0.41"}), "distance"),
        (frames_of(body_dict() | {"review": "confirmed"}), "review"),
        (frames_of(body_dict() | {"distance": 0.9, "distances": [0.9]}), "above the threshold"),
        ([b"match.cam1"], "expected 2 frames"),
        ([b"match.cam1", encode(make_event())[1], b"extra"], "expected 2 frames"),
        ([], "expected 2 frames"),
        ([b"alert.cam1", encode(make_event())[1]], "does not start with 'match.' or 'review.'"),
        (frames_of(_without(body_dict(), "template_label")), "template_label: Field required"),
        (
            frames_of(
                body_dict()
                | {"calibration": {"fmr_target": 0.001, "source": "x", "uncalibrated": False, "fair_map": False}}
            ),
            "calibration.fpir: Field required",
        ),
        (
            frames_of(
                body_dict() | {"calibration": {"fmr_target": 0.001, "source": "x", "uncalibrated": False, "fpir": None}}
            ),
            "calibration.fair_map: Field required",
        ),
        (
            frames_of(
                body_dict()
                | {
                    "schema_version": "1.1",
                    "calibration": {
                        "fmr_target": 0.001,
                        "source": "x",
                        "uncalibrated": False,
                        "fpir": None,
                        "fair_map": True,
                    },
                }
            ),
            "not part of schema 1.1",
        ),
        (frames_of(body_dict() | {"schema_version": "1.0", "template_label": 3}), "not part of schema 1.0"),
        ([b"review.cam1", encode(make_event())[1]], "malformed review event"),
        ([b"match.cam2", encode(make_event())[1]], "stream_id 'cam1'"),
    ],
)
def test_malformed_messages_raise_one_line_errors(frames: list[bytes], fragment: str) -> None:
    with pytest.raises(EventFormatError) as info:
        decode(frames)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, StreamprocError)


def test_format_error_never_echoes_the_face_image() -> None:
    data = body_dict() | {"face_jpeg_b64": "/9j/" + "A" * 10_000 + "!"}
    with pytest.raises(EventFormatError) as info:
        decode(frames_of(data))
    assert len(str(info.value)) < 400


# ------------------------------------------------------------------------------------------------ ids
def test_event_id_is_deterministic_and_depends_on_every_input() -> None:
    base = ("cam1", 4, "s-001", 12.5)
    eid = make_event_id(*base)
    assert eid == make_event_id(*base)
    assert len(eid) == 32
    assert int(eid, 16) >= 0
    others = {
        make_event_id("cam2", 4, "s-001", 12.5),
        make_event_id("cam1", 5, "s-001", 12.5),
        make_event_id("cam1", 4, "s-002", 12.5),
        make_event_id("cam1", 4, "s-001", 12.75),
    }
    assert eid not in others
    assert len(others) == 4
    assert make_event_id("cam1", 4, "s-001", 12) == make_event_id("cam1", 4, "s-001", 12.0)
    # Field boundaries count: moving characters between fields changes the id.
    assert make_event_id("ab", 1, "c", 0.0) != make_event_id("a", 1, "bc", 0.0)


# --------------------------------------------------------------------------------------------- schema
def test_committed_schema_equals_generated() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == json_schema_text(), (
        "streamproc/data/event.schema.json is stale: run "
        "`python -c 'from streamproc.feed.schema import write_json_schemas; write_json_schemas()'`"
    )
    assert REVIEW_SCHEMA_PATH.read_text(encoding="utf-8") == review_json_schema_text(), (
        "streamproc/data/review-event.schema.json is stale: run "
        "`python -c 'from streamproc.feed.schema import write_json_schemas; write_json_schemas()'`"
    )


def test_review_schema_describes_every_field() -> None:
    schema = review_json_schema()
    assert schema["$id"] == "urn:streamproc:review-event:1.1"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(schema["required"]) == set(ReviewEvent.model_fields)
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{name} has no description"
    assert schema["properties"]["type"]["const"] == "review"


def test_schema_describes_every_field() -> None:
    schema = json_schema()
    assert schema["$id"] == "urn:streamproc:match-event:1.2"
    assert schema["properties"]["schema_version"]["const"] == "1.2"
    for field in ("template_label", "gallery_size"):
        assert field in schema["required"]
    assert "fpir" in schema["$defs"]["CalibrationInfo"]["required"]
    assert "fair_map" in schema["$defs"]["CalibrationInfo"]["required"]
    assert schema["version"] == SCHEMA_VERSION
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(MatchEvent.model_fields)
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{name} has no description"
    for model in schema["$defs"].values():
        assert model["additionalProperties"] is False
        for name, prop in model["properties"].items():
            assert prop.get("description"), f"{name} has no description"
    assert schema["properties"]["review"]["const"] == "pending"
    assert schema["properties"]["notice"]["const"] == NOTICE


# ------------------------------------------------------------------------------------- real sockets
def warm_up(pub: EventPublisher, subs: list[EventSubscriber], streams: list[str], timeout_s: float = 15.0) -> None:
    """Publish warm-up events until each subscriber has received one: its subscription is then in place."""
    waiting = list(subs)
    deadline = time.monotonic() + timeout_s
    while waiting:
        assert time.monotonic() < deadline, "subscribers never connected"
        for stream in streams:
            pub.publish(make_event(stream=stream, subject=WARMUP))
        waiting = [sub for sub in waiting if sub.recv(timeout_s=0.05) is None]


def receive(sub: EventSubscriber, n: int, timeout_s: float = 15.0) -> list[MatchEvent]:
    """The next n events that are not warm-ups."""
    got: list[MatchEvent] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        event = sub.recv(timeout_s=0.2)
        if event is not None and event.subject_id != WARMUP:
            got.append(event)
    return got


def test_pub_sub_delivers_complete_in_order_and_filters_by_topic() -> None:
    with EventPublisher(ANY_PORT) as pub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:")
        assert not pub.endpoint.endswith("*")
        with (
            EventSubscriber(pub.endpoint) as everything,
            EventSubscriber(pub.endpoint, topics=["match.cam2"]) as cam2_only,
        ):
            warm_up(pub, [everything, cam2_only], ["cam1", "cam2"])
            sent = [make_event(stream=f"cam{1 + i % 2}", track=i) for i in range(20)]
            before = pub.sent
            for event in sent:
                pub.publish(event)
            assert pub.sent == before + 20
            got_all = receive(everything, 20)
            got_cam2 = receive(cam2_only, 10)
            leftover = receive(cam2_only, 1, timeout_s=0.3)  # a cam1 event would show up here
    assert got_all == sent
    assert got_cam2 == [e for e in sent if e.stream_id == "cam2"]
    assert leftover == []


def test_subscriber_reports_malformed_message_and_goes_on() -> None:
    context: zmq.SyncContext = zmq.Context()
    raw = context.socket(zmq.PUB)
    try:
        port = raw.bind_to_random_port("tcp://127.0.0.1")
        with EventSubscriber(f"tcp://127.0.0.1:{port}", context=context) as sub:
            deadline = time.monotonic() + 15
            while True:  # settle: valid warm-ups until one arrives
                assert time.monotonic() < deadline
                raw.send_multipart(list(encode(make_event(subject=WARMUP))))
                if sub.recv(timeout_s=0.05) is not None:
                    break
            raw.send_multipart([b"match.cam1", b"\x80\x04pickle?"])
            raw.send_multipart(list(encode(make_event(track=99))))
            with pytest.raises(EventFormatError):
                while True:
                    event = sub.recv(timeout_s=5)
                    assert event is not None
                    assert event.subject_id == WARMUP
            assert receive(sub, 1) == [make_event(track=99)]
    finally:
        raw.close(linger=0)
        context.term()


def test_recv_refuses_a_review_event_and_recv_any_takes_it() -> None:
    review = make_review()
    with EventPublisher(ANY_PORT) as pub, EventSubscriber(pub.endpoint, topics=["review."]) as sub:
        deadline = time.monotonic() + 15
        got = None
        while got is None:  # settle: re-send until the subscription is in place
            assert time.monotonic() < deadline, "subscriber never connected"
            pub.publish(review)
            got = sub.recv_any(timeout_s=0.05)
        assert got == review
        pub.publish(review)
        with pytest.raises(EventFormatError, match="use recv_any"):
            while True:
                sub.recv(timeout_s=5)


def test_recv_times_out_with_none() -> None:
    with EventPublisher(ANY_PORT) as pub, EventSubscriber(pub.endpoint) as sub:
        start = time.monotonic()
        assert sub.recv(timeout_s=0.2) is None
        assert 0.15 <= time.monotonic() - start < 5


def test_bind_failure_names_the_endpoint() -> None:
    with EventPublisher(ANY_PORT) as first:
        with pytest.raises(EventEndpointError) as info:
            EventPublisher(first.endpoint)
        assert first.endpoint in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(EventEndpointError, match="nonsense"):
        EventPublisher("nonsense")


def test_connect_failure_is_a_streamproc_error() -> None:
    with pytest.raises(EventEndpointError, match="cannot connect"):
        EventSubscriber("not-an-endpoint")


def test_close_is_idempotent_and_shared_context_survives() -> None:
    context: zmq.SyncContext = zmq.Context()
    try:
        pub = EventPublisher(ANY_PORT, context=context)
        pub.close()
        pub.close()
        assert not context.closed
    finally:
        context.term()


# ------------------------------------------------------------------------------------- events tail
@contextmanager
def publishing(interval_s: float = 0.02) -> Iterator[str]:
    """A publisher on a free port sending events until the block ends; yields its endpoint."""
    stop = threading.Event()
    with EventPublisher(ANY_PORT) as pub:

        def loop() -> None:
            track = 0
            while not stop.is_set():
                pub.publish(make_event(stream=f"cam{1 + track % 2}", track=track))
                track += 1
                stop.wait(interval_s)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield pub.endpoint
        finally:
            stop.set()
            thread.join()


runner = CliRunner()


def test_tail_prints_summaries_then_exits_0() -> None:
    with publishing() as endpoint:
        result = runner.invoke(events_app, ["tail", endpoint, "--count", "3", "--timeout", "20"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert "review: pending" in line
        assert "candidate=s-001 (Jane Example)" in line
        assert "distance=0.4100/threshold=0.5000" in line
        assert "2-of-3" in line


def test_tail_json_and_topic_filter() -> None:
    with publishing() as endpoint:
        result = runner.invoke(
            events_app, ["tail", endpoint, "--topic", "match.cam2", "--count", "3", "--timeout", "20", "--json"]
        )
    assert result.exit_code == 0, result.output
    events = [MatchEvent.model_validate_json(line) for line in result.stdout.splitlines()]
    assert len(events) == 3
    assert {e.stream_id for e in events} == {"cam2"}


def test_tail_times_out_with_exit_1() -> None:
    with EventPublisher(ANY_PORT) as silent:
        result = runner.invoke(events_app, ["tail", silent.endpoint, "--count", "1", "--timeout", "0.3"])
    assert result.exit_code == 1
    assert "timed out after 0.3 s: 0 of 1" in result.stderr
    assert result.stdout == ""


def test_tail_without_count_listens_for_timeout_and_exits_0() -> None:
    with EventPublisher(ANY_PORT) as silent:
        result = runner.invoke(events_app, ["tail", silent.endpoint, "--timeout", "0.2"])
    assert result.exit_code == 0


def test_tail_bad_endpoint_is_a_user_error() -> None:
    result = runner.invoke(events_app, ["tail", "not-an-endpoint", "--count", "1", "--timeout", "1"])
    assert isinstance(result.exception, StreamprocError)
    assert "not-an-endpoint" in str(result.exception)


def test_tail_does_not_interpret_markup_in_names() -> None:
    from streamproc.cli.events import summary

    line = summary(make_event(subject_name="[red]x[/red]"))
    assert "([red]x[/red])" in line
    assert f"event={make_event().event_id}" in line  # the whole id, as `review decide` takes it


def test_review_summary_says_who_decided_what() -> None:
    from streamproc.cli.events import summary

    line = summary(make_review(note="looks\nlike him"))
    assert "REVIEW event=" + make_event().event_id in line
    assert "confirm by alice -> pending (1/2 confirmations)" in line
    assert "note='looks like him'" in line
    assert line.endswith("seq=7")


TAIL = [sys.executable, "-c", "from streamproc.cli.events import events_app; events_app()", "tail"]


def test_tail_as_a_real_process() -> None:
    # streamproc.cli mounts events_app as `streamproc events`, so `streamproc events tail` is the same command.
    with publishing() as endpoint:
        done = subprocess.run(
            [*TAIL, endpoint, "--count", "3", "--timeout", "20"], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    assert all("review: pending" in line for line in done.stdout.splitlines())


def test_tail_as_a_real_process_times_out() -> None:
    with EventPublisher(ANY_PORT) as silent:
        done = subprocess.run(
            [*TAIL, silent.endpoint, "--count", "3", "--timeout", "0.5"], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert "timed out" in done.stderr
