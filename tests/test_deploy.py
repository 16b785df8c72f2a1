"""Deployment material: Dockerfiles (hadolint), Kubernetes manifests (kubernetes-validate + the ServiceMonitor
schema), Compose, Grafana provisioning, and the docs that point at them.

The linters are the ones installed in the venv next to this interpreter (dev dependencies). Without them the
tests skip visibly; under CI=true they fail.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, get_args
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamproc.cli import app
from streamproc.cli.run import RunRole
from streamproc.config import EventsConfig, MetricsConfig, ScaleConfig
from streamproc.metrics import serve

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
MANIFESTS = sorted(K8S.glob("*.yaml"))
"""What `kubectl apply -f deploy/k8s/` applies: one embed service and the worker shards."""
GPU_VARIANTS = sorted((K8S / "gpu").glob("*.yaml"))
"""Drop-in replacements (same object names) for objects of MANIFESTS, applied on their own."""
SERVICEMONITOR_SCHEMA = K8S / "crds" / "servicemonitor-schema.json"
# The Kubernetes version the manifests are validated against (kubernetes-validate picks its newest schema
# set not newer than this). Raise it with the oldest cluster version you support.
K8S_VERSION = "1.32.0"
CONFIG_PATH = "/etc/streamproc/config.yaml"
WATCHLIST_PATH = "/srv/streamproc/watchlist"
ROLE_LABEL = "streamproc.example/role"
# The ports every role's config must use: the defaults of the config models, so docs and code agree.
METRICS_PORT = MetricsConfig().port
EVENTS_PORT = urlsplit(EventsConfig().endpoint).port
CHIP_PORT = urlsplit(ScaleConfig().embed_endpoint).port


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {what} is missing (install the dev dependencies)")
    pytest.skip(f"needs {what}, which this environment lacks (pip install -e '.[dev]')")


def _tool(name: str) -> Path:
    """A console script installed beside this interpreter (the venv's bin/)."""
    path = Path(sys.executable).with_name(name)
    if not path.is_file():
        _missing(f"{name} ({path})")
    return path


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"the Python module {name}")
        raise  # unreachable: _missing skips or fails


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _resources(kind: str, manifests: list[Path] = MANIFESTS) -> list[dict[str, Any]]:
    return [d for m in manifests for d in _docs(m) if d["kind"] == kind]


def _applied_sets() -> list[list[Path]]:
    """The object sets a cluster can run: the base manifests, and the base with each GPU variant applied over it."""
    sets = [MANIFESTS]
    for variant in GPU_VARIANTS:
        replaced = {(d["kind"], d["metadata"]["name"]) for d in _docs(variant)}
        assert replaced, variant
        kept = [m for m in MANIFESTS if not replaced & {(d["kind"], d["metadata"]["name"]) for d in _docs(m)}]
        assert len(kept) == len(MANIFESTS) - 1, f"{variant.name} must replace exactly one file's objects"
        sets.append([*kept, variant])
    return sets


def _dockerfile_instruction(path: Path, name: str) -> str:
    """The last (effective) instruction `name` of a Dockerfile, continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    found = [line.split(None, 1)[1].strip() for line in text.splitlines() if line.split(None, 1)[:1] == [name]]
    assert found, f"{path.name}: no {name}"
    return found[-1]


# ---------------------------------------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    hadolint = _tool("hadolint")
    result = _run(hadolint, "--failure-threshold", "style", "--no-color", dockerfile)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_contract(dockerfile: Path) -> None:
    assert json.loads(_dockerfile_instruction(dockerfile, "ENTRYPOINT")) == ["streamproc"]
    assert json.loads(_dockerfile_instruction(dockerfile, "CMD")) == ["run", CONFIG_PATH]
    assert _dockerfile_instruction(dockerfile, "EXPOSE").split() == [
        str(METRICS_PORT),
        str(EVENTS_PORT),
        str(CHIP_PORT),
    ]
    user = _dockerfile_instruction(dockerfile, "USER")
    assert user.split(":")[0] not in {"root", "0"}
    healthcheck = _dockerfile_instruction(dockerfile, "HEALTHCHECK")
    assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in healthcheck and "curl" not in healthcheck
    text = dockerfile.read_text()
    assert "pip install --no-cache-dir -c deploy/constraints.txt ." in text  # the versions CI tested
    assert "streamproc models prepare" in text and "STREAMPROC_CACHE_DIR=/opt/streamproc/models" in text
    # BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile when the context is the repo root.
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    let_in = {line[1:].rstrip("/") for line in ignore.read_text().splitlines() if line.startswith("!")}
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.MULTILINE):
        for source in copied.split():
            assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
            assert source.rstrip("/") in let_in, f"{ignore.name} keeps {source} out of the build context"


# ------------------------------------------------------------------------------------------ Kubernetes
def test_manifests_present() -> None:
    kinds = {d["kind"] for d in (d for m in MANIFESTS for d in _docs(m))}
    expected = {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
        "ServiceMonitor",
        "NetworkPolicy",
    }
    assert expected <= kinds
    roles = [d["spec"]["template"]["metadata"]["labels"][ROLE_LABEL] for d in _resources("Deployment")]
    assert roles.count("embed") == 1 and roles.count("workers") >= 2, roles
    assert GPU_VARIANTS, "the GPU variant of the embed service is missing"


@pytest.mark.parametrize("manifest", MANIFESTS + GPU_VARIANTS, ids=lambda p: str(p.relative_to(K8S)))
def test_kubernetes_validate(manifest: Path) -> None:
    tool = _tool("kubernetes-validate")
    result = _run(tool, "--strict", "-k", K8S_VERSION, manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for doc in _docs(manifest):
        name = f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        if doc["kind"] == "ServiceMonitor":
            # kubernetes-validate has schemas for built-in kinds only: a CRD kind is a warning and exit 0, so
            # it proves nothing. test_servicemonitor_schema validates it against crds/servicemonitor-schema.json.
            assert any(line.startswith("WARN") and "kind ServiceMonitor" in line for line in lines), lines
        else:
            assert any(line.startswith("INFO") and f"passed for resource {name} " in line for line in lines), lines
    unexpected = [
        line for line in lines if line.startswith(("WARN", "ERROR", "FATAL")) and "ServiceMonitor" not in line
    ]
    assert not unexpected


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path) -> None:
    """--strict really rejects a misspelt field (so the passes above mean something)."""
    tool = _tool("kubernetes-validate")
    (broken,) = [d for d in _docs(K8S / "workers-shard-a.yaml") if d["kind"] == "Deployment"]
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"periodSeconds": 1}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = _run(tool, "--strict", "-k", K8S_VERSION, path)
    assert result.returncode != 0 and "livenesProbe" in result.stdout


def test_servicemonitor_schema() -> None:
    jsonschema = _module("jsonschema")
    schema = json.loads(SERVICEMONITOR_SCHEMA.read_text())
    validator_cls = jsonschema.Draft202012Validator
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    (monitor,) = _resources("ServiceMonitor")
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(monitor)]
    assert not errors
    typo = json.loads(json.dumps(monitor))
    typo["spec"]["endpoints"][0]["intervall"] = "15s"
    assert not validator.is_valid(typo)
    # It selects every pipeline Service (embed service and worker shards), on a port those Services name.
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        s for s in _resources("Service") if s["metadata"]["labels"].get("app.kubernetes.io/component") == "pipeline"
    ]
    assert {s["metadata"]["labels"][ROLE_LABEL] for s in services} == {"embed", "workers"}
    for service in services:
        assert selector.items() <= service["metadata"]["labels"].items()
        assert monitor["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


def _pipeline_config(deployment: dict[str, Any], manifests: list[Path] = MANIFESTS) -> dict[str, Any]:
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    configmap_name = volumes["config"]["configMap"]["name"]
    (configmap,) = [c for c in _resources("ConfigMap", manifests) if c["metadata"]["name"] == configmap_name]
    config: dict[str, Any] = yaml.safe_load(configmap["data"][Path(CONFIG_PATH).name])
    return config


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def _role(deployment: dict[str, Any]) -> str:
    role: str = deployment["spec"]["template"]["metadata"]["labels"][ROLE_LABEL]
    return role


def _endpoint_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    assert parts.scheme == "tcp" and parts.hostname and parts.port, endpoint
    return parts.hostname, parts.port


def _run_options() -> dict[str, Any]:
    """The `streamproc run` command's options, by flag, as the real CLI defines them."""
    import typer.main

    group = typer.main.get_command(app)
    run = group.commands["run"]  # type: ignore[attr-defined]
    return {flag: param for param in run.params for flag in getattr(param, "opts", [])}


def test_commands_use_real_cli_roles() -> None:
    """Every container runs `run CONFIG --role ROLE` with a flag and a role the CLI really has."""
    options = _run_options()
    assert "--role" in options
    roles = set(get_args(RunRole))
    for manifests in _applied_sets():
        for deployment in _resources("Deployment", manifests):
            name = deployment["metadata"]["name"]
            args = _container(deployment)["args"]
            assert args[:2] == ["run", CONFIG_PATH], name
            flags = dict(zip(args[2::2], args[3::2], strict=True))
            assert flags.keys() <= options.keys(), (name, flags)
            assert flags["--role"] in roles and flags["--role"] != "all", name
            # the role label (NetworkPolicy, ServiceMonitor) says what the process is
            assert flags["--role"] == _role(deployment), name


def test_probe_paths_are_served() -> None:
    """Probes use /healthz (startup, liveness) and /readyz (readiness) on the metrics port, which serve() answers."""
    probed: set[str] = set()
    for manifests in _applied_sets():
        for deployment in _resources("Deployment", manifests):
            name = deployment["metadata"]["name"]
            container = _container(deployment)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
            for probe, path in expected.items():
                get = container[probe]["httpGet"]
                assert get["path"] == path and ports[get["port"]] == METRICS_PORT, (name, probe)
                probed.add(path)
    states = {"/healthz": (True, 200), "/readyz": (False, 503)}
    with serve(
        CollectorRegistry(),
        "127.0.0.1",
        0,
        healthy=lambda: (True, {}),
        ready=lambda: (False, {"waiting_for": ["worker-0"]}),
    ) as server:
        for path in probed:
            url = f"http://127.0.0.1:{server.port}{path}"
            try:
                with urlopen(url, timeout=5) as response:
                    status, body = response.status, json.loads(response.read())
            except HTTPError as err:
                status, body = err.code, json.loads(err.read())
            ok, code = states[path]
            assert (status, body["ok"]) == (code, ok), path


def test_deployments_shape() -> None:
    claims = {c["metadata"]["name"] for c in _resources("PersistentVolumeClaim")}
    gpu_seen = False
    for manifests in _applied_sets():
        deployments = _resources("Deployment", manifests)
        assert len(deployments) >= 3
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            spec = deployment["spec"]
            assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", name
            pod = spec["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            container = _container(deployment)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys() <= resources["limits"].keys()
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], name
            config_mount = mounts[str(Path(CONFIG_PATH).parent)]
            assert config_mount["readOnly"] is True and "configMap" in volumes[config_mount["name"]], name
            watchlist = mounts[WATCHLIST_PATH]
            assert watchlist["readOnly"] is True, name
            assert volumes[watchlist["name"]]["persistentVolumeClaim"]["claimName"] in claims, name
            config = _pipeline_config(deployment, manifests)
            assert config["watchlist"]["path"] == WATCHLIST_PATH, name
            assert config["metrics"] == {"host": "0.0.0.0", "port": METRICS_PORT}, name
            audit = mounts[config["audit"]["dir"]]
            assert not audit.get("readOnly") and "persistentVolumeClaim" in volumes[audit["name"]], name
            gpu = "nvidia.com/gpu" in resources["limits"]
            gpu_seen |= gpu
            assert (config.get("runtime", {}).get("device") == "cuda") == gpu, name
            assert container["image"].endswith("-cuda") == gpu, name
            if _role(deployment) == "embed":
                assert ports == {"metrics": METRICS_PORT, "events": EVENTS_PORT, "replay": 5561, "chips": CHIP_PORT}
                assert config["events"]["endpoint"] == f"tcp://0.0.0.0:{EVENTS_PORT}", name
                assert _endpoint_port(config["events"]["replay_endpoint"]) == ("0.0.0.0", ports["replay"]), name
                assert config["scale"]["embed_endpoint"] == f"tcp://0.0.0.0:{CHIP_PORT}", name
                journal = Path(config["events"]["journal"]["path"])
                assert not mounts[str(journal.parent)].get("readOnly"), name
            else:
                assert ports == {"metrics": METRICS_PORT}, name  # workers publish nothing
                assert not gpu, name  # only the embed service has a GPU variant
                assert pod["terminationGracePeriodSeconds"] > 60, name  # the supervisor's drain timeout
    assert gpu_seen


def test_workers_reach_the_embed_service() -> None:
    """Each worker shard connects to the embed Service's chips port, which reaches the port the service binds."""
    deployments = _resources("Deployment")
    (embed,) = [d for d in deployments if _role(d) == "embed"]
    embed_labels = embed["spec"]["template"]["metadata"]["labels"]
    (service,) = [s for s in _resources("Service") if s["spec"]["selector"].items() <= embed_labels.items()]
    chips = {p["name"]: p for p in service["spec"]["ports"]}["chips"]
    container_ports = {p["name"]: p["containerPort"] for p in _container(embed)["ports"]}
    assert chips["port"] == CHIP_PORT and container_ports[chips["targetPort"]] == CHIP_PORT
    for worker in (d for d in deployments if _role(d) == "workers"):
        host, port = _endpoint_port(_pipeline_config(worker)["scale"]["embed_endpoint"])
        assert (host, port) == (service["metadata"]["name"], chips["port"]), worker["metadata"]["name"]


def test_chip_port_admits_only_worker_pods() -> None:
    """The chip port (face images, unencrypted) is admitted from worker pods and from nowhere else."""
    deployments = _resources("Deployment")
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments}
    (embed,) = [d for d in deployments if _role(d) == "embed"]
    embed_pod = pods[embed["metadata"]["name"]]
    sources: list[dict[str, Any]] = []
    for policy in _resources("NetworkPolicy"):
        if not policy["spec"]["podSelector"]["matchLabels"].items() <= embed_pod.items():
            continue
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            if any(p["port"] == "chips" for p in rule.get("ports", [])) or not rule.get("ports"):
                sources.extend(rule.get("from", [{}]))
    assert sources, "no policy admits the chip port"
    for peer in sources:
        assert set(peer) == {"podSelector"}, peer  # no namespaceSelector/ipBlock: this namespace's pods only
        selector = peer["podSelector"]["matchLabels"]
        admitted = {name for name, labels in pods.items() if selector.items() <= labels.items()}
        assert admitted and all(_role(d) == "workers" for d in deployments if d["metadata"]["name"] in admitted)
    workers = {d["metadata"]["name"] for d in deployments if _role(d) == "workers"}
    assert all(any(p["podSelector"]["matchLabels"].items() <= pods[w].items() for p in sources) for w in workers)


def test_each_stream_in_one_shard_only() -> None:
    deployments = _resources("Deployment")
    ids = [s["id"] for d in deployments if _role(d) == "workers" for s in _pipeline_config(d)["sources"]]
    assert ids and len(ids) == len(set(ids)), ids
    # the embed service knows every stream (it creates their series), and no other
    for manifests in _applied_sets():
        for embed in (d for d in _resources("Deployment", manifests) if _role(d) == "embed"):
            assert sorted(s["id"] for s in _pipeline_config(embed, manifests)["sources"]) == sorted(ids)


def test_pipeline_configs_pass_streamproc_validate(tmp_path: Path) -> None:
    streamproc = _tool("streamproc")
    for manifest in MANIFESTS + GPU_VARIANTS:
        for configmap in _resources("ConfigMap", [manifest]):
            path = tmp_path / f"{manifest.parent.name}-{configmap['metadata']['name']}.yaml"
            path.write_text(configmap["data"][Path(CONFIG_PATH).name])
            result = _run(streamproc, "validate", path)
            assert result.returncode == 0, result.stdout + result.stderr


def test_services_select_their_deployments() -> None:
    for manifests in _applied_sets():
        templates = [d["spec"]["template"]["metadata"]["labels"] for d in _resources("Deployment", manifests)]
        for service in _resources("Service", manifests):
            selector = service["spec"]["selector"]
            assert sum(selector.items() <= labels.items() for labels in templates) == 1, service["metadata"]["name"]


# ----------------------------------------------------------------------------------------------- Compose
def _host_path(spec: str) -> Path:
    """A compose bind source, `${VAR:-default}` resolved to its default, relative to deploy/."""
    spec = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", spec)
    return (DEPLOY / spec).resolve()


def test_compose() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"streamproc", "prometheus", "grafana"} <= services.keys()

    pipeline = services["streamproc"]
    dockerfile = (DEPLOY / pipeline["build"]["context"] / pipeline["build"]["dockerfile"]).resolve()
    assert dockerfile == DOCKERFILES[0].resolve()
    assert pipeline["command"] == json.loads(_dockerfile_instruction(dockerfile, "CMD"))
    targets = {v["target"]: v for v in pipeline["volumes"]}
    assert targets[CONFIG_PATH]["read_only"] is True
    assert _host_path(targets[CONFIG_PATH]["source"]).is_file()
    assert targets[WATCHLIST_PATH]["read_only"] is True
    default_config = yaml.safe_load(_host_path(targets[CONFIG_PATH]["source"]).read_text())
    assert default_config["watchlist"]["path"] == WATCHLIST_PATH
    assert default_config["metrics"]["host"] == "0.0.0.0" and default_config["metrics"]["port"] == 9108
    assert all(str(p).startswith("127.0.0.1:") for p in pipeline["ports"]), "publish on localhost only"

    mounted: dict[str, Path] = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert _host_path(source).exists(), f"{name}: {source} missing"
                mounted[target] = _host_path(source)

    prometheus = yaml.safe_load(mounted["/etc/prometheus/prometheus.yml"].read_text())
    for rule_file in prometheus.get("rule_files", []):
        in_container = Path("/etc/prometheus") / rule_file
        assert str(in_container) in mounted, f"rule file {rule_file} is not mounted"

    # Grafana: the provider's path is where compose mounts the dashboard; the datasource is Prometheus.
    providers = yaml.safe_load((mounted["/etc/grafana/provisioning/dashboards"] / "streamproc.yaml").read_text())
    (provider,) = providers["providers"]
    dashboards = [t for t in mounted if t.endswith(".json")]
    assert [Path(t).parent for t in dashboards] == [Path(provider["options"]["path"])]
    json.loads(mounted[dashboards[0]].read_text())
    sources = yaml.safe_load((mounted["/etc/grafana/provisioning/datasources"] / "prometheus.yaml").read_text())
    assert [d["type"] for d in sources["datasources"]] == ["prometheus"]


# ------------------------------------------------------------------------------------------------- Docs
@pytest.mark.parametrize(
    "doc", [DEPLOY / "README.md", ROOT / "docs" / "operations.md", ROOT / "docs" / "scaling.md"], ids=lambda p: p.name
)
def test_docs_reference_existing_files(doc: Path) -> None:
    referenced = set(re.findall(r"`((?:deploy|configs|docs)/[\w./-]+?)`", doc.read_text()))
    assert referenced
    missing = sorted(p for p in referenced if not (ROOT / p).exists())
    assert not missing


def test_every_alert_has_a_runbook_section() -> None:
    alerts = DEPLOY / "prometheus" / "alerts.yml"
    names = [r["alert"] for g in yaml.safe_load(alerts.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert names
    headings = set(re.findall(r"^#+ `?(\w+)`?", (ROOT / "docs" / "operations.md").read_text(), flags=re.MULTILINE))
    assert not [n for n in names if n not in headings]
