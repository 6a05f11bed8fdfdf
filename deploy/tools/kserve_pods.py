"""The pods KServe would run for deploy/k8s/kserve/*.yaml, for make lint-deploy.

kubernetes-validate has no schema for the InferenceService CRD, but its predictor is a pod spec
plus a few KServe fields: this drops those fields and prints one Pod per InferenceService, so a
typo in a probe, a security context or a resource is caught against the Kubernetes schema. It
also fails (exit 1) where a Serverless (Knative) predictor would not start or not be ready:
  - a port, or ATTNSERVE_METRICS_PORT, that Knative's queue-proxy owns in the same pod;
  - no readiness probe (Knative would fall back to a TCP check that passes before the models
    are loaded).

    python deploy/tools/kserve_pods.py deploy/k8s/kserve/*.yaml > pods.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

# ComponentExtensionSpec and PredictorSpec fields that are not pod spec fields.
KSERVE_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleMetricType",
    "scaleTarget",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "autoScaling",
    "model",
    "workerSpec",
}
# Knative Serving's queue-proxy: HTTP/1, HTTP/2, admin, autoscaler metrics, user metrics.
KNATIVE_RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091}


def serverless_problems(name: str, spec: dict) -> list[str]:
    problems = []
    for container in spec["containers"]:
        ports = {p["containerPort"] for p in container.get("ports", [])}
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        metrics = int(env.get("ATTNSERVE_METRICS_PORT") or 9090)  # the image's default: 9090
        taken = (ports | {metrics}) & KNATIVE_RESERVED_PORTS
        if taken:
            problems.append(f"{name}: port(s) {sorted(taken)} belong to Knative's queue-proxy")
        if "readinessProbe" not in container:
            problems.append(f"{name}: no readinessProbe (Knative would only check TCP)")
    return problems


def as_pod(isvc: dict) -> tuple[dict, list[str]]:
    name = isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]
    spec = {k: v for k, v in predictor.items() if k not in KSERVE_FIELDS}
    annotations = isvc["metadata"].get("annotations", {})
    mode = annotations.get("serving.kserve.io/deploymentMode", "Serverless")
    problems = serverless_problems(name, spec) if mode == "Serverless" else []
    metadata = {"name": name, "annotations": {"serving.kserve.io/deploymentMode": mode}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    return pod, problems


def main(paths: list[str]) -> int:
    pods, problems = [], []
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc.get("kind") == "InferenceService":
                pod, found = as_pod(doc)
                pods.append(pod)
                problems += [f"{path}: {p}" for p in found]
    yaml.safe_dump_all(pods, sys.stdout, sort_keys=False)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems or not pods else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
