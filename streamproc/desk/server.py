"""``streamproc review serve``: the console under uvicorn, on ``review.listen`` (localhost by default)."""

from __future__ import annotations

import ipaddress
import logging
import re
import sys

import uvicorn

from streamproc.config import PipelineConfig
from streamproc.desk.app import build_app
from streamproc.errors import ConfigError

log = logging.getLogger(__name__)


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port); :class:`ConfigError` when the port is out of range."""
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    port = int(port_text) if port_text.isdigit() else -1
    if not host or not 0 < port < 65536:
        raise ConfigError(f"review.listen must be HOST:PORT with a port 1-65535, not {listen!r}")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(cfg: PipelineConfig, config_name: str, trusted_user_header: str | None = None) -> None:
    """Run the console until interrupted. Everything is checked (journal, accounts) before the port is bound.

    ``trusted_user_header``: take the reviewer from this header set by a single-sign-on proxy (loopback only)."""
    host, port = split_listen(cfg.review.listen)
    if trusted_user_header is not None:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", trusted_user_header):
            raise ConfigError(f"--trusted-user-header must be a header name, not {trusted_user_header[:70]!r}")
        if not is_loopback(host):
            raise ConfigError(
                f"--trusted-user-header needs a loopback review.listen (not {host}): anyone reaching the console "
                "directly could name any reviewer in the header"
            )
    app = build_app(cfg, config_name, trusted_user_header=trusted_user_header)
    if not is_loopback(host) and not cfg.review.behind_tls:
        log.warning(
            "review console on %s without review.behind_tls: passwords and faces cross the network in clear; "
            "bind to 127.0.0.1 behind a TLS reverse proxy (docs/review.md)",
            host,
        )
    sys.stderr.write(f"review console on http://{host}:{port}/ (journal {cfg.events.journal.path}); Ctrl-C stops it\n")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)


__all__ = ["is_loopback", "serve", "split_listen"]
