"""Pipeline metrics on a fresh registry per test, scraped over real HTTP."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streamproc.errors import StreamprocError
from streamproc.metrics import STAGES, PipelineMetrics, serve

COUNTERS = [
    "frames_decoded",
    "frames_processed",
    "faces_detected",
    "tracks_started",
    "embeddings",
    "matches",
    "events_published",
    "source_errors",
    "comparisons_nonmatching",
]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> PipelineMetrics:
    return PipelineMetrics(registry)


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_counters_show_up_per_stream(registry: CollectorRegistry, metrics: PipelineMetrics) -> None:
    metrics.frames_decoded.labels(stream="cam1").inc(3)
    metrics.frames_decoded.labels(stream="cam2").inc()
    metrics.frames_dropped.labels(stream="cam1", reason="buffer_full").inc(2)
    metrics.comparisons_nonmatching.labels(stream="cam1").inc(40)
    text = exposition(registry)
    assert 'streamproc_frames_decoded_total{stream="cam1"} 3.0' in text
    assert 'streamproc_frames_decoded_total{stream="cam2"} 1.0' in text
    assert 'streamproc_frames_dropped_total{reason="buffer_full",stream="cam1"} 2.0' in text
    assert 'streamproc_comparisons_nonmatching_total{stream="cam1"} 40.0' in text


def test_histograms_and_gauges(registry: CollectorRegistry, metrics: PipelineMetrics) -> None:
    metrics.stage_seconds.labels(stream="cam1", stage="detect").observe(0.004)
    metrics.end_to_end_seconds.labels(stream="cam1").observe(0.3)
    metrics.embed_batch_size.observe(5)
    metrics.queue_depth.labels(stream="cam1", queue="decoded").set(7)
    metrics.watchlist_subjects.set(12)
    metrics.tracks_live.labels(stream="cam1").set(2)
    metrics.source_up.labels(stream="cam1").set(1)
    text = exposition(registry)
    assert 'streamproc_stage_seconds_bucket{le="0.005",stage="detect",stream="cam1"} 1.0' in text
    assert 'streamproc_stage_seconds_bucket{le="0.0025",stage="detect",stream="cam1"} 0.0' in text
    assert 'streamproc_stage_seconds_bucket{le="0.0005",stage="detect",stream="cam1"}' in text
    assert 'streamproc_stage_seconds_bucket{le="2.0",stage="detect",stream="cam1"}' in text
    assert 'streamproc_end_to_end_seconds_bucket{le="0.5",stream="cam1"} 1.0' in text
    assert 'streamproc_end_to_end_seconds_bucket{le="0.005",stream="cam1"}' in text
    assert 'streamproc_end_to_end_seconds_bucket{le="10.0",stream="cam1"}' in text
    assert 'streamproc_embed_batch_size_bucket{le="8.0"} 1.0' in text
    assert 'streamproc_embed_batch_size_bucket{le="4.0"} 0.0' in text
    assert 'streamproc_queue_depth{queue="decoded",stream="cam1"} 7.0' in text
    assert "streamproc_watchlist_subjects 12.0" in text
    assert 'streamproc_tracks_live{stream="cam1"} 2.0' in text
    assert 'streamproc_source_up{stream="cam1"} 1.0' in text


def test_init_stream_creates_zero_series(registry: CollectorRegistry, metrics: PipelineMetrics) -> None:
    metrics.init_stream("cam9", drop_reasons=("buffer_full",), queues=("decoded", "embed"))
    text = exposition(registry)
    for name in COUNTERS:
        assert f'streamproc_{name}_total{{stream="cam9"}} 0.0' in text
    assert 'streamproc_frames_dropped_total{reason="buffer_full",stream="cam9"} 0.0' in text
    for stage in STAGES:
        assert f'streamproc_stage_seconds_count{{stage="{stage}",stream="cam9"}} 0.0' in text
    assert 'streamproc_queue_depth{queue="embed",stream="cam9"} 0.0' in text
    assert 'streamproc_source_up{stream="cam9"} 0.0' in text


def test_registries_are_independent() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    PipelineMetrics(a).matches.labels(stream="cam1").inc()
    PipelineMetrics(b)  # a second pipeline in the same process registers without clashing
    assert 'streamproc_matches_total{stream="cam1"} 1.0' in exposition(a)
    assert "streamproc_matches_total{" not in exposition(b)


def test_no_metric_is_labelled_by_person(registry: CollectorRegistry, metrics: PipelineMetrics) -> None:
    metrics.init_stream("cam1", drop_reasons=("buffer_full",), queues=("decoded",))
    metrics.embed_batch_size.observe(1)
    metrics.watchlist_subjects.set(1)
    families = list(registry.collect())
    assert len(families) == 33  # every family the pipeline exports (journal, replay, process layout, schedule, turns)
    labels: set[str] = set()
    for family in families:
        assert family.name.startswith("streamproc_"), family.name
        for sample in family.samples:
            labels |= set(sample.labels)
    assert labels == {"stream", "stage", "reason", "queue", "state", "le"}
    for label in labels:
        for word in ("subject", "person", "name", "identity", "face", "watchlist", "id"):
            assert word not in label.lower(), label


def test_serve_scrape_over_http(registry: CollectorRegistry, metrics: PipelineMetrics) -> None:
    metrics.matches.labels(stream="cam1").inc()
    metrics.init_stream("cam1")
    with serve(registry, "127.0.0.1", 0) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.status == 200
            body = response.read().decode()
    assert 'streamproc_matches_total{stream="cam1"} 1.0' in body
    for name in (
        *(f"streamproc_{c}_total" for c in COUNTERS),
        "streamproc_stage_seconds_bucket",
        "streamproc_end_to_end_seconds_bucket",
        "streamproc_embed_batch_size_bucket",
        "streamproc_watchlist_subjects",
        "streamproc_tracks_live",
        "streamproc_source_up",
    ):
        assert name in body, name
    # Closed: the port is released and nothing answers.
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)
    server.close()  # idempotent


def test_port_in_use_is_a_one_line_error(registry: CollectorRegistry) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StreamprocError) as info:
            serve(registry, "127.0.0.1", port)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "in use" in message
    assert "\n" not in message


def test_address_not_on_this_host_is_a_one_line_error(registry: CollectorRegistry) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never a local address, so bind fails at once (no DNS involved).
    with pytest.raises(StreamprocError, match=r"cannot serve metrics on 192\.0\.2\.1:0: "):
        serve(registry, "192.0.2.1", 0)
