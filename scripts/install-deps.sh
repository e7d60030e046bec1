#!/usr/bin/env bash
# Installs every build, test and run-time dependency of eqsim from Debian 12's apt.
# Idempotent: packages already present are skipped, so a second run takes a second.
# Used by the README quickstart, .ci/run and docker/Dockerfile alike.
#   --runtime-only   only the shared libraries eqsim-server / eqsim need at run time
#   --no-test-tools  skip test-only tools (python grpc, prometheus, yamllint, node packages)
#   --no-torch       skip Debian's CPU-only LibTorch (docker/Dockerfile.cuda brings its own)
set -euo pipefail

runtime_only=0
test_tools=1
torch=1
for arg in "$@"; do
  case "$arg" in
    --runtime-only) runtime_only=1; test_tools=0 ;;
    --no-test-tools) test_tools=0 ;;
    --no-torch) torch=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install-deps: unknown option $arg" >&2; exit 2 ;;
  esac
done

build_pkgs=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libtorch-dev libopencv-dev libabsl-dev prometheus-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
  libopenblas0-pthread dataset-fashion-mnist
)
runtime_pkgs=(
  libopenblas0-pthread libgrpc++1.51 libprotobuf32 libtorch1.13
  libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406
  libabsl20220623 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 ca-certificates
  dataset-fashion-mnist
)
test_pkgs=(
  python3 python3-torch python3-grpcio python3-grpc-tools python3-numpy
  prometheus yamllint openssl shellcheck
)

if [ "$runtime_only" = 1 ]; then
  pkgs=("${runtime_pkgs[@]}")
else
  pkgs=("${build_pkgs[@]}")
  [ "$test_tools" = 1 ] && pkgs+=("${test_pkgs[@]}")
fi

if [ "$torch" = 0 ]; then
  keep=()
  for p in "${pkgs[@]}"; do
    case "$p" in libtorch-dev|libtorch1.13|python3-torch) ;; *) keep+=("$p") ;; esac
  done
  pkgs=("${keep[@]}")
fi

missing=()
# Node.js: Debian's nodejs+npm only where no node/npm exists (a nodesource node conflicts with them).
if [ "$test_tools" = 1 ] && ! command -v npm >/dev/null 2>&1; then
  pkgs+=(nodejs npm)
fi
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: ${#pkgs[@]} apt packages needed, $(( ${#pkgs[@]} - ${#missing[@]} )) present; installing ${#missing[@]}: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#pkgs[@]} apt packages present"
fi

# Node packages used by the manifest validation test (tests/deploy), installed locally at the
# versions of package-lock.json; reinstalled when the lock file changes.
if [ "$test_tools" = 1 ]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  k8s="$here/tests/k8s"
  if [ -f "$k8s/package-lock.json" ]; then
    want="$(sha256sum "$k8s/package-lock.json" | cut -d' ' -f1)"
    if [ "$(cat "$k8s/node_modules/.eqsim-lock.sha256" 2>/dev/null)" != "$want" ]; then
      echo "install-deps: npm packages for tests/k8s (npm ci)"
      (cd "$k8s" && npm ci --no-audit --no-fund --silent) && echo "$want" > "$k8s/node_modules/.eqsim-lock.sha256"
    fi
  fi
fi
