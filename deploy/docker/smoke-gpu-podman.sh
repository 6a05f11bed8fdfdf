#!/usr/bin/env bash
# `make smoke-gpu-image`, after `make smoke-image` (it reuses that run's local Debian base and
# demo models image): builds Dockerfile.gpu with podman on the local Debian base in place of
# the pinned Python base (no registry here), with the real onnxruntime-gpu and CUDA/cuDNN wheels
# from PyPI, then checks the mounted image with chroot as uid 10001 on a machine without a GPU:
#   1. the CUDA execution provider's libraries and cuDNN's all resolve inside the image, except
#      the driver's libcuda.so.1, which the NVIDIA container toolkit mounts from the host;
#   2. with the image's own device (cuda) and no driver, the server refuses to start, naming CUDA;
#   3. with --device cpu, it serves its baked demo models rightly and drains on SIGTERM.
# What it cannot show here: a run on a GPU (that is `make gpu-check` on a lent device,
# docs/benchmarks.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
[[ $EUID -eq 0 ]] || { echo "run as root (mount, chroot)" >&2; exit 1; }
PODMAN=(podman --storage-driver=vfs --cgroup-manager=cgroupfs)
BASE=localhost/attnserve-base:python3.11-bookworm
IMAGE=localhost/attnserve:gpu-smoke
SUMMARY_TEXT="Kelso played Morley in York on Friday. The weather was rainy. Morley scored 2 goals. Kelso scored 4 goals."
SUMMARY_ANSWER="Kelso beat Morley 4-2 in York on Friday."

SECONDS=0
"${PODMAN[@]}" build --layers --format docker --isolation chroot --network host \
    -f deploy/docker/Dockerfile.gpu \
    --build-arg BASE_IMAGE="$BASE" --build-arg MODELS_FROM=localhost/attnserve-models:demo-smoke \
    -t "$IMAGE" .
echo "-- built in ${SECONDS}s: $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE") bytes"

root="$("${PODMAN[@]}" image mount "$IMAGE")"
cleanup() {
    umount "$root/dev" "$root/tmp" "$root/proc" 2>/dev/null || true
    "${PODMAN[@]}" image unmount "$IMAGE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/tmp"
mount --bind /dev "$root/dev"
# the image's environment (Dockerfile.gpu), on loopback
IN_IMAGE=(env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin ATTNSERVE_MODELS=/models ATTNSERVE_DEVICE=cuda
    ATTNSERVE_HOST=127.0.0.1 ATTNSERVE_PORT=50581 ATTNSERVE_METRICS_PORT=9581
    /usr/sbin/chroot --userspec=10001:10001 "$root")

echo "== 1. the CUDA execution provider's libraries resolve, but for the driver's"
providers="$("${IN_IMAGE[@]}" python -c 'import onnxruntime; print(onnxruntime.get_available_providers())')"
echo "$providers"
grep -q CUDAExecutionProvider <<<"$providers" || { echo "no CUDAExecutionProvider" >&2; exit 1; }
capi="$("${IN_IMAGE[@]}" python -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')/capi"
unresolved="$("${IN_IMAGE[@]}" sh -c "ldd $capi/libonnxruntime_providers_cuda.so \$(ldconfig -p \
    | awk '/libcudnn[a-z_]*\.so\.9 /{print \$NF}')" | grep 'not found' | sort -u)"
echo "${unresolved:-(none unresolved)}"
[[ "$(awk '{print $1}' <<<"$unresolved")" == libcuda.so.1 ]] \
    || { echo "CUDA libraries missing from the image" >&2; exit 1; }
"${IN_IMAGE[@]}" ldconfig -p | grep -E 'lib(cudart|cublas|cublasLt|curand|cufft|cudnn)\.so' \
    | awk '{print $1}' | sort | tr '\n' ' '; echo

echo "== 2. the image's own device, cuda, with no GPU: a clear refusal"
if log="$(timeout 120 "${IN_IMAGE[@]}" attnserve serve 2>&1)"; then
    echo "the server started without CUDA" >&2; exit 1
fi
grep "could not start CUDAExecutionProvider" <<<"$log"

echo "== 3. --device cpu: the baked demo models"
"${IN_IMAGE[@]}" attnserve serve --device cpu &
pid=$!
for _ in $(seq 120); do
    "${IN_IMAGE[@]}" python -m service.client.healthcheck --target 127.0.0.1:50581 \
        >/dev/null 2>&1 && break
    sleep 1
done
"${IN_IMAGE[@]}" python -m service.client.healthcheck --target 127.0.0.1:50581
answer="$("${IN_IMAGE[@]}" attnserve client --target 127.0.0.1:50581 summarize \
    --model demo-summarizer --text "$SUMMARY_TEXT")"
echo "$answer"
[[ "$answer" == "$SUMMARY_ANSWER" ]] || { echo "wrong summary" >&2; exit 1; }
kill -TERM "$pid"
wait "$pid"
echo "gpu image smoke test passed"
