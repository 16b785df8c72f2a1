"""Video sources on real clips: decoding, timing, sampling, folders, errors, pacing, and the reader thread."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from av.codec.hwaccel import hwdevices_available

from streamproc.config import ReconnectConfig, SourceConfig
from streamproc.errors import SourceError
from streamproc.stream.backoff import Backoff
from streamproc.stream.buffer import BufferClosed, FrameBuffer
from streamproc.stream.reader import SourceReader
from streamproc.stream.source import VideoSource, redact_url, source_kind, to_bgr
from streamproc.stream.timing import RateSampler
from streamproc.types import SOURCE_STATES, Frame, SourceState

HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"  # 640x360, 29.97 fps, 275 frames, moov at end
WALKING = "data/video/intel_face-demographics-walking_from_gif.mp4"  # 480x270, 12 fps, 35 frames, moov first
FEMALE = "data/video/intel_head-pose-face-detection-female_from_gif.mp4"  # 480x270, moov first
NO_RETRY = {"max_attempts": 0}  # a URL's first failure is final, as before reconnecting existed


def _config(url: str | Path, **kw: object) -> SourceConfig:
    return SourceConfig.model_validate({"id": "cam1", "url": str(url), **kw})


def _all(url: str | Path, **kw: object) -> list[Frame]:
    return list(VideoSource(_config(url, **kw)).frames())


def _pts(frames: list[Frame]) -> np.ndarray:
    return np.array([f.pts_s for f in frames])


@pytest.fixture
def hamilton(shared_dir: Path) -> Path:
    return shared_dir / HAMILTON


# ------------------------------------------------------------------------------------------------ kinds
@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("rtsp://10.0.0.5:554/stream1", "url"),
        ("RTSP://cam/1", "url"),
        ("http://host/x.mp4", "url"),
        ("https://host/live.m3u8", "url"),
        ("/no/such/clip.mp4", "file"),
        ("clip.mp4", "file"),
    ],
)
def test_source_kind(url: str, kind: str) -> None:
    assert source_kind(url) == kind


def test_source_kind_of_a_directory_is_folder(tmp_path: Path) -> None:
    assert source_kind(str(tmp_path)) == "folder"


def test_buffer_policy_auto_is_wait_for_files_and_drop_oldest_for_urls(tmp_path: Path) -> None:
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    assert VideoSource(_config(clip)).buffer_policy == "wait"
    assert VideoSource(_config("rtsp://127.0.0.1:9/x")).buffer_policy == "drop_oldest"
    assert VideoSource(_config(clip, buffer="drop_oldest")).buffer_policy == "drop_oldest"
    assert VideoSource(_config("rtsp://127.0.0.1:9/x", buffer="wait")).buffer_policy == "wait"


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/s1?x=1") == "rtsp://admin:***@10.0.0.5:554/s1?x=1"
    assert redact_url("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"
    assert redact_url("/videos/a:b@c.mp4") == "/videos/a:b@c.mp4"


# ------------------------------------------------------------------------------------------------ sampling
def _sample(times: list[float], max_fps: float | None) -> list[float]:
    sampler = RateSampler(max_fps)
    return [t for t in times if sampler.keep(t)]


@pytest.mark.parametrize(
    ("fps", "max_fps", "expected"),
    [(30.0, 5.0, 5), (29.97, 5.0, 5), (30.0, 12.0, 12), (25.0, 10.0, 10), (30.0, 60.0, 30), (12.0, 5.0, 5)],
)
def test_sampler_keeps_max_fps_per_second_of_media_time(fps: float, max_fps: float, expected: int) -> None:
    kept = _sample([i / fps for i in range(int(fps * 10))], max_fps)
    per_second = np.bincount(np.floor(np.array(kept)).astype(int), minlength=10)
    assert all(abs(int(n) - expected) <= 1 for n in per_second), per_second
    assert abs(len(kept) - expected * 10) <= 1


def test_sampler_uses_timestamps_not_frame_counts_for_variable_frame_rate() -> None:
    rng = random.Random(7)
    times, t = [], 0.0
    while t < 20.0:  # bursts at 60 fps and lulls at 5 fps
        times.append(t)
        t += rng.choice([1 / 60, 1 / 60, 1 / 60, 0.2])
    kept = _sample(times, 4.0)
    assert abs(len(kept) / 20.0 - 4.0) < 0.5
    assert min(np.diff(kept)) >= 0.125 - 1e-9  # never two kept frames closer than half a slot


def test_sampler_without_max_fps_keeps_everything_and_restarts_when_time_goes_back() -> None:
    assert _sample([0.0, 0.001, 0.002], None) == [0.0, 0.001, 0.002]
    assert _sample([0.0, 0.1, 0.2, 0.05, 0.1], 5.0) == [0.0, 0.2, 0.05]


# ------------------------------------------------------------------------------------------------ files
@pytest.mark.shared
def test_decodes_the_hamilton_clip_as_bgr_with_pts_from_zero(hamilton: Path) -> None:
    ticks = iter(range(1000, 2000))
    source = VideoSource(_config(hamilton), clock=lambda: float(next(ticks)))
    frames = list(source.frames())
    assert len(frames) == 275 and source.decoded == source.emitted == 275 and source.errors == 0
    assert {(f.image.shape, f.image.dtype.name) for f in frames} == {((360, 640, 3), "uint8")}
    assert [f.index for f in frames] == list(range(275))
    assert {(f.stream_id, f.source) for f in frames} == {("cam1", str(hamilton))}
    pts = _pts(frames)
    assert pts[0] == 0.0 and np.all(np.diff(pts) > 0)
    assert 8.5 < pts[-1] < 10.5  # ~9.2 s of video
    assert np.allclose(np.diff(pts), 1 / 29.97, atol=1e-3)
    assert [f.captured_at for f in frames[:3]] == [1000.0, 1001.0, 1002.0]
    # Colour order: BGR is PyAV's RGB reversed (OpenCV's I420 conversion: within a level or two of swscale's).
    with av.open(str(hamilton)) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    diff = np.abs(frames[0].image.astype(np.int16) - rgb[..., ::-1])
    assert diff.mean() < 1.5 and np.percentile(diff, 99.9) <= 8
    assert 3 * diff.mean() < np.abs(frames[0].image.astype(np.int16) - rgb).mean()  # not RGB


@pytest.mark.shared
def test_max_fps_samples_about_max_fps_frames_per_second_of_pts(hamilton: Path) -> None:
    source = VideoSource(_config(hamilton, max_fps=5))
    frames = list(source.frames())
    assert source.decoded == 275  # every frame is decoded; only the sampled ones are converted and emitted
    pts = _pts(frames)
    assert pts[0] == 0.0 and np.all(np.diff(pts) > 0)
    per_second = np.bincount(np.floor(pts).astype(int))
    assert all(4 <= n <= 6 for n in per_second[: int(pts[-1])]), per_second
    assert [f.index for f in frames] == list(range(len(frames)))


@pytest.mark.shared
def test_folder_plays_clips_in_name_order_skips_a_broken_one_and_continues_media_time(
    shared_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "a.mp4").symlink_to(shared_dir / WALKING)
    (tmp_path / "broken.mp4").write_bytes(random.Random(0).randbytes(20_000))
    (tmp_path / "c.MP4").symlink_to(shared_dir / FEMALE)  # extensions match case-insensitively
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / ".hidden.mp4").write_text("editor junk, ignored")
    messages: list[str] = []
    source = VideoSource(_config(tmp_path), on_error=messages.append)
    frames = list(source.frames())

    assert source.kind == "folder" and source.buffer_policy == "wait"
    names = [Path(f.source).name for f in frames]
    n_a = names.count("a.mp4")
    assert n_a == 35 and names == ["a.mp4"] * n_a + ["c.MP4"] * (len(names) - n_a) and len(names) > n_a
    assert source.errors == 1 and len(messages) == 1
    assert "broken.mp4" in messages[0] and "\n" not in messages[0]
    assert [f.index for f in frames] == list(range(len(frames)))
    pts = _pts(frames)
    assert pts[0] == 0.0 and np.all(np.diff(pts) > 0)
    # The second clip starts one frame (1/12 s) after the first one's last frame.
    assert math.isclose(pts[n_a] - pts[n_a - 1], 1 / 12, abs_tol=1e-3)


@pytest.mark.shared
def test_truncated_clip_yields_its_first_frames_then_says_it_was_cut(shared_dir: Path, tmp_path: Path) -> None:
    data = (shared_dir / WALKING).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    messages: list[str] = []
    source = VideoSource(_config(cut), on_error=messages.append)
    frames = list(source.frames())
    assert 0 < len(frames) < 35
    assert np.all(np.diff(_pts(frames)) > 0)
    assert source.errors == 1 and len(messages) == 1 and "cut.mp4" in messages[0], messages


def test_a_cut_file_with_its_index_first_is_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Slice threading (the default) raises the decode error at the cut; frame threading swallows it, and the
    frame count and duration the index declares still tell. Either way a looped file warns once, not once per
    pass, and goes on looping."""
    from bad_input_workspace import CLIP_FRAMES, make_clip

    whole = tmp_path / "whole.mp4"
    make_clip(whole, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.5)])
    assert 0 < len(_all(cut)) < CLIP_FRAMES
    assert _all(whole) and len(_all(whole)) == CLIP_FRAMES  # the whole file: no warning (below)
    caplog.clear()
    messages: list[str] = []
    source = VideoSource(_config(cut, loop=True), on_error=messages.append)
    frames = []
    with caplog.at_level(logging.WARNING, logger="streamproc"):
        for frame in source.frames():
            frames.append(frame)
            if len(frames) >= 3 * CLIP_FRAMES:  # several passes of the looped, cut file
                source.stop()
    assert len(messages) == 1 and source.errors == 1, messages
    assert len(frames) == 3 * CLIP_FRAMES  # the looped, cut file went on
    assert "cut.mp4: " in messages[0] and f"of {CLIP_FRAMES} declared frames" in messages[0]
    assert "looks truncated" in messages[0] or "decoding stopped after" in messages[0]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == messages


@pytest.mark.shared
def test_corruption_mid_file_keeps_earlier_frames_and_counts_one_error(shared_dir: Path, tmp_path: Path) -> None:
    data = bytearray((shared_dir / WALKING).read_bytes())
    rng = random.Random(0)
    third = len(data) // 3
    data[third : third + 20_000] = rng.randbytes(20_000)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    messages: list[str] = []
    source = VideoSource(_config(bad), on_error=messages.append)
    frames = list(source.frames())
    assert 0 < len(frames) < 35
    assert source.errors == 1 and "bad.mp4" in messages[0] and "decoding stopped" in messages[0]


@pytest.mark.shared
def test_truncated_clip_whose_index_is_at_the_end_is_a_source_error(hamilton: Path, tmp_path: Path) -> None:
    data = hamilton.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])  # this clip keeps its moov index after the media data
    with pytest.raises(SourceError, match=r"cut\.mp4: not a video file, or its header is corrupt or missing"):
        list(VideoSource(_config(cut)).frames())


@pytest.mark.shared
def test_realtime_paces_frames_at_their_timestamps(hamilton: Path) -> None:
    source = VideoSource(_config(hamilton, realtime=True))
    start = time.monotonic()
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == 15:
            break
    elapsed = time.monotonic() - start
    assert frames[-1].pts_s > 0.45  # 14 intervals of 1/29.97 s
    assert 0.4 <= elapsed < 10.0


# ------------------------------------------------------------------------------------------------ errors
def _one_line_error(err: pytest.ExceptionInfo[SourceError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_path_is_a_source_error_naming_it() -> None:
    with pytest.raises(SourceError) as err:
        VideoSource(_config("/no/such/clip.mp4"))
    assert _one_line_error(err) == "/no/such/clip.mp4: no such file or folder"


def test_non_video_file_is_a_source_error(tmp_path: Path) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("hello, not a video\n" * 100)
    with pytest.raises(SourceError) as err:
        list(VideoSource(_config(notes)).frames())
    assert "notes.mp4: not a video file" in _one_line_error(err)


def test_folder_without_video_files_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(SourceError) as err:
        VideoSource(_config(tmp_path))
    assert f"{tmp_path}: folder has no video files" in _one_line_error(err)


def test_folder_of_only_broken_files_is_a_source_error(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mkv"):
        (tmp_path / name).write_bytes(random.Random(name).randbytes(5000))
    source = VideoSource(_config(tmp_path))
    with pytest.raises(SourceError) as err:
        list(source.frames())
    assert "none of its 2 video files could be decoded" in _one_line_error(err)
    assert source.errors == 2


@pytest.mark.parametrize("url", ["rtsp://127.0.0.1:9/none", "http://127.0.0.1:9/x.mp4"])
def test_refusing_url_fails_fast_with_a_one_line_error(url: str) -> None:
    source = VideoSource(_config(url, open_timeout_s=3, reconnect=NO_RETRY))
    start = time.monotonic()
    with pytest.raises(SourceError) as err:
        list(source.frames())
    assert time.monotonic() - start < 3.0
    text = _one_line_error(err)
    assert text.startswith(url) and "refused" in text.lower()


def test_url_password_never_appears_in_errors() -> None:
    with pytest.raises(SourceError) as err:
        list(VideoSource(_config("rtsp://admin:hunter2@127.0.0.1:9/s1", open_timeout_s=3, reconnect=NO_RETRY)).frames())
    assert "hunter2" not in str(err.value) and "admin:***@127.0.0.1:9" in str(err.value)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (via the listen backlog) and never says anything."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_silent_url_gives_up_after_open_timeout(silent_server: int, scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{silent_server}/stream"
    source = VideoSource(_config(url, open_timeout_s=1, reconnect=NO_RETRY))
    start = time.monotonic()
    with pytest.raises(SourceError) as err:
        list(source.frames())
    assert 0.8 <= time.monotonic() - start < 5.0
    assert _one_line_error(err) == f"{url}: no answer within 1 s"


# ------------------------------------------------------------------------------------------------ reader
@pytest.mark.shared
def test_reader_with_wait_policy_delivers_every_frame(hamilton: Path) -> None:
    seen: list[int] = []
    source = VideoSource(_config(hamilton, buffer_frames=4))
    buffer: FrameBuffer[Frame] = FrameBuffer(4, source.buffer_policy)
    reader = SourceReader(source, buffer, on_frame=lambda f: seen.append(f.index))
    reader.start()
    got = [f.index for f in buffer]
    reader.join(10)
    assert not reader.is_alive()
    assert got == seen == list(range(275)) and reader.decoded == 275 and buffer.dropped == 0


@pytest.mark.shared
def test_reader_with_drop_oldest_and_a_slow_consumer_counts_drops(hamilton: Path) -> None:
    drops: list[int] = []
    source = VideoSource(_config(hamilton, buffer="drop_oldest"))
    buffer: FrameBuffer[Frame] = FrameBuffer(2, source.buffer_policy, on_drop=drops.append)
    reader = SourceReader(source, buffer)
    reader.start()
    got = []
    for frame in buffer:
        got.append(frame.index)
        time.sleep(0.01)  # ~100 fps consumer against a decoder several times faster
    reader.join(10)
    assert buffer.dropped > 0 and sum(drops) == buffer.dropped
    assert len(got) + buffer.dropped == reader.decoded == 275
    assert got == sorted(got) and got[-1] == 274  # stays current: the newest frame is never lost


@pytest.mark.shared
def test_reader_stop_returns_promptly_while_blocked_on_a_full_buffer(hamilton: Path) -> None:
    source = VideoSource(_config(hamilton))
    buffer: FrameBuffer[Frame] = FrameBuffer(1, "wait")
    reader = SourceReader(source, buffer)
    reader.start()
    deadline = time.monotonic() + 10
    while reader.decoded < 2:  # frame 0 queued, frame 1 waiting in put()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    start = time.monotonic()
    reader.stop()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - start < 2.0
    assert buffer.get(0).index == 0
    with pytest.raises(BufferClosed):
        buffer.get(0)


@pytest.mark.shared
def test_reader_stop_cuts_realtime_pacing_short(hamilton: Path) -> None:
    source = VideoSource(_config(hamilton, realtime=True))
    buffer: FrameBuffer[Frame] = FrameBuffer(8, "wait")
    reader = SourceReader(source, buffer)
    reader.start()
    assert buffer.get(5).index == 0
    start = time.monotonic()
    reader.stop()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - start < 2.0


def test_reader_delivers_source_errors_to_the_consumer(tmp_path: Path) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    source = VideoSource(_config(notes))
    reader = SourceReader(source, FrameBuffer(4, source.buffer_policy))
    reader.start()
    with pytest.raises(SourceError, match="not a video file"):
        reader.buffer.get(5)
    reader.join(5)
    assert not reader.is_alive()


# ------------------------------------------------------------------------------------------------ reconnect
def _backoff(seed: int = 0, **kw: object) -> Backoff:
    return Backoff(ReconnectConfig.model_validate({"initial_s": 0.5, "max_s": 4.0, **kw}), random.Random(seed))


def test_backoff_grows_by_the_multiplier_up_to_the_cap_within_the_jitter_band() -> None:
    bases = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for seed in range(50):
        backoff = _backoff(seed, jitter=0.25)
        waits = [backoff.next_wait() for _ in bases]
        assert all(0.75 * b <= w <= 1.25 * b for w, b in zip(waits, bases, strict=True)), waits
        assert backoff.attempts == len(bases)
    exact = _backoff(jitter=0.0, multiplier=3.0)
    assert [exact.next_wait() for _ in range(4)] == [0.5, 1.5, 4.0, 4.0]


def test_backoff_jitter_is_seeded_and_spreads_the_waits() -> None:
    assert _backoff(7).next_wait() == _backoff(7).next_wait()  # same seed, same waits
    firsts = {round(_backoff(seed).next_wait(), 6) for seed in range(20)}
    assert len(firsts) > 15  # different seeds: cameras dropped together do not retry in step


def test_backoff_reset_starts_again_from_the_initial_wait() -> None:
    backoff = _backoff(jitter=0.0, max_attempts=3)
    assert [backoff.next_wait() for _ in range(3)] == [0.5, 1.0, 2.0]
    assert backoff.exhausted
    backoff.reset()
    assert not backoff.exhausted and backoff.next_wait() == 0.5
    unlimited = _backoff()
    for _ in range(100):
        unlimited.next_wait()
    assert not unlimited.exhausted


def test_refusing_url_retries_with_backoff_then_gives_up_with_one_line() -> None:
    url = "rtsp://127.0.0.1:9/none"
    states: list[SourceState] = []
    reconnects: list[tuple[int, float]] = []
    reconnect = {"initial_s": 0.05, "multiplier": 2.0, "jitter": 0.0, "max_attempts": 3}
    source = VideoSource(
        _config(url, open_timeout_s=3, reconnect=reconnect),
        on_state=states.append,
        on_reconnect=lambda n, wait: reconnects.append((n, wait)),
    )
    with pytest.raises(SourceError) as err:
        list(source.frames())
    assert _one_line_error(err) == f"{url}: cannot open: Connection refused (gave up after 3 reconnect attempts)"
    assert reconnects == [(1, 0.05), (2, 0.1), (3, 0.2)] and source.reconnects == 3
    assert states == ["connecting", "reconnecting", "failed"] and source.state == "failed"


@pytest.mark.parametrize(("max_attempts", "says"), [(None, "retrying until stopped"), (5, "up to 5 attempts in a row")])
def test_the_first_failure_says_it_will_retry_and_how_to_bound_it(
    caplog: pytest.LogCaptureFixture, max_attempts: int | None, says: str
) -> None:
    reconnect = {"initial_s": 0.01, "jitter": 0.0, "max_attempts": max_attempts}
    sources: list[VideoSource] = []
    source = VideoSource(
        _config("rtsp://127.0.0.1:9/none", open_timeout_s=3, reconnect=reconnect),
        on_reconnect=lambda n, _wait: sources[0].stop() if n >= 2 else None,
    )
    sources.append(source)
    with caplog.at_level(logging.WARNING, logger="streamproc"):
        list(source.frames())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2, warned
    assert "has not connected yet" in warned[0] and says in warned[0] and "reconnect.max_attempts" in warned[0]
    assert "max_attempts" not in warned[1]  # said once


def test_stop_cuts_a_reconnect_wait_short() -> None:
    states: list[SourceState] = []
    source = VideoSource(_config("rtsp://127.0.0.1:9/none", reconnect={"initial_s": 60.0}), on_state=states.append)
    reader = SourceReader(source, FrameBuffer(4, source.buffer_policy))
    reader.start()
    deadline = time.monotonic() + 10
    while "reconnecting" not in states:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    start = time.monotonic()
    reader.stop()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - start < 1.0
    assert states == ["connecting", "reconnecting", "stopped"] and source.reconnects == 1


# ------------------------------------------------------------------------------------------------ loop
def _make_clip(path: Path, n: int = 10, fps: int = 10, size: tuple[int, int] = (128, 96)) -> Path:
    """A tiny H.264 clip whose frame i is uniformly grey level 20 * i (encoded by PyAV's libx264)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n):
            image = np.full((size[1], size[0], 3), 20 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode(None))
    return path


def _grey(frame: Frame) -> int:
    return round(float(frame.image.mean()) / 20)


def _first(source: VideoSource, n: int) -> list[Frame]:
    frames = []
    with contextlib.closing(source.frames()) as stream:
        for frame in stream:
            frames.append(frame)
            if len(frames) == n:
                break
    return frames


def test_loop_plays_a_file_again_with_media_time_running_on(tmp_path: Path) -> None:
    states: list[SourceState] = []
    source = VideoSource(_config(_make_clip(tmp_path / "a.mp4"), loop=True), on_state=states.append)
    frames = _first(source, 25)
    assert [_grey(f) for f in frames] == [i % 10 for i in range(25)]
    pts = _pts(frames)
    assert pts[0] == 0.0 and np.allclose(np.diff(pts), 0.1)  # the second pass starts one frame after the first
    assert [f.index for f in frames] == list(range(25))
    assert states == ["connecting", "streaming", "stopped"]  # no "ended" between passes


def test_loop_plays_a_folder_again_and_stop_ends_it(tmp_path: Path) -> None:
    _make_clip(tmp_path / "a.mp4", n=4)
    _make_clip(tmp_path / "b.mp4", n=3)
    source = VideoSource(_config(tmp_path, loop=True))
    reader = SourceReader(source, FrameBuffer(4, source.buffer_policy))
    reader.start()
    frames = [reader.buffer.get(10) for _ in range(15)]
    reader.stop()
    reader.join(5)
    assert not reader.is_alive() and source.state == "stopped"
    assert [Path(f.source).name for f in frames] == (["a.mp4"] * 4 + ["b.mp4"] * 3) * 2 + ["a.mp4"]
    assert np.allclose(np.diff(_pts(frames)), 0.1)


def test_loop_over_only_broken_files_ends_instead_of_spinning(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(random.Random(1).randbytes(5000))
    source = VideoSource(_config(tmp_path, loop=True))
    with pytest.raises(SourceError, match="none of its 1 video files could be decoded"):
        list(source.frames())
    assert source.errors == 1


def test_file_states_go_connecting_streaming_ended(tmp_path: Path) -> None:
    states: list[SourceState] = []
    frames = list(VideoSource(_config(_make_clip(tmp_path / "a.mp4", n=3)), on_state=states.append).frames())
    assert len(frames) == 3 and states == ["connecting", "streaming", "ended"]
    assert set(states) <= set(SOURCE_STATES) and len(SOURCE_STATES) == 6


# ------------------------------------------------------------------------------------------------ hwaccel
def _cuda_device() -> bool:
    return "cuda" in hwdevices_available() and Path("/dev/nvidiactl").exists()


def test_nv12_frames_the_gpu_decoder_gives_become_the_same_bgr_pixels_as_planar_ones(hamilton: Path) -> None:
    # NVDEC frames come back to host memory as NV12; they must not change what the detector sees.
    with av.open(str(hamilton)) as container:
        planar = next(container.decode(video=0))
    semi = planar.reformat(format="nv12")
    assert (planar.format.name, semi.format.name) == ("yuv420p", "nv12")
    assert np.array_equal(to_bgr(semi), to_bgr(planar))
    swscale = semi.to_ndarray(format="bgr24").astype(np.int16)
    assert np.abs(to_bgr(semi).astype(np.int16) - swscale).mean() < 1.5  # the conversion, not a copy of one plane


def test_hwaccel_cuda_decodes_the_same_frames_or_falls_back_to_the_cpu_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _make_clip(tmp_path / "a.mp4", n=5)
    _make_clip(tmp_path / "b.mp4", n=5)
    cpu = list(VideoSource(_config(tmp_path)).frames())
    caplog.set_level(logging.WARNING, logger="streamproc.stream.source")
    source = VideoSource(_config(tmp_path, hwaccel="cuda"))
    frames = list(source.frames())
    assert [_grey(f) for f in frames] == [_grey(f) for f in cpu] == [0, 1, 2, 3, 4] * 2
    assert np.array_equal(_pts(frames), _pts(cpu))
    warnings = [r.getMessage() for r in caplog.records if "hwaccel" in r.getMessage()]
    if _cuda_device():
        assert source.hwaccel == "cuda" and warnings == []
    else:  # this CPU machine: one warning for the whole source, not one per file
        assert source.hwaccel == "none"
        assert len(warnings) == 1 and "hwaccel cuda unavailable" in warnings[0] and "CPU" in warnings[0]
