"""Live 1:N search on body-camera sources needs an in-date authorisation that covers the stream."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import STREAMPROC, sface_identity

from streamproc.config import PipelineConfig
from streamproc.records.audit import AuditLog
from streamproc.search.watchlist import Watchlist
from streamproc.stream.authorisation import NotAuthorisedError, check_authorisation, needs_authorisation

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def config(sources: list[dict[str, Any]], authorisation: dict[str, Any] | None = None) -> PipelineConfig:
    policy = {} if authorisation is None else {"authorisation": authorisation}
    return PipelineConfig.model_validate({"sources": sources, "watchlist": {"path": "/wl"}, "policy": policy})


def auth(**over: Any) -> dict[str, Any]:
    return {
        "reference": "WARRANT-2026-0117",
        "scope": "Search for the two suspects of case 2026-0117 during the operation",
        "streams": ["bodycam-*"],
        "expires": (NOW + timedelta(hours=8)).isoformat(),
        **over,
    }


def test_recorded_footage_and_fixed_cameras_need_no_authorisation() -> None:
    cfg = config(
        [
            {"id": "upload", "url": "/evidence/clip.mp4"},
            {"id": "lobby", "url": "rtsp://lobby/stream", "camera": "fixed"},
        ]
    )
    assert not any(needs_authorisation(s) for s in cfg.sources)
    assert check_authorisation(cfg, NOW).live_body_camera == ()


def test_live_body_camera_without_authorisation_is_refused() -> None:
    cfg = config([{"id": "bodycam-7", "url": "rtsp://10.0.0.7/live"}])
    with pytest.raises(NotAuthorisedError, match=r"bodycam-7 needs policy\.authorisation"):
        check_authorisation(cfg, NOW)


def test_an_in_date_covering_authorisation_is_accepted_and_recorded() -> None:
    cfg = config([{"id": "bodycam-7", "url": "rtsp://10.0.0.7/live"}], auth())
    result = check_authorisation(cfg, NOW)
    assert result.live_body_camera == ("bodycam-7",)
    details = result.audit_details()
    assert details["authorisation"] == "WARRANT-2026-0117"
    assert details["live_body_camera_streams"] == ["bodycam-7"]


def test_an_expired_authorisation_is_refused() -> None:
    cfg = config([{"id": "bodycam-7", "url": "rtsp://10.0.0.7/live"}], auth(expires=NOW.isoformat()))
    with pytest.raises(NotAuthorisedError, match="expired"):
        check_authorisation(cfg, NOW)


def test_a_stream_outside_the_scope_is_refused() -> None:
    cfg = config(
        [{"id": "bodycam-7", "url": "rtsp://10.0.0.7/live"}, {"id": "van-2", "url": "rtsp://10.0.0.9/live"}],
        auth(),
    )
    with pytest.raises(NotAuthorisedError, match="does not cover stream"):
        check_authorisation(cfg, NOW)


def test_expiry_needs_a_utc_offset() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        config([{"id": "bodycam-7", "url": "rtsp://x/y"}], auth(expires="2027-01-01T00:00:00"))


def test_run_refuses_in_one_line_and_audits_the_refusal(tmp_path: Path) -> None:
    cfg = tmp_path / "live.yaml"
    cfg.write_text(
        "sources:\n  - id: bodycam-7\n    url: rtsp://127.0.0.1:9/live\n"
        f"watchlist:\n  path: {tmp_path / 'wl'}\naudit:\n  dir: {tmp_path / 'audit'}\nmetrics:\n  port: null\n"
    )
    with Watchlist.create(tmp_path / "wl", sface_identity()):
        pass  # a real watchlist, so the only thing wrong is the missing authorisation
    done = subprocess.run([STREAMPROC, "run", str(cfg), "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs policy.authorisation" in lines[0], done.stderr
    log = AuditLog.open(tmp_path / "audit")
    refused = [r for r in log.records() if r.action == "pipeline_refused"]
    assert len(refused) == 1 and "bodycam-7" in str(refused[0].details["reason"])
    assert log.verify() == []
