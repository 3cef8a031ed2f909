"""tools/make_random_checkpoint.py (numpy backend: CI has no torch): the checkpoint it writes for an HF fixture's
config.json has exactly the tensor names, shapes and dtypes of the checkpoint transformers itself saved for that
config (tests/fixtures/hf, made by tools/make_hf_fixtures.py), HF's shard names and index, weights of the asked std,
and qed loads, quantizes (from the shards) and runs it. The tokenizer copy is checked against vocab_size."""
import json
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "make_random_checkpoint.py"
FIXTURES = REPO / "tests" / "fixtures" / "hf"


def make(out, config, *extra):
    return subprocess.run([sys.executable, str(SCRIPT), "--config", str(config), "--out", str(out),
                           "--backend", "numpy", *map(str, extra)], capture_output=True, text=True, timeout=120)


def headers(model_dir):
    """name -> (dtype, shape, file, raw bytes) over model.safetensors or the shards of the index."""
    model_dir = pathlib.Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else [
        "model.safetensors"]
    out = {}
    for name in files:
        data = (model_dir / name).read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        header.pop("__metadata__", None)
        for k, v in header.items():
            a, b = v["data_offsets"]
            out[k] = (v["dtype"], v["shape"], name, data[8 + n + a:8 + n + b])
    return out


@pytest.mark.parametrize("name", ["qwen2_gqa_bias", "qwen2_tied_mha", "llama3_rope_scaled"])
def test_names_shapes_and_dtypes_are_those_transformers_saved(tmp_path, name):
    result = make(tmp_path / "m", FIXTURES / name / "config.json", "--shard-gb", 0.00005)
    assert result.returncode == 0, result.stderr
    got, want = headers(tmp_path / "m"), headers(FIXTURES / name)
    assert {k: (v[0], v[1]) for k, v in got.items()} == {k: (v[0], v[1]) for k, v in want.items()}
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    assert shards == [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    assert index["weight_map"] == {k: v[2] for k, v in got.items()}
    assert index["metadata"]["total_size"] == sum(len(v[3]) for v in got.values())
    assert json.loads(result.stdout)["shards"] == len(shards)


def bf16_values(raw):
    return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)


def test_weights_have_the_asked_std_and_norms_are_one(tmp_path):
    result = make(tmp_path / "m", FIXTURES / "qwen2_gqa_bias" / "config.json", "--std", 0.05)
    assert result.returncode == 0, result.stderr
    tensors = headers(tmp_path / "m")
    assert not (tmp_path / "m" / "model.safetensors.index.json").exists()  # everything fits one file
    w = bf16_values(tensors["model.layers.0.mlp.up_proj.weight"][3])
    assert abs(w.std() - 0.05) < 0.003 and abs(w.mean()) < 0.003
    assert np.all(bf16_values(tensors["model.layers.1.input_layernorm.weight"][3]) == 1.0)
    assert np.any(bf16_values(tensors["model.layers.0.self_attn.k_proj.bias"][3]) != 0.0)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    config = FIXTURES / "qwen2_gqa_bias" / "config.json"
    for out, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert make(tmp_path / out, config, "--seed", seed).returncode == 0
    a, b, c = ((tmp_path / x / "model.safetensors").read_bytes() for x in "abc")
    assert a == b and a != c


def test_qed_quantizes_the_shards_and_runs_the_result(qed_bin, tmp_path):
    model = tmp_path / "m"
    assert make(model, FIXTURES / "qwen2_gqa_bias" / "config.json", "--shard-gb", 0.0001).returncode == 0
    rng = np.random.default_rng(5)
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"input_ids": rng.integers(0, 512, 40).tolist()}) + "\n" for _ in range(4)))
    run = lambda *args: subprocess.run([qed_bin, *map(str, args)], capture_output=True, text=True, timeout=300)
    quantized = tmp_path / "fp8"
    result = run("quantize", "--model", model, "--out", quantized, "--dtype", "fp8", "--kv-cache", "fp8", "--calib",
                 calib, "--backend", "cpu", "--threads", 2, "--max-shard-size", 0.0001)
    assert result.returncode == 0, result.stderr
    assert "calibrating on the cpu backend" in result.stderr
    assert "quantizing  [==============================]" in result.stderr
    assert (quantized / "model.safetensors.index.json").exists()
    for m in (model, quantized):
        result = run("generate", "--model", m, "--prompt-ids", "1,2,3", "--max-tokens", 4, "--json")
        assert result.returncode == 0, result.stderr


def test_a_tokenizer_that_does_not_fit_the_vocab_is_refused(tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    vocab = {"a": 0, "b": 1}
    (tok / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}, "added_tokens": [{"id": 511}]}))
    (tok / "tokenizer_config.json").write_text("{}")
    config = FIXTURES / "qwen2_gqa_bias" / "config.json"  # vocab_size 512
    result = make(tmp_path / "ok", config, "--tokenizer", tok)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["largest_token_id"] == 511
    assert (tmp_path / "ok" / "tokenizer.json").read_bytes() == (tok / "tokenizer.json").read_bytes()
    assert (tmp_path / "ok" / "tokenizer_config.json").exists()
    (tok / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}, "added_tokens": [{"id": 512}]}))
    result = make(tmp_path / "bad", config, "--tokenizer", tok)
    assert result.returncode == 2
    assert "token id 512 does not fit the config's vocab_size 512" in result.stderr


def test_bad_config_is_a_one_line_error(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"model_type": "gpt2", "hidden_size": 8}))
    result = make(tmp_path / "m", tmp_path / "c.json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
