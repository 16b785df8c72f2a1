"""The review console as tests run it: a real uvicorn server on a free 127.0.0.1 port, in a thread, over a real
journal, accounts file and audit log; and a plain HTTP client that signs in like a browser form does."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from support import free_port

from streamproc.config import PipelineConfig, load_pipeline_config
from streamproc.desk.app import build_app
from streamproc.govern.accounts import ReviewerStore, Role, accounts_path

PASSWORD = "correct horse battery"
"""Every test account's password (>= 12 characters)."""

ACCOUNTS: tuple[tuple[str, str, Role], ...] = (
    ("alice", "Alice Reviewer", "reviewer"),
    ("bob", "Bob Reviewer", "reviewer"),
    ("sam", "Sam Supervisor", "supervisor"),
)


def write_config(root: Path, journal: Path, watchlist: Path, **review: Any) -> Path:
    """A run YAML naming the journal, watchlist and an audit directory under ``root``."""
    path = root / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sources": [{"id": "cam1", "url": str(root / "clip.mp4")}],
                "watchlist": {"path": str(watchlist)},
                "events": {"journal": {"path": str(journal)}},
                "audit": {"dir": str(root / "audit")},
                "review": review,
            }
        ),
        encoding="utf-8",
    )
    return path


def add_accounts(cfg: PipelineConfig) -> None:
    with ReviewerStore.open(accounts_path(cfg), create=True) as store:
        for rid, name, role in ACCOUNTS:
            store.add(rid, name, role, PASSWORD)


@contextmanager
def running(config: Path, trusted_user_header: str | None = None) -> Iterator[str]:
    """The console for ``config`` on a free port; yields its base URL."""
    cfg = load_pipeline_config(config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(cfg, str(config), trusted_user_header=trusted_user_header),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the review console did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def sign_in(base: str, user: str, password: str = PASSWORD) -> httpx.Client:
    """A client with a live session (cookies kept), signed in through the login form."""
    client = httpx.Client(base_url=base, timeout=30)
    page = client.get("/login")
    done = client.post("/login", data={"user": user, "password": password, "csrf": csrf_of(page.text), "next": "/"})
    assert done.status_code == 303, (done.status_code, done.text[:300])
    return client
