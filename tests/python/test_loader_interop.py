"""Checkpoints written by Hugging Face's `safetensors` (and configs by `transformers`) load in qed as written,
and safetensors files qed writes load in Hugging Face's reader. Read back through `qed inspect --model DIR`."""

import json
import pathlib
import subprocess

import numpy as np
import pytest
from safetensors import TensorSpec, safe_open, serialize_file
from safetensors.numpy import save_file

RNG = np.random.default_rng(0)


def inspect(qed_bin, model_dir, *args):
    result = subprocess.run(
        [qed_bin, "inspect", "--model", str(model_dir), *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def inspect_error(qed_bin, model_dir):
    result = subprocess.run([qed_bin, "inspect", "--model", str(model_dir)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("\n") == 1, result.stderr  # one line
    return result.stderr.strip()


def bits_to_bf16_floats(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def e4m3_to_float(byte):
    """FP8 E4M3 (fn): bias 7, no infinities, S.1111.111 is NaN."""
    sign = -1.0 if byte & 0x80 else 1.0
    exponent, mantissa = (byte >> 3) & 0xF, byte & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * mantissa / 8 * 2.0**-6
    return sign * (1 + mantissa / 8) * 2.0 ** (exponent - 7)


def numpy_tensors():
    """One tensor per dtype numpy has (safetensors.numpy.save_file), odd shapes included."""
    return {
        "f32.matrix": RNG.standard_normal((3, 5)).astype(np.float32),
        "f16.vector": RNG.standard_normal(7).astype(np.float16),
        "i8.weight": RNG.integers(-128, 128, (4, 2), dtype=np.int8),
        "u8.bytes": RNG.integers(0, 256, 9, dtype=np.uint8),
        "i32.ids": np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32),
        "i64.ids": np.array([[-(2**40)], [2**40]], dtype=np.int64),
        "f32.scalar": np.array(2.5, dtype=np.float32),
        "f32.empty": np.zeros((0, 3), dtype=np.float32),
    }


def check_listing(listing, expected):
    by_name = {t["name"]: t for t in listing["tensors"]}
    assert sorted(by_name) == sorted(expected)
    for name, (dtype, array) in expected.items():
        tensor = by_name[name]
        assert tensor["dtype"] == dtype, name
        assert tensor["shape"] == list(array.shape), name
        assert tensor["nbytes"] == array.nbytes, name


def test_reads_every_numpy_dtype_written_by_hf(qed_bin, tmp_path):
    tensors = numpy_tensors()
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    listing = inspect(qed_bin, tmp_path, "--values")
    names = {"float32": "F32", "float16": "F16", "int8": "I8", "uint8": "U8", "int32": "I32", "int64": "I64"}
    check_listing(listing, {name: (names[a.dtype.name], a) for name, a in tensors.items()})
    assert listing["config"] is None
    by_name = {t["name"]: t for t in listing["tensors"]}
    for name, array in tensors.items():
        values = np.array(by_name[name]["values"], dtype=np.float64)
        # Floats come back widened to float32, ints exactly: equality, not closeness.
        np.testing.assert_array_equal(values, array.astype(np.float64).ravel(), err_msg=name)


def test_reads_bf16_and_fp8_written_by_hf(qed_bin, tmp_path):
    # numpy has no bfloat16/float8: hand HF's serializer the raw bits, as torch would.
    bf16_bits = np.array([0x3F80, 0xC000, 0x7F80, 0x0001, 0x4049], dtype=np.uint16)  # 1, -2, inf, denormal, 3.14
    fp8_bits = np.array([0x00, 0x38, 0xB8, 0x7E, 0x01, 0x7F], dtype=np.uint8)  # 0, 1, -1, 448, min denormal, NaN
    specs = {
        "w.bf16": TensorSpec(dtype="bfloat16", shape=[5], data_ptr=bf16_bits.ctypes.data, data_len=bf16_bits.nbytes),
        "w.fp8": TensorSpec(
            dtype="float8_e4m3fn", shape=[2, 3], data_ptr=fp8_bits.ctypes.data, data_len=fp8_bits.nbytes
        ),
    }
    serialize_file(specs, str(tmp_path / "model.safetensors"), None)
    listing = inspect(qed_bin, tmp_path, "--values")
    by_name = {t["name"]: t for t in listing["tensors"]}
    assert by_name["w.bf16"]["dtype"] == "BF16" and by_name["w.bf16"]["shape"] == [5]
    assert by_name["w.fp8"]["dtype"] == "F8_E4M3" and by_name["w.fp8"]["shape"] == [2, 3]
    expected_bf16 = bits_to_bf16_floats(bf16_bits)
    got_bf16 = by_name["w.bf16"]["values"]
    assert got_bf16[2] is None  # inf has no JSON spelling
    np.testing.assert_array_equal(np.array([v for i, v in enumerate(got_bf16) if i != 2], dtype=np.float32),
                                  np.delete(expected_bf16, 2))
    expected_fp8 = [e4m3_to_float(int(b)) for b in fp8_bits]
    got_fp8 = by_name["w.fp8"]["values"]
    assert got_fp8[5] is None  # NaN
    assert got_fp8[:5] == expected_fp8[:5]


def test_reads_sharded_checkpoint_written_by_hf(qed_bin, tmp_path):
    shards = {
        "model-00001-of-00002.safetensors": {
            "model.embed_tokens.weight": RNG.standard_normal((16, 8)).astype(np.float16),
            "model.layers.0.self_attn.q_proj.weight": RNG.standard_normal((8, 8)).astype(np.float16),
        },
        "model-00002-of-00002.safetensors": {
            "model.layers.0.self_attn.q_proj.bias": RNG.standard_normal(8).astype(np.float32),
            "model.norm.weight": np.ones(8, dtype=np.float32),
        },
    }
    weight_map = {}
    for shard, tensors in shards.items():
        save_file(tensors, str(tmp_path / shard), metadata={"format": "pt"})
        weight_map.update({name: shard for name in tensors})
    total = sum(a.nbytes for t in shards.values() for a in t.values())
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    listing = inspect(qed_bin, tmp_path, "--values")
    expected = {name: a for tensors in shards.values() for name, a in tensors.items()}
    check_listing(listing, {n: ("F16" if a.dtype == np.float16 else "F32", a) for n, a in expected.items()})
    assert listing["total_bytes"] == total
    for tensor in listing["tensors"]:
        np.testing.assert_array_equal(
            np.array(tensor["values"], dtype=np.float32), expected[tensor["name"]].astype(np.float32).ravel()
        )


def test_hf_reads_what_qed_writes(qed_bin, tmp_path):
    tensors = numpy_tensors()
    source = tmp_path / "hf"
    source.mkdir()
    save_file(tensors, str(source / "model.safetensors"))
    rewritten = tmp_path / "qed.safetensors"
    inspect(qed_bin, source, "--save", str(rewritten))
    raw = rewritten.read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    assert header_length % 8 == 0  # padded like HF's writer, so data starts aligned
    with safe_open(str(rewritten), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(tensors)
        for name, array in tensors.items():
            loaded = f.get_tensor(name)
            assert loaded.dtype == array.dtype, name
            np.testing.assert_array_equal(loaded, array, err_msg=name)


def test_merges_shards_into_one_file_hf_can_read(qed_bin, tmp_path):
    a = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    b = {"b": np.arange(4, dtype=np.int64)}
    save_file(a, str(tmp_path / "s1.safetensors"))
    save_file(b, str(tmp_path / "s2.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})
    )
    merged = tmp_path / "merged.safetensors"
    inspect(qed_bin, tmp_path, "--save", str(merged))
    with safe_open(str(merged), framework="numpy") as f:
        np.testing.assert_array_equal(f.get_tensor("a"), a["a"])
        np.testing.assert_array_equal(f.get_tensor("b"), b["b"])


@pytest.mark.parametrize(
    "make_config",
    ["qwen2", "llama3"],
)
def test_config_written_by_transformers_is_read(qed_bin, tmp_path, make_config):
    transformers = pytest.importorskip("transformers")
    if make_config == "qwen2":
        config = transformers.Qwen2Config(
            hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512, rope_theta=1e6, tie_word_embeddings=True, dtype="bfloat16",
            eos_token_id=[5, 7],
        )
    else:
        config = transformers.LlamaConfig(
            hidden_size=96, head_dim=32, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=640, max_position_embeddings=256, rms_norm_eps=1e-5,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64},
            rope_theta=500000.0, dtype="float16",
        )
    config.save_pretrained(str(tmp_path))
    save_file({"w": np.zeros(1, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    got = inspect(qed_bin, tmp_path)["config"]
    # What transformers itself derives from the file it wrote is the reference.
    reread = type(config).from_pretrained(str(tmp_path))
    rope = reread.rope_parameters
    assert got["model_type"] == reread.model_type
    assert got["hidden_size"] == reread.hidden_size
    assert got["num_layers"] == reread.num_hidden_layers
    assert got["num_heads"] == reread.num_attention_heads
    assert got["num_kv_heads"] == reread.num_key_value_heads
    assert got["head_dim"] == getattr(reread, "head_dim", reread.hidden_size // reread.num_attention_heads)
    assert got["intermediate_size"] == reread.intermediate_size
    assert got["vocab_size"] == reread.vocab_size
    assert got["max_position_embeddings"] == reread.max_position_embeddings
    assert got["rms_norm_eps"] == pytest.approx(reread.rms_norm_eps, rel=1e-6)
    assert got["rope_theta"] == pytest.approx(rope["rope_theta"], rel=1e-6)
    assert got["rope_scaling"]["type"] == rope["rope_type"]
    if rope["rope_type"] == "llama3":
        for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            assert got["rope_scaling"][key] == pytest.approx(rope[key]), key
    assert got["tie_word_embeddings"] == reread.tie_word_embeddings
    assert got["attention_bias"] == (make_config == "qwen2" or reread.attention_bias)
    assert got["dtype"] == {"bfloat16": "BF16", "float16": "F16"}[str(reread.dtype).removeprefix("torch.")]
    eos = reread.eos_token_id
    assert got["eos_token_ids"] == ([] if eos is None else eos if isinstance(eos, list) else [eos])


def test_missing_directory_is_one_line_error(qed_bin, tmp_path):
    missing = tmp_path / "nope"
    assert inspect_error(qed_bin, missing) == f"qed: error: {missing}: no such directory"


def test_directory_without_checkpoint_names_what_was_looked_for(qed_bin, tmp_path):
    message = inspect_error(qed_bin, tmp_path)
    assert str(tmp_path) in message
    assert "model.safetensors" in message and "model.safetensors.index.json" in message


def test_truncated_file_is_refused_naming_it(qed_bin, tmp_path):
    save_file({"w": np.zeros(64, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    message = inspect_error(qed_bin, tmp_path)
    assert f"{path}: tensor 'w' extends past end of file" in message


def test_index_with_missing_shard_names_shard_and_index(qed_bin, tmp_path):
    save_file({"a": np.zeros(1, dtype=np.float32)}, str(tmp_path / "s1.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})
    )
    message = inspect_error(qed_bin, tmp_path)
    assert str(pathlib.Path(tmp_path) / "model.safetensors.index.json") in message
    assert "'s2.safetensors'" in message
