#!/usr/bin/env python3
"""N-gram (prompt-lookup) speculative decoding on the demo model on CPU: `qed batch` with --spec none vs ngram.

Measures tokens/s, engine steps, and the drafter's acceptance (acceptance rate, mean accepted length per verify step)
at batch 1 and batch 8 on demo-style math problems (the model writes Python that repeats the problem's numbers), and
checks the outputs are token-identical with and without drafts. Writes one JSON to bench/results/ (schema of
shared/design.md "Formats"), with the non-speculative run as the peer.
Usage: bench/spec/ngram_cpu.py [--qed build/qed] [--threads 2] [--rows 16] [--max-tokens 96]
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
SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def problems(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(f"What is {rng.randrange(10, 999)}^{rng.randrange(100, 9999)} modulo {rng.randrange(100, 999)}?")
        elif kind == 1:
            out.append(f"Compute {rng.randrange(10, 60)}! modulo {rng.randrange(100, 9999)}.")
        elif kind == 2:
            out.append(f"How many primes are there below {rng.randrange(1000, 99999)}?")
        else:
            out.append(f"What is gcd({rng.randrange(1000, 999999)}, {rng.randrange(1000, 999999)})?")
    return out


def chatml(problem):
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{problem}<|im_end|>\n"
            "<|im_start|>assistant\n")


def run(qed, model, rows, threads, *extra):
    with tempfile.TemporaryDirectory() as d:
        inp, out, stats = pathlib.Path(d) / "in.jsonl", pathlib.Path(d) / "out.jsonl", pathlib.Path(d) / "stats.json"
        inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cmd = [qed, "batch", "--model", model, "--input", str(inp), "--output", str(out), "--threads", str(threads),
               "--stats", str(stats), *extra]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(stats.read_text()), {json.loads(l)["id"]: json.loads(l)["token_ids"]
                                               for l in out.read_text().splitlines()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qed", default=str(REPO / "build" / "qed"))
    ap.add_argument("--model", default=str(REPO / "models" / "demo"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()

    rows = [{"id": i, "prompt": chatml(p), "max_tokens": args.max_tokens, "temperature": 0}
            for i, p in enumerate(problems(args.rows))]
    results = []
    for batch in (1, 8):
        peer = None
        for spec, k in (("none", 0), ("ngram", 2), ("ngram", 4)):
            extra = ["--max-batch", str(batch)] + ([] if spec == "none" else ["--spec", spec, "--num-draft-tokens", str(k)])
            stats, out = run(args.qed, args.model, rows, args.threads, *extra)
            label = "none" if spec == "none" else f"ngram-k{k}"
            if peer is None:
                peer = (stats, out)
            else:
                assert out == peer[1], f"{label} at batch {batch}: outputs differ from decoding without drafts"
            workload = f"demo_tir_{args.rows}x{args.max_tokens}_b{batch}"
            base = {"engine": "qed", "model": "demo", "precision": "fp32", "spec": label, "workload": workload}
            results.append({**base, "metric": "tok_per_s", "value": stats["tok_per_s"]})
            results.append({**base, "metric": "steps", "value": stats["steps"]})
            if spec != "none":
                sp = stats["speculation"]
                results.append({**base, "metric": "speedup", "value": stats["tok_per_s"] / peer[0]["tok_per_s"]})
                results.append({**base, "metric": "acceptance_rate", "value": sp["acceptance_rate"]})
                results.append({**base, "metric": "mean_accepted_length", "value": sp["mean_accepted_length"]})

    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    now = datetime.datetime.now(datetime.timezone.utc)
    report = {"provenance": {"git_sha": sha, "device": f"cpu ({platform.processor() or platform.machine()}, "
                                                        f"{args.threads} threads, shared 2-core machine under load)",
                             "driver": None, "cuda": None, "date": now.isoformat(timespec="seconds"),
                             "command": " ".join(["bench/spec/ngram_cpu.py", "--threads", str(args.threads), "--rows",
                                                  str(args.rows), "--max-tokens", str(args.max_tokens)])},
              "results": results}
    dest = REPO / "bench" / "results" / f"spec_ngram_cpu_demo_{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    dest.write_text(json.dumps(report, indent=1) + "\n")
    for r in results:
        print(f"{r['workload']:28s} {r['spec']:9s} {r['metric']:22s} {r['value']:.3f}")
    print(dest)


if __name__ == "__main__":
    main()
