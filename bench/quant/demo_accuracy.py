#!/usr/bin/env python3
"""FP8 / int8 weight-only vs bf16 on the demo model, on qed's CPU backend (issue 6, accuracy):
  * teacher-forced logits on the reference tool-integrated solutions of held-out problems: mean KL(bf16 || quant)
    per position and top-1 agreement;
  * greedy task accuracy with tools on the same problems (the TIR loop of tools/demo/train.py::evaluate, driven
    through `qed generate`: stop at </tool_call>, run the code, append the output block, continue; 4 calls at most).
Writes one JSON (bench/results schema, plus per-problem rows) and prints a table.

    .venv/bin/python bench/quant/demo_accuracy.py --qed build/qed --problems 45 --out bench/results/quant_demo_cpu.json
"""
import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import tokenizers
from safetensors.numpy import load_file

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo"
sys.path.insert(0, str(REPO / "tools" / "demo"))
import make_data  # noqa: E402
import train  # noqa: E402  (its TIR helpers need no torch)


def qed(args, *rest, timeout=600):
    res = subprocess.run([args.qed, *map(str, rest)], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise SystemExit(f"qed {' '.join(map(str, rest[:1]))} failed: {res.stderr.strip()}")
    return res.stdout


def greedy(args, model, ids, max_new):
    out = qed(args, "generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)), "--max-tokens", max_new,
              "--temperature", 0, "--json", "--threads", args.threads)
    return json.loads(out)["token_ids"]


def solve(args, model, tok, row, tool_end, im_end):
    """One problem, greedy, with tools: the loop of train.evaluate for one row."""
    prompt = tok.encode(make_data.render_chatml(make_data.chat_messages(row, "tir", "")[:-1],
                                                add_generation_prompt=True), add_special_tokens=False).ids
    gen, calls = [], 0
    for _ in range(args.max_rounds + 1):
        new = greedy(args, model, prompt + gen, args.max_new)
        stop = next((i for i, t in enumerate(new) if t in (tool_end, im_end)), None)
        if stop is not None:
            new = new[:stop + 1]
        gen += new
        if not new or new[-1] != tool_end or calls >= args.max_rounds:
            break
        code = train.pending_code(tok.decode(gen, skip_special_tokens=False))
        if code is None:
            break
        gen += tok.encode(make_data.format_output_block(train.execute(code)), add_special_tokens=False).ids
        calls += 1
    text = tok.decode(gen, skip_special_tokens=False)
    pred = train.extract_boxed(text)
    return pred is not None and pred.strip() == row["expected_answer"], pred


def logits(args, model, ids, path):
    qed(args, "logits", "--model", model, "--prompt-ids", ",".join(map(str, ids)), "--out", path, "--threads",
        args.threads)
    z = load_file(str(path))["logits"].astype(np.float64)
    return z - np.logaddexp.reduce(z, axis=1, keepdims=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qed", default=str(REPO / "build" / "qed"))
    ap.add_argument("--problems", type=int, default=45, help="held-out problems (spread over the 15 families)")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-rounds", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=160)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()

    tok = tokenizers.Tokenizer.from_file(str(DEMO / "tokenizer.json"))
    tool_end, im_end = tok.token_to_id("</tool_call>"), tok.token_to_id("<|im_end|>")
    rows = make_data.generate(seed=args.seed, n_train=0, n_heldout=args.problems)["heldout"][:args.problems]
    work = pathlib.Path(tempfile.mkdtemp(prefix="qed_quant_demo_"))
    variants = {"bf16": DEMO}
    for name, flags in [("fp8", ["--dtype", "fp8"]), ("fp8+kv", ["--dtype", "fp8", "--kv-cache", "fp8"]),
                        ("int8_wo", ["--dtype", "int8_wo"])]:
        out = work / name.replace("+", "_")
        qed(args, "quantize", "--model", DEMO, "--out", out, "--calib-samples", args.calib_samples, "--threads",
            args.threads, "--quiet", *flags)
        variants[name] = out

    refs = [tok.encode(make_data.render_chatml(make_data.chat_messages(r, "tir", "")), add_special_tokens=False).ids
            for r in rows]
    base = [logits(args, DEMO, ids, work / f"bf16_{i}.safetensors") for i, ids in enumerate(refs)]
    summary, per_problem = {}, []
    for name, model in variants.items():
        kl, agree = [], []
        if name != "bf16":
            for i, ids in enumerate(refs):
                lq = logits(args, model, ids, work / f"q_{i}.safetensors")
                kl.extend((np.exp(base[i]) * (base[i] - lq)).sum(axis=1))
                agree.extend(base[i].argmax(axis=1) == lq.argmax(axis=1))
        correct = 0
        for r in rows:
            ok, pred = solve(args, model, tok, r, tool_end, im_end)
            correct += ok
            per_problem.append({"precision": name, "id": r["id"], "family": r["family"], "expected": r["expected_answer"],
                                "predicted": pred, "correct": bool(ok)})
        summary[name] = {"accuracy": correct / len(rows), "correct": correct,
                         "kl_mean": float(np.mean(kl)) if kl else 0.0, "kl_max": float(np.max(kl)) if kl else 0.0,
                         "top1_agreement": float(np.mean(agree)) if agree else 1.0, "positions": len(kl)}
        print(f"{name:8s} accuracy {correct}/{len(rows)}  KL mean {summary[name]['kl_mean']:.2e} "
              f"max {summary[name]['kl_max']:.2e}  top-1 {summary[name]['top1_agreement']:.4f}", flush=True)

    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    results = []
    for name, s in summary.items():
        for metric in ("accuracy", "kl_mean", "top1_agreement"):
            results.append({"engine": "qed", "model": "demo", "precision": name.replace("+kv", "_kvfp8"), "spec": "none",
                            "workload": f"demo_heldout_tir_{len(rows)}", "metric": metric, "value": s[metric]})
    report = {"provenance": {"git_sha": sha, "device": "cpu (shared 2-core machine)", "driver": None, "cuda": None,
                             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             "command": " ".join(sys.argv)},
              "results": results, "summary": summary, "problems": per_problem}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
