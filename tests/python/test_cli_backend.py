"""`--backend cuda` on qed generate: on a machine without a GPU (or a build without CUDA) it is one clear error
line and a non-zero exit; with a GPU the greedy continuation must equal the CPU reference backend's."""
import pathlib
import subprocess

# Not `from conftest import REPO`: with several conftest.py files under tests/python, the module named `conftest` is
# whichever was imported last (tests/python/sandbox's, in a full run).
REPO = pathlib.Path(__file__).resolve().parents[2]

FIXTURE = str(REPO / "tests" / "fixtures" / "hf" / "qwen2_gqa_bias")
ARGS = ["generate", "--model", FIXTURE, "--prompt-ids", "1,2,3,4,5", "--max-tokens", "8", "--temperature", "0"]


def run(qed_bin, *extra):
    return subprocess.run([qed_bin, *ARGS, *extra], capture_output=True, text=True, timeout=120)


def test_cuda_backend_errors_in_one_line_or_matches_cpu(qed_bin):
    cuda = run(qed_bin, "--backend", "cuda")
    if cuda.returncode != 0:
        lines = [line for line in cuda.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, cuda.stderr
        assert "CUDA" in lines[0] or "cuda" in lines[0], lines[0]
        assert "Segmentation" not in cuda.stderr and "terminate" not in cuda.stderr
        return
    cpu = run(qed_bin, "--backend", "cpu")
    assert cpu.returncode == 0, cpu.stderr
    assert cuda.stdout == cpu.stdout


def test_unknown_backend_is_rejected(qed_bin):
    out = run(qed_bin, "--backend", "tpu")
    assert out.returncode != 0
    assert "--backend" in out.stderr + out.stdout


def test_memory_fraction_outside_range_is_rejected(qed_bin):
    out = run(qed_bin, "--backend", "cuda", "--gpu-memory-fraction", "1.5")
    assert out.returncode != 0
    assert "--gpu-memory-fraction" in out.stderr + out.stdout
