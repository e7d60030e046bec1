#!/usr/bin/env bash
# Server benchmark of BENCHMARKS.md, measured with `eqsim loadtest` on loopback.
#   bench/server_loadtest.sh MODEL_REPOSITORY [OUT_DIR] [RSS_DURATION]
# Runs, each against a fresh eqsim-server on the same model repository:
#   batched   : default dynamic batching, closed loop, concurrency 32, 1 image per request
#   batch1    : the same with --max-batch-size 1
#   saturation: default batching, concurrency 64, 8 images per request
#   lowload   : open loop 5 requests/s, texts and images
#   rss       : open loop 100 requests/s mixed for RSS_DURATION (default 10m), server RSS
#   inprocess : eqsim-encode-bench on the same model (batch 1, 8, 32; 2 workers x 1 thread,
#               the server's default --batch-threads 2 / --threads 1): the reference
# EQSIM_BENCH_MODEL names the model served (default baseline); EQSIM_BENCH_RUNS the runs to make
# (default: all of the above, in that order). Results: OUT_DIR/<run>.json (eqsim loadtest --json;
# inprocess: one JSON object per line). Make compute-heavy models with bench/make_bench_model.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$1"; out="${2:-/tmp/eqsim-server-bench}"; rss_duration="${3:-10m}"
bin="${EQSIM_BIN:-build/bin}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
mkdir -p "$out"
run() {  # name, "server flags", loadtest flags...
  local name="$1" sflags="$2"; shift 2
  rm -f "$out/port"
  # shellcheck disable=SC2086
  "$bin/eqsim-server" --model-repository "$repo" --port 0 --port-file "$out/port" \
    --metrics-port 0 --host 127.0.0.1 --default-model "${EQSIM_BENCH_MODEL:-baseline}" $sflags 2>"$out/$name.server.log" &
  local pid=$!
  for _ in $(seq 1 300); do [ -s "$out/port" ] && break; sleep 0.1; done
  local target
  target="127.0.0.1:$(cat "$out/port")"
  "$bin/eqsim" health --target "$target" --wait 60s >/dev/null
  "$bin/eqsim" loadtest --target "$target" --server-pid "$pid" --json --noprogress "$@" \
    > "$out/$name.json"
  kill -TERM "$pid"; wait "$pid" || true
  echo "$name: $(head -c 400 "$out/$name.json")"
}
runs="${EQSIM_BENCH_RUNS:-batched batch1 saturation lowload rss inprocess}"
for r in $runs; do
  case "$r" in
    batched)    run batched    "--threads 1" --concurrency 32 --duration 30s --mix image=1 ;;
    batch1)     run batch1     "--threads 1 --max-batch-size 1" --concurrency 32 --duration 30s --mix image=1 ;;
    saturation) run saturation "--threads 1" --concurrency 64 --duration 30s --mix image=1 --images-per-request 8 ;;
    lowload)    run lowload    "--threads 1" --rate 5 --concurrency 4 --duration 30s --mix image=1,text=1 ;;
    rss)        run rss        "--threads 1" --rate 100 --concurrency 32 --duration "$rss_duration" \
                  --mix image=0.4,text=0.4,score=0.2 --rss-sample-every 60s ;;
    inprocess)
      "$bin/eqsim-encode-bench" --repository "$repo" --model "${EQSIM_BENCH_MODEL:-baseline}" \
        --batch-sizes 1,8,32 --workers 2 --threads 1 --seconds 10 --json > "$out/inprocess.json"
      echo "inprocess: $(tr '\n' ' ' < "$out/inprocess.json" | head -c 600)" ;;
    *) echo "unknown run '$r'" >&2; exit 2 ;;
  esac
done
