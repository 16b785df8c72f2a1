"""The review console end to end in a real browser: Debian's chromium driven by Playwright (nothing downloaded),
a real `streamproc run` on the Hamilton clip producing a Miranda candidate, two reviewers, a real subscriber on
`review.<stream>`, and the audit log verified at the end.

`make review-screenshot` runs this test with STREAMPROC_SCREENSHOT=docs/review-candidate.png to regenerate the
README's screenshot of the candidate page.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from desk_server import PASSWORD, add_accounts, running, write_config
from support import STREAMPROC, free_port, make_event, make_watchlist

from streamproc.config import load_pipeline_config
from streamproc.feed.journal import EventJournal
from streamproc.feed.schema import REVIEW_TOPIC_PREFIX, MatchEvent, ReviewEvent
from streamproc.feed.subscribe import EventSubscriber
from streamproc.records.audit import AuditLog

pytestmark = pytest.mark.slow

HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright; skips visibly without it, fails under CI=true (.ci/run installs it)."""
    reason = ""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if not reason and not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            launched.close()


def _pipeline(tmp: Path, shared_dir: Path, watchlist: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`streamproc run` on the looping, real-time Hamilton clip, with a journal and an audit directory."""
    config = tmp / "run.yaml"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [{"id": "ham", "url": str(shared_dir / HAMILTON), "realtime": True, "loop": True}],
                "watchlist": {"path": str(watchlist)},
                "events": {"endpoint": endpoint, "journal": {"path": str(tmp / "journal.db")}},
                "metrics": {"port": None},
                "audit": {"dir": str(tmp / "audit")},
                "review": {"listen": f"127.0.0.1:{free_port()}"},
            }
        )
    )
    log = (tmp / "run.log").open("w")
    proc = subprocess.Popen([STREAMPROC, "run", str(config), "-q"], stdout=log, stderr=subprocess.STDOUT)
    return proc, config


def _wait(what: str, check: Any, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()}")
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()}")


def _sign_in(page: Any, user: str) -> None:
    """Fill and send the sign-in form the page shows (every desk account has the same test password)."""
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def _miranda(journal: Path) -> MatchEvent | None:
    if not journal.exists():
        return None
    with EventJournal(journal) as j:
        return next((e for e in j.since(0) if e.subject_id == "lin_manuel_miranda"), None)


@pytest.mark.shared
def test_two_reviewers_confirm_a_real_candidate_in_a_real_browser(
    browser: Any, shared_dir: Path, tmp_path: Path
) -> None:
    watchlist = make_watchlist(
        shared_dir,
        tmp_path / "wl",
        {"lin_manuel_miranda": [], "barack_obama": ["examples__obama.jpg", "examples__obama2.jpg"]},
    )
    proc, config = _pipeline(tmp_path, shared_dir, watchlist)
    try:
        event = _wait("a Miranda candidate", lambda: _miranda(tmp_path / "journal.db"), proc, tmp_path / "run.log")
        cfg = load_pipeline_config(config)
        add_accounts(cfg)
        received: list[ReviewEvent] = []
        with running(config) as base, EventSubscriber(cfg.events.endpoint, topics=(REVIEW_TOPIC_PREFIX,)) as sub:
            time.sleep(0.5)  # let the subscription reach the pipeline's PUB socket
            alice = browser.new_context(viewport={"width": 1280, "height": 720})
            page = alice.new_page()
            page.goto(f"{base}/")
            assert "/login" in page.url  # no session: the sign-in page
            _sign_in(page, "alice")
            row = page.locator(f"a[href='/c/{event.event_id}']")
            row.wait_for()
            assert "Lin Manuel Miranda" in row.inner_text()
            assert event.event_id in page.inner_text("table.queue")  # the full id, to copy
            row.click()
            page.wait_for_selector("#probe")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth > 0])"
            )
            assert len(images) >= 2 and all(ok for _, ok in images), images  # probe and enrolled faces load
            assert any("/enrolled/" in src for src, _ in images)
            assert "PENDING REVIEW: 0 of 2" in page.inner_text("#status")
            assert "non-enrolled people passing this camera would be flagged" in page.content()
            shot = Path(os.environ.get("STREAMPROC_SCREENSHOT", tmp_path / "candidate.png"))
            page.screenshot(path=str(shot))
            page.fill("#note", "Same face shape, hairline and ears; probe sharp and frontal.")
            page.click("#confirm")
            page.wait_for_selector("#decided")
            assert "PENDING REVIEW: 1 of 2" in page.inner_text("#status")
            assert page.locator("#decision").count() == 0  # alice cannot confirm again
            csrf = page.get_attribute("input[name=csrf]", "value")
            forced = page.request.post(
                f"{base}/c/{event.event_id}", form={"decision": "confirm", "note": "again", "csrf": csrf}
            )
            assert forced.status == 409

            bob = browser.new_context(viewport={"width": 1280, "height": 720})
            page_b = bob.new_page()
            page_b.goto(f"{base}/c/{event.event_id}")
            _sign_in(page_b, "bob")
            page_b.wait_for_selector("#note")
            page_b.wait_for_load_state("load")  # desk.js is deferred: its key handler exists only once it ran
            page_b.keyboard.press("c")  # the shortcut asks for a note first
            assert page_b.evaluate("document.activeElement.id") == "note"
            page_b.fill("#note", "Agree: same person.")
            page_b.keyboard.press("Escape")
            page_b.keyboard.press("c")
            page_b.wait_for_selector(".banner.confirmed")
            assert "CONFIRMED by 2 reviewers: alice, bob" in page_b.inner_text("#status")
            assert "Agree: same person." in page_b.inner_text(".history")
            deadline = time.monotonic() + 30
            while len(received) < 2 and time.monotonic() < deadline:
                got = sub.recv_any(timeout_s=0.5)
                if isinstance(got, ReviewEvent):
                    received.append(got)
            alice.close()
            bob.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert [(r.reviewer, r.status) for r in received] == [("alice", "pending"), ("bob", "confirmed")]
    assert all(r.event_id == event.event_id and r.stream_id == "ham" for r in received)
    audit = AuditLog.open(tmp_path / "audit")
    assert audit.verify() == []
    records = list(audit.records())
    assert [r.actor for r in records if r.action == "review"] == ["alice", "bob"]
    viewers = {r.actor for r in records if r.action == "review_view" and r.details["event_id"] == event.event_id}
    assert viewers == {"alice", "bob"}


def test_new_candidates_appear_without_a_reload_and_keys_open_them(browser: Any, tmp_path: Path) -> None:
    journal = tmp_path / "events.sqlite"
    with EventJournal(journal) as j:
        j.append(make_event(track=1))
    config = write_config(tmp_path, journal, tmp_path / "wl")
    add_accounts(load_pipeline_config(config))
    with running(config) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        page = context.new_page()
        page.goto(f"{base}/login")
        _sign_in(page, "alice")
        page.wait_for_selector("table.queue a")
        assert page.locator("table.queue tbody tr").count() == 1
        with EventJournal(journal) as j:
            newer = j.append(make_event(track=2, captured_at=1_800_000_100.0))
        assert newer is not None
        page.wait_for_selector(f"a[href='/c/{newer.event_id}']", timeout=15_000)  # polled in, no reload
        assert "pending 2" in page.inner_text("#counts")
        page.keyboard.press("j")
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/c/{newer.event_id}")  # newest first
        page.keyboard.press("n")
        page.wait_for_url(f"**/c/{make_event(track=1).event_id}")
        page.keyboard.press("p")
        page.wait_for_url(f"{base}/c/{newer.event_id}")
        context.close()
