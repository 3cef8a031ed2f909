#!/usr/bin/env python3
"""Writes a block-wise FP8 checkpoint with transformers' own quantizer, and reference logits of it, for qed's
interop check (tools/check_hf_fp8_interop.sh, docs/quantize.md "Block-wise FP8").

The writer is transformers' FineGrainedFP8Config (DeepSeek-V3-style: `weight` F8_E4M3 + `weight_scale_inv` F32 per
block, quantization_config {"quant_method": "fp8", "weight_block_size": [B0, B1], "activation_scheme": "dynamic"}),
quantizing a fixture model (tests/fixtures/hf/*) as it loads, then save_pretrained. The fixtures are tiny (hidden
64-96), so the block size defaults to [16, 32] (B0 output rows, B1 input columns) instead of DeepSeek's [128, 128]:
every fixture dimension is a multiple of it, as transformers' quantizer requires; 32 columns is the smallest K its
Triton FP8 matmul tiles with; and no scale grid of qwen2_gqa_bias / llama3_rope_scaled has a dimension of 1 (one
transformers quantizer path squeezes the grid, which qed reads but its own reload may not).

Reference logits, every position of the fixture's prompts, in float32:
  - "transformers": the saved checkpoint loaded back by transformers and run by its FP8Linear (act_quant per token
    and B1-column group + the Triton block-scaled matmul). Needs a GPU and Triton; if that fails the error is
    recorded in reference.json and only the emulation below is written. Loaded in float32 (qed's CPU reference
    computes in float32), or bf16 if transformers refuses that; reference.json says which.
  - "emulated": plain torch on the same saved tensors: the fixture model in float32 with every converted weight
    replaced by q * weight_scale_inv[block] and each such layer's input fake-quantized per (token, B1 columns)
    with s = max(amax, 1e-10) / 448, x -> float8_e4m3fn(clamp(x / s, +-448)) * s (vLLM's per_token_group_quant_fp8;
    transformers' act_quant is the same without the eps).
    The emulation also records, per prompt, its well-conditioned prefix: the positions before the first token with
    an activation within TIE_MARGIN (relative) of an E4M3 rounding midpoint. From such a token on (attention is
    causal) fp32 summation order decides that code, and two correct implementations differ by up to the
    quantization noise (tests/python/test_block_fp8.py); before it they must agree to fp32 rounding.

Needs torch + transformers (the GPU machine's /opt/torch/.venv); qed's CPU machine has no torch:
    /opt/torch/.venv/bin/python tools/make_hf_fp8_checkpoint.py --fixture tests/fixtures/hf/qwen2_gqa_bias --out DIR
Writes DIR/config.json + DIR/model.safetensors (the checkpoint), DIR/reference_logits.safetensors
(`transformers_<i>`, `emulated_<i>`: [len(prompt i), vocab] F32) and DIR/reference.json (prompts, versions, which
references exist, the converted modules, and the max |transformers - emulated| per prompt).
"""
import argparse
import datetime
import json
import pathlib
import sys
import traceback

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

FP8_MAX = 448.0
GROUP_EPS = 1e-10
TIE_MARGIN = 5e-6  # as tests/python/test_block_fp8.py


def dequantize_blocks(q, scale_inv, block):
    """q (out × in, float8_e4m3fn) times its block's scale, in float32."""
    b0, b1 = block
    rows, cols = q.shape
    grid = scale_inv.float().reshape(-(-rows // b0), cols // b1)  # some transformers versions save it squeezed
    s = grid.repeat_interleave(b0, dim=0)[:rows].repeat_interleave(b1, dim=1)[:, :cols]
    return q.float() * s


def e4m3_midpoints():
    # Codes 0x00 .. 0x7E are the finite non-negative values 0 .. 448, ascending.
    codes = torch.arange(0, 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn).float().double()
    return (codes[1:] + codes[:-1]) / 2


def fake_quantize_groups(x, group, margins=None):
    """Per (token, group of `group` columns): s = max(amax, eps) / 448, x -> e4m3(clamp(x / s)) * s (float32).
    margins, if given, gets each token's smallest relative distance of |x / s| to an E4M3 rounding midpoint."""
    shape = x.shape
    g = x.float().reshape(-1, shape[-1] // group, group)
    s = g.abs().amax(dim=-1, keepdim=True).clamp(min=GROUP_EPS) / FP8_MAX
    q = (g / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    if margins is not None:
        y = (g.double() / s.double()).abs()
        mids = e4m3_midpoints().to(y.device)
        j = torch.searchsorted(mids, y.contiguous()).clamp(1, len(mids) - 1)
        d = torch.minimum((y - mids[j]).abs(), (y - mids[j - 1]).abs())
        rel = torch.where(y > 0, d / y.clamp(min=1e-300), torch.full_like(y, float("inf")))
        margins.append(rel.reshape(g.shape[0], -1).amin(dim=1).cpu())
    return (q.float() * s).reshape(shape).to(x.dtype)


def emulated_model(fixture, saved, block, device, margins):
    """The fixture model in float32 computing the saved checkpoint's block-wise FP8 semantics in plain torch."""
    model = AutoModelForCausalLM.from_pretrained(fixture, dtype=torch.float32, attn_implementation="eager")
    model.to(device).eval()
    converted = sorted(name[: -len(".weight")] for name, t in saved.items()
                       if name.endswith(".weight") and t.dtype == torch.float8_e4m3fn)
    for module_name in converted:
        module = model.get_submodule(module_name)
        weight = dequantize_blocks(saved[module_name + ".weight"], saved[module_name + ".weight_scale_inv"], block)
        if weight.shape != module.weight.shape:
            raise RuntimeError(f"{module_name}: saved weight {tuple(weight.shape)} vs model {tuple(module.weight.shape)}")
        with torch.no_grad():
            module.weight.copy_(weight.to(device))
        module.register_forward_pre_hook(
            lambda _m, args: (fake_quantize_groups(args[0], block[1], margins),) + args[1:])
    return model, converted


def logits_of(model, prompts, device):
    out = []
    with torch.no_grad():
        for ids in prompts:
            out.append(model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu().contiguous())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixture", required=True, help="an HF model directory, e.g. tests/fixtures/hf/qwen2_gqa_bias")
    parser.add_argument("--out", required=True)
    parser.add_argument("--block-size", type=int, nargs=2, default=[16, 32], metavar=("B0", "B1"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 references: no TF32 rounding of the matmul inputs
    torch.set_float32_matmul_precision("highest")
    fixture, out = pathlib.Path(args.fixture), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    block = list(args.block_size)
    prompts = json.loads((fixture / "fixture.json").read_text())["prompts"]
    record = {
        "fixture": fixture.name,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "weight_block_size": block,
        "prompts": prompts,
    }

    # 1. The writer: transformers quantizes while loading, then saves.
    config = transformers.FineGrainedFP8Config(weight_block_size=tuple(block), activation_scheme="dynamic")
    quantized = AutoModelForCausalLM.from_pretrained(fixture, quantization_config=config, dtype=torch.bfloat16,
                                                     device_map=args.device)
    quantized.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    del quantized
    saved = load_file(str(out / "model.safetensors"))
    record["tensors"] = {name: [str(t.dtype).replace("torch.", ""), list(t.shape)] for name, t in sorted(saved.items())}
    record["quantization_config"] = json.loads((out / "config.json").read_text()).get("quantization_config")

    # 2. References.
    logits = {}
    margins = []
    emulated, converted = emulated_model(fixture, saved, block, args.device, margins)
    record["converted_modules"] = converted
    record["tie_margin"] = TIE_MARGIN
    record["well_conditioned_prefix"] = []
    for i, ids in enumerate(prompts):
        margins.clear()
        (logits[f"emulated_{i}"],) = logits_of(emulated, [ids], args.device)
        near = torch.stack(margins).amin(dim=0) < TIE_MARGIN
        record["well_conditioned_prefix"].append(int(torch.nonzero(near)[0, 0]) if bool(near.any()) else len(ids))
    del emulated
    record["references"] = ["emulated"]
    errors = []
    for dtype in (torch.float32, torch.bfloat16):  # float32 like qed's CPU reference; bf16 if fp32 is refused
        try:
            reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=dtype, device_map=args.device,
                                                            attn_implementation="eager")
            reloaded.eval()
            values = logits_of(reloaded, prompts, args.device)
        except Exception as error:  # noqa: BLE001 - recorded: the emulation stays usable without Triton
            errors.append(f"{dtype}: {type(error).__name__}: {error}")
            traceback.print_exc()
            continue
        record["transformers_dtype"] = str(dtype).replace("torch.", "")
        record["transformers_linear_classes"] = sorted({type(m).__name__ for m in reloaded.modules()
                                                        if "Linear" in type(m).__name__})
        for i, value in enumerate(values):
            logits[f"transformers_{i}"] = value
        record["references"].append("transformers")
        record["transformers_vs_emulated_max_abs"] = [
            float((logits[f"transformers_{i}"] - logits[f"emulated_{i}"]).abs().max()) for i in range(len(prompts))]
        break
    if errors:
        record["transformers_errors"] = errors
    save_file(logits, str(out / "reference_logits.safetensors"), metadata={"dtype": "float32"})
    (out / "reference.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: record.get(k) for k in ["fixture", "references", "transformers_dtype", "transformers_errors",
                                                   "transformers_vs_emulated_max_abs", "quantization_config",
                                                   "well_conditioned_prefix"]}))


if __name__ == "__main__":
    main()
