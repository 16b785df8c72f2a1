"""`streamproc run`'s end-of-run summary: one format in both process layouts, with the reasons behind its numbers.

Real processes, real video (a clip encoded with PyAV, the Hamilton clip), a real RTSP URL nobody answers; nothing
of the pipeline is mocked. Issue 11, defects 3, 9, 10 and the "one summary format" item of 11.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from bad_input_workspace import CLIP_FRAMES, make_clip
from prometheus_client import CollectorRegistry
from support import STREAMPROC, free_port, make_watchlist, sface_identity

from streamproc.config import SourceConfig
from streamproc.metrics import PipelineMetrics
from streamproc.runtime.summary import StreamReport, render, summarise
from streamproc.search.watchlist import Watchlist

HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"
LAYOUTS = {"one process": "", "supervised": "scale:\n  workers: 1\n"}


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [STREAMPROC, "run", str(config), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def write_config(path: Path, source: str, watchlist: Path, extra: str = "") -> Path:
    path.write_text(
        f"sources:\n  - id: cam1\n    url: {source}\n    camera: fixed\n"
        f"    open_timeout_s: 2\n    reconnect: {{initial_s: 0.1, jitter: 0.0, max_attempts: 2}}\n"
        f"watchlist:\n  path: {watchlist}\nevents:\n  endpoint: tcp://127.0.0.1:{free_port()}\n"
        f"metrics:\n  port: null\n{extra}"
    )
    return path


@pytest.fixture(scope="module")
def empty_watchlist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wl") / "wl"
    Watchlist.create(path, sface_identity()).close()
    return path


def test_a_file_cut_short_is_named_in_the_same_summary_in_both_layouts(empty_watchlist: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp4"
    make_clip(whole, faststart=True)  # index first: the cut file still opens and declares all its frames
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    lines: dict[str, list[str]] = {}
    for layout, extra in LAYOUTS.items():
        done = run(write_config(tmp_path / f"{len(lines)}.yaml", str(cut), empty_watchlist, extra), "--quiet")
        assert done.returncode == 0, done.stderr
        lines[layout] = done.stdout.splitlines()
        assert len(lines[layout]) == 1, done.stdout
        assert lines[layout][0].endswith(f"match event(s); 1 file(s) cut short: {cut}"), done.stdout
        frames = int(lines[layout][0].split(": ")[1].split()[0])
        assert 0 < frames < CLIP_FRAMES
    assert lines["one process"] == lines["supervised"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_camera_never_reached_has_its_own_summary_line_and_exit_status_3(
    empty_watchlist: Path, tmp_path: Path, layout: str
) -> None:
    config = write_config(
        tmp_path / "cam.yaml", f"rtsp://127.0.0.1:{free_port()}/none", empty_watchlist, LAYOUTS[layout]
    )
    done = run(config, "--quiet")
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout.startswith("cam1: never connected (2 reconnect attempt(s)), 0 frames; FAILED: "), done.stdout
    assert "gave up after 2 reconnect attempts" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_camera_retried_until_stopped_says_never_connected_and_exits_3(empty_watchlist: Path, tmp_path: Path) -> None:
    """The default: retry forever. Stopped by the operator, the run still says the camera was never reached."""
    config = write_config(tmp_path / "cam.yaml", f"rtsp://127.0.0.1:{free_port()}/none", empty_watchlist)
    config.write_text(config.read_text().replace("max_attempts: 2", "max_attempts: null"))
    env = {**os.environ, "COLUMNS": "400"}
    proc = subprocess.Popen(
        [STREAMPROC, "run", str(config), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 120
        seen = ""
        assert proc.stderr is not None
        while "reconnect attempt 2 " not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, (out, seen)
    assert out.startswith("cam1: never connected ("), out
    assert "FAILED" not in out  # stopped by the operator, not given up


def test_the_summary_counts_come_from_the_metrics_and_the_reports() -> None:
    """The value both layouts render: resends, cut files, other source errors, and which failure wins."""
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    sources = [
        SourceConfig.model_validate({"id": "a", "url": "/videos"}),
        SourceConfig.model_validate({"id": "b", "url": "rtsp://cam/b"}),
    ]
    for source in sources:
        metrics.init_stream(source.id)
    metrics.frames_processed.labels(stream="a").inc(40)
    metrics.frames_decoded.labels(stream="a").inc(40)
    metrics.events_resent.labels(stream="a").inc(2)
    metrics.source_errors.labels(stream="a").inc(3)  # one cut file, two skipped ones
    metrics.source_reconnects.labels(stream="b").inc(5)
    summary = summarise(registry, sources, {"a": StreamReport(cut_short=("/videos/x.mp4",))})
    assert render(summary) == [
        "a: 40 frames, 0 faces, 0 tracks, 0 best shots embedded, 0 match event(s); 2 event(s) already published "
        "earlier, not sent again; 1 file(s) cut short: /videos/x.mp4; 2 other source error(s), see the warnings above",
        "b: never connected (5 reconnect attempt(s)), 0 frames",
    ]
    assert summary.exit_code == 3
    failed = summarise(registry, sources[:1], {"a": StreamReport(error="boom")})
    assert failed.exit_code == 1 and render(failed)[0].endswith(
        "; FAILED: boom; 2 other source error(s), see the warnings above"
    )


def test_a_file_played_to_its_end_still_exits_0(empty_watchlist: Path, tmp_path: Path) -> None:
    """Exit 3 is for live sources only: a file that gives frames is no camera left unreached."""
    clip = tmp_path / "clip.mp4"
    make_clip(clip, faststart=True)
    done = run(write_config(tmp_path / "ok.yaml", str(clip), empty_watchlist), "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"cam1: {CLIP_FRAMES} frames, 0 faces, 0 tracks, 0 best shots embedded, 0 match event(s)\n")


@pytest.mark.shared
def test_a_rerun_with_a_journal_says_its_events_were_already_published(shared_dir: Path, tmp_path: Path) -> None:
    watchlist = make_watchlist(shared_dir, tmp_path / "wl", {"lin_manuel_miranda": []})
    journal = f"  journal: {{path: {tmp_path / 'journal.sqlite'}}}\n"
    first = write_config(tmp_path / "first.yaml", str(shared_dir / HAMILTON), watchlist)
    first.write_text(first.read_text().replace("events:\n", "events:\n" + journal))
    done = run(first, "--quiet")
    assert done.returncode == 0, done.stderr
    published = int(done.stdout.split(" match event(s)")[0].rsplit(" ", 1)[1])
    assert published >= 1 and "already published" not in done.stdout, done.stdout
    for layout, extra in LAYOUTS.items():
        again = tmp_path / f"again-{len(extra)}.yaml"
        again.write_text(first.read_text().replace("port: null", "port: 0") + extra)
        done = run(again, "--quiet")
        assert done.returncode == 0, (layout, done.stderr)
        assert done.stdout.rstrip("\n").endswith(
            f" 0 match event(s); {published} event(s) already published earlier, not sent again"
        ), (layout, done.stdout)
        metrics_lines = [line for line in done.stderr.splitlines() if "/metrics" in line]
        assert len(metrics_lines) == 1 and metrics_lines[0].startswith("metrics: http://"), (layout, done.stderr)
