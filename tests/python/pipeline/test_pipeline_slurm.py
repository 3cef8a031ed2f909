"""`qed pipeline` on a real single-node Slurm cluster (tools/slurm/start_cluster.sh): sbatch, job arrays,
afterok chains, cancel + resume, requeue. Every wait is a poll with a timeout."""
import json
import subprocess

import pytest
from pipeline_helpers import REPO, poll, queue_empty, sacct_states

WAIT = ["--wait", "--wait-timeout", "150", "--poll", "0.5"]


def write_spec(tmp_path, text):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    return spec


def job_ids(status):
    ids = []
    for s in status["stages"]:
        ids += [j for j in (s["job_id"], s["merge_job_id"]) if j]
    return ids


def test_chain_with_array_and_merge(qed, slurm_cluster, shared_dir, tmp_path):
    tokenizer = shared_dir / "data" / "tokenizers" / "qwen3"
    spec = write_spec(tmp_path, f"""
name: slurm-chain
executor: slurm
output_dir: out
data: {{tokenizer: {tokenizer}}}
slurm:
  time: "00:05:00"
stages:
  version:
    command: qed --version > "$QED_OUTPUT" && echo version >> order.txt
    output: version.txt
  tokenize:
    command: echo "What is 2+2?" | qed tokenize --tokenizer "$QED_DATA_TOKENIZER" > "$QED_OUTPUT"
    output: tokens.txt
  gen:
    command: |
      for k in 0 1 2; do echo "{{\\"id\\": $((QED_SHARD * 10 + k)), \\"host\\": \\"$(hostname)\\"}}" >> "$QED_OUTPUT"; done
      echo "gen $QED_SHARD/$QED_NUM_SHARDS job $SLURM_ARRAY_JOB_ID" >> order.txt
    needs: [version, tokenize]
    array: 3
    output: gen.jsonl
    resources: {{cpus: 1, mem: 100M}}
  score:
    command: wc -l < "$QED_OUTPUT_DIR/gen.jsonl" > "$QED_OUTPUT" && echo score >> order.txt
    needs: gen
    output: score.txt
""")
    r = qed.run("pipeline", "run", spec, *WAIT)
    out = tmp_path / "out"
    assert "submitted 5 job(s)" in r.stdout  # version, tokenize, gen array, gen merge, score
    order = (tmp_path / "order.txt").read_text().splitlines()
    assert order[0] == "version" and order[-1] == "score"
    assert sorted(l.split(" job")[0] for l in order[1:4]) == ["gen 0/3", "gen 1/3", "gen 2/3"]
    assert sorted(json.loads(l)["id"] for l in (out / "gen.jsonl").read_text().splitlines()) == \
        [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert (out / "score.txt").read_text().strip() == "9"
    assert (out / "version.txt").read_text().startswith("qed ")
    direct = qed.run("tokenize", "--tokenizer", tokenizer, input="What is 2+2?\n").stdout
    assert (out / "tokens.txt").read_text() == direct and direct.split()[0].isdigit()

    status = qed.status(out)
    assert status["all_done"] and status["executor"] == "slurm"
    gen = next(s for s in status["stages"] if s["stage"] == "gen")
    assert gen["shards_done"] == 3 and gen["merge_job_id"]
    # Accounting: every allocation, array tasks included, completed.
    states = poll(lambda: (s := sacct_states(job_ids(status))) and len(s) == 7 and s, 30, "sacct records")
    assert set(states.values()) == {"COMPLETED"}, states
    assert {f"{gen['job_id']}_{i}" for i in range(3)} <= set(states)

    # Resubmitting a finished pipeline submits nothing.
    again = qed.run("pipeline", "run", spec)
    assert "submitted 0 job(s)" in again.stdout


def test_failed_stage_cancels_dependents_and_resume_reruns_only_it(qed, slurm_cluster, tmp_path):
    spec = write_spec(tmp_path, """
name: slurm-fail
executor: slurm
output_dir: out
stages:
  prep: {command: echo prep >> runs.txt}
  flaky: {command: 'echo flaky >> runs.txt; test -f fixed || exit 3', needs: prep}
  after: {command: echo after >> runs.txt, needs: flaky}
""")
    r = qed.run("pipeline", "run", spec, *WAIT, check=False)
    assert r.returncode == 1
    out = tmp_path / "out"

    def stages_once_after_is_recorded():
        # Jobs that left the queue are known through sacct, which slurmdbd fills asynchronously.
        by_stage = {s["stage"]: s for s in qed.status(out)["stages"]}
        return by_stage if by_stage["after"]["state"] != "not started" else None

    by_stage = poll(stages_once_after_is_recorded, 30, "sacct to record the cancelled dependent")
    assert by_stage["prep"]["state"] == "done"
    assert by_stage["flaky"]["state"] == "failed" and "exit code 3" in by_stage["flaky"]["detail"]
    # --kill-on-invalid-dep: Slurm cancels the dependent instead of leaving it pending forever.
    assert by_stage["after"]["state"] == "cancelled", by_stage["after"]

    (tmp_path / "fixed").write_text("")
    r = qed.run("pipeline", "run", spec, *WAIT)
    assert "prep: done earlier, not submitted" in r.stdout
    assert (tmp_path / "runs.txt").read_text().splitlines() == ["prep", "flaky", "flaky", "after"]
    assert qed.status(out)["all_done"]


def test_cancel_then_resume(qed, slurm_cluster, tmp_path):
    release = tmp_path / "release"
    spec = write_spec(tmp_path, f"""
name: slurm-cancel
executor: slurm
output_dir: out
stages:
  first: {{command: echo first >> runs.txt}}
  slow:
    command: |
      echo slow-started >> runs.txt
      for i in $(seq 1 600); do [ -f {release} ] && break; sleep 0.2; done
      [ -f {release} ] && echo slow >> runs.txt
    needs: first
  last: {{command: echo last >> runs.txt, needs: slow}}
""")
    qed.run("pipeline", "run", spec)
    out = tmp_path / "out"
    poll(lambda: next(s for s in qed.status(out)["stages"] if s["stage"] == "slow")["state"] == "running",
         60, "stage 'slow' to run")
    ids = job_ids(qed.status(out))
    # A second submission while the first is queued would run stages twice: refused.
    again = qed.run("pipeline", "run", spec, check=False)
    assert again.returncode == 1 and "still queued or running" in again.stderr, again.stderr
    r = qed.run("pipeline", "cancel", out)
    assert r.stdout.count("cancelled job") == 2  # slow (running) and last (pending)
    poll(lambda: queue_empty(ids), 60, "cancelled jobs to leave the queue")
    poll(lambda: len(sacct_states(ids)) == 3, 30, "sacct records of the cancelled jobs")
    status = {s["stage"]: s for s in qed.status(out)["stages"]}
    assert status["first"]["state"] == "done"
    assert status["slow"]["state"] == "cancelled" and status["last"]["state"] == "cancelled"
    states = poll(lambda: (s := sacct_states(ids)) and len(s) == 3 and s, 30, "sacct records")
    assert states[status["slow"]["job_id"]] == "CANCELLED"

    release.write_text("")
    r = qed.run("pipeline", "run", spec, *WAIT)
    assert "first: done earlier, not submitted" in r.stdout
    assert (tmp_path / "runs.txt").read_text().splitlines() == ["first", "slow-started", "slow-started", "slow",
                                                                 "last"]


def test_requeued_shard_neither_loses_nor_duplicates_rows(qed, slurm_cluster, tmp_path):
    # The shard's first attempt writes rows 0-4, then blocks until Slurm requeues it; the second attempt
    # (SLURM_RESTART_COUNT=1) writes all ten rows again, as a naive restart would. The merge keeps each id once.
    spec = write_spec(tmp_path, """
name: slurm-requeue
executor: slurm
output_dir: out
stages:
  gen:
    command: |
      for k in $(seq 0 9); do
        echo "{\\"id\\": $((QED_SHARD * 100 + k)), \\"attempt\\": ${SLURM_RESTART_COUNT:-0}}" >> "$QED_OUTPUT"
        if [ "$k" = 4 ] && [ "$QED_SHARD" = 0 ] && [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then
          touch reached; sleep 300
        fi
      done
    array: 2
    output: gen.jsonl
""")
    qed.run("pipeline", "run", spec)
    out = tmp_path / "out"
    poll(lambda: (tmp_path / "reached").exists(), 60, "shard 0 to write half its rows")
    array_job = qed.status(out)["stages"][0]["job_id"]
    subprocess.run(["scontrol", "requeue", f"{array_job}_0"], check=True)
    poll(lambda: qed.status(out)["all_done"], 150, "the requeued pipeline to finish", interval_s=0.5)

    shard0 = (out / "shards" / "gen" / "gen.shard-0-of-2.jsonl").read_text().splitlines()
    assert len(shard0) == 15  # 5 rows from the killed attempt + 10 from the rerun
    rows = [json.loads(l) for l in (out / "gen.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == list(range(10)) + list(range(100, 110))
    assert {r["attempt"] for r in rows if r["id"] < 100} == {0, 1}  # first attempt's rows kept, not rewritten
    # sacct -D lists every attempt: the requeued one first, then the completed one.
    r = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-j", f"{array_job}_0", "-o", "JobID,State"],
                       capture_output=True, text=True, check=True)
    assert [l.split("|")[1] for l in r.stdout.splitlines()] == ["REQUEUED", "COMPLETED"], r.stdout


def test_qed_batch_and_eval_on_a_fixture_model_sharded_over_an_array(qed, slurm_cluster, tmp_path):
    if qed.run("batch", "--help", check=False).returncode != 0:
        pytest.skip("this qed has no `batch` subcommand yet")
    model = REPO / "tests" / "fixtures" / "hf" / "qwen2_gqa_bias"
    rows = [{"id": f"p{i}", "prompt_ids": [1 + i, 7, 42], "max_tokens": 4, "temperature": 0} for i in range(6)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = write_spec(tmp_path, f"""
name: slurm-batch
executor: slurm
output_dir: out
data: {{model: {model}, prompts: prompts.jsonl}}
stages:
  generate:
    command: >-
      awk -v n="$QED_NUM_SHARDS" -v s="$QED_SHARD" '(NR - 1) % n == s' "$QED_DATA_PROMPTS" > "$QED_OUTPUT.input" &&
      qed batch --model "$QED_DATA_MODEL" --input "$QED_OUTPUT.input" --output "$QED_OUTPUT" --threads 1
    array: 2
    output: generations.jsonl
    resources: {{cpus: 1}}
  grade:
    needs: generate
    command: >-
      python3 -c 'import json, sys; [print(json.dumps({{"id": r["id"], "pred": r["text"], "ref": "42"}}))
      for r in map(json.loads, open(sys.argv[1]))]' "$QED_OUTPUT_DIR/generations.jsonl" > "$QED_OUTPUT.pairs" &&
      qed eval grade --input "$QED_OUTPUT.pairs" --output "$QED_OUTPUT"
    output: graded.jsonl
    resources: {{cpus: 1}}
""")
    qed.run("pipeline", "run", spec, *WAIT)
    out_rows = [json.loads(l) for l in (tmp_path / "out" / "generations.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in out_rows) == [f"p{i}" for i in range(6)]
    # The eval stage graded every generation (random-weight text is never the reference answer "42").
    graded = [json.loads(l) for l in (tmp_path / "out" / "graded.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in graded) == [f"p{i}" for i in range(6)]
    assert all(r["correct"] is False for r in graded), graded
    status = qed.status(tmp_path / "out")
    states = poll(lambda: (s := sacct_states(job_ids(status))) and len(s) == 4 and s, 30, "sacct records")
    assert set(states.values()) == {"COMPLETED"}, states
