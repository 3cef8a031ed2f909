"""`--tensor-parallel-size N` on qed generate. With --backend cpu it runs the exact simulation of N ranks
(docs/tp.md): greedy outputs, with and without n-gram speculative decoding, must equal the unsharded CPU backend's
token for token, for N = 2, 4 and 8 (8 ranks replicate the demo model's 2 KV heads). Bad N and a missing
multi-GPU runner (or GPUs) are errors naming the flag."""
import json
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo"  # 8 heads, 2 KV heads, intermediate 768
SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
PROMPT = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 92^2420 modulo 745?<|im_end|>\n"
          "<|im_start|>assistant\n")


def generate(qed_bin, *extra):
    return subprocess.run([qed_bin, "generate", "--model", str(DEMO), "--prompt", PROMPT, "--max-tokens", "48",
                           "--temperature", "0", "--threads", "2", "--json", *extra],
                          capture_output=True, text=True, timeout=120)


def ok(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("spec", [[], ["--spec", "ngram", "--num-draft-tokens", "3"]], ids=["plain", "ngram"])
def test_cpu_tensor_parallel_is_token_identical(qed_bin, spec):
    want = ok(generate(qed_bin, *spec))
    for n in (2, 4, 8):
        got = ok(generate(qed_bin, "--tensor-parallel-size", str(n), *spec))
        assert got["token_ids"] == want["token_ids"], f"N={n}"
        assert got.get("speculation") == want.get("speculation"), f"N={n}"
    if spec:
        assert want["speculation"]["accepted_tokens"] > 0  # drafts were verified, not only proposed


@pytest.mark.parametrize("flags", [["--tensor-parallel-size", "3"], ["--tensor-parallel-size", "0"],
                                   ["--backend", "cuda", "--tensor-parallel-size", "2"]])
def test_unusable_tensor_parallel_sizes_are_one_line_errors(qed_bin, flags):
    r = generate(qed_bin, *flags)
    if r.returncode == 0:
        # Only possible for the cuda case on a machine with two GPUs: then it must match the CPU reference's length.
        assert flags[1] == "cuda", r.stdout
        assert len(json.loads(r.stdout)["token_ids"]) == 48
        return
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines and ("tensor-parallel-size" in lines[0] or "tensor parallelism" in lines[0]), r.stderr
    assert "Segmentation" not in r.stderr and "terminate" not in r.stderr
