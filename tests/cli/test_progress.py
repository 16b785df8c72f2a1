"""`streamproc run`'s progress: frames done / total, fps and time left per stream (issue 11, defect 7).

Real clips encoded with PyAV, a real metrics registry counted by the pipeline's own metrics class, and
`streamproc run` as a real process whose stderr is a pipe (not a terminal): it logs progress lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from io import StringIO
from pathlib import Path

import pytest
from bad_input_workspace import CLIP_FRAMES, make_clip
from prometheus_client import CollectorRegistry
from rich.console import Console
from support import STREAMPROC, free_port, sface_identity

from streamproc.cli.progress import RunProgress, expected_frames
from streamproc.config import SourceConfig
from streamproc.metrics import PipelineMetrics
from streamproc.search.watchlist import Watchlist


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    make_clip(folder / "a.mp4", faststart=True)  # CLIP_FRAMES frames at 12 fps
    make_clip(folder / "b.mp4", faststart=False)
    return folder


def source(url: str | Path, **kw: object) -> SourceConfig:
    return SourceConfig.model_validate({"id": "cam1", "url": str(url), **kw})


def test_the_total_is_known_for_files_and_folders_only(clips: Path) -> None:
    assert expected_frames(source(clips / "a.mp4")) == CLIP_FRAMES
    assert expected_frames(source(clips / "b.mp4", max_fps=6)) == CLIP_FRAMES // 2  # 12 fps sampled to 6
    assert expected_frames(source(clips)) == 2 * CLIP_FRAMES
    assert expected_frames(source(clips / "a.mp4", loop=True)) is None
    assert expected_frames(source("rtsp://127.0.0.1:9/cam")) is None


def test_a_terminal_shows_frames_of_total_fps_and_time_left(clips: Path) -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    sources = [source(clips / "a.mp4"), SourceConfig.model_validate({"id": "cam2", "url": "rtsp://127.0.0.1:9/x"})]
    with RunProgress(registry, sources, console):
        for _ in range(CLIP_FRAMES // 2):
            metrics.frames_processed.labels(stream="cam1").inc()
            metrics.frames_processed.labels(stream="cam2").inc(2)
            time.sleep(0.08)
    last = screen.getvalue().rsplit("\x1b[2K", 1)[1].splitlines()  # the display's final frame: a line per stream
    cam1 = next(line for line in last if line.startswith("cam1"))
    cam2 = next(line for line in last if line.startswith("cam2"))
    assert f"{CLIP_FRAMES // 2}/{CLIP_FRAMES} frames" in cam1 and "50%" in cam1, cam1
    assert re.search(r" \d+\.\d fps 0:00:0\d", cam1), cam1  # fps and time left
    assert f"{CLIP_FRAMES}/? " in cam2 and re.search(r" \d+\.\d fps", cam2), cam2  # no total: frames and fps


def test_without_a_terminal_run_logs_a_progress_line_every_n_seconds(clips: Path, tmp_path: Path) -> None:
    watchlist = tmp_path / "wl"
    Watchlist.create(watchlist, sface_identity()).close()
    config = tmp_path / "run.yaml"
    config.write_text(
        f"sources:\n  - id: cam1\n    url: {clips / 'a.mp4'}\n    realtime: true\n"  # 2 s at the clip's pace
        f"watchlist:\n  path: {watchlist}\nevents:\n  endpoint: tcp://127.0.0.1:{free_port()}\nmetrics:\n  port: null\n"
    )
    env = {**os.environ, "COLUMNS": "200"}
    argv = [STREAMPROC, "run", str(config), "--progress-every", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("progress: ")]
    assert lines, done.stderr
    assert all(
        re.fullmatch(
            rf"progress: cam1 \d+/{CLIP_FRAMES} frames \(\d+%\), \d+\.\d fps(, \d:\d\d:\d\d left|, done)?", line
        )
        for line in lines
    ), lines
    assert any(" left" in line for line in lines), lines
    quiet = subprocess.run([*argv, "--quiet"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert quiet.returncode == 0 and "progress: " not in quiet.stderr, quiet.stderr
