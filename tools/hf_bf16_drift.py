#!/usr/bin/env python3
"""How far HF transformers' own bf16 inference drifts from its fp32 reference on the fixtures (tests/fixtures/hf).

The CUDA backend's parity tests (tests/backend_cuda/cuda_backend_test.cpp) allow bf16-sized logit errors and
greedy divergences at near-ties. This measures the peer on the same models and prompts, so the two can be compared:
max |logit_bf16 - logit_fp32| relative to the logit scale, and where HF bf16's greedy continuation (argmax of a full
recompute at every step, as the fixtures' greedy) first leaves the fp32 one, with the fp32 margin there.

    /opt/torch/.venv/bin/python tools/hf_bf16_drift.py --out drift.json [--device cuda]
"""
import argparse
import json
import pathlib

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf"


def greedy(model, ids, steps, device):
    tokens = torch.tensor(ids, device=device)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=tokens[None]).logits[0, -1]
            tokens = torch.cat([tokens, logits.argmax().reshape(1)])
    return tokens[len(ids):].tolist()


def drift_of(directory, device):
    fixture = json.loads((directory / "fixture.json").read_text())
    want_logits = load_file(str(directory / "logits.safetensors"))
    fp32 = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").to(device)
    bf16 = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16, attn_implementation="eager").to(device)
    rows = []
    for index, (ids, want) in enumerate(zip(fixture["prompts"], fixture["greedy"])):
        with torch.no_grad():
            got = bf16(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu()
        reference = want_logits[f"logits_{index}"]
        scale = max(1.0, reference.abs().max().item())
        continuation = greedy(bf16, ids, len(want), device)
        divergence = next((t for t, (a, b) in enumerate(zip(continuation, want)) if a != b), None)
        margin = None
        if divergence is not None:
            with torch.no_grad():
                row = fp32(input_ids=torch.tensor([ids + want[:divergence]], device=device)).logits[0, -1].float()
            margin = (row[want[divergence]] - row[continuation[divergence]]).item()
        rows.append({"prompt": index, "tokens": len(ids), "max_abs_diff": (got - reference).abs().max().item(),
                     "scale": scale, "greedy_first_divergence": divergence, "fp32_margin_there": margin})
        print(f"{fixture['name']} prompt {index} ({len(ids)} tokens): HF bf16 vs fp32 max|diff| "
              f"{rows[-1]['max_abs_diff']:.3g}, scale {scale:.3g}, greedy divergence at {divergence}"
              + ("" if margin is None else f" (fp32 margin {margin:.3g})"))
    return {"fixture": fixture["name"], "prompts": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    results = [drift_of(d, args.device) for d in sorted(FIXTURES.iterdir()) if (d / "fixture.json").exists()]
    info = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__}
    args.out.write_text(json.dumps({"peer": "hf-transformers-bf16-eager", **info, "fixtures": results}, indent=1))


if __name__ == "__main__":
    main()
