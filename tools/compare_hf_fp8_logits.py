#!/usr/bin/env python3
"""Compares qed's logits on a transformers-written block-wise FP8 checkpoint with transformers' reference logits
(tools/make_hf_fp8_checkpoint.py) and prints one JSON object: for each pair, max |a - b|, that over max |b|,
top-1 agreement and mean KL(softmax(b) || softmax(a)) over all positions of all prompts; and, where reference.json
has the emulation's `well_conditioned_prefix` per prompt, qed_cpu's pairs again over those positions only
(`..._well_conditioned`: before any activation near an E4M3 rounding midpoint, where the format is exact to fp32).

    python tools/compare_hf_fp8_logits.py --reference DIR --qed QED_LOGITS_DIR
DIR holds reference_logits.safetensors (`transformers_<i>`, `emulated_<i>`) and reference.json; QED_LOGITS_DIR
holds `qed logits` outputs named <backend>_<i>.safetensors (tensor `logits`). numpy + safetensors only.
"""
import argparse
import json
import pathlib

import numpy as np
from safetensors.numpy import load_file


def log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def compare(a_rows, b_rows):
    a, b = np.concatenate(a_rows).astype(np.float64), np.concatenate(b_rows).astype(np.float64)
    la, lb = log_softmax(a), log_softmax(b)
    diff = float(np.abs(a - b).max())
    return {
        "positions": int(a.shape[0]),
        "max_abs_diff": diff,
        "max_abs_diff_over_max_abs": diff / float(np.abs(b).max()),
        "top1_agreement": float((a.argmax(axis=1) == b.argmax(axis=1)).mean()),
        "mean_kl": float((np.exp(lb) * (lb - la)).sum(axis=1).mean()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True)
    parser.add_argument("--qed", required=True)
    args = parser.parse_args()
    ref_dir, qed_dir = pathlib.Path(args.reference), pathlib.Path(args.qed)
    record = json.loads((ref_dir / "reference.json").read_text())
    reference = load_file(str(ref_dir / "reference_logits.safetensors"))
    n = len(record["prompts"])
    series = {name: [reference[f"{name}_{i}"] for i in range(n)] for name in record["references"]}
    for backend in ("cpu", "cuda"):
        files = [qed_dir / f"{backend}_{i}.safetensors" for i in range(n)]
        if all(f.exists() for f in files):
            series[f"qed_{backend}"] = [load_file(str(f))["logits"] for f in files]
    pairs = [("qed_cpu", "emulated"), ("qed_cpu", "transformers"), ("qed_cuda", "qed_cpu"),
             ("qed_cuda", "transformers"), ("transformers", "emulated")]
    result = {"fixture": record["fixture"], "weight_block_size": record["weight_block_size"],
              "references": record["references"], "transformers_dtype": record.get("transformers_dtype"),
              "have": sorted(series), "pairs": {}}
    for a, b in pairs:
        if a in series and b in series:
            result["pairs"][f"{a}_vs_{b}"] = compare(series[a], series[b])
    prefix = record.get("well_conditioned_prefix")
    if prefix and sum(prefix) > 0:
        result["well_conditioned_positions"] = int(sum(prefix))
        for a, b in pairs:
            if a == "qed_cpu" and b in series and a in series:
                result["pairs"][f"{a}_vs_{b}_well_conditioned"] = compare(
                    [x[:k] for x, k in zip(series[a], prefix)], [x[:k] for x, k in zip(series[b], prefix)])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
