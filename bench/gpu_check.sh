#!/usr/bin/env bash
# The GPU check (docs/benchmarks.md, "GPU check"): on a bare GPU machine with no network, from
# the repository root, install what the machine lacks from carried wheels, run the CUDA tests,
# the server over gRPC under W4 (issue 19) and the GPU table, in under 10 minutes (the stages'
# limits together: 590 s; on an H200 the whole run took 3-5 minutes).
# Usage: bench/gpu_check.sh [OUT_DIR] (default: $OUT, else gpu-check-out). Each stage has its
# own time limit and the next stage runs even if one fails; the exit status is the first failure's.
# `bench/gpu_check.sh --prepare-in-background` only installs the wheels and starts the CPU-only
# prepare stage detached (while later calls carry ONNX Runtime's pieces); the full run waits for it.
#
# Python: $PYTHON, else python3 (the device image's, with torch, onnx and onnxscript).
# Wheels: every .whl/*.whl is installed into /tmp/site, ahead of the image's packages
# (`make gpu-wheels` downloads our pins here: transformers, tokenizers, grpcio, protobuf,
# starlette, uvicorn). ONNX Runtime must have the CUDA provider: an onnxruntime-gpu wheel carried
# in pieces and assembled into $GPU_CHECK_WORK/ortsite (bench/gpu_carry.sh), put first on the
# path; else one in .whl/; else the image's if it has one.
set -uo pipefail
background=
[ "${1:-}" = --prepare-in-background ] && background=1 && shift
out=${1:-${OUT:-gpu-check-out}}
work=${GPU_CHECK_WORK:-/tmp/attnserve-gpu}
py=${PYTHON:-python3}
# a dry run here, no GPU: GPU_CHECK_MODEL=bart-tiny GPU_CHECK_DEVICE=cpu PYTHON=.venv/bin/python
model=${GPU_CHECK_MODEL:-bart-base}
device=${GPU_CHECK_DEVICE:-cuda}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
status=0

stage() {  # stage NAME SECONDS COMMAND...: run it, log under $out, remember the first failure
    local name=$1 seconds=$2
    shift 2
    echo "== $name (limit ${seconds}s)"
    timeout "$seconds" bash -o pipefail -c '"$@"' "$name" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc"
    [ "$rc" = 0 ] || [ "$status" != 0 ] || status=$rc
    pack
}

pack() {  # $GPU_CHECK_PACK: a .tgz of the output folder so far (the device tool brings back few
    # files, none deeper than two folders, and what a command killed at its limit left)
    [ -z "${GPU_CHECK_PACK:-}" ] ||
        tar czf "$GPU_CHECK_PACK" -C "$(dirname "$out")" "$(basename "$out")"
}

if compgen -G ".whl/*.whl" >/dev/null; then
    [ -f /tmp/site/.installed ] || "$py" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    touch /tmp/site/.installed
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

if [ -n "$background" ]; then
    # setsid -w: $! is then a process that lives as long as the prepare (its exit status is not
    # kept: the full run's prepare stage redoes whatever it left undone)
    setsid -w nohup "$py" -m bench.gpu prepare --out "$work" --model "$model" \
        >"$work/prepare.log" 2>&1 &
    echo $! >"$work/prepare.pid"
    echo "prepare started in the background (pid $!, log $work/prepare.log)"
    exit 0
fi
[ -d "$work/ortsite" ] && export PYTHONPATH="$work/ortsite:$PYTHONPATH"

"$py" -c '
import sys, onnxruntime as ort, torch, transformers
print(sys.version.split()[0], "onnxruntime", ort.__version__, ort.get_available_providers())
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
print("torch", torch.__version__, gpu, "transformers", transformers.__version__)
sys.exit(0 if sys.argv[1] == "cpu" or "CUDAExecutionProvider" in ort.get_available_providers()
         else "no CUDAExecutionProvider: carry onnxruntime-gpu (bench/gpu_carry.sh)")
' "$device" 2>&1 | tee "$out/versions.log"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "GPU check stopped: see $out/versions.log"; pack; exit 1; }

prepare() {  # a background prepare first (its log joins this stage's), then whatever it left
    if [ -f "$work/prepare.pid" ]; then
        while kill -0 "$(cat "$work/prepare.pid")" 2>/dev/null; do sleep 2; done
        cat "$work/prepare.log"
        rm -f "$work/prepare.pid"
    fi
    "$py" -m bench.gpu prepare --out "$work" --model "$model"
}

w4() {  # the server over gRPC under W4: the old admission, the budget inside the steps, the
    # defaults, a larger budget (a GPU encodes 512 tokens in about one decode step); servers in
    # rotation, $GPU_CHECK_W4_ROUNDS times (default 1)
    export W4_MODELS="$work/served/$model" W4_MODEL="$model" W4_OUT="$out/w4" W4_WARMUP=5 \
        W4_INTERVALS="${W4_INTERVALS:-0.4 0.02}" PYTHON="$py"
    local round suffix failed=0
    for round in $(seq 1 "${GPU_CHECK_W4_ROUNDS:-1}"); do
        suffix=$([ "${GPU_CHECK_W4_ROUNDS:-1}" = 1 ] || echo "-r$round")
        bash bench/w4.sh "budget0-inside$suffix" --device "$device" \
            --max-encoder-tokens-per-step 0 --no-encoder-beside-decode || failed=1
        bash bench/w4.sh "budget512-inside$suffix" --device "$device" \
            --no-encoder-beside-decode || failed=1
        bash bench/w4.sh "defaults$suffix" --device "$device" || failed=1
        bash bench/w4.sh "budget2048$suffix" --device "$device" \
            --max-encoder-tokens-per-step 2048 || failed=1
    done
    "$py" -m bench.w4_table "$out/w4" | tee "$out/w4.md" && return "$failed"
}

export -f prepare w4
export out work py model device
# GPU_CHECK_STAGES: a subset, in this order (e.g. "prepare w4" for W4 alone)
stages=" ${GPU_CHECK_STAGES:-pytest prepare w4 measure token_choice} "
run_stage() {  # run_stage NAME SECONDS COMMAND...: the stage, if $GPU_CHECK_STAGES names it
    [[ $stages == *" $1 "* ]] && stage "$@"
    return 0
}
run_stage pytest 100 "$py" -m pytest -q -m gpu -p no:cacheprovider tests/engine/test_cuda.py
run_stage prepare 140 prepare
run_stage w4 "${GPU_CHECK_W4_LIMIT:-210}" w4
run_stage measure 120 "$py" -m bench.gpu measure --out "$work" --model "$model" \
    --device "$device" --json "$out/gpu.json"
run_stage token_choice 20 "$py" -m bench.token_choice --device "$device"

echo "GPU check done (exit $status): logs and gpu.json in $out"
exit "$status"
