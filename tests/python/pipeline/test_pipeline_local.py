"""`qed pipeline` through the CLI with the local executor: what a workstation user runs."""
import json

from pipeline_helpers import REPO


def write_spec(tmp_path, text):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    return spec


def test_validate_prints_stage_order(qed, tmp_path):
    spec = write_spec(tmp_path, "stages:\n  b: {command: x, needs: a}\n  a: {command: y}\n")
    r = qed.run("pipeline", "validate", spec)
    assert "ok, executor local, 2 stages" in r.stdout
    assert r.stdout.index("  a") < r.stdout.index("  b (after a)")


def test_invalid_spec_fails_with_line_and_column(qed, tmp_path):
    spec = write_spec(tmp_path, "stages:\n  a:\n    command: x\n    gpus: 1\n")
    r = qed.run("pipeline", "run", spec, check=False)
    assert r.returncode == 1
    assert f"{spec}:4:5: stage 'a': unknown key 'gpus'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_local_pipeline_runs_qed_and_shell_stages_and_resumes(qed, tmp_path):
    spec = write_spec(tmp_path, """
name: local-demo
output_dir: out
stages:
  version:
    command: qed --version > "$QED_OUTPUT"
    output: version.txt
  gen:
    command: |
      for k in 0 1; do echo "{\\"id\\": \\"$QED_SHARD-$k\\"}" >> "$QED_OUTPUT"; done
    needs: version
    array: 3
    output: gen.jsonl
  count:
    command: wc -l < "$QED_OUTPUT_DIR/gen.jsonl" > "$QED_OUTPUT"
    needs: gen
    output: count.txt
""")
    r = qed.run("pipeline", "run", spec)
    assert "ran 3, skipped 0" in r.stdout
    out = tmp_path / "out"
    assert (out / "version.txt").read_text().startswith("qed ")
    assert [json.loads(l)["id"] for l in (out / "gen.jsonl").read_text().splitlines()] == \
        ["0-0", "0-1", "1-0", "1-1", "2-0", "2-1"]
    assert (out / "count.txt").read_text().strip() == "6"
    status = qed.status(out)
    assert status["all_done"] and status["executor"] == "local"
    assert [s["state"] for s in status["stages"]] == ["done", "done", "done"]

    again = qed.run("pipeline", "run", spec)
    assert "ran 0, skipped 3" in again.stdout


def test_failed_local_pipeline_exits_nonzero_and_names_logs(qed, tmp_path):
    spec = write_spec(tmp_path, "output_dir: out\nstages:\n  bad: {command: exit 4}\n")
    r = qed.run("pipeline", "run", spec, check=False)
    assert r.returncode == 1
    assert "1 stage(s) failed" in r.stderr and str(tmp_path / "out" / "logs") in r.stderr
    table = qed.run("pipeline", "status", tmp_path / "out").stdout
    assert "bad" in table and "failed" in table and "exit code 4" in table


def test_status_of_a_non_pipeline_dir_is_a_clear_error(qed, tmp_path):
    r = qed.run("pipeline", "status", tmp_path, check=False)
    assert r.returncode == 1
    assert "not a pipeline output dir" in r.stderr


def test_example_pipelines_validate(qed):
    examples = sorted((REPO / "examples" / "pipelines").glob("*.yaml"))
    assert examples, "examples/pipelines/ has no specs"
    for spec in examples:
        qed.run("pipeline", "validate", spec)
