"""The pipeline end to end on a real clip: PyAV decode, real ONNX models, a real ZeroMQ subscriber, a
real HTTP scrape of the metrics endpoint, and `streamproc run` as a real process.

Enrolments come from ../shared/data/identity/face_recognition; the clip's on-screen windows are a
hand-checked fixture (tests/fixtures/hamilton_windows.json).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import STREAMPROC, free_port, hamilton_watchlist, make_watchlist, run_with_subscriber

from streamproc.config import PipelineConfig
from streamproc.config_recognition import RecognitionConfig
from streamproc.runtime.build import build_analyzer
from streamproc.search.enrol import FaceChoice, templates_from_images
from streamproc.search.templates import NewSubject
from streamproc.search.watchlist import Watchlist

pytestmark = pytest.mark.shared

FIXTURES = Path(__file__).parents[1] / "fixtures"
HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def enrolled(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hamilton_watchlist(shared_dir, tmp_path_factory.mktemp("wl") / "present")


@pytest.fixture(scope="module")
def absent(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_watchlist(
        shared_dir, tmp_path_factory.mktemp("wl") / "absent", {"kit_harington": [], "rose_leslie": []}
    )


def pipeline_config(sources: list[dict[str, Any]], watchlist: Path, endpoint: str) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"sources": sources, "watchlist": {"path": watchlist}, "events": {"endpoint": endpoint}}
    )


def metric(scrape: str, name: str, stream: str) -> float:
    for line in scrape.splitlines():
        if line.startswith(name + "{") and f'stream="{stream}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {stream} not in scrape")


def test_hamilton_flags_miranda_only_while_he_is_on_screen(shared_dir: Path, enrolled: Path) -> None:
    windows = json.loads((FIXTURES / "hamilton_windows.json").read_text())
    fps = windows["fps"]
    cfg = pipeline_config([{"id": "ham", "url": str(shared_dir / HAMILTON)}], enrolled, "tcp://127.0.0.1:*")
    stats, events, scrape = run_with_subscriber(cfg)
    st = stats["ham"]
    assert st.error is None
    assert st.frames == windows["frames"]
    miranda = [e for e in events if e.subject_id == "lin_manuel_miranda"]
    assert miranda, f"no Miranda event; got {[e.subject_id for e in events]}"
    for event in events:
        frame = round(event.frame_pts_s * fps)
        spans = windows["on_screen"][event.subject_id]
        assert any(a - 1 <= frame <= b + 1 for a, b in spans), (event.subject_id, frame)
        assert event.review == "pending" and event.distance <= event.threshold
        assert event.calibration is not None and not event.calibration.uncalibrated
        assert event.latency_ms["end_to_end"] > 0 and event.face_jpeg() is not None
        # evidence for the reviewer: which enrolled template, among how many, and the per-track FPIR there
        assert event.template_label is not None and event.gallery_size == 2
        assert event.calibration.fpir is not None and 0.0 < event.calibration.fpir < 0.01
    assert len({e.event_id for e in events}) == len(events)
    # the endpoint's counts agree with what the run did
    assert metric(scrape, "streamproc_frames_processed_total", "ham") == st.frames
    assert metric(scrape, "streamproc_faces_detected_total", "ham") == st.faces
    assert metric(scrape, "streamproc_events_published_total", "ham") == len(events) == st.events
    assert "streamproc_end_to_end_seconds_bucket" in scrape
    predicted = metric(scrape, "streamproc_predicted_false_alerts_per_hour", "ham")
    assert 0.0 < predicted < 10.0  # a tiny gallery: tracks/s x per-track rate at 2 subjects
    assert "subject_id" not in scrape and "miranda" not in scrape.lower()  # no personal data in metrics


def test_absent_people_are_never_flagged(shared_dir: Path, absent: Path) -> None:
    cfg = pipeline_config([{"id": "ham", "url": str(shared_dir / HAMILTON)}], absent, "tcp://127.0.0.1:*")
    stats, events, scrape = run_with_subscriber(cfg)
    assert stats["ham"].error is None and stats["ham"].faces > 100
    assert events == []
    assert metric(scrape, "streamproc_events_published_total", "ham") == 0
    assert metric(scrape, "streamproc_comparisons_nonmatching_total", "ham") > 0


def test_a_broken_stream_does_not_stop_the_others(shared_dir: Path, enrolled: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(50_000))
    cfg = pipeline_config(
        [
            {"id": "good", "url": str(shared_dir / HAMILTON)},
            {"id": "missing", "url": str(tmp_path / "nope.mp4")},
            {"id": "corrupt", "url": str(junk)},
            {
                "id": "refused",
                "url": "rtsp://127.0.0.1:9/none",
                "open_timeout_s": 3,
                "camera": "fixed",
                "reconnect": {"max_attempts": 0},
            },
        ],
        enrolled,
        "tcp://127.0.0.1:*",
    )
    stats, events, scrape = run_with_subscriber(cfg)
    assert stats["good"].error is None and stats["good"].frames == 275
    assert any(e.stream_id == "good" for e in events)
    for sid in ("missing", "corrupt", "refused"):
        error = stats[sid].error
        assert error is not None and "\n" not in error, (sid, error)
        assert metric(scrape, "streamproc_source_errors_total", sid) >= 1
    assert "no such file" in (stats["missing"].error or "")


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([STREAMPROC, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_run_command_with_a_real_subscriber_process(shared_dir: Path, enrolled: Path, tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"sources:\n  - id: ham\n    url: {shared_dir / HAMILTON}\n    realtime: true\n"
        f"watchlist:\n  path: {enrolled}\nmetrics:\n  port: null\n"
    )
    tail = subprocess.Popen(
        [STREAMPROC, "events", "tail", endpoint, "--count", "1", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    threading.Event().wait(1.0)
    done = run_cli("run", config, "--events", endpoint, "--quiet")
    out, err = tail.communicate(timeout=90)
    assert done.returncode == 0, done.stderr
    assert "ham: 275 frames" in done.stdout
    assert tail.returncode == 0, err
    assert "lin_manuel_miranda" in out and "review: pending" in out
    # start, every flag and stop are in the audit log (counts only for what matched nothing)
    assert run_cli("audit", "verify", "--watchlist", enrolled).returncode == 0
    shown = run_cli("audit", "show", "--watchlist", enrolled).stdout
    assert "pipeline_start" in shown and "flag" in shown and "pipeline_stop" in shown
    start = next(
        json.loads(line) for line in (enrolled / "audit.log").read_text().splitlines() if '"pipeline_start"' in line
    )
    assert start["details"]["threshold_source"] == "sface-v1.json" and not start["details"]["uncalibrated"]
    assert start["details"]["fair_map"] is True  # the shipped calibration's fair score map is in force
    assert len(start["details"]["config_sha256"]) == 64


def test_config_errors_are_one_line_with_key_path_and_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("sources:\n  - id: cam1\n    url: a.mp4\n    max_fsp: 5\nwatchlist:\n  path: wl\n")
    done = run_cli("validate", config)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{config}:4: sources.0.max_fsp: unknown key; did you mean 'max_fps'?" in done.stderr.replace("\n", "")
    config.write_text("sources:\n  - id: cam1\n    url: a.mp4\n    max_fps: fast\nwatchlist:\n  path: wl\n")
    assert "sources.0.max_fps" in run_cli("validate", config).stderr
    config.write_text("sources: []\nwatchlist:\n  path: wl\n")
    assert "sources" in run_cli("validate", config).stderr
    ok = tmp_path / "ok.yaml"
    ok.write_text("sources:\n  - id: cam1\n    url: a.mp4\nwatchlist:\n  path: wl\n")
    assert run_cli("validate", ok).returncode == 0
    schema = json.loads(run_cli("config", "schema").stdout)
    assert "sources" in schema["properties"]


def test_unusable_event_endpoint_or_watchlist_fail_before_any_stream(
    shared_dir: Path, enrolled: Path, tmp_path: Path
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"sources:\n  - id: ham\n    url: {shared_dir / HAMILTON}\nwatchlist:\n  path: {enrolled}\n")
    bad_endpoint = run_cli("run", config, "--events", "tcp://203.0.113.1:5555", "--metrics-port", "0", "--quiet")
    assert bad_endpoint.returncode == 2 and "203.0.113.1" in bad_endpoint.stderr
    assert "Traceback" not in bad_endpoint.stderr
    no_watchlist = run_cli("run", config, "--watchlist", tmp_path / "none", "--quiet")
    assert no_watchlist.returncode == 2 and "Traceback" not in no_watchlist.stderr


def _wait_for_decoded_frames(url: str, proc: subprocess.Popen[str], deadline_s: float = 120.0) -> None:
    """Scrape the run's metrics until a frame has been decoded (the clip replays in real time: 11 s)."""
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            text = ""
        decoded = [line for line in text.splitlines() if line.startswith("streamproc_frames_decoded_total{")]
        if decoded and float(decoded[0].rsplit(" ", 1)[1]) > 0:
            return
        threading.Event().wait(0.2)
    pytest.fail(f"no frame decoded within {deadline_s:.0f} s (exit code {proc.poll()})")


def test_sigterm_drains_and_exits_cleanly(shared_dir: Path, enrolled: Path, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "run.yaml"
    config.write_text(
        f"sources:\n  - id: ham\n    url: {shared_dir / HAMILTON}\n    realtime: true\n"
        f"watchlist:\n  path: {enrolled}\nevents:\n  endpoint: tcp://127.0.0.1:*\n"
        f"metrics:\n  port: {port}\n  host: 127.0.0.1\n"
    )
    proc = subprocess.Popen(
        [STREAMPROC, "run", str(config), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_decoded_frames(f"http://127.0.0.1:{port}/metrics", proc)  # mid-clip, however slow the start
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "SIGTERM: draining" in err
    frames = int(out.split("ham: ", 1)[1].split(" frames", 1)[0])
    assert 0 < frames < 275


def test_enrolment_reaches_a_running_pipeline(shared_dir: Path, absent: Path, tmp_path: Path) -> None:
    """Miranda is enrolled while the clip replays in real time; his close-up (from 2.7 s) is flagged."""
    import shutil

    watchlist = tmp_path / "wl"
    shutil.copytree(absent, watchlist)
    cfg = PipelineConfig.model_validate(
        {
            "sources": [{"id": "ham", "url": str(shared_dir / HAMILTON), "realtime": True}],
            "watchlist": {"path": watchlist, "reload_s": 0.5},
            "events": {"endpoint": "tcp://127.0.0.1:*"},
        }
    )
    analyzer = build_analyzer(RecognitionConfig())
    photos = sorted((shared_dir / "data/identity/face_recognition/lin_manuel_miranda").iterdir())
    templates = templates_from_images(photos, analyzer, FaceChoice(largest=True))

    def enrol_later() -> None:
        threading.Event().wait(1.0)
        with Watchlist.open(watchlist, analyzer.embedder.identity, writable=True) as wl:
            wl.enroll(NewSubject("lin_manuel_miranda", "Lin-Manuel Miranda", "test", "test", "pytest"), templates)

    writer = threading.Thread(target=enrol_later)
    writer.start()
    _, events, scrape = run_with_subscriber(cfg)
    writer.join()
    assert any(e.subject_id == "lin_manuel_miranda" for e in events)
    assert metric(scrape, "streamproc_events_published_total", "ham") >= 1
