#!/usr/bin/env bash
# ctest deploy_binary_contract: what deploy/ and docker/ ask of the built programs exists.
#   * every flag passed in the rendered manifests (server flag files, Job args and scripts) is
#     in the program's help (`eqsim-server --helpfull`, `eqsim <subcommand> --help`, ...);
#   * the images' ENTRYPOINT/CMD flags exist in eqsim-server, and their HEALTHCHECK command
#     (`eqsim health --target=...`) exists: against a closed port it must exit 1, not 2 (usage).
#   $1  repository root        $2  folder of built programs
# Exit 0 pass, 1 fail, 77 skip (none of the programs is built, or the npm packages are missing).
set -euo pipefail
src="${1:?usage: binary_contract_test.sh <source dir> <bin dir>}"
bin_dir="${2:?usage: binary_contract_test.sh <source dir> <bin dir>}"

built=0
for b in eqsim-server eqsim eqsim-train; do
  if [ -x "$bin_dir/$b" ]; then built=1; fi
done
if [ "$built" = 0 ]; then
  echo "SKIP: none of eqsim-server, eqsim, eqsim-train is built in $bin_dir" >&2
  exit 77
fi
if [ ! -d "$src/tests/k8s/node_modules" ]; then
  echo "SKIP: tests/k8s/node_modules is missing (run scripts/install-deps.sh)" >&2
  exit 77
fi

rc=0
node "$src/tests/k8s/validate.js" --deploy-dir "$src/deploy" --bin-dir "$bin_dir" --flags-only || rc=1
/usr/bin/python3 "$src/tests/deploy/docker_test.py" --source-dir "$src" --bin-dir "$bin_dir" \
  --binaries-only || rc=1
exit "$rc"
