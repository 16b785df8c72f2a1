"""``run``'s checks before anything is loaded, opened for writing or created: a refused run leaves no trace.

Command-line overrides go through the same validation as the YAML (:func:`with_overrides`); :func:`preflight`
then checks what the config points at: the watchlist (and the audit log beside it) exists, file sources exist
and have a readable video header, and the ports to bind are free. ``run --dry-run`` stops after the checks
that only look (``probe=False``): nothing is opened, bound or written.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from streamproc.config import PipelineConfig
from streamproc.errors import ConfigError

OVERRIDES: dict[str, tuple[str | int, ...]] = {
    "--source": ("sources", 0, "url"),
    "--watchlist": ("watchlist", "path"),
    "--events": ("events", "endpoint"),
    "--metrics-port": ("metrics", "port"),
}
"""Each option of ``run`` that replaces a config value, and that value's key path."""


def with_overrides(cfg: PipelineConfig, path: Path, values: dict[str, Any]) -> PipelineConfig:
    """``cfg`` with the options in ``values`` (option name -> value, None = not given), validated as YAML is.

    A bad value names the option and the key path it replaces: ``--metrics-port 70000: metrics.port: …``.
    """
    given = {opt: v for opt, v in values.items() if v is not None}
    if not given:
        return cfg
    if "--source" in given and len(cfg.sources) != 1:
        raise ConfigError(f"--source replaces the one source of a config; {path} has {len(cfg.sources)}")
    data = cfg.model_dump()
    for opt, value in given.items():
        *parents, key = OVERRIDES[opt]
        node: Any = data
        for part in parents:
            node = node[part]
        node[key] = str(value) if isinstance(value, Path) else value
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            opt = next((o for o, loc in OVERRIDES.items() if tuple(e["loc"][: len(loc)]) == loc), "")
            shown = f"{opt} {given[opt]!r}: " if opt in given else ""
            problems.append(f"{shown}{where}: {e['msg'].removeprefix('Value error, ')}")
        raise ConfigError("; ".join(problems)) from None


def _check_watchlist(path: Path, what: str) -> None:
    if not path.exists():
        raise ConfigError(
            f"watchlist.path: {what} {path} does not exist; create it or enrol a subject first (watchlist enroll)"
        )
    if not path.is_dir():
        raise ConfigError(f"watchlist.path: {what} {path} is not a directory")
    if what == "watchlist" and not (path / "watchlist.sqlite").is_file():
        damaged = (path / "index.hnsw").exists()
        raise ConfigError(
            f"watchlist.path: watchlist {path} has no watchlist.sqlite: "
            + ("damaged; restore it from backup" if damaged else "not a watchlist directory (enrol a subject first)")
        )


def _check_source(index: int, url: str, probe: bool) -> None:
    from streamproc.stream.source import VIDEO_EXTENSIONS, source_kind

    where = f"sources.{index}.url"
    kind = source_kind(url)
    if kind == "url":
        return
    path = Path(url)
    if kind == "folder":
        if not any(p.suffix.lower() in VIDEO_EXTENSIONS for p in path.iterdir() if p.is_file()):
            exts = ", ".join(sorted(VIDEO_EXTENSIONS))
            raise ConfigError(f"{where}: {path}: folder has no video files ({exts})")
        return
    if not path.exists():
        raise ConfigError(f"{where}: {path}: no such file or folder")
    if probe:
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ConfigError(f"{where}: {path}: has no video stream")
        except av.error.FFmpegError:
            raise ConfigError(f"{where}: {path}: not a video file, or its header is corrupt or missing") from None


def _check_port(what: str, host: str, port: int) -> None:
    """Bind and release at once: a port another process holds is refused before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind(("" if host == "*" else host.strip("[]"), port))
        except (OSError, OverflowError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise ConfigError(f"{what}: cannot bind {host}:{port}: {reason}") from None


def _tcp(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp://host:port`` endpoint with a fixed port; None for others (``*`` port, ipc)."""
    transport, _, address = endpoint.partition("://")
    host, _, port = address.split(";")[-1].rpartition(":")
    return (host, int(port)) if transport == "tcp" and port.isdigit() else None


def preflight(cfg: PipelineConfig, role: str, probe: bool) -> None:
    """Every check that needs no model, in the order a user fixes them; ConfigError at the first problem.

    ``probe`` also opens file sources' headers and test-binds the ports (``run``); without it only the
    file system is looked at (``run --dry-run``).
    """
    if role in ("all", "embed"):
        _check_watchlist(cfg.watchlist.path, "watchlist")
    if cfg.audit.dir is None:  # the audit log lives in the watchlist directory: never create that for it
        _check_watchlist(cfg.watchlist.path, "watchlist (holds the audit log; or set audit.dir)")
    if role in ("all", "workers"):
        for i, source in enumerate(cfg.sources):
            _check_source(i, source.url, probe)
    if not probe:
        return
    if cfg.metrics.port:
        _check_port("metrics.port", cfg.metrics.host, cfg.metrics.port)
    if role in ("all", "embed"):
        for key, endpoint in (
            ("events.endpoint", cfg.events.endpoint),
            ("events.replay_endpoint", cfg.events.replay_endpoint),
        ):
            tcp = _tcp(endpoint) if endpoint else None
            if tcp is not None:
                _check_port(key, *tcp)
