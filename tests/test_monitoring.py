"""The Grafana dashboard and Prometheus rules in deploy/ only name metrics a real pipeline exports.

A real pipeline runs once (module fixture) on the Hamilton clip with a real watchlist; its metrics endpoint
is scraped over HTTP. The supervisor of the multi-process layout adds its own metrics (process up/restarts,
defined in streamproc/runtime/supervisor.py): a real :class:`~streamproc.runtime.supervisor.Supervisor`
registry is rendered too. Every ``streamproc_*`` series named by a dashboard query, a template variable or an
alert/recording rule must appear in one of them under exactly that name (so ``_total``, ``_bucket``, ``_sum``
and ``_count`` are checked as Prometheus stores them, not guessed). promtool validates the rule and scrape
files when installed (required under CI=true).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import run_with_subscriber

from streamproc.config import PipelineConfig
from streamproc.config_recognition import RecognitionConfig
from streamproc.runtime.build import build_analyzer
from streamproc.runtime.supervisor import Supervisor
from streamproc.search.enrol import FaceChoice, templates_from_images
from streamproc.search.templates import NewSubject
from streamproc.search.watchlist import Watchlist

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/grafana/streamproc.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"
HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"
MIRANDA = "data/identity/face_recognition/lin_manuel_miranda"

# Metrics a rule may name although the pipeline does not export them yet, keyed by the rule that may use
# them. Keep this to a minimum: each entry must say which change adds the metric, and is removed once it
# lands (the test below fails as soon as the metric is exported, so a stale entry cannot hide a typo).
ALLOWED_MISSING_IN_ALERTS: dict[str, frozenset[str]] = {}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_BUCKET_LE = re.compile(r"\b(streamproc_\w+_bucket)\s*\{[^}]*\ble\s*=\s*\"([^\"]+)\"")

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def metric_names(expr: str) -> set[str]:
    """``streamproc_*`` series names in a PromQL expression (string literals such as label values ignored).

    Names are returned exactly as written: a counter must be queried as ``..._total`` and a histogram as
    ``..._bucket``/``_sum``/``_count``, the names under which the scrape (and Prometheus) exposes them.
    Recording-rule names (``streamproc:...``) are not series of the exporter and are not returned.
    """
    code = _STRING.sub('""', expr)
    return {tok for tok in _IDENT.findall(code) if tok.startswith("streamproc_")}


def test_metric_names_tokenizer() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stream) (rate(streamproc_end_to_end_seconds_bucket{stream=~"$stream",'
        ' x="streamproc_not_a_metric"}[$__rate_interval]))) / streamproc:slow_ratio:rate5m'
        " and on (stream) streamproc_source_up==1 or label_values(streamproc_frames_processed_total, stream)"
    )
    assert metric_names(expr) == {
        "streamproc_end_to_end_seconds_bucket",
        "streamproc_source_up",
        "streamproc_frames_processed_total",
    }


@pytest.fixture(scope="module")
def scrape(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The metrics endpoint's text after a real run on the Hamilton clip with Miranda enrolled."""
    analyzer = build_analyzer(RecognitionConfig())
    directory = tmp_path_factory.mktemp("monitoring") / "watchlist"
    with Watchlist.create(directory, analyzer.embedder.identity) as wl:
        images = sorted((shared_dir / MIRANDA).iterdir())
        wl.enroll(
            NewSubject(
                subject_id="lin_manuel_miranda",
                display_name="Lin Manuel Miranda",
                reason="test",
                legal_basis="test fixture",
                added_by="pytest",
            ),
            templates_from_images(images, analyzer, FaceChoice(largest=True)),
        )
    config = PipelineConfig.model_validate(
        {
            "sources": [{"id": "ham", "url": str(shared_dir / HAMILTON)}],
            "watchlist": {"path": directory},
            "events": {"endpoint": "tcp://127.0.0.1:*"},
        }
    )
    stats, events, text = run_with_subscriber(config)
    assert stats["ham"].error is None and stats["ham"].frames > 0
    assert events, "the run published no event, so end-to-end latency would have no samples"
    return text


@pytest.fixture(scope="module")
def supervisor_scrape(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the supervisor's own registry exports (no child running: only its metrics, every label set)."""
    runtime = tmp_path_factory.mktemp("supervisor")
    config = PipelineConfig.model_validate(
        {
            "sources": [{"id": "a", "url": "a.mp4"}, {"id": "b", "url": "b.mp4"}],
            "watchlist": {"path": runtime / "watchlist"},
            "scale": {"workers": 2},
        }
    )
    supervisor = Supervisor(config, runtime / "run", roles="all")
    text = generate_latest(supervisor.registry).decode()
    assert 'role="embed"' in text and 'role="worker"' in text, text
    return text


@pytest.fixture(scope="module")
def exported(scrape: str, supervisor_scrape: str) -> set[str]:
    """Every sample name the pipeline or its supervisor exports, e.g. streamproc_frames_processed_total,
    streamproc_stage_seconds_bucket, streamproc_process_restarts_total."""
    names = {
        s.name for text in (scrape, supervisor_scrape) for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert any(n.startswith("streamproc_process_") for n in names), supervisor_scrape[:500]
    assert any(n.startswith("streamproc_frames_") for n in names), scrape[:500]
    return names


def supervisor_metric_names() -> set[str]:
    """Metric names defined in runtime/supervisor.py's source (a new one there must also reach the scrape)."""
    source = (ROOT / "streamproc" / "runtime" / "supervisor.py").read_text()
    return set(re.findall(r'"(streamproc_\w+)"', source))


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))  # collapsed rows hold their panels


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query template variable."""
    board = dashboard()
    found: list[tuple[str, str]] = []
    for panel in walk_panels(board["panels"]):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"panel {panel['title']!r} target {target.get('refId')}", target["expr"]))
    for var in board["templating"]["list"]:
        if var.get("type") == "query":
            query = var["query"]
            found.append((f"variable ${var['name']}", query["query"] if isinstance(query, dict) else query))
    return found


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def scrape_le_values(scrape: str, bucket: str) -> set[str]:
    return {
        s.labels["le"]
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
        if s.name == bucket and "le" in s.labels
    }


def test_dashboard_structure() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    stream = variables["stream"]
    assert stream["type"] == "query"
    assert stream["query"]["query"] == "label_values(streamproc_frames_processed_total, stream)"
    panels = [p for p in walk_panels(board["panels"]) if p["type"] != "row"]
    assert len({p["id"] for p in walk_panels(board["panels"])}) == len(list(walk_panels(board["panels"])))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    kinds = {p["type"] for p in panels}
    assert {"timeseries", "heatmap", "stat", "state-timeline"} <= kinds
    exprs = " ".join(e for _, e in dashboard_exprs())
    assert "histogram_quantile(0.99, " in exprs and "histogram_quantile(0.95, " in exprs


def test_every_dashboard_metric_is_exported(exported: set[str], scrape: str, supervisor_scrape: str) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    missing = [(where, name) for where, expr in exprs for name in sorted(metric_names(expr)) if name not in exported]
    assert not missing, f"dashboard queries name series the pipeline does not export: {missing}"
    used = set().union(*(metric_names(e) for _, e in exprs))
    # every series family of the pipeline is on the dashboard (a new metric needs a panel)
    families = {
        f.name
        for text in (scrape, supervisor_scrape)
        for f in text_string_to_metric_families(text)
        if f.name.startswith("streamproc_") and not f.name.endswith("_created")
    }
    supervisor = {re.sub(r"_total$", "", n) for n in supervisor_metric_names()}
    assert supervisor and supervisor <= families, f"supervisor metrics not exported: {sorted(supervisor - families)}"
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert families <= shown, f"metrics without a panel: {sorted(families - shown)}"


def test_every_alert_metric_is_exported(exported: set[str]) -> None:
    rules = alert_rules()
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert {
        "StreamDown",
        "HighDropRate",
        "LatencySLOBurn",
        "NoFramesProcessed",
        "EmbedStalled",
        "SourceErrors",
        "PredictedFalseAlertsHigh",
        "ProcessRestarting",
        "SourceReconnecting",
        "ShotsDropped",
    } <= set(alerts)
    for name, rule in alerts.items():
        for key in ("summary", "description", "runbook"):
            assert str(rule.get("annotations", {}).get(key, "")).strip(), (name, key)
        assert rule.get("labels", {}).get("severity"), name
    recorded = {r["record"] for r in rules if "record" in r}
    for record in recorded:
        assert record.startswith("streamproc:"), record  # level:metric:operations, kept out of the exporter's names
    missing: list[tuple[str, str]] = []
    allowed_used: set[str] = set()
    for rule in rules:
        where = rule.get("alert") or rule["record"]
        for name in sorted(metric_names(rule["expr"])):
            if name in exported:
                continue
            if name in ALLOWED_MISSING_IN_ALERTS.get(where, frozenset()):
                allowed_used.add(name)
                continue
            missing.append((where, name))
        for ref in re.findall(r"streamproc:[A-Za-z0-9_:]+", rule["expr"]):
            assert ref in recorded, (where, ref)
    assert not missing, f"rules name series the pipeline does not export: {missing}"
    allowed = set().union(*ALLOWED_MISSING_IN_ALERTS.values())
    assert allowed_used == allowed, f"unused allow-list entries: {sorted(allowed - allowed_used)}"
    now_exported = allowed & exported
    assert not now_exported, f"{sorted(now_exported)} is exported now: remove it from ALLOWED_MISSING_IN_ALERTS"
    predicted = alerts["PredictedFalseAlertsHigh"]
    assert metric_names(predicted["expr"]) == {"streamproc_predicted_false_alerts_per_hour"}
    assert "not export" not in predicted["annotations"]["description"]  # it is exported: no stale caveat
    assert metric_names(alerts["ProcessRestarting"]["expr"]) == {"streamproc_process_restarts_total"}
    assert (
        'state="reconnecting"' in alerts["SourceReconnecting"]["expr"] and alerts["SourceReconnecting"]["for"] == "2m"
    )


def test_histogram_buckets_named_by_le_exist(scrape: str) -> None:
    """A `le="1.0"` selector must match the exporter's spelling of the bucket bound, or it selects nothing."""
    exprs = [e for _, e in dashboard_exprs()] + [r["expr"] for r in alert_rules()]
    checked = 0
    for expr in exprs:
        for bucket, le in _BUCKET_LE.findall(expr):
            assert le in scrape_le_values(scrape, bucket), (bucket, le, sorted(scrape_le_values(scrape, bucket)))
            checked += 1
    assert checked >= 1  # the latency SLO selects the 1 s bucket


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but promtool is not on PATH (install it: apt-get install -y prometheus)")
        pytest.skip("promtool not on PATH (apt-get install -y prometheus); rule/config syntax not checked")
    return path


@pytest.mark.parametrize(
    ("what", "path"),
    [("rules", ALERTS), ("config", PROMETHEUS)],
    ids=["check-rules", "check-config"],
)
def test_promtool_accepts(what: str, path: Path) -> None:
    done = subprocess.run([promtool(), "check", what, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_scrape_config_points_at_the_metrics_port_and_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert [ALERTS.name] == config["rule_files"]
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert any(t.endswith(":9108") for t in targets), targets
