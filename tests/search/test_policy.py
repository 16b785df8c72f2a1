"""Match policy: k-of-n agreement, one flag per (track, subject), stream cooldown, evidence in flags."""

from __future__ import annotations

import pytest

from streamproc.config import PolicyConfig
from streamproc.search.policy import Flag, MatchPolicy, ShotResult

THRESHOLD = 0.5


def shot(t: float, *candidates: tuple[str, float]) -> ShotResult:
    return ShotResult(t, tuple(candidates))


def policy(k: int = 2, n: int = 3, cooldown_s: float = 30.0) -> MatchPolicy:
    return MatchPolicy(PolicyConfig(k=k, n=n, cooldown_s=cooldown_s), THRESHOLD)


def test_a_single_under_threshold_shot_never_flags() -> None:
    """The single-blurry-frame rule: with k=2 one close shot is not enough, however close."""
    p = policy()
    assert p.observe(1, shot(0.0, ("alice", 0.01))) == []
    for i in range(1, 10):
        assert p.observe(1, shot(float(i), ("bob", 0.9))) == []


def test_two_of_three_flags_on_the_second_agreeing_shot() -> None:
    p = policy(k=2, n=3)
    assert p.observe(1, shot(0.0, ("alice", 0.42), ("bob", 0.6))) == []
    assert p.observe(1, shot(0.5, ("carol", 0.9))) == []  # over threshold: does not agree
    flags = p.observe(1, shot(1.0, ("alice", 0.31)))
    assert flags == [
        Flag(track_id=1, subject_id="alice", t_s=1.0, distances=(0.31, 0.42), agreeing=2, window=3, threshold=0.5)
    ]
    assert p.observe(1, shot(1.5, ("alice", 0.2))) == []  # (track, subject) flags once


def test_agreement_must_fall_within_the_last_n_shots() -> None:
    p = policy(k=2, n=3)
    p.observe(1, shot(0.0, ("alice", 0.3)))
    p.observe(1, shot(1.0, ("x", 0.9)))
    p.observe(1, shot(2.0, ("x", 0.9)))
    assert p.observe(1, shot(3.0, ("alice", 0.3))) == []  # the first one slid out of the window


def test_threshold_is_inclusive() -> None:
    p = policy(k=1, n=1)
    assert [f.subject_id for f in p.observe(1, shot(0.0, ("alice", THRESHOLD)))] == ["alice"]


def test_only_the_top_candidate_agrees() -> None:
    p = policy(k=2, n=3)
    assert p.observe(1, shot(0.0, ("bob", 0.2), ("alice", 0.3))) == []
    # alice is under the threshold on every shot, but only bob is rank 1
    assert [f.subject_id for f in p.observe(1, shot(1.0, ("bob", 0.2), ("alice", 0.3)))] == ["bob"]
    assert p.observe(1, shot(2.0, ("bob", 0.2), ("alice", 0.3))) == []
    assert p.observe(1, shot(3.0, ("alice", 0.1))) == []  # one agreeing shot for alice in the last three


def test_disagreeing_subjects_never_reach_k() -> None:
    p = policy(k=2, n=3)
    subjects = ["alice", "bob", "carol", "dave", "erin", "frank"]
    for i, subject in enumerate(subjects * 3):
        assert p.observe(1, shot(float(i), (subject, 0.1))) == []


def test_cooldown_across_tracks() -> None:
    p = policy(k=2, n=3, cooldown_s=30.0)
    p.observe(1, shot(0.0, ("alice", 0.3)))
    assert len(p.observe(1, shot(1.0, ("alice", 0.3)))) == 1
    p.observe(2, shot(10.0, ("alice", 0.3)))
    assert p.observe(2, shot(11.0, ("alice", 0.3))) == []  # same subject, other track, 10 s later
    p.observe(3, shot(12.0, ("bob", 0.3)))
    assert [f.subject_id for f in p.observe(3, shot(13.0, ("bob", 0.3)))] == ["bob"]  # other subject: free
    assert [f.track_id for f in p.observe(2, shot(31.0, ("alice", 0.3)))] == [2]  # cooldown over


def test_cooldown_zero_allows_every_track() -> None:
    p = policy(k=1, n=1, cooldown_s=0.0)
    assert len(p.observe(1, shot(0.0, ("alice", 0.3)))) == 1
    assert len(p.observe(2, shot(0.0, ("alice", 0.3)))) == 1


def test_media_time_restart_clears_cooldown() -> None:
    p = policy(k=1, n=1)
    assert len(p.observe(1, shot(100.0, ("alice", 0.3)))) == 1
    assert len(p.observe(2, shot(1.0, ("alice", 0.3)))) == 1  # a new clip started at 0


def test_flags_carry_distances_best_first_and_the_threshold() -> None:
    p = MatchPolicy(PolicyConfig(k=3, n=5), threshold=0.6)
    p.observe(4, shot(0.0, ("alice", 0.55)))
    p.observe(4, shot(0.5, ("alice", 0.21)))
    (flag,) = p.observe(4, shot(1.0, ("alice", 0.4)))
    assert flag.distances == (0.21, 0.4, 0.55)
    assert (flag.agreeing, flag.window, flag.threshold) == (3, 3, 0.6)


def test_end_track_frees_memory_and_restarts_the_count() -> None:
    p = policy(k=2, n=3, cooldown_s=0.0)
    p.observe(1, shot(0.0, ("alice", 0.3)))
    p.end_track(1)
    assert p._tracks == {}
    assert p.observe(1, shot(1.0, ("alice", 0.3))) == []  # history was dropped
    p.end_track(1)
    p.end_track(42)  # unknown track: no error


def test_k_above_n_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"k \(4\) must be <= n \(3\)"):
        PolicyConfig(k=4, n=3)  # the config names the key path
    with pytest.raises(ValueError, match="k must be <= n"):  # and the policy refuses unvalidated input too
        MatchPolicy(PolicyConfig.model_construct(k=4, n=3, cooldown_s=0.0), THRESHOLD)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_threshold_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        MatchPolicy(PolicyConfig(), bad)


def test_unsorted_candidates_are_rejected() -> None:
    with pytest.raises(ValueError, match="ascending"):
        shot(0.0, ("alice", 0.5), ("bob", 0.2))


def test_empty_search_result_agrees_with_nobody() -> None:
    p = policy(k=1, n=1)
    assert p.observe(1, shot(0.0)) == []
