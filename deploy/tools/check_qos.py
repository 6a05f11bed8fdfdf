"""Checks that every pod template in rendered manifests is Guaranteed QoS (make lint-deploy).

The Deployment's comments and docs/deployment.md claim Guaranteed QoS, which Kubernetes grants
only when EVERY container of the pod, init containers included, sets cpu and memory limits
equal to its requests. One init container with smaller requests makes the pod Burstable; this
names it. Pods of Serverless InferenceServices (deploy/tools/kserve_pods.py) are skipped: Knative
adds its queue-proxy with requests only, so they are Burstable whatever the predictor sets.

    python deploy/tools/check_qos.py rendered.yaml [...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

TEMPLATED = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def container_problems(where: str, container: dict) -> list[str]:
    resources = container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    problems = []
    for resource in ("cpu", "memory"):
        if resource not in limits:
            problems.append(f"{where}: no {resource} limit")
        elif requests.get(resource, limits[resource]) != limits[resource]:
            problems.append(
                f"{where}: {resource} request {requests[resource]} != limit {limits[resource]}"
            )
    return problems


def pod_specs(doc: dict):
    kind = doc.get("kind")
    annotations = doc.get("metadata", {}).get("annotations") or {}
    if annotations.get("serving.kserve.io/deploymentMode") == "Serverless":
        return
    if kind == "Pod":
        yield doc["spec"]
    elif kind in TEMPLATED:
        yield doc["spec"]["template"]["spec"]


def main(paths: list[str]) -> int:
    problems, checked = [], 0
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            for spec in pod_specs(doc or {}):
                checked += 1
                name = f"{Path(path).name}: {doc['kind']} {doc['metadata']['name']}"
                for key in ("initContainers", "containers"):
                    for c in spec.get(key, []):
                        problems += container_problems(f"{name} {key} {c['name']}", c)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{checked} pod templates, {'not ' if problems else ''}all Guaranteed QoS")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
