#!/usr/bin/env bash
# The test command: builds what changed, runs ctest (CPU tests; GPU tests carry the label `gpu`) and pytest,
# and ends with both summaries. In CI (CI=true) or with --sanitize it also runs the C++ tests under ASan/UBSan
# and short fuzzing runs.
set -uo pipefail
cd "$(dirname "$0")"
BUILD=${QED_BUILD_DIR:-build}
SANITIZE=0
[ "${CI:-}" = "true" ] && SANITIZE=1
[ "${1:-}" = "--sanitize" ] && SANITIZE=1
JOBS=$(nproc)
status=0
log=$(mktemp -d)

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release || exit 1
fi
cmake --build "$BUILD" -j"$JOBS" || exit 1

ctest --test-dir "$BUILD" -LE gpu --output-on-failure -j"$JOBS" --timeout 900 2>&1 | tee "$log/ctest.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

QED_BIN="$PWD/$BUILD/qed" .venv/bin/python -m pytest tests/python -q -p no:cacheprovider 2>&1 | tee "$log/pytest.txt"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || status=1

if [ "$SANITIZE" = 1 ]; then
  # CUDA is off here: nvcc objects and ASan runtimes do not mix, and CI has no GPU to run them on anyway.
  # -Werror is enforced by the gcc build above; clang's extra warnings are printed here but do not stop the
  # sanitizer run, whose job is to find memory errors and UB.
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DQED_SANITIZE=ON -DQED_CUDA=OFF -DQED_WERROR=OFF \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DQED_FUZZ=ON >/dev/null || status=1
  cmake --build build-asan -j"$JOBS" || status=1
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan -LE "gpu|slow" --output-on-failure -j"$JOBS" --timeout 1200 2>&1 | tee "$log/asan.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  if [ -x tools/run_fuzzers.sh ]; then
    tools/run_fuzzers.sh build-asan 2>&1 | tee "$log/fuzz.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  fi
fi

echo
echo "==================== summary ===================="
[ "$SANITIZE" = 1 ] && { echo -n "ctest (asan/ubsan): "; grep -E "tests passed|tests failed" "$log/asan.txt" | tail -1; }
[ -f "$log/fuzz.txt" ] && { echo -n "fuzz: "; tail -1 "$log/fuzz.txt"; }
echo -n "ctest: "; grep -E "tests passed|tests failed" "$log/ctest.txt" | tail -1
echo -n "pytest: "; tail -1 "$log/pytest.txt"
exit $status
