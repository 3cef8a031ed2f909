"""`qed bench report`: bench JSON runs → one Markdown report (a table per run, its provenance) and one PNG per
(run, metric), drawn by matplotlib in one interpreter."""
import json
import subprocess
import sys

import pytest

PROVENANCE = {"git_sha": "abc1234", "device": "NVIDIA H200", "driver": "570.1", "cuda": "12.8",
              "date": "2026-12-01T00:00:00+00:00", "command": "qed bench offline --model 14b"}


def result(engine, precision, workload, metric, value):
    return {"engine": engine, "model": "qwen2.5-14b-shape", "precision": precision, "spec": "none",
            "workload": workload, "metric": metric, "value": value}


def write_run(path, rows):
    path.write_text(json.dumps({"provenance": PROVENANCE, "results": rows}))


def render(qed_bin, out, *runs):
    """qed bench report over RUNS (files or folders) into `out`; the Markdown it wrote."""
    subprocess.run([qed_bin, "bench", "report", *map(str, runs), "--out", str(out), "--python", sys.executable],
                   check=True, capture_output=True, text=True, timeout=300)
    return (out / "README.md").read_text()


def assert_pngs_linked(out, md, names):
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md


def test_report_has_a_table_row_per_result_and_a_png_per_metric(qed_bin, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    run = [result("qed", "bf16", "decode_b1", "tok_per_s", 98.5), result("qed", "fp8", "decode_b1", "tok_per_s", 187.25),
           result("hf-transformers", "bf16", "decode_b1", "tok_per_s", 12.8),
           result("qed", "bf16", "ttft_1k", "ttft_ms", 41.0), result("qed", "fp8", "ttft_1k", "ttft_ms", 30.5)]
    write_run(results / "offline-h200.json", run)
    out = tmp_path / "report"
    md = render(qed_bin, out, results)
    assert "NVIDIA H200" in md and "qed bench offline --model 14b" in md and "abc1234" in md
    for r in run:
        assert f"| {r['engine']} | {r['model']} | {r['precision']} | none | {r['workload']} | {r['metric']} | " \
               f"{r['value']:g} |" in md
    pngs = sorted(p.name for p in out.glob("offline-h200.*.png"))
    assert pngs == ["offline-h200.tok_per_s.png", "offline-h200.ttft_ms.png"]
    assert_pngs_linked(out, md, pngs)


def test_runs_are_compared_side_by_side_per_model(qed_bin, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    bf16 = [result("qed", "bf16", "decode_b1", "tok_per_s", 112.5), result("qed", "bf16", "decode_b8", "tok_per_s", 617.7),
            result("qed", "bf16", "ttft_1k", "ttft_ms", 46.5), result("hf-transformers", "bf16", "decode_b1", "tok_per_s", 15.4),
            result("qed", "bf16", "only_here", "total_s", 9.0)]
    fp8 = [result("qed", "fp8", "decode_b1", "tok_per_s", 152.9), result("qed", "fp8", "decode_b8", "tok_per_s", 787.5),
           result("qed", "fp8", "ttft_1k", "ttft_ms", 33.4)]
    write_run(results / "a-bf16.json", bf16)
    write_run(results / "b-fp8.json", fp8)
    out = tmp_path / "report"
    md = render(qed_bin, out, results)
    section = md[md.index("## Comparison across runs"):md.index("## a-bf16.json")]
    assert "| workload | metric | qed bf16 | hf-transformers bf16 | qed fp8 |" in section
    assert "| decode_b1 | tok_per_s | 112.5 | 15.4 | 152.9 |" in section
    assert "| decode_b8 | tok_per_s | 617.7 | — | 787.5 |" in section
    assert "| ttft_1k | ttft_ms | 46.5 | — | 33.4 |" in section
    assert "only_here" not in section  # one variant only: nothing to compare
    # Decode throughput against batch as lines, the rest as grouped bars; every PNG is linked and real.
    compare = sorted(p.name for p in out.glob("compare.*.png"))
    assert compare == ["compare.qwen2.5-14b-shape.decode.tok_per_s.png", "compare.qwen2.5-14b-shape.ttft_ms.png"]
    assert_pngs_linked(out, section, compare)


def test_runs_named_as_files_with_latency_percentiles_and_spec_speedup(qed_bin, tmp_path):
    serve = [result("qed", "bf16", "math500_c8", f"{m}_{p}", v) for m, base in (("ttft_ms", 40.0), ("itl_ms", 9.0))
             for p, v in (("p50", base), ("p90", 2 * base), ("p99", 3 * base))]
    spec = [dict(result("qed", "fp32", "tir_b1", "speedup", s), spec=name) for name, s in (("none", 1.0), ("ngram-k2", 1.08))]
    spec += [dict(result("qed", "fp32", "tir_b1", "mean_accepted_length", a), spec=name)
             for name, a in (("none", 1.0), ("ngram-k2", 1.63))]
    write_run(tmp_path / "serve.json", serve)
    write_run(tmp_path / "spec.json", spec)
    out = tmp_path / "report"
    md = render(qed_bin, out, tmp_path / "serve.json", tmp_path / "spec.json")
    assert "## serve.json" in md and "## spec.json" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    # The six percentile metrics are one chart, not six; the spec runs give a speedup-vs-acceptance scatter.
    assert "serve.latency_percentiles.png" in pngs
    assert not any(p.startswith("serve.ttft_ms_p") or p.startswith("serve.itl_ms_p") for p in pngs), pngs
    assert "compare.qwen2.5-14b-shape.speedup_vs_acceptance.png" in pngs
    assert_pngs_linked(out, md, pngs)


def test_a_missing_run_file_is_a_one_line_error(qed_bin, tmp_path):
    run = subprocess.run([qed_bin, "bench", "report", str(tmp_path / "nope.json"), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "nope.json" in run.stderr


def test_a_file_that_is_not_a_bench_run_is_a_one_line_error(qed_bin, tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"rows": []}))
    run = subprocess.run([qed_bin, "bench", "report", "--results", str(tmp_path), "--out", str(tmp_path / "r"),
                          "--no-plots"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "bad.json" in run.stderr and "'results'" in run.stderr


@pytest.mark.parametrize("folder", ["bench/results"])
def test_the_committed_results_render(qed_bin, tmp_path, folder):
    import pathlib
    repo = pathlib.Path(__file__).resolve().parents[2]
    subprocess.run([qed_bin, "bench", "report", "--results", str(repo / folder), "--out", str(tmp_path), "--no-plots"],
                   check=True, capture_output=True, text=True, timeout=60)
    runs = list((repo / folder).glob("*.json"))
    md = (tmp_path / "README.md").read_text()
    assert sum(f"\n## {run.name}\n" in md for run in runs) == len(runs)  # a section per run
    assert "\n## Comparison across runs\n" in md  # the committed runs include BF16 and FP8 of one model
