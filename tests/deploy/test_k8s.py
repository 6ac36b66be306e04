"""The Kubernetes manifests: every overlay renders with `kubectl kustomize`, every object validates against the
Kubernetes schemas, the router config in the ConfigMap loads, and every backend it names is served in the overlay."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from router.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["cpu", "gpu"]
KUBERNETES_VERSION = "1.32.0"
KEYS = json.dumps([{"name": "app", "key": "client-key-for-tests-0001"},
                   {"name": "ops", "key": "admin-key-for-tests-00001", "admin": True}])


def kustomize_major(kubectl: str) -> int:
    out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"Kustomize Version: v(\d+)", out)
    return int(found.group(1)) if found else 0


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # scripts/test.sh installs it (Debian: kubernetes-client)
        pytest.skip("kubectl is not installed")
    if kustomize_major(kubectl) < 4:  # kubectl before 1.21 embeds kustomize 2, which lacks labels: and replicas:
        pytest.skip("this kubectl embeds kustomize older than v4; the manifests need kubectl 1.21 or later")
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"one {kind} {prefix}* expected, found {len(found)}"
    return found[0]


def test_every_object_validates_against_the_kubernetes_schemas(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap",
            "Secret"} <= kinds


def test_the_router_deployment_is_hardened_and_probed(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    router = named(objects, "Deployment", "triage-router")
    assert router["spec"]["replicas"] >= 2
    pod = router["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "router")
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
    assert [c["name"] for c in pod["initContainers"]] == ["artifact"]
    annotations = router["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    # Generated names (hash suffixes) are what the pod refers to.
    config_map = named(objects, "ConfigMap", "triage-config")
    secret = named(objects, "Secret", "triage-api-keys")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert container["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    hpa = named(objects, "HorizontalPodAutoscaler", "triage-router")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "triage-router" and hpa["spec"]["minReplicas"] >= 2
    assert named(objects, "PodDisruptionBudget", "triage-router")["spec"]["minAvailable"] >= 1
    assert named(objects, "Service", "triage-redis")


def test_the_embedded_config_loads_and_names_only_served_backends(
        rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    overlay, objects = rendered
    config_map = named(objects, "ConfigMap", "triage-config")
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    settings = load_settings(path, environ={"TRIAGE_AUTH__KEYS": KEYS})
    assert settings.auth.enabled and len(settings.auth.keys) == 2
    assert settings.state.redis_url == "redis://triage-redis:6379/0"
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    deployments = {d["metadata"]["name"] for d in of_kind(objects, "Deployment")}
    for backend in settings.backends:
        host = backend.discover.dns if backend.discover else backend.base_url.split("//", 1)[1].split(":")[0]
        service = services.get(host.split(".")[0])
        assert service is not None, f"{overlay}: backend {backend.name!r} points at {host}, not a Service here"
        assert service["spec"]["selector"]["app.kubernetes.io/name"] in deployments
        port = backend.discover.port if backend.discover else int(backend.base_url.rsplit(":", 1)[1].split("/")[0])
        assert port in {p["port"] for p in service["spec"]["ports"]}
        if backend.discover:  # replicas found by DNS: the Service must be headless
            assert service["spec"].get("clusterIP") == "None"
    assert settings.generalist_name in {b.name for b in settings.backends}


def test_the_gpu_overlay_gives_each_model_gpus_and_a_headless_service() -> None:
    objects = render("gpu")
    models = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"].startswith("vllm-")]
    assert len(models) == 7
    for deployment in models:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert deployment["spec"]["replicas"] >= 1


def test_the_placeholder_keys_are_refused(tmp_path: Path) -> None:
    """The committed Secret holds placeholders: a router started with them refuses to run."""
    objects = render("cpu")
    secret = named(objects, "Secret", "triage-api-keys")
    keys = base64.b64decode(secret["data"]["TRIAGE_AUTH__KEYS"]).decode()
    config = tmp_path / "config.yaml"
    config.write_text(named(objects, "ConfigMap", "triage-config")["data"]["config.yaml"])
    with pytest.raises(ConfigError, match="16 characters"):
        load_settings(config, environ={"TRIAGE_AUTH__KEYS": keys})


@pytest.mark.parametrize(("copy", "original"), [
    (K8S / "base" / "triage.json", REPO / "deploy" / "grafana" / "dashboards" / "triage.json"),
    (K8S / "overlays" / "gpu" / "alpaca.jinja", REPO / "deploy" / "chat-templates" / "alpaca.jinja"),
])
def test_copies_kustomize_needs_match_their_originals(copy: Path, original: Path) -> None:
    assert copy.read_bytes() == original.read_bytes(), f"copy {copy.name} again from {original}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_config_keeps_the_shared_settings(overlay: str) -> None:
    base = yaml.safe_load((K8S / "base" / "router.config.yaml").read_text())
    full = yaml.safe_load((K8S / "overlays" / overlay / "router.config.yaml").read_text())
    assert {k: v for k, v in full.items() if k not in ("backends", "generalist")} == base
