"""The end-of-run summary, one format for every process layout.

Both layouts build a :class:`RunSummary` the same way: the counts come from the run's metrics registry (the
pipeline's own in one process, the supervisor's aggregate of every child's in the multi-process layout), and
what a counter cannot carry (a stream's failure message, the names of files cut short) from a
:class:`StreamReport` per stream: the stream fronts' stats in one process, a small JSON file each stream worker
writes when it ends in the other. :func:`render` turns it into the lines ``streamproc run`` prints and
:attr:`RunSummary.exit_code` into its exit status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from streamproc.config import SourceConfig
from streamproc.stream.source import source_kind

EXIT_OK = 0
EXIT_STREAM_FAILED = 1
"""A stream failed (its source could not be opened or decoded) or a process could not start."""
EXIT_NEVER_CONNECTED = 3
"""A live source (URL) never delivered a frame during the whole run: the camera was never reached."""

_COUNTERS = {
    "streamproc_frames_processed_total": "frames",
    "streamproc_frames_decoded_total": "decoded",
    "streamproc_faces_detected_total": "faces",
    "streamproc_tracks_started_total": "tracks",
    "streamproc_embeddings_total": "embeddings",
    "streamproc_events_published_total": "events",
    "streamproc_events_resent_total": "resent",
    "streamproc_source_reconnects_total": "reconnects",
    "streamproc_source_errors_total": "errors",
}


@dataclass(frozen=True)
class StreamReport:
    """What a stream's front knows at its end and no counter carries."""

    error: str | None = None
    cut_short: tuple[str, ...] = ()


@dataclass(frozen=True)
class StreamSummary:
    """One stream's totals for the whole run (every restart of its process included)."""

    stream: str
    live: bool = False
    frames: int = 0
    decoded: int = 0
    faces: int = 0
    tracks: int = 0
    embeddings: int = 0
    events: int = 0
    resent: int = 0
    """Match events the journal already held (an earlier run of the same file, a restart): not sent again."""
    reconnects: int = 0
    errors: int = 0
    """Source errors counted (files skipped or cut short, the stream's failure)."""
    error: str | None = None
    cut_short: tuple[str, ...] = ()

    @property
    def never_connected(self) -> bool:
        """A live source that never delivered a frame: the camera was never reached."""
        return self.live and self.decoded == 0


@dataclass(frozen=True)
class RunSummary:
    streams: tuple[StreamSummary, ...] = field(default_factory=tuple)

    @property
    def exit_code(self) -> int:
        """3 when a live source never connected, else 1 when a stream failed, else 0 (documented in the README)."""
        if any(s.never_connected for s in self.streams):
            return EXIT_NEVER_CONNECTED
        if any(s.error for s in self.streams):
            return EXIT_STREAM_FAILED
        return EXIT_OK


def summarise(
    registry: CollectorRegistry, sources: Sequence[SourceConfig], reports: Mapping[str, StreamReport]
) -> RunSummary:
    """The run's summary: counts from ``registry`` (summed over processes), the rest from ``reports``.

    A stream with no report (its worker was killed and never ended cleanly) keeps its counts; a failure then
    shows as source errors only."""
    counts: dict[str, dict[str, int]] = {s.id: {} for s in sources}
    for family in registry.collect():
        for sample in family.samples:
            name = _COUNTERS.get(sample.name)
            stream = sample.labels.get("stream")
            if name is None or stream not in counts:
                continue
            counts[stream][name] = counts[stream].get(name, 0) + int(sample.value)
    streams = []
    for source in sources:
        report = reports.get(source.id, StreamReport())
        streams.append(
            StreamSummary(
                stream=source.id,
                live=source_kind(source.url) == "url",
                error=report.error,
                cut_short=report.cut_short,
                **counts[source.id],
            )
        )
    return RunSummary(tuple(streams))


def render(summary: RunSummary) -> list[str]:
    """One plain-text line per stream (no markup: callers print it as is)."""
    lines = []
    for s in summary.streams:
        if s.never_connected:
            line = f"{s.stream}: never connected ({s.reconnects} reconnect attempt(s)), 0 frames"
        else:
            line = (
                f"{s.stream}: {s.frames} frames, {s.faces} faces, {s.tracks} tracks, "
                f"{s.embeddings} best shots embedded, {s.events} match event(s)"
            )
        if s.resent:
            line += f"; {s.resent} event(s) already published earlier, not sent again"
        if s.cut_short:
            line += f"; {len(s.cut_short)} file(s) cut short: {', '.join(s.cut_short)}"
        if s.error:
            line += f"; FAILED: {s.error}"
        others = s.errors - len(s.cut_short) - (1 if s.error else 0)  # files skipped; a failure no report told
        if others > 0:
            line += f"; {others} other source error(s), see the warnings above"
        lines.append(line)
    return lines


def write_reports(path: Path, reports: Mapping[str, StreamReport]) -> None:
    """A stream worker's reports as JSON, written atomically (the supervisor reads them after the run)."""
    data = {sid: {"error": r.error, "cut_short": list(r.cut_short)} for sid, r in reports.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def read_reports(directory: Path) -> dict[str, StreamReport]:
    """Every report under ``directory`` (one JSON file per worker); streams no file names are absent."""
    reports: dict[str, StreamReport] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        for sid, r in json.loads(path.read_text(encoding="utf-8")).items():
            reports[str(sid)] = StreamReport(error=r.get("error"), cut_short=tuple(map(str, r.get("cut_short", []))))
    return reports
