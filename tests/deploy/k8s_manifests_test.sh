#!/usr/bin/env bash
# ctest deploy_k8s_manifests: lints deploy/ with yamllint, renders every Kustomization with
# `kubectl kustomize` and validates every object (tests/k8s/validate.js: Kubernetes and
# prometheus-operator schemas, unknown fields, eqsim's deployment rules; the flags against the
# built binaries are deploy_binary_contract's job), then checks that known mistakes are caught.
#   $1  repository root        $2  folder of built programs (optional; flags checked if built)
# Exit 0 pass, 1 fail, 77 skip (only when the pinned npm packages cannot be installed).
set -euo pipefail
src="${1:?usage: k8s_manifests_test.sh <source dir> [bin dir]}"
bin_dir="${2:-}"
k8s="$src/tests/k8s"

for tool in kubectl node npm yamllint; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "FAIL: '$tool' is not installed (scripts/install-deps.sh installs node, npm, yamllint;" \
      "kubectl comes from the Kubernetes apt repository)" >&2
    exit 1
  fi
done

# node_modules must match package-lock.json; reinstall (npm ci) when missing or stale.
stamp="$k8s/node_modules/.eqsim-lock.sha256"
want="$(sha256sum "$k8s/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing the pinned npm packages of tests/k8s (npm ci)" >&2
  if ! (cd "$k8s" && npm ci --no-audit --no-fund --silent >&2); then
    echo "SKIP: npm ci failed in $k8s (no registry access?): manifests not validated" >&2
    exit 77
  fi
  echo "$want" > "$stamp"
fi

echo "yamllint --strict deploy/ tests/k8s/alerts_test.yaml" >&2
yamllint --strict -c "$src/.yamllint" "$src/deploy" "$k8s/alerts_test.yaml"

args=(--deploy-dir "$src/deploy" --self-test)
if [ -n "$bin_dir" ]; then args+=(--bin-dir "$bin_dir"); fi
node "$k8s/validate.js" "${args[@]}"
