#!/bin/bash
# W4 (issue 19) against one fresh server: `bench/w4.sh NAME [serve flags...]` starts
# `attnserve serve` on bench-out/served/bart-base with the flags, runs W4 staggered (one request
# every 0.4 s, 16 in flight) and all at once (16 clients), 32 measured requests each after a 10 s
# warm-up, and writes bench-out/w4/NAME/{staggered,at-once}/load.{json,md}. Servers run one
# after the other (docs/benchmarks.md, "Streams that do not freeze when others arrive").
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
bin=${VENV:-.venv}/bin
out=bench-out/w4/$name
mkdir -p "$out"
"$bin/attnserve" serve --models bench-out/served/bart-base --host 127.0.0.1 --port 50561 \
  --metrics-port 9561 "$@" >"$out/server.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server || true' EXIT
for _ in $(seq 1 120); do
  "$bin/attnserve" client --target 127.0.0.1:50561 models >/dev/null 2>&1 && break
  sleep 1
done
common=(--target 127.0.0.1:50561 --workload W4 --levels 16 --requests 32 --warmup 10
  --metrics-url http://127.0.0.1:9561/metrics)
"$bin/attnserve" bench load "${common[@]}" --arrival-interval 0.4 --out "$out/staggered"
"$bin/attnserve" bench load "${common[@]}" --out "$out/at-once"
