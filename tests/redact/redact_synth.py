"""A synthetic clip with known face boxes: real face crops pasted onto a moving background.

Faces move on straight lines; in some frames a face is blurred hard enough that the detector misses it
(the clip must still hide it there: interpolation across the gap). Optionally with an AAC audio track.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

WIDTH, HEIGHT, FPS, FRAMES = 640, 360, 12, 36
FACE_PX = 96
BLURRED = {0: range(14, 19)}  # face 0 is blurred (undetectable) in these frames


@dataclass(frozen=True)
class SynthClip:
    path: Path
    boxes: list[list[tuple[int, int, int, int]]]  # per frame: the known face boxes (x1, y1, x2, y2)


def face_crops(shared_dir: Path, n: int = 2) -> list[NDArray[np.uint8]]:
    """``n`` UTKFace aligned crops (the face fills the crop), resized to FACE_PX, BGR."""
    folder = shared_dir / "data/demographic/utkface"
    names = sorted(p for p in folder.iterdir() if p.name.startswith(("26_", "35_")))[:n]
    crops = []
    for name in names:
        image = cv2.imread(str(name))
        assert image is not None, name
        crops.append(np.asarray(cv2.resize(image, (FACE_PX, FACE_PX), interpolation=cv2.INTER_AREA), np.uint8))
    return crops


def background(t: int) -> NDArray[np.uint8]:
    """A textured background that pans (so the encoder and the detector see motion everywhere)."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    shift = 6 * t
    b = 110 + 60 * np.sin((xs + shift) / 23.0) * np.cos(ys / 31.0)
    g = 120 + 50 * np.sin((xs + shift) / 41.0 + ys / 57.0)
    r = 100 + 40 * np.cos((ys - shift) / 19.0)
    return np.asarray(np.clip(np.stack([b, g, r], axis=-1), 0, 255), dtype=np.uint8)


def make_clip(path: Path, crops: list[NDArray[np.uint8]], audio: bool = False) -> SynthClip:
    """Write the clip (H.264 MP4, 12 fps, 3 s) and return the known box of every face in every frame.

    The known box is the central 80% of each pasted crop: the face itself, not the crop's margin."""
    starts = [(40, 60), (420, 200)]
    steps = [(8, 3), (-6, -2)]
    boxes: list[list[tuple[int, int, int, int]]] = []
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"crf": "16", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = out.add_stream("aac", rate=48000) if audio else None
        for t in range(FRAMES):
            frame = background(t)
            known = []
            for k, crop in enumerate(crops):
                x = starts[k][0] + steps[k][0] * t
                y = starts[k][1] + steps[k][1] * t
                face = crop
                if t in BLURRED.get(k, ()):
                    face = np.asarray(cv2.GaussianBlur(crop, (0, 0), 16), np.uint8)  # YuNet still saw sigma 9
                frame[y : y + FACE_PX, x : x + FACE_PX] = face
                m = FACE_PX // 10
                known.append((x + m, y + m, x + FACE_PX - m, y + FACE_PX - m))
            boxes.append(known)
            vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
            vf.pts = t
            vf.time_base = Fraction(1, FPS)
            out.mux(video.encode(vf))
        out.mux(video.encode(None))
        if sound is not None:
            samples = 48000 * FRAMES // FPS
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[start : start + 1024].reshape(1, -1)
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate = 48000
                af.pts = start
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
    return SynthClip(path, boxes)
