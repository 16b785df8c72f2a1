"""Face tracker: IoU, id stability through motion, crossings and gaps, confirmation, low-score handling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config_recognition import TrackerConfig
from streamproc.types import Detections
from streamproc.vision import track
from streamproc.vision.track import FaceTracker, TrackerOutput, iou_matrix, kf_init, kf_predict, kf_predict_mean

FPS = 25.0


def dets(*faces: tuple[float, float, float, float, float]) -> Detections:
    """Detections from (x1, y1, x2, y2, score) rows."""
    rows = np.array(faces, np.float32).reshape(-1, 5)
    n = rows.shape[0]
    return Detections(
        boxes=np.ascontiguousarray(rows[:, :4]),
        scores=np.ascontiguousarray(rows[:, 4]),
        landmarks=np.zeros((n, 5, 2), np.float32),
    )


def face(cx: float, cy: float, size: float, score: float = 0.9) -> tuple[float, float, float, float, float]:
    return (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2, score)


def ids(out: TrackerOutput) -> list[int]:
    return [a.track_id for a in out.active]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
        ((0, 0, 10, 10), (5, 5, 15, 15), 25 / 175),
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),  # disjoint
        ((0, 0, 10, 10), (2, 2, 8, 8), 36 / 100),  # contained
        ((0, 0, 0, 10), (0, 0, 0, 10), 0.0),  # degenerate: no area, no NaN
    ],
)
def test_iou_table(a: Sequence[float], b: Sequence[float], expected: float) -> None:
    got = iou_matrix(np.array([a], np.float32), np.array([b], np.float32))
    assert got.shape == (1, 1)
    assert got[0, 0] == pytest.approx(expected)
    assert iou_matrix(np.array([b]), np.array([a]))[0, 0] == pytest.approx(expected)  # symmetric


def test_iou_matrix_shapes() -> None:
    assert iou_matrix(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert iou_matrix(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)


def test_kalman_predict_is_consistent_across_step_sizes() -> None:
    mean, cov = kf_init(np.array([0, 0, 40, 40], np.float32))
    mean = mean.copy()
    mean[4] = 100.0  # 100 px/s to the right
    one_mean, _ = kf_predict(mean, cov, 0.2)
    two_mean, _ = kf_predict(*kf_predict(mean, cov, 0.1), 0.1)
    zero_mean, zero_cov = kf_predict(mean, cov, 0.0)
    np.testing.assert_allclose(one_mean, two_mean)
    assert one_mean[0] == pytest.approx(20.0 + 20.0)
    assert zero_mean is mean and zero_cov is cov


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(1e-3, 3.0))
def test_kalman_predict_is_the_constant_velocity_model(seed: int, dt: float) -> None:
    """x' = F x, P' = F P F^T + Q with Q the white-acceleration-plus-walk noise, each block times eye(4)."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 50.0, 8)
    mean[2:4] = np.abs(mean[2:4]) + 5.0
    a = rng.normal(size=(8, 8))
    cov = a @ a.T
    f = np.eye(8)
    f[:4, 4:] = dt * np.eye(4)
    s = max(mean[3], 1.0)
    q_acc, q_walk = (track._ACC_STD * s) ** 2, (track._POS_WALK_STD * s) ** 2
    block = np.array([[q_acc * dt**3 / 3 + q_walk * dt, q_acc * dt**2 / 2], [q_acc * dt**2 / 2, q_acc * dt]])
    want_cov = f @ cov @ f.T + np.kron(block, np.eye(4))
    got_mean, got_cov = kf_predict(mean, cov, dt)
    np.testing.assert_allclose(got_mean, f @ mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got_cov, want_cov, rtol=1e-12, atol=1e-9 * np.abs(want_cov).max())
    np.testing.assert_array_equal(kf_predict_mean(mean, dt), got_mean)


def test_linear_motion_keeps_one_id() -> None:
    tracker = FaceTracker(TrackerConfig())
    seen: set[int] = set()
    started: list[int] = []
    for i in range(50):
        out = tracker.update(dets(face(50 + 8 * i, 200 + 2 * i, 60)), i / FPS)
        seen.update(ids(out))
        started.extend(out.started)
        assert not out.ended
        if i >= 1:  # min_hits=2: confirmed on the second frame
            assert ids(out) == [1]
    assert seen == {1} and started == [1]
    assert tracker.flush() == (1,)
    assert tracker.live_count == 0


def test_irregular_sampling_keeps_one_id() -> None:
    tracker = FaceTracker(TrackerConfig())
    times = np.cumsum([0.0, 0.04, 0.04, 0.2, 0.0, 0.04, 0.3, 0.08, 0.04, 0.12])  # includes dt = 0
    for t in times:
        out = tracker.update(dets(face(100 + 60 * t, 100, 50)), float(t))
    assert ids(out) == [1]
    assert tracker.live_count == 1


@pytest.mark.parametrize("occlude_small", [False, True])
def test_crossing_faces_keep_their_ids(occlude_small: bool) -> None:
    """A large face moving right passes in front of a small one moving left."""
    tracker = FaceTracker(TrackerConfig())
    id_of: dict[str, int] = {}
    for i in range(60):
        t = i / FPS
        big = face(100 + 6 * i, 300, 90)
        small = face(460 - 6 * i, 305, 45)
        overlapping = abs((100 + 6 * i) - (460 - 6 * i)) < 50
        rows = [big] if occlude_small and overlapping else [big, small]
        out = tracker.update(dets(*rows), t)
        for a in out.active:
            name = "big" if a.det_index == 0 else "small"
            assert id_of.setdefault(name, a.track_id) == a.track_id, f"frame {i}: {name} changed id"
        assert not out.ended
    assert id_of == {"big": 1, "small": 2}


def test_short_gap_keeps_id_near_prediction() -> None:
    cfg = TrackerConfig(max_lost_s=1.0)
    tracker = FaceTracker(cfg)
    for i in range(20):
        out = tracker.update(dets(face(100 + 5 * i, 200, 60)), i / FPS)
    assert ids(out) == [1]
    for i in range(20, 40):  # 0.8 s unseen: lost, not ended
        out = tracker.update(Detections.empty(), i / FPS)
        assert out.active == () and out.ended == ()
        assert tracker.live_count == 1
    out = tracker.update(dets(face(100 + 5 * 40, 200, 60)), 40 / FPS)  # where constant velocity puts it
    assert ids(out) == [1] and out.started == ()


def test_long_gap_ends_the_track_and_a_new_id_follows() -> None:
    tracker = FaceTracker(TrackerConfig(max_lost_s=0.5))
    for i in range(10):
        tracker.update(dets(face(200, 200, 60)), i / FPS)
    ended: list[int] = []
    for i in range(10, 30):
        ended.extend(tracker.update(Detections.empty(), i / FPS).ended)
    assert ended == [1]
    assert tracker.live_count == 0
    tracker.update(dets(face(200, 200, 60)), 30 / FPS)
    out = tracker.update(dets(face(200, 200, 60)), 31 / FPS)
    assert ids(out) == [2] and out.started == (2,)


def test_a_gap_longer_than_max_lost_in_one_step_ends_at_once() -> None:
    tracker = FaceTracker(TrackerConfig(max_lost_s=1.0))
    tracker.update(dets(face(200, 200, 60)), 0.0)
    tracker.update(dets(face(200, 200, 60)), 0.04)
    out = tracker.update(Detections.empty(), 2.0)
    assert out.ended == (1,)


def test_single_frame_spurious_detection_is_never_confirmed() -> None:
    tracker = FaceTracker(TrackerConfig(min_hits=2))
    outs = [tracker.update(dets(face(300, 300, 50)), 0.0)]
    outs += [tracker.update(Detections.empty(), i / FPS) for i in range(1, 30)]
    assert all(o.active == () and o.started == () and o.ended == () for o in outs)
    assert tracker.live_count == 0
    assert tracker.flush() == ()
    tracker.update(dets(face(10, 10, 50)), 0.0)  # no id was spent on the spurious one
    assert tracker.update(dets(face(10, 10, 50)), 0.04).started == (1,)


def test_min_hits_one_confirms_at_once() -> None:
    tracker = FaceTracker(TrackerConfig(min_hits=1))
    out = tracker.update(dets(face(100, 100, 50)), 0.0)
    assert out.started == (1,) and ids(out) == [1]


def test_min_hits_counts_matched_frames() -> None:
    tracker = FaceTracker(TrackerConfig(min_hits=3))
    outs = [tracker.update(dets(face(100, 100, 50)), i / FPS) for i in range(3)]
    assert [o.started for o in outs] == [(), (), (1,)]


def test_low_score_detections_extend_but_never_start() -> None:
    cfg = TrackerConfig(high_score=0.6, low_score=0.3, max_lost_s=0.2)
    tracker = FaceTracker(cfg)
    for i in range(30):  # only low-score detections: nothing ever starts
        assert tracker.update(dets(face(100, 100, 50, 0.45)), i / FPS) == TrackerOutput((), (), ())
    tracker.flush()

    tracker.update(dets(face(100, 100, 50, 0.9)), 0.0)
    tracker.update(dets(face(100, 100, 50, 0.9)), 0.04)
    for i in range(2, 40):  # 1.5 s of low scores, far beyond max_lost_s: extended, not lost
        out = tracker.update(dets(face(100 + i, 100, 50, 0.45)), i / FPS)
        assert ids(out) == [1] and out.active[0].det_index == 0 and out.ended == ()
    below = tracker.update(dets(face(140, 100, 50, 0.1)), 40 / FPS)  # under low_score: ignored
    assert below.active == ()


def test_low_score_detections_keep_a_tentative_track_but_never_confirm_it() -> None:
    # A small face found at 0.9 by a native tile, then seen at 0.45 by its window: the tentative track waits
    # for its next confident frame and is confirmed then, with no id spent before.
    tracker = FaceTracker(TrackerConfig(high_score=0.6, low_score=0.3, min_hits=2, max_lost_s=0.2))
    assert tracker.update(dets(face(100, 100, 48, 0.92)), 0.0) == TrackerOutput((), (), ())
    for i in range(1, 5):  # 0.16 s of unsure frames: kept, not confirmed
        assert tracker.update(dets(face(100 + i, 100, 48, 0.45)), i / FPS) == TrackerOutput((), (), ())
    out = tracker.update(dets(face(105, 100, 48, 0.62)), 5 / FPS)
    assert out.started == (1,) and ids(out) == [1]


def test_low_score_detections_hold_a_tentative_track_only_for_max_lost() -> None:
    tracker = FaceTracker(TrackerConfig(high_score=0.6, low_score=0.3, min_hits=2, max_lost_s=0.2))
    tracker.update(dets(face(100, 100, 48, 0.92)), 0.0)
    for i in range(1, 10):  # 0.36 s of unsure frames, beyond max_lost_s: the tentative track goes
        tracker.update(dets(face(100, 100, 48, 0.45)), i / FPS)
    out = tracker.update(dets(face(100, 100, 48, 0.9)), 10 / FPS)  # starts a fresh tentative track
    assert out == TrackerOutput((), (), ())
    assert tracker.update(dets(face(100, 100, 48, 0.9)), 11 / FPS).started == (1,)


def test_low_score_detection_does_not_revive_a_lost_track() -> None:
    tracker = FaceTracker(TrackerConfig(max_lost_s=1.0))
    tracker.update(dets(face(100, 100, 50)), 0.0)
    tracker.update(dets(face(100, 100, 50)), 0.04)
    tracker.update(Detections.empty(), 0.08)  # lost
    assert tracker.update(dets(face(100, 100, 50, 0.4)), 0.12).active == ()
    assert ids(tracker.update(dets(face(100, 100, 50, 0.9)), 0.16)) == [1]


def test_predict_reports_each_track_s_key_idle_frames_and_state() -> None:
    tracker = FaceTracker(TrackerConfig(min_hits=2, max_lost_s=1.0))
    tracker.update(dets(face(100, 100, 50)), 0.0)
    tracker.update(dets(face(100, 100, 50), face(400, 100, 50)), 0.04)  # the first is confirmed, a second starts
    tracker.update(dets(face(400, 100, 50)), 0.08)  # the first misses a frame, the second is confirmed
    p = tracker.predict(0.12)
    assert p.boxes.shape == (2, 4) and p.keys.tolist() == [0, 1]
    assert p.idle.tolist() == [1, 0] and p.ids.tolist() == [1, 2] and p.confirmed.tolist() == [True, True]
    assert tracker.predict(0.12).keys.tolist() == [0, 1]  # looking changes nothing


def test_a_track_not_searched_is_carried_unchanged_instead_of_lost() -> None:
    """The schedule skips a steady track's window on every other frame: that frame is no miss, so the track
    stays confirmed and an unsure detection on the next frame still extends it (a lost one may not: above)."""
    tracker = FaceTracker(TrackerConfig(max_lost_s=1.0))
    tracker.update(dets(face(100, 100, 50)), 0.0)
    tracker.update(dets(face(100, 100, 50)), 0.04)
    key = int(tracker.predict(0.08).keys[0])
    assert tracker.update(Detections.empty(), 0.08, unsearched={key}) == TrackerOutput((), (), ())
    assert tracker.predict(0.12).idle.tolist() == [1]
    assert ids(tracker.update(dets(face(100, 100, 50, 0.4)), 0.12)) == [1]
    # a tentative track that is not looked for waits too, where a searched miss drops it
    tracker.update(dets(face(400, 100, 50)), 0.16)
    new = int(tracker.predict(0.2).keys[-1])
    tracker.update(dets(face(100, 100, 50)), 0.2, unsearched={new})
    assert tracker.update(dets(face(100, 100, 50), face(400, 100, 50)), 0.24).started == (2,)


def test_max_lost_ends_a_track_even_when_it_was_not_searched() -> None:
    tracker = FaceTracker(TrackerConfig(max_lost_s=0.2))
    tracker.update(dets(face(100, 100, 50)), 0.0)
    tracker.update(dets(face(100, 100, 50)), 0.04)
    key = int(tracker.predict(0.08).keys[0])
    ended = [tracker.update(Detections.empty(), i / FPS, unsearched={key}).ended for i in range(2, 9)]
    assert ended == [(), (), (), (), (), (1,), ()]


def test_time_going_backwards_ends_tracks() -> None:
    tracker = FaceTracker(TrackerConfig())
    tracker.update(dets(face(100, 100, 50)), 5.0)
    tracker.update(dets(face(100, 100, 50)), 5.04)
    out = tracker.update(dets(face(100, 100, 50)), 0.0)  # next clip of a folder source
    assert out.ended == (1,) and out.active == ()
    assert tracker.update(dets(face(100, 100, 50)), 0.04).started == (2,)


def test_rejects_non_finite_time() -> None:
    with pytest.raises(ValueError, match="finite"):
        FaceTracker(TrackerConfig()).update(Detections.empty(), float("nan"))


def test_rejects_low_above_high() -> None:
    with pytest.raises(ValueError, match="low_score"):
        TrackerConfig(low_score=0.8, high_score=0.5)
    with pytest.raises(ValueError, match="low_score"):
        FaceTracker(
            TrackerConfig.model_construct(low_score=0.8, high_score=0.5, match_iou=0.3, min_hits=2, max_lost_s=1)
        )


def test_instances_have_independent_id_counters() -> None:
    a, b = FaceTracker(TrackerConfig()), FaceTracker(TrackerConfig())
    for i in range(3):
        oa = a.update(dets(face(100, 100, 50), face(300, 100, 50)), i / FPS)
        ob = b.update(dets(face(100, 100, 50)), i / FPS)
    assert ids(oa) == [1, 2] and ids(ob) == [1]


_box = st.tuples(
    st.floats(-50, 700, allow_nan=False),
    st.floats(-50, 500, allow_nan=False),
    st.floats(0.0, 200, allow_nan=False),
    st.floats(0.0, 200, allow_nan=False),
    st.floats(0.0, 1.0, allow_nan=False),
).map(lambda r: (r[0], r[1], r[0] + r[2], r[1] + r[3], r[4]))
_frames = st.lists(
    st.tuples(st.floats(0.0, 0.7, allow_nan=False), st.lists(_box, max_size=8)),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(frames=_frames, min_hits=st.integers(1, 3))
def test_random_detections_keep_ids_unique_and_increasing(
    frames: list[tuple[float, list[tuple[float, float, float, float, float]]]], min_hits: int
) -> None:
    cfg = TrackerConfig(min_hits=min_hits, max_lost_s=0.5)
    tracker = FaceTracker(cfg)
    t = 0.0
    started: list[int] = []
    ended: set[int] = set()
    for dt, rows in frames:
        t += dt
        d = dets(*rows) if rows else Detections.empty()
        out = tracker.update(d, t)
        for tid in out.started:
            assert not started or tid > started[-1]
            started.append(tid)
        assert not ended & set(out.ended)
        assert set(out.ended) <= set(started)
        ended.update(out.ended)
        active_ids = ids(out)
        rows_used = [a.det_index for a in out.active]
        assert len(set(active_ids)) == len(active_ids) and len(set(rows_used)) == len(rows_used)
        assert set(active_ids) <= set(started) - ended
        assert all(0 <= r < len(d) and d.scores[r] >= cfg.low_score for r in rows_used)
        assert tracker.live_count == len(started) - len(ended)
    assert started == list(range(1, len(started) + 1))  # dense ids from 1
    assert set(tracker.flush()) == set(started) - ended
    assert tracker.live_count == 0
