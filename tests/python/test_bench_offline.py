"""qed bench offline on the CPU backend with a tiny fixture model: the JSON follows shared/design.md "Formats"
(provenance + one row per metric), every workload reports its metrics; bad inputs are one-line errors. Values are
checked for being positive numbers only: no timing is asserted."""
import json
import pathlib
import subprocess

# Not `from conftest import REPO`: with several conftest.py files under tests/python, the module named `conftest` is
# whichever was imported last (tests/python/sandbox's, in a full run).
REPO = pathlib.Path(__file__).resolve().parents[2]

FIXTURE = str(REPO / "tests" / "fixtures" / "hf" / "qwen2_gqa_bias")


def bench(qed_bin, *args):
    return subprocess.run([qed_bin, "bench", "offline", *args], capture_output=True, text=True, timeout=300)


def test_writes_bench_json_with_provenance_and_every_metric(qed_bin, tmp_path):
    out_path = tmp_path / "offline.json"
    out = bench(qed_bin, "--model", FIXTURE, "--workloads", "decode_b2,ttft_48,aimo_3x12", "--context", "24",
                "--decode-tokens", "6", "--ttft-repeats", "1", "--output", str(out_path))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out_path.read_text())
    assert set(doc["provenance"]) >= {"git_sha", "device", "driver", "cuda", "date", "command"}
    assert "bench offline" in doc["provenance"]["command"]
    got = {(r["workload"], r["metric"]) for r in doc["results"]}
    assert got == {("decode_b2", "tok_per_s"), ("decode_b2", "per_seq_tok_per_s"), ("ttft_48", "ttft_ms"),
                   ("aimo_3x12", "total_s"), ("aimo_3x12", "batch_tok_per_s"),
                   ("aimo_3x12", "per_sample_tok_per_s"), ("kv_cache", "kv_capacity_tokens")}
    for row in doc["results"]:
        assert row["engine"] == "qed" and row["spec"] == "none" and row["model"] == "qwen2_gqa_bias"
        assert isinstance(row["value"], float) and row["value"] > 0
    kv = next(r for r in doc["results"] if r["metric"] == "kv_capacity_tokens")
    # The CPU backend's default budget: 256 MiB of fp32 K and V over the fixture's layers, whole 16-token blocks.
    config = json.loads((pathlib.Path(FIXTURE) / "config.json").read_text())
    head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    block_bytes = 2 * config["num_hidden_layers"] * 16 * config["num_key_value_heads"] * head_dim * 4
    assert kv["kv_cache_dtype"] == "fp32" and kv["value"] == (256 << 20) // block_bytes * 16


def test_unknown_workload_is_one_line_error(qed_bin):
    out = bench(qed_bin, "--model", FIXTURE, "--workloads", "decode_bx")
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0
    assert "decode_bx" in out.stderr


def test_random_weights_need_the_cuda_backend(qed_bin):
    out = bench(qed_bin, "--config", FIXTURE + "/config.json", "--backend", "cpu")
    assert out.returncode != 0
    assert "--backend cuda" in out.stderr


def test_model_and_config_are_exclusive(qed_bin):
    out = bench(qed_bin, "--model", FIXTURE, "--config", FIXTURE + "/config.json")
    assert out.returncode != 0
    assert "exactly one" in out.stderr


def test_dtype_applies_to_random_weights_only(qed_bin):
    out = bench(qed_bin, "--model", FIXTURE, "--dtype", "fp8")
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0
    assert "--dtype applies to --config" in out.stderr
    out = bench(qed_bin, "--config", FIXTURE + "/config.json", "--backend", "cuda", "--dtype", "fp4")
    assert out.returncode != 0
    assert "fp4" in out.stderr
