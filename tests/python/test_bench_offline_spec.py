"""qed bench offline --spec on the CPU backend with a tiny fixture model: each drafter's rows sit beside the run
without drafts of the same workload, with the measured acceptance and the speedup against it; an oracle whose
proposals are always right is accepted in full and one that is always wrong not at all (the fp32 CPU backend is
exact, so no run leaves its record); bad --spec entries are one-line errors. No timing is asserted."""
import json
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = str(REPO / "tests" / "fixtures" / "hf" / "qwen2_gqa_bias")


def bench(qed_bin, *args):
    return subprocess.run([qed_bin, "bench", "offline", "--model", FIXTURE, *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def sweep(qed_bin, tmp_path_factory):
    out_path = tmp_path_factory.mktemp("spec") / "offline_spec.json"
    out = bench(qed_bin, "--workloads", "decode_b2,aimo_3x30,ttft_16", "--context", "24", "--decode-tokens", "40",
                "--ttft-repeats", "1", "--spec", "oracle-p1,oracle-p0,oracle-p0.6,ngram", "--spec-draft-len", "3",
                "--output", str(out_path))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out_path.read_text())
    rows = {}
    for r in doc["results"]:
        rows[(r["workload"], r["spec"], r["metric"])] = r
    return doc, rows


def value(rows, workload, spec, metric):
    return rows[(workload, spec, metric)]["value"]


def test_every_drafter_gets_rows_next_to_the_baseline_of_each_workload(sweep):
    doc, rows = sweep
    assert "--spec" in doc["provenance"]["command"]
    specs = {r["spec"] for r in doc["results"]}
    assert specs == {"none", "oracle-p1", "oracle-p0", "oracle-p0.6", "ngram"}
    for workload, headline in [("decode_b2", "tok_per_s"), ("aimo_3x30", "batch_tok_per_s")]:
        for spec in ["oracle-p1", "oracle-p0", "oracle-p0.6", "ngram"]:
            for metric in [headline, "speedup_vs_none", "mean_accepted_tokens", "acceptance_rate",
                           "mean_accepted_length", "verify_steps", "diverged_sequences"]:
                row = rows[(workload, spec, metric)]
                assert row["draft_len"] == 3 and row["beams"] == 1 and row["engine"] == "qed"
            assert value(rows, workload, spec, "speedup_vs_none") == pytest.approx(
                value(rows, workload, spec, headline) / value(rows, workload, "none", headline))
            assert value(rows, workload, spec, "diverged_sequences") == 0  # lossless verification
    # ttft measures one token: no drafter rows.
    assert {r["spec"] for r in doc["results"] if r["workload"] == "ttft_16"} == {"none"}


def test_oracle_at_p1_is_accepted_in_full_and_at_p0_not_at_all(sweep):
    _, rows = sweep
    for workload in ["decode_b2", "aimo_3x30"]:
        assert value(rows, workload, "oracle-p1", "acceptance_rate") == 1.0
        for d in (1, 2, 3):
            assert value(rows, workload, "oracle-p1", f"acceptance_rate_pos{d}") == 1.0
        # Every verify step accepts 3 tokens, except near max_tokens where the draft is cut shorter.
        assert 2.5 < value(rows, workload, "oracle-p1", "mean_accepted_tokens") <= 3.0
        assert value(rows, workload, "oracle-p1", "oracle_proposals_without_truth") == 0
        assert value(rows, workload, "oracle-p0", "mean_accepted_tokens") == 0.0
        assert value(rows, workload, "oracle-p0", "acceptance_rate_pos1") == 0.0
        assert (workload, "oracle-p0", "acceptance_rate_pos2") not in rows  # never reached
        rate = value(rows, workload, "oracle-p0.6", "acceptance_rate")
        assert 0 < rate < 1
        mean = value(rows, workload, "oracle-p0.6", "mean_accepted_tokens")
        assert 0 < mean < 3
        assert value(rows, workload, "oracle-p0.6", "mean_accepted_length") == pytest.approx(1 + mean)


@pytest.mark.parametrize("flags, needle", [
    (["--spec", "oracle-p1.5"], "oracle-p1.5"),
    (["--spec", "oracle-px"], "oracle-px"),
    (["--spec", "medusa"], "medusa"),
    (["--spec", "oracle-p0.5", "--spec-beams", "2"], "--spec-beams"),
    (["--spec", "ngram", "--spec-draft-len", "0"], "--spec-draft-len"),
])
def test_bad_spec_flags_are_one_line_errors(qed_bin, flags, needle):
    out = bench(qed_bin, "--workloads", "decode_b1", *flags)
    assert out.returncode != 0
    # The error is the first line (CLI11's own range errors add "Run with --help").
    assert needle in out.stderr.strip().splitlines()[0]


def test_repeats_report_medians_of_interleaved_runs_and_oracles_replay_their_own_pass(qed_bin, tmp_path):
    out_path = tmp_path / "repeats.json"
    out = bench(qed_bin, "--workloads", "decode_b2", "--context", "16", "--decode-tokens", "20", "--spec",
                "oracle-p1", "--repeats", "3", "--oracle-passes", "2", "--output", str(out_path))
    assert out.returncode == 0, out.stderr
    # The kv_cache capacity row is measured once, not per repeat.
    rows = [r for r in json.loads(out_path.read_text())["results"] if r["workload"] != "kv_cache"]
    assert {r["spec"] for r in rows} == {"none", "oracle-p1"}
    assert all(r["repeats"] == 3 for r in rows)
    assert len([r for r in rows if r["metric"] == "tok_per_s"]) == 2  # one median row per spec, not one per repeat
    by_metric = {r["metric"]: r["value"] for r in rows if r["spec"] == "oracle-p1"}
    assert by_metric["acceptance_rate"] == 1.0 and by_metric["diverged_sequences"] == 0


def test_synthetic_acceptance_rows_measure_the_coin_not_the_model(qed_bin, tmp_path):
    out_path = tmp_path / "synthetic.json"
    out = bench(qed_bin, "--workloads", "decode_b2,aimo_3x30", "--context", "24", "--decode-tokens", "40", "--spec",
                "synthetic-p1,synthetic-p0,synthetic-p0.6", "--spec-draft-len", "3", "--output", str(out_path))
    assert out.returncode == 0, out.stderr
    rows = {(r["workload"], r["spec"], r["metric"]): r for r in json.loads(out_path.read_text())["results"]}
    for workload, headline in [("decode_b2", "tok_per_s"), ("aimo_3x30", "batch_tok_per_s")]:
        for spec in ["synthetic-p1", "synthetic-p0", "synthetic-p0.6"]:
            for metric in [headline, "speedup_vs_none", "mean_accepted_tokens", "acceptance_rate", "verify_steps",
                           "acceptance_rate_pos1"]:
                assert rows[(workload, spec, metric)]["draft_len"] == 3
            assert value(rows, workload, spec, "speedup_vs_none") == pytest.approx(
                value(rows, workload, spec, headline) / value(rows, workload, "none", headline))
        assert value(rows, workload, "synthetic-p1", "acceptance_rate") == 1.0
        for d in (1, 2, 3):
            assert value(rows, workload, "synthetic-p1", f"acceptance_rate_pos{d}") == 1.0
        assert 2.5 < value(rows, workload, "synthetic-p1", "mean_accepted_tokens") <= 3.0
        assert value(rows, workload, "synthetic-p0", "mean_accepted_tokens") == 0.0
        assert (workload, "synthetic-p0", "acceptance_rate_pos2") not in rows  # never reached
        # p = 0 emits only the target's own tokens: the output of the run without drafts.
        assert value(rows, workload, "synthetic-p0", "diverged_sequences") == 0
        assert 0 < value(rows, workload, "synthetic-p0.6", "acceptance_rate") < 1
        assert 0 < value(rows, workload, "synthetic-p0.6", "mean_accepted_tokens") < 3


def test_synthetic_acceptance_is_bench_only(qed_bin):
    out = bench(qed_bin, "--workloads", "decode_b1", "--spec", "synthetic-p1.5")
    assert out.returncode != 0 and "synthetic-p1.5" in out.stderr.strip().splitlines()[0]
    # Its outputs are not the model's: qed generate (as serve and batch) has no way to ask for it.
    out = subprocess.run([qed_bin, "generate", "--model", FIXTURE, "--prompt-ids", "1,2,3", "--max-tokens", "4",
                          "--spec", "synthetic-p0.6"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "synthetic-p0.6" in out.stderr
