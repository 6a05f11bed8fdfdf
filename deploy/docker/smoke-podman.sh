#!/usr/bin/env bash
# Builds the CPU runtime image with podman and runs the server from it, without a registry:
#   sudo deploy/docker/smoke-podman.sh [MODELS_DIR]     (default: ./models, `make models`)
# For machines where no registry is reachable and containers cannot run (crun may be refused
# setrlimit in a sandbox), so every step avoids both:
#   - the base image is a Debian bookworm root filesystem made by debootstrap (python3, pip)
#     and imported with `podman import`, passed as BASE_IMAGE;
#   - the build uses vfs storage, cgroupfs, chroot isolation and the host network;
#   - the built image is `podman image mount`ed and the server runs from it with chroot, as
#     uid 10001, on free ports; the image's own HEALTHCHECK command must report SERVING, the
#     client must list the models, and SIGTERM must drain and exit 0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODELS_DIR="$(realpath "${1:-$ROOT/models}")"
BASE=localhost/attnserve-base:python3.11-bookworm
IMAGE=localhost/attnserve:cpu-smoke
PODMAN=(podman --storage-driver=vfs --cgroup-manager=cgroupfs)
CHROOT_USER=10001:10001

[[ $EUID -eq 0 ]] || { echo "run as root (debootstrap, mount, chroot)" >&2; exit 1; }
compgen -G "$MODELS_DIR/*/model.json" >/dev/null \
    || { echo "$MODELS_DIR holds no model dir (run make models)" >&2; exit 1; }
command -v podman >/dev/null && command -v debootstrap >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        podman debootstrap

step() { printf '\n== %s\n' "$*"; SECONDS=0; }
took() { printf -- '-- %ss\n' "$SECONDS"; }

if ! "${PODMAN[@]}" image exists "$BASE"; then
    step "base image $BASE from debootstrap"
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    # Make it behave like python:3.11-slim: `python`/`pip` commands, pip may install system-wide.
    ln -sf python3 "$rootfs/usr/bin/python"
    ln -sf pip3 "$rootfs/usr/bin/pip"
    rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
    # The host's CA bundle, for networks that intercept TLS on the way to PyPI.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
    rm -rf "$rootfs"
    took
fi

step "podman build (runtime target)"
# MODELS_FROM given explicitly: buildah resolves a stage named by an ARG only when it is passed.
"${PODMAN[@]}" build --layers --format docker --isolation chroot --network host \
    -f deploy/docker/Dockerfile.cpu --target runtime \
    --build-arg BASE_IMAGE="$BASE" --build-arg MODELS_FROM=no-models \
    -t "$IMAGE" "$ROOT" >/dev/null
"${PODMAN[@]}" image inspect "$IMAGE" --format 'size {{.Size}} bytes, user {{.Config.User}}'
took

MNT="$("${PODMAN[@]}" image mount "$IMAGE")"
cleanup() {
    [[ -n "${SERVER_PID:-}" ]] && kill "$SERVER_PID" 2>/dev/null || true
    umount "$MNT/models" "$MNT/proc" "$MNT/dev" 2>/dev/null || true
    "${PODMAN[@]}" image unmount "$IMAGE" >/dev/null || true
}
trap cleanup EXIT
if compgen -G "$MNT/usr/local/lib/python3*/dist-packages/torch" >/dev/null; then
    echo "torch found in the runtime image" >&2
    exit 1
fi
mount --bind "$MODELS_DIR" "$MNT/models"
mount -t proc proc "$MNT/proc"
mount --bind /dev "$MNT/dev"

read -r GRPC_PORT METRICS_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
in_image() {
    env -i PATH=/usr/local/bin:/usr/bin:/bin ATTNSERVE_PORT="$GRPC_PORT" \
        /usr/sbin/chroot --userspec="$CHROOT_USER" "$MNT" "$@"
}

step "server from the image (gRPC $GRPC_PORT, metrics $METRICS_PORT)"
env -i PATH=/usr/local/bin:/usr/bin:/bin PYTHONUNBUFFERED=1 ATTNSERVE_MODELS=/models \
    ATTNSERVE_HOST=127.0.0.1 ATTNSERVE_PORT="$GRPC_PORT" ATTNSERVE_METRICS_PORT="$METRICS_PORT" \
    /usr/sbin/chroot --userspec="$CHROOT_USER" "$MNT" attnserve serve &
SERVER_PID=$!
for _ in $(seq 120); do
    in_image python -m service.client.healthcheck --timeout 1 2>/dev/null && break
    kill -0 "$SERVER_PID" || { echo "server exited before serving" >&2; exit 1; }
    sleep 1
done
in_image python -m service.client.healthcheck
took

step "client call"
in_image attnserve client --target "127.0.0.1:$GRPC_PORT" models
took

step "SIGTERM drains and exits 0"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
SERVER_PID=
took
echo
echo "smoke test passed"
