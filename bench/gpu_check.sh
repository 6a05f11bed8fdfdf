#!/usr/bin/env bash
# The GPU check (docs/benchmarks.md, "GPU check"): on a bare GPU machine with no network, from
# the repository root, install what the machine lacks from carried wheels, run the CUDA tests
# and write the GPU table, in under 8 minutes. Usage: bench/gpu_check.sh [OUT_DIR]
# (default: $OUT, else gpu-check-out). Each stage has its own time limit and the next stage runs
# even if one fails; the exit status is the first failure's.
#
# Python: $PYTHON, else python3 (the device image's, with torch, onnx and onnxscript).
# Wheels: every .whl/*.whl is installed into /tmp/site, ahead of the image's packages
# (`make gpu-wheels` downloads our pins here: transformers, tokenizers, grpcio, protobuf).
# ONNX Runtime must have the CUDA provider: the image's if it has one, else a carried
# onnxruntime-gpu wheel.
set -uo pipefail
out=${1:-${OUT:-gpu-check-out}}
work=${GPU_CHECK_WORK:-/tmp/attnserve-gpu}
py=${PYTHON:-python3}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
status=0

stage() {  # stage NAME SECONDS COMMAND...: run it, log under $out, remember the first failure
    local name=$1 seconds=$2
    shift 2
    echo "== $name (limit ${seconds}s)"
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc"
    [ "$rc" = 0 ] || [ "$status" != 0 ] || status=$rc
}

if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

"$py" -c '
import sys, onnxruntime as ort, torch, transformers
print(sys.version.split()[0], "onnxruntime", ort.__version__, ort.get_available_providers())
print("torch", torch.__version__, torch.cuda.get_device_name(0), "transformers", transformers.__version__)
sys.exit(0 if "CUDAExecutionProvider" in ort.get_available_providers() else
         "no CUDAExecutionProvider: carry an onnxruntime-gpu wheel in .whl/")
' 2>&1 | tee "$out/versions.log"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "GPU check stopped: see $out/versions.log"; exit 1; }

stage pytest 110 "$py" -m pytest -q -m gpu -p no:cacheprovider tests/engine/test_cuda.py
stage token_choice 20 "$py" -m bench.token_choice --device cuda
stage prepare 160 "$py" -m bench.gpu prepare --out "$work"
stage measure 170 "$py" -m bench.gpu measure --out "$work" --json "$out/gpu.json"

echo "GPU check done (exit $status): logs and gpu.json in $out"
exit "$status"
