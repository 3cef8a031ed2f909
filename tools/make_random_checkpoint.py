#!/usr/bin/env python3
"""Write a random-weight bf16 Hugging Face checkpoint of a given config.json (Qwen2 / Llama), sharded as HF does.

For measuring `qed quantize` and the engine on a model's real shapes without its weights (the GPU box has no
internet): e.g. bench/configs/qwen2.5-14b-shape/config.json gives 28 GB of bf16 in ~4 GB shards plus
model.safetensors.index.json. Weights are N(0, initializer_range) (0.02 by default, HF's init), q/k/v biases
(Qwen2) the same, norms 1: activations stay O(1) through the layers, so calibration scales are meaningful numbers.

Generated on the GPU with torch when it is there (`--backend torch`, the default when torch imports), written with
safetensors; `--backend numpy` needs only numpy + safetensors (slow: for small configs and the tests).
`--tokenizer DIR` copies tokenizer.json (+ tokenizer_config.json etc.) after checking every token id fits the
config's vocab_size. Same --seed, same bytes (per backend: torch's and numpy's generators differ).

  python tools/make_random_checkpoint.py --config bench/configs/qwen2.5-14b-shape/config.json \\
      --out /tmp/qwen14b-random --tokenizer ../shared/data/tokenizers/qwen3
"""
import argparse
import json
import os
import shutil
import sys
import time

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "chat_template.jinja", "generation_config.json")


def fail(message):
    print(f"make_random_checkpoint: {message}", file=sys.stderr)
    sys.exit(2)


def tensor_specs(config):
    """(name, shape, kind) of every tensor HF's Qwen2ForCausalLM / LlamaForCausalLM has, in checkpoint order."""
    try:
        model_type = config.get("model_type", "")
        hidden = int(config["hidden_size"])
        inter = int(config["intermediate_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads", heads))
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        fail(f"config.json: missing or bad field ({e})")
    if model_type not in ("qwen2", "llama"):
        fail(f"config.json: model_type '{model_type}' is not qwen2 or llama")
    head_dim = int(config.get("head_dim") or hidden // heads)
    qwen2 = model_type == "qwen2"
    attention_bias = True if qwen2 else bool(config.get("attention_bias", False))
    mlp_bias = False if qwen2 else bool(config.get("mlp_bias", False))
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim

    specs = [("model.embed_tokens.weight", (vocab, hidden), "weight")]
    for layer in range(layers):
        p = f"model.layers.{layer}."
        specs.append((p + "input_layernorm.weight", (hidden,), "norm"))
        for name, out_dim, in_dim in (("q_proj", q_dim, hidden), ("k_proj", kv_dim, hidden),
                                      ("v_proj", kv_dim, hidden), ("o_proj", hidden, q_dim)):
            specs.append((p + f"self_attn.{name}.weight", (out_dim, in_dim), "weight"))
            if attention_bias and (name != "o_proj" or not qwen2):
                specs.append((p + f"self_attn.{name}.bias", (out_dim,), "weight"))
        specs.append((p + "post_attention_layernorm.weight", (hidden,), "norm"))
        for name, out_dim, in_dim in (("gate_proj", inter, hidden), ("up_proj", inter, hidden),
                                      ("down_proj", hidden, inter)):
            specs.append((p + f"mlp.{name}.weight", (out_dim, in_dim), "weight"))
            if mlp_bias:
                specs.append((p + f"mlp.{name}.bias", (out_dim,), "weight"))
    specs.append(("model.norm.weight", (hidden,), "norm"))
    if not config.get("tie_word_embeddings", False):
        specs.append(("lm_head.weight", (vocab, hidden), "weight"))
    return specs


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def shard_plan(specs, shard_bytes):
    """Consecutive tensors grouped into shards of at most shard_bytes (one tensor larger than that is alone)."""
    shards, current, size = [], [], 0
    for spec in specs:
        nbytes = 2 * numel(spec[1])
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(spec)
        size += nbytes
    if current:
        shards.append(current)
    return shards


class TorchGenerator:
    def __init__(self, seed, device):
        import torch
        self.torch = torch
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def make(self, shape, kind, std):
        torch = self.torch
        if kind == "norm":
            return torch.ones(shape, dtype=torch.bfloat16)
        t = torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float32)
        return t.mul_(std).to(torch.bfloat16).cpu()

    def save(self, tensors, path):
        from safetensors.torch import save_file
        save_file(tensors, path, metadata={"format": "pt"})


class NumpyGenerator:
    def __init__(self, seed):
        import numpy as np
        self.np = np
        self.rng = np.random.default_rng(seed)

    def make(self, shape, kind, std):
        np = self.np
        if kind == "norm":
            return np.full(shape, 0x3F80, dtype=np.uint16)  # bf16 1.0
        bits = (self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).view(np.uint32)
        # fp32 → bf16, round to nearest even (no NaNs from a normal sample)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)

    def save(self, tensors, path):
        # safetensors' own serializer, given bf16 bit patterns (numpy has no bfloat16): TensorSpec views since 0.6,
        # dicts with the bytes before.
        import safetensors
        spec = getattr(safetensors, "TensorSpec", None)
        if spec is not None:
            flat = {name: spec(dtype="bfloat16", shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
                    for name, a in tensors.items()}
        else:
            flat = {name: {"dtype": "bfloat16", "shape": list(a.shape), "data": a.tobytes()}
                    for name, a in tensors.items()}
        safetensors.serialize_file(flat, path, metadata={"format": "pt"})


def copy_tokenizer(tokenizer_dir, out_dir, vocab_size):
    path = os.path.join(tokenizer_dir, "tokenizer.json")
    if not os.path.isfile(path):
        fail(f"{tokenizer_dir}: no tokenizer.json")
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    vocab = tok.get("model", {}).get("vocab", {})
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))
    ids += [t["id"] for t in tok.get("added_tokens", [])]
    largest = max(ids) if ids else -1
    if largest >= vocab_size:
        fail(f"{path}: token id {largest} does not fit the config's vocab_size {vocab_size}")
    for name in TOKENIZER_FILES:
        src = os.path.join(tokenizer_dir, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(out_dir, name))
    return largest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config.json of the model shape")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--tokenizer", help="directory with tokenizer.json to copy (checked against vocab_size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-gb", type=float, default=4.0, help="shard size in GB (1e9 bytes)")
    parser.add_argument("--std", type=float, help="weight std (default: config initializer_range or 0.02)")
    parser.add_argument("--backend", choices=("auto", "torch", "numpy"), default="auto")
    parser.add_argument("--device", default="cuda", help="torch device to generate on (cuda, cpu)")
    args = parser.parse_args()

    try:
        with open(args.config, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{args.config}: {e}")
    if not isinstance(config, dict):
        fail(f"{args.config}: not a JSON object")
    if args.shard_gb <= 0:
        fail(f"--shard-gb must be positive, got {args.shard_gb}")
    std = args.std if args.std is not None else float(config.get("initializer_range", 0.02))
    specs = tensor_specs(config)

    backend = args.backend
    if backend == "auto":
        try:
            import torch  # noqa: F401
            backend = "torch"
        except ImportError:
            backend = "numpy"
    if backend == "torch":
        import torch
        device = args.device if args.device != "cuda" or torch.cuda.is_available() else "cpu"
        gen = TorchGenerator(args.seed, device)
    else:
        gen = NumpyGenerator(args.seed)

    os.makedirs(args.out, exist_ok=True)
    largest = copy_tokenizer(args.tokenizer, args.out, int(config["vocab_size"])) if args.tokenizer else None
    out_config = dict(config)
    out_config.setdefault("torch_dtype", "bfloat16")
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(out_config, f, indent=2)
        f.write("\n")

    for stale in os.listdir(args.out):  # an earlier run's shards would sit beside (or shadow) these
        if stale == "model.safetensors" or (stale.startswith("model-") and stale.endswith(".safetensors")):
            os.remove(os.path.join(args.out, stale))
    shards = shard_plan(specs, int(args.shard_gb * 1e9))
    total = sum(2 * numel(s[1]) for s in specs)
    weight_map, written, start = {}, 0, time.time()
    for index, shard in enumerate(shards):
        name = "model.safetensors" if len(shards) == 1 else f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for tensor_name, shape, kind in shard:
            tensors[tensor_name] = gen.make(shape, kind, std)
            weight_map[tensor_name] = name
            written += 2 * numel(shape)
        gen.save(tensors, os.path.join(args.out, name))
        del tensors
        print(f"\r{name}: {written / 1e9:.2f}/{total / 1e9:.2f} GB, {time.time() - start:.1f} s", end="",
              file=sys.stderr, flush=True)
    print(file=sys.stderr)
    index_path = os.path.join(args.out, "model.safetensors.index.json")
    if len(shards) > 1:
        with open(index_path, "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
            f.write("\n")
    elif os.path.exists(index_path):
        os.remove(index_path)
    summary = {"out": args.out, "backend": backend, "tensors": len(specs), "bytes": total, "shards": len(shards),
               "seconds": round(time.time() - start, 1)}
    if largest is not None:
        summary["largest_token_id"] = largest
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
