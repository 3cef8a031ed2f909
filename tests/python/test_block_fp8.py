"""Block-wise FP8 checkpoints (transformers' FineGrainedFP8Config / DeepSeek-V3 layout) written here by numpy alone
(own E4M3 encoder, own safetensors writer) and run by `qed logits`, against an independent numpy forward of the
same model with the format's semantics: W = q * weight_scale_inv[block], each linear input fake-quantized per
(token, B1 columns) with s = max(amax, 1e-10) / 448 (vLLM's per_token_group_quant_fp8). A forward with the other
plausible reading (one dynamic scale per tensor) must be far further away, so the check tells the two apart."""
import json
import pathlib
import struct
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "hf" / "qwen2_gqa_bias"
BLOCK = (32, 32)
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj"]
PROMPT = [5, 77, 300, 12, 9, 410, 3, 250, 17, 480, 66, 101]


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


def e4m3_round(v):
    """Nearest E4M3 value (ties to even), saturated at 448: 3 significand bits, binades from 2^-6, subnormal steps
    of 2^-9 below that (OCP FP8 spec)."""
    v = np.asarray(v, np.float64)
    a = np.abs(v)
    exponent = np.maximum(np.floor(np.log2(np.maximum(a, 2.0 ** -40))), -6)
    step = 2.0 ** (exponent - 3)
    return np.sign(v) * np.minimum(np.round(a / step) * step, 448.0)


def e4m3_encode(v):
    r = e4m3_round(v)
    a = np.abs(r)
    exponent = np.maximum(np.floor(np.log2(np.maximum(a, 2.0 ** -40))), -6)
    normal = a >= 2.0 ** -6
    code = np.where(normal, (exponent + 7) * 8 + (a / 2.0 ** exponent * 8 - 8), a / 2.0 ** -9)
    return (code.astype(np.int64) | np.where(r < 0, 0x80, 0)).astype(np.uint8)


def e4m3_decode(b):
    b = b.astype(np.int64)
    e, m = (b >> 3) & 0xF, b & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7))
    return np.where(b & 0x80, -v, v)


def write_block_checkpoint(out):
    """The fixture with every decoder linear block-quantized (s = amax(block) / 448, codes = e4m3(w / s))."""
    out.mkdir(parents=True, exist_ok=True)
    source = read_safetensors(FIXTURE / "model.safetensors")
    tensors, dequantized = {}, {}
    b0, b1 = BLOCK
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
        dequantized[name] = (e4m3_decode(codes).reshape(blocks.shape) * s.astype(np.float64)).reshape(rows, cols)
    write_safetensors(out / "model.safetensors", tensors)
    config = json.loads((FIXTURE / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic",
                                     "weight_block_size": list(BLOCK), "modules_to_not_convert": None}
    (out / "config.json").write_text(json.dumps(config))
    weights = {k: v[1].astype(np.float64) for k, v in source.items()}
    weights.update(dequantized)
    return config, weights


def quantize_groups(x, group):
    """The format's activations: per row and `group` columns, s = max(amax, 1e-10) / 448 in float32."""
    g = x.astype(np.float32).reshape(x.shape[0], -1, group)
    s = np.maximum(np.abs(g).max(axis=2, keepdims=True), np.float32(1e-10)) / np.float32(448.0)
    return (e4m3_round(g / s) * s.astype(np.float64)).reshape(x.shape)


def quantize_tensor(x):
    s = np.float32(np.abs(x.astype(np.float32)).max()) / np.float32(448.0)
    return e4m3_round(x.astype(np.float32) / s) * np.float64(s)


def forward(config, w, ids, quantize):
    """Qwen2 (transformers' modeling_qwen2: RMSNorm, rotate-half RoPE, GQA causal attention, SwiGLU) in float64,
    every decoder linear's input passed through `quantize` first."""
    hidden, heads, kv_heads = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    d = hidden // heads
    eps = config["rms_norm_eps"]
    n = len(ids)

    def norm(x, weight):
        return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * weight

    def linear(x, name, bias=True):
        y = quantize(x) @ w[name + ".weight"].T
        return y + w[name + ".bias"] if bias and name + ".bias" in w else y

    inv_freq = 1.0 / config["rope_parameters"]["rope_theta"] ** (np.arange(0, d, 2) / d)
    angles = np.arange(n)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(np.concatenate([angles] * 2, 1)), np.sin(np.concatenate([angles] * 2, 1))

    def rope(x):  # [n, heads, d]
        rotated = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
        return x * cos[:, None, :] + rotated * sin[:, None, :]

    x = w["model.embed_tokens.weight"][ids]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = rope(linear(h, p + "self_attn.q_proj").reshape(n, heads, d))
        k = rope(linear(h, p + "self_attn.k_proj").reshape(n, kv_heads, d))
        v = linear(h, p + "self_attn.v_proj").reshape(n, kv_heads, d)
        k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d)
        scores = np.where(np.tril(np.ones((n, n), bool))[None], scores, -np.inf)
        probs = np.exp(scores - scores.max(axis=2, keepdims=True))
        probs /= probs.sum(axis=2, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", probs, v).reshape(n, heads * d)
        x = x + linear(attn, p + "self_attn.o_proj")
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        gate, up = linear(h, p + "mlp.gate_proj"), linear(h, p + "mlp.up_proj")
        x = x + linear(gate / (1 + np.exp(-gate)) * up, p + "mlp.down_proj")
    return norm(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


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
    assert (e4m3_encode(e4m3_decode(finite)) == np.where(finite == 0x80, 0, finite)).all()  # -0 encodes as +0


def test_qed_runs_the_block_format_as_the_numpy_reference(qed_bin, tmp_path):
    config, weights = write_block_checkpoint(tmp_path / "block")
    got = qed_logits(qed_bin, tmp_path / "block", PROMPT, tmp_path / "logits.safetensors")
    want = forward(config, weights, PROMPT, lambda x: quantize_groups(x, BLOCK[1]))
    per_tensor = forward(config, weights, PROMPT, quantize_tensor)
    unquantized_inputs = forward(config, weights, PROMPT, lambda x: x)
    scale = np.abs(want).max()
    err = np.abs(got - want).max()
    # Measured: 1.1e-6 (fp32 vs float64 arithmetic, 2e-7 of the logits' range). The bound leaves room for an
    # activation that lands on the other side of an E4M3 rounding boundary in fp32 (one step, ~1e-3 here), and is
    # still far below what either wrong reading of the format gives (0.70 per-tensor, 0.47 unquantized inputs).
    assert err <= 2e-3 * scale, (err, scale)
    assert np.abs(got - per_tensor).max() > 10 * max(err, 1e-6 * scale)
    assert np.abs(got - unquantized_inputs).max() > 10 * max(err, 1e-6 * scale)


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
