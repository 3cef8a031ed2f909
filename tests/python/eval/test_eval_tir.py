"""`qed eval --prompt tir` against `qed serve --sandbox` on the demo model: the server runs the code, the rows
count the tool calls, and grading sees the answers the model read off the real outputs."""
import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from eval_helpers import QedSandbox, last_boxed, read_rows  # noqa: E402
from serve_fixtures import Server  # noqa: E402

DATASET = HERE.parents[1] / "eval" / "data" / "demo_heldout.jsonl"


def test_tir_eval_through_server_side_code_execution(qed_bin, tmp_path):
    sandbox = QedSandbox(qed_bin)
    try:
        server = Server(qed_bin, "--sandbox", sandbox.url)
        try:
            out = tmp_path / "tir.jsonl"
            run = subprocess.run([qed_bin, "eval", "--server", server.url, "--dataset", str(DATASET), "--prompt", "tir",
                                  "--max-code-executions", "4", "--temperature", "0", "--max-tokens", "400",
                                  "--concurrency", "4", "--no-progress", "--out", str(out)],
                                 capture_output=True, text=True, timeout=600)
        finally:
            server.stop()
    finally:
        sandbox.stop()
    assert run.returncode == 0, run.stderr
    rows = read_rows(out)
    expected = {json.loads(line)["id"]: json.loads(line)["expected_answer"] for line in DATASET.read_text().splitlines()}
    assert {r["problem_id"] for r in rows} == set(expected) and len(rows) == len(expected)
    for r in rows:
        assert r["tool_calls"] == r["generation"].count("<tool_call>")
        if r["tool_calls"]:
            assert "```output\n" in r["generation"], "the server appended no code output"
        assert r["predicted_answer"] == last_boxed(r["generation"])
        assert r["correct"] == (r["predicted_answer"] == expected[r["problem_id"]])
    # With real code outputs the demo model answers from them (98% held-out); without, it guesses (0.9%).
    assert any(r["tool_calls"] for r in rows)
    assert any(r["correct"] for r in rows)
    summary = json.loads((tmp_path / "tir.summary.json").read_text())
    assert summary["accuracy"] == sum(r["correct"] for r in rows) / len(rows)
    assert summary["tool_calls"]["total"] == sum(r["tool_calls"] for r in rows)
