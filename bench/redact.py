"""Redaction coverage and speed on the public clips, against deface 1.5.0 (CenterFace), in the same run.

For each clip in <data>/video:
- reference faces per frame: the union of two strong, slow passes, each box kept only if both passes agree
  (IoU >= 0.3; the reference box is their mean) or a track confirms it (a box seen by one pass that lies on a
  frame-to-frame IoU chain of >= 5 frames holding at least one box both passes agree on):
  pass A = our RetinaFace on the frame upscaled 2x, score >= 0.3;
  pass B = deface's CenterFace (from the deface venv) on the frame upscaled 2x, score >= 0.2;
- every tool writes its output with a solid black fill (ours: --method box; deface: --replacewith solid), so
  "hidden" is decidable per pixel in the decoded output file: a reference box counts as hidden when >= 90% of
  its pixels that are not already dark in the input are dark (max channel < 40) in the output;
- coverage = hidden reference boxes / reference boxes; also frames with any visible reference face;
- deface runs with its defaults and with a few settings tuned for this footage (the best is reported);
- fps = frames / wall time of the command (process start, model load, both passes, encode), both tools on
  the same cores, the median of --repeat runs (ours and deface's defaults; the tuned deface settings run once,
  for coverage); ours also from its report (job time, without start-up);
- batch: one command over every clip, as a clerk releases a request's footage (both tools take many inputs),
  median of --repeat runs: the throughput of the work itself, start-up paid once.
Then a 1080p clip (the Hamilton clip upscaled, 90 frames) for speed only.

Our package's bytecode is compiled first (as a pip install does), so every timed run loads it like an
installed copy: without it, PYTHONDONTWRITEBYTECODE (set in some shells) makes each run recompile our sources.

deface lives in its own venv (default /work/venv-deface, created with `deface==1.5.0 onnxruntime` if missing);
it is never a dependency of the project.

    python bench/redact.py [--data ../shared/data] [--deface-venv DIR] [--repeat N] [--no-1080p]

Last line: key=value headline.
"""

from __future__ import annotations

import argparse
import compileall
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.config_recognition import RetinaFaceConfig, RuntimeConfig
from streamproc.models.providers import create_session
from streamproc.models.registry import RETINAFACE, ModelStore
from streamproc.vision.detect import RetinaFaceDetector
from streamproc.vision.track import iou_matrix

ROOT = Path(__file__).resolve().parents[1]
STREAMPROC = str(Path(sys.executable).with_name("streamproc"))
DARK = 40
DEFACE_VERSION = "1.5.0"
# (name, extra deface arguments); {2x} is replaced by the clip's size doubled
DEFACE_TUNED = [
    ("boxes t0.1 m1.5", ["--thresh", "0.1", "--mask-scale", "1.5", "--boxes"]),
    ("boxes t0.05 m1.8", ["--thresh", "0.05", "--mask-scale", "1.8", "--boxes"]),
    ("boxes t0.1 m1.5 2x", ["--thresh", "0.1", "--mask-scale", "1.5", "--boxes", "--scale", "{2x}"]),
]
CENTERFACE = """
import json, sys
import imageio.v2 as iio
from deface.centerface import CenterFace
path, w, h, thresh = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
cf = CenterFace(in_shape=(w, h), backend="auto")
out = []
for frame in iio.get_reader(path):
    dets, _ = cf(frame, threshold=thresh)
    out.append([[round(float(v), 2) for v in d[:5]] for d in dets])
print(json.dumps(out))
"""

Box = tuple[float, float, float, float]


def ensure_deface(venv: Path) -> Path:
    """The deface venv's bin folder, creating the venv (deface + onnxruntime from the package index) if needed."""
    exe = venv / "bin" / "deface"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"deface=={DEFACE_VERSION}", "onnxruntime"], check=True
        )
    return venv / "bin"


def decode(path: Path) -> list[NDArray[np.uint8]]:
    with av.open(str(path)) as c:
        return [np.asarray(f.to_ndarray(format="bgr24"), np.uint8) for f in c.decode(video=0)]


def ours_2x(frames: list[NDArray[np.uint8]]) -> list[list[Box]]:
    path, sha = ModelStore().path(RETINAFACE, True)
    h, w = frames[0].shape[:2]
    cfg = RetinaFaceConfig(score_threshold=0.3, min_face_px=4, max_side=None, min_side=2 * min(h, w), max_batch=2)
    det = RetinaFaceDetector(create_session(path, RuntimeConfig(), "detector"), cfg, sha)
    return [[tuple(map(float, b)) for b in det.detect([f])[0].boxes] for f in frames]  # type: ignore[misc]


def lead_in(read: int, written: int) -> int:
    """Frames imageio (inside deface) adds before the first real frame.

    imageio's ffmpeg reader starts at time 0, so a clip whose first frame is stamped later (the Hamilton clip
    starts at 0.852 s) comes out with copies of the first frame in front (25 there; checked pixel for pixel).
    PyAV frame k is imageio frame k + lead_in."""
    return max(0, written - read)


def centerface_2x(bin_dir: Path, clip: Path, width: int, height: int, frames: int) -> list[list[Box]]:
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", CENTERFACE, str(clip), str(2 * width), str(2 * height), "0.2"],
        capture_output=True,
        text=True,
        check=True,
    )
    boxes = [[tuple(d[:4]) for d in frame] for frame in json.loads(done.stdout)]
    return boxes[max(0, len(boxes) - frames) :]  # see lead_in()


def reference(a: list[list[Box]], b: list[list[Box]], chain: int = 5) -> list[list[Box]]:
    """Boxes both passes agree on, plus single-pass boxes a track of agreed boxes confirms (see module doc)."""
    n = min(len(a), len(b))
    cands: list[list[tuple[Box, bool]]] = []
    for t in range(n):
        ious = iou_matrix(np.array(a[t]).reshape(-1, 4), np.array(b[t]).reshape(-1, 4))
        used_a, used_b, frame = set(), set(), []
        for i, j in sorted(np.argwhere(ious >= 0.3).tolist(), key=lambda ij: -ious[ij[0], ij[1]]):
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            frame.append((tuple((np.array(a[t][i]) + np.array(b[t][j])) / 2), True))
        frame += [(a[t][i], False) for i in range(len(a[t])) if i not in used_a]
        frame += [(b[t][j], False) for j in range(len(b[t])) if j not in used_b]
        cands.append(frame)
    # frame-to-frame IoU chains over all candidates
    label: list[list[int]] = []
    members: list[list[bool]] = []
    for t, frame in enumerate(cands):
        ids = []
        prev = cands[t - 1] if t else []
        ious = iou_matrix(np.array([c[0] for c in frame]).reshape(-1, 4), np.array([c[0] for c in prev]).reshape(-1, 4))
        taken: set[int] = set()
        for i in range(len(frame)):
            j = int(np.argmax(ious[i])) if prev else -1
            if j >= 0 and ious[i, j] >= 0.3 and j not in taken:
                taken.add(j)
                ids.append(label[t - 1][j])
            else:
                ids.append(len(members))
                members.append([])
            members[ids[-1]].append(frame[i][1])
        label.append(ids)
    confirmed = {k for k, m in enumerate(members) if len(m) >= chain and any(m)}
    return [
        [c[0] for c, k in zip(frame, label[t], strict=True) if c[1] or k in confirmed] for t, frame in enumerate(cands)
    ]


def hidden(orig: NDArray[np.uint8], out: NDArray[np.uint8], box: Box) -> float:
    h, w = orig.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    before = orig[y1:y2, x1:x2].max(axis=2)
    after = out[y1:y2, x1:x2].max(axis=2)
    judged = before >= DARK
    if judged.sum() == 0:
        return 1.0
    return float(((after < DARK) & judged).sum() / judged.sum())


@dataclass
class Score:
    boxes: int = 0
    covered: int = 0
    visible_frames: int = 0
    frames: int = 0
    worst: float = 1.0  # lowest per-clip coverage (totals only)

    @property
    def coverage(self) -> float:
        return self.covered / self.boxes if self.boxes else 1.0


def score(orig: list[NDArray[np.uint8]], output: Path, refs: list[list[Box]]) -> Score:
    out = decode(output)
    if len(out) != len(orig):
        print(f"  ({output.name}: {len(out)} frames written for {len(orig)} read; aligned)", flush=True)
        out = out[lead_in(len(orig), len(out)) :]
    s = Score(frames=len(orig))
    for t, boxes in enumerate(refs):
        if not boxes:
            continue
        ok = [t < len(out) and hidden(orig[t], out[t], b) >= 0.9 for b in boxes]
        s.boxes += len(ok)
        s.covered += sum(ok)
        s.visible_frames += not all(ok)
    return s


def run_ours(clip: Path, work: Path, config: Path | None = None) -> tuple[Path, float, float]:
    out = work / ("ours" if config is None else f"ours-{config.stem}")
    t = time.perf_counter()
    done = subprocess.run(  # noqa: PLW1510 - the return code is checked below, with stderr in the message
        [
            STREAMPROC,
            "redact",
            str(clip),
            "--out",
            str(out),
            "--method",
            "box",
            "--quiet",
            "--overwrite",
            "--audit-dir",
            str(work / "audit"),
            "--operator",
            "bench",
            "--reason",
            "bench",
            *(["--config", str(config)] if config else []),
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(f"streamproc redact failed on {clip}: {done.stderr.strip()}")
    stem = clip.stem
    report = json.loads((out / f"{stem}.redaction.json").read_text())
    return out / f"{stem}.redacted.mp4", wall, float(report["seconds"])


def run_deface(bin_dir: Path, clip: Path, output: Path, extra: list[str], size: tuple[int, int]) -> float:
    args = [a.replace("{2x}", f"{2 * size[0]}x{2 * size[1]}") for a in extra]
    t = time.perf_counter()
    subprocess.run(
        [str(bin_dir / "deface"), str(clip), "-o", str(output), "--replacewith", "solid", *args],
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - t


def batch_walls(clips: list[Path], work: Path, bin_dir: Path, repeat: int) -> tuple[float, float]:
    """Median wall seconds of one command over all ``clips``: ours (``--out`` a folder) and deface's defaults
    (outputs beside its inputs, so each run gets fresh links to the clips)."""
    ours: list[float] = []
    theirs: list[float] = []
    for k in range(repeat):
        t = time.perf_counter()
        subprocess.run(
            [
                *(STREAMPROC, "redact", *map(str, clips), "--out", str(work / "batch-ours"), "--method", "box"),
                *("--quiet", "--overwrite", "--audit-dir", str(work / "audit"), "--operator", "bench"),
                *("--reason", "bench"),
            ],
            capture_output=True,
            check=True,
        )
        ours.append(time.perf_counter() - t)
        folder = work / f"batch-deface-{k}"
        folder.mkdir()
        links = [folder / c.name for c in clips]
        for link, clip in zip(links, clips, strict=True):
            link.symlink_to(clip.resolve())
        t = time.perf_counter()
        subprocess.run(
            [str(bin_dir / "deface"), *map(str, links), "--replacewith", "solid"], capture_output=True, check=True
        )
        theirs.append(time.perf_counter() - t)
    return statistics.median(ours), statistics.median(theirs)


def make_1080p(source: Path, target: Path, frames: int = 90) -> None:
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream("libx264", rate=vin.average_rate, options={"crf": "18", "preset": "veryfast"})
        vout.width, vout.height, vout.pix_fmt = 1920, 1080, "yuv420p"
        for i, frame in enumerate(src.decode(vin)):
            if i >= frames:
                break
            img = np.asarray(
                cv2.resize(frame.to_ndarray(format="bgr24"), (1920, 1080), interpolation=cv2.INTER_CUBIC), np.uint8
            )
            dst.mux(vout.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        dst.mux(vout.encode(None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--deface-venv", type=Path, default=Path("/work/venv-deface"))
    ap.add_argument("--no-1080p", action="store_true")
    ap.add_argument("--also", type=Path, action="append", default=[], help="Also run ours with this redact.yaml.")
    ap.add_argument("--repeat", type=int, default=3, help="Timed runs per clip and tool (median).")
    args = ap.parse_args()
    bin_dir = ensure_deface(args.deface_venv)
    compileall.compile_dir(ROOT / "streamproc", quiet=1)
    clips = sorted((args.data / "video").glob("*.mp4"))
    totals: dict[str, Score] = {}
    walls: dict[str, float] = {}
    frames_total = 0
    job_s = 0.0
    speedups: list[float] = []  # per clip: our wall fps / deface's (defaults) wall fps
    fps_360p = job_fps_360p = float("nan")  # the 640x360 clip (Hamilton)
    names = ["ours", *(f"ours {c.stem}" for c in args.also), "deface", *(n for n, _ in DEFACE_TUNED)]
    with tempfile.TemporaryDirectory(prefix="bench-redact-") as tmp:
        work = Path(tmp)
        for clip in clips:
            orig = decode(clip)
            h, w = orig[0].shape[:2]
            refs = reference(ours_2x(orig), centerface_2x(bin_dir, clip, w, h, len(orig)))
            frames_total += len(orig)
            results: dict[str, tuple[Score, float]] = {}
            runs = [run_ours(clip, work) for _ in range(args.repeat)]
            output, _, job = runs[-1]
            wall = statistics.median(r[1] for r in runs)
            job_s += statistics.median(r[2] for r in runs)
            results["ours"] = (score(orig, output, refs), wall)
            for config in args.also:
                output, wall, _ = run_ours(clip, work, config)
                results[f"ours {config.stem}"] = (score(orig, output, refs), wall)
            for name, extra in [("deface", []), *DEFACE_TUNED]:
                out = work / f"deface-{name.replace(' ', '_')}.mp4"
                repeat = args.repeat if name == "deface" else 1
                secs = statistics.median(run_deface(bin_dir, clip, out, extra, (w, h)) for _ in range(repeat))
                results[name] = (score(orig, out, refs), secs)
            speedups.append(results["deface"][1] / results["ours"][1])
            if (w, h) == (640, 360):
                fps_360p, job_fps_360p = len(orig) / results["ours"][1], len(orig) / job
            print(
                f"{clip.name} ({w}x{h}, {len(orig)} frames, {sum(map(len, refs))} reference boxes; "
                f"ours job {len(orig) / job:.1f} fps)",
                flush=True,
            )
            for name in names:
                s, secs = results[name]
                print(
                    f"  {name:20} coverage {s.coverage:7.2%} ({s.covered}/{s.boxes})  frames with a visible face "
                    f"{s.visible_frames:3}/{s.frames}  {len(orig) / secs:6.1f} fps (wall)",
                    flush=True,
                )
                t = totals.setdefault(name, Score())
                t.boxes += s.boxes
                t.covered += s.covered
                t.visible_frames += s.visible_frames
                t.frames += s.frames
                t.worst = min(t.worst, s.coverage)
                walls[name] = walls.get(name, 0.0) + secs
        best = max((n for n in names if not n.startswith("ours")), key=lambda n: totals[n].coverage)
        print("all clips:")
        for name in names:
            t = totals[name]
            print(
                f"  {name:20} coverage {t.coverage:7.2%}  worst clip {t.worst:7.2%}  visible-face frames "
                f"{t.visible_frames}/{t.frames}  {frames_total / walls[name]:6.1f} fps (wall)"
            )
        print(f"  deface best settings for this footage: {best}")
        batch, d_batch = batch_walls(clips, work, bin_dir, args.repeat)
        print(
            f"batch (one command, {len(clips)} clips, {frames_total} frames): ours {frames_total / batch:.1f} fps "
            f"({batch:.2f} s), deface {frames_total / d_batch:.1f} fps ({d_batch:.2f} s)"
        )
        fps_1080 = d_fps_1080 = float("nan")
        if not args.no_1080p and clips:
            big = work / "hamilton_1080p.mp4"
            make_1080p(next(c for c in clips if "hamilton" in c.name), big)
            n = len(decode(big))
            _, wall, job = run_ours(big, work)
            fps_1080 = n / wall
            d_fps_1080 = n / run_deface(bin_dir, big, work / "d1080.mp4", [], (1920, 1080))
            print(f"1080p ({n} frames): ours {fps_1080:.2f} fps wall ({n / job:.2f} job), deface {d_fps_1080:.2f} fps")
    ours = totals["ours"]
    print(
        f"coverage={ours.coverage:.4f} deface_coverage={totals['deface'].coverage:.4f} "
        f"fps={frames_total / walls['ours']:.1f} deface_fps={frames_total / walls['deface']:.1f} "
        f"min_clip_coverage={ours.worst:.4f} "
        f"deface_best_coverage={totals[best].coverage:.4f} job_fps={frames_total / job_s:.1f} "
        f"fps_1080p={fps_1080:.2f} deface_fps_1080p={d_fps_1080:.2f} fps_360p={fps_360p:.1f} "
        f"job_fps_360p={job_fps_360p:.1f} min_clip_speedup_vs_deface={min(speedups, default=float('nan')):.2f} "
        f"batch_fps={frames_total / batch:.1f} deface_batch_fps={frames_total / d_batch:.1f}"
    )


if __name__ == "__main__":
    main()
