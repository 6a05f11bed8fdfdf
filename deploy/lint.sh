#!/usr/bin/env bash
# make lint-deploy: checks everything under deploy/ with the ecosystem's own tools, offline once
# the tools are installed. Installs the pinned PyPI tools of deploy/requirements-lint.txt into
# their own venv when missing; promtool comes from Debian's prometheus (`make tools`).
#   1. kubectl kustomize renders each overlay, and overlays with the opt-in components (TLS, the
#      Prometheus Operator objects); kubernetes-validate --strict checks each output against
#      every Kubernetes version of $K8S_VERSIONS: the stated minimum (1.30: preStop.sleep) and
#      the newest schema. The KServe InferenceServices' predictors are checked as the Pods they
#      become (deploy/tools/kserve_pods.py, which also refuses ports Knative's queue-proxy owns
#      and a Serverless predictor without a readiness probe). Every pod template must be
#      Guaranteed QoS (deploy/tools/check_qos.py). CRD objects (ServiceMonitor, PrometheusRule,
#      InferenceService) have no schema there: yamllint checks their files, promtool their rules.
#   2. hadolint on each Dockerfile.
#   3. checkov on the rendered manifests, the KServe examples and the Dockerfiles
#      (skipped checks and reasons: deploy/checkov.yaml).
#   4. yamllint on every YAML file under deploy/ (deploy/.yamllint.yaml).
#   5. promtool: alert rules (check + unit tests), compose's prometheus.yml, and every query of
#      the Grafana dashboard and the prometheus-adapter rules; the PrometheusRule wrapper must
#      match the plain rules file.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LINT_VENV="${LINT_VENV:-.venv/deploy-lint}"
# The minimum Kubernetes version docs/deployment.md states, and the newest schema bundled.
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"
REQUIREMENTS=deploy/requirements-lint.txt
OVERLAYS=(cpu gpu own-model pvc)
# Overlay + opt-in components, rendered as an operator would add them to the overlay.
COMBINATIONS=(
    "cpu components/tls observability"
    "own-model components/tls observability"
)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*"; SECONDS=0; }
done_step() { printf -- '-- ok (%ss)\n' "$SECONDS"; }

install_python_tools() {
    local stamp="$LINT_VENV/.requirements-lint.txt"
    if [[ -f "$stamp" ]] && cmp -s "$stamp" "$REQUIREMENTS"; then
        return
    fi
    step "installing $REQUIREMENTS into $LINT_VENV"
    [[ -x "$LINT_VENV/bin/python" ]] || python3 -m venv "$LINT_VENV"
    "$LINT_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$stamp"
    done_step
}

install_python_tools
TOOLS="$LINT_VENV/bin"
command -v kubectl >/dev/null || { echo "kubectl (with kustomize) is required" >&2; exit 1; }

step "kubectl kustomize + kubernetes-validate --strict (Kubernetes ${K8S_VERSIONS// /, })"
RENDERED=()
for overlay in "${OVERLAYS[@]}"; do
    out="$WORK/$overlay.yaml"
    kubectl kustomize "deploy/k8s/overlays/$overlay" >"$out"
    RENDERED+=("$out")
    echo "overlays/$overlay: $(grep -c '^kind:' "$out") objects"
done
for combination in "${COMBINATIONS[@]}"; do
    read -r overlay components <<<"$combination"
    name="${combination// /+}"
    dir="$WORK/${name//\//-}"
    mkdir -p "$dir"
    rel="$(realpath --relative-to="$dir" deploy)"
    {
        printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n'
        printf 'namespace: attnserve\nresources:\n  - %s/k8s/overlays/%s\ncomponents:\n' \
            "$rel" "$overlay"
        for component in $components; do
            case "$component" in
                components/*) printf '  - %s/k8s/%s\n' "$rel" "$component" ;;
                *) printf '  - %s/%s\n' "$rel" "$component" ;;
            esac
        done
    } >"$dir/kustomization.yaml"
    out="$dir.yaml"
    kubectl kustomize "$dir" >"$out"
    RENDERED+=("$out")
    echo "overlays/$overlay + ${components// / + }: $(grep -c '^kind:' "$out") objects"
done
"$TOOLS/python" deploy/tools/kserve_pods.py deploy/k8s/kserve/*.yaml >"$WORK/kserve-pods.yaml"
echo "kserve: $(grep -c '^kind: Pod' "$WORK/kserve-pods.yaml") predictors as Pods"
for version in $K8S_VERSIONS; do
    "$TOOLS/kubernetes-validate" --strict --quiet --no-warn -k "$version" \
        "${RENDERED[@]}" "$WORK/kserve-pods.yaml"
    echo "Kubernetes $version: valid"
done
"$TOOLS/python" deploy/tools/check_qos.py "${RENDERED[@]}" "$WORK/kserve-pods.yaml"
echo "no schema for CRDs (checked by yamllint and promtool instead):" \
    "$(grep -h '^kind:' "${RENDERED[@]}" deploy/k8s/kserve/*.yaml \
        | grep -E 'ServiceMonitor|PrometheusRule|InferenceService' | sort -u | cut -d' ' -f2 \
        | paste -sd' ')"
done_step

step "hadolint"
for dockerfile in deploy/docker/Dockerfile.*; do
    "$TOOLS/hadolint" "$dockerfile"
    echo "$dockerfile: clean"
done
done_step

step "checkov (skips: deploy/checkov.yaml)"
CHECKOV_FILES=()
for file in "${RENDERED[@]}" deploy/k8s/kserve/*.yaml deploy/docker/Dockerfile.*; do
    CHECKOV_FILES+=(-f "$file")
done
"$TOOLS/checkov" --config-file deploy/checkov.yaml --framework kubernetes dockerfile \
    "${CHECKOV_FILES[@]}"
done_step

step "yamllint"
"$TOOLS/yamllint" --strict -c deploy/.yamllint.yaml deploy/
done_step

step "PrometheusRule matches alert-rules.yaml"
"$TOOLS/python" deploy/tools/sync_prometheusrule.py --check
done_step

PROMTOOL="$(command -v promtool || true)"
if [[ -z "$PROMTOOL" ]]; then
    echo
    echo "SKIPPED: promtool checks: no promtool (make tools installs Debian's prometheus package)"
    exit 0
fi
step "promtool"
"$PROMTOOL" check rules deploy/observability/alert-rules.yaml
"$PROMTOOL" test rules deploy/observability/alert-rules.test.yaml
"$PROMTOOL" check config --syntax-only deploy/docker/prometheus.yml
"$TOOLS/python" deploy/tools/promql_as_rules.py >"$WORK/queries.rules.yaml"
"$PROMTOOL" check rules "$WORK/queries.rules.yaml"
done_step
