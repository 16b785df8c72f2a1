"""Configuration as data: pydantic models that mirror the YAML 1:1, and reading them from YAML files.

The recognition sections (models, runtime, detector, embedder, quality) are :mod:`streamproc.config_recognition`;
this module adds what a `streamproc run` config holds beyond them, and the loaders. Nothing here builds runtime
objects; :mod:`streamproc.runtime.build` does that in one place. Every model forbids unknown keys so a typo is an
error with its key path, never a silently ignored setting.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from streamproc.config_checks import NonBlank, ZmqEndpoint
from streamproc.config_io import format_validation_error, read_yaml
from streamproc.config_recognition import RecognitionConfig, StrictConfig, TrackerConfig
from streamproc.errors import ConfigError


class ReconnectConfig(StrictConfig):
    """How a live (URL) source recovers from an outage: exponential backoff with jitter, forever by default."""

    initial_s: float = Field(0.5, gt=0.0, le=60.0, description="Wait before the first reconnect attempt.")
    max_s: float = Field(30.0, gt=0.0, le=3600.0, description="Longest wait between attempts.")
    multiplier: float = Field(2.0, ge=1.0, le=10.0, description="Each failed attempt multiplies the wait by this.")
    jitter: float = Field(
        0.25, ge=0.0, le=1.0, description="Random fraction (+/-) applied to each wait, so cameras do not retry in step."
    )
    max_attempts: int | None = Field(
        None, ge=0, description="Give up (stream fails) after this many failed attempts in a row; null: never."
    )


class SourceConfig(StrictConfig):
    """One video stream: a file, a folder of clips (processed in name order), or an RTSP/HTTP URL."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Stream id used in topics and metric labels.")
    url: NonBlank = Field(description="File path, folder path, or rtsp:// / http(s):// URL.")
    max_fps: float | None = Field(
        None, gt=0.0, le=240.0, description="Sample at most this many frames per second (by timestamp)."
    )
    buffer: Literal["auto", "wait", "drop_oldest"] = Field(
        "auto",
        description="When processing falls behind decoding: 'wait' (files: lose nothing) or 'drop_oldest' "
        "(live: stay current, drops counted). 'auto' picks wait for files/folders, drop_oldest for URLs.",
    )
    buffer_frames: int = Field(8, ge=1, le=1024, description="Decoded frames held between decode and detect.")
    open_timeout_s: float = Field(
        10.0, gt=0.0, le=300.0, description="A URL open or read taking longer counts as an outage (see reconnect)."
    )
    realtime: bool = Field(
        False, description="Pace file sources at their frame rate (replay as if live); default: as fast as possible."
    )
    loop: bool = Field(False, description="Start a file or folder source again when it ends (soak tests, benches).")
    camera: Literal["body_camera", "fixed"] = Field(
        "body_camera",
        description="What the source films: live 1:N search on a body camera needs policy.authorisation.",
    )
    reconnect: ReconnectConfig = Field(
        ReconnectConfig(), description="Live (URL) sources only: reconnect policy after the camera drops."
    )
    hwaccel: Literal["none", "cuda"] = Field(
        "none",
        description="Decode on the GPU (NVDEC via PyAV's hardware acceleration); falls back to CPU. Frees the cores; "
        "measured faster than the CPU for one stream, slower in aggregate for many (docs/scaling.md).",
    )


class BestShotConfig(StrictConfig):
    """Which frames of a track are embedded: the best of each window, never every frame."""

    window_s: float = Field(0.4, gt=0.0, le=30.0, description="Pick the best face of each window this long.")
    max_shots: int = Field(3, ge=1, le=50, description="Embed at most this many shots per track ...")
    refresh_s: float = Field(10.0, gt=0.0, le=3600.0, description="... then one more every refresh_s for long tracks.")
    native_landmarks: bool = Field(
        True,
        description="Detect each chosen shot's face again in a native-resolution view of it and align its chip "
        "from those landmarks (one small detector call per embedded shot): a face found in a downscaled window "
        "has coarse landmarks. false: align from the landmarks of the detection that offered it.",
    )


class AuthorisationConfig(StrictConfig):
    """A warrant, court order or policy approval that permits live 1:N search, with its scope and expiry."""

    reference: str = Field(min_length=3, max_length=200, description="Case or authorisation reference.")
    scope: str = Field(min_length=3, max_length=2000, description="What the authorisation covers, in words.")
    streams: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description="Stream ids (shell-style patterns) the authorisation covers.",
    )
    expires: datetime = Field(description="End of validity, with a UTC offset (ISO 8601); refused after it.")
    issued_by: str | None = Field(None, max_length=200, description="Who granted it.")

    @model_validator(mode="after")
    def _aware(self) -> AuthorisationConfig:
        if self.expires.tzinfo is None:
            raise ValueError("expires needs a UTC offset, e.g. 2027-01-31T23:59:59+00:00")
        return self


class PolicyConfig(StrictConfig):
    """When a track becomes a candidate for review."""

    k: int = Field(2, ge=1, le=50, description="Flag when k of the last n shots agree on one subject ...")
    n: int = Field(3, ge=1, le=50, description="... under the threshold.")
    target_fmr: float = Field(
        1e-3, gt=0.0, lt=1.0, description="Per-comparison false-match rate whose calibrated threshold is used."
    )
    calibration: Path | None = Field(
        None, description="Calibration file; default: the one shipped for the default embedder."
    )
    threshold: float | None = Field(
        None,
        gt=0.0,
        description="Explicit distance threshold instead of a calibrated one; requires allow_uncalibrated and "
        "marks every event uncalibrated.",
    )
    allow_uncalibrated: bool = Field(False, description="Permit an explicit, uncalibrated threshold.")
    cooldown_s: float = Field(
        30.0, ge=0.0, le=86400.0, description="No second flag for the same subject on a stream within this time."
    )
    authorisation: AuthorisationConfig | None = Field(
        None,
        description="Legal authority for live 1:N search on body-camera (URL) sources; without one the "
        "pipeline refuses to start such a source. Recorded in the audit log at every start.",
    )

    @model_validator(mode="after")
    def _k_within_n(self) -> PolicyConfig:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must be <= n ({self.n})")
        return self


class JournalConfig(StrictConfig):
    """The durable journal every event is written to before it is published (nothing lost, no duplicates)."""

    path: Path | None = Field(
        None, description="SQLite journal file; null: no journal (events are fire-and-forget, no replay)."
    )
    sync: Literal["full", "normal"] = Field(
        "full",
        description="full: each event is on disk before it is published (survives power loss); normal: "
        "survives a process crash, may lose the last events on power loss, faster.",
    )
    max_age_days: float | None = Field(
        30.0, gt=0.0, description="Delete journaled events older than this (they hold face crops)."
    )
    max_events: int | None = Field(None, ge=1, description="Keep at most this many events.")


class CurveConfig(StrictConfig):
    """ZeroMQ CURVE encryption and client authentication for the event and replay endpoints."""

    server_secret_key: Path = Field(description="Server key pair's secret file (`streamproc keys generate`).")
    allowed_clients_dir: Path = Field(description="Directory of the public key files of allowed subscribers.")


class EventsConfig(StrictConfig):
    endpoint: ZmqEndpoint = Field("tcp://127.0.0.1:5560", description="ZeroMQ PUB endpoint the pipeline binds.")
    include_face_jpeg: bool = Field(True, description="Attach the probe's best-shot JPEG to each match event.")
    journal: JournalConfig = JournalConfig()
    replay_endpoint: ZmqEndpoint | None = Field(
        None,
        description="ZeroMQ ROUTER endpoint serving journaled events after a sequence number (needs "
        "journal.path); null: no replay.",
    )
    curve: CurveConfig | None = Field(None, description="Encrypt and authenticate the feed; null: plain TCP.")

    @model_validator(mode="after")
    def _replay_needs_journal(self) -> EventsConfig:
        if self.replay_endpoint is not None and self.journal.path is None:
            raise ValueError("replay_endpoint needs journal.path: replay serves events from the journal")
        return self


class MetricsConfig(StrictConfig):
    port: int | None = Field(9108, ge=0, le=65535, description="Prometheus endpoint port (0 = any free; null = off).")
    host: str = Field("127.0.0.1", description="Address the metrics endpoint binds.")


class WatchlistConfig(StrictConfig):
    path: Path = Field(description="Watchlist directory (see `streamproc watchlist`).")
    reload_s: float = Field(2.0, gt=0.0, le=600.0, description="Poll for watchlist changes this often.")


class AuditConfig(StrictConfig):
    """Where the pipeline appends its audit records (start, stop, every flag)."""

    dir: Path | None = Field(
        None,
        description="Directory of audit.log; null: the watchlist directory (where enrolments are audited). Set "
        "it to a writable, persistent volume when the watchlist is mounted read-only.",
    )
    key: Path | None = Field(None, description="HMAC key file; null: audit.key in the audit directory.")


class ReviewConfig(StrictConfig):
    """Human review of candidates (`streamproc review decide`)."""

    confirmations: int = Field(
        2,
        ge=1,
        le=5,
        description="Distinct reviewers who must confirm a candidate before it counts as confirmed (2: the "
        "two-person rule); a single rejection rejects it.",
    )
    accounts: Path | None = Field(
        None,
        description="Reviewer accounts file (`streamproc review reviewers`); null: reviewers.sqlite in the audit "
        "directory.",
    )
    listen: str = Field(
        "127.0.0.1:8088",
        pattern=r"^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$",
        description="HOST:PORT the review console (`streamproc review serve`) binds; keep it on localhost and put "
        "a TLS reverse proxy in front (docs/review.md).",
    )
    idle_timeout_min: float = Field(
        15.0, gt=0.0, le=720.0, description="A console session ends after this many minutes without a request."
    )
    behind_tls: bool = Field(
        False,
        description="The console is reached through a TLS-terminating proxy: session cookies are marked Secure.",
    )


class ChipCurveConfig(StrictConfig):
    """CURVE encryption and authentication of the chip channel (face images of everyone in view cross it).

    The embed service needs its own key pair and the allowed workers' public keys; a worker needs its own key
    pair and the service's public key. A host running one role needs only that role's two files."""

    server_secret_key: Path | None = Field(None, description="Embed service: its `.key_secret` file.")
    allowed_clients_dir: Path | None = Field(
        None, description="Embed service: directory of allowed workers' `.key` files."
    )
    client_secret_key: Path | None = Field(None, description="Workers: their `.key_secret` file.")
    server_public_key: Path | None = Field(None, description="Workers: the embed service's public `.key` file.")


class ScaleConfig(StrictConfig):
    """Process layout: one process (workers: 0), or a supervisor with stream-worker processes and one embed
    service connected over ZeroMQ (see docs/scaling.md)."""

    workers: int = Field(
        0, ge=0, le=256, description="Stream-worker processes (streams split evenly); 0: everything in one process."
    )
    embed_endpoint: ZmqEndpoint = Field(
        "tcp://127.0.0.1:5570",
        description="Where the embed service receives face chips (it binds; workers connect). Workers on other "
        "hosts use its reachable address.",
    )
    embed_max_wait_ms: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="The embed service waits at most this long for more chips to fill a batch. 0: a batch is what "
        "is queued when the embedder is free (under load that fills batches by itself); on a CPU a lone best shot "
        "then goes at once. A GPU serving many streams gains from a few ms.",
    )
    embed_first_ms: float = Field(
        100.0,
        ge=0.0,
        le=1000.0,
        description="One process (workers: 0): while the embedder runs a batch, a stream waits up to this long "
        "before its next frame, so decisions do not slow down behind detection on shared CPU cores (0: off).",
    )
    queue_hwm: int = Field(
        256,
        ge=1,
        le=100000,
        description="Chips a worker may have in flight to the embed service; more are dropped (counted).",
    )
    curve: ChipCurveConfig | None = Field(
        None,
        description="Encrypt and authenticate the chip channel (required in practice once it leaves the host); "
        "null: plain TCP/IPC.",
    )
    restart_initial_s: float = Field(1.0, gt=0.0, le=60.0, description="First wait before restarting a dead process.")
    restart_max_s: float = Field(30.0, gt=0.0, le=3600.0, description="Longest wait between restarts.")


class PipelineConfig(RecognitionConfig):
    """A whole `streamproc run` configuration: recognition settings plus streams and outputs."""

    sources: list[SourceConfig] = Field(min_length=1, description="Streams to process.")
    watchlist: WatchlistConfig
    tracker: TrackerConfig = TrackerConfig()
    best_shot: BestShotConfig = BestShotConfig()
    policy: PolicyConfig = PolicyConfig()
    events: EventsConfig = EventsConfig()
    metrics: MetricsConfig = MetricsConfig()
    audit: AuditConfig = AuditConfig()
    review: ReviewConfig = ReviewConfig()
    scale: ScaleConfig = ScaleConfig()


def parse_config(data: dict[str, Any], source: str = "<config>") -> RecognitionConfig:
    try:
        return RecognitionConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, model=RecognitionConfig)) from None


def load_config(path: Path) -> RecognitionConfig:
    """Read a YAML file; every error names the file and key path."""
    return parse_config(read_yaml(path), str(path))


def load_pipeline_config(path: Path) -> PipelineConfig:
    """Read a `streamproc run` YAML file; every error names the file and key path (and line)."""
    data = read_yaml(path)
    if not data:
        raise ConfigError(
            f"{path}: the file is empty; a pipeline config needs sources and watchlist (configs/file.yaml)"
        )
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path), _key_lines(path), PipelineConfig)) from None
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: PipelineConfig, base: Path) -> PipelineConfig:
    """Relative paths in a config file are relative to that file, not to the working directory."""

    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    sources = [
        s if "://" in s.url or Path(s.url).is_absolute() else s.model_copy(update={"url": str(base / s.url)})
        for s in config.sources
    ]
    events = config.events
    journal = events.journal.model_copy(update={"path": fix(events.journal.path)})
    curve = (
        None
        if events.curve is None
        else events.curve.model_copy(
            update={
                "server_secret_key": fix(events.curve.server_secret_key),
                "allowed_clients_dir": fix(events.curve.allowed_clients_dir),
            }
        )
    )
    scale = config.scale
    if scale.curve is not None:
        c = scale.curve
        chip_curve = c.model_copy(
            update={
                "server_secret_key": fix(c.server_secret_key),
                "allowed_clients_dir": fix(c.allowed_clients_dir),
                "client_secret_key": fix(c.client_secret_key),
                "server_public_key": fix(c.server_public_key),
            }
        )
        scale = scale.model_copy(update={"curve": chip_curve})
    return config.model_copy(
        update={
            "scale": scale,
            "sources": sources,
            "watchlist": config.watchlist.model_copy(update={"path": fix(config.watchlist.path)}),
            "policy": config.policy.model_copy(update={"calibration": fix(config.policy.calibration)}),
            "events": events.model_copy(update={"journal": journal, "curve": curve}),
            "audit": config.audit.model_copy(update={"dir": fix(config.audit.dir), "key": fix(config.audit.key)}),
        }
    )


def _key_lines(path: Path) -> dict[tuple[str | int, ...], int]:
    """Line number (1-based) of every mapping key in the YAML file, by key path."""
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return lines

    def walk(node: yaml.Node | None, prefix: tuple[str | int, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*prefix, str(key.value))
                lines[here] = key.start_mark.line + 1
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*prefix, i)] = item.start_mark.line + 1
                walk(item, (*prefix, i))

    walk(root, ())
    return lines
