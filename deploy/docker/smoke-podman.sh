#!/usr/bin/env bash
# `make smoke-image`: builds the CPU images with podman and serves real requests from them,
# without a registry and without running a container:
#   sudo deploy/docker/smoke-podman.sh DEMO_MODELS_DIR EXPORTED_MODELS_DIR
# (directories of model dirs: `make models`' output, and `attnserve export` output). For machines
# where no registry is reachable and containers cannot run (crun may be refused setrlimit in a
# sandbox), so every step avoids both:
#   - base images made here: a Debian bookworm root filesystem from debootstrap (python3, pip)
#     for the server images, and Debian's busybox-static for the models images, imported with
#     `podman import` and passed as BASE_IMAGE (the Dockerfiles' defaults are pinned digests);
#   - builds use vfs storage, cgroupfs, chroot isolation and the host network;
#   - built images are `podman image mount`ed and run with chroot, as uid 10001.
# Images built: two models images (Dockerfile.models, one per directory) and the runtime image
# of Dockerfile.cpu with the demo models baked in (MODELS_FROM = the demo models image, as the
# default Kubernetes overlay's demo image). Only its last layer differs from the image without
# models, so one runtime build serves both checks. Each check with timings:
#   A. baked: the image serves its own /models: the image's HEALTHCHECK command reports
#      SERVING, the client lists the models, a Summarize call (and a Caption call on a picture
#      drawn in the image's /tmp, when there is a captioning model) answers, rightly for the demo
#      models; SIGTERM exits 0.
#   B. init copy: the exported models image's own command copies its /models into an empty
#      directory as uid 10001 (what deploy/k8s/components/models-image does in a pod), and the
#      runtime image serves that directory, mounted read-only over /models as the pod's volume
#      is, answering a call.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
[[ $# -eq 2 ]] || { echo "usage: $0 DEMO_MODELS_DIR EXPORTED_MODELS_DIR" >&2; exit 2; }
DEMO_DIR="$(realpath "$1")"
EXPORTED_DIR="$(realpath "$2")"
BASE=localhost/attnserve-base:python3.11-bookworm
BUSYBOX=localhost/attnserve-base:busybox-static
IMAGE=localhost/attnserve:cpu-demo-smoke
DEMO_MODELS_IMAGE=localhost/attnserve-models:demo-smoke
EXPORTED_MODELS_IMAGE=localhost/attnserve-models:exported-smoke
PODMAN=(podman --storage-driver=vfs --cgroup-manager=cgroupfs)
BUILD=("${PODMAN[@]}" build --layers --format docker --isolation chroot --network host)
CHROOT_USER=10001:10001
SUMMARY_TEXT="Kelso played Morley in York on Friday. The weather was rainy. Morley scored 2 goals. Kelso scored 4 goals."
SUMMARY_ANSWER="Kelso beat Morley 4-2 in York on Friday."

[[ $EUID -eq 0 ]] || { echo "run as root (debootstrap, mount, chroot)" >&2; exit 1; }
for dir in "$DEMO_DIR" "$EXPORTED_DIR"; do
    compgen -G "$dir/*/model.json" >/dev/null || { echo "$dir holds no model dir" >&2; exit 1; }
done
command -v podman >/dev/null && command -v debootstrap >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        podman debootstrap

step() { printf '\n== %s\n' "$*"; SECONDS=0; }
took() { printf -- '-- %ss\n' "$SECONDS"; }
WORK="$(mktemp -d)"
MOUNTS=()
SERVER_PID=
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" 2>/dev/null || true; done
    "${PODMAN[@]}" image unmount --all >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! "${PODMAN[@]}" image exists "$BASE"; then
    step "base image $BASE from debootstrap"
    rootfs="$WORK/rootfs"
    mkdir "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    # Make it behave like python:3.11-slim: `python`/`pip` commands, pip may install system-wide.
    ln -sf python3 "$rootfs/usr/bin/python"
    ln -sf pip3 "$rootfs/usr/bin/pip"
    rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
    # The host's CA bundle, for networks that intercept TLS on the way to PyPI.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb
    # mktemp's 0700 would become the image's `/`, which uid 10001 could then not enter.
    chmod 755 "$rootfs"
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
    rm -rf "$rootfs"
    took
fi

if ! "${PODMAN[@]}" image exists "$BUSYBOX"; then
    step "base image $BUSYBOX from Debian's busybox-static"
    (cd "$WORK" && apt-get download -q busybox-static >/dev/null 2>&1)
    dpkg-deb -x "$WORK"/busybox-static_*.deb "$WORK/busybox"
    rootfs="$WORK/busybox-root"
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/mnt/models"
    chmod 755 "$rootfs" && chmod 1777 "$rootfs/tmp"
    cp "$WORK/busybox/bin/busybox" "$rootfs/bin/busybox"
    for applet in sh cp ls; do ln -s busybox "$rootfs/bin/$applet"; done
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import --change 'ENV PATH=/bin' - "$BUSYBOX" >/dev/null
    took
fi

size() { "${PODMAN[@]}" image inspect "$1" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'; }

# A models image from a directory of model dirs, built the documented way: the repository's
# .dockerignore and a context whose models/ holds them.
build_models_image() {
    local dir="$1" tag="$2" context="$WORK/context-$(basename "$2")"
    mkdir -p "$context"
    cp "$ROOT/.dockerignore" "$context/"
    cp -a "$dir" "$context/models"
    "${BUILD[@]}" -f "$ROOT/deploy/docker/Dockerfile.models" --build-arg BASE_IMAGE="$BUSYBOX" \
        -t "$tag" "$context" >/dev/null
    echo "$tag: $(size "$tag")"
}

step "models images (Dockerfile.models)"
build_models_image "$DEMO_DIR" "$DEMO_MODELS_IMAGE"
build_models_image "$EXPORTED_DIR" "$EXPORTED_MODELS_IMAGE"
took

step "podman build Dockerfile.cpu, runtime target, demo models baked in"
# MODELS_FROM given explicitly: buildah resolves a stage named by an ARG only when it is passed.
"${BUILD[@]}" -f deploy/docker/Dockerfile.cpu --target runtime \
    --build-arg BASE_IMAGE="$BASE" --build-arg MODELS_FROM="$DEMO_MODELS_IMAGE" \
    -t "$IMAGE" "$ROOT" >/dev/null
"${PODMAN[@]}" image inspect "$IMAGE" --format "$IMAGE: $(size "$IMAGE"), user {{.Config.User}}"
took

mount_image() { "${PODMAN[@]}" image mount "$1"; }
bind() { mount "$@"; MOUNTS+=("${*: -1}"); }

read -r GRPC_PORT METRICS_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

# The name of the first model of TASK in a directory of model dirs ("" if none).
model_in() {
    python3 -c 'import json, sys, pathlib
names = [m["name"] for p in sorted(pathlib.Path(sys.argv[1]).glob("*/model.json"))
         if (m := json.loads(p.read_text()))["task"] == sys.argv[2]]
print(names[0] if names else "")' "$1" "$2"
}

# serve IMAGE_ROOT MODELS_DIR: runs `attnserve serve` from the mounted image as uid 10001 with a
# private /tmp, waits for the image's HEALTHCHECK command to pass, lists the models, calls
# Summarize on the directory's summarization model (and Caption on a generated picture if it
# has a captioning model), reports resident memory, then SIGTERM must exit 0.
serve() {
    local root="$1" summarizer captioner
    summarizer="$(model_in "$2" summarization)"
    captioner="$(model_in "$2" captioning)"
    bind -t proc proc "$root/proc"
    bind --bind /dev "$root/dev"
    bind -t tmpfs -o size=256m tmpfs "$root/tmp"
    in_image() {
        env -i PATH=/usr/local/bin:/usr/bin:/bin ATTNSERVE_PORT="$GRPC_PORT" \
            /usr/sbin/chroot --userspec="$CHROOT_USER" "$root" "$@"
    }
    step "server from the image (gRPC $GRPC_PORT, metrics $METRICS_PORT): SERVING"
    env -i PATH=/usr/local/bin:/usr/bin:/bin PYTHONUNBUFFERED=1 ATTNSERVE_MODELS=/models \
        ATTNSERVE_HOST=127.0.0.1 ATTNSERVE_PORT="$GRPC_PORT" \
        ATTNSERVE_METRICS_PORT="$METRICS_PORT" ATTNSERVE_KV_BUDGET_MB=1024 \
        /usr/sbin/chroot --userspec="$CHROOT_USER" "$root" attnserve serve &
    SERVER_PID=$!
    local start=$EPOCHREALTIME
    until in_image python -m service.client.healthcheck --timeout 1 >/dev/null 2>&1; do
        kill -0 "$SERVER_PID" || { echo "server exited before serving" >&2; exit 1; }
        (( SECONDS < 120 )) || { echo "not SERVING after 120 s" >&2; exit 1; }
        sleep 0.2
    done
    in_image python -m service.client.healthcheck
    awk -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "SERVING %.1f s after start\n", e - s }'
    step "client calls"
    in_image attnserve client --target "127.0.0.1:$GRPC_PORT" models
    local answer
    answer="$(in_image attnserve client --target "127.0.0.1:$GRPC_PORT" summarize \
        --model "$summarizer" --text "$SUMMARY_TEXT" --max-new-tokens 24)"
    echo "$answer"
    # the demo models must also be right, not only answer
    if [[ "$summarizer" == demo-summarizer && "$answer" != "$SUMMARY_ANSWER" ]]; then
        echo "wrong summary: expected '$SUMMARY_ANSWER'" >&2; exit 1
    fi
    if [[ -n "$captioner" ]]; then
        in_image python -c 'from PIL import Image, ImageDraw
image = Image.new("RGB", (64, 64), "white")
ImageDraw.Draw(image).rectangle((8, 8, 30, 30), fill="red")
image.save("/tmp/square.png")'
        answer="$(in_image attnserve client --target "127.0.0.1:$GRPC_PORT" caption \
            --model "$captioner" --image /tmp/square.png --max-new-tokens 16)"
        echo "$answer"
        if [[ "$captioner" == demo-captioner && "$answer" != "a red square" ]]; then
            echo "wrong caption: expected 'a red square'" >&2; exit 1
        fi
    fi
    echo "server resident memory: $(( $(ps -o rss= -p "$SERVER_PID") / 1024 )) MiB"
    took
    step "SIGTERM drains and exits 0"
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID"
    SERVER_PID=
    took
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}"; done
    MOUNTS=()
}

if compgen -G "$(mount_image "$IMAGE")/usr/local/lib/python3*/dist-packages/torch" >/dev/null
then
    echo "torch found in the runtime image" >&2
    exit 1
fi

printf '\n######## A. demo models baked into the image\n'
RUNTIME_ROOT="$(mount_image "$IMAGE")"
ls "$RUNTIME_ROOT/models"
serve "$RUNTIME_ROOT" "$DEMO_DIR"

printf '\n######## B. exported model copied from its models image by its own command\n'
step "models image's CMD as uid 10001 into an empty directory (the init container)"
MODELS_ROOT="$(mount_image "$EXPORTED_MODELS_IMAGE")"
POD_MODELS="$WORK/pod-models"
install -d -o 10001 -g 10001 "$POD_MODELS"
bind --bind "$POD_MODELS" "$MODELS_ROOT/mnt/models"
read -ra COPY_CMD < <("${PODMAN[@]}" image inspect "$EXPORTED_MODELS_IMAGE" \
    --format '{{range .Config.Cmd}}{{.}} {{end}}')
env -i PATH=/bin /usr/sbin/chroot --userspec="$CHROOT_USER" "$MODELS_ROOT" "${COPY_CMD[@]}"
umount "$MODELS_ROOT/mnt/models"
MOUNTS=()
ls -l "$POD_MODELS"
took
bind --bind -o ro "$POD_MODELS" "$RUNTIME_ROOT/models"
serve "$RUNTIME_ROOT" "$EXPORTED_DIR"

echo
echo "smoke test passed"
