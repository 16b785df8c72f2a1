"""The embedded demo: the whole pipeline on a clip made from images that ship inside installed packages.

No camera, no internet, no ../shared data. scikit-image ships ``astronaut.png`` (NASA portrait of Eileen
Collins, public domain) and ``camera.png`` (the classic "cameraman", a different person). The demo writes a
body-camera-like clip (shake, motion blur, flicker, the astronaut approaching, the cameraman standing by),
enrols the astronaut from the original photo, runs the pipeline on the clip, and collects the match events
with a real ZeroMQ subscriber. It is a smoke test that every stage runs; it is not evidence of accuracy
(see ``streamproc evaluate``). ``streamproc demo`` is the command; the clip and assets are built here.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from numpy.typing import NDArray

from streamproc.cli.common import DeviceOpt, err_console, out, recognition_config
from streamproc.errors import ConfigError
from streamproc.fsutil import sha256_file
from streamproc.types import ImageBGR

if TYPE_CHECKING:  # cv2, the models and the watchlist load when the demo runs, not with every command
    from streamproc.vision.faces import FaceAnalyzer

DEMO_FMR = 1e-3


def _skimage(name: str) -> ImageBGR:
    from skimage import data

    rgb = getattr(data, name)()
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _skimage_sha256(name: str) -> str:
    with importlib.resources.as_file(importlib.resources.files("skimage") / "data" / f"{name}.png") as path:
        return sha256_file(path)


def synth_bodycam_clip(path: Path, seconds: float = 6.0, fps: int = 15, seed: int = 7) -> Path:
    """Write a 640x360 H.264 clip that looks like body-camera footage of package-shipped faces.

    The enrolled astronaut walks in from the right and grows (approaching the wearer) while the camera
    shakes and motion-blurs; the cameraman (not enrolled) stays on the left as a bystander. Deterministic
    for a given seed. Written to a temporary file, then renamed.
    """
    import av
    import cv2

    rng = np.random.default_rng(seed)
    astronaut = _skimage("astronaut")[0:260, 90:350]
    cameraman = _skimage("camera")[40:300, 150:390]
    background = cv2.resize(_skimage("coffee"), (760, 430), interpolation=cv2.INTER_AREA)
    background = cv2.GaussianBlur(background, (0, 0), 2.0)
    n = int(seconds * fps)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i in range(n):
            t = i / max(1, n - 1)
            dx, dy = rng.normal(0, 6, 2)  # camera shake
            frame = background[int(35 + dy) : int(35 + dy) + 360, int(60 + dx) : int(60 + dx) + 640].copy()
            size = int(110 + 90 * t)
            face = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA)
            blur = 1 + int(abs(rng.normal(0, 3)))
            kernel = np.zeros((blur, blur), np.float32)
            kernel[blur // 2, :] = 1.0 / blur
            face = cv2.filter2D(face, -1, kernel)
            x = int(600 - 330 * t - size / 2)
            y = int(200 - size / 2)
            frame[max(0, y) : y + size, max(0, x) : x + size] = face[max(0, -y) :, max(0, -x) :][
                : 360 - max(0, y), : 640 - max(0, x)
            ]
            bystander = cv2.resize(cameraman, (120, 120), interpolation=cv2.INTER_AREA)
            frame[150:270, 40:160] = bystander
            shown: NDArray[np.uint8] = np.ascontiguousarray(
                cv2.convertScaleAbs(frame, alpha=0.85 + 0.1 * np.sin(i / 3), beta=-10), dtype=np.uint8
            )
            video = av.VideoFrame.from_ndarray(shown, format="bgr24")
            for packet in stream.encode(video):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


DEMO_SUBJECT = "demo-astronaut"


@dataclass(frozen=True)
class DemoAssets:
    clip: Path
    watchlist: Path
    config: Path


def demo_config_text() -> str:
    """The pipeline config the demo runs (also committed as configs/demo.yaml), paths relative to it."""
    return (
        "# The embedded demo (`streamproc demo --workdir DIR` writes the clip and watchlist beside this file).\n"
        "sources:\n"
        "  - id: demo\n"
        "    url: bodycam.mp4          # synthetic body-camera clip made from scikit-image's sample photos\n"
        "watchlist:\n"
        "  path: watchlist             # one subject: the astronaut, enrolled from the original photo\n"
        "events:\n"
        "  endpoint: tcp://127.0.0.1:5560\n"
        "metrics:\n"
        "  port: 9108\n"
    )


def prepare_demo(analyzer: FaceAnalyzer, workdir: Path) -> DemoAssets:
    """Write the clip, a one-subject watchlist and the config into ``workdir`` (replacing earlier ones)."""
    import shutil

    from streamproc.search.templates import NewSubject, NewTemplate
    from streamproc.search.watchlist import Watchlist

    workdir.mkdir(parents=True, exist_ok=True)
    clip = synth_bodycam_clip(workdir / "bodycam.mp4")
    watchlist = workdir / "watchlist"
    if watchlist.exists():
        shutil.rmtree(watchlist)
    astronaut = _skimage("astronaut")
    face = max(analyzer.faces(astronaut), key=lambda f: f.quality.face_px)
    with Watchlist.create(watchlist, analyzer.embedder.identity) as wl:
        wl.enroll(
            NewSubject(
                subject_id=DEMO_SUBJECT,
                display_name="Eileen Collins (demo)",
                reason="embedded demo",
                legal_basis="demo data shipped with scikit-image",
                added_by="streamproc-demo",
                expires_at=datetime.now(UTC) + timedelta(days=30),
            ),
            [
                NewTemplate(
                    vector=analyzer.embed([face])[0],
                    source_sha256=_skimage_sha256("astronaut"),
                    quality=face.quality.score,
                    chip=face.chip,  # shown to reviewers in the review console
                )
            ],
        )
    config = workdir / "demo.yaml"
    config.write_text(demo_config_text(), encoding="utf-8")
    return DemoAssets(clip=clip, watchlist=watchlist, config=config)


def demo_command(
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Keep the clip, watchlist and demo.yaml here (default: a temp dir)."),
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """Run the embedded demo: the whole pipeline, no camera, no internet.

    Makes a body-camera-like clip from images shipped with scikit-image, enrols one face, runs the pipeline
    on the clip and prints the match events a real ZeroMQ subscriber received, and the metrics endpoint."""
    import tempfile
    import time
    import urllib.request

    from prometheus_client import CollectorRegistry

    from streamproc.config import load_pipeline_config
    from streamproc.feed.subscribe import collecting
    from streamproc.metrics import serve
    from streamproc.runtime.build import build_analyzer, build_pipeline

    if workdir is not None and workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir} is a file, not a directory")
    recognition_config(None, device=device)  # a bad --device is refused before anything is prepared
    err_console.print("[dim]preparing models (the first run builds them offline)…[/dim]")
    with tempfile.TemporaryDirectory(prefix="streamproc-demo-") as tmp:
        work = workdir or Path(tmp)
        analyzer = build_analyzer(recognition_config(None, device=device))
        assets = prepare_demo(analyzer, work)
        cfg = load_pipeline_config(assets.config)
        # Ephemeral ports, so the demo never collides with a running pipeline.
        cfg = cfg.model_copy(
            update={
                "events": cfg.events.model_copy(update={"endpoint": "tcp://127.0.0.1:*"}),
                "runtime": recognition_config(None, device=device).runtime,
            }
        )
        out.print(f"clip: {assets.clip}  watchlist: {assets.watchlist} (1 subject)  config: {assets.config}")
        registry = CollectorRegistry()
        pipeline = build_pipeline(cfg, registry)
        try:
            with serve(registry, "127.0.0.1", 0) as server:
                with collecting(pipeline.publisher_endpoint) as events:
                    time.sleep(0.3)  # let the subscription reach the publisher
                    out.print(f"events: {pipeline.publisher_endpoint}   metrics: {server.url}")
                    stats = pipeline.run()["demo"]
                    time.sleep(0.5)
                scrape = urllib.request.urlopen(server.url, timeout=10).read().decode()  # noqa: S310 - loopback
        finally:
            pipeline.close()
    for event in events:
        out.print(
            f"event {event.event_id} stream={event.stream_id} track={event.track_id} "
            f"candidate={event.subject_id} ({event.subject_name}) {event.metric} distance={event.distance:.3f} "
            f"<= threshold {event.threshold:.3f} ({event.k}-of-{event.n} best shots agree) "
            f"frame t={event.frame_pts_s:.2f}s latency={event.latency_ms['end_to_end']:.0f}ms review={event.review}",
            highlight=False,
        )
    counted = [
        line
        for line in scrape.splitlines()
        if line.startswith(
            (
                "streamproc_frames_processed_total",
                "streamproc_faces_detected_total",
                "streamproc_events_published_total",
            )
        )
    ]
    out.print("scraped from the metrics endpoint: " + "; ".join(counted), highlight=False)
    out.print(
        f"{stats.frames} frames, {stats.faces} faces, {stats.tracks} tracks, {stats.embeddings} best shots embedded, "
        f"{len(events)} event(s). A smoke test, not evidence of accuracy; a candidate is a lead for human "
        "review, never an identification.",
        highlight=False,
    )
    if (
        stats.error
        or not any(e.subject_id == DEMO_SUBJECT for e in events)
        or any(e.subject_id != DEMO_SUBJECT for e in events)
    ):
        err_console.print("demo did not produce the expected single-subject match", highlight=False)
        raise typer.Exit(1)
