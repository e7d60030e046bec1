#!/usr/bin/env bash
# Command two of the quickstart: installs what is missing, builds everything (Release) and
# runs the whole test suite with CTest. `.ci/run` calls exactly this.
#   EQSIM_BUILD_DIR   build folder (default: build)
#   EQSIM_JOBS        parallel compile jobs (default: nproc)
#   extra arguments are passed to ctest (e.g. -R server -V)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${EQSIM_BUILD_DIR:-build}"
jobs="${EQSIM_JOBS:-$(nproc)}"
# LibTorch's OpenMP workers spin-wait by default, starving the other threads on small machines.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

bash scripts/install-deps.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure --timeout 600 -j "$jobs" "$@"
