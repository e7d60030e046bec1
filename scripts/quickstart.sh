#!/usr/bin/env bash
# Command one of the quickstart: the main job, end to end, on real images.
#   1. installs what is missing (scripts/install-deps.sh) and builds in Release
#   2. builds the real-image minimal-change benchmark (Fashion-MNIST test images)
#   3. trains two native models with eqsim-train on Fashion-MNIST train images:
#      "baseline" (contrastive only) and "eqsim" (contrastive + EqSim, released recipe)
#   4. starts eqsim-server on them, submits an EqBen-style evaluation job per model with the
#      eqsim CLI (progress bar), prints text / image / group side by side
#   5. stops the server cleanly (SIGTERM drain)
# Re-running skips what is already there (build, benchmark, models): a second run takes
# about a minute. Environment:
#   EQSIM_QUICKSTART_DIR  work folder (default: quickstart-data)
#   EQSIM_BUILD_DIR       build folder (default: build, shared with scripts/test.sh)
#   EQSIM_TRAIN_STEPS     training steps per model (default: eqsim-train's default)
#   EQSIM_PER_SUBSET      benchmark samples per subset (default 500)
#   EQSIM_PORT            gRPC port (default: any free port)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
work="${EQSIM_QUICKSTART_DIR:-quickstart-data}"
build="${EQSIM_BUILD_DIR:-build}"
per_subset="${EQSIM_PER_SUBSET:-500}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
start=$(date +%s)
# LibTorch's OpenMP workers spin-wait by default, starving the other threads on small machines.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
step() { printf '\n==> [%ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

step "dependencies"
bash scripts/install-deps.sh --no-test-tools

step "build (Release)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target eqsim-server eqsim-train eqsim-eval eqsim
bin="$root/$build/bin"

bench="$work/data/fmnist-eqben"
if [ ! -f "$bench/annotations/winoground.jsonl" ]; then
  step "benchmark: $per_subset samples per subset from Fashion-MNIST test images"
  "$bin/eqsim-eval" generate --out "$bench" --per-subset "$per_subset" --seed 7
else
  step "benchmark: already at $bench"
fi

train() {  # name, extra flags...
  local name="$1"; shift
  if ls -d "$work/models/$name"/[0-9]* >/dev/null 2>&1; then
    step "model $name: already trained ($(ls -d "$work/models/$name"/[0-9]* | tail -1))"
    return
  fi
  step "train model $name (eqsim-train --data fashion-mnist --seed 1${*:+ $*})"
  local steps=()
  [ -n "${EQSIM_TRAIN_STEPS:-}" ] && steps=(--steps "$EQSIM_TRAIN_STEPS")
  "$bin/eqsim-train" --data fashion-mnist --repository "$work/models" --model-name "$name" \
    --seed 1 "${steps[@]}" --metrics-log "$work/train-$name.jsonl" "$@"
}
train baseline
train eqsim --eqsim

step "start eqsim-server"
mkdir -p "$work/state"
rm -f "$work/port"
port="${EQSIM_PORT:-0}"
"$bin/eqsim-server" --model-repository "$work/models" --default-model eqsim \
  --data-root "$work/data" --state-dir "$work/state" --port "$port" \
  --port-file "$work/port" --metrics-port 0 --host 127.0.0.1 2>"$work/server.log" &
server_pid=$!
stop_server() {
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" || true
  fi
}
trap stop_server EXIT
for _ in $(seq 1 300); do
  [ -s "$work/port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.2
done
target="127.0.0.1:$(cat "$work/port")"
"$bin/eqsim" health --target "$target" --wait 60s
"$bin/eqsim" models --target "$target"

ids=()
for name in baseline eqsim; do
  step "evaluate $name on the benchmark (server-side job)"
  out="$("$bin/eqsim" eval submit --target "$target" --model "$name" --format winoground \
    --annotation fmnist-eqben/annotations/winoground.jsonl --image-root fmnist-eqben \
    --label "quickstart $name" --watch --json)"
  ids+=("$(printf '%s' "$out" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | head -1)")
done

step "results (percent; chance: text 25, image 25, group 16.7)"
"$bin/eqsim" eval compare --target "$target" "${ids[@]}"

step "stop eqsim-server"
stop_server
trap - EXIT
step "done in $(( $(date +%s) - start )) s"
