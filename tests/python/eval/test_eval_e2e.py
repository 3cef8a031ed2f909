"""`qed eval` end to end: against `qed serve` on the demo model (rows, grading, summary), killed with SIGKILL in
the middle and rerun (nothing lost, nothing duplicated), and the request it sends in tir / early-stop mode."""
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from eval_helpers import FakeOpenAI, HoldingProxy, last_boxed, read_rows  # noqa: E402
from serve_fixtures import Server  # noqa: E402

DATASET = HERE.parents[1] / "eval" / "data" / "demo_heldout.jsonl"
PROBLEMS = [json.loads(line) for line in DATASET.read_text().splitlines()]
SAMPLES = 2


@pytest.fixture(scope="module")
def demo_server(qed_bin):
    server = Server(qed_bin)
    yield server
    server.stop()


def eval_cmd(qed_bin, url, out, *extra):
    return [qed_bin, "eval", "--server", url, "--dataset", str(DATASET), "--samples", str(SAMPLES),
            "--temperature", "0.7", "--max-tokens", "96", "--seed", "7", "--no-progress", "--out", str(out), *extra]


def check_complete(rows):
    keys = [(r["problem_id"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicated rows"
    assert set(keys) == {(p["id"], s) for p in PROBLEMS for s in range(SAMPLES)}, "missing rows"


def test_eval_against_qed_serve_grades_every_sample_and_summarizes(qed_bin, demo_server, tmp_path):
    out = tmp_path / "results.jsonl"
    run = subprocess.run(eval_cmd(qed_bin, demo_server.url, out, "--concurrency", "3"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    rows = read_rows(out)
    check_complete(rows)
    expected = {p["id"]: p["expected_answer"] for p in PROBLEMS}
    for r in rows:
        assert r["generation"] and r["finish_reason"] in ("stop", "length")
        assert r["predicted_answer"] == last_boxed(r["generation"])
        # The demo's answers are integers: a correct one is exactly the expected digits.
        assert r["correct"] == (r["predicted_answer"] == expected[r["problem_id"]]), r

    summary_path = tmp_path / "summary.json"
    table = subprocess.run([qed_bin, "eval", "summarize", "--input", str(out), "--json", str(summary_path)],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    summary = json.loads(summary_path.read_text())
    per_problem = {}
    for r in rows:
        per_problem.setdefault(r["problem_id"], []).append(r["correct"])
    accuracy = sum(sum(c) / len(c) for c in per_problem.values()) / len(per_problem)
    pass2 = sum(1 - math.comb(len(c) - sum(c), 2) / math.comb(len(c), 2) for c in per_problem.values()) / len(per_problem)
    assert summary["problems"] == len(PROBLEMS) and summary["samples"] == len(rows)
    assert summary["accuracy"] == pytest.approx(accuracy)
    assert summary["pass@k"]["pass@2"] == pytest.approx(pass2)
    assert summary["completion_tokens"]["total"] == sum(r["completion_tokens"] for r in rows)
    assert all(r["completion_tokens"] > 0 for r in rows)
    assert f"{100 * accuracy:.2f}%" in table
    assert (tmp_path / "results.summary.json").exists()  # qed eval itself wrote one too


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(qed_bin, demo_server, tmp_path):
    out = tmp_path / "results.jsonl"
    proxy = HoldingProxy(demo_server.url, hold_at=4)
    try:
        proc = subprocess.Popen(eval_cmd(qed_bin, proxy.url, out, "--concurrency", "1"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proxy.held.wait(timeout=300), "the eval never sent its 4th request"
        deadline = time.time() + 120
        while len(read_rows(out)) < 3 and time.time() < deadline:  # rows 1-3 are written before request 4 leaves
            time.sleep(0.05)
        before = out.read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        proxy.release()
    finally:
        proxy.release()
        proxy.stop()
    assert len(read_rows(out)) == 3

    rerun = subprocess.run(eval_cmd(qed_bin, demo_server.url, out, "--concurrency", "2"),
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "3 already done" in rerun.stderr
    assert out.read_text().startswith(before)
    check_complete(read_rows(out))


def test_tir_and_early_stop_flags_shape_one_request_per_problem(qed_bin, tmp_path):
    def reply(request):
        n = request["n"]
        choices = [{"index": i, "message": {"role": "assistant", "content": f"<tool_call>\nprint(1)\n</tool_call>\n"
                                                                             f"so \\boxed{{{i}}}"},
                    "finish_reason": "stop"} for i in range(n)]
        return 200, {"choices": choices, "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n}}

    server = FakeOpenAI(reply)
    dataset = tmp_path / "one.jsonl"
    dataset.write_text(json.dumps({"id": "q1", "problem": "What is 0?", "expected_answer": "0"}) + "\n")
    out = tmp_path / "results.jsonl"
    try:
        run = subprocess.run([qed_bin, "eval", "--server", server.url + "/v1", "--dataset", str(dataset), "--prompt",
                              "tir", "--max-code-executions", "3", "--samples", "4", "--consensus", "2",
                              "--time-budget-s", "30", "--no-progress", "--out", str(out)],
                             capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    assert len(server.requests) == 1
    path, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body["n"] == 4
    assert body["qed"] == {"tir": True, "max_code_executions": 3, "consensus": 2, "time_budget_s": 30.0}
    assert body["messages"][0] == {"role": "system", "content": ""}
    assert "You may perform up to 3 Python code calls" in body["messages"][1]["content"]
    rows = read_rows(out)
    assert [(r["sample"], r["predicted_answer"], r["correct"], r["tool_calls"]) for r in rows] == [
        (0, "0", True, 1), (1, "1", False, 1), (2, "2", False, 1), (3, "3", False, 1)]


def test_tools_flag_asks_for_server_side_code_with_any_prompt(qed_bin, tmp_path):
    reply = {"choices": [{"index": 0, "message": {"content": "\\boxed{1}"}, "finish_reason": "stop"}],
             "usage": {"completion_tokens": 3}}
    server = FakeOpenAI(lambda request: (200, reply))
    try:
        run = subprocess.run([qed_bin, "eval", "--server", server.url, "--dataset", str(DATASET), "--limit", "1",
                              "--prompt", "plain", "--tools", "--max-code-executions", "2", "--no-system",
                              "--no-progress", "--out", str(tmp_path / "r.jsonl")], capture_output=True, text=True,
                             timeout=120)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    (_, body), = server.requests
    assert body["qed"] == {"tir": True, "max_code_executions": 2} and body["n"] == 1
    assert body["messages"] == [{"role": "user", "content": PROBLEMS[0]["problem"]}]


def test_a_server_error_is_one_line_and_keeps_finished_rows(qed_bin, tmp_path):
    server = FakeOpenAI(lambda request: (400, {"error": {"message": "server-side code execution is not available"}}))
    out = tmp_path / "results.jsonl"
    try:
        run = subprocess.run([qed_bin, "eval", "--server", server.url, "--dataset", str(DATASET), "--prompt", "tir",
                              "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert run.returncode == 1
    assert "server answered 400" in run.stderr and "not available" in run.stderr
    assert out.read_text() == ""
