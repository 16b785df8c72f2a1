"""How small a face the whole-frame pass can show the detector: recall by the face's size in network pixels.

    python bench/face_sizes.py [--data ../shared/data] [--work /tmp/bodycam/clips] [--detector retinaface]
                               [--every 7]

Why: ``detector.schedule.full_face_px`` downscales the whole-frame pass while a face of the quality gate's
smallest size (``quality.min_face_px``, the smallest face a stream ever embeds) keeps that many network pixels.
This bench measures where the detector stops finding faces as they shrink.

Truth: the detector's own detections on the native 1080p frame (score >= 0.8, shorter side >= 40 px) of
bench/bodycam.py's 1080p clips (the public clips upscaled bicubic x3, and the crowd mosaic), every ``--every``-th
frame. Each frame is then downscaled (``INTER_AREA``, as the schedule's regions are) by factors 0.2-0.8 and
detected whole; a truth face counts as found when a detection (score >= the product's threshold) overlaps it at
IoU >= 0.5 once mapped back. Faces are binned by their shorter side times the factor: the size the network saw.
No hand labels: the detector at native size is the reference, so this measures what downscaling loses.

Last line: ``recall_16px=… recall_20px=… recall_24px=… recall_32px=… recall_40px=…`` (each bin 4 px wide, from
that size up; nothing here is timed).
"""

from __future__ import annotations

import platform
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from bodycam_clips import clip_parser, prepare, read_frames, require_videos

from streamproc.config_recognition import RecognitionConfig
from streamproc.runtime.build import build_detector
from streamproc.sysinfo import machine_description
from streamproc.types import ImageBGR
from streamproc.vision.track import iou_matrix

FACTORS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8)
TRUTH_SCORE = 0.8
TRUTH_MIN_PX = 40.0  # the quality gate's default: the faces a stream would embed
BIN_PX = 4
HEADLINE = (16, 20, 24, 32, 40)


def main() -> None:
    parser = clip_parser(__doc__.splitlines()[0], Path("/tmp/bodycam/clips"))
    parser.add_argument("--detector", choices=("retinaface", "yunet"), default="retinaface")
    parser.add_argument("--every", type=int, default=7, help="Use every this many-th frame of each clip.")
    args = parser.parse_args()
    require_videos(args.data)
    print(f"machine: {machine_description()} ({platform.machine()}); detector {args.detector}", flush=True)
    config = RecognitionConfig.model_validate({"detector": {"type": args.detector, "max_side": None}})
    detector = build_detector(config)
    threshold = config.detector.score_threshold
    clips = sorted(path for name, path in prepare(args.data / "video", args.work).items() if name.endswith("1080p"))
    found: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # network size bin -> [found, faces]
    for clip in clips:
        for index, (_, image) in enumerate(read_frames(clip)):
            if index % args.every:
                continue
            truth = detector.detect([image])[0]
            keep = (truth.scores >= TRUTH_SCORE) & (truth.sizes >= TRUTH_MIN_PX)
            if not keep.any():
                continue
            boxes, sizes = truth.boxes[keep], truth.sizes[keep]
            height, width = image.shape[:2]
            for factor in FACTORS:
                dims = (round(width * factor), round(height * factor))
                small: ImageBGR = np.asarray(cv2.resize(image, dims, interpolation=cv2.INTER_AREA), np.uint8)
                seen = detector.detect([small])[0]
                mapped = seen.boxes[seen.scores >= threshold] / factor
                hit = iou_matrix(boxes, mapped).max(axis=1) >= 0.5 if len(mapped) else np.zeros(len(boxes), bool)
                for size, ok in zip(sizes * factor, hit, strict=True):
                    tally = found[int(size // BIN_PX) * BIN_PX]
                    tally[0] += int(ok)
                    tally[1] += 1
    for low in sorted(found):
        if low > 64:
            break
        hits, faces = found[low]
        print(f"network {low:3d}-{low + BIN_PX - 1:3d} px: {hits:4d} of {faces:4d} found ({hits / faces:.2f})")

    def recall(low: int) -> float:
        hits, faces = found.get(low, [0, 0])
        return hits / faces if faces else float("nan")

    print(" ".join(f"recall_{low}px={recall(low):.2f}" for low in HEADLINE))


if __name__ == "__main__":
    main()
