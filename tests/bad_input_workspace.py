"""The inputs the bad-input table points at, made once per module in a temporary directory.

Everything is real: a clip encoded with PyAV, photos from scikit-image with zero, one and two faces, a
watchlist with one enrolled subject, an event journal holding one match event, CURVE keys.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data
from support import free_port, make_event

CLIP_FRAMES = 24


@dataclass(frozen=True)
class Workspace:
    root: Path
    busy_port: int
    free_port: int
    event_id: str


def make_clip(path: Path, faststart: bool) -> None:
    """A small real H.264 clip: ``CLIP_FRAMES`` frames of 64x48 at 12 fps."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(CLIP_FRAMES):
            image = rng.integers(0, 255, (48, 64, 3), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())


def _photos(root: Path) -> None:
    face = data.astronaut()[:, :, ::-1]  # RGB -> BGR for OpenCV
    cv2.imwrite(str(root / "face.jpg"), face)
    cv2.imwrite(str(root / "two.jpg"), np.concatenate([face, face], axis=1))
    cv2.imwrite(str(root / "coffee.png"), data.coffee()[:, :, ::-1])
    (root / "notes.jpg").write_text("not an image\n")
    (root / "empty.jpg").write_bytes(b"")
    whole = (root / "face.jpg").read_bytes()
    (root / "half.jpg").write_bytes(whole[: len(whole) // 10])


def _configs(root: Path, events_port: int) -> None:
    good = f"""\
sources:
  - id: cam1
    url: clip.mp4
watchlist:
  path: wl
events:
  endpoint: tcp://127.0.0.1:{events_port}
metrics:
  port: null
"""
    (root / "good.yaml").write_text(good)
    (root / "two-sources.yaml").write_text(
        good.replace("    url: clip.mp4\n", "    url: clip.mp4\n  - id: cam2\n    url: clip.mp4\n")
    )
    journal = good.replace("  endpoint:", "  journal: {path: journal.sqlite}\n  endpoint:")
    (root / "journal.yaml").write_text(journal)
    (root / "broken.yaml").write_text("sources: [\n  - id: a\n")
    (root / "empty.yaml").write_text("")
    (root / "list.yaml").write_text("- sources\n- watchlist\n")
    (root / "unknown-key.yaml").write_text(good + "metrcs: {port: 9108}\n")
    (root / "wrong-type.yaml").write_text(good.replace("port: null", "port: lots"))
    (root / "empty-url.yaml").write_text(good.replace("url: clip.mp4", 'url: ""'))
    (root / "blank-url.yaml").write_text(good.replace("url: clip.mp4", 'url: "   "'))
    (root / "bad-endpoint.yaml").write_text(good.replace(f"tcp://127.0.0.1:{events_port}", "garbage"))
    (root / "port-range.yaml").write_text(good.replace("port: null", "port: 70000"))
    (root / "no-sources.yaml").write_text(
        good.replace("  - id: cam1\n    url: clip.mp4\n", "").replace(":\n", ": []\n", 1)
    )
    (root / "replay-no-journal.yaml").write_text(
        good.replace("  endpoint:", "  replay_endpoint: tcp://127.0.0.1:1\n  endpoint:")
    )
    (root / "confdir.yaml").mkdir()


def make_workspace(root: Path, busy_port: int) -> Workspace:
    """Build every input under ``root`` (the commands' working directory); ``tmp/`` is their TMPDIR."""
    from streamproc.config_recognition import RecognitionConfig
    from streamproc.feed.journal import EventJournal
    from streamproc.feed.security import generate_keypair
    from streamproc.runtime.build import build_analyzer
    from streamproc.search.enrol import FaceChoice, templates_from_images
    from streamproc.search.templates import NewSubject
    from streamproc.search.watchlist import Watchlist

    (root / "tmp").mkdir()
    make_clip(root / "clip.mp4", faststart=True)
    make_clip(root / "tail-index.mp4", faststart=False)
    whole = (root / "tail-index.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(whole[: int(len(whole) * 0.4)])  # its index was at the end: gone
    (root / "tail-index.mp4").unlink()
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(1).integers(0, 255, 20_000, np.uint8).tobytes())
    (root / "empty.mp4").write_bytes(b"")
    _photos(root)
    events_port = free_port()
    _configs(root, events_port)
    (root / "notwl").mkdir()
    (root / "notwl" / "readme.txt").write_text("not a watchlist\n")
    (root / "emptydir").mkdir()
    (root / "afile.txt").write_text("a file where a directory belongs\n")
    (root / "labels.csv").write_text("this,is,not\nthe,expected,header\n")
    (root / "pairs.txt").write_text("garbage\n")
    generate_keypair(root / "keys", "taken")
    analyzer = build_analyzer(RecognitionConfig())
    with Watchlist.create(root / "wl", analyzer.embedder.identity) as wl:
        templates = templates_from_images([root / "face.jpg"], analyzer, FaceChoice(largest=True))
        wl.enroll(NewSubject("s-1", "Subject One", "test", "test fixture", "pytest"), templates)
    from streamproc.records.audit import AuditLog

    AuditLog.open_or_create(root / "wl", actor="pytest").append("pytest", "enrol", subject_id="s-1", reason="test")
    with sqlite3.connect(root / "wl" / "watchlist.sqlite") as db:  # quiescent: readers find no WAL to fold in
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    event = make_event(stream="cam1")
    with EventJournal(root / "journal.sqlite") as journal:
        journal.append(event)
    return Workspace(root=root, busy_port=busy_port, free_port=free_port(), event_id=event.event_id)
