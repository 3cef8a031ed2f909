"""Block-wise FP8 checkpoints (transformers' FineGrainedFP8Config / DeepSeek-V3 layout) written here by numpy alone
(E4M3 codes from test_quantize's spec decoder, own safetensors writer) and run by `qed logits`, against
test_quantize's independent numpy forward with the format's semantics: W = q * weight_scale_inv[block], each linear
input fake-quantized per (token, B1 columns) with s = max(amax, 1e-10) / 448 (vLLM's per_token_group_quant_fp8).
The other plausible readings (one dynamic scale per tensor; unquantized inputs) must be far further away, so the
check tells them apart.

The format's forward is not a continuous function of its inputs: an activation within fp32 rounding of an E4M3
rounding midpoint goes to either neighbour depending on summation order, and from that token on (attention is causal)
two correct fp32 implementations differ by up to the quantization noise itself (measured 0.2-1.0 of logits ~6 on
these random-init fixtures, for prompts of 64+ tokens; perturbing every linear input by 1e-6 relative in the numpy
forward moves its own logits as far). So the exactness check runs on the positions before the first activation the
float64 reference finds within TIE_MARGIN (relative) of a midpoint, and asserts there are enough of them."""
import json
import pathlib
import struct
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_quantize import E4M3_POSITIVE, LINEARS, as_float, fake_quant_e4m3, fake_quant_e4m3_groups, numpy_forward

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "hf"
BLOCK = (32, 32)
# Relative distance to an E4M3 rounding midpoint below which an activation's code is fp32 noise: every divergence
# measured on the two fixtures (10 prompts) came at or after a position with an activation within 1e-6. Errors that
# grow through the layers can still move a small activation further than that (the numpy forward with 3e-7 relative
# noise on every linear input flipped a code at 3e-5 once in 126 runs), so a change of qed's summation order can
# fail the exactness check below without a bug; the margin trades that against how many positions are checked.
TIE_MARGIN = 5e-6
E4M3_MIDPOINTS = (E4M3_POSITIVE[1:] + E4M3_POSITIVE[:-1]) / 2


def read_safetensors(path):
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, v in header.items():
        raw = data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
        if v["dtype"] == "BF16":
            stored = np.frombuffer(raw, np.uint16)
            value = (stored.astype(np.uint32) << 16).view(np.float32)
        elif v["dtype"] == "F32":
            stored = value = np.frombuffer(raw, np.float32)
        else:
            raise AssertionError(v["dtype"])
        out[name] = (v["dtype"], value.reshape(v["shape"]), stored.reshape(v["shape"]))
    return out


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, numpy array of the stored bytes' element type)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def e4m3_encode(v):
    """E4M3 codes of v (nearest, ties to even, saturated at 448), through test_quantize's rounding."""
    v = np.asarray(v, np.float64)
    magnitude = np.abs(fake_quant_e4m3(v, 1.0))
    return (np.searchsorted(E4M3_POSITIVE, magnitude) | np.where(v < 0, 0x80, 0)).astype(np.uint8)


def write_block_checkpoint(out, fixture="qwen2_gqa_bias", block=BLOCK):
    """The fixture with every decoder linear block-quantized (s = amax(block) / 448, codes = e4m3(w / s))."""
    out.mkdir(parents=True, exist_ok=True)
    source = read_safetensors(FIXTURES / fixture / "model.safetensors")
    tensors = {}
    b0, b1 = block
    for name, (dtype, value, stored) in source.items():
        module = name[: -len(".weight")]
        if not (name.startswith("model.layers.") and any(module.endswith(l) for l in LINEARS)):
            tensors[name] = (dtype, stored)
            continue
        w = value.astype(np.float32)
        rows, cols = w.shape
        blocks = w.reshape(rows // b0, b0, cols // b1, b1)
        amax = np.abs(blocks).max(axis=(1, 3))
        scale = np.where(amax > 0, amax / np.float32(448.0), np.float32(1.0)).astype(np.float32)
        s = scale[:, None, :, None]
        codes = e4m3_encode((blocks / s).astype(np.float32)).reshape(rows, cols)
        tensors[name] = ("F8_E4M3", codes)
        tensors[module + ".weight_scale_inv"] = ("F32", scale)
    write_safetensors(out / "model.safetensors", tensors)
    config = json.loads((FIXTURES / fixture / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic",
                                     "weight_block_size": list(block), "modules_to_not_convert": None}
    (out / "config.json").write_text(json.dumps(config))


def per_tensor_input(x, _group):
    """The wrong reading: one dynamic scale for the whole input."""
    return fake_quant_e4m3(x, np.float64(np.float32(np.abs(x).max()) / np.float32(448.0)))


def margin_recorder():
    """A group_input for numpy_forward that quantizes as the format does and records, per token, the smallest
    relative distance of |x| / s to an E4M3 rounding midpoint over every linear input of the forward."""
    margins = []

    def group_input(x, group):
        g = x.reshape(x.shape[0], -1, group)
        s = np.maximum(np.abs(g).max(axis=2, keepdims=True).astype(np.float32), np.float32(1e-10)) / np.float32(448.0)
        y = np.abs(g) / s.astype(np.float64)
        j = np.clip(np.searchsorted(E4M3_MIDPOINTS, y), 1, len(E4M3_MIDPOINTS) - 1)
        d = np.minimum(np.abs(y - E4M3_MIDPOINTS[j]), np.abs(y - E4M3_MIDPOINTS[j - 1]))
        margins.append(np.where(y > 0, d / np.maximum(y, 1e-300), np.inf).reshape(x.shape[0], -1).min(axis=1))
        return fake_quant_e4m3_groups(x, group)

    return group_input, margins


def well_conditioned_prefix(margins):
    """The number of leading positions whose logits no activation near a rounding midpoint can reach."""
    near = np.min(np.stack(margins), axis=0) < TIE_MARGIN
    return int(np.argmax(near)) if near.any() else len(near)


def qed_logits(qed_bin, model, ids, out):
    result = subprocess.run([qed_bin, "logits", "--model", str(model), "--prompt-ids", ",".join(map(str, ids)),
                             "--out", str(out), "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return load_file(str(out))["logits"].astype(np.float64)


def test_encoder_is_the_spec():
    # Hand-checked points: the largest value, a tie to even, the smallest subnormal and normal, saturation.
    assert list(e4m3_encode(np.array([448.0, 1.0625, 2.0 ** -9, 2.0 ** -6, 1e6, -1.5]))) == [
        0x7E, 0x38, 0x01, 0x08, 0x7E, 0xBC]
    codes = np.arange(256, dtype=np.uint8)
    finite = codes[(codes & 0x7F) != 0x7F]
    decoded = as_float("F8_E4M3", [len(finite)], finite.tobytes())
    assert (e4m3_encode(decoded) == np.where(finite == 0x80, 0, finite)).all()  # -0 encodes as +0


@pytest.mark.parametrize("fixture", ["qwen2_gqa_bias", "llama3_rope_scaled"])
def test_numpy_forward_is_transformers_on_the_unquantized_fixture(fixture):
    # The reference below must itself be right: transformers' float32 logits (tests/fixtures/hf/*/logits.safetensors)
    # of the bf16 fixture. Measured 2e-5 of logits ~7 (float64 vs float32).
    prompts = json.loads((FIXTURES / fixture / "fixture.json").read_text())["prompts"]
    hf = load_file(str(FIXTURES / fixture / "logits.safetensors"))
    for i in (1, 4):
        want = hf[f"logits_{i}"].astype(np.float64)
        assert np.abs(numpy_forward(FIXTURES / fixture, prompts[i]) - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("fixture", ["qwen2_gqa_bias", "llama3_rope_scaled"])
def test_qed_runs_the_block_format_as_the_numpy_reference(qed_bin, tmp_path, fixture):
    # Blocks of 16 x 32, as the interop check writes them with transformers; llama3_rope_scaled adds llama3 RoPE
    # scaling and head_dim * heads != hidden (o_proj's input is 128 columns, hidden 96).
    model = tmp_path / "block"
    write_block_checkpoint(model, fixture, (16, 32))
    prompts = json.loads((FIXTURES / fixture / "fixture.json").read_text())["prompts"]
    vocab = json.loads((FIXTURES / fixture / "config.json").read_text())["vocab_size"]
    rng = np.random.default_rng(7)
    prompts += [rng.integers(0, vocab, 8).tolist() for _ in range(8)]  # short ones: well-conditioned more often
    checked, errors, wrong = 0, [], []
    for i, ids in enumerate(prompts):
        got = qed_logits(qed_bin, model, ids, tmp_path / f"logits_{i}.safetensors")
        group_input, margins = margin_recorder()
        want = numpy_forward(model, ids, group_input=group_input)
        n = well_conditioned_prefix(margins)
        scale = np.abs(want).max()
        per_position = np.abs(got - want).max(axis=1) / scale
        print(f"{fixture} prompt {i} ({len(ids)} tokens): well-conditioned prefix {n}, qed vs numpy there "
              f"{per_position[:n].max(initial=0):.2e}, after it {per_position[n:].max(initial=0):.2e} (of the scale)")
        checked += n
        errors.append(per_position[:n].max(initial=0))
        if n:
            for reading in (per_tensor_input, lambda x, _group: x):
                other = numpy_forward(model, ids, group_input=reading)
                wrong.append((np.abs(got - other).max(axis=1)[:n] / scale).max())
    # Measured: at most 5e-6 of the scale (fp32 vs float64) on 51 (qwen2) and 64 (llama3) positions. The bound
    # leaves room for summation-order noise, and is far below one E4M3 step of a flipped activation (1e-2 here) and
    # the wrong readings (>= 3e-2 of the scale on the prefixes).
    assert max(errors) <= 1e-4, errors
    assert checked >= 40, checked  # the prefixes must cover enough positions to mean something
    print(f"wrong readings on the prefixes: at least {min(wrong):.2e} of the scale")
    assert min(wrong) > 10 * max(max(errors), 1e-6), wrong


def test_bad_block_checkpoints_are_one_line_errors(qed_bin, tmp_path):
    write_block_checkpoint(tmp_path / "block")
    config_path = tmp_path / "block" / "config.json"
    config = json.loads(config_path.read_text())
    for block_size, fragment in [([32, 48], "not a multiple of weight_block_size[1] = 48"),
                                 ([64, 32], "has shape [2, 2], expected [1, 2]"),
                                 ([32], "two positive integers")]:
        config["quantization_config"]["weight_block_size"] = block_size
        config_path.write_text(json.dumps(config))
        result = subprocess.run([qed_bin, "logits", "--model", str(tmp_path / "block"), "--prompt-ids", "1,2",
                                 "--out", str(tmp_path / "x.safetensors")], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr
