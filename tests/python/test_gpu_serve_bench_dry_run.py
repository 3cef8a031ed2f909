"""tools/gpu_serve_bench.sh --dry-run: the device script's steps (sandbox probe, one server per dtype, three
concurrency levels and the AIMO preset merged into one bench JSON per server, servers stopped) on the CPU backend
with a tiny shape, so the one device call works the first time. fp8 random weights do not exist on the CPU: the
second server fails to start, which must cost that dtype only."""
import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "gpu_serve_bench.sh"


@pytest.fixture(scope="module")
def dry_run(qed_bin, shared_dir, tmp_path_factory):
    tokenizer = shared_dir / "data" / "tokenizers" / "qwen3"
    if not tokenizer.exists():
        pytest.skip(f"{tokenizer} not present")
    out = tmp_path_factory.mktemp("gpu_serve_bench")
    env = dict(os.environ, OUT=str(out), QED_BIN=qed_bin, SERVE_BENCH_TOKENIZER=str(tokenizer))
    res = subprocess.run([str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=300)
    return res, out


def test_script_succeeds_within_the_file_limit(dry_run):
    res, out = dry_run
    assert res.returncode == 0, res.stdout + res.stderr
    files = {p.name for p in out.iterdir()}
    assert files == {"run.log", "sandbox.log", "server_bf16.log", "server_fp8.log", "serve_tiny-qwen2-152k_bf16.json"}
    assert len(files) <= 8  # what one device call brings back


def test_one_json_holds_every_run_of_the_server(dry_run):
    _, out = dry_run
    data = json.loads((out / "serve_tiny-qwen2-152k_bf16.json").read_text())
    assert set(data["details"]) == {"serve_random16w_c1_n4_8tok", "serve_random16w_c8_n8_8tok",
                                    "serve_random16w_c32_n8_8tok", "aimo_12x12_keep10"}
    assert [r["workload"] for r in data["runs"]] == ["serve_random16w_c1_n4_8tok", "serve_random16w_c8_n8_8tok",
                                                     "serve_random16w_c32_n8_8tok", "aimo_12x12_keep10"]
    for name, d in data["details"].items():
        if name.startswith("serve_"):
            assert d["completed"] > 0 and d["failed"] == 0 and d["total_output_tokens"] == 8 * d["completed"]
    aimo = data["details"]["aimo_12x12_keep10"]
    assert aimo["preset"]["overrides"]["max_tokens"] == 12 and aimo["preset"]["overrides"]["ignore_eos"] is True
    # Tools on iff the sandbox started and answered its probe; either way the note says which.
    assert ("tools on" in aimo["note"]) == aimo["tir"]
    rows = data["results"]
    assert {r["model"] for r in rows} == {"tiny-qwen2-152k"}
    assert {"ttft_ms_p99", "itl_ms_p50", "e2el_ms_p90", "output_tok_per_s", "batch_tok_per_s"} <= {
        r["metric"] for r in rows}
    assert data["provenance"]["device"].startswith("cpu (dry run")


def test_a_dtype_that_cannot_start_is_skipped_with_its_error(dry_run):
    _, out = dry_run
    log = (out / "run.log").read_text()
    assert "fp8 server did not become healthy: qed: error: random fp8 weights" in log
    assert "bf16 server stopped" in log and "done; files in" in log


def test_servers_stop_cleanly_after_their_metrics_are_kept(dry_run):
    _, out = dry_run
    server = (out / "server_bf16.log").read_text()
    assert "--- /metrics at the end" in server and "qed:generation_tokens_total" in server
    assert server.rstrip().endswith("serve: stopped"), server[-2000:]
    sandbox = (out / "sandbox.log").read_text()
    assert "listening" not in sandbox or sandbox.rstrip().endswith("sandbox: stopped"), sandbox[-2000:]
