"""Test helper: a real RTSP server (GStreamer's gst-rtsp-server) serving a live H.264 test pattern on 127.0.0.1.

Run it with the *system* Python, which has PyGObject (``gi``); the project's venv does not:

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --mount /cam

It prints ``ready rtsp://127.0.0.1:PORT/MOUNT`` on stdout once listening, then serves until killed. The stream
is live (``is-live``: frames at the wall-clock rate, like a camera) and small (320x240 at 15 fps, a keyframe
every second) so a test can reconnect quickly on a busy CPU. The tests kill and restart it to simulate a
camera outage.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi  # type: ignore[import-not-found, unused-ignore]  # the system python3's, not the venv's

# The versions must be pinned before gi.repository imports the bindings, hence the late import.
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96 "
    "config-interval=1 )"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", default="/cam")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE.format(width=args.width, height=args.height, fps=args.fps))
    factory.set_shared(True)  # one encoder for all clients, like a camera
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
