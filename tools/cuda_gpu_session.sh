#!/usr/bin/env bash
# The CUDA backend's GPU session in two halves, because the device machine has nvcc, cmake and PyTorch but none of
# the Debian -dev packages qed builds against (fmt, spdlog, CLI11, gtest, pcre2, boost):
#
#   here (no GPU):   tools/cuda_gpu_session.sh bundle  # builds qed + the gpu tests in build/, copies them and their
#                                                      # .so into build-gpu/bundle (ignored by git; ~15 MB)
#   device machine:  tools/cuda_gpu_session.sh run    # with carry=["build-gpu/bundle"]; results in $OUT (~8 min)
#                    tools/cuda_gpu_session.sh graphs # the decode workloads again with --cuda-graphs (~5 min)
#                    tools/cuda_gpu_session.sh peer   # the HF transformers peer (~4 min)
#                    tools/cuda_gpu_session.sh exec CMD...  # anything else, with the bundle's libraries found
#
# `run` executes, in order of value (each step logs to $OUT and the next runs whatever the last gave):
#   1. the gpu-labelled kernel tests (test_cuda_kernels) and backend parity tests (test_cuda_backend)
#   2. qed generate --backend cuda vs --backend cpu on a fixture (greedy, token-exact)
#   3. qed bench offline on the 14B shape with random weights (decode_b1/b8/b32, ttft_1k/8k, aimo_12x4500)
#   4. (peer) tools/hf_peer_bench.py on the same shapes
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=build-gpu/bundle

bundle() {
  set -e
  # The regular build tree (sm_80/89/90 SASS) serves; configured here if absent.
  local build="${BUILD_DIR:-build}"
  [ -f "$build/build.ninja" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache >/dev/null
  # Attention and decode-GEMM micro-benchmarks too when the tree was configured with -DQED_BENCH=ON.
  local benches=""
  # (The target list is read whole first: `ninja | grep -q` fails under pipefail when grep exits early.)
  local targets
  targets="$(ninja -C "$build" -t targets all 2>/dev/null)"
  grep -q '^bench_decode_attention:' <<<"$targets" &&
    benches="bench_decode_attention bench_prefill_attention bench_skinny_gemm"
  cmake --build "$build" -j2 --target qed test_cuda_kernels test_cuda_backend $benches
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/lib"
  cp "$build/qed" "$build/tests/backend_cuda/test_cuda_kernels" "$build/tests/backend_cuda/test_cuda_backend" "$BUNDLE/"
  for b in $benches; do cp "$build/bench/${b#bench_}/$b" "$BUNDLE/"; done
  # Shared libraries from this machine's Debian that the device image may lack; CUDA's own come from the device.
  for bin in "$BUNDLE"/qed "$BUNDLE"/test_cuda_* "$BUNDLE"/bench_*; do
    [ -e "$bin" ] || continue
    ldd "$bin" | awk '/=>/ {print $3}' | grep -Ev 'libc\.so|libm\.so|libstdc|libgcc_s|libdl|libpthread|librt|cuda|cublas' \
      | xargs -r -I{} cp -n {} "$BUNDLE/lib/"
  done
  pwd >"$BUNDLE/source_dir.txt"  # tests find fixtures under the source dir compiled into them
  # For tools/gpu_serve_bench.sh: the tokenizer of the 14B shape (the device's checkout has no ../shared) and
  # Debian's bwrap for `qed sandbox`, used only where the image has none (it runs with an empty environment, so
  # on the device's own libselinux/libcap/libpcre2).
  mkdir -p "$BUNDLE/tokenizers" "$BUNDLE/bin"
  if [ -f ../shared/data/tokenizers/qwen3/tokenizer.json ]; then cp -r --no-preserve=mode ../shared/data/tokenizers/qwen3 "$BUNDLE/tokenizers/"
  else echo "bundle: no ../shared/data/tokenizers/qwen3: tools/gpu_serve_bench.sh will need TOKENIZER=DIR"; fi
  if command -v bwrap >/dev/null; then cp "$(command -v bwrap)" "$BUNDLE/bin/"; fi
  du -sh "$BUNDLE"
}

setup_env() {
  [ -x "$BUNDLE/qed" ] || { echo "no $BUNDLE: run 'tools/cuda_gpu_session.sh bundle' here and carry it"; exit 2; }
  local cublas
  cublas="$(dirname "$(find /usr /opt /lib /lib64 -name 'libcublasLt.so.13*' 2>/dev/null | head -1)")"
  export LD_LIBRARY_PATH="$PWD/$BUNDLE/lib:${cublas}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  local src
  src="$(cat "$BUNDLE/source_dir.txt")"
  if [ "$src" != "$PWD" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; fi
}

run() {
  local out="${OUT:-/tmp/qed-gpu-out}"
  mkdir -p "$out"
  setup_env
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
  timeout 150 "$BUNDLE/test_cuda_kernels" --gtest_output=json:"$out/kernels.json" 2>&1 | tee "$out/kernels.log" | tail -40
  timeout 200 "$BUNDLE/test_cuda_backend" --gtest_output=json:"$out/backend.json" 2>&1 | tee "$out/backend.log" \
    | grep -E "parity|FAILED|PASSED|OK \]" | tail -60
  local fixture=tests/fixtures/hf/qwen2_gqa_bias
  for backend in cpu cuda; do
    timeout 60 "$BUNDLE/qed" generate --model $fixture --prompt-ids 1,2,3,4,5,6,7,8 --max-tokens 24 --temperature 0 \
      --backend $backend >"$out/generate_$backend.txt" 2>&1
  done
  if cmp -s "$out/generate_cpu.txt" "$out/generate_cuda.txt"; then echo "generate: cuda == cpu"; else
    echo "generate: DIFFERENT"; cat "$out"/generate_*.txt; fi
  local result="$out/offline_14b_shape.json"
  timeout 420 "$BUNDLE/qed" bench offline --config bench/configs/qwen2.5-14b-shape/config.json --backend cuda \
    --output "$result" 2>&1 | tee "$out/bench.log"
}

graphs() {
  local out="${OUT:-/tmp/qed-gpu-out}"
  mkdir -p "$out"
  setup_env
  timeout 500 "$BUNDLE/qed" bench offline --config bench/configs/qwen2.5-14b-shape/config.json --backend cuda \
    --cuda-graphs --workloads decode_b1,decode_b8,decode_b32,aimo_12x4500 --output "$out/offline_graphs.json" 2>&1 \
    | tee "$out/bench_graphs.log"
}

quant() {
  # The quantized linear layers on the 14B shape (random weights): fp8 W8A8 and int8 weight-only.
  local out="${OUT:-/tmp/qed-gpu-out}"
  mkdir -p "$out"
  setup_env
  for dtype in fp8 int8_wo; do
    timeout 280 "$BUNDLE/qed" bench offline --config bench/configs/qwen2.5-14b-shape/config.json --backend cuda \
      --dtype $dtype --workloads decode_b1,decode_b8,ttft_1k,aimo_12x4500 --output "$out/offline_$dtype.json" 2>&1 \
      | tee "$out/bench_$dtype.log"
  done
}

# qed quantize on the 14B shape (docs/quantize.md "14B on one GPU"): a random bf16 checkpoint on local disk, then
# FP8 + FP8-KV with calibration on the CUDA backend, then the result through the engine. Data travels in the
# bundle: math500.jsonl from `calib-data` (here, after `bundle`), the Qwen3 tokenizer `bundle` copies. The steps
# also run one by one (calib_make, calib_quantize, calib_bench) when one 10-minute call is not enough.
CALIB_DIR="${CALIB_DIR:-/tmp/qed-calib}"
timed() {  # wall time, and peak RSS where GNU time exists
  if [ -x /usr/bin/time ]; then /usr/bin/time -f "elapsed %e s, max RSS %M KB" "$@"; else time "$@"; fi
}
calib_data() {
  set -e
  local shared="${SHARED_DIR:-../shared}"
  mkdir -p "$BUNDLE/calib"
  # Writable copies (the shared files are read-only, which would break the next bundle's rm -rf for non-root).
  cp --no-preserve=mode "$shared/data/math/math500.jsonl" "$BUNDLE/calib/"
  [ -f "$BUNDLE/tokenizers/qwen3/tokenizer.json" ] || cp -r --no-preserve=mode "$shared/data/tokenizers/qwen3" "$BUNDLE/tokenizers/"
  du -sh "$BUNDLE/calib" "$BUNDLE/tokenizers/qwen3"
}
calib_make() {
  local out="${OUT:-/tmp/qed-gpu-out}"
  mkdir -p "$out" "$CALIB_DIR"
  df -h "$CALIB_DIR" | tee "$out/calib_disk.txt"
  { timed python3 tools/make_random_checkpoint.py --config bench/configs/qwen2.5-14b-shape/config.json \
    --out "$CALIB_DIR/bf16" --tokenizer "$BUNDLE/tokenizers/qwen3"; } 2>&1 | tr '\r' '\n' | tee "$out/calib_make.log" \
    | tail -12
}
calib_quantize() {
  local out="${OUT:-/tmp/qed-gpu-out}"
  mkdir -p "$out"
  setup_env
  { timed "$BUNDLE/qed" quantize --model "$CALIB_DIR/bf16" --out "$CALIB_DIR/fp8" --dtype fp8 --kv-cache fp8 \
    --calib "$BUNDLE/calib/math500.jsonl" --calib-samples 64 --calib-seq-len 512 --backend cuda; } 2>&1 \
    | tr '\r' '\n' | tee "$out/calib_quantize_progress.log" | grep -Ev '^(calibrating|quantizing)  ?\[' \
    | tee "$out/calib_quantize.log"
  tail -3 "$out/calib_quantize_progress.log"
  cp "$CALIB_DIR/fp8/qed_calibration.json" "$CALIB_DIR/fp8/config.json" "$out/" 2>/dev/null
  ls -la "$CALIB_DIR/fp8" | tee -a "$out/calib_quantize.log"
}
calib_bench() {
  local out="${OUT:-/tmp/qed-gpu-out}"
  mkdir -p "$out"
  setup_env
  timeout 400 "$BUNDLE/qed" bench offline --model "$CALIB_DIR/fp8" --backend cuda --workloads decode_b1 \
    --output "$out/offline_fp8_calibrated.json" 2>&1 | tee "$out/calib_bench.log" | tail -20
}

# The bundle (~130 MB with sm_80/89/90 code in three test binaries) and the tracked tree (~32 MB) exceed the device's
# 64 MiB carry: `pack` writes a stripped, xz-compressed copy (~10 MB; carry ["build-gpu/carry"]) and `unpack`, run first
# on the device, restores build-gpu/bundle from it. Leaves the tokenizers out unless KEEP_TOKENIZERS=1 (serve bench).
pack() {
  set -e
  [ -x "$BUNDLE/qed" ] || { echo "no $BUNDLE: run 'tools/cuda_gpu_session.sh bundle' first"; exit 2; }
  local stage
  stage="$(mktemp -d)"
  cp -r "$BUNDLE" "$stage/bundle"
  [ "${KEEP_TOKENIZERS:-0}" = 1 ] || rm -rf "$stage/bundle/tokenizers"
  find "$stage/bundle" -maxdepth 1 -type f -perm -u+x -exec strip --strip-unneeded {} + 2>/dev/null || true
  mkdir -p build-gpu/carry
  tar -C "$stage" -cf - bundle | xz -9 -T2 >build-gpu/carry/bundle.tar.xz
  rm -rf "$stage"
  ls -la build-gpu/carry/bundle.tar.xz
}

unpack() {
  rm -rf "$BUNDLE" && mkdir -p "$(dirname "$BUNDLE")" && tar -C "$(dirname "$BUNDLE")" -xJf build-gpu/carry/bundle.tar.xz
}

peer() {
  local out="${OUT:-/tmp/qed-gpu-out}"
  mkdir -p "$out"
  timeout 500 python3 tools/hf_peer_bench.py --config bench/configs/qwen2.5-14b-shape/config.json \
    --workloads decode_b1,decode_b8,ttft_1k,ttft_8k --decode-tokens 64 --output "$out/hf_peer_14b_shape.json" 2>&1 \
    | tee "$out/hf.log"
}

case "${1:-}" in
  bundle) bundle ;;
  pack) pack ;;
  unpack) unpack ;;
  run) run ;;
  peer) peer ;;
  graphs) graphs ;;
  quant) quant ;;
  calib-data) calib_data ;;
  calib) calib_make && calib_quantize && calib_bench ;;
  calib_make | calib_quantize | calib_bench) "$1" ;;
  # Any command with the bundle's libraries on the path, e.g. `exec build-gpu/bundle/qed bench offline ...`.
  exec) shift; setup_env; "$@" ;;
  *) echo "usage: $0 bundle | pack | unpack | run | graphs | quant | calib-data | calib | calib_make | calib_quantize | calib_bench | peer | exec CMD..."; exit 2 ;;
esac
