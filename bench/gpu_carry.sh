#!/usr/bin/env bash
# Carrying a wheel too large for one device call (onnxruntime-gpu 1.31: 256 MB, one call carries
# 64 MiB with the working tree) to the lent GPU machine in pieces, while it stays warm
# (docs/benchmarks.md, "GPU check"). From the repository root:
#
#   bench/gpu_carry.sh split WHEEL   # here: unpack, tar + xz, cut into .gpucarry/1..N (after
#                                    # `make gpu-wheels`: .whl/ rides with the first piece)
#   bench/gpu_carry.sh receive       # there, once per call: keep the carried piece(s)
#   bench/gpu_carry.sh assemble      # there, after the last: check and unpack the pieces
#
# The first piece is smaller by .whl/'s size, so call 1 carries .whl and .gpucarry/1 together;
# call k carries .gpucarry/k. `assemble` unpacks into $GPU_CHECK_WORK/ortsite (default
# /tmp/attnserve-gpu/ortsite), which bench/gpu_check.sh puts first on the Python path.
set -euo pipefail
work=${GPU_CHECK_WORK:-/tmp/attnserve-gpu}
per_call=$((60 * 1024 * 1024))  # carried bytes per call; the working tree's ~3 MB come on top

case ${1:-} in
split)
    wheel=$2
    rm -rf .gpucarry && mkdir -p .gpucarry/unpacked
    python3 -m zipfile -e "$wheel" .gpucarry/unpacked
    tar -C .gpucarry/unpacked -cf - . | xz -T0 -9 >.gpucarry/wheel.tar.xz
    rm -rf .gpucarry/unpacked
    whl_bytes=0
    [ -d .whl ] && whl_bytes=$(du -sb .whl | cut -f1)
    first=$((per_call - whl_bytes))
    if [ "$first" -le 0 ]; then
        echo ".whl/ holds $whl_bytes bytes: over one call's $per_call with the first piece" >&2
        exit 1
    fi
    head -c "$first" .gpucarry/wheel.tar.xz >.gpucarry/piece-01
    tail -c +$((first + 1)) .gpucarry/wheel.tar.xz | split -b "$per_call" -a 2 \
        --numeric-suffixes=2 - .gpucarry/piece-
    sha256sum .gpucarry/wheel.tar.xz | cut -d' ' -f1 >.gpucarry/sha256
    count=0
    for piece in .gpucarry/piece-*; do
        count=$((count + 1))
        mkdir -p ".gpucarry/$count"
        mv "$piece" ".gpucarry/$count/"
        cp .gpucarry/sha256 ".gpucarry/$count/"
    done
    rm .gpucarry/wheel.tar.xz .gpucarry/sha256
    du -sh .gpucarry/*
    echo "$count calls: call 1 carries .whl and .gpucarry/1, call k carries .gpucarry/k"
    ;;
receive)
    mkdir -p "$work/pieces"
    for dir in .gpucarry/*/; do
        cp "$dir"piece-* "$dir"sha256 "$work/pieces/"
    done
    ls -l "$work/pieces"
    ;;
assemble)
    cat "$work"/pieces/piece-* >"$work/wheel.tar.xz"
    echo "$(cat "$work/pieces/sha256")  $work/wheel.tar.xz" | sha256sum -c -
    rm -rf "$work/ortsite" && mkdir -p "$work/ortsite"
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$work/wheel.tar.xz" "$work/ortsite"
    rm -f "$work/wheel.tar.xz"
    ls "$work/ortsite"
    ;;
*)
    echo "usage: bench/gpu_carry.sh split WHEEL | receive | assemble" >&2
    exit 2
    ;;
esac
