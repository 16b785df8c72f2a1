"""Pass two: decode the clip again, hide every planned region, encode H.264 MP4 and copy audio unchanged.

Decoding and hiding run in a worker thread a few frames ahead of the encoder (libx264 runs its own threads).

The video is re-encoded frame for frame with each input frame's own timestamp, so resolution, frame rate,
timestamps and duration are the input's; audio packets are copied byte for byte (no re-encode). The file is
written under a temporary name in the output folder and renamed only when complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from streamproc.errors import SourceError
from streamproc.redact.plan import Plan, Region
from streamproc.redact.prefetch import prefetch
from streamproc.redact.settings import Method, RedactRenderConfig
from streamproc.types import ImageBGR

_DEPTH = 8  # frames decoded and hidden ahead of the encoder


def hide(image: ImageBGR, regions: list[Region], method: Method, blocks: int) -> None:
    """Hide ``regions`` of an (H, W, 3) uint8 BGR image in place.

    blur: the region is shrunk to about ``blocks`` pixels across, smoothed and enlarged again, which removes
    every detail finer than 1/blocks of the face (and costs the same for any face size); pixelate: the same
    shrink, enlarged with nearest-neighbour blocks; box: solid black.
    """
    for r in regions:
        view = image[r.y1 : r.y2, r.x1 : r.x2]
        h, w = view.shape[:2]
        if h == 0 or w == 0:
            continue
        if method == "box":
            view[...] = 0
            continue
        small_w = max(1, min(w, blocks))
        small_h = max(1, min(h, round(blocks * h / w)))
        small = cv2.resize(view, (small_w, small_h), interpolation=cv2.INTER_AREA)
        if method == "blur":
            small = cv2.GaussianBlur(small, (3, 3), 0)
            view[...] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            view[...] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def temporary_path(final: Path) -> Path:
    """A fresh hidden name beside ``final`` (same filesystem, so the rename is atomic)."""
    path = final.parent / f".{final.stem}.{secrets.token_hex(6)}.partial.mp4"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies, as for any new file
    return path


def render(
    source: Path,
    destination: Path,
    plan: Plan,
    config: RedactRenderConfig,
    method: Method,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the redacted clip to ``destination`` (atomically); returns the number of video frames written."""
    tmp = temporary_path(destination)
    try:
        count = _encode(source, tmp, plan, config, method, progress)
        tmp.replace(destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return count


def _encode(
    source: Path,
    target: Path,
    plan: Plan,
    config: RedactRenderConfig,
    method: Method,
    progress: Callable[[int], None] | None,
) -> int:
    count = 0
    try:
        with av.open(str(source)) as src, av.open(str(target), "w", format="mp4") as dst:
            video_in = src.streams.video[0]
            video_in.thread_type = "AUTO"
            video_out = dst.add_stream(
                "libx264",
                rate=video_in.average_rate or video_in.guessed_rate or Fraction(25),
                options={"crf": str(config.crf), "preset": config.preset},
            )
            video_out.width = video_in.width
            video_out.height = video_in.height
            video_out.pix_fmt = "yuv420p"
            # Both: the stream's and the encoder's time base, or pts are rounded to whole frame periods.
            time_base = video_in.time_base or Fraction(1, 90000)
            video_out.time_base = time_base
            video_out.codec_context.time_base = time_base
            audio = {a.index: dst.add_stream_from_template(a) for a in src.streams.audio}
            hidden = _hidden_frames(src, video_in, set(audio), plan, config.blocks, method, source)
            with contextlib.closing(prefetch(hidden, depth=_DEPTH)) as items:  # the worker ends before src closes
                for item in items:
                    if isinstance(item, av.Packet):
                        item.stream = audio[item.stream.index]
                        dst.mux(item)
                        continue
                    dst.mux(video_out.encode(item))
                    count += 1
                    if progress is not None:
                        progress(count)
            dst.mux(video_out.encode(None))
    except av.FFmpegError as err:
        raise SourceError(f"{source}: cannot write the redacted clip ({str(err).splitlines()[0]})") from None
    if count != len(plan.regions):
        raise SourceError(f"{source}: the second pass decoded {count} frames, the first {len(plan.regions)}")
    return count


def _hidden_frames(
    src: av.container.InputContainer,
    video_in: av.VideoStream,
    audio: set[int],
    plan: Plan,
    blocks: int,
    method: Method,
    source: Path,
) -> Iterator[av.Packet[av.stream.Stream] | av.VideoFrame]:
    """In demux order: audio packets to copy (with a dts) and video frames with their regions hidden, carrying
    the input frame's pts and time base. Runs in the prefetch worker, so decoding and hiding overlap encoding."""
    count = 0
    for packet in src.demux(video_in, *(s for s in src.streams.audio if s.index in audio)):
        if packet.stream.index in audio:
            if packet.dts is not None:
                yield packet
            continue
        for frame in packet.decode():
            if not isinstance(frame, av.VideoFrame):
                continue
            if count >= len(plan.regions):
                raise SourceError(f"{source}: decoded more frames than the first pass saw")
            image = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
            hide(image, plan.regions[count], method, blocks)
            out = av.VideoFrame.from_ndarray(image, format="bgr24")
            out.pts = frame.pts
            out.time_base = frame.time_base
            yield out
            count += 1
