#!/bin/bash
# W4 (issue 19) against one fresh server: `bench/w4.sh NAME [serve flags...]` starts the server
# on $W4_MODELS (default bench-out/served/bart-base) with the flags, runs W4 staggered (one
# request every 0.4 s, 16 in flight) and all at once (16 clients), 32 measured requests each after
# a $W4_WARMUP s warm-up (default 10), against the served model $W4_MODEL (default bart-base),
# and writes $W4_OUT/NAME/{staggered,at-once}/load.{json,md} (default bench-out/w4). Other
# arrival intervals: W4_INTERVALS="0.4 0.02" (staggered-0.02/; a GPU ends a request in less than
# 0.4 s, so only a shorter interval keeps streams running beside newcomers there). Servers run
# one after the other (docs/benchmarks.md, "Streams that do not freeze when others arrive").
# $PYTHON (default .venv/bin/python) runs the checkout's modules, so it also works where attnserve
# is not installed (the GPU check).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
py=${PYTHON:-${VENV:-.venv}/bin/python}
out=${W4_OUT:-bench-out/w4}/$name
mkdir -p "$out"
"$py" -m service.cli serve --models "${W4_MODELS:-bench-out/served/bart-base}" \
  --host 127.0.0.1 --port 50561 --metrics-port 9561 "$@" >"$out/server.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server || true' EXIT
for _ in $(seq 1 120); do
  "$py" -m service.cli client --target 127.0.0.1:50561 models >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { echo "the server exited: $out/server.log"; exit 1; }
  sleep 1
done
common=(--target 127.0.0.1:50561 --workload W4 --model "${W4_MODEL:-bart-base}" --levels 16
  --requests 32
  --warmup "${W4_WARMUP:-10}" --metrics-url http://127.0.0.1:9561/metrics)
for interval in ${W4_INTERVALS:-0.4}; do
  folder=staggered
  [ "$interval" = 0.4 ] || folder=staggered-$interval
  "$py" -m bench.cli load "${common[@]}" --arrival-interval "$interval" --out "$out/$folder"
done
"$py" -m bench.cli load "${common[@]}" --out "$out/at-once"
