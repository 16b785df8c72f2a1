"""Best-shot selection: best of each window, quality gate, shot cap and refresh, end flush, independence."""

from __future__ import annotations

import pytest

from streamproc.config import BestShotConfig
from streamproc.types import Quality
from streamproc.vision.bestshot import BestShotSelector, Shot

STEP = 0.25  # binary-exact frame times, so window edges are exact


def q(score: float, passed: bool = True) -> Quality:
    return Quality(
        score=score,
        face_px=80.0,
        sharpness=100.0,
        yaw=0.0,
        roll_deg=0.0,
        detector_score=0.9,
        reasons=() if passed else ("blurry",),
    )


def run(sel: BestShotSelector[str], track_id: int, frames: int, score: float = 0.5, start: int = 0) -> list[Shot[str]]:
    """Offer one face a frame, then call due() for that frame, as the pipeline does."""
    shots: list[Shot[str]] = []
    for i in range(start, start + frames):
        t = i * STEP
        sel.offer(track_id, t, q(score), f"{track_id}@{t}")
        shots += sel.due(t)
    return shots


def test_picks_the_best_face_of_the_window() -> None:
    sel: BestShotSelector[str] = BestShotSelector(BestShotConfig(window_s=1.0))
    for t, score in [(0.0, 0.3), (0.25, 0.9), (0.5, 0.6), (0.75, 0.8)]:
        sel.offer(7, t, q(score), f"f{t}")
        assert sel.due(t) == []
    (shot,) = sel.due(1.0)
    assert (shot.track_id, shot.t_s, shot.quality.score, shot.payload) == (7, 0.25, 0.9, "f0.25")
    assert sel.shots_taken(7) == 1
    assert sel.due(5.0) == []  # nothing offered since: no window open


def test_ties_keep_the_earliest_face() -> None:
    sel: BestShotSelector[str] = BestShotSelector(BestShotConfig(window_s=1.0))
    for t in (0.0, 0.25, 0.5):
        sel.offer(1, t, q(0.5), f"f{t}")
    assert [s.payload for s in sel.due(1.0)] == ["f0.0"]


def test_failing_faces_are_never_emitted() -> None:
    sel: BestShotSelector[str] = BestShotSelector(BestShotConfig(window_s=1.0))
    sel.offer(1, 0.0, q(0.99, passed=False), "bad")
    sel.offer(1, 0.25, q(0.2), "good")
    sel.offer(1, 0.5, q(0.95, passed=False), "bad")
    assert [s.payload for s in sel.due(1.0)] == ["good"]
    for i in range(8):  # a window of failing faces only yields nothing and costs no shot
        sel.offer(1, 1.0 + i * STEP, q(0.99, passed=False), "bad")
    assert sel.due(3.0) == [] and sel.shots_taken(1) == 1
    sel.offer(2, 0.0, q(0.9, passed=False), "bad")
    assert sel.end(2) == []


def test_cap_and_refresh_schedule() -> None:
    cfg = BestShotConfig(window_s=1.0, max_shots=2, refresh_s=5.0)
    sel: BestShotSelector[str] = BestShotSelector(cfg)
    shots = run(sel, 1, frames=68)  # t = 0 .. 16.75
    # Two windows back to back ([0, 1), [1, 2)), then one window every 5 s from the last shot's time.
    assert [s.t_s for s in shots] == [0.0, 1.0, 6.0, 11.0]
    assert sel.shots_taken(1) == 4
    assert [s.t_s for s in sel.end(1)] == [16.0]  # the refresh window opened at 16.0 is still pending


def test_refresh_is_measured_from_the_last_shot_time() -> None:
    cfg = BestShotConfig(window_s=1.0, max_shots=1, refresh_s=5.0)
    sel: BestShotSelector[str] = BestShotSelector(cfg)
    scores = [0.1, 0.2, 0.3, 0.9]  # the window's best is its last face, at 0.75
    for i, score in enumerate(scores):
        sel.offer(1, i * STEP, q(score), "x")
    assert [s.t_s for s in sel.due(1.0)] == [0.75]
    sel.offer(1, 5.5, q(0.9), "too early")  # 4.75 s after the shot: ignored
    assert sel.due(7.0) == []
    sel.offer(1, 5.75, q(0.9), "refresh")
    assert [s.payload for s in sel.due(6.75)] == ["refresh"]


def test_offer_after_the_window_end_starts_a_new_window() -> None:
    """Offering before calling due() for a frame must not put that face into the expired window."""
    sel: BestShotSelector[str] = BestShotSelector(BestShotConfig(window_s=1.0, max_shots=3))
    sel.offer(1, 0.0, q(0.2), "old")
    sel.offer(1, 1.0, q(0.9), "new")  # at the window's end: belongs to the next window
    assert [s.payload for s in sel.due(1.0)] == ["old"]
    assert [s.payload for s in sel.due(2.0)] == ["new"]


def test_end_flushes_the_pending_best_and_forgets_the_track() -> None:
    sel: BestShotSelector[str] = BestShotSelector(BestShotConfig(window_s=1.0))
    sel.offer(3, 0.0, q(0.4), "a")
    sel.offer(3, 0.25, q(0.7), "b")
    assert sel.due(0.5) == []
    assert [s.payload for s in sel.end(3)] == ["b"]
    assert sel.shots_taken(3) == 0 and sel.end(3) == [] and sel.due(10.0) == []
    assert sel.end(99) == []


def test_end_respects_the_cap() -> None:
    sel: BestShotSelector[str] = BestShotSelector(BestShotConfig(window_s=1.0, max_shots=1, refresh_s=10.0))
    run(sel, 1, frames=8)  # one shot at 0.0, then capped
    assert sel.shots_taken(1) == 1
    assert sel.end(1) == []


def test_tracks_are_independent() -> None:
    sel: BestShotSelector[str] = BestShotSelector(BestShotConfig(window_s=1.0, max_shots=1, refresh_s=10.0))
    run(sel, 1, frames=8)  # track 1 is capped
    shots = run(sel, 2, frames=5, score=0.8, start=8)  # track 2 opens its own window at 2.0
    assert [(s.track_id, s.t_s) for s in shots] == [(2, 2.0)]
    assert sel.shots_taken(1) == 1 and sel.shots_taken(2) == 1


def test_due_orders_shots_by_track() -> None:
    sel: BestShotSelector[str] = BestShotSelector(BestShotConfig(window_s=1.0))
    for tid in (5, 2, 9):
        sel.offer(tid, 0.0, q(0.5), str(tid))
    assert [s.track_id for s in sel.due(1.0)] == [2, 5, 9]


@pytest.mark.parametrize("max_shots", [1, 3, 5])
def test_never_more_than_max_shots_within_refresh(max_shots: int) -> None:
    cfg = BestShotConfig(window_s=0.5, max_shots=max_shots, refresh_s=100.0)
    sel: BestShotSelector[str] = BestShotSelector(cfg)
    shots = run(sel, 1, frames=200)
    assert len(shots) + len(sel.end(1)) == max_shots


def test_wants_predicts_exactly_whether_an_offer_is_used() -> None:
    """wants() must agree with what offer() does, so skipping unwanted faces changes no shot."""
    import random

    rng = random.Random(5)
    config = BestShotConfig(window_s=0.3, max_shots=2, refresh_s=2.0)
    skipping: BestShotSelector[int] = BestShotSelector(config)
    reference: BestShotSelector[int] = BestShotSelector(config)
    shots_a, shots_b = [], []
    skipped = 0
    t = 0.0
    for i in range(400):
        t += rng.choice([0.033, 0.066, 0.1])
        track = rng.choice([1, 2, 3])
        q = Quality(rng.random(), 80, 100, 0, 0, 0.9, () if rng.random() > 0.2 else ("blurry",))
        if skipping.wants(track, t):
            skipping.offer(track, t, q, i)
        else:
            skipped += 1
        reference.offer(track, t, q, i)
        shots_a += [(s.track_id, s.payload) for s in skipping.due(t)]
        shots_b += [(s.track_id, s.payload) for s in reference.due(t)]
    assert shots_a == shots_b and len(shots_a) > 6
    assert skipped > 100  # most offers come while tracks wait for their refresh


def test_keeps_predicts_exactly_which_offers_become_the_window_best() -> None:
    """keeps() must be True for every face that is later emitted, and False for faces a better one of the same
    window already beats: the front cuts a native view only for faces it keeps."""
    import random

    rng = random.Random(11)
    config = BestShotConfig(window_s=0.3, max_shots=2, refresh_s=1.0)
    marking: BestShotSelector[int] = BestShotSelector(config)
    reference: BestShotSelector[int] = BestShotSelector(config)
    shots_a, shots_b = [], []
    kept = passing = 0  # faces kept; faces that pass the gate while their track wants a shot
    t = 0.0
    for i in range(400):
        t += rng.choice([0.033, 0.066])
        track = rng.choice([1, 2])
        quality = Quality(rng.random(), 80, 100, 0, 0, 0.9, () if rng.random() > 0.2 else ("blurry",))
        keep = marking.keeps(track, t, quality)
        kept += keep
        passing += quality.passed and marking.wants(track, t)
        marking.offer(track, t, quality, i if keep else -1)  # -1: a face whose view was not cut
        reference.offer(track, t, quality, i)
        shots_a += [(s.track_id, s.payload) for s in marking.due(t)]
        shots_b += [(s.track_id, s.payload) for s in reference.due(t)]
    for track in (1, 2):
        shots_a += [(s.track_id, s.payload) for s in marking.end(track)]
        shots_b += [(s.track_id, s.payload) for s in reference.end(track)]
    assert shots_a == shots_b and len(shots_a) > 6  # no emitted shot lacks what keeps() prepared
    assert kept < 0.7 * passing  # a later, better face of the same window needs no view for the earlier ones
