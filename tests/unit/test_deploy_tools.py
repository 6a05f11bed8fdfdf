"""The checks make lint-deploy runs on pod specs: Guaranteed QoS in every container (init
containers included), and KServe Serverless predictors that Knative can start and probe."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_qos = _tool("check_qos")
kserve_pods = _tool("kserve_pods")


def _container(name: str, request: str, limit: str) -> dict:
    return {
        "name": name,
        "resources": {
            "requests": {"cpu": request, "memory": "1Gi"},
            "limits": {"cpu": limit, "memory": "1Gi"},
        },
    }


def _deployment(init: dict, server: dict) -> dict:
    pod = {"initContainers": [init], "containers": [server]}
    return {
        "kind": "Deployment",
        "metadata": {"name": "attnserve"},
        "spec": {"template": {"spec": pod}},
    }


def test_an_init_container_with_requests_below_limits_breaks_guaranteed_qos(tmp_path):
    rendered = tmp_path / "rendered.yaml"
    doc = _deployment(_container("models", "1", "2"), _container("attnserve", "4", "4"))
    rendered.write_text(yaml.safe_dump(doc))
    assert check_qos.main([str(rendered)]) == 1
    doc = _deployment(_container("models", "2", "2"), _container("attnserve", "4", "4"))
    rendered.write_text(yaml.safe_dump(doc))
    assert check_qos.main([str(rendered)]) == 0


def _serverless(metrics_port: str | None, readiness: bool = True) -> dict:
    container = {"name": "kserve-container", "ports": [{"containerPort": 50051}]}
    if metrics_port:
        container["env"] = [{"name": "ATTNSERVE_METRICS_PORT", "value": metrics_port}]
    if readiness:
        container["readinessProbe"] = {"grpc": {"port": 50051}}
    predictor = {"minReplicas": 1, "containers": [container]}
    return {"metadata": {"name": "attnserve"}, "spec": {"predictor": predictor}}


def test_serverless_metrics_on_the_queue_proxy_port_is_refused():
    _, problems = kserve_pods.as_pod(_serverless(None))  # the image's default, 9090
    assert problems and "queue-proxy" in problems[0]
    _, problems = kserve_pods.as_pod(_serverless("9095"))
    assert problems == []


def test_serverless_predictor_without_readiness_probe_is_refused():
    _, problems = kserve_pods.as_pod(_serverless("9095", readiness=False))
    assert problems and "readinessProbe" in problems[0]


def test_predictor_becomes_a_pod_without_kserve_fields():
    pod, _ = kserve_pods.as_pod(_serverless("9095"))
    assert pod["kind"] == "Pod"
    assert "minReplicas" not in pod["spec"]
    assert pod["spec"]["containers"][0]["name"] == "kserve-container"


def test_the_repository_inferenceservices_pass(capsys):
    files = sorted(str(p) for p in (DEPLOY / "k8s" / "kserve").glob("*.yaml"))
    assert len(files) == 2
    assert kserve_pods.main(files) == 0
    pods = list(yaml.safe_load_all(capsys.readouterr().out))
    modes = {p["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] for p in pods}
    assert modes == {"Serverless", "RawDeployment"}
