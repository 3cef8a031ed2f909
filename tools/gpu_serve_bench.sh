#!/usr/bin/env bash
# Issue #9's serving latencies of the 14B shape in ONE device call (at most ~7.5 min): `qed serve` on random weights
# of bench/configs/qwen2.5-14b-shape (bf16, then fp8 while time is left) with Qwen3's tokenizer (it fits the
# shape's 152064 ids), loaded over HTTP by `qed bench serve`:
#   (a) random prompts at concurrency 1, 8 and 32 (vLLM benchmark_serving's TTFT/TPOT/ITL/E2EL percentiles and
#       throughputs; 256 output tokens with ignore_eos, so every request is as long);
#   (b) the AIMO preset (12 samples, seeds 0-11, temperature 0.7, stop after the first 10) at 4500 tokens with
#       ignore_eos: random weights never produce a real answer, the length is what is measured. Tool calls are on
#       when `qed sandbox` starts on the machine (bubblewrap; the bundle carries Debian's bwrap in case the image
#       lacks one) and answers a probe; otherwise off, and the JSON's details.note says why.
#
#   here (no GPU):  tools/cuda_gpu_session.sh bundle    # qed, its .so files, bwrap and the tokenizer → build-gpu/bundle
#                   tools/gpu_serve_bench.sh --dry-run  # the same steps on the CPU backend on a tiny shape (~1 min)
#   device:         tools/gpu_serve_bench.sh             # carry ["build-gpu/bundle"]; results in $OUT
#
# Overrides (environment): QED_BIN, SERVE_BENCH_CONFIG, SERVE_BENCH_TOKENIZER, SERVE_BENCH_DTYPES ("bf16 fp8"),
# SERVE_BENCH_BUDGET_S, SERVE_BENCH_AIMO_MAX_TOKENS, SERVE_BENCH_SANDBOX_PYTHON.
# $OUT receives at most 6 files: serve_<shape>_<dtype>.json (every run against one server, merged by `qed bench
# serve --merge-into`), server_<dtype>.log (with the server's /metrics at the end), sandbox.log, run.log (the
# steps, their timings and the bench output). Every step runs under `timeout` within an overall budget; servers
# are stopped (SIGTERM, then SIGKILL) on every exit path. No curl needed: HTTP probes use bash's /dev/tcp.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
BUNDLE=build-gpu/bundle
OUT="${OUT:-/tmp/qed-serve-bench}"
mkdir -p "$OUT"
LOG="$OUT/run.log"
: >"$LOG"

if [ "${1:-}" = "--dry-run" ]; then
  # The device run's steps at toy sizes on the CPU backend; fp8 random weights do not exist on the CPU, so the
  # second server fails to start and exercises the path that skips a dtype.
  QED="${QED_BIN:-build/qed}"
  QED_RUN=("$QED")
  PRECISION=fp32
  CONFIG="${SERVE_BENCH_CONFIG:-tests/fixtures/serve/tiny-qwen2-152k/config.json}"
  BACKEND=cpu
  DEVICE="cpu (dry run of tools/gpu_serve_bench.sh)"
  SERVE_EXTRA=(--threads 2 --kv-cache-mb 64)
  OUTPUT_TOKENS=8 RANDOM_WORDS=16 REQUESTS=(4 8 8) AIMO_MAX_TOKENS=12
  BUDGET_S="${SERVE_BENCH_BUDGET_S:-240}" SERVE_START_S=60
else
  QED="${QED_BIN:-$BUNDLE/qed}"
  CONFIG="${SERVE_BENCH_CONFIG:-bench/configs/qwen2.5-14b-shape/config.json}"
  BACKEND=cuda
  # The bundle's .so files and CUDA's, found as tools/cuda_gpu_session.sh exec finds them; for qed only (not
  # exported: the bundle's Debian libraries are no business of the device's own tools). `env` execs qed, so $! of
  # a background start is qed's pid.
  QED_LD="$(tools/cuda_gpu_session.sh exec printenv LD_LIBRARY_PATH)" || exit 2
  QED_RUN=(env "LD_LIBRARY_PATH=$QED_LD" "$QED")
  PRECISION=""
  DEVICE="$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 2>/dev/null | head -1) (qed serve --backend cuda)"
  SERVE_EXTRA=(--max-num-batched-tokens 8192)
  # c1: 12 × 256 tokens ≈ 30 s at ~110 tok/s; c8: 32 (4 waves); c32: 64 (2 waves). AIMO: ~90 s at ~600 tok/s.
  OUTPUT_TOKENS=256 RANDOM_WORDS=256 REQUESTS=(12 32 64) AIMO_MAX_TOKENS="${SERVE_BENCH_AIMO_MAX_TOKENS:-4500}"
  BUDGET_S="${SERVE_BENCH_BUDGET_S:-420}" SERVE_START_S=180
fi
DTYPES="${SERVE_BENCH_DTYPES:-bf16 fp8}"
CONCURRENCY=(1 8 32)
SANDBOX_PYTHON="${SERVE_BENCH_SANDBOX_PYTHON:-/usr/bin/python3}"
PROBLEM="Find the remainder when 7^2024 is divided by 1000."
SHAPE="$(basename "$(dirname "$CONFIG")")"
TOKENIZER="${SERVE_BENCH_TOKENIZER:-}"
if [ -z "$TOKENIZER" ]; then
  TOKENIZER="$BUNDLE/tokenizers/qwen3"
  [ -f "$TOKENIZER/tokenizer.json" ] || TOKENIZER=../shared/data/tokenizers/qwen3
fi

log() { echo "[$(printf '%4d' "$SECONDS") s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET_S - SECONDS)); }

# METHOD PORT PATH [BODY]: the raw HTTP response (HTTP/1.1, Connection: close), within $HTTP_TIMEOUT_S (10) s.
http() {
  # shellcheck disable=SC2016  # the inner script expands its own positional parameters
  LC_ALL=C timeout "${HTTP_TIMEOUT_S:-10}" bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" \
      "$0" "$2" "${#3}" "$3" >&3
    cat <&3' "$1" "$2" "$3" "${4:-}"
}

# PID LOGFILE SECONDS: waits until the process logged its URL (qed serve and qed sandbox log it once listening) and
# /health answers 200; prints the port. Fails if the process exits or the time runs out.
wait_ready() {
  local pid=$1 logfile=$2 deadline=$((SECONDS + $3)) port=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    [ -n "$port" ] || port="$(grep -oE 'http://127\.0\.0\.1:[0-9]+' "$logfile" 2>/dev/null | tail -1 | sed 's/.*://')"
    if [ -n "$port" ] && http GET "$port" /health | head -1 | grep -q ' 200'; then
      echo "$port"
      return 0
    fi
    sleep 1
  done
  return 1
}

# PID: SIGTERM (qed drains and exits 0), SIGKILL after 30 s.
stop() {
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { log "pid $pid ignored SIGTERM for 30 s: SIGKILL"; kill -KILL "$pid"; }
  wait "$pid" 2>/dev/null
}

SERVER_PID="" SANDBOX_PID=""
cleanup() { stop "$SERVER_PID"; stop "$SANDBOX_PID"; }
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --- the sandbox, for the AIMO preset's tool calls --------------------------------------------------------------
TIR=false SANDBOX_ARGS=() NOTE=""
start_sandbox() {
  if ! command -v bwrap >/dev/null && [ -x "$BUNDLE/bin/bwrap" ]; then
    export PATH="$PATH:$PWD/$BUNDLE/bin"
    log "no bwrap on this machine: trying the bundle's (Debian 12's)"
  fi
  local preimport=sympy,numpy
  if ! timeout 60 "$SANDBOX_PYTHON" -c "import sympy, numpy" >/dev/null 2>&1; then
    preimport=""
    NOTE="$SANDBOX_PYTHON lacks sympy/numpy: sandbox sessions start without them. "
  fi
  "${QED_RUN[@]}" sandbox --port 0 --workers 2 --python "$SANDBOX_PYTHON" --preimport "$preimport" >"$OUT/sandbox.log" 2>&1 &
  SANDBOX_PID=$!
  local port reply
  if ! port="$(wait_ready "$SANDBOX_PID" "$OUT/sandbox.log" 60)"; then
    NOTE+="tools off: qed sandbox did not start here ($(grep -m1 'error' "$OUT/sandbox.log" | cut -c1-300))"
    stop "$SANDBOX_PID"
    SANDBOX_PID=""
    return
  fi
  # A cold interpreter (imports, the jail's setup) may take seconds: the call itself is allowed 20.
  reply="$(HTTP_TIMEOUT_S=30 http POST "$port" /execute '{"generated_code": "print(6 * 7)", "timeout": 20, "language": "python"}')"
  if ! grep -q '"stdout":"42' <<<"$reply" && ! grep -q '"stdout": "42' <<<"$reply"; then
    NOTE+="tools off: qed sandbox started but print(6 * 7) gave: $(tail -c 300 <<<"$reply" | tr -d '\r\n')"
    stop "$SANDBOX_PID"
    SANDBOX_PID=""
    return
  fi
  TIR=true
  SANDBOX_ARGS=(--sandbox "http://127.0.0.1:$port")
  NOTE+="tools on: qed sandbox (bubblewrap+seccomp) on the same machine"
}

# --- one server per dtype, every bench run against it --------------------------------------------------------------
bench() {  # TIMEOUT_S ARGS...: one `qed bench serve` run merged into $JSON
  local limit=$1
  shift
  [ "$(left)" -gt 20 ] || { log "skipped (budget): bench serve $*"; return 1; }
  [ "$limit" -le "$(left)" ] || limit="$(left)"
  log "qed bench serve $* (timeout ${limit} s)"
  timeout "$limit" "${QED_RUN[@]}" bench serve --url "http://127.0.0.1:$PORT" --device "$DEVICE" --precision "${PRECISION:-$DTYPE}" \
    --merge-into "$JSON" "$@" >>"$LOG" 2>&1
  local rc=$?
  [ "$rc" -eq 0 ] || log "  failed (exit $rc)"
  return "$rc"
}

serve_and_bench() {
  DTYPE=$1
  JSON="$OUT/serve_${SHAPE}_${DTYPE}.json"
  local server_log="$OUT/server_${DTYPE}.log"
  log "qed serve --config $CONFIG --dtype $DTYPE --backend $BACKEND"
  # O_APPEND for the server and for the /metrics this script adds at the end, so neither overwrites the other.
  : >"$server_log"
  "${QED_RUN[@]}" serve --config "$CONFIG" --tokenizer "$TOKENIZER" --backend "$BACKEND" --dtype "$DTYPE" --port 0 \
    --served-model-name "$SHAPE" --seed 0 "${SANDBOX_ARGS[@]}" "${SERVE_EXTRA[@]}" >>"$server_log" 2>&1 &
  SERVER_PID=$!
  local start=$SERVE_START_S
  [ "$start" -le "$(left)" ] || start="$(left)"
  if ! PORT="$(wait_ready "$SERVER_PID" "$server_log" "$start")"; then
    log "  $DTYPE server did not become healthy: $(grep -m1 'error' "$server_log" | cut -c1-300)"
    stop "$SERVER_PID"
    SERVER_PID=""
    return 1
  fi
  log "  healthy on port $PORT"
  local i
  for i in "${!CONCURRENCY[@]}"; do
    bench 150 --dataset random --random-words "$RANDOM_WORDS" --concurrency "${CONCURRENCY[$i]}" \
      --requests "${REQUESTS[$i]}" --max-tokens "$OUTPUT_TOKENS" --ignore-eos --temperature 0 --seed 0
  done
  bench 200 --preset aimo --problem "$PROBLEM" --max-tokens "$AIMO_MAX_TOKENS" --ignore-eos --tir "$TIR" \
    --note "$NOTE"
  { echo "--- /metrics at the end (histogram buckets left out)"; http GET "$PORT" /metrics | grep '^qed:' \
    | grep -v '_bucket{'; } >>"$server_log"
  stop "$SERVER_PID"
  SERVER_PID=""
  log "  $DTYPE server stopped"
}

log "$("${QED_RUN[@]}" --version 2>&1 | head -1); shape $SHAPE; tokenizer $TOKENIZER; budget ${BUDGET_S} s; device: $DEVICE"
[ -x "$QED" ] || { log "no qed binary at $QED"; exit 2; }
if [ "$BACKEND" = cuda ]; then
  log "$(nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader 2>&1 | head -2)"
fi
[ -f "$TOKENIZER/tokenizer.json" ] || { log "no tokenizer.json in $TOKENIZER (tools/cuda_gpu_session.sh bundle copies it; or SERVE_BENCH_TOKENIZER=DIR)"; exit 2; }
start_sandbox
log "$NOTE"
for dtype in $DTYPES; do
  # A server start plus the four runs take ~3 min on the device: a dtype that cannot finish is not started.
  if [ "$(left)" -lt $((BUDGET_S / 3)) ]; then
    log "skipped (budget): $dtype"
    continue
  fi
  serve_and_bench "$dtype"
done
stop "$SANDBOX_PID"
SANDBOX_PID=""
log "done; files in $OUT: $(find "$OUT" -maxdepth 1 -type f -printf '%f ')"
