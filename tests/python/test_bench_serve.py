"""`qed bench serve` against `qed serve` on the demo model: the client-side counts in its bench JSON agree with the
server's own /metrics counters, the JSON has the provenance of shared/design.md, and the AIMO preset's report adds
up (generations + cut = 12, stop after the first 10)."""
import json
import subprocess

import pytest

from serve_fixtures import Server


@pytest.fixture(scope="module")
def server(qed_bin):
    s = Server(qed_bin)
    yield s
    s.stop()


def bench(qed_bin, server, tmp_path, *args):
    out = tmp_path / "bench.json"
    res = subprocess.run([qed_bin, "bench", "serve", "--url", server.url, "--output", str(out), *args],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr + res.stdout
    return json.loads(out.read_text())


def test_counts_agree_with_the_server_metrics(qed_bin, server, tmp_path):
    before = server.metrics()
    data = bench(qed_bin, server, tmp_path, "--requests", "6", "--concurrency", "3", "--max-tokens", "8",
                 "--ignore-eos", "--seed", "1")
    after = server.metrics()
    d = data["details"]
    assert d["completed"] == 6 and d["failed"] == 0
    assert d["total_output_tokens"] == 6 * 8
    assert d["total_output_tokens"] == after["qed:generation_tokens_total"] - before["qed:generation_tokens_total"]
    assert d["total_input_tokens"] == after["qed:prompt_tokens_total"] - before["qed:prompt_tokens_total"]
    for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        assert 0 < d[m]["median"] <= d[m]["p99"]
    assert d["ttft_ms"]["p99"] <= d["e2el_ms"]["p99"]
    prov = data["provenance"]
    assert set(prov) == {"git_sha", "device", "driver", "cuda", "date", "command"}
    assert "bench serve" in prov["command"]
    rows = {r["metric"]: r for r in data["results"]}
    assert rows["output_tok_per_s"]["value"] == pytest.approx(d["output_throughput"])
    assert all(set(r) == {"engine", "model", "precision", "spec", "workload", "metric", "value"}
               for r in data["results"])


def test_aimo_preset_keeps_the_first_ten_of_twelve(qed_bin, server, tmp_path):
    data = bench(qed_bin, server, tmp_path, "--preset", "aimo", "--problem", "What is 12 + 30?", "--tir", "false")
    d = data["details"]
    assert d["failed"] == 0 and len(d["samples"]) == 12
    assert d["generations"] + d["cut"] == 12 and d["generations"] >= 10
    assert sorted(s["seed"] for s in d["samples"]) == list(range(12))
    assert all(s["cut"] in (None, "stop_after_first") for s in d["samples"])
    assert d["output_tokens"] == sum(s["output_tokens"] for s in d["samples"])
    assert d["batch_tok_per_s"] == pytest.approx(d["output_tokens"] / d["total_s"])


def test_bad_arguments_fail_with_one_line(qed_bin, server):
    for args in (["--url", "ftp://x"], ["--url", server.url, "--concurrency", "0"],
                 ["--url", server.url, "--dataset", "/nonexistent.jsonl"], ["--url", server.url, "--preset", "x"]):
        res = subprocess.run([qed_bin, "bench", "serve", *args], capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and res.stderr.startswith("qed: error:"), (args, res.stderr)
