"""The worker → embed service wire format: round trips, and one-line refusals of anything malformed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamproc.messages import BestShot, StreamOpened, TrackEnded
from streamproc.runtime.wire import WireError, decode, encode
from streamproc.types import Quality


def shot(chip: np.ndarray | None = None) -> BestShot:
    rng = np.random.default_rng(0)
    return BestShot(
        stream_id="cam-1",
        session="1700000000.5",
        track_id=7,
        track_start_s=1.25,
        t_s=2.5,
        box=(10.0, 20.0, 110.0, 140.0),
        captured_at=1_700_000_002.5,
        sent_at=1_700_000_002.6,
        quality=Quality(0.8, 120.0, 300.0, 0.1, 2.0, 0.99, ("blur",)),
        timings_ms={"detect": 9.5, "track": 0.2},
        chip=rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) if chip is None else chip,
    )


def test_best_shot_round_trips_bit_exact() -> None:
    original = shot()
    frames = encode(original)
    assert len(frames) == 2 and len(frames[1]) == 150 * 150 * 3
    back = decode(frames)
    assert isinstance(back, BestShot)
    assert np.array_equal(back.chip, original.chip) and back.chip.dtype == np.uint8
    assert back.quality == original.quality
    assert (back.stream_id, back.session, back.track_id, back.track_start_s, back.t_s, back.box) == (
        original.stream_id,
        original.session,
        original.track_id,
        original.track_start_s,
        original.t_s,
        original.box,
    )
    assert back.timings_ms == original.timings_ms


def test_non_contiguous_chips_are_sent_in_c_order() -> None:
    chip = np.arange(150 * 150 * 3, dtype=np.uint32).astype(np.uint8).reshape(150, 150, 3)[:, :, ::-1]
    back = decode(encode(shot(chip)))
    assert isinstance(back, BestShot)
    assert np.array_equal(back.chip, chip)


@pytest.mark.parametrize("message", [StreamOpened("cam-1", ""), TrackEnded("cam-1", "", 3)])
def test_control_messages_round_trip(message: StreamOpened | TrackEnded) -> None:
    frames = encode(message)
    assert len(frames) == 1
    assert decode(frames) == message


def test_the_header_is_plain_json_not_pickle() -> None:
    header = json.loads(encode(shot())[0])
    assert header["v"] == 1 and header["kind"] == "shot" and header["chip_shape"] == [150, 150, 3]


@pytest.mark.parametrize(
    ("frames", "why"),
    [
        ([], "empty"),
        ([b"\x80\x04pickle"], "bad message header"),
        ([b'{"v": 2, "kind": "open", "stream_id": "a", "session": ""}'], "bad message header"),
        ([b'{"v": 1, "kind": "nope", "stream_id": "a", "session": ""}'], "bad message header"),
        ([b'{"v": 1, "kind": "open", "stream_id": "a", "session": ""}', b"extra"], "expected 1 frame"),
        ([b'{"v": 1, "kind": "open", "stream_id": "a", "session": "yesterday"}'], "bad message header"),
    ],
)
def test_malformed_messages_are_refused_in_one_line(frames: list[bytes], why: str) -> None:
    with pytest.raises(WireError, match=why) as info:
        decode(frames)
    assert "\n" not in str(info.value)


def test_a_chip_whose_bytes_do_not_match_its_shape_is_refused() -> None:
    header, chip = encode(shot())
    with pytest.raises(WireError, match="does not match shape"):
        decode([header, chip[:-1]])
    with pytest.raises(WireError, match="expected 2 frame"):
        decode([header])


def test_live_sessions_order_by_start_time() -> None:
    from streamproc.runtime.matcher import _older

    assert _older("1700000000.000001", "1700000005.5")
    assert not _older("1700000005.5", "1700000000.000001")
    assert not _older("", "") and not _older("", "1700000000.1")  # files have one session
