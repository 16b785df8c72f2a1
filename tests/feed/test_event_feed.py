"""The pipeline's event feed warns when it publishes names and face crops off this host unencrypted.

Real sockets: each feed binds an OS-chosen port (on every interface where the case asks for it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamproc.config import CurveConfig, EventsConfig, JournalConfig
from streamproc.feed.event_feed import EventFeed, is_loopback_endpoint
from streamproc.feed.security import generate_keypair
from streamproc.metrics import PipelineMetrics


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _open(config: EventsConfig) -> None:
    with EventFeed(config, PipelineMetrics(CollectorRegistry())):
        pass


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5560", True),
        ("tcp://127.8.0.3:*", True),
        ("tcp://localhost:5560", True),
        ("tcp://[::1]:5560", True),
        ("ipc:///tmp/feed", True),
        ("inproc://feed", True),
        ("tcp://0.0.0.0:5560", False),
        ("tcp://*:5560", False),
        ("tcp://[::]:5560", False),
        ("tcp://10.1.2.3:5560", False),
        ("tcp://eth0:5560", False),
        ("tcp://camera-host.example:5560", False),
    ],
)
def test_loopback_endpoints(endpoint: str, loopback: bool) -> None:
    assert is_loopback_endpoint(endpoint) is loopback


def test_an_unencrypted_feed_on_every_interface_warns_once_per_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = JournalConfig(path=tmp_path / "journal.sqlite", sync="normal")
    with caplog.at_level(logging.WARNING, logger="streamproc"):
        _open(EventsConfig(endpoint="tcp://0.0.0.0:*", journal=journal, replay_endpoint="tcp://*:*"))
    warned = _warnings(caplog)
    assert len(warned) == 2, warned
    assert all("without encryption" in w and "events.curve" in w for w in warned)
    assert "events.endpoint tcp://0.0.0.0:" in warned[0]
    assert "events.replay_endpoint tcp://0.0.0.0:" in warned[1]


def test_loopback_or_encrypted_feeds_do_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streamproc"):
        _open(EventsConfig(endpoint="tcp://127.0.0.1:*"))
        generate_keypair(tmp_path, "server")
        public, _ = generate_keypair(tmp_path, "reviewer")
        (tmp_path / "clients").mkdir()
        public.rename(tmp_path / "clients" / public.name)
        curve = CurveConfig(server_secret_key=tmp_path / "server.key_secret", allowed_clients_dir=tmp_path / "clients")
        _open(EventsConfig(endpoint="tcp://0.0.0.0:*", curve=curve))
    assert _warnings(caplog) == []


CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONTAINER_DEFAULT = "rtsp.yaml"
"""deploy/compose.yaml's default config: inside a container only 0.0.0.0 is reachable through the published
port, and compose publishes it on the host's 127.0.0.1 only (the start-up warning still names it)."""


def _example_pipeline_configs() -> list[str]:
    return sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != CONTAINER_DEFAULT and "sources:" in p.read_text())


@pytest.mark.parametrize("name", _example_pipeline_configs())
def test_example_configs_keep_the_feed_on_this_host_unless_encrypted(name: str) -> None:
    from streamproc.config import load_pipeline_config

    events = load_pipeline_config(CONFIGS / name).events
    if events.curve is None:
        assert is_loopback_endpoint(events.endpoint), events.endpoint
        assert events.replay_endpoint is None or is_loopback_endpoint(events.replay_endpoint)
