#!/usr/bin/env python3
"""Writes the HF reference fixtures the CPU backend is tested against (tests/fixtures/hf/<name>/).

Each fixture is a tiny random model saved by transformers in bf16 (config.json + model.safetensors), plus what HF
computes with it in float32 after loading those bf16 weights back: logits at every position of a few prompts
(logits.safetensors) and 24-token greedy continuations (fixture.json). Weights are drawn with a wide spread, RMSNorm
weights around 1 and non-zero biases, because the default init (norm = 1, bias = 0, std 0.02) hides bugs.

Needs torch + transformers (runs on the GPU machine; the models are tiny so it computes on CPU there):
    /opt/torch/.venv/bin/python tools/make_hf_fixtures.py --out OUT_DIR
"""
import argparse
import datetime
import json
import pathlib
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

PROMPT_LENGTHS = [1, 5, 17, 64, 130]
NEW_TOKENS = 24


def fixture_specs():
    common = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None, max_position_embeddings=256)
    return {
        # GQA (4 query heads share 2 KV heads), q/k/v bias (Qwen2 always has it), separate lm_head.
        "qwen2_gqa_bias": Qwen2Config(
            vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False, **common),
        # Multi-head attention, lm_head tied to the embedding (no lm_head.weight in the file).
        "qwen2_tied_mha": Qwen2Config(
            vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=4, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, **common),
        # Llama-3 RoPE scaling with a small original context (64) so that, at head_dim 32 and theta 5e5, the
        # wavelengths 2*pi*theta^(2i/d) fall in all three regimes: i=0,1 below 64/4=16 (kept), i=2 between 16 and
        # 64 (smoothed), i>=3 above 64 (divided by 8). head_dim 32 != hidden 96 / 4 heads; no bias anywhere.
        "llama3_rope_scaled": LlamaConfig(
            vocab_size=640, hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
            attention_bias=False, mlp_bias=False,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64},
            **common),
    }


def randomize_(model, generator):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn(param.shape, generator=generator))
            elif name.endswith(".bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            elif "embed_tokens" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.15 * torch.randn(param.shape, generator=generator))


def manual_greedy(model, ids):
    # Argmax of a full recompute at every step: what "greedy" means, independent of generate()'s KV cache path.
    tokens = ids.clone()
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(input_ids=tokens[None]).logits[0, -1]
            tokens = torch.cat([tokens, logits.argmax().reshape(1)])
    return tokens[len(ids):].tolist()


def rotary_inv_freq(model):
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    inv_freq = getattr(rotary, "inv_freq", None)
    return [] if inv_freq is None else inv_freq.float().tolist()


def make_fixture(name, config, out_dir, seed):
    directory = out_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)

    model = AutoModelForCausalLM.from_config(config).float()
    randomize_(model, generator)
    model.to(torch.bfloat16).save_pretrained(directory)
    (directory / "generation_config.json").unlink(missing_ok=True)

    # The reference: HF's own float32 load of the bf16 files (fresh rotary buffers computed in float32, as a user
    # running the checkpoint in fp32 gets).
    reference = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    reference.eval()
    saved = {k: v.float() for k, v in model.state_dict().items()}
    for key, value in reference.state_dict().items():
        if key in saved and not torch.equal(saved[key], value):
            raise RuntimeError(f"{name}: {key} differs after the float32 reload")

    prompts, greedy, logits = [], [], {}
    for index, length in enumerate(PROMPT_LENGTHS):
        ids = torch.randint(0, config.vocab_size, (length,), generator=generator)
        with torch.no_grad():
            logits[f"logits_{index}"] = reference(input_ids=ids[None]).logits[0].float().contiguous()
        manual = manual_greedy(reference, ids)
        try:
            out = reference.generate(input_ids=ids[None], attention_mask=torch.ones(1, length, dtype=torch.long),
                                     do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=0)
            generated = out[0, length:].tolist()
        except Exception as error:  # keep the fixture usable; the mismatch is recorded below
            print(f"{name}: generate() failed: {error}", file=sys.stderr)
            generated = []
        if generated != manual:
            print(f"{name} prompt {index}: generate() {generated} != manual greedy {manual}", file=sys.stderr)
        prompts.append(ids.tolist())
        greedy.append({"generate": generated, "manual": manual})

    save_file(logits, str(directory / "logits.safetensors"), metadata={"dtype": "float32"})
    fixture = {
        "name": name,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "seed": seed,
        "weights_dtype": "bfloat16",
        "reference_dtype": "float32",
        "attn_implementation": "eager",
        "max_new_tokens": NEW_TOKENS,
        "rotary_inv_freq": rotary_inv_freq(reference),
        "prompts": prompts,
        "greedy": [g["manual"] for g in greedy],
        "greedy_from_generate": [g["generate"] for g in greedy],
    }
    (directory / "fixture.json").write_text(json.dumps(fixture, indent=1) + "\n")
    sizes = {p.name: p.stat().st_size for p in directory.iterdir()}
    print(f"{name}: {sizes}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    torch.set_num_threads(4)
    torch.use_deterministic_algorithms(True)
    for offset, (name, config) in enumerate(fixture_specs().items()):
        make_fixture(name, config, args.out, args.seed + offset)


if __name__ == "__main__":
    main()
