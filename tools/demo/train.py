#!/usr/bin/env python3
"""Trains qed's bundled demo model (issue #12): a small Qwen2ForCausalLM on the synthetic tool-integrated math data
from make_data.py, then measures greedy held-out accuracy with tools (a real TIR loop: stop at </tool_call>, run the
code with Python, append the ```output block, continue) and without tools.

Runs on the GPU machine (torch + transformers):
    /opt/torch/.venv/bin/python tools/demo/train.py --data out/demo_data --tokenizer models/demo --out OUT_DIR
Writes OUT_DIR/model/ (config.json, model.safetensors in bf16, generation_config.json, tokenizer files),
OUT_DIR/loss.csv (one row per step), OUT_DIR/eval.json (accuracies, per family) and OUT_DIR/eval_samples.jsonl.

The data plumbing (conversation sampling, loss masks, answer extraction, the TIR loop's text handling) needs no
torch and is tested in tests/python/test_demo_data.py.
"""
import argparse
import concurrent.futures
import csv
import gzip
import json
import math
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_data  # noqa: E402

IGNORE = -100
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


# --- data plumbing (no torch) -------------------------------------------------------------------------------------


def read_jsonl(path: pathlib.Path) -> list:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def find_split(data_dir: pathlib.Path, split: str) -> pathlib.Path:
    for name in (f"{split}.jsonl", f"{split}.jsonl.gz"):
        if (data_dir / name).exists():
            return data_dir / name
    raise FileNotFoundError(f"{data_dir}: no {split}.jsonl(.gz); run tools/demo/make_data.py --out {data_dir}")


def sample_conversations(rows: list, seed: int, plain_fraction: float, bare_fraction: float) -> list:
    """One tool-integrated conversation per row (openmath/tir prompt, or the bare problem), plus a plain no-tool
    one for `plain_fraction` of the rows; system message absent (template default) or empty (NeMo-Skills) at
    random."""
    rng = random.Random(seed)
    convs = []
    for row in rows:
        mode = "bare" if rng.random() < bare_fraction else "tir"
        convs.append(make_data.chat_messages(row, mode, rng.choice([None, ""]), rng.randint(1, 8)))
        if rng.random() < plain_fraction:
            convs.append(make_data.chat_messages(row, "plain", rng.choice([None, ""])))
    rng.shuffle(convs)
    return convs


def supervised_spans(messages: list):
    """(text, spans): the rendered conversation and the character spans the loss is taken on: the assistant reply
    and its <|im_end|>, minus the ```output blocks (the sandbox writes those, not the model)."""
    prompt = make_data.render_chatml(messages[:-1], add_generation_prompt=True)
    reply = messages[-1]["content"]
    text = prompt + reply + "<|im_end|>\n"
    spans, pos, start = [], 0, len(prompt)
    while True:
        i = reply.find(make_data.CODE_OUTPUT_BEGIN, pos)
        if i < 0:
            break
        j = reply.find(make_data.CODE_OUTPUT_END, i + len(make_data.CODE_OUTPUT_BEGIN))
        if j < 0:
            raise ValueError(f"unterminated output block in {reply!r}")
        spans.append((start + pos, start + i))
        pos = j + len(make_data.CODE_OUTPUT_END)
    spans.append((start + pos, start + len(reply) + len("<|im_end|>")))
    return text, spans


def encode_examples(tokenizer, conversations: list) -> list:
    """[(input_ids, labels)]: labels = IGNORE outside the supervised spans (a token counts by its start offset)."""
    import numpy as np
    rendered = [supervised_spans(c) for c in conversations]
    out = []
    for enc, (_, spans) in zip(tokenizer.encode_batch([t for t, _ in rendered], add_special_tokens=False), rendered):
        ids = np.asarray(enc.ids, dtype=np.int64)
        starts = np.asarray([s for s, _ in enc.offsets], dtype=np.int64)
        bounds = np.asarray(spans, dtype=np.int64).reshape(-1)  # a0 b0 a1 b1 ...: inside iff odd insertion point
        inside = np.searchsorted(bounds, starts, side="right") % 2 == 1
        out.append((ids.tolist(), np.where(inside, ids, IGNORE).tolist()))
    return out


def extract_boxed(text: str):
    """Content of the last \\boxed{...} with balanced braces (NeMo-Skills search_boxed), or None."""
    idx = text.rfind("\\boxed")
    if idx < 0 or not text.startswith("\\boxed{", idx):
        return None
    depth, start = 0, idx + len("\\boxed{")
    for k in range(start - 1, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[start:k]
    return None


def pending_code(generation: str):
    """The code to run if `generation` ends with a tool call (NeMo-Skills: ends with code_end and the last
    code_begin comes after the previous code_end), else None."""
    if not generation.endswith(make_data.CODE_END):
        return None
    begin = generation.rfind(make_data.CODE_BEGIN)
    if begin < 0 or begin < generation.rfind(make_data.CODE_END, 0, len(generation) - len(make_data.CODE_END)):
        return None
    return generation[begin + len(make_data.CODE_BEGIN):-len(make_data.CODE_END)]


def execute(code: str, timeout: float = 10.0, max_chars: int = 1000) -> str:
    """Runs code in a fresh python3 and returns stdout + stderr the way NeMo-Skills shows it to the model."""
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
        out, err = res.stdout, res.stderr
    except subprocess.TimeoutExpired:
        out, err = "", f"Execution timed out after {timeout} seconds\n"
    clip = lambda s: s[:max_chars] + "<output cut>" if len(s) > max_chars else s  # noqa: E731
    return clip(out) + clip(err)


# --- torch part ---------------------------------------------------------------------------------------------------


def model_config(vocab_size: int, eos_id: int, pad_id: int, args):
    from transformers import Qwen2Config
    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=1024, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id, use_cache=True)


def batches(examples: list, max_tokens: int, rng: random.Random):
    """Length-bucketed batches of at most max_tokens (padded) tokens, in random order."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][0]), rng.random()))
    out, cur, cur_max = [], [], 0
    for i in order:
        n = len(examples[i][0])
        if cur and max(cur_max, n) * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur, cur_max = [], 0
        cur.append(i)
        cur_max = max(cur_max, n)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(torch, examples, idx, pad_id, device):
    width = max(len(examples[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), IGNORE, dtype=torch.long)
    for r, i in enumerate(idx):
        x, y = examples[i]
        ids[r, :len(x)] = torch.tensor(x)
        labels[r, :len(y)] = torch.tensor(y)
    return ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def generate_greedy(torch, model, tokenizer, prompts: list, stop_ids: list, pad_id: int, max_new: int, device):
    """Greedy continuation of each token list, stopping at any of stop_ids (kept) or max_new tokens."""
    outs = [None] * len(prompts)
    chunk = 512
    for c0 in range(0, len(prompts), chunk):
        part = prompts[c0:c0 + chunk]
        width = max(len(p) for p in part)
        ids = torch.full((len(part), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for r, p in enumerate(part):  # left padding
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new,
                                 do_sample=False, eos_token_id=stop_ids, pad_token_id=pad_id)
        for r in range(len(part)):
            new = gen[r, width:].tolist()
            for k, t in enumerate(new):
                if t in stop_ids:
                    new = new[:k + 1]
                    break
            outs[c0 + r] = new
    return outs


def evaluate(torch, model, tokenizer, rows: list, mode: str, system, use_tools: bool, ids: dict, device,
             max_rounds: int = 4, max_new: int = 256):
    """Greedy accuracy on rows. With tools, each round stops at </tool_call> or <|im_end|>; a finished tool call is
    executed and its output block appended before the next round (at most max_rounds code calls)."""
    prompts = [tokenizer.encode(make_data.render_chatml(make_data.chat_messages(r, mode, system)[:-1],
                                                        add_generation_prompt=True), add_special_tokens=False).ids
               for r in rows]
    gens = [[] for _ in rows]
    active = list(range(len(rows)))
    stop_ids = [ids["im_end"], ids["tool_end"]] if use_tools else [ids["im_end"]]
    calls = [0] * len(rows)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 4))
    for _ in range(max_rounds + 1):
        if not active:
            break
        outs = generate_greedy(torch, model, tokenizer, [prompts[i] + gens[i] for i in active], stop_ids,
                               ids["pad"], max_new, device)
        to_run = []
        for i, new in zip(active, outs):
            gens[i] += new
            if use_tools and new and new[-1] == ids["tool_end"] and calls[i] < max_rounds:
                code = pending_code(tokenizer.decode(gens[i], skip_special_tokens=False))
                if code is not None:
                    to_run.append((i, code))
        results = list(pool.map(lambda ic: execute(ic[1]), to_run))
        for (i, _), out in zip(to_run, results):
            gens[i] += tokenizer.encode(make_data.format_output_block(out), add_special_tokens=False).ids
            calls[i] += 1
        active = [i for i, _ in to_run]
    pool.shutdown()
    samples, per_family = [], {}
    for r, g, n_calls in zip(rows, gens, calls):
        text = tokenizer.decode(g, skip_special_tokens=False)
        pred = extract_boxed(text)
        ok = pred is not None and pred.strip() == r["expected_answer"]
        fam = per_family.setdefault(r["family"], [0, 0])
        fam[0] += ok
        fam[1] += 1
        samples.append(dict(id=r["id"], family=r["family"], problem=r["problem"], expected=r["expected_answer"],
                            predicted=pred, correct=ok, code_calls=n_calls, generation=text))
    acc = sum(s["correct"] for s in samples) / max(1, len(samples))
    return acc, {k: v[0] / v[1] for k, v in sorted(per_family.items())}, samples


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=pathlib.Path, help="folder with train/heldout.jsonl(.gz)")
    ap.add_argument("--tokenizer", required=True, type=pathlib.Path, help="folder with tokenizer.json")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--max-steps", type=int, default=20000)
    ap.add_argument("--time-budget", type=float, default=300.0,
                    help="seconds of training; the step count is fixed from the speed of the first steps")
    ap.add_argument("--plain-fraction", type=float, default=0.5)
    ap.add_argument("--bare-fraction", type=float, default=0.25)
    ap.add_argument("--eval-rows", type=int, default=750)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    ap.add_argument("--max-new", type=int, default=256, help="token limit of each generation round in the eval")
    args = ap.parse_args(argv)

    import torch
    from tokenizers import Tokenizer
    from transformers import Qwen2ForCausalLM

    t_start = time.time()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = args.device
    tokenizer = Tokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    ids = dict(im_end=tokenizer.token_to_id("<|im_end|>"), pad=tokenizer.token_to_id("<|endoftext|>"),
               tool_end=tokenizer.token_to_id("</tool_call>"))
    train_rows = read_jsonl(find_split(args.data, "train"))
    heldout_rows = read_jsonl(find_split(args.data, "heldout"))
    convs = sample_conversations(train_rows, args.seed, args.plain_fraction, args.bare_fraction)
    examples = encode_examples(tokenizer, convs)
    n_tokens = sum(len(x) for x, _ in examples)
    n_supervised = sum(sum(1 for t in y if t != IGNORE) for _, y in examples)
    print(f"train rows {len(train_rows)}, conversations {len(examples)}, tokens {n_tokens}, supervised "
          f"{n_supervised}, max len {max(len(x) for x, _ in examples)}, prep {time.time() - t_start:.1f}s", flush=True)

    # Embedding rows padded to a multiple of 64 (as Qwen2.5 pads 151665 tokens to 151936 rows).
    config = model_config(-(-tokenizer.get_vocab_size() // 64) * 64, ids["im_end"], ids["pad"], args)
    model = Qwen2ForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=device == "cuda")

    rng = random.Random(args.seed)
    epoch_batches, step, total_steps, t_train = [], 0, args.max_steps, time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    loss_file = open(args.out / "loss.csv", "w", newline="")
    log = csv.writer(loss_file)
    log.writerow(["step", "lr", "loss", "tokens", "elapsed_s"])
    model.train()
    while step < total_steps:
        if not epoch_batches:
            epoch_batches = batches(examples, args.batch_tokens, rng)
        idx = epoch_batches.pop()
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        else:
            frac = (step - args.warmup) / max(1, total_steps - args.warmup)
            lr = args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = collate(torch, examples, idx, ids["pad"], device)
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                                                 y[:, 1:].reshape(-1), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step in (10, 40):  # fix the schedule length from the speed of steps 11-40 (after CUDA start-up)
            if device == "cuda":
                torch.cuda.synchronize()
            if step == 10:
                t_10 = time.time()
            else:
                per_step = (time.time() - t_10) / 30
                fit = step + int((args.time_budget - (time.time() - t_train)) / per_step)
                total_steps = min(args.max_steps, max(args.warmup + 100, fit))
                print(f"{per_step * 1000:.1f} ms/step -> {total_steps} steps", flush=True)
        if step % 10 == 0 or step == total_steps:
            lv = loss.item()
            log.writerow([step, f"{lr:.6g}", f"{lv:.5f}", int(x.numel()), f"{time.time() - t_train:.1f}"])
            loss_file.flush()
            if step % 200 == 0:
                print(f"step {step}/{total_steps} loss {lv:.4f} lr {lr:.2e} {time.time() - t_train:.0f}s", flush=True)
    loss_file.close()
    train_s = time.time() - t_train

    model.eval()
    model_dir = args.out / "model"
    model.to(torch.bfloat16).save_pretrained(model_dir)  # safetensors is the default format
    for name in TOKENIZER_FILES:
        shutil.copy(args.tokenizer / name, model_dir / name)
    (model_dir / "generation_config.json").write_text(json.dumps({
        "bos_token_id": ids["pad"], "eos_token_id": [ids["im_end"], ids["pad"]], "pad_token_id": ids["pad"],
        "do_sample": False}, indent=2) + "\n")

    eval_rows = heldout_rows[:args.eval_rows]
    results, all_samples = {}, []
    for name, mode, system, tools in (("tir_with_tools", "tir", "", True), ("bare_with_tools", "bare", None, True),
                                      ("plain_without_tools", "plain", "", False)):
        t0 = time.time()
        acc, fam, samples = evaluate(torch, model, tokenizer, eval_rows, mode, system, tools, ids, device,
                                     max_new=args.max_new)
        results[name] = dict(accuracy=acc, per_family=fam, n=len(samples), seconds=round(time.time() - t0, 1))
        all_samples += [dict(s, setting=name) for s in samples]
        print(f"{name}: {acc:.4f} on {len(samples)} held-out ({time.time() - t0:.0f}s) {fam}", flush=True)
    summary = dict(params=n_params, train_rows=len(train_rows), conversations=len(examples), tokens=n_tokens,
                   supervised_tokens=n_supervised, steps=step, train_seconds=round(train_s, 1),
                   final_loss=float(loss.item()), seed=args.seed, args={k: str(v) for k, v in vars(args).items()},
                   torch=torch.__version__,
                   device=torch.cuda.get_device_name() if device == "cuda" else device, results=results)
    (args.out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(args.out / "eval_samples.jsonl", "w") as f:
        for s in all_samples:
            f.write(json.dumps(s) + "\n")
    print(f"total {time.time() - t_start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
