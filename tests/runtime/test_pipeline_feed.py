"""The pipeline's event feed for real: durable journal, replay of a missed gap, no duplicates after a
re-run, and a CURVE-secured feed that refuses unknown subscribers."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from support import STREAMPROC, make_event

from streamproc.config import PipelineConfig
from streamproc.config_recognition import RecognitionConfig
from streamproc.feed.replay import fetch_since
from streamproc.feed.schema import MatchEvent
from streamproc.feed.security import ClientSecurity, generate_keypair
from streamproc.feed.subscribe import EventSubscriber
from streamproc.runtime.build import build_analyzer, build_pipeline
from streamproc.search.enrol import FaceChoice, templates_from_images
from streamproc.search.templates import NewSubject
from streamproc.search.watchlist import Watchlist

pytestmark = pytest.mark.shared

HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def watchlist(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    analyzer = build_analyzer(RecognitionConfig())
    photos = sorted((shared_dir / "data/identity/face_recognition/lin_manuel_miranda").iterdir())
    directory = tmp_path_factory.mktemp("wl") / "wl"
    with Watchlist.create(directory, analyzer.embedder.identity) as wl:
        wl.enroll(
            NewSubject("lin_manuel_miranda", "Lin-Manuel Miranda", "test", "test", "pytest"),
            templates_from_images(photos, analyzer, FaceChoice(largest=True)),
        )
    return directory


def config(shared_dir: Path, watchlist: Path, events: dict[str, object]) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "sources": [{"id": "ham", "url": str(shared_dir / HAMILTON)}],
            "watchlist": {"path": watchlist},
            "events": {"endpoint": "tcp://127.0.0.1:*", **events},
        }
    )


def test_journal_replays_the_gap_and_a_rerun_publishes_nothing_twice(
    shared_dir: Path, watchlist: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "events.sqlite"
    cfg = config(shared_dir, watchlist, {"journal": {"path": journal}, "replay_endpoint": "tcp://127.0.0.1:*"})
    # Run 1 with no subscriber at all: the events must still be kept.
    pipeline = build_pipeline(cfg, CollectorRegistry())
    try:
        first = pipeline.run()["ham"]
        replayed = fetch_since(pipeline.replay_endpoint or "", 0, timeout_s=10)
    finally:
        pipeline.close()
    assert first.events >= 1
    assert [e.seq for e in replayed] == list(range(1, first.events + 1))
    assert all(e.subject_id == "lin_manuel_miranda" for e in replayed)
    # Run 2 over the same clip: the same flags get the same ids, so nothing is journaled or published again.
    registry = CollectorRegistry()
    pipeline = build_pipeline(cfg, registry)
    try:
        second = pipeline.run()["ham"]
        again = fetch_since(pipeline.replay_endpoint or "", 0, timeout_s=10)
    finally:
        pipeline.close()
    assert second.flags == first.flags and second.events == 0
    assert [e.event_id for e in again] == [e.event_id for e in replayed]
    assert registry.get_sample_value("streamproc_journal_bytes") or 0 > 0
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Erasure reaches the journal: removing the subject with --journal deletes its events (and face crops).
    removal = tmp_path / "wl-copy"
    import shutil

    shutil.copytree(watchlist, removal)
    done = subprocess.run(
        [
            STREAMPROC,
            "watchlist",
            "remove",
            "--watchlist",
            str(removal),
            "--subject-id",
            "lin_manuel_miranda",
            "--operator",
            "o",
            "--reason",
            "erasure request",
            "--journal",
            str(journal),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"erased {first.events} event(s)" in done.stdout
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_curve_feed_reaches_allowed_subscribers_only(shared_dir: Path, watchlist: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server_public, server_secret = generate_keypair(keys, "server")
    ok_public, ok_secret = generate_keypair(keys, "reviewer")
    _, stranger_secret = generate_keypair(keys, "stranger")
    (allowed / ok_public.name).write_bytes(ok_public.read_bytes())
    cfg = config(
        shared_dir,
        watchlist,
        {"curve": {"server_secret_key": server_secret, "allowed_clients_dir": allowed}},
    )
    cfg = cfg.model_copy(
        update={"sources": [cfg.sources[0].model_copy(update={"realtime": True})]}  # 10 s: time to connect
    )
    pipeline = build_pipeline(cfg, CollectorRegistry())
    got: dict[str, list[MatchEvent]] = {"reviewer": [], "stranger": [], "plain": []}
    stop = threading.Event()

    def listen(name: str, security: ClientSecurity | None) -> None:
        with EventSubscriber(pipeline.publisher_endpoint, security=security) as sub:
            while not stop.is_set():
                event = sub.recv(timeout_s=0.1)
                if event is not None:
                    got[name].append(event)

    listeners = [
        threading.Thread(target=listen, args=("reviewer", ClientSecurity(ok_secret, server_public))),
        threading.Thread(target=listen, args=("stranger", ClientSecurity(stranger_secret, server_public))),
        threading.Thread(target=listen, args=("plain", None)),
    ]
    try:
        for t in listeners:
            t.start()
        stats = pipeline.run()["ham"]
        threading.Event().wait(0.5)
    finally:
        stop.set()
        for t in listeners:
            t.join()
        pipeline.close()
    assert stats.events >= 1
    assert len(got["reviewer"]) == stats.events
    assert got["stranger"] == [] and got["plain"] == []


def test_events_tail_with_keys_receives_and_without_keys_does_not(tmp_path: Path) -> None:
    from streamproc.feed.publish import EventPublisher
    from streamproc.feed.security import ServerSecurity

    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    allowed.mkdir()
    server_public, server_secret = generate_keypair(keys, "server")
    client_public, client_secret = generate_keypair(keys, "reviewer")
    (allowed / client_public.name).write_bytes(client_public.read_bytes())
    stop = threading.Event()
    with EventPublisher("tcp://127.0.0.1:*", security=ServerSecurity(server_secret, allowed)) as pub:

        def keep_publishing() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                pub.publish(make_event(track=i, subject="s-1"))
                stop.wait(0.05)

        thread = threading.Thread(target=keep_publishing)
        thread.start()
        try:
            base = [STREAMPROC, "events", "tail", pub.endpoint, "--count", "2"]
            keyed = subprocess.run(
                [*base, "--timeout", "30", "--secret-key", str(client_secret), "--server-key", str(server_public)],
                capture_output=True,
                text=True,
            )
            plain = subprocess.run([*base, "--timeout", "3"], capture_output=True, text=True)
        finally:
            stop.set()
            thread.join()
    assert keyed.returncode == 0, keyed.stderr
    assert keyed.stdout.count("candidate=s-1") == 2
    assert plain.returncode == 1 and "0 of 2" in plain.stderr
