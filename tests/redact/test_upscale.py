"""Adaptive upscaling: which frames take the upscaled detection pass, and the limit on its discovery cadence."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from streamproc.errors import ConfigError
from streamproc.redact.analyse import UpscaleSchedule
from streamproc.redact.settings import load_redact_config


def picks(every_s: float, fps: float, frames: int) -> list[int]:
    schedule = UpscaleSchedule(every_s, 1 / fps)
    return [k for k in range(frames) if schedule.upscale(round(k / fps, 4))]


@pytest.mark.parametrize("fps", [12.0, 25.0, 29.97, 30.0, 60.0])
def test_discovery_gap_never_exceeds_every_s(fps: float) -> None:
    """Upscaled frames are at most every_s apart, and not much closer (the cheap pass does the rest)."""
    chosen = picks(0.5, fps, int(fps * 10))
    gaps = [(b - a) / fps for a, b in itertools.pairwise(chosen)]
    assert chosen[0] == 0
    assert max(gaps) <= 0.5 + 1e-3
    assert min(gaps) > 0.5 - 1.01 / fps


def test_an_unsure_frame_upscales_the_following_every_s() -> None:
    schedule = UpscaleSchedule(0.5, 0.1)
    assert schedule.upscale(0.0)
    assert not schedule.upscale(0.1)
    schedule.unsure(0.1)
    assert all(schedule.upscale(t) for t in (0.2, 0.3, 0.4, 0.6))
    assert not schedule.upscale(0.7)  # 0.6 s after the unsure frame, 0.1 s after the last upscaled one


def test_every_s_zero_upscales_every_frame() -> None:
    assert picks(0.0, 30.0, 90) == list(range(90))


def test_discovery_slower_than_the_preroll_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "redact.yaml"
    path.write_text("detection:\n  discovery_s: 0.8\ntracking:\n  extend_s: 0.5\n")
    with pytest.raises(ConfigError, match="discovery_s"):
        load_redact_config(path)
    path.write_text("detection:\n  discovery_s: 0.25\n  upscale: always\n")
    cfg = load_redact_config(path)
    assert cfg.detection.discovery_s == 0.25 and cfg.detection.upscale == "always"
