"""The multi-process layout as users run it: `streamproc run` with scale.workers, real child processes, real
ZeroMQ between them, real HTTP probes and scrapes, processes killed with SIGKILL and restarted, a real RTSP
camera that goes away for 10 s.

What these assert: the supervisor restarts what dies and the run completes; one scrape shows every stream; no
flag reaches subscribers twice under different ids (the journal holds each (stream, track, subject) once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rtsp_camera import RtspServer
from support import STREAMPROC, free_port, make_watchlist

from streamproc.feed.journal import EventJournal
from streamproc.feed.schema import REVIEW_TOPIC_PREFIX, MatchEvent, ReviewEvent
from streamproc.feed.subscribe import EventSubscriber
from streamproc.records.audit import AuditLog

HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def watchlist(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_watchlist(
        shared_dir,
        tmp_path_factory.mktemp("wl") / "present",
        {"lin_manuel_miranda": [], "barack_obama": ["examples__obama.jpg", "examples__obama2.jpg"]},
    )


class Run:
    """`streamproc run CONFIG` as a child process, with its probes and metrics endpoint."""

    def __init__(self, tmp: Path, sources: list[dict[str, Any]], watchlist: Path, workers: int) -> None:
        self.port = free_port()
        self.journal = tmp / "journal.db"
        self.audit_dir = tmp / "audit"
        config = {
            "sources": sources,
            "watchlist": {"path": str(watchlist), "reload_s": 60},
            "events": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "journal": {"path": str(self.journal)}},
            "metrics": {"port": self.port},
            "audit": {"dir": str(self.audit_dir)},
            "scale": {"workers": workers, "embed_endpoint": f"tcp://127.0.0.1:{free_port()}", "restart_initial_s": 0.5},
        }
        path = tmp / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = tmp / "run.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([STREAMPROC, "run", str(path), "-q"], stdout=log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def health(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/healthz")[1]))

    def wait_until(self, what: str, check: Any, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"run exited ({self.proc.returncode}) while waiting for {what}:\n{self.log.read_text()}")
            try:
                value = check()
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                value = None
            if value:
                return value
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}:\n{self.log.read_text()}")

    def wait_ready(self) -> None:
        self.wait_until("/readyz 200", lambda: self.get("/readyz")[0] == 200)

    def pid(self, child: str) -> int:
        return int(self.wait_until(f"{child} pid", lambda: self.health()["children"][child]["pid"]))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` with these labels, from one scrape of the aggregated endpoint."""
        total, found = 0.0, False
        for line in self.get("/metrics")[1].splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
                found = True
        assert found, f"{name}{labels} not in the scrape"
        return total

    def finish(self, timeout: float = 180.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"run did not finish in {timeout} s:\n{self.log.read_text()}")

    def events(self) -> list[MatchEvent]:
        with EventJournal(self.journal) as journal:
            return list(journal.since(0))


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def no_flag_twice(events: list[MatchEvent]) -> None:
    """Each (stream, track, subject) is one flag under one id; ids are unique."""
    ids = Counter(e.event_id for e in events)
    assert all(n == 1 for n in ids.values()), ids
    flags = Counter((e.stream_id, e.track_id, e.subject_id) for e in events)
    assert all(n == 1 for n in flags.values()), f"a flag was published twice under different ids: {flags}"


def hamilton(shared_dir: Path, stream: str, **over: Any) -> dict[str, Any]:
    return {"id": stream, "url": str(shared_dir / HAMILTON), **over}


def test_two_workers_give_the_single_process_result_and_one_scrape_shows_every_stream(
    shared_dir: Path, watchlist: Path, tmp_path: Path, runs: list[Run]
) -> None:
    sources = [hamilton(shared_dir, "a", realtime=True), hamilton(shared_dir, "b", realtime=True)]
    (tmp_path / "multi").mkdir()
    multi = Run(tmp_path / "multi", sources, watchlist, workers=2)
    runs.append(multi)
    multi.wait_ready()
    health = multi.health()
    assert health["ok"] and set(health["children"]) == {"embed", "worker-0", "worker-1"}
    multi.wait_until(
        "frames from both streams",
        lambda: all(multi.metric("streamproc_frames_processed_total", stream=s) > 0 for s in "ab"),
    )
    assert multi.metric("streamproc_process_up", role="worker") == 2
    assert multi.metric("streamproc_source_state", stream="a", state="streaming") == 1
    assert multi.finish() == 0

    (tmp_path / "single").mkdir()
    sources = [hamilton(shared_dir, "a", realtime=True), hamilton(shared_dir, "b", realtime=True)]
    single = Run(tmp_path / "single", sources, watchlist, workers=0)
    runs.append(single)
    single.wait_ready()  # the one-process layout serves the same probes
    assert single.health()["ok"]
    assert single.finish() == 0

    got = {(e.stream_id, e.event_id) for e in multi.events()}
    want = {(e.stream_id, e.event_id) for e in single.events()}
    assert want and {s for s, _ in want} == {"a", "b"}
    assert got == want
    records = [r.action for r in AuditLog.open(multi.audit_dir).records()]
    assert records.count("pipeline_start") == 1 and records.count("pipeline_stop") == 1
    assert records.count("embed_service_start") == 1 and records.count("flag") == len(got)


def test_a_worker_killed_mid_stream_is_restarted_and_no_flag_is_published_twice(
    shared_dir: Path, watchlist: Path, tmp_path: Path, runs: list[Run]
) -> None:
    run = Run(
        tmp_path, [hamilton(shared_dir, "a", realtime=True), hamilton(shared_dir, "b", realtime=True)], watchlist, 2
    )
    runs.append(run)
    run.wait_ready()
    victim = run.pid("worker-0")
    run.wait_until("frames on stream a", lambda: run.metric("streamproc_frames_processed_total", stream="a") > 60)
    os.kill(victim, signal.SIGKILL)
    run.wait_until("worker-0 restarted", lambda: run.health()["children"]["worker-0"]["restarts"] == 1)
    run.wait_until("a new worker-0", lambda: run.health()["children"]["worker-0"]["pid"] not in (None, victim))
    assert run.metric("streamproc_process_restarts_total", role="worker") == 1
    assert run.finish() == 0
    events = run.events()
    no_flag_twice(events)
    # Nothing lost: stream a (killed, replayed from its start) flags exactly the tracks that stream b, the same
    # clip in an untouched worker, flags.
    flagged = {sid: {(e.track_id, e.subject_id) for e in events if e.stream_id == sid} for sid in "ab"}
    assert flagged["a"] and flagged["a"] == flagged["b"]
    log = run.log.read_text()
    assert "worker-0 exited with signal SIGKILL" in log


def test_the_embed_service_killed_and_restarted_loses_no_stream_and_duplicates_no_flag(
    shared_dir: Path, watchlist: Path, tmp_path: Path, runs: list[Run]
) -> None:
    run = Run(tmp_path, [hamilton(shared_dir, "a", realtime=True)], watchlist, 1)
    runs.append(run)
    run.wait_ready()
    victim = run.pid("embed")
    run.wait_until("shots embedded", lambda: run.metric("streamproc_embeddings_total", stream="a") >= 1)
    os.kill(victim, signal.SIGKILL)
    run.wait_until("embed restarted", lambda: run.health()["children"]["embed"]["restarts"] == 1)
    run.wait_ready()
    assert run.metric("streamproc_process_restarts_total", role="embed") == 1
    assert run.metric("streamproc_process_restarts_total", role="worker") == 0  # workers rode it out
    assert run.finish() == 0
    no_flag_twice(run.events())
    starts = [r for r in AuditLog.open(run.audit_dir).records() if r.action == "embed_service_start"]
    assert len(starts) == 2  # the threshold in force is on record at each (re)start


def test_sigterm_drains_every_process_and_exits_cleanly(
    shared_dir: Path, watchlist: Path, tmp_path: Path, runs: list[Run]
) -> None:
    run = Run(tmp_path, [hamilton(shared_dir, "a", realtime=True, loop=True)], watchlist, 1)
    runs.append(run)
    run.wait_ready()
    children = [run.pid("embed"), run.pid("worker-0")]
    run.wait_until("frames", lambda: run.metric("streamproc_frames_processed_total", stream="a") > 30)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish(timeout=60) == 0
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert [r.action for r in AuditLog.open(run.audit_dir).records()][-1] == "pipeline_stop"


@pytest.mark.usefixtures("gst_rtsp")
def test_a_live_camera_down_for_10_s_reconnects_without_restarting_its_worker(
    watchlist: Path, tmp_path: Path, runs: list[Run]
) -> None:
    server = RtspServer(free_port())
    server.start()
    try:
        source = {"id": "cam", "url": server.url, "camera": "fixed", "reconnect": {"initial_s": 0.5, "max_s": 2.0}}
        run = Run(tmp_path, [source], watchlist, 1)
        runs.append(run)
        run.wait_ready()

        def state(name: str) -> float:
            return run.metric("streamproc_source_state", stream="cam", state=name)

        run.wait_until("streaming", lambda: state("streaming") == 1)
        server.kill()
        run.wait_until("reconnecting", lambda: state("reconnecting") == 1, timeout=30)
        time.sleep(10.0)
        reconnects = run.metric("streamproc_source_reconnects_total", stream="cam")
        assert reconnects >= 3
        frames_down = run.metric("streamproc_frames_processed_total", stream="cam")
        server.start()
        run.wait_until("streaming again", lambda: state("streaming") == 1, timeout=60)
        run.wait_until(
            "new frames", lambda: run.metric("streamproc_frames_processed_total", stream="cam") > frames_down
        )
        assert run.metric("streamproc_process_restarts_total", role="worker") == 0
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish(timeout=60) == 0
    finally:
        server.kill()


def test_a_review_decision_is_published_by_the_running_pipeline(
    shared_dir: Path, watchlist: Path, tmp_path: Path, runs: list[Run]
) -> None:
    run = Run(tmp_path, [hamilton(shared_dir, "a", realtime=True, loop=True)], watchlist, 1)
    runs.append(run)
    run.wait_ready()
    endpoint = yaml.safe_load((tmp_path / "run.yaml").read_text())["events"]["endpoint"]
    with EventSubscriber(endpoint, topics=(REVIEW_TOPIC_PREFIX,)) as sub:
        event = run.wait_until("a match event in the journal", lambda: next(iter(run.events()), None))
        config = str(tmp_path / "run.yaml")
        decide = [STREAMPROC, "review", "decide", event.event_id, "--config", config]
        for reviewer in ("r-1", "r-2"):
            account = ["--id", reviewer, "--name", reviewer, "--operator", "admin"]
            added = subprocess.run(
                [STREAMPROC, "review", "reviewers", "add", "--config", config, *account],
                input="a long test password\n",
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert added.returncode == 0, added.stderr
            done = subprocess.run(
                [*decide, "--confirm", "--as", reviewer, "--note", "same person"],
                input="a long test password\n",
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
        got: list[ReviewEvent] = []
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            received = sub.recv_any(timeout_s=0.5)
            if isinstance(received, ReviewEvent):
                got.append(received)
    assert [r.status for r in got] == ["pending", "confirmed"]  # the two-person rule, by default
    assert all(r.event_id == event.event_id and r.stream_id == "a" for r in got)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish(timeout=60) == 0
    actions = [r.action for r in AuditLog.open(run.audit_dir).records()]
    assert actions.count("review") == 2


def test_roles_on_separate_hosts_connect_over_tcp_by_config(shared_dir: Path, watchlist: Path, tmp_path: Path) -> None:
    """`run --role embed` on one host, `run --role workers` on another: only the config joins them."""
    chips = f"tcp://127.0.0.1:{free_port()}"
    common = {
        "watchlist": {"path": str(watchlist)},
        "audit": {"dir": str(tmp_path / "audit")},
        "scale": {"embed_endpoint": chips, "workers": 1},
    }
    embed_cfg = {
        **common,
        "sources": [hamilton(shared_dir, "a")],  # stream ids only label metrics here
        "events": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "journal": {"path": str(tmp_path / "j.db")}},
        "metrics": {"port": free_port()},
    }
    worker_cfg = {**common, "sources": [hamilton(shared_dir, "a")], "metrics": {"port": free_port()}}
    (tmp_path / "embed.yaml").write_text(yaml.safe_dump(embed_cfg))
    (tmp_path / "workers.yaml").write_text(yaml.safe_dump(worker_cfg))
    embed = subprocess.Popen([STREAMPROC, "run", str(tmp_path / "embed.yaml"), "--role", "embed"])
    try:
        workers = subprocess.run(
            [STREAMPROC, "run", str(tmp_path / "workers.yaml"), "--role", "workers", "-q"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert workers.returncode == 0, workers.stderr
        assert "a: 275 frames" in workers.stdout
        deadline = time.monotonic() + 30
        events: list[MatchEvent] = []
        while not events and time.monotonic() < deadline:
            time.sleep(0.5)
            if (tmp_path / "j.db").exists():
                with EventJournal(tmp_path / "j.db") as journal:
                    events = list(journal.since(0))
        assert events and all(e.stream_id == "a" for e in events)
    finally:
        embed.send_signal(signal.SIGTERM)
        assert embed.wait(60) == 0
