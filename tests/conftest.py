"""Shared fixtures: the ../shared evaluation data and the prepared default models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from streamproc.config import RecognitionConfig
    from streamproc.faces import FaceAnalyzer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path to ../shared; skips visibly on a clone without it, fails under CI=true."""
    if not SHARED.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {SHARED} is missing")
        pytest.skip(f"needs {SHARED} (the shared evaluation data), which this checkout lacks")
    return SHARED


@pytest.fixture(scope="session")
def default_config() -> RecognitionConfig:
    """Default recognition settings; models come from the default cache (built on first use)."""
    from streamproc.config import RecognitionConfig

    return RecognitionConfig()


@pytest.fixture(scope="session")
def analyzer(default_config: RecognitionConfig) -> FaceAnalyzer:
    from streamproc.build import build_analyzer

    return build_analyzer(default_config)
