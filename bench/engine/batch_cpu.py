#!/usr/bin/env python3
"""`qed batch` throughput on a fixture model on CPU: batch 1 vs 16, and prefix-cache savings.

Writes one JSON per run to bench/results/ with provenance (git sha, machine, date, command).
Usage: bench/engine/batch_cpu.py [--qed build/qed] [--model tests/fixtures/hf/qwen2_gqa_bias] [--threads 2]
"""

import argparse
import datetime
import json
import pathlib
import platform
import random
import subprocess
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]


def run(qed, model, rows, threads, *extra):
    with tempfile.TemporaryDirectory() as d:
        inp, out, stats = pathlib.Path(d) / "in.jsonl", pathlib.Path(d) / "out.jsonl", pathlib.Path(d) / "stats.json"
        inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cmd = [qed, "batch", "--model", model, "--input", str(inp), "--output", str(out), "--threads", str(threads),
               "--stats", str(stats), *extra]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(stats.read_text()), [json.loads(l) for l in out.read_text().splitlines()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qed", default=str(REPO / "build" / "qed"))
    ap.add_argument("--model", default=str(REPO / "tests" / "fixtures" / "hf" / "qwen2_gqa_bias"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()

    rng = random.Random(0)
    vocab = json.loads((pathlib.Path(args.model) / "config.json").read_text())["vocab_size"]
    system = [rng.randrange(1, vocab) for _ in range(96)]  # shared "system prompt": 6 blocks of 16
    rows = [{"id": i, "prompt_ids": system + [rng.randrange(1, vocab) for _ in range(8 + i % 24)],
             "max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True} for i in range(args.rows)]

    results = []
    model_name = pathlib.Path(args.model).name
    outputs = {}
    for label, extra in [("b1", ["--max-batch", "1"]), ("b16", ["--max-batch", "16"]),
                         ("b16_no_prefix_cache", ["--max-batch", "16", "--no-prefix-cache"])]:
        stats, out = run(args.qed, args.model, rows, args.threads, *extra)
        outputs[label] = {r["id"]: r["token_ids"] for r in out}
        for metric in ("tok_per_s", "wall_s", "prefill_tokens", "cached_tokens", "prompt_tokens", "steps"):
            results.append({"engine": "qed", "model": model_name, "precision": "fp32", "spec": "none",
                            "workload": f"batch_{args.rows}x{args.max_tokens}_{label}", "metric": metric,
                            "value": stats[metric]})
    assert outputs["b1"] == outputs["b16"] == outputs["b16_no_prefix_cache"], "outputs differ across batch sizes"

    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    now = datetime.datetime.now(datetime.timezone.utc)
    report = {"provenance": {"git_sha": sha, "device": f"cpu ({platform.processor() or platform.machine()}, "
                                                        f"{args.threads} threads)",
                             "driver": None, "cuda": None, "date": now.isoformat(timespec="seconds"),
                             "command": " ".join(["bench/engine/batch_cpu.py", "--model", args.model, "--threads",
                                                  str(args.threads), "--rows", str(args.rows), "--max-tokens",
                                                  str(args.max_tokens)])},
              "results": results}
    dest = REPO / "bench" / "results" / f"engine_batch_cpu_{model_name}_{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    dest.write_text(json.dumps(report, indent=1) + "\n")
    for r in results:
        print(f"{r['workload']:40s} {r['metric']:15s} {r['value']}")
    print(dest)


if __name__ == "__main__":
    main()
