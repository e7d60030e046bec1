#!/usr/bin/env bash
# The benchmark helpers work end to end (numbers are not judged: BENCHMARKS.md holds those):
# bench/make_bench_model.py writes a TorchScript model that loads, and eqsim-encode-bench
# measures it and a native model per batch size, with a usable JSON output and exit codes.
#   bench_programs_test.sh SOURCE_DIR BIN_DIR
set -euo pipefail
src="$1"; bin="$2"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=PASSIVE
fail() { echo "FAIL: $*" >&2; exit 1; }

printf 'a\nred\nbag\non\nthe\nleft\n' > "$tmp/vocab.txt"
/usr/bin/python3 "$src/bench/make_bench_model.py" "$tmp/repo" --preset small --name ts \
  --vocab "$tmp/vocab.txt" > "$tmp/make.log" 2>&1 || { cat "$tmp/make.log"; fail "make_bench_model.py"; }
grep -q "preset small" "$tmp/repo/ts/config.pbtxt" || fail "config.pbtxt lacks its description"
[ -s "$tmp/repo/ts/1/model.pt" ] || fail "no model.pt"

"$bin/eqsim-encode-bench" --repository "$tmp/repo" --model ts --batch-sizes 1,4 --seconds 0.3 \
  --workers 2 --threads 1 --json > "$tmp/out.jsonl" 2> "$tmp/err.txt" || { cat "$tmp/err.txt"; fail "encode-bench"; }
/usr/bin/python3 - "$tmp/out.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
points = [r for r in rows if "summary" not in r]
assert [(r["modality"], r["batch"]) for r in points] == [
    ("image", 1), ("image", 4), ("text", 1), ("text", 4)], points
assert all(r["backend"] == "torchscript" and r["items_per_s"] > 0 and r["workers"] == 2
           for r in points), points
summary = [r for r in rows if "summary" in r]
assert len(summary) == 1 and summary[0]["largest_batch"] == 4, summary
assert summary[0]["image_ratio_vs_batch1"] > 0 and summary[0]["text_ratio_vs_batch1"] > 0
PY

# Errors: missing flags are a usage error (2), an unknown model a failure (1) naming it.
set +e
"$bin/eqsim-encode-bench" > /dev/null 2>&1; [ $? -eq 2 ] || fail "no --repository: want exit 2"
"$bin/eqsim-encode-bench" --repository "$tmp/repo" --model ts --batch-sizes 1,x > /dev/null 2>&1
[ $? -eq 2 ] || fail "bad --batch-sizes: want exit 2"
"$bin/eqsim-encode-bench" --repository "$tmp/repo" --model nope > /dev/null 2> "$tmp/err.txt"
[ $? -eq 1 ] || fail "unknown model: want exit 1"
grep -q "nope" "$tmp/err.txt" || fail "the error does not name the model: $(cat "$tmp/err.txt")"
set -e
echo "ok"
