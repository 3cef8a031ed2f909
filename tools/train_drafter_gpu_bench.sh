#!/usr/bin/env bash
# qed train-drafter --backend cuda throughput on the device machine (docs/train_drafter.md, "CUDA"): a random-weight
# checkpoint of bench/configs/drafter-train-1024x8 (hidden 1024, 8 layers, the 14B's vocab 152064; the 14B itself
# needs 28 GB of weights written first), random token rows, a few optimizer steps; bf16 and then its FP8 quantization
# as the base model. Prints each run's last metrics.jsonl line and tokens/s with the base-forward / head split.
#   device:  tools/train_drafter_gpu_bench.sh   (carry build-gpu/bundle; writes under $OUT or /tmp; ~3 min)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/train_drafter_bench}"
WORK="${WORK:-/tmp/train_drafter_work}"
STEPS="${STEPS:-12}"
BATCH="${BATCH:-4}"
LEN="${LEN:-1024}"
DTYPES="${DTYPES:-bf16 fp8}"  # DTYPES=bf16: the bf16 base only (no qed quantize, ~1 min less)
mkdir -p "$OUT" "$WORK"
QED=(tools/cuda_gpu_session.sh exec build-gpu/bundle/qed)

[ -f "$WORK/bf16/config.json" ] ||
  python3 tools/make_random_checkpoint.py --config bench/configs/drafter-train-1024x8/config.json --out "$WORK/bf16"
python3 - "$WORK/data.jsonl" "$LEN" <<'PY'
import json, random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    for _ in range(256):
        ids = [random.randrange(152064) for _ in range(int(sys.argv[2]))]
        f.write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
PY
for dtype in $DTYPES; do
  if [ "$dtype" = fp8 ] && [ ! -f "$WORK/fp8/config.json" ]; then
    "${QED[@]}" quantize --model "$WORK/bf16" --out "$WORK/fp8" --dtype fp8 --calib "$WORK/data.jsonl" \
      --calib-samples 8 --calib-seq-len 256 --backend cuda --quiet || { echo "fp8: qed quantize failed"; continue; }
  fi
  rm -rf "$OUT/head_$dtype"
  "${QED[@]}" train-drafter --backend cuda --model "$WORK/$dtype" --data "$WORK/data.jsonl" --out "$OUT/head_$dtype" \
    --batch "$BATCH" --max-len "$LEN" --max-steps "$STEPS" --save-every 1000 --quiet ||
    { echo "$dtype: train-drafter failed"; continue; }
  python3 - "$OUT/head_$dtype/metrics.jsonl" "$dtype" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
first, last = lines[0], lines[-1]
# Step 1 includes the cuBLASLt plan searches and the first allocations: rates over steps 2..N.
tokens = last["tokens"] - first["tokens"]
elapsed = last["elapsed_s"] - first["elapsed_s"]
base = last["base_forward_s"] - first["base_forward_s"]
head = last["head_s"] - first["head_s"]
print(json.dumps({"base": sys.argv[2], "steps": len(lines), "loss_first": first["loss"], "loss_last": last["loss"],
                  "tokens_per_s": tokens / elapsed, "base_forward_s": base, "head_s": head,
                  "other_s": elapsed - base - head, "head_share": head / elapsed}))
PY
done
