"""A live RTSP camera that goes down and comes back: real GStreamer RTSP server, real PyAV over RTSP/TCP.

The server (``tests/rtsp_server.py``) runs under the system Python, which has GStreamer's ``gi`` bindings; it
is killed mid-stream (a camera crash: no goodbye), kept down, and restarted on the same port.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rtsp_camera import RtspServer
from support import free_port

from streamproc.config import SourceConfig
from streamproc.errors import SourceError
from streamproc.stream.buffer import BufferClosed, FrameBuffer
from streamproc.stream.reader import SourceReader
from streamproc.stream.source import VideoSource
from streamproc.types import Frame, SourceState

OUTAGE_S = 10.0


@pytest.fixture
def server(gst_rtsp: None) -> Iterator[RtspServer]:
    srv = RtspServer(free_port())
    srv.start()
    yield srv
    srv.kill()


def _config(url: str, **reconnect: object) -> SourceConfig:
    return SourceConfig.model_validate(
        {"id": "cam1", "url": url, "open_timeout_s": 3, "reconnect": {"initial_s": 0.5, **reconnect}}
    )


def _take(buffer: FrameBuffer[Frame], n: int, timeout: float) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(frames) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(frames)} of {n} frames within {timeout:g} s"
        try:
            frames.append(buffer.get(timeout=min(remaining, 0.5)))
        except TimeoutError:
            continue
    return frames


def _drain_until(buffer: FrameBuffer[Frame], deadline: float) -> list[Frame]:
    """Keep consuming (as the pipeline would) until the monotonic ``deadline`` or the source's end."""
    frames: list[Frame] = []
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            frames.append(buffer.get(timeout=min(remaining, 0.2)))
        except TimeoutError:
            continue
        except BufferClosed:
            break
    return frames


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_camera_outage_reconnects_with_growing_waits_and_monotonic_time(server: RtspServer) -> None:
    states: list[SourceState] = []
    waits: list[float] = []
    source = VideoSource(
        _config(server.url, multiplier=2.0, max_s=2.0, jitter=0.2),
        on_state=states.append,
        on_reconnect=lambda attempt, wait: waits.append(wait),
        seed=3,
    )
    buffer: FrameBuffer[Frame] = FrameBuffer(8, source.buffer_policy)
    reader = SourceReader(source, buffer)
    reader.start()
    try:
        before = _take(buffer, 30, timeout=30)
        server.kill()
        killed = time.monotonic()
        before += _drain_until(buffer, killed + 2.0)  # the frames still in flight, then nothing
        assert source.state == "reconnecting" and source.reconnects > 0
        rss_start = _rss_bytes()
        assert not _drain_until(buffer, killed + OUTAGE_S)  # down: nothing arrives, nothing piles up
        rss_end = _rss_bytes()
        attempts_during_outage = source.reconnects
        server.start()
        restarted = time.monotonic()
        after = _take(buffer, 20, timeout=30)
        resumed_s = time.monotonic() - restarted
    finally:
        reader.stop()
        reader.join(10)
    assert not reader.is_alive()

    assert states[:4] == ["connecting", "streaming", "reconnecting", "streaming"] and states[-1] == "stopped"
    assert attempts_during_outage >= 3 and source.reconnects == len(waits)
    assert waits[0] < waits[1] < waits[2]  # 0.5, 1, 2 s (+/-20 %), then capped
    assert 0.4 <= waits[0] <= 0.6 and all(w <= 2.0 * 1.2 for w in waits)
    pts = np.array([f.pts_s for f in before + after])
    assert pts[0] == 0.0 and np.all(np.diff(pts) > 0)
    gap = after[0].pts_s - before[-1].pts_s
    assert gap >= OUTAGE_S - 0.5  # media time followed the wall clock across the outage
    assert rss_end - rss_start < 8 * 2**20, f"RSS grew {(rss_end - rss_start) / 2**20:.1f} MiB while down"
    assert np.all(np.diff([f.index for f in before + after]) > 0)
    print(  # observed numbers, shown with -s
        f"\nwaits {[round(w, 2) for w in waits]}; resumed {resumed_s:.1f} s after restart; pts gap {gap:.1f} s; "
        f"RSS {rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB during the outage"
    )


@pytest.mark.slow
def test_camera_that_stays_down_fails_after_max_attempts_with_one_line(server: RtspServer) -> None:
    states: list[SourceState] = []
    source = VideoSource(_config(server.url, initial_s=0.2, max_attempts=2), on_state=states.append, seed=0)
    buffer: FrameBuffer[Frame] = FrameBuffer(8, source.buffer_policy)
    reader = SourceReader(source, buffer)
    reader.start()
    try:
        _take(buffer, 5, timeout=30)
        server.kill()
        with pytest.raises(SourceError) as err:
            _drain_until(buffer, time.monotonic() + 20)
    finally:
        reader.stop()
        reader.join(10)
    text = str(err.value)
    assert "\n" not in text
    assert text == f"{server.url}: cannot open: Connection refused (gave up after 2 reconnect attempts)"
    assert source.reconnects == 2
    assert states == ["connecting", "streaming", "reconnecting", "failed"]


@pytest.mark.slow
def test_without_reconnects_a_dropped_stream_just_ends(server: RtspServer) -> None:
    states: list[SourceState] = []
    source = VideoSource(_config(server.url, max_attempts=0), on_state=states.append)
    buffer: FrameBuffer[Frame] = FrameBuffer(8, source.buffer_policy)
    reader = SourceReader(source, buffer)
    reader.start()
    try:
        _take(buffer, 5, timeout=30)
        server.kill()
        _drain_until(buffer, time.monotonic() + 10)
    finally:
        reader.stop()
        reader.join(10)
    assert buffer.closed and states == ["connecting", "streaming", "ended"] and source.reconnects == 0
