#!/usr/bin/env python3
"""The HF transformers peer of `qed bench offline`: the same workloads on the same GPU, written in the same bench
JSON schema (shared/design.md "Formats", engine "hf-transformers"), optionally merged into qed's result file so
the peer and qed sit in one file from one run.

  python tools/hf_peer_bench.py --config bench/configs/qwen2.5-14b-shape/config.json \
      --workloads decode_b1,decode_b8,decode_b32,ttft_1k,ttft_8k,aimo_12x4500 --merge-into bench/results/x.json

Random weights (from the config) or a checkpoint (--model). Needs torch + transformers with a CUDA GPU; not part
of CI (tools/requirements-test.txt does not list torch).

Measurement, matching qed's definitions:
  decode_b<N>: N random prompts of --context tokens; generate --decode-tokens greedily (EOS ignored through
               min_new_tokens); tok/s = N * (T - 1) / (t(T tokens) - t(1 token)), i.e. decode after prefill.
  ttft_<N>:    one forward over N random tokens plus the argmax, median of --ttft-repeats.
  aimo_<S>x<T>: one random prompt of --aimo-prompt-tokens, S samples (num_return_sequences, temperature 0.7),
               T tokens each, EOS ignored; total_s, batch_tok_per_s = S*T/total_s, per_sample_tok_per_s = T/total_s.
"""
import argparse
import datetime
import json
import re
import statistics
import subprocess
import sys
import time


def parse_count(text):
    return int(text[:-1]) * 1024 if text.endswith("k") else int(text)


def parse_workload(name):
    if m := re.fullmatch(r"decode_b(\d+)", name):
        return ("decode", int(m.group(1)), None)
    if m := re.fullmatch(r"ttft_(\d+k?)", name):
        return ("ttft", parse_count(m.group(1)), None)
    if m := re.fullmatch(r"aimo_(\d+)x(\d+)", name):
        return ("aimo", int(m.group(1)), int(m.group(2)))
    sys.exit(f"hf_peer_bench: unknown workload '{name}' (decode_b<N>, ttft_<N>[k], aimo_<S>x<T>)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="HF config.json: random weights of that shape")
    src.add_argument("--model", help="checkpoint directory")
    ap.add_argument("--model-name", help="name in the results (default: the config's/model's folder)")
    ap.add_argument("--workloads", default="decode_b1,decode_b8,decode_b32,ttft_1k,ttft_8k,aimo_12x4500")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--decode-tokens", type=int, default=256)
    ap.add_argument("--aimo-prompt-tokens", type=int, default=200)
    ap.add_argument("--ttft-repeats", type=int, default=3)
    ap.add_argument("--attn-implementation", default="sdpa", help="sdpa | eager | flash_attention_2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", help="write the bench JSON here")
    ap.add_argument("--merge-into", help="append the results to this qed bench JSON (peer in the same file)")
    args = ap.parse_args()

    import pathlib

    import torch
    import transformers

    torch.manual_seed(args.seed)
    dev = torch.device("cuda")
    if args.config:
        cfg = transformers.AutoConfig.from_pretrained(str(pathlib.Path(args.config).parent))
        with dev:
            model = transformers.AutoModelForCausalLM.from_config(
                cfg, torch_dtype=torch.bfloat16, attn_implementation=args.attn_implementation)
        name = args.model_name or pathlib.Path(args.config).parent.name
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            args.model, torch_dtype=torch.bfloat16, attn_implementation=args.attn_implementation).to(dev)
        cfg = model.config
        name = args.model_name or pathlib.Path(args.model).name
    model.eval()
    vocab = cfg.vocab_size

    def prompt(batch, length):
        return torch.randint(0, vocab, (batch, length), device=dev)

    def timed_generate(ids, tokens, **kw):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                           pad_token_id=0, **kw)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    timed_generate(prompt(1, 16), 4, do_sample=False)  # warm-up (kernels, allocator)
    results = []

    def add(workload, metric, value):
        print(f"{workload:<16} {metric:<22} {value:12.3f}", flush=True)
        results.append({"engine": "hf-transformers", "backend": f"torch-{args.attn_implementation}", "model": name,
                        "precision": "bf16", "spec": "none", "workload": workload, "metric": metric,
                        "value": float(value)})

    for workload in args.workloads.split(","):
        kind, a, b = parse_workload(workload)
        if kind == "decode":
            ids = prompt(a, args.context)
            t1 = timed_generate(ids, 1, do_sample=False)
            t_all = timed_generate(ids, args.decode_tokens, do_sample=False)
            tok_per_s = a * (args.decode_tokens - 1) / (t_all - t1)
            add(workload, "tok_per_s", tok_per_s)
            add(workload, "per_seq_tok_per_s", tok_per_s / a)
        elif kind == "ttft":
            times = []
            for _ in range(args.ttft_repeats):
                ids = prompt(1, a)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.no_grad():
                    model(ids).logits[:, -1].argmax(-1).item()
                times.append((time.perf_counter() - t0) * 1e3)
            add(workload, "ttft_ms", statistics.median(times))
        else:
            ids = prompt(1, args.aimo_prompt_tokens)
            total = timed_generate(ids, b, do_sample=True, temperature=0.7, num_return_sequences=a)
            add(workload, "total_s", total)
            add(workload, "batch_tok_per_s", a * b / total)
            add(workload, "per_sample_tok_per_s", b / total)

    def git_sha():
        try:
            return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    provenance = {"git_sha": git_sha(), "device": torch.cuda.get_device_name(0), "driver": None,
                  "cuda": torch.version.cuda, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  "command": " ".join(sys.argv), "torch": torch.__version__,
                  "transformers": transformers.__version__}
    doc = {"provenance": provenance, "results": results}
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(doc, indent=1) + "\n")
    if args.merge_into:
        path = pathlib.Path(args.merge_into)
        merged = json.loads(path.read_text())
        # The same tree as the qed run it joins; its binary knows its commit, while this checkout may be a copy
        # whose git history is stale (the GPU box).
        provenance["git_sha"] = merged.get("provenance", {}).get("git_sha", provenance["git_sha"])
        merged["results"].extend(results)
        merged.setdefault("peer_provenance", []).append(provenance)
        path.write_text(json.dumps(merged, indent=1) + "\n")
        print(f"merged into {path}")


if __name__ == "__main__":
    main()
