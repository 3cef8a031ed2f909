#!/usr/bin/env bash
# Short libFuzzer runs for every fuzz target built in BUILD_DIR (default build-asan), seeded from tests/fuzz/corpus.
# Ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-asan}
SECONDS_PER_TARGET=${QED_FUZZ_SECONDS:-20}
passed=0; failed=0
for bin in "$BUILD"/tests/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); name=${name#fuzz_}
  seeds="tests/fuzz/corpus/$name"
  work=$(mktemp -d)
  [ -d "$seeds" ] && cp -r "$seeds"/. "$work"/
  if "$bin" "$work" -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len=65536 \
       -artifact_prefix="$work/" >"$work.log" 2>&1; then
    echo "fuzz_$name: ok ($(grep -oE '#[0-9]+' "$work.log" | tail -1 | tr -d '#') runs)"
    passed=$((passed + 1))
  else
    echo "fuzz_$name: FAILED"; tail -40 "$work.log"
    failed=$((failed + 1))
  fi
  rm -rf "$work" "$work.log"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
