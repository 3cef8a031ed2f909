#!/usr/bin/env bash
# Block-wise FP8 interop on the device machine (docs/quantize.md "Block-wise FP8"): transformers' own
# FineGrainedFP8Config writes a checkpoint of each fixture, qed loads it (`qed logits --backend cpu`, the exact
# reference, and `--backend cuda`, which runs the weights dequantized to bf16), and the logits are compared with
# transformers' (its FP8Linear, and a plain-torch emulation of the format). Run from the repository root with the
# bundle carried (tools/cuda_gpu_session.sh bundle here first):
#
#   tools/check_hf_fp8_interop.sh [OUT_DIR]        # default $OUT; PYTHON=/opt/torch/.venv/bin/python
#
# Writes OUT_DIR/<fixture>_reference.json (what transformers wrote and ran) and OUT_DIR/<fixture>_compare.json
# (the comparison, also printed); the checkpoints and all logits stay in a scratch directory (the device returns
# at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:?give OUT_DIR or set OUT}}"
python="${PYTHON:-/opt/torch/.venv/bin/python}"
mkdir -p "$out"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
status=0
for fixture in qwen2_gqa_bias llama3_rope_scaled; do
  dir="$scratch/$fixture/model"
  echo "== $fixture"
  if ! "$python" tools/make_hf_fp8_checkpoint.py --fixture "tests/fixtures/hf/$fixture" --out "$dir" --block-size 16 32; then
    echo "$fixture: make_hf_fp8_checkpoint.py failed"; status=1; continue
  fi
  prompts="$("$python" -c 'import json,sys; print(" ".join(",".join(map(str, p)) for p in json.load(open(sys.argv[1]))["prompts"]))' "$dir/reference.json")"
  mkdir -p "$scratch/$fixture"
  for backend in cpu cuda; do
    i=0
    for ids in $prompts; do
      if ! tools/cuda_gpu_session.sh exec build-gpu/bundle/qed logits --model "$dir" --prompt-ids "$ids" \
        --backend "$backend" --out "$scratch/$fixture/${backend}_$i.safetensors" 2>"$scratch/$fixture/${backend}_$i.err"; then
        echo "$fixture: qed logits --backend $backend failed on prompt $i: $(tail -1 "$scratch/$fixture/${backend}_$i.err")"
        status=1
      fi
      i=$((i + 1))
    done
  done
  head -2 "$scratch/$fixture/cuda_0.err" 2>/dev/null  # the CUDA backend's one-time note on block-wise weights
  cp "$dir/reference.json" "$out/${fixture}_reference.json"
  "$python" tools/compare_hf_fp8_logits.py --reference "$dir" --qed "$scratch/$fixture" | tee "$out/${fixture}_compare.json" ||
    status=1
done
exit $status
