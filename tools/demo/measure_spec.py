#!/usr/bin/env python3
"""Acceptance length and CPU speed of speculative decoding on the demo model (models/demo/README.md).

The model's own part of a tool-integrated answer, on held-out problems, greedy, one sequence at a time (the
latency case speculative decoding is for):
  round 1: the chat prompt -> reasoning sentence + <tool_call> code </tool_call>  (stops on token 980)
  round 2: the prompt + that solution through the sandbox's output block -> the final \\boxed{} sentence (to eos)
Each configuration runs `qed batch --max-batch 1` over the same rows; outputs must be token-identical to no
speculation. Prints one JSON object per configuration and a markdown table.

    python3 tools/demo/measure_spec.py --qed build/qed --heldout DATA/heldout.jsonl --drafter models/demo/redrafter
"""
import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_data  # noqa: E402

TOOL_CALL_END = 980  # </tool_call> in the demo tokenizer


def rows_for(heldout: pathlib.Path, n: int) -> list:
    rows = []
    for line in heldout.read_text().splitlines()[:n]:
        r = json.loads(line)
        prompt = make_data.render_chatml([{"role": "user", "content": r["problem"]}], add_generation_prompt=True)
        rows.append({"id": f"{r['id']}-1", "prompt": prompt, "max_tokens": 160, "temperature": 0,
                     "stop_token_ids": [TOOL_CALL_END]})
        sol = r["tir_solution"]
        cut = sol.index(make_data.CODE_OUTPUT_END, sol.index(make_data.CODE_OUTPUT_BEGIN) + 1)
        rows.append({"id": f"{r['id']}-2", "prompt": prompt + sol[:cut + len(make_data.CODE_OUTPUT_END)],
                     "max_tokens": 96, "temperature": 0})
    return rows


def run(qed: str, model: str, rows_path: pathlib.Path, out_dir: pathlib.Path, label: str, threads: int, extra):
    out, stats = out_dir / f"{label}.jsonl", out_dir / f"{label}.stats.json"
    out.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([qed, "batch", "--model", model, "--input", str(rows_path), "--output", str(out), "--threads",
                    str(threads), "--max-batch", "1", "--stats", str(stats), *extra],
                   check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    outputs = {json.loads(l)["id"]: json.loads(l)["token_ids"] for l in out.read_text().splitlines()}
    summary = json.loads(stats.read_text())
    # CPU seconds of the whole qed process (model load included): with --threads 1 this is less sensitive than
    # the wall time to other work on a shared machine.
    summary["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return outputs, summary


def bench_document(args, results, argv) -> dict:
    import datetime
    import platform
    version = subprocess.run([args.qed, "--version"], capture_output=True, text=True).stdout.strip()
    sha = version[version.find("(") + 1:version.find(")")] if "(" in version else version
    base, base_cpu = results[0]["tok_per_s"], results[0]["tok_per_cpu_s"]
    rows = []
    for r in results:
        method, _, shape = r["config"].partition(":")
        spec = "none" if method == "none" else f"{method}-{shape}"
        for metric, value in (("tok_per_s", r["tok_per_s"]), ("tok_per_cpu_s", r["tok_per_cpu_s"]),
                              ("speedup", r["tok_per_s"] / base), ("speedup_cpu_s", r["tok_per_cpu_s"] / base_cpu),
                              ("mean_accepted_length", r["mean_accepted_length"]),
                              ("acceptance_rate", r["acceptance_rate"])):
            rows.append({"engine": "qed", "model": "demo", "precision": "fp32", "spec": spec,
                         "workload": f"demo_tir_rounds_{args.problems}x2_b1_t{args.threads}", "metric": metric,
                         "value": value})
    provenance = {"git_sha": sha, "device": f"cpu ({platform.processor() or platform.machine()}, "
                  f"{args.threads} thread)", "driver": None, "cuda": None,
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(["tools/demo/measure_spec.py", *(argv if argv is not None else sys.argv[1:])])}
    return {"provenance": provenance, "results": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qed", default="build/qed")
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--heldout", required=True, type=pathlib.Path)
    ap.add_argument("--drafter", default="models/demo/redrafter")
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default="none,redrafter:1x3,redrafter:4x3,ngram:3",
                    help="none | redrafter:BEAMSxLEN | ngram:K, comma separated")
    ap.add_argument("--json-out", type=pathlib.Path)
    ap.add_argument("--bench-out", type=pathlib.Path,
                    help="also write a bench result (shared/design.md format) for qed bench report")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        rows_path = tmp / "rows.jsonl"
        rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows_for(args.heldout, args.problems)))
        results, reference = [], None
        for config in args.configs.split(","):
            method, _, shape = config.partition(":")
            extra = []
            if method == "redrafter":
                beams, length = shape.split("x")
                extra = ["--spec", "redrafter", "--drafter", args.drafter, "--num-beams", beams,
                         "--num-draft-tokens", length]
            elif method == "ngram":
                extra = ["--spec", "ngram", "--num-draft-tokens", shape]
            outputs, stats = run(args.qed, args.model, rows_path, tmp, config.replace(":", "_"), args.threads, extra)
            if reference is None:
                reference = outputs
            spec = stats["speculation"]
            result = {"config": config, "rows": stats["rows"], "generated_tokens": stats["generated_tokens"],
                      "wall_s": round(stats["wall_s"], 2), "tok_per_s": round(stats["tok_per_s"], 1),
                      "cpu_s": round(stats["cpu_s"], 2),
                      "tok_per_cpu_s": round(stats["generated_tokens"] / stats["cpu_s"], 1),
                      "mean_accepted_length": round(spec["mean_accepted_length"], 3),
                      "acceptance_rate": round(spec["acceptance_rate"], 3),
                      "identical_to_none": outputs == reference}
            results.append(result)
            print(json.dumps(result), flush=True)
    base, base_cpu = results[0]["tok_per_s"], results[0]["tok_per_cpu_s"]
    print("\n| config | tokens | wall s | tok/s | speedup (wall) | CPU s | speedup (CPU) | mean accepted length | "
          "draft acceptance | same output |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['config']} | {r['generated_tokens']} | {r['wall_s']} | {r['tok_per_s']} | "
              f"{r['tok_per_s'] / base:.2f}x | {r['cpu_s']} | {r['tok_per_cpu_s'] / base_cpu:.2f}x | "
              f"{r['mean_accepted_length']} | {r['acceptance_rate']} | {'yes' if r['identical_to_none'] else 'NO'} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    if args.bench_out:
        args.bench_out.write_text(json.dumps(bench_document(args, results, argv), indent=1) + "\n")
    return 0 if all(r["identical_to_none"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
